//! The real binary against a real control plane: route set/get/delete, bad input leaving the
//! server unchanged, Gateway API apply/export, credentials.

mod support;

use support::ControlPlane;

fn rules(cp: &ControlPlane, service: &str) -> serde_json::Value {
    cp.cli(&["route", "get", service, "-o", "json"]).ok().json()["route"]["rules"].clone()
}

#[test]
fn route_set_get_delete() {
    let cp = ControlPlane::start();
    cp.cli(&["service", "create", "reviews", "--port", "9080"])
        .ok();
    let out = cp
        .cli(&["route", "set", "reviews", "--to", "v1=90,v2=10"])
        .ok();
    assert!(
        out.stdout
            .contains("route reviews rule \"default\" set: version"),
        "{}",
        out.stdout
    );

    let r = rules(&cp, "reviews");
    assert_eq!(r.as_array().unwrap().len(), 1);
    assert_eq!(r[0]["backends"][0]["subset"], "v1");
    assert_eq!(r[0]["backends"][0]["weight"], 90);
    assert_eq!(r[0]["backends"][1]["weight"], 10);

    // A matching rule goes before the catch-all, so it can be reached.
    cp.cli(&[
        "route",
        "set",
        "reviews",
        "--match",
        "header:x-canary=1",
        "--to",
        "v2=100",
        "--rule-name",
        "canary",
        "--timeout",
        "2s",
        "--retries",
        "2",
        "--retry-on",
        "5xx,reset",
        "--fault-abort",
        "503@5%",
    ])
    .ok();
    let r = rules(&cp, "reviews");
    assert_eq!(r[0]["name"], "canary");
    assert_eq!(r[0]["matches"][0]["headers"][0]["name"], "x-canary");
    assert_eq!(r[0]["timeout_ms"], 2000);
    assert_eq!(r[0]["retry"]["attempts"], 3);
    assert_eq!(r[0]["fault"]["abort_permille"], 50);
    assert_eq!(r[1]["name"], "default");

    // Same name → replaced in place.
    cp.cli(&["route", "set", "reviews", "--to", "v1=50,v2=50"])
        .ok();
    let r = rules(&cp, "reviews");
    assert_eq!(r.as_array().unwrap().len(), 2);
    assert_eq!(r[1]["backends"][0]["weight"], 50);

    let table = cp.cli(&["route", "list"]).ok().stdout;
    assert!(
        table.contains("canary")
            && table.contains("header:x-canary=1")
            && table.contains("v1=50,v2=50"),
        "{table}"
    );

    cp.cli(&["route", "delete", "reviews", "--rule-name", "canary"])
        .ok();
    assert_eq!(rules(&cp, "reviews").as_array().unwrap().len(), 1);
    cp.cli(&["route", "delete", "reviews"]).ok();
    let gone = cp.cli(&["route", "get", "reviews"]);
    assert_eq!(gone.code, 2);
    assert!(gone.stderr.contains("has no route"), "{}", gone.stderr);
    let again = cp.cli(&["route", "delete", "reviews"]);
    assert_eq!(again.code, 2, "{}", again.stderr);
}

#[test]
fn bad_input_leaves_server_state_unchanged() {
    let cp = ControlPlane::start();
    cp.cli(&["service", "create", "reviews", "--port", "9080"])
        .ok();
    cp.cli(&["route", "set", "reviews", "--to", "v1=90,v2=10"])
        .ok();
    let before = cp.cli(&["route", "list", "-o", "json"]).ok().stdout;

    let cases: &[(&[&str], &str)] = &[
        (
            &["route", "set", "reviews", "--to", "v1=90,v2=20"],
            "sum to 110",
        ),
        (
            &["route", "set", "reviews", "--timeout", "2x"],
            "is not a duration",
        ),
        (
            &["route", "set", "reviews", "--to", "other:v1=100"],
            "unknown service \"other\"",
        ),
        (
            &["route", "set", "nosuch", "--to", "v1=100"],
            "unknown service \"nosuch\"",
        ),
        (
            &[
                "route",
                "set",
                "reviews",
                "--match",
                "path-regex=([",
                "--rule-name",
                "re",
            ],
            "refused by the control plane",
        ),
        (
            &["route", "set", "reviews", "--mirror", "ghost:v1=10%"],
            "unknown service \"ghost\"",
        ),
        (
            &["route", "delete", "reviews", "--rule-name", "nope"],
            "no rule named \"nope\"",
        ),
    ];
    for (args, needle) in cases {
        let out = cp.cli(args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert_eq!(
            out.stderr.trim().lines().count(),
            1,
            "{args:?}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains(needle),
            "{args:?}: {:?} lacks {needle:?}",
            out.stderr
        );
        assert_eq!(
            cp.cli(&["route", "list", "-o", "json"]).ok().stdout,
            before,
            "{args:?} changed the server"
        );
    }

    // An apply whose second document the server refuses stores neither.
    let two = format!(
        "{}---\n{}",
        route_doc("reviews", "reviews-v2"),
        route_doc("ghost", "ghost-v1")
    );
    let out = cp.cli_stdin(&["route", "apply", "-f", "-"], &two);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("unknown service"), "{}", out.stderr);
    // An unsupported field is refused by path before any call.
    let ext = route_doc("reviews", "reviews-v2").replace(
        "  - backendRefs:",
        "  - filters:\n    - type: ExtensionRef\n      extensionRef: {name: x}\n    backendRefs:",
    );
    let out = cp.cli_stdin(&["route", "apply", "-f", "-"], &ext);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("spec.rules[0].filters[0].type: ExtensionRef is not supported"),
        "{}",
        out.stderr
    );
    assert_eq!(cp.cli(&["route", "list", "-o", "json"]).ok().stdout, before);
}

fn route_doc(host: &str, backend: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: {host}\nspec:\n  parentRefs:\n  - name: mesh\n  hostnames:\n  - {host}.default.svc.cluster.local\n  rules:\n  - backendRefs:\n    - name: {backend}\n      port: 9080\n"
    )
}

#[test]
fn gateway_api_apply_and_export_round_trip() {
    let cp = ControlPlane::start();
    cp.cli(&["service", "create", "foo", "--port", "8080"]).ok();
    // The traffic-splitting example from the Gateway API guides, with a header-matched rule.
    let doc = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: foo-route
spec:
  parentRefs:
  - name: example-gateway
  hostnames:
  - foo.example.com
  rules:
  - matches:
    - headers:
      - name: env
        value: canary
    backendRefs:
    - name: foo-v2
      port: 8080
  - backendRefs:
    - name: foo-v1
      port: 8080
      weight: 90
    - name: foo-v2
      port: 8080
      weight: 10
"#;
    cp.cli_stdin(&["route", "apply", "-f", "-"], doc).ok();
    let stored = rules(&cp, "foo");
    assert_eq!(stored[1]["backends"][0]["weight"], 90);
    let exported = cp.cli(&["route", "export", "foo"]).ok().stdout;
    assert!(exported.contains("kind: HTTPRoute"), "{exported}");
    cp.cli(&["route", "delete", "foo"]).ok();
    cp.cli_stdin(&["route", "apply", "-f", "-"], &exported).ok();
    assert_eq!(
        rules(&cp, "foo"),
        stored,
        "export → apply must store the same route"
    );
}

#[test]
fn bad_credentials_exit_3() {
    let cp = ControlPlane::start();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mesh-cli"))
        .args([
            "--control-plane",
            &cp.admin,
            "--data-dir",
            "/nonexistent",
            "route",
            "list",
        ])
        .env("MESH_ADMIN_TOKEN", "wrong-token")
        .env("MESH_CA_BUNDLE", cp.bundle())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("rejected the admin token"), "{err}");
    assert_eq!(err.trim().lines().count(), 1);
}

#[test]
fn policy_set_get_and_tokens() {
    let cp = ControlPlane::start();
    cp.cli(&["service", "create", "reviews", "--port", "9080"])
        .ok();
    let missing_key = cp.cli(&["policy", "set", "reviews", "--lb", "ring-hash"]);
    assert_eq!(missing_key.code, 2, "{}", missing_key.stderr);
    assert!(
        missing_key.stderr.contains("--lb ring-hash needs a key"),
        "{}",
        missing_key.stderr
    );

    cp.cli(&[
        "policy",
        "set",
        "reviews",
        "--lb",
        "ring-hash",
        "--hash-on",
        "cookie:session",
        "--consecutive-5xx",
        "5",
        "--ejection-time",
        "30s",
        "--max-requests",
        "500",
        "--health-check-path",
        "/healthz",
        "--health-check-interval",
        "5s",
        "--connect-timeout",
        "1s",
        "--tls-mode",
        "permissive",
    ])
    .ok();
    // Flags not given keep their value.
    cp.cli(&["policy", "set", "reviews", "--max-pending", "50"])
        .ok();
    let c = cp
        .cli(&["policy", "get", "reviews", "-o", "json"])
        .ok()
        .json()["cluster"]
        .clone();
    assert_eq!(c["hash_on"]["key"]["cookie"], "session");
    assert_eq!(c["outlier_detection"]["consecutive_5xx"], 5);
    assert_eq!(c["outlier_detection"]["base_ejection_ms"], 30_000);
    assert_eq!(c["circuit_breakers"]["max_requests"], 500);
    assert_eq!(c["circuit_breakers"]["max_pending_requests"], 50);
    assert_eq!(c["health_check"]["http_path"], "/healthz");
    assert_eq!(c["connect_timeout_ms"], 1000);
    let table = cp.cli(&["policy", "get", "reviews"]).ok().stdout;
    assert!(
        table.contains("RingHash") && table.contains("cookie:session"),
        "{table}"
    );

    let created = cp
        .cli(&[
            "token",
            "create",
            "--service-account",
            "reviews",
            "--ttl",
            "1h",
            "-o",
            "json",
        ])
        .ok()
        .json();
    let id = created["id"].as_str().unwrap().to_string();
    assert!(!created["token"].as_str().unwrap().is_empty());
    cp.cli(&["token", "revoke", &id]).ok();
    let list = cp.cli(&["token", "list", "-o", "json"]).ok().json();
    assert_eq!(list[0]["revoked"], true);
    let unknown = cp.cli(&["token", "revoke", "no-such-id"]);
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
}

#[test]
fn dry_run_and_unknown_services() {
    let cp = ControlPlane::start();
    cp.cli(&["service", "create", "reviews", "--port", "9080"])
        .ok();
    let out = cp
        .cli(&["route", "set", "reviews", "--to", "v1=100", "--dry-run"])
        .ok();
    assert!(
        out.stdout.contains("dry run, nothing stored"),
        "{}",
        out.stdout
    );
    assert_eq!(
        cp.cli(&["route", "get", "reviews"]).code,
        2,
        "a dry run stores nothing"
    );

    for args in [
        &["endpoints", "nosuch"][..],
        &["policy", "get", "nosuch"],
        &["route", "export", "nosuch"],
    ] {
        let out = cp.cli(args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("nosuch"), "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr.trim().lines().count(), 1);
    }
}

#[test]
fn runtime_sampling_get_set_and_bad_input() {
    let cp = ControlPlane::start();
    let got = cp.cli(&["runtime", "get", "-o", "json"]).ok().json();
    // A fresh mesh traces and logs everything (ARCHITECTURE.md); the CA's root is counted.
    assert_eq!(got["trace_sampling_ratio"], 1.0, "{got}");
    assert_eq!(got["access_log_ratio"], 1.0, "{got}");
    assert_eq!(got["trust_bundle_roots"], 1, "{got}");

    let set = cp
        .cli(&["runtime", "set", "--access-log", "0.1%", "-o", "json"])
        .ok();
    assert!(
        set.stderr.contains("pushed to every proxy"),
        "{}",
        set.stderr
    );
    let got = cp.cli(&["runtime", "get", "-o", "json"]).ok().json();
    assert_eq!(got["access_log_ratio"], 0.001, "{got}");
    assert_eq!(
        got["trace_sampling_ratio"], 1.0,
        "left out: unchanged; {got}"
    );
    assert_eq!(
        got["trust_bundle_roots"], 1,
        "the bundle is the CA's: {got}"
    );

    cp.cli(&["runtime", "set", "--trace-sampling", "5%"]).ok();
    let got = cp.cli(&["runtime", "get", "-o", "json"]).ok().json();
    assert_eq!(got["trace_sampling_ratio"], 0.05, "{got}");
    assert_eq!(got["access_log_ratio"], 0.001, "{got}");

    let bad = cp.cli(&["runtime", "set", "--trace-sampling", "150%"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("is not a percentage"), "{}", bad.stderr);
    let after = cp.cli(&["runtime", "get", "-o", "json"]).ok().json();
    assert_eq!(
        after, got,
        "a refused change leaves the settings as they were"
    );
}

/// Eight operators each set a different rule of one route at the same moment: every rule
/// survives, because the control plane merges each into what is stored under its lock.
#[test]
fn concurrent_route_sets_of_different_rules_all_survive() {
    let cp = ControlPlane::start();
    cp.cli(&["service", "create", "reviews", "--port", "9080"])
        .ok();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
    std::thread::scope(|s| {
        for i in 0..8 {
            let (cp, barrier) = (&cp, barrier.clone());
            s.spawn(move || {
                let name = format!("user-{i}");
                let matcher = format!("header:x-user={i}");
                barrier.wait();
                cp.cli(&[
                    "route",
                    "set",
                    "reviews",
                    "--rule-name",
                    &name,
                    "--match",
                    &matcher,
                    "--to",
                    "v1=100",
                ])
                .ok();
            });
        }
    });
    let r = rules(&cp, "reviews");
    let mut names: Vec<String> = r
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    let want: Vec<String> = (0..8).map(|i| format!("user-{i}")).collect();
    assert_eq!(names, want);
}
