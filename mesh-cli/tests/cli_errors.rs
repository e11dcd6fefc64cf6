//! Bad input through the real binary: one clear line, exit code 2 for usage, 3 for an
//! unreachable control plane or bad credentials, server state unchanged; and every command
//! documents an example.

mod support;

use std::net::TcpListener;
use std::process::{Command, Output};

use support::ControlPlane;

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mesh-cli"))
        .args(args)
        // Never pick up a developer's real control plane or token.
        .env("MESH_DATA_DIR", "/nonexistent/mesh-cli-test")
        .env_remove("MESH_CONTROL_PLANE_ADMIN")
        .env_remove("MESH_ADMIN_TOKEN")
        .output()
        .unwrap()
}

/// Asserts the exit code, a single stderr line containing `needle`, and nothing on stdout.
fn fails(args: &[&str], code: i32, needle: &str) {
    let out = cli(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert_eq!(
        err.trim().lines().count(),
        1,
        "{args:?}: one line expected: {err}"
    );
    assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
    assert!(out.stdout.is_empty(), "{args:?}");
}

/// A loopback port with nothing listening: bind, note the port, close.
fn closed_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    addr
}

#[test]
fn malformed_duration_exits_2() {
    fails(
        &["route", "set", "reviews", "--timeout", "2x"],
        2,
        "\"2x\" is not a duration",
    );
    fails(
        &["route", "set", "reviews", "--fault-delay", "100@10%"],
        2,
        "is not a duration",
    );
    fails(
        &["policy", "set", "reviews", "--connect-timeout", "soon"],
        2,
        "is not a duration",
    );
}

#[test]
fn weights_not_summing_to_100_exit_2() {
    fails(
        &["route", "set", "reviews", "--to", "v1=90,v2=20"],
        2,
        "sum to 110; they must sum to 100",
    );
    fails(
        &["route", "set", "reviews", "--to", "v1=50"],
        2,
        "sum to 50",
    );
    fails(
        &["route", "set", "reviews", "--to", "v1"],
        2,
        "has no weight",
    );
}

#[test]
fn unknown_flag_values_exit_2() {
    fails(
        &["policy", "set", "reviews", "--lb", "fastest"],
        2,
        "invalid value 'fastest' for '--lb",
    );
    fails(&["status", "-o", "xml"], 2, "invalid value 'xml'");
    fails(
        &["route", "set", "reviews", "--match", "host=x"],
        2,
        "is not a match",
    );
    fails(
        &[
            "route",
            "set",
            "reviews",
            "--retry-on",
            "sometimes",
            "--retries",
            "2",
        ],
        2,
        "is not a retry condition",
    );
    fails(
        &["route", "set", "reviews", "--nonsense"],
        2,
        "unexpected argument '--nonsense'",
    );
    fails(
        &["route", "set", "Bad Name!"],
        2,
        "is not a valid service name",
    );
    fails(
        &[
            "policy",
            "set",
            "reviews",
            "--lb",
            "round-robin",
            "--hash-on",
            "header:x",
        ],
        2,
        "needs a hashing balancer",
    );
}

#[test]
fn cross_flag_mistakes_are_caught_before_any_call() {
    // The control plane address is unreachable: exit 2 (not 3) proves nothing was sent.
    let cp = closed_port();
    fails(
        &[
            "--control-plane",
            &cp,
            "route",
            "set",
            "reviews",
            "--rewrite-prefix",
            "/v2",
        ],
        2,
        "add --match path-prefix",
    );
    fails(
        &[
            "--control-plane",
            &cp,
            "route",
            "set",
            "reviews",
            "--match",
            "path=/a",
            "--match",
            "path-prefix=/b",
        ],
        2,
        "only one path condition",
    );
}

#[test]
fn malformed_control_plane_address_exits_2() {
    fails(
        &["--control-plane", "not a host", "status"],
        2,
        "\"not a host\" is not an address",
    );
}

#[test]
fn unreachable_control_plane_exits_3() {
    let cp = closed_port();
    for args in [
        vec!["status"],
        vec!["route", "list"],
        vec!["route", "set", "reviews", "--to", "v1=90,v2=10"],
        vec!["endpoints", "reviews"],
        vec!["check"],
    ] {
        let mut all = vec!["--control-plane", cp.as_str()];
        all.extend(args);
        fails(
            &all,
            3,
            &format!(
                "cannot reach the control plane at {cp}: connection refused (is mesh-control-plane running? set --control-plane)"
            ),
        );
    }
}

#[test]
fn control_plane_address_comes_from_addrs_json() {
    let dir = tempfile::tempdir().unwrap();
    let cp = closed_port();
    std::fs::write(
        dir.path().join("addrs.json"),
        format!(r#"{{"discovery":"127.0.0.1:1","admin":"{cp}","http":"127.0.0.1:2"}}"#),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-cli"))
        .args(["--data-dir", dir.path().to_str().unwrap(), "route", "list"])
        .env_remove("MESH_CONTROL_PLANE_ADMIN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&cp));
}

#[test]
fn unreachable_proxy_admin_exits_3() {
    let p = closed_port();
    fails(
        &["proxy-config", &p, "routes"],
        3,
        &format!("cannot reach the proxy admin at {p}"),
    );
    fails(
        &["explain", &p, "GET", "http://reviews/"],
        3,
        "cannot reach the proxy admin",
    );
}

#[test]
fn every_command_has_help_with_an_example() {
    let commands: &[&[&str]] = &[
        &[],
        &["inject"],
        &["uninject"],
        &["route"],
        &["route", "set"],
        &["route", "get"],
        &["route", "list"],
        &["route", "delete"],
        &["route", "apply"],
        &["route", "export"],
        &["policy"],
        &["policy", "set"],
        &["policy", "get"],
        &["status"],
        &["endpoints"],
        &["endpoints", "drain"],
        &["service"],
        &["service", "create"],
        &["service", "list"],
        &["service", "delete"],
        &["token"],
        &["token", "create"],
        &["token", "list"],
        &["token", "revoke"],
        &["check"],
        &["proxy-config"],
        &["stat"],
        &["explain"],
        &["completion"],
        &["demo"],
    ];
    for c in commands {
        let mut args = c.to_vec();
        args.push("--help");
        let out = cli(&args);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(text.contains("Example"), "{args:?} has no example:\n{text}");
        assert!(text.contains("mesh-cli "), "{args:?}");
    }
}

#[test]
fn completion_script_is_generated() {
    let out = cli(&["completion", "bash"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("mesh-cli"));
}

/// Everything an admin write could change, as the CLI reads it back.
fn server_state(cp: &ControlPlane) -> Vec<String> {
    [
        &["route", "list", "-o", "json"][..],
        &["policy", "get", "reviews", "-o", "json"],
        &["endpoints", "reviews", "-o", "json"],
        &["token", "list", "-o", "json"],
        &["service", "list", "-o", "json"],
    ]
    .iter()
    .map(|a| {
        let out = cp.cli(a);
        format!("{}: {}{}", out.code, out.stdout, out.stderr)
    })
    .collect()
}

#[test]
fn every_bad_route_action_is_refused_and_changes_nothing() {
    let cp = ControlPlane::start();
    cp.cli(&["service", "create", "reviews", "--port", "9080"])
        .ok();
    cp.cli(&["route", "set", "reviews", "--to", "v1=90,v2=10"])
        .ok();
    let before = server_state(&cp);

    // Refused by the CLI (exit 2) or, for what only the server knows, by the control plane
    // (also exit 2: the input is wrong, not the server).
    let cases: &[(&[&str], &str)] = &[
        (
            &["route", "set", "reviews", "--fault-delay", "100ms@150%"],
            "\"150%\" is not a percentage",
        ),
        (
            &["route", "set", "reviews", "--fault-delay", "100ms@0.05%"],
            "finer than 0.1%",
        ),
        (
            &["route", "set", "reviews", "--fault-abort", "700@5%"],
            "the status must be an HTTP status from 200 to 599",
        ),
        (
            &["route", "set", "reviews", "--fault-abort", "503"],
            "write STATUS@PERCENT, like 503@5%",
        ),
        (
            &["route", "set", "reviews", "--mirror", "v3"],
            "write SUBSET=PERCENT, like v3=10%",
        ),
        (
            &["route", "set", "reviews", "--retries", "11"],
            "11 is not in 0..=10",
        ),
        (
            &["route", "set", "reviews", "--retry-on", "5xx"],
            "--retries <N>",
        ),
        (
            &["route", "set", "reviews", "--set-header", "bad name=x"],
            "\"bad name\" is not a valid header name",
        ),
        (
            &[
                "route",
                "set",
                "reviews",
                "--match",
                "path-prefix=/a",
                "--rewrite-prefix",
                "v2",
            ],
            "the prefix must start with /",
        ),
        (
            &["route", "set", "reviews", "--match", "method=FETCH"],
            "unknown method",
        ),
        (
            &["route", "set", "reviews", "--to", "v1=90,v1=10"],
            "appears twice in --to",
        ),
        (
            &["route", "set", "reviews", "--timeout", "25h"],
            "durations are at most 24h",
        ),
        (
            &["route", "set", "reviews", "--wait", "--dry-run"],
            "cannot be used with",
        ),
        (
            &["route", "apply", "-f", "-", "--wait", "--dry-run"],
            "cannot be used with",
        ),
        (
            &["route", "apply", "-f", "-", "--wait-timeout", "5s"],
            "--wait",
        ),
        (
            &[
                "route",
                "set",
                "reviews",
                "--to",
                "v1=100",
                "--mirror",
                "ghost:v1=10%",
            ],
            "unknown service \"ghost\"",
        ),
        (&["route", "get", "nosuch"], "nosuch"),
        (&["route", "delete", "nosuch"], "nosuch"),
        (
            &["policy", "set", "nosuch", "--lb", "round-robin"],
            "nosuch",
        ),
        (
            &["endpoints", "drain", "reviews", "127.0.0.99:1"],
            "127.0.0.99:1",
        ),
        (&["endpoints", "drain", "nosuch", "127.0.0.99:1"], "nosuch"),
        (
            &["endpoints", "drain", "reviews", "not-an-address"],
            "invalid value 'not-an-address'",
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
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
        assert_eq!(server_state(&cp), before, "{args:?} changed the server");
    }
}

#[test]
fn bad_or_missing_credentials_exit_3_and_change_nothing() {
    let cp = ControlPlane::start();
    cp.cli(&["service", "create", "reviews", "--port", "9080"])
        .ok();
    cp.cli(&["route", "set", "reviews", "--to", "v1=100"]).ok();
    let before = server_state(&cp);
    let writes: &[&[&str]] = &[
        &["route", "set", "reviews", "--to", "v1=50,v2=50"],
        &["route", "delete", "reviews"],
        &["policy", "set", "reviews", "--lb", "round-robin"],
        &["service", "create", "other", "--port", "80"],
        &["token", "create", "--service-account", "reviews"],
    ];
    for args in writes {
        let mut all = vec!["--control-plane", cp.admin.as_str()];
        all.extend_from_slice(args);
        // A wrong token …
        let out = Command::new(env!("CARGO_BIN_EXE_mesh-cli"))
            .args(&all)
            .env("MESH_DATA_DIR", "/nonexistent/mesh-cli-test")
            .env("MESH_ADMIN_TOKEN", "wrong-token")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!(
                "the control plane at {} rejected the admin token",
                cp.admin
            )) && err.contains("set MESH_ADMIN_TOKEN"),
            "{args:?}: {err}"
        );
        // … and none at all.
        let out = cli(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains("no admin token: MESH_ADMIN_TOKEN is unset"),
            "{args:?}: {err}"
        );
        assert_eq!(server_state(&cp), before, "{args:?} changed the server");
    }
}
