//! A mesh for measuring route actions: service `api` with one recording app + sidecar per
//! version, a client sidecar, `route set --wait` through the real CLI, and traffic helpers.

use std::time::{Duration, Instant};

use futures_util::future::join_all;

use super::echo::{Answer, Echo, Reply, echo, send};
use super::mesh::Sidecar;
use super::{ControlPlane, poll_until};

/// Bounds one test's whole traffic phase; only guards a hang.
const PHASE: Duration = Duration::from_secs(120);

/// Service `api` with one app + sidecar per version, and a client sidecar (service `web`).
/// Fields drop in order: sidecars before the control plane they are connected to.
pub struct Mesh {
    pub client: Sidecar,
    sidecars: Vec<Sidecar>,
    apps: Vec<(&'static str, Echo)>,
    pub cp: ControlPlane,
}

impl Mesh {
    pub async fn start(versions: &[(&'static str, Answer)]) -> Self {
        let cp = ControlPlane::start();
        let dir = cp.dir.path().to_path_buf();
        let (mut apps, mut api) = (Vec::new(), Vec::new());
        for &(version, answer) in versions {
            let app = echo(version, answer).await;
            api.push(Sidecar::start(&dir, &cp.discovery, "api", version, Some(app.port)).await);
            apps.push((version, app));
        }
        let client = Sidecar::start(&dir, &cp.discovery, "web", "v1", None).await;
        let m = Self {
            cp,
            apps,
            sidecars: api,
            client,
        };
        // The first call makes the client subscribe to `api` on demand; retry until a reply
        // comes from an app (not the proxy). 2 s as before (40 tries 50 ms apart): the tests
        // that follow assert on the replies themselves.
        let _ = poll_until(
            Duration::from_secs(2),
            Duration::from_millis(50),
            || async { m.get("/", &[]).await.filter(|r| r.cause().is_none()) },
        )
        .await;
        m
    }

    /// Another service next to `api`: an app answering `version` behind its own sidecar.
    pub async fn add(&mut self, service: &str, version: &'static str) {
        let app = echo(version, Answer::Ok).await;
        let dir = self.cp.dir.path().to_path_buf();
        let s = Sidecar::start(&dir, &self.cp.discovery, service, version, Some(app.port)).await;
        self.sidecars.push(s);
        self.apps.push((version, app));
    }

    pub fn app(&self, version: &str) -> &Echo {
        &self.apps.iter().find(|(v, _)| *v == version).unwrap().1
    }

    /// `mesh-cli route set api ARGS… --wait`, which must succeed.
    pub async fn route_set(&self, args: &[&str]) {
        let all = [&["route", "set", "api"][..], args, &["--wait"]].concat();
        let out = self.cp.cli_async(&all).await.ok();
        assert!(out.stdout.contains("ACKed by"), "{all:?}: {}", out.stdout);
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Option<Reply> {
        send(self.client.outbound, "GET", "api", path, headers).await
    }

    /// `n` requests, one after the other; every one must get a reply.
    pub async fn sequential(
        &self,
        n: usize,
        method: &str,
        path: &str,
        h: &[(&str, &str)],
    ) -> Vec<Reply> {
        let run = async {
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                let r = send(self.client.outbound, method, "api", path, h).await;
                out.push(r.expect("no reply through the client sidecar"));
            }
            out
        };
        tokio::time::timeout(PHASE, run)
            .await
            .expect("traffic hung")
    }

    /// `n` GETs in concurrent batches of `batch`, each with the time it took.
    pub async fn concurrent(&self, n: usize, batch: usize) -> Vec<(Reply, Duration)> {
        let run = async {
            let mut out = Vec::with_capacity(n);
            for start in (0..n).step_by(batch) {
                let wave = (start..n.min(start + batch)).map(|_| async {
                    let t = Instant::now();
                    let r = self.get("/", &[]).await;
                    (r.expect("no reply through the client sidecar"), t.elapsed())
                });
                out.extend(join_all(wave).await);
            }
            out
        };
        tokio::time::timeout(PHASE, run)
            .await
            .expect("traffic hung")
    }
}

/// Request headers as (name, value) pairs.
pub type Headers<'a> = &'a [(&'a str, &'a str)];

/// Replies per body (the version that answered).
pub fn by_version(replies: &[Reply]) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = Vec::new();
    for r in replies {
        assert_eq!(r.status, 200, "{r:?}");
        match out.iter_mut().find(|(v, _)| *v == r.body) {
            Some((_, n)) => *n += 1,
            None => out.push((r.body.clone(), 1)),
        }
    }
    out.sort();
    out
}

pub fn only(version: &str, n: usize) -> Vec<(String, usize)> {
    vec![(version.to_string(), n)]
}

/// Waits (bounded) until `app`'s count stops growing: mirrored copies are fire-and-forget,
/// so they may land after the client's replies.
pub async fn settled(app: &Echo) -> usize {
    let mut last = app.count();
    let mut still = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = app.count();
        still = if now == last { still + 1 } else { 0 };
        last = now;
        if still == 5 {
            break;
        }
    }
    last
}

/// `share` of `n` is within `points` percentage points of `percent`.
pub fn assert_share(what: &str, hits: usize, n: usize, percent: f64, points: f64) {
    let got = hits as f64 * 100.0 / n as f64;
    assert!(
        (got - percent).abs() <= points,
        "{what}: {hits} of {n} = {got:.1}%, expected {percent}% ± {points} points"
    );
}
