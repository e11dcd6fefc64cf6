//! `-o json` of every read command parses and is stable: compared with stored snapshots after
//! masking only what legitimately varies between runs (timestamps, token ids, content hashes).

mod support;

use serde_json::Value;
use support::golden::{mask, snapshot};
use support::{ControlPlane, node, proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_commands_json_is_stable() {
    let cp = ControlPlane::start_plaintext();
    for args in [
        &["service", "create", "reviews", "--port", "9080"][..],
        &[
            "route",
            "set",
            "reviews",
            "--to",
            "v1=90,v2=10",
            "--timeout",
            "2s",
        ],
        &[
            "route",
            "set",
            "reviews",
            "--match",
            "header:x-canary=1",
            "--to",
            "v2=100",
            "--rule-name",
            "canary",
        ],
        &[
            "policy",
            "set",
            "reviews",
            "--lb",
            "ring-hash",
            "--hash-on",
            "header:x-user",
            "--max-requests",
            "100",
        ],
        &["token", "create", "--service-account", "reviews"],
    ] {
        cp.cli_async(args).await.ok();
    }
    let _r1 = proxy(
        &cp.discovery,
        node("reviews-1", "reviews", "v1", "10.0.0.1"),
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
    // Wait until web-1 ACKed the route, so the status snapshot is the converged state.
    cp.cli_async(&[
        "route",
        "set",
        "reviews",
        "--to",
        "v1=90,v2=10",
        "--timeout",
        "2s",
        "--wait",
    ])
    .await
    .ok();

    let reads: &[(&str, &[&str])] = &[
        ("route_get", &["route", "get", "reviews"]),
        ("route_list", &["route", "list"]),
        ("policy_get", &["policy", "get", "reviews"]),
        ("endpoints", &["endpoints", "reviews"]),
        ("service_list", &["service", "list"]),
        ("token_list", &["token", "list"]),
        ("status", &["status"]),
    ];
    for (name, args) in reads {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let first = cp.cli_async(&a).await.ok().stdout;
        let second = cp.cli_async(&a).await.ok().stdout;
        snapshot(name, &first);
        snapshot(name, &second);
        // YAML carries the same data.
        let mut y = args.to_vec();
        y.extend(["-o", "yaml"]);
        let mut yaml: Value = serde_norway::from_str(&cp.cli_async(&y).await.ok().stdout).unwrap();
        let mut json: Value = serde_json::from_str(&first).unwrap();
        mask(&mut yaml, true);
        mask(&mut json, true);
        assert_eq!(yaml, json, "{name}: yaml and json differ");
    }
}
