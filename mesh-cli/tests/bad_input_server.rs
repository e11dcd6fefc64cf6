//! Bad input against a real control plane through the real binary: every refused route action,
//! unknown service or endpoint, and bad or missing credentials gives one line and the right exit
//! code (2 usage, 3 server/credentials), and the server's state is unchanged afterwards.

mod support;

use std::process::{Command, Output};

use support::ControlPlane;

/// `mesh-cli ARGS…` with no token and no data dir to find one in.
fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mesh-cli"))
        .args(args)
        .env("MESH_DATA_DIR", "/nonexistent/mesh-cli-test")
        .env_remove("MESH_CONTROL_PLANE_ADMIN")
        .env_remove("MESH_ADMIN_TOKEN")
        .env_remove("MESH_CA_BUNDLE")
        .output()
        .unwrap()
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
        // As from another machine: the address, the bundle and (below) the token given.
        let bundle = cp.bundle();
        let mut all = vec![
            "--control-plane",
            cp.admin.as_str(),
            "--ca-bundle",
            bundle.to_str().unwrap(),
        ];
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
