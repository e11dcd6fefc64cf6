//! Creating a self-signed root and turning stored or operator-supplied PEM into a usable signer.

use std::time::{Duration, SystemTime};

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SerialNumber,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::error::CaError;
use super::pem::{encode_cert, parse_certs, split_certs};
use super::spiffe::TrustDomain;
use super::storage::CaMaterial;

/// Certificates start a minute in the past so a peer whose clock lags slightly does not see a
/// "not yet valid" certificate.
pub(crate) const BACKDATE: Duration = Duration::from_secs(60);
/// 128 random bits (minus the sign bit): RFC 5280 asks for unpredictable serials.
const SERIAL_BYTES: usize = 16;

/// A CA certificate with its key, ready to sign.
pub(crate) struct Signer {
    pub issuer: Issuer<'static, KeyPair>,
    /// Intermediates sent with each leaf (the signing cert itself when it is not a root).
    pub chain_pem: Vec<String>,
    pub not_after: SystemTime,
}

/// A fresh self-signed ECDSA P-256 root for `td`, valid for `validity`.
pub(crate) fn generate_root(td: &TrustDomain, validity: Duration) -> Result<CaMaterial, CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "mesh");
    // The creation time keeps successive roots distinguishable in tools that show the subject.
    let created = unix(SystemTime::now());
    dn.push(DnType::CommonName, format!("mesh root CA {td} {created}"));
    params.distinguished_name = dn;
    // Path length 0: this root signs workload leaves only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + validity).into();
    params.serial_number = Some(random_serial());
    let cert = params.self_signed(&key)?;
    let pem = encode_cert(cert.der());
    Ok(CaMaterial {
        cert_pem: pem.clone(),
        key_pem: key.serialize_pem(),
        chain_pem: Vec::new(),
        roots_pem: vec![pem],
    })
}

/// Checks `m` and builds a signer. The signing cert must be a CA, unexpired, match the key; a
/// self-signed cert is a root (added to the bundle if missing), anything else an intermediate
/// whose root must be in `roots_pem`. Returns the signer and the normalised roots.
pub(crate) fn load_signer(m: &CaMaterial) -> Result<(Signer, Vec<String>), CaError> {
    let key = KeyPair::from_pem(&m.key_pem)
        .map_err(|e| CaError::Material(format!("CA key is not a usable PKCS#8 PEM key: {e}")))?;
    let ders = parse_certs("CA certificate", &m.cert_pem)?;
    // A cert file may carry the signing cert followed by its parents.
    let signing_der = ders[0].clone();
    let (_, cert) = X509Certificate::from_der(&signing_der)
        .map_err(|e| CaError::Material(format!("CA certificate does not parse: {e}")))?;
    if !cert.is_ca() {
        return Err(CaError::Material(
            "the CA certificate lacks basicConstraints CA:TRUE".to_owned(),
        ));
    }
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(CaError::Material(
            "the CA key does not belong to the CA certificate".to_owned(),
        ));
    }
    let not_after = SystemTime::UNIX_EPOCH
        + Duration::from_secs(cert.validity().not_after.timestamp().max(0) as u64);
    if not_after <= SystemTime::now() {
        return Err(CaError::Material(format!(
            "the CA certificate expired at {}",
            cert.validity().not_after
        )));
    }
    let self_signed = cert.subject().as_raw() == cert.issuer().as_raw();
    let mut roots = m
        .roots_pem
        .iter()
        .map(|p| split_certs("trust bundle", p))
        .collect::<Result<Vec<_>, _>>()?
        .concat();
    let signing_pem = encode_cert(&signing_der);
    let mut chain_pem = Vec::new();
    if self_signed {
        if !roots.contains(&signing_pem) {
            roots.push(signing_pem);
        }
    } else {
        if roots.is_empty() {
            return Err(CaError::Material(
                "an intermediate CA needs the root certificate(s) as a trust bundle".to_owned(),
            ));
        }
        chain_pem.push(signing_pem);
    }
    chain_pem.extend(ders[1..].iter().map(|d| encode_cert(d)));
    chain_pem.extend(m.chain_pem.iter().cloned());
    let issuer = Issuer::from_ca_cert_der(&signing_der, key)
        .map_err(|e| CaError::Material(format!("CA certificate: {e}")))?;
    Ok((
        Signer {
            issuer,
            chain_pem,
            not_after,
        },
        roots,
    ))
}

/// The expiry of a PEM certificate, if it parses.
pub(crate) fn not_after(pem: &str) -> Option<SystemTime> {
    let der = parse_certs("certificate", pem).ok()?.into_iter().next()?;
    let (_, cert) = X509Certificate::from_der(&der).ok()?;
    let secs = cert.validity().not_after.timestamp();
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64))
}

pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; SERIAL_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    // Positive and without a leading zero byte, so the DER INTEGER is minimal as encoded.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

pub(crate) fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
