//! `-o json` of every read command parses and is stable: compared with stored snapshots after
//! masking only what legitimately varies between runs (timestamps, token ids, content hashes).

mod support;

use std::path::Path;

use serde_json::Value;
use support::{ControlPlane, node, proxy};

/// Keys whose values vary run to run (timestamps, ages, per-run secrets and ids).
const VOLATILE: [&str; 6] = [
    "connected_since_unix_ms",
    "config_age_ms",
    "last_nack_unix_ms",
    "created_unix",
    "expires_unix",
    "token",
];

/// Masks volatile keys, content hashes (versions) and the control plane's ephemeral port;
/// `ids` also masks `id` (token ids are random).
fn mask(v: &mut Value, ids: bool) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                if VOLATILE.contains(&k.as_str()) || (ids && k == "id") {
                    *x = Value::String("<masked>".into());
                } else {
                    mask(x, ids);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| mask(x, ids)),
        Value::String(s) if s.len() >= 12 && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
            *s = "<hash>".into()
        }
        Value::String(s) if s.starts_with("127.0.0.1:") => *s = "127.0.0.1:<port>".into(),
        _ => {}
    }
}

fn snapshot(name: &str, out: &str) {
    let mut v: Value =
        serde_json::from_str(out).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {out}"));
    mask(&mut v, name.starts_with("token"));
    let text = serde_json::to_string_pretty(&v).unwrap() + "\n";
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.json"));
    if std::env::var_os("MESH_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with MESH_UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert_eq!(text, want, "{name}: -o json output changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_commands_json_is_stable() {
    let cp = ControlPlane::start();
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
