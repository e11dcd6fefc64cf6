//! Every `route set` action measured on real traffic: the real `mesh-cli` binary sets the rule
//! (`--wait`) on a real control plane, real sidecars apply it, and recording apps say what
//! reached them (matches, rewrite, headers, fault abort/delay, mirror, timeout, retries).

mod support;

use std::time::Duration;

use support::echo::Answer;
use support::routed::{Headers, Mesh, assert_share, by_version, only, settled};

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

    // 50 % of 400: delayed replies are the ones that took at least the delay. 2 s is far above
    // what an undelayed local request takes even on a busy shared machine, so the split is
    // clean; the binomial standard deviation is 2.5 points, ±10 points is four of them.
    m.route_set(&["--to", "v1=100", "--fault-delay", "2s@50%"])
        .await;
    let replies = m.concurrent(400, 100).await;
    assert!(
        replies
            .iter()
            .all(|(r, _)| r.status == 200 && r.body == "v1")
    );
    let delayed = replies
        .iter()
        .filter(|(_, took)| *took >= Duration::from_secs(2))
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
    let lagging = Answer::SlowOdd(Duration::from_secs(3));
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

    // A per-try timeout turns a slow first attempt into a retry: every other request takes
    // 3 s and times out at 1 s (the others answer in milliseconds; only a very busy machine
    // could make one of them time out too, hence `>=`); with 500 ms per try and three
    // retries, a fast attempt answers in time.
    m.route_set(&["--to", "lagging=100", "--timeout", "1s"])
        .await;
    let replies = m.sequential(6, "GET", "/", &[]).await;
    let timed_out = replies
        .iter()
        .filter(|r| (r.status, r.cause()) == (504, Some("timeout:request")))
        .count();
    assert!(timed_out >= 3, "{replies:?}");
    m.route_set(&[
        "--to",
        "lagging=100",
        "--timeout",
        "5s",
        "--retries",
        "3",
        "--per-try-timeout",
        "500ms",
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
