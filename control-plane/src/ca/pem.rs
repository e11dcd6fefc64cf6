//! PEM encoding and splitting of certificates, so CA material travels as plain PEM strings.

use base64::Engine;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A PEM input that holds no certificate, or a broken one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: no valid PEM certificate ({detail})")]
pub struct PemError {
    pub what: String,
    pub detail: String,
}

/// Encodes one DER certificate as a PEM block (64-column base64, as RFC 7468 asks).
pub fn encode_cert(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 60);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Every certificate in `pem`, in order; at least one is required.
pub fn parse_certs(what: &str, pem: &str) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError {
            what: what.to_owned(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PemError {
            what: what.to_owned(),
            detail: "empty".to_owned(),
        });
    }
    Ok(certs)
}

/// Splits a concatenated PEM file into one normalised PEM string per certificate.
pub fn split_certs(what: &str, pem: &str) -> Result<Vec<String>, PemError> {
    Ok(parse_certs(what, pem)?
        .iter()
        .map(|der| encode_cert(der))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let der = vec![0x30, 0x03, 0x02, 0x01, 0x05];
        let pem = encode_cert(&der);
        let two = format!("{pem}{pem}");
        let back = parse_certs("x", &two).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].as_ref(), der.as_slice());
        assert_eq!(split_certs("x", &two).unwrap(), vec![pem.clone(), pem]);
        assert!(parse_certs("x", "").is_err());
        assert!(
            parse_certs(
                "x",
                "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n"
            )
            .is_err()
        );
    }
}
