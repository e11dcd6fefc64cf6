//! `route set --wait` against a real control plane and proxies speaking the real discovery
//! protocol: returns once every subscriber ACKed; a NACK exits 4 naming the proxy and error,
//! and `status`/`check` show it.

mod support;

use support::{ControlPlane, node, proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_returns_after_every_subscribed_proxy_acked() {
    let cp = ControlPlane::start_plaintext();
    cp.cli_async(&["service", "create", "reviews", "--port", "9080"])
        .await
        .ok();
    let _r1 = proxy(
        &cp.discovery,
        node("reviews-1", "reviews", "v1", "10.0.0.1"),
        "ratings",
        None,
    )
    .await;
    let _r2 = proxy(
        &cp.discovery,
        node("reviews-2", "reviews", "v2", "10.0.0.2"),
        "ratings",
        None,
    )
    .await;
    let _w1 = proxy(
        &cp.discovery,
        node("web-1", "web", "v1", "10.0.1.1"),
        "reviews",
        None,
    )
    .await;
    let _w2 = proxy(
        &cp.discovery,
        node("web-2", "web", "v1", "10.0.1.2"),
        "reviews",
        None,
    )
    .await;

    let out = cp
        .cli_async(&[
            "route",
            "set",
            "reviews",
            "--to",
            "v1=80,v2=20",
            "--wait",
            "-o",
            "json",
        ])
        .await
        .ok();
    let v = out.json();
    assert_eq!(
        v["converged_proxies"], 2,
        "both web proxies subscribe to the reviews route"
    );
    assert!(v["convergence_ms"].is_u64());
    let version = v["version"].as_str().unwrap().to_string();

    // Every subscriber really holds that version now.
    let status = cp.cli_async(&["status", "-o", "json"]).await.ok().json();
    let proxies = status["proxies"].as_array().unwrap();
    assert_eq!(proxies.len(), 4);
    for p in proxies.iter().filter(|p| p["service"] == "web") {
        let route = p["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == "Route")
            .unwrap();
        assert_eq!(route["acked"]["reviews"], version.as_str(), "{p}");
    }

    // The human form prints the convergence time.
    let out = cp
        .cli_async(&["route", "set", "reviews", "--to", "v1=50,v2=50", "--wait"])
        .await
        .ok();
    assert!(
        out.stdout.contains("ACKed by 2 proxies in "),
        "{}",
        out.stdout
    );

    // Endpoints come from the proxies' announcements, with their version label.
    let eps = cp
        .cli_async(&["endpoints", "reviews", "-o", "json"])
        .await
        .ok()
        .json();
    let eps = eps.as_array().unwrap();
    assert_eq!(eps.len(), 2);
    assert_eq!(eps[0]["address"], "10.0.0.1:15006");
    assert_eq!(eps[0]["version"], "v1");
    assert_eq!(eps[0]["state"], "healthy");
    let drained = cp
        .cli_async(&[
            "endpoints",
            "drain",
            "reviews",
            "10.0.0.2:15006",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(drained["state"], "draining");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_fails_the_wait_and_shows_in_status() {
    let cp = ControlPlane::start_plaintext();
    cp.cli_async(&["service", "create", "reviews", "--port", "9080"])
        .await
        .ok();
    let error = "rule \"bad\": rewrite with regex paths is not supported by this proxy";
    let _ok = proxy(
        &cp.discovery,
        node("web-ok", "web", "v1", "10.0.1.1"),
        "reviews",
        None,
    )
    .await;
    let _picky = proxy(
        &cp.discovery,
        node("web-picky", "web", "v1", "10.0.1.2"),
        "reviews",
        Some(("bad", error)),
    )
    .await;

    cp.cli_async(&["route", "set", "reviews", "--to", "v1=100", "--wait"])
        .await
        .ok();
    let out = cp
        .cli_async(&[
            "route",
            "set",
            "reviews",
            "--rule-name",
            "bad",
            "--match",
            "path-prefix=/x",
            "--wait",
        ])
        .await;
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("proxy web-picky (web) rejected route reviews"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains(error), "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);

    // Never invisible: the table and JSON both carry the error text.
    let table = cp.cli_async(&["status"]).await.ok().stdout;
    let line = table.lines().find(|l| l.starts_with("web-picky")).unwrap();
    assert!(line.contains(&format!("Route (1x): {error}")), "{table}");
    let json = cp.cli_async(&["status", "-o", "json"]).await.ok().json();
    let picky = json["proxies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "web-picky")
        .unwrap();
    let route = picky["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Route")
        .unwrap();
    assert_eq!(route["last_nack_error"], error);
    assert_eq!(picky["in_sync"], false);

    let check = cp.cli_async(&["check"]).await;
    assert_eq!(check.code, 3, "{}", check.stdout);
    assert!(
        check
            .stdout
            .contains("FAIL proxy web-picky (web) in sync: Route NACKed"),
        "{}",
        check.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_times_out_naming_the_proxy_that_did_not_ack() {
    let cp = ControlPlane::start_plaintext();
    cp.cli_async(&["service", "create", "reviews", "--port", "9080"])
        .await
        .ok();
    let _ok = proxy(
        &cp.discovery,
        node("web-ok", "web", "v1", "10.0.1.1"),
        "reviews",
        None,
    )
    .await;
    let _stuck = proxy(
        &cp.discovery,
        node("web-stuck", "web", "v1", "10.0.1.2"),
        "reviews",
        Some(("slow", "")),
    )
    .await;
    let out = cp
        .cli_async(&[
            "route",
            "set",
            "reviews",
            "--rule-name",
            "slow",
            "--wait",
            "--wait-timeout",
            "1s",
        ])
        .await;
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("1 of 2 proxies have not ACKed route reviews"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("web-stuck"), "{}", out.stderr);
    assert!(!out.stderr.contains("web-ok"), "{}", out.stderr);
}
