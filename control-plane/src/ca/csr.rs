//! CSR validation: parse a PKCS#10 request and check that it asks for exactly the authorised identity.

use rcgen::{CertificateSigningRequestParams, IsCa, PublicKey, SanType};
use rustls::pki_types::CertificateSigningRequestDer;

use super::spiffe::SpiffeId;

/// A P-256 CSR is ~400 bytes and an RSA-4096 one ~1.7 KiB; 16 KiB leaves room for any sane
/// request while bounding the parser's work on garbage.
pub const MAX_CSR_LEN: usize = 16 * 1024;

/// Why a CSR is refused. `Garbage` and `Unacceptable` are the caller's fault (bad input);
/// `Mismatch` is an authorisation failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("CSR is {0} bytes, larger than the {MAX_CSR_LEN}-byte limit")]
    TooLarge(usize),
    #[error("CSR is not a valid PKCS#10 request: {0}")]
    Garbage(String),
    #[error("CSR is not acceptable: {0}")]
    Unacceptable(&'static str),
    #[error("CSR asks for {requested:?}, but the caller may only obtain {authorised}")]
    Mismatch {
        requested: String,
        authorised: SpiffeId,
    },
}

/// Parses `der` (checking its self-signature, i.e. proof that the caller holds the key) and
/// returns the public key to certify, if the CSR's only SAN is the URI `authorised`.
///
/// Everything else the CSR asks for (subject, key usages, extra SANs, CA rights) is either
/// refused or ignored: the CA decides the leaf's contents, the CSR only contributes the key.
pub fn validate(der: &[u8], authorised: &SpiffeId) -> Result<PublicKey, CsrError> {
    if der.len() > MAX_CSR_LEN {
        return Err(CsrError::TooLarge(der.len()));
    }
    let parsed =
        CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(der))
            .map_err(|e| CsrError::Garbage(e.to_string()))?;
    if !matches!(parsed.params.is_ca, IsCa::NoCa | IsCa::ExplicitNoCa) {
        return Err(CsrError::Unacceptable(
            "a workload CSR may not request CA rights",
        ));
    }
    let mut uris = Vec::new();
    for san in &parsed.params.subject_alt_names {
        match san {
            SanType::URI(uri) => uris.push(uri.as_str().to_owned()),
            _ => {
                return Err(CsrError::Unacceptable(
                    "a workload CSR may only carry its SPIFFE ID as a URI SAN",
                ));
            }
        }
    }
    match uris.as_slice() {
        [uri] if uri == authorised.as_str() => Ok(parsed.public_key),
        [uri] => Err(CsrError::Mismatch {
            requested: uri.clone(),
            authorised: authorised.clone(),
        }),
        [] => Err(CsrError::Unacceptable(
            "CSR has no URI SAN with the SPIFFE ID",
        )),
        _ => Err(CsrError::Unacceptable("CSR has more than one URI SAN")),
    }
}
