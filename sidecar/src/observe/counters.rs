//! Process-wide data-path counters without labels worth a family (TCP, retries, ejections, authz, detection) and the certificate expiry gauge, exported at scrape time.
//!
//! Plain atomics in a `static`: a hook on the data path is one relaxed add, with no handle to
//! plumb and no lock; the collector reads them when `/metrics` is scraped.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::identity::CertStore;
use crate::proxy::Cause;

/// The counters; see [`counters`].
#[derive(Debug, Default)]
pub struct Counters {
    tcp_opened: AtomicU64,
    tcp_closed: AtomicU64,
    /// Bytes from the downstream (client) side toward the upstream, and back.
    tcp_bytes_up: AtomicU64,
    tcp_bytes_down: AtomicU64,
    retries: AtomicU64,
    budget_exhausted: AtomicU64,
    outlier_ejections: AtomicU64,
    authz_allow: AtomicU64,
    authz_deny: AtomicU64,
    detect_timeouts: AtomicU64,
}

/// The process's counters.
pub fn counters() -> &'static Counters {
    static C: OnceLock<Counters> = OnceLock::new();
    C.get_or_init(Counters::default)
}

/// Duration of proxied TCP connections.
fn tcp_duration() -> &'static Histogram {
    // 10 ms ×4 to ~2.9 h: connections live from one request to days; 8 buckets keep the
    // series count small while still separating short-lived from long-lived connections.
    static H: OnceLock<Histogram> = OnceLock::new();
    H.get_or_init(|| Histogram::new(exponential_buckets(0.01, 4.0, 10)))
}

/// The workload certificate store whose expiry `/metrics` reports (set once at start).
static CERTS: OnceLock<Arc<CertStore>> = OnceLock::new();

/// Reports `store`'s leaf and trust-bundle expiry as `mesh_cert_expiration_timestamp_seconds`.
pub fn watch_certificates(store: Arc<CertStore>) {
    let _ = CERTS.set(store);
}

/// One proxied TCP connection: counted open now, closed (with duration) when dropped.
#[derive(Debug)]
pub struct TcpConn {
    start: Instant,
}

// === impl Counters ===

impl Counters {
    /// Counts one request's retries and whether the budget refused one.
    pub fn retries(&self, retries: u32, budget_exhausted: bool) {
        if retries > 0 {
            self.retries.fetch_add(u64::from(retries), Relaxed);
        }
        if budget_exhausted {
            self.budget_exhausted.fetch_add(1, Relaxed);
        }
    }

    pub fn outlier_ejection(&self) {
        self.outlier_ejections.fetch_add(1, Relaxed);
    }

    pub fn authz(&self, allowed: bool) {
        let c = if allowed {
            &self.authz_allow
        } else {
            &self.authz_deny
        };
        c.fetch_add(1, Relaxed);
    }

    pub fn detect_timeout(&self) {
        self.detect_timeouts.fetch_add(1, Relaxed);
    }
}

// === impl TcpConn ===

impl TcpConn {
    pub fn open() -> Self {
        counters().tcp_opened.fetch_add(1, Relaxed);
        TcpConn {
            start: Instant::now(),
        }
    }

    /// Adds the bytes the copy moved (downstream→upstream, upstream→downstream).
    pub fn bytes(&self, up: u64, down: u64) {
        let c = counters();
        c.tcp_bytes_up.fetch_add(up, Relaxed);
        c.tcp_bytes_down.fetch_add(down, Relaxed);
    }
}

impl Drop for TcpConn {
    fn drop(&mut self) {
        counters().tcp_closed.fetch_add(1, Relaxed);
        tcp_duration().observe(self.start.elapsed().as_secs_f64());
    }
}

/// Registers the collector and the TCP duration histogram.
pub(super) fn register(registry: &mut Registry) {
    registry.register(
        "tcp_connection_duration_seconds",
        "Duration of proxied opaque TCP connections (and tunnels)",
        tcp_duration().clone(),
    );
    registry.register_collector(Box::new(Export));
}

/// Encodes [`Counters`] (and cause-derived counters) at scrape time.
#[derive(Debug)]
struct Export;

impl Collector for Export {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let c = counters();
        let get = |a: &AtomicU64| a.load(Relaxed);
        let cause = |want: Cause| {
            Cause::counts()
                .find(|(c, _)| *c == want)
                .map_or(0, |(_, n)| n)
        };
        let plain = [
            (
                "tcp_connections_opened",
                "Proxied opaque TCP connections (and tunnels) opened",
                get(&c.tcp_opened),
            ),
            (
                "tcp_connections_closed",
                "Proxied opaque TCP connections (and tunnels) closed",
                get(&c.tcp_closed),
            ),
            (
                "retries",
                "Retries made (attempts after the first)",
                get(&c.retries),
            ),
            (
                "retry_budget_exhausted",
                "Retries wanted but refused by the retry budget",
                get(&c.budget_exhausted),
            ),
            (
                "outlier_ejections",
                "Endpoints ejected by outlier detection",
                get(&c.outlier_ejections),
            ),
            (
                "circuit_open",
                "Requests refused because a circuit breaker limit was full",
                cause(Cause::CircuitOpen),
            ),
            (
                "rate_limited",
                "Requests refused by a local rate limit",
                cause(Cause::RateLimited),
            ),
            (
                "protocol_detect_timeouts",
                "Connections whose protocol was not known before the detection timeout (proxied as opaque TCP)",
                get(&c.detect_timeouts),
            ),
        ];
        for (name, help, n) in plain {
            let m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(n).encode(m)?;
        }
        let m = encoder.encode_descriptor(
            "tcp_connections_open",
            "Proxied opaque TCP connections (and tunnels) open now",
            None,
            MetricType::Gauge,
        )?;
        let open = get(&c.tcp_opened).saturating_sub(get(&c.tcp_closed));
        ConstGauge::new(i64::try_from(open).unwrap_or(i64::MAX)).encode(m)?;

        let mut family = encoder.encode_descriptor(
            "tcp_bytes",
            "Bytes proxied over opaque TCP, by direction (to_upstream, to_downstream), counted when a connection ends",
            None,
            MetricType::Counter,
        )?;
        for (dir, n) in [
            ("to_upstream", get(&c.tcp_bytes_up)),
            ("to_downstream", get(&c.tcp_bytes_down)),
        ] {
            ConstCounter::new(n).encode(family.encode_family(&[("direction", dir)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "authz",
            "Inbound authorization decisions, by decision (allow, deny)",
            None,
            MetricType::Counter,
        )?;
        for (decision, n) in [("allow", get(&c.authz_allow)), ("deny", get(&c.authz_deny))] {
            ConstCounter::new(n).encode(family.encode_family(&[("decision", decision)])?)?;
        }
        if let Some(store) = CERTS.get() {
            let mut family = encoder.encode_descriptor(
                "cert_expiration_timestamp_seconds",
                "Certificate notAfter in Unix seconds, by cert (leaf = this workload's own certificate; root, intermediate = the earliest of the trust bundle's CA certificates)",
                None,
                MetricType::Gauge,
            )?;
            if let Some(t) = store.expiration_timestamp_seconds() {
                ConstGauge::new(t).encode(family.encode_family(&[("cert", "leaf")])?)?;
            }
            let (root, intermediate) = bundle_expiry(store.trust_bundle().pem());
            for (cert, t) in [("root", root), ("intermediate", intermediate)] {
                if let Some(t) = t {
                    ConstGauge::new(t).encode(family.encode_family(&[("cert", cert)])?)?;
                }
            }
        }
        Ok(())
    }
}

/// The earliest notAfter (Unix seconds) of the trust bundle's self-signed roots and of its
/// other (intermediate) CA certificates. Parsed per scrape: a bundle holds a handful of
/// certificates and scrapes come every few seconds at most, off the data path.
fn bundle_expiry(pems: &[String]) -> (Option<i64>, Option<i64>) {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (mut root, mut intermediate) = (None::<i64>, None::<i64>);
    for pem in pems {
        for der in CertificateDer::pem_slice_iter(pem.as_bytes()).flatten() {
            let Ok((_, cert)) = X509Certificate::from_der(&der) else {
                continue;
            };
            let t = cert.validity().not_after.timestamp();
            let slot = if cert.subject() == cert.issuer() {
                &mut root
            } else {
                &mut intermediate
            };
            *slot = Some(slot.map_or(t, |s| s.min(t)));
        }
    }
    (root, intermediate)
}

#[cfg(test)]
mod tests {
    use super::bundle_expiry;

    #[test]
    fn bundle_expiry_takes_the_earliest_root() {
        let root = |year| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.not_after = rcgen::date_time_ymd(year, 1, 1);
            params.self_signed(&key).unwrap().pem()
        };
        // 2030-01-01T00:00:00Z
        let (roots, intermediates) = bundle_expiry(&[root(2031), root(2030)]);
        assert_eq!(roots, Some(1_893_456_000));
        assert_eq!(intermediates, None);
        assert_eq!(bundle_expiry(&["not a pem".to_owned()]), (None, None));
    }
}
