//! Every `route set` action measured on real traffic: the real `mesh-cli` binary sets the rule
//! (`--wait`) on a real control plane, real sidecars apply it, and recording apps say what
//! reached them (matches, rewrite, headers, fault abort/delay, mirror, timeout, retries).

mod support;

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use support::ControlPlane;
use support::echo::{Answer, Echo, Reply, echo, send};
use support::mesh::Sidecar;

/// Bounds one test's whole traffic phase; only guards a hang.
const PHASE: Duration = Duration::from_secs(120);

/// Service `api` with one app + sidecar per version, and a client sidecar (service `web`).
/// Fields drop in order: sidecars before the control plane they are connected to.
struct Mesh {
    client: Sidecar,
    sidecars: Vec<Sidecar>,
    apps: Vec<(&'static str, Echo)>,
    cp: ControlPlane,
}

impl Mesh {
    async fn start(versions: &[(&'static str, Answer)]) -> Self {
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
        // comes from an app (not the proxy), bounded (each attempt is bounded by `send`).
        for _ in 0..40 {
            if m.get("/", &[]).await.is_some_and(|r| r.cause().is_none()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        m
    }

    /// Another service next to `api`: an app answering `version` behind its own sidecar.
    async fn add(&mut self, service: &str, version: &'static str) {
        let app = echo(version, Answer::Ok).await;
        let dir = self.cp.dir.path().to_path_buf();
        let s = Sidecar::start(&dir, &self.cp.discovery, service, version, Some(app.port)).await;
        self.sidecars.push(s);
        self.apps.push((version, app));
    }

    fn app(&self, version: &str) -> &Echo {
        &self.apps.iter().find(|(v, _)| *v == version).unwrap().1
    }

    /// `mesh-cli route set api ARGS… --wait`, which must succeed.
    async fn route_set(&self, args: &[&str]) {
        let all = [&["route", "set", "api"][..], args, &["--wait"]].concat();
        let out = self.cp.cli_async(&all).await.ok();
        assert!(out.stdout.contains("ACKed by"), "{all:?}: {}", out.stdout);
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Option<Reply> {
        send(self.client.outbound, "GET", "api", path, headers).await
    }

    /// `n` requests, one after the other; every one must get a reply.
    async fn sequential(
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
    async fn concurrent(&self, n: usize, batch: usize) -> Vec<(Reply, Duration)> {
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
type Headers<'a> = &'a [(&'a str, &'a str)];

/// Replies per body (the version that answered).
fn by_version(replies: &[Reply]) -> Vec<(String, usize)> {
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

fn only(version: &str, n: usize) -> Vec<(String, usize)> {
    vec![(version.to_string(), n)]
}

/// Waits (bounded) until `app`'s count stops growing: mirrored copies are fire-and-forget,
/// so they may land after the client's replies.
async fn settled(app: &Echo) -> usize {
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
fn assert_share(what: &str, hits: usize, n: usize, percent: f64, points: f64) {
    let got = hits as f64 * 100.0 / n as f64;
    assert!(
        (got - percent).abs() <= points,
        "{what}: {hits} of {n} = {got:.1}%, expected {percent}% ± {points} points"
    );
}

const V123: [(&str, Answer); 3] = [("v1", Answer::Ok), ("v2", Answer::Ok), ("v3", Answer::Ok)];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_path_and_method_matches_steer_real_traffic() {
    let m = Mesh::start(&V123[..2]).await;
    m.route_set(&["--to", "v1=100"]).await;
    assert_eq!(
        by_version(&m.sequential(20, "GET", "/", &[]).await),
        only("v1", 20)
    );

    // Header: only requests carrying it go to v2.
    m.route_set(&["--match", "header:x-canary=1", "--to", "v2=100"])
        .await;
    let canary = [("x-canary", "1")];
    assert_eq!(
        by_version(&m.sequential(20, "GET", "/", &canary).await),
        only("v2", 20)
    );
    let other = [("x-canary", "2")];
    assert_eq!(
        by_version(&m.sequential(20, "GET", "/", &other).await),
        only("v1", 20)
    );
    assert_eq!(
        by_version(&m.sequential(20, "GET", "/", &[]).await),
        only("v1", 20)
    );

    // Path prefix: /api… goes to v2, everything else stays on v1.
    m.route_set(&["--match", "path-prefix=/api", "--to", "v2=100"])
        .await;
    assert_eq!(
        by_version(&m.sequential(20, "GET", "/api/users", &[]).await),
        only("v2", 20)
    );
    assert_eq!(
        by_version(&m.sequential(20, "GET", "/web", &[]).await),
        only("v1", 20)
    );

    // Method: GETs go to v2, POSTs to the default rule (v1) unless an earlier rule matches.
    m.route_set(&["--match", "method=GET", "--to", "v2=100"])
        .await;
    assert_eq!(
        by_version(&m.sequential(20, "GET", "/web", &[]).await),
        only("v2", 20)
    );
    assert_eq!(
        by_version(&m.sequential(20, "POST", "/web", &[]).await),
        only("v1", 20)
    );
    let posts = m.sequential(20, "POST", "/api/x", &[]).await;
    assert_eq!(by_version(&posts), only("v2", 20), "path rule precedes");
    assert!(m.app("v1").seen_since(0).iter().any(|s| s.method == "POST"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_query_exact_regex_and_combined_matches() {
    let m = Mesh::start(&V123[..2]).await;
    m.route_set(&["--to", "v1=100"]).await;
    for cond in [
        &["--match", "header:x-debug"][..],
        &["--match", "query:tier=gold"],
        &["--match", "path=/exact"],
        &["--match", "path-regex=/items/[0-9]+"],
        // Two conditions in one rule must both hold.
        &[
            "--match",
            "path-prefix=/both",
            "--match",
            "header:x-canary=1",
        ],
    ] {
        m.route_set(&[cond, &["--to", "v2=100"]].concat()).await;
    }
    let cases: &[(&str, Headers, &str)] = &[
        ("/", &[("x-debug", "anything")], "v2"),
        ("/", &[], "v1"),
        ("/?tier=gold", &[], "v2"),
        ("/?tier=silver", &[], "v1"),
        ("/exact", &[], "v2"),
        ("/exact/more", &[], "v1"),
        ("/items/42", &[], "v2"),
        ("/items/42x", &[], "v1"),
        ("/both/x", &[("x-canary", "1")], "v2"),
        ("/both/x", &[], "v1"),
        ("/other", &[("x-canary", "1")], "v1"),
    ];
    for (path, headers, want) in cases {
        let replies = m.sequential(5, "GET", path, headers).await;
        assert_eq!(by_version(&replies), only(want, 5), "{path} {headers:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrite_prefix_and_set_header_reach_the_backend() {
    let m = Mesh::start(&V123[..2]).await;
    m.route_set(&["--to", "v1=100"]).await;
    m.route_set(&[
        "--match",
        "path-prefix=/api",
        "--to",
        "v2=100",
        "--rewrite-prefix",
        "/v2",
        "--set-header",
        "x-env=canary",
        "--set-response-header",
        "x-served-by=canary",
    ])
    .await;
    let v2 = m.app("v2");
    let before = v2.count();
    let replies = m.sequential(10, "GET", "/api/users?page=2", &[]).await;
    assert_eq!(by_version(&replies), only("v2", 10));
    assert!(
        replies
            .iter()
            .all(|r| r.header("x-served-by") == Some("canary"))
    );
    let seen = v2.seen_since(before);
    assert_eq!(seen.len(), 10);
    for s in &seen {
        assert_eq!(s.target, "/v2/users?page=2", "{s:?}");
        assert_eq!(s.header("x-env"), Some("canary"), "{s:?}");
    }

    // The default rule neither rewrites nor sets the header.
    let v1 = m.app("v1");
    let before = v1.count();
    let replies = m.sequential(5, "GET", "/other", &[]).await;
    assert!(replies.iter().all(|r| r.header("x-served-by").is_none()));
    for s in v1.seen_since(before) {
        assert_eq!(s.target, "/other");
        assert_eq!(s.header("x-env"), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_abort_rate_and_cause_header() {
    let m = Mesh::start(&V123[..1]).await;
    let v1 = m.app("v1");

    // 20 % over 1,000 requests: the binomial standard deviation is 1.26 points, so ±5 points
    // is about four of them (a false failure once in ~15,000 runs).
    m.route_set(&["--to", "v1=100", "--fault-abort", "503@20%"])
        .await;
    let before = v1.count();
    let replies = m.sequential(1000, "GET", "/", &[]).await;
    let aborted: Vec<_> = replies.iter().filter(|r| r.status == 503).collect();
    assert!(
        aborted.iter().all(|r| r.cause() == Some("fault-abort")),
        "{aborted:?}"
    );
    assert!(
        replies
            .iter()
            .all(|r| r.status == 503 || (r.status == 200 && r.body == "v1")),
        "only aborts and v1's answers"
    );
    assert_share("aborted", aborted.len(), 1000, 20.0, 5.0);
    // Aborted requests never left the proxy.
    assert_eq!(v1.count() - before, 1000 - aborted.len());

    // 100 %: every request is aborted and the backend receives none.
    m.route_set(&["--to", "v1=100", "--fault-abort", "503@100%"])
        .await;
    let before = v1.count();
    let replies = m.sequential(50, "GET", "/", &[]).await;
    assert!(
        replies
            .iter()
            .all(|r| r.status == 503 && r.cause() == Some("fault-abort")),
        "{replies:?}"
    );
    assert_eq!(v1.count(), before);

    // Another status is kept as written.
    m.route_set(&["--to", "v1=100", "--fault-abort", "418@100%"])
        .await;
    let r = m.get("/", &[]).await.unwrap();
    assert_eq!((r.status, r.cause()), (418, Some("fault-abort")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_delay_holds_every_or_a_share_of_requests() {
    let m = Mesh::start(&V123[..1]).await;
    // 100 %: every reply comes after at least the injected delay (a lower bound only).
    m.route_set(&["--to", "v1=100", "--fault-delay", "300ms@100%"])
        .await;
    let replies = m.concurrent(20, 20).await;
    for (r, took) in &replies {
        assert_eq!((r.status, r.body.as_str()), (200, "v1"));
        assert!(*took >= Duration::from_millis(300), "{took:?}");
    }

    // 50 % of 400: delayed replies are the ones that took at least the delay. 1 s is far above
    // what an undelayed local request takes even on a busy machine, so the split is clean;
    // the binomial standard deviation is 2.5 points, ±10 points is four of them.
    m.route_set(&["--to", "v1=100", "--fault-delay", "1s@50%"])
        .await;
    let replies = m.concurrent(400, 100).await;
    assert!(
        replies
            .iter()
            .all(|(r, _)| r.status == 200 && r.body == "v1")
    );
    let delayed = replies
        .iter()
        .filter(|(_, took)| *took >= Duration::from_secs(1))
        .count();
    assert_share("delayed", delayed, 400, 50.0, 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_copies_to_v3_while_the_client_gets_v1() {
    let m = Mesh::start(&V123).await;
    let (v1, v2, v3) = (m.app("v1"), m.app("v2"), m.app("v3"));
    m.route_set(&["--to", "v1=100", "--mirror", "v3=100%"])
        .await;
    let (b1, b2, b3) = (v1.count(), v2.count(), settled(v3).await);
    let replies = m.sequential(50, "GET", "/mirrored", &[]).await;
    assert_eq!(by_version(&replies), only("v1", 50));
    assert_eq!(settled(v3).await - b3, 50, "every request mirrored");
    assert_eq!(v1.count() - b1, 50);
    assert_eq!(v2.count(), b2, "v2 gets nothing");
    assert!(v3.seen_since(b3).iter().all(|s| s.target == "/mirrored"));

    // 50 % of 400: standard deviation 2.5 points, ±10 points is four of them.
    m.route_set(&["--to", "v1=100", "--mirror", "v3=50%"]).await;
    let b3 = settled(v3).await;
    let replies = m.sequential(400, "GET", "/", &[]).await;
    assert_eq!(by_version(&replies), only("v1", 400));
    assert_share("mirrored", settled(v3).await - b3, 400, 50.0, 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_answers_504_with_the_cause() {
    let slow = Answer::After(Duration::from_secs(2));
    let m = Mesh::start(&[("v1", Answer::Ok), ("slow", slow)]).await;
    // Without a timeout the slow backend's answer comes through.
    m.route_set(&["--to", "slow=100"]).await;
    let r = m.get("/", &[]).await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "slow"));

    // With 200 ms the proxy gives up first. Two requests only: timeouts count against the
    // endpoint, and outlier detection would eject it after a few in a row.
    m.route_set(&["--to", "slow=100", "--timeout", "200ms"])
        .await;
    for _ in 0..2 {
        let r = m.get("/", &[]).await.unwrap();
        assert_eq!(
            (r.status, r.cause()),
            (504, Some("timeout:request")),
            "{r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_hide_a_failing_or_slow_first_attempt() {
    let lagging = Answer::SlowOdd(Duration::from_secs(2));
    let m = Mesh::start(&[("flaky", Answer::FailOdd), ("lagging", lagging)]).await;
    let flaky = m.app("flaky");
    // Without retries every other request fails with the app's own 503.
    m.route_set(&["--to", "flaky=100"]).await;
    let replies = m.sequential(10, "GET", "/", &[]).await;
    let failed: Vec<_> = replies.iter().filter(|r| r.status != 200).collect();
    assert_eq!(failed.len(), 5, "{replies:?}");
    assert!(
        failed
            .iter()
            .all(|r| r.status == 503 && r.cause().is_none())
    );

    // With retries on 5xx the client sees only successes; the app saw the failed attempts.
    m.route_set(&["--to", "flaky=100", "--retries", "3", "--retry-on", "5xx"])
        .await;
    let before = flaky.count();
    let replies = m.sequential(20, "GET", "/", &[]).await;
    assert_eq!(by_version(&replies), only("flaky", 20));
    assert!(
        flaky.count() - before >= 39,
        "{} attempts",
        flaky.count() - before
    );

    // A per-try timeout turns a slow first attempt into a retry: every other request would
    // take 2 s and time out at 500 ms; with 200 ms per try the retry answers in time.
    m.route_set(&["--to", "lagging=100", "--timeout", "500ms"])
        .await;
    let replies = m.sequential(6, "GET", "/", &[]).await;
    let timed_out = replies
        .iter()
        .filter(|r| (r.status, r.cause()) == (504, Some("timeout:request")))
        .count();
    assert_eq!(timed_out, 3, "{replies:?}");
    m.route_set(&[
        "--to",
        "lagging=100",
        "--timeout",
        "5s",
        "--retries",
        "2",
        "--per-try-timeout",
        "200ms",
        "--retry-on",
        "5xx",
    ])
    .await;
    let replies = m.sequential(6, "GET", "/", &[]).await;
    assert_eq!(by_version(&replies), only("lagging", 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_service_as_mirror_target_and_as_backend() {
    let mut m = Mesh::start(&V123[..1]).await;
    m.add("billing", "b1").await;
    // Mirror first: the client has never called billing, so the copy is what makes it
    // subscribe; no copy may be lost to that.
    m.route_set(&["--to", "v1=100", "--mirror", "billing:b1=100%"])
        .await;
    let billing = m.app("b1");
    let before = settled(billing).await;
    let replies = m.sequential(20, "GET", "/copy", &[]).await;
    assert_eq!(by_version(&replies), only("v1", 20));
    assert_eq!(
        settled(billing).await - before,
        20,
        "every request mirrored"
    );
    let seen = billing.seen_since(before);
    assert!(
        seen.iter()
            .all(|s| s.target == "/copy" && s.header("host") == Some("billing"))
    );

    // A rule may send to another service altogether (`svc:subset=W`, empty subset = all).
    m.route_set(&["--match", "header:x-tenant=b", "--to", "billing:=100"])
        .await;
    let tenant = [("x-tenant", "b")];
    let replies = m.sequential(10, "GET", "/", &tenant).await;
    assert_eq!(by_version(&replies), only("b1", 10));
    let replies = m.sequential(10, "GET", "/", &[]).await;
    assert_eq!(by_version(&replies), only("v1", 10));
}
