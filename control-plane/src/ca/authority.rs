//! The certificate authority: holds the signing key and trust bundle, issues workload and server leaves.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose,
    PublicKeyData, SanType,
};
use rustls::pki_types::CertificateDer;

use super::csr;
use super::error::CaError;
use super::material::{self, BACKDATE, Signer};
use super::pem::{encode_cert, split_certs};
use super::spiffe::{SpiffeId, TrustDomain};
use super::storage::{CaMaterial, CaStorage};

/// Workload leaves live a day by default: short enough that a stolen key is soon useless,
/// long enough that a control-plane outage of hours does not take the mesh down.
pub const DEFAULT_LEAF_TTL: Duration = Duration::from_secs(24 * 3600);
/// No leaf lives longer than a week, whatever is asked: rotation must keep happening.
pub const MAX_LEAF_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Below 5 s a renewal round-trip cannot finish before the cert expires.
pub const MIN_LEAF_TTL: Duration = Duration::from_secs(5);
/// A generated root lives one year: long enough that rotation is a planned yearly event
/// (leaves are what rotate daily), short enough that a forgotten root does not stay trusted
/// for a decade. Rotate before it ends with `rotate_root`.
pub const DEFAULT_ROOT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug, Clone)]
pub struct CaConfig {
    pub trust_domain: TrustDomain,
    pub default_leaf_ttl: Duration,
    pub max_leaf_ttl: Duration,
    pub root_validity: Duration,
}

/// A freshly issued leaf and what a peer needs to verify it.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    pub leaf_der: CertificateDer<'static>,
    pub leaf_pem: String,
    /// Intermediates up to (not including) the root.
    pub chain_pem: Vec<String>,
    pub trust_bundle_pem: Vec<String>,
    pub not_after: SystemTime,
}

/// Signs leaves. Signing is lock-free (`&self`, state read through `ArcSwap`); only root
/// rotation writes, and it swaps a whole new state in.
pub struct CertificateAuthority {
    config: CaConfig,
    storage: Arc<dyn CaStorage>,
    state: ArcSwap<State>,
    /// Serialises the rare writers (rotation, retirement) so none loses another's update;
    /// signing never takes it.
    write: Mutex<()>,
}

struct State {
    signer: Signer,
    material: CaMaterial,
    roots_pem: Vec<String>,
}

// === impl CaConfig ===

impl Default for CaConfig {
    fn default() -> Self {
        Self {
            trust_domain: TrustDomain::default(),
            default_leaf_ttl: DEFAULT_LEAF_TTL,
            max_leaf_ttl: MAX_LEAF_TTL,
            root_validity: DEFAULT_ROOT_VALIDITY,
        }
    }
}

// === impl CertificateAuthority ===

impl CertificateAuthority {
    /// When the certificate that signs leaves expires (the root, or the operator's
    /// intermediate): leaves never outlive it, so this is when the mesh needs a new CA.
    pub fn signer_not_after(&self) -> SystemTime {
        self.state.load().signer.not_after
    }

    /// Loads the CA from `storage`, or creates (and saves) a new root on first start.
    pub fn load_or_create(config: CaConfig, storage: Arc<dyn CaStorage>) -> Result<Self, CaError> {
        let material = match storage.load()? {
            Some(m) => m,
            None => {
                let m = material::generate_root(&config.trust_domain, config.root_validity)?;
                storage.save(&m)?;
                tracing::info!(trust_domain = %config.trust_domain, "created a new root CA");
                m
            }
        };
        Self::from_material(config, storage, material)
    }

    /// Uses an operator-supplied root or intermediate (cert + key PEM files; `bundle` holds the
    /// root(s) and is required for an intermediate), validates it and stores it in `storage`.
    pub fn from_operator_files(
        config: CaConfig,
        storage: Arc<dyn CaStorage>,
        cert: &Path,
        key: &Path,
        bundle: Option<&Path>,
    ) -> Result<Self, CaError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map_err(|e| CaError::Material(format!("cannot read {}: {e}", p.display())))
        };
        let roots_pem = match bundle {
            Some(p) => split_certs(&p.display().to_string(), &read(p)?)?,
            None => Vec::new(),
        };
        let material = CaMaterial {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
            chain_pem: Vec::new(),
            roots_pem,
        };
        let ca = Self::from_material(config, storage, material)?;
        ca.storage.save(&ca.state.load().material)?;
        Ok(ca)
    }

    fn from_material(
        config: CaConfig,
        storage: Arc<dyn CaStorage>,
        mut material: CaMaterial,
    ) -> Result<Self, CaError> {
        let (signer, roots_pem) = material::load_signer(&material)?;
        material.roots_pem = roots_pem.clone();
        Ok(Self {
            config,
            storage,
            state: ArcSwap::from_pointee(State {
                signer,
                material,
                roots_pem,
            }),
            write: Mutex::new(()),
        })
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.config.trust_domain
    }

    /// Every root currently trusted (old and new during a rotation), PEM.
    pub fn trust_bundle(&self) -> Vec<String> {
        self.state.load().roots_pem.clone()
    }

    /// Issues a workload leaf for `authorised` (the identity the caller proved, e.g. with a
    /// join token). `requested` is the identity the caller asked for, and the CSR's URI SAN
    /// must equal it too; any difference is refused. `ttl` `None`/zero means the default.
    pub fn certify(
        &self,
        authorised: &SpiffeId,
        requested: &str,
        csr_der: &[u8],
        ttl: Option<Duration>,
    ) -> Result<IssuedCert, CaError> {
        let requested_id = SpiffeId::parse(requested)?;
        if &requested_id != authorised {
            return Err(CaError::IdentityMismatch {
                requested: requested.to_owned(),
                authorised: authorised.to_string(),
            });
        }
        let public_key = csr::validate(csr_der, authorised)?;
        let params = self.leaf_params(vec![SanType::URI(authorised.as_str().try_into()?)], ttl)?;
        self.sign(&params, &public_key)
    }

    /// A server leaf for `key` with the SPIFFE ID plus DNS and IP SANs (the control plane's
    /// own gRPC endpoints, which clients reach by host name or address).
    pub fn issue_server_cert(
        &self,
        key: &KeyPair,
        identity: &SpiffeId,
        dns: &[&str],
        ips: &[IpAddr],
        ttl: Option<Duration>,
    ) -> Result<IssuedCert, CaError> {
        let mut sans = vec![SanType::URI(identity.as_str().try_into()?)];
        for name in dns {
            sans.push(SanType::DnsName((*name).try_into()?));
        }
        sans.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let params = self.leaf_params(sans, ttl)?;
        self.sign(&params, key)
    }

    /// Creates a new root, keeps the old roots in the bundle (peers trust both during the
    /// overlap) and signs with the new one from now on. Stored before it takes effect.
    pub fn rotate_root(&self) -> Result<(), CaError> {
        let mut fresh =
            material::generate_root(&self.config.trust_domain, self.config.root_validity)?;
        let old = self.state.load();
        let mut roots = old.roots_pem.clone();
        roots.append(&mut fresh.roots_pem);
        fresh.roots_pem = roots;
        self.replace(fresh)
    }

    /// Removes `root_pem` from the bundle (end of a rotation overlap). The root that signs
    /// current leaves cannot be retired.
    pub fn retire_root(&self, root_pem: &str) -> Result<bool, CaError> {
        let _write = self.write.lock();
        let old = self.state.load();
        let target = split_certs("root", root_pem)?;
        if old
            .signer
            .root_pem
            .as_ref()
            .is_some_and(|r| target.contains(r))
        {
            return Err(CaError::Material(
                "cannot retire the root that signs current leaves".to_owned(),
            ));
        }
        let mut m = old.material.clone();
        let before = m.roots_pem.len();
        m.roots_pem.retain(|r| !target.contains(r));
        if m.roots_pem.len() == before {
            return Ok(false);
        }
        self.replace(m)?;
        Ok(true)
    }

    /// Drops roots that have expired (they can no longer verify anything).
    pub fn retire_expired_roots(&self, now: SystemTime) -> Result<usize, CaError> {
        let _write = self.write.lock();
        let old = self.state.load();
        let mut m = old.material.clone();
        m.roots_pem
            .retain(|r| material::not_after(r).is_none_or(|t| t > now));
        let removed = old.material.roots_pem.len() - m.roots_pem.len();
        if removed > 0 {
            self.replace(m)?;
        }
        Ok(removed)
    }

    fn replace(&self, material: CaMaterial) -> Result<(), CaError> {
        let (signer, roots_pem) = material::load_signer(&material)?;
        self.storage.save(&material)?;
        self.state.store(Arc::new(State {
            signer,
            material,
            roots_pem,
        }));
        Ok(())
    }

    /// Leaf contents decided by the CA alone: the SANs given, serverAuth + clientAuth (every
    /// sidecar is both), digitalSignature, a random serial and a capped lifetime.
    fn leaf_params(
        &self,
        sans: Vec<SanType>,
        ttl: Option<Duration>,
    ) -> Result<CertificateParams, CaError> {
        let state = self.state.load();
        let now = SystemTime::now();
        let ttl = match ttl {
            None => self.config.default_leaf_ttl,
            Some(t) if t.is_zero() => self.config.default_leaf_ttl,
            Some(t) => t,
        }
        .clamp(MIN_LEAF_TTL, self.config.max_leaf_ttl.max(MIN_LEAF_TTL));
        // A leaf never outlives its issuer: peers would reject the chain before the leaf ends.
        let not_after = (now + ttl).min(state.signer.not_after);
        let mut params = CertificateParams::default();
        // Empty subject: identity lives in the SAN only, which rcgen then marks critical.
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(material::random_serial());
        params.not_before = (now - BACKDATE).into();
        params.not_after = not_after.into();
        Ok(params)
    }

    fn sign(
        &self,
        params: &CertificateParams,
        key: &impl PublicKeyData,
    ) -> Result<IssuedCert, CaError> {
        let state = self.state.load();
        let cert = params.signed_by(key, &state.signer.issuer)?;
        let not_after = SystemTime::UNIX_EPOCH
            + Duration::from_secs(params.not_after.unix_timestamp().max(0) as u64);
        Ok(IssuedCert {
            leaf_pem: encode_cert(cert.der()),
            leaf_der: cert.der().clone(),
            chain_pem: state.signer.chain_pem.clone(),
            trust_bundle_pem: state.roots_pem.clone(),
            not_after,
        })
    }
}
