//! TLS handshake failures by direction and a bounded reason: classification and the `mesh_tls_handshake_failures_total` family.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use rustls::{AlertDescription, CertificateError};

use super::client::ConnectError;
use super::server::AcceptError;
use super::verify::PeerCertError;

/// Which side of the handshake this sidecar was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeSide {
    /// We accepted (the peer is a client).
    Inbound,
    /// We connected (the peer is a server).
    Outbound,
}

/// Why a handshake failed. A fixed vocabulary, so the series count stays bounded
/// (2 directions × 8 reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// The peer's chain does not lead to a root in the trust bundle (foreign CA).
    UnknownCa,
    /// Valid chain, but no/several/malformed SPIFFE ID, or not the identity expected.
    BadIdentity,
    /// The peer's certificate is expired (or not yet valid).
    Expired,
    /// The client presented no certificate (client auth is mandatory).
    NoClientCert,
    /// Plaintext on a port that requires mTLS (strict mode).
    Plaintext,
    /// Not TLS 1.3 with a mesh ALPN, or malformed TLS.
    Protocol,
    /// The handshake did not finish in time.
    Timeout,
    /// Anything else: I/O errors, resets, no local certificate yet.
    Other,
}

const REASONS: [FailureReason; 8] = [
    FailureReason::UnknownCa,
    FailureReason::BadIdentity,
    FailureReason::Expired,
    FailureReason::NoClientCert,
    FailureReason::Plaintext,
    FailureReason::Protocol,
    FailureReason::Timeout,
    FailureReason::Other,
];

/// Process-wide counts: `[side][reason]`. Failures happen on the data path, where no metrics
/// handle is plumbed; one relaxed atomic add per failure costs nothing.
static COUNTS: [[AtomicU64; REASONS.len()]; 2] =
    [const { [const { AtomicU64::new(0) }; REASONS.len()] }; 2];

/// Exports [`COUNTS`] at scrape time; registered once in the sidecar's metric registry.
#[derive(Debug)]
pub struct HandshakeFailures;

// === impl FailureReason ===

impl FailureReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UnknownCa => "unknown_ca",
            Self::BadIdentity => "bad_identity",
            Self::Expired => "expired",
            Self::NoClientCert => "no_client_cert",
            Self::Plaintext => "plaintext",
            Self::Protocol => "protocol",
            Self::Timeout => "timeout",
            Self::Other => "other",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }

    /// Classifies the error rustls (through tokio-rustls's `io::Error`) reported: our own
    /// verifier's verdicts, or the alert the peer sent about ours.
    pub fn of_io(e: &std::io::Error) -> Self {
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(tls) => Self::of_rustls(tls),
            None if e.kind() == std::io::ErrorKind::InvalidData => Self::Protocol,
            None => Self::Other,
        }
    }

    fn of_rustls(e: &rustls::Error) -> Self {
        use rustls::Error as E;
        match e {
            E::InvalidCertificate(c) => Self::of_certificate(c),
            E::NoCertificatesPresented => Self::NoClientCert,
            E::AlertReceived(alert) => Self::of_alert(*alert),
            E::InvalidMessage(_)
            | E::InappropriateMessage { .. }
            | E::InappropriateHandshakeMessage { .. }
            | E::PeerIncompatible(_)
            | E::PeerMisbehaved(_)
            | E::NoApplicationProtocol => Self::Protocol,
            _ => Self::Other,
        }
    }

    fn of_certificate(c: &CertificateError) -> Self {
        match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => Self::UnknownCa,
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => Self::Expired,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                Self::BadIdentity
            }
            CertificateError::Other(other) if other.0.downcast_ref::<PeerCertError>().is_some() => {
                Self::BadIdentity
            }
            _ => Self::Other,
        }
    }

    /// What the peer told us about our certificate (or our hello).
    fn of_alert(a: AlertDescription) -> Self {
        match a {
            AlertDescription::UnknownCA => Self::UnknownCa,
            AlertDescription::CertificateExpired => Self::Expired,
            AlertDescription::CertificateRequired => Self::NoClientCert,
            AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::AccessDenied => Self::BadIdentity,
            AlertDescription::ProtocolVersion
            | AlertDescription::NoApplicationProtocol
            | AlertDescription::HandshakeFailure
            | AlertDescription::DecodeError
            | AlertDescription::IllegalParameter
            | AlertDescription::UnexpectedMessage => Self::Protocol,
            _ => Self::Other,
        }
    }
}

/// Counts one failed handshake.
pub fn record(side: HandshakeSide, reason: FailureReason) {
    COUNTS[side as usize][reason.index()].fetch_add(1, Relaxed);
}

/// The current count (tests, and the admin's own checks).
pub fn count(side: HandshakeSide, reason: FailureReason) -> u64 {
    COUNTS[side as usize][reason.index()].load(Relaxed)
}

// === impl ConnectError / AcceptError ===

impl ConnectError {
    /// The metric reason; `None` when no handshake was attempted (TCP connect failed).
    pub fn reason(&self) -> Option<FailureReason> {
        match self {
            ConnectError::Connect { .. } => None,
            ConnectError::Handshake { source, .. } => Some(FailureReason::of_io(source)),
            ConnectError::HandshakeTimeout { .. } => Some(FailureReason::Timeout),
            ConnectError::Alpn { .. } => Some(FailureReason::Protocol),
            ConnectError::NoCertificate => Some(FailureReason::Other),
        }
    }
}

impl AcceptError {
    /// The metric reason; `None` when the peer closed before saying anything (health probes,
    /// port scans) — not a handshake attempt.
    pub fn reason(&self) -> Option<FailureReason> {
        match self {
            AcceptError::Closed => None,
            AcceptError::PlaintextRefused => Some(FailureReason::Plaintext),
            AcceptError::Detect(_) | AcceptError::HandshakeTimeout(_) => {
                Some(FailureReason::Timeout)
            }
            AcceptError::Handshake(e) => Some(FailureReason::of_io(e)),
            AcceptError::NoCertificate => Some(FailureReason::Other),
        }
    }
}

// === impl HandshakeFailures ===

impl Collector for HandshakeFailures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let mut family = encoder.encode_descriptor(
            "tls_handshake_failures",
            "mTLS handshakes that failed, by direction and reason",
            None,
            MetricType::Counter,
        )?;
        for (side, name) in [
            (HandshakeSide::Inbound, "inbound"),
            (HandshakeSide::Outbound, "outbound"),
        ] {
            for reason in REASONS {
                let labels = [("direction", name), ("reason", reason.as_str())];
                ConstCounter::new(count(side, reason)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_index_their_table() {
        for (i, r) in REASONS.iter().enumerate() {
            assert_eq!(r.index(), i, "{}", r.as_str());
        }
    }

    #[test]
    fn classification() {
        let io = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let cases = [
            (
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                FailureReason::UnknownCa,
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::Expired),
                FailureReason::Expired,
            ),
            (
                rustls::Error::NoCertificatesPresented,
                FailureReason::NoClientCert,
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::UnknownCA),
                FailureReason::UnknownCa,
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                    std::sync::Arc::new(PeerCertError::NoSpiffeId),
                ))),
                FailureReason::BadIdentity,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(FailureReason::of_io(&io(e)), want);
        }
        let plain = std::io::Error::new(std::io::ErrorKind::InvalidData, "corrupt message");
        assert_eq!(FailureReason::of_io(&plain), FailureReason::Protocol);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(FailureReason::of_io(&reset), FailureReason::Other);
    }
}
