//! The workload key (generated here, never exported) and the credentials built from an issued certificate.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use super::spiffe::SpiffeId;
use crate::tls::peer_spiffe_id;

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("key generation or CSR failed: {0}")]
    Key(#[from] rcgen::Error),
    #[error("issued certificate is not valid PEM: {0}")]
    Pem(String),
    #[error("issued certificate does not match our key or is unusable: {0}")]
    Unusable(String),
    #[error("issued certificate is for {got:?}, we asked for {want}")]
    WrongIdentity { got: String, want: SpiffeId },
}

/// A private key that exists only in this process: it is used to sign the CSR and to build
/// rustls signing keys, and no API writes it out.
pub struct WorkloadKey {
    key: KeyPair,
}

/// A certificate ready to present, with its validity.
pub struct Credentials {
    pub certified: Arc<CertifiedKey>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// When it arrived: renewal is scheduled from here, not from `not_before` (which the CA
    /// backdates for clock skew and would make a short-lived cert look half-spent).
    pub received_at: SystemTime,
    /// Key (PKCS#8) then certificate chain, PEM: what [`Credentials::save`] writes so a
    /// restart during a control-plane outage keeps the identity. Never printed.
    pem: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Writes key and chain to `path` (mode 0600, via a temporary file and a rename).
    pub fn save(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(self.pem.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    /// Credentials written by [`Self::save`], if they are for `identity` and still valid.
    pub fn load(path: &std::path::Path, identity: &SpiffeId) -> Result<Self, CredentialsError> {
        let pem =
            std::fs::read_to_string(path).map_err(|e| CredentialsError::Pem(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| CredentialsError::Pem(format!("key: {e}")))?;
        let chain = parse_pem(&pem)?;
        let c = build(identity, chain, key, pem)?;
        if c.not_after <= SystemTime::now() {
            return Err(CredentialsError::Unusable("expired".into()));
        }
        Ok(c)
    }
}

impl WorkloadKey {
    /// A fresh ECDSA P-256 key (fast handshakes, what the CA uses too).
    pub fn generate() -> Result<Self, CredentialsError> {
        Ok(Self {
            key: KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?,
        })
    }

    /// A PKCS#10 CSR (DER) whose only SAN is the URI `identity`.
    pub fn csr_der(&self, identity: &SpiffeId) -> Result<Vec<u8>, CredentialsError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(identity.as_str().try_into()?)];
        Ok(params.serialize_request(&self.key)?.der().to_vec())
    }

    /// Builds rustls credentials from the issued leaf + intermediates, checking that the leaf
    /// is for our key and our identity.
    pub fn credentials(
        &self,
        identity: &SpiffeId,
        leaf_pem: &str,
        chain_pem: &[String],
    ) -> Result<Credentials, CredentialsError> {
        let mut chain = parse_pem(leaf_pem)?;
        let mut pem = self.key.serialize_pem();
        pem.push_str(leaf_pem);
        for c in chain_pem {
            chain.extend(parse_pem(c)?);
            pem.push_str(c);
        }
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()));
        build(identity, chain, key, pem)
    }
}

impl std::fmt::Debug for WorkloadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkloadKey(<private>)")
    }
}

/// Credentials from a chain and its key, checked to be for `identity`.
fn build(
    identity: &SpiffeId,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    pem: String,
) -> Result<Credentials, CredentialsError> {
    let leaf = chain
        .first()
        .ok_or_else(|| CredentialsError::Pem("empty leaf".to_owned()))?
        .clone();
    let got = peer_spiffe_id(&leaf).map_err(|e| CredentialsError::Unusable(e.to_string()))?;
    if &got != identity {
        return Err(CredentialsError::WrongIdentity {
            got: got.to_string(),
            want: identity.clone(),
        });
    }
    let (not_before, not_after) = validity(&leaf)?;
    let certified = CertifiedKey::from_der(chain, key, &crate::tls::provider())
        .map_err(|e| CredentialsError::Unusable(e.to_string()))?;
    Ok(Credentials {
        certified: Arc::new(certified),
        not_before,
        not_after,
        received_at: SystemTime::now(),
        pem,
    })
}

fn parse_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, CredentialsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CredentialsError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(CredentialsError::Pem("no certificate".to_owned()));
    }
    Ok(certs)
}

fn validity(der: &CertificateDer<'_>) -> Result<(SystemTime, SystemTime), CredentialsError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| CredentialsError::Pem(e.to_string()))?;
    let at = |secs: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
    let v = cert.validity();
    Ok((at(v.not_before.timestamp()), at(v.not_after.timestamp())))
}
