//! The demo's load generator and live table: per service and version, rps, success, p50/p99.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;

/// Requests allowed in flight: beyond this the generator skips (and counts) a tick rather than
/// pile up, so a stalled mesh shows as failures instead of unbounded memory.
const MAX_IN_FLIGHT: usize = 256;
/// One request's limit: a hung request counts as failed after 5 s.
const REQUEST_LIMIT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Window {
    ok: u64,
    failed: u64,
    latencies_ms: Vec<f64>,
}

#[derive(Default)]
struct Inner {
    window: BTreeMap<String, Window>,
    total: BTreeMap<String, (u64, u64)>,
    since: Option<tokio::time::Instant>,
}

#[derive(Clone, Default)]
pub struct Stats(Arc<Mutex<Inner>>);

impl Stats {
    fn record(&self, key: String, ok: bool, ms: f64) {
        let mut g = self.0.lock();
        g.since.get_or_insert_with(tokio::time::Instant::now);
        let w = g.window.entry(key.clone()).or_default();
        if ok {
            w.ok += 1;
        } else {
            w.failed += 1;
        }
        w.latencies_ms.push(ms);
        let t = g.total.entry(key).or_default();
        if ok {
            t.0 += 1;
        } else {
            t.1 += 1;
        }
    }

    /// Prints the table for the window since the last print and starts a new window.
    pub fn print_table(&self) {
        let mut g = self.0.lock();
        let secs = g
            .since
            .replace(tokio::time::Instant::now())
            .map_or(1.0, |s| s.elapsed().as_secs_f64().max(0.001));
        println!(
            "{:<14} {:>7} {:>9} {:>9} {:>9}",
            "SERVICE", "RPS", "SUCCESS", "P50(ms)", "P99(ms)"
        );
        for (k, w) in &mut g.window {
            let n = w.ok + w.failed;
            if n == 0 {
                println!("{k:<14} {:>7.1} {:>9} {:>9} {:>9}", 0.0, "-", "-", "-");
                continue;
            }
            w.latencies_ms.sort_by(f64::total_cmp);
            let pct = |p: f64| w.latencies_ms[((w.latencies_ms.len() - 1) as f64 * p) as usize];
            println!(
                "{k:<14} {:>7.1} {:>8.1}% {:>9.2} {:>9.2}",
                n as f64 / secs,
                100.0 * w.ok as f64 / n as f64,
                pct(0.5),
                pct(0.99)
            );
            *w = Window::default();
        }
    }

    pub fn print_summary(&self) {
        let g = self.0.lock();
        for (k, (ok, failed)) in &g.total {
            println!("total {k}: {ok} ok, {failed} failed");
        }
    }
}

/// Sends `rps` requests per second to `web` through the client sidecar until `total` passes.
pub async fn generate(outbound: SocketAddr, rps: u32, stats: Stats, total: Option<Duration>) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let period = Duration::from_secs_f64(1.0 / f64::from(rps.max(1)));
    let mut tick = tokio::time::interval(period);
    let end = total.map(|t| tokio::time::Instant::now() + t);
    loop {
        tick.tick().await;
        if end.is_some_and(|e| tokio::time::Instant::now() >= e) {
            return;
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            stats.record("web v1".into(), false, REQUEST_LIMIT.as_secs_f64() * 1e3);
            continue;
        };
        let client = client.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let t0 = tokio::time::Instant::now();
            let req = Request::get(format!("http://{outbound}/"))
                .header("host", "web")
                .body(Empty::new())
                .expect("static request");
            let res = tokio::time::timeout(REQUEST_LIMIT, async {
                let resp = client.request(req).await.ok()?;
                let ok = resp.status().is_success();
                let body = resp.into_body().collect().await.ok()?.to_bytes();
                Some((ok, String::from_utf8_lossy(&body).into_owned()))
            })
            .await
            .ok()
            .flatten();
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            match res {
                Some((ok, body)) => {
                    stats.record("web v1".into(), ok, ms);
                    // Body: "web v1 -> api v2": which api version served this request.
                    if let Some(api) = body.split(" -> ").nth(1)
                        && api.starts_with("api ")
                    {
                        stats.record(api.to_string(), ok, ms);
                    }
                }
                None => stats.record("web v1".into(), false, ms),
            }
        });
    }
}
