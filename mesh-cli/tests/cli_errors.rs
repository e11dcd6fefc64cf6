//! Bad input through the real binary: one clear line, exit code 2 for usage, 3 for an
//! unreachable control plane; and every command documents an example. The cases that need a
//! running control plane are in `bad_input_server.rs`.

use std::net::TcpListener;
use std::process::{Command, Output};

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
