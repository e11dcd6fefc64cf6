//! The `certs` section of `/config_dump`: the workload certificate and trust bundle the proxy really holds (never the key).

use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Serialize;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::identity::CertStore;
use crate::tls::peer_spiffe_id;

/// `null` in the dump for a sidecar without a join token (plaintext, no identity).
#[derive(Debug, Serialize)]
pub struct CertsView {
    /// The identity this sidecar asked for.
    identity: String,
    /// `None` until the first certificate arrives (readiness waits for it).
    leaf: Option<LeafView>,
    /// Times the certificate was set (1 after start-up, +1 per rotation).
    rotations: u64,
    /// When the current certificate arrived (RFC 3339, UTC).
    received_at: Option<String>,
    trust_bundle: Vec<CertView>,
}

#[derive(Debug, Serialize)]
struct LeafView {
    /// Read from the certificate's URI SAN, not from configuration.
    spiffe_id: String,
    #[serde(flatten)]
    cert: CertView,
    /// Certificates presented in handshakes: the leaf plus intermediates.
    chain_length: usize,
}

/// What an operator checks on any certificate.
#[derive(Debug, Serialize)]
struct CertView {
    subject: String,
    issuer: String,
    /// Colon-separated hex, as `openssl x509 -serial` prints it (without the colons there).
    serial: String,
    not_before: String,
    not_after: String,
    /// Seconds from the dump until `not_after`; negative once expired.
    expires_in_secs: i64,
    /// `not_after - not_before`: with `expires_in_secs`, how much of its life is left.
    lifetime_secs: i64,
}

/// The section for `store`; unparsable certificates are reported in place, not skipped.
pub fn view(store: &CertStore) -> CertsView {
    let now = unix(SystemTime::now());
    let credentials = store.credentials();
    let leaf = credentials.as_ref().and_then(|c| {
        let chain = &c.certified.cert;
        let first = chain.first()?;
        Some(LeafView {
            spiffe_id: peer_spiffe_id(first).map_or_else(|e| format!("<{e}>"), |id| id.to_string()),
            cert: describe(first, now),
            chain_length: chain.len(),
        })
    });
    let trust_bundle = store
        .trust_bundle()
        .pem()
        .iter()
        .flat_map(|pem| CertificateDer::pem_slice_iter(pem.as_bytes()))
        .map(|der| match der {
            Ok(der) => describe(&der, now),
            Err(e) => unreadable(&e.to_string()),
        })
        .collect();
    CertsView {
        identity: store.identity().to_string(),
        leaf,
        rotations: store.generation(),
        received_at: credentials.map(|c| rfc3339(unix(c.received_at))),
        trust_bundle,
    }
}

fn describe(der: &CertificateDer<'_>, now: i64) -> CertView {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return unreadable("not an X.509 certificate");
    };
    let v = cert.validity();
    CertView {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: cert
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
        not_before: rfc3339(v.not_before.timestamp()),
        not_after: rfc3339(v.not_after.timestamp()),
        expires_in_secs: v.not_after.timestamp().saturating_sub(now),
        lifetime_secs: v
            .not_after
            .timestamp()
            .saturating_sub(v.not_before.timestamp()),
    }
}

fn unreadable(why: &str) -> CertView {
    let s = format!("<unreadable: {why}>");
    CertView {
        subject: s.clone(),
        issuer: s.clone(),
        serial: s.clone(),
        not_before: s.clone(),
        not_after: s,
        expires_in_secs: 0,
        lifetime_secs: 0,
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `2026-11-24T23:08:56Z` from Unix seconds, so the dump needs no date-time crate.
fn rfc3339(secs: i64) -> String {
    let (year, month, day, h, m, s) = crate::accesslog::civil(secs);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn formats_utc_timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_561_736), "2026-11-24T23:08:56Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }
}
