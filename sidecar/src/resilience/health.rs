//! Active health checks (HTTP path expecting a status, or TCP connect) producing a per-endpoint healthy flag the balancer reads with one atomic load.
//!
//! One task per cluster probes every endpoint each interval, concurrently, each probe bounded
//! by the timeout. An endpoint turns unhealthy after `unhealthy_threshold` failed probes in a
//! row and healthy again after `healthy_threshold` good ones. Endpoints start healthy: a
//! fresh cluster must not black-hole traffic for a whole interval while the first probes run
//! (outlier detection covers a dead endpoint in the meantime).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// Probe every 5 s: an endpoint that dies without traffic is noticed within
/// `unhealthy_threshold × 5 s`, while N clients × M endpoints of probes stay negligible.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// A health endpoint that takes over a second to answer is not healthy.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// Two good probes in a row before trusting a recovered endpoint again (one could be luck).
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;

/// Three failed probes in a row: one lost SYN or GC pause never marks an endpoint down.
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// The endpoint accepts a TCP connection.
    Tcp,
    /// `GET path` over HTTP/1.1 answers `expected_status`.
    Http { path: String, expected_status: u16 },
}

/// Health check parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    pub kind: CheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// A future probe result.
pub type ProbeFuture = Pin<Box<dyn Future<Output = bool> + Send>>;

/// Probes one endpoint. The built-in [`StandardProbe`] speaks plain TCP/HTTP; the data path
/// can supply one that goes through mTLS.
pub trait Prober: Send + Sync + 'static {
    fn probe(&self, addr: SocketAddr) -> ProbeFuture;
}

/// Plain TCP connect or HTTP/1.1 GET, as configured.
#[derive(Debug, Clone)]
pub struct StandardProbe(pub CheckKind);

/// The healthy flags of one cluster's endpoints.
#[derive(Debug)]
pub struct HealthStatus {
    healthy: Box<[AtomicBool]>,
    probes: AtomicU64,
    transitions: AtomicU64,
}

/// The running checker; stops when dropped.
#[derive(Debug)]
pub struct HealthChecker {
    status: Arc<HealthStatus>,
    task: JoinHandle<()>,
}

// === impl HealthCheckConfig ===

impl HealthCheckConfig {
    /// A config of `kind` with default timing.
    pub fn new(kind: CheckKind) -> Self {
        HealthCheckConfig {
            kind,
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            healthy_threshold: DEFAULT_HEALTHY_THRESHOLD,
            unhealthy_threshold: DEFAULT_UNHEALTHY_THRESHOLD,
        }
    }
}

// === impl StandardProbe ===

impl Prober for StandardProbe {
    fn probe(&self, addr: SocketAddr) -> ProbeFuture {
        let kind = self.0.clone();
        Box::pin(async move {
            let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
                return false;
            };
            match kind {
                CheckKind::Tcp => true,
                CheckKind::Http {
                    path,
                    expected_status,
                } => http_probe(stream, addr, &path, expected_status).await,
            }
        })
    }
}

async fn http_probe(
    stream: tokio::net::TcpStream,
    addr: SocketAddr,
    path: &str,
    expected: u16,
) -> bool {
    let Ok((mut send, conn)) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await
    else {
        return false;
    };
    // The connection task ends when the probe's sender is dropped below.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let Ok(req) = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .header("user-agent", "mesh-health-check")
        .body(Empty::new())
    else {
        return false;
    };
    matches!(send.send_request(req).await, Ok(r) if r.status().as_u16() == expected)
}

// === impl HealthStatus ===

impl HealthStatus {
    fn new(n: usize) -> Self {
        HealthStatus {
            healthy: (0..n).map(|_| AtomicBool::new(true)).collect(),
            probes: AtomicU64::new(0),
            transitions: AtomicU64::new(0),
        }
    }

    /// True unless active checks marked endpoint `idx` unhealthy.
    pub fn is_healthy(&self, idx: usize) -> bool {
        self.healthy
            .get(idx)
            .is_none_or(|h| h.load(Ordering::Acquire))
    }

    /// Probes run so far.
    pub fn probes(&self) -> u64 {
        self.probes.load(Ordering::Relaxed)
    }

    /// Healthy ↔ unhealthy flips so far.
    pub fn transitions(&self) -> u64 {
        self.transitions.load(Ordering::Relaxed)
    }
}

// === impl HealthChecker ===

impl HealthChecker {
    /// Starts checking `endpoints` (indexed as the balancer indexes them).
    pub fn spawn(
        cfg: HealthCheckConfig,
        endpoints: Vec<SocketAddr>,
        prober: Arc<dyn Prober>,
    ) -> Self {
        let status = Arc::new(HealthStatus::new(endpoints.len()));
        let task = tokio::spawn(run(cfg, endpoints, prober, status.clone()));
        HealthChecker { status, task }
    }

    /// The flags the balancer reads.
    pub fn status(&self) -> &Arc<HealthStatus> {
        &self.status
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    cfg: HealthCheckConfig,
    endpoints: Vec<SocketAddr>,
    prober: Arc<dyn Prober>,
    status: Arc<HealthStatus>,
) {
    // (consecutive successes, consecutive failures) per endpoint; only this task touches them.
    let mut streaks = vec![(0u32, 0u32); endpoints.len()];
    let mut tick = tokio::time::interval(cfg.interval.max(Duration::from_millis(1)));
    // A slow round delays the next one instead of firing a burst to catch up.
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let probes = endpoints.iter().map(|&addr| {
            let fut = prober.probe(addr);
            async move {
                tokio::time::timeout(cfg.timeout, fut)
                    .await
                    .unwrap_or(false)
            }
        });
        let results = futures_util::future::join_all(probes).await;
        status
            .probes
            .fetch_add(results.len() as u64, Ordering::Relaxed);
        for (idx, ok) in results.into_iter().enumerate() {
            let (good, bad) = &mut streaks[idx];
            if ok {
                *good += 1;
                *bad = 0;
            } else {
                *bad += 1;
                *good = 0;
            }
            let flag = &status.healthy[idx];
            let healthy = flag.load(Ordering::Acquire);
            let flip = if healthy {
                *bad >= cfg.unhealthy_threshold.max(1)
            } else {
                *good >= cfg.healthy_threshold.max(1)
            };
            if flip {
                flag.store(!healthy, Ordering::Release);
                status.transitions.fetch_add(1, Ordering::Relaxed);
                tracing::info!(endpoint = %endpoints[idx], healthy = !healthy, "health check state changed");
            }
        }
    }
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
