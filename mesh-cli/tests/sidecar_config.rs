//! `explain` and `proxy-config` against a real sidecar's applied config: after `route set
//! --wait`, the rules the proxy holds are the ones set, and explain picks the rule the proxy's
//! first-match-wins order gives.

mod support;

use support::ControlPlane;
use support::mesh::Sidecar;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_and_proxy_config_read_the_sidecars_applied_rules() {
    let cp = ControlPlane::start();
    let dir = cp.dir.path().to_path_buf();
    let _api = Sidecar::start(&dir, &cp.discovery, "api", "v1", Some(9)).await;
    // Subscribed at start, so the route reaches it without traffic.
    let client = Sidecar::start_with(
        &dir,
        &cp.discovery,
        "web",
        "v1",
        None,
        &["--outbound-services", "api"],
    )
    .await;
    cp.cli_async(&["route", "set", "api", "--to", "v1=100", "--timeout", "2s"])
        .await
        .ok();
    let out = cp
        .cli_async(&[
            "route",
            "set",
            "api",
            "--match",
            "header:x-canary=1",
            "--match",
            "path-prefix=/api",
            "--to",
            "v1=100",
            "--rule-name",
            "canary",
            "--wait",
        ])
        .await
        .ok();
    assert!(out.stdout.contains("ACKed by 1 proxy"), "{}", out.stdout);
    let admin = client.admin.to_string();

    let canary = cp
        .cli_async(&[
            "explain",
            &admin,
            "GET",
            "http://api/api/x",
            "-H",
            "x-canary:1",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(canary["chosen_rule"], "canary", "{canary}");
    let plain = cp
        .cli_async(&["explain", &admin, "GET", "http://api/api/x", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(plain["chosen_rule"], "default");
    assert_eq!(plain["rules"][0]["why"], "header x-canary is absent");
    assert_eq!(plain["actions"][0], "timeout=2000ms");
    let text = cp
        .cli_async(&[
            "explain",
            &admin,
            "GET",
            "http://api/other",
            "-H",
            "x-canary:1",
        ])
        .await
        .ok()
        .stdout;
    assert!(
        text.contains("no match (path /other does not have prefix /api)"),
        "{text}"
    );
    assert!(
        text.contains("→ rule \"default\": backends v1=100"),
        "{text}"
    );

    let table = cp
        .cli_async(&["proxy-config", &admin, "routes"])
        .await
        .ok()
        .stdout;
    assert!(
        table.contains("canary: header:x-canary=1,path-prefix=/api → v1=100")
            || table.contains("canary: path-prefix=/api,header:x-canary=1 → v1=100"),
        "{table}"
    );
    let json = cp
        .cli_async(&["proxy-config", &admin, "clusters", "-o", "json"])
        .await
        .ok()
        .json();
    assert!(
        json.as_array().unwrap().iter().any(|r| r["name"] == "api"),
        "{json}"
    );
}
