//! The real `mesh-cli` against a real control plane whose admin API serves TLS: URL, token
//! and trust bundle found from the data dir alone; the remote settings; a foreign trust
//! bundle, a missing one and plaintext refused without changing anything; and the explicit
//! plaintext opt-out (`--admin-tls=false` + `http://`).

mod support;

use std::process::{Command, Output};

use support::ControlPlane;

/// `mesh-cli ARGS` with exactly the `MESH_*` settings in `env` (none inherited) and an empty
/// `$HOME`, so nothing but what the test gives can point it at a control plane.
fn mesh_cli(home: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mesh-cli"));
    for (k, _) in std::env::vars() {
        if k.starts_with("MESH_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", home).envs(env.iter().copied()).args(args);
    cmd.output().expect("run mesh-cli")
}

fn ok(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "mesh-cli failed: {err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Exit 3 with one line on stderr containing every piece of `wanted`.
fn fails_with(out: &Output, wanted: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    for w in wanted {
        assert!(err.contains(w), "{w:?} not in: {err}");
    }
}

fn addrs_json(cp: &ControlPlane) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(cp.dir.path().join("addrs.json")).unwrap()).unwrap()
}

fn services(cp: &ControlPlane) -> String {
    cp.cli(&["service", "list", "-o", "json"]).ok().stdout
}

#[test]
fn the_data_dir_alone_gives_url_token_and_bundle() {
    let cp = ControlPlane::start();
    let home = tempfile::tempdir().unwrap();
    let a = addrs_json(&cp);
    assert_eq!(
        a["admin_url"],
        format!("https://{}", a["admin"].as_str().unwrap()),
        "the admin URL is written with its scheme"
    );
    let dir = cp.dir.path().to_str().unwrap();
    let env = [("MESH_DATA_DIR", dir)];
    ok(&mesh_cli(
        home.path(),
        &env,
        &["service", "create", "reviews", "--port", "9080"],
    ));
    let list = ok(&mesh_cli(
        home.path(),
        &env,
        &["service", "list", "-o", "json"],
    ));
    assert!(list.contains("\"reviews\""), "{list}");
    // The flag works the same as the variable.
    ok(&mesh_cli(home.path(), &[], &["--data-dir", dir, "status"]));
}

#[test]
fn remote_settings_reach_the_admin_api() {
    let cp = ControlPlane::start();
    let home = tempfile::tempdir().unwrap();
    // Token and bundle copied elsewhere, as an operator on another machine has them.
    let bundle = home.path().join("bundle.pem");
    std::fs::copy(cp.bundle(), &bundle).unwrap();
    let token = std::fs::read_to_string(cp.dir.path().join("admin-token")).unwrap();
    let url = format!("https://{}", cp.admin);
    let env = [
        ("MESH_CONTROL_PLANE_ADMIN", url.as_str()),
        ("MESH_ADMIN_TOKEN", token.trim()),
        ("MESH_CA_BUNDLE", bundle.to_str().unwrap()),
        ("MESH_DATA_DIR", "/nonexistent/mesh-cli-remote"),
    ];
    ok(&mesh_cli(
        home.path(),
        &env,
        &["service", "create", "remote", "--port", "80"],
    ));
    assert!(services(&cp).contains("\"remote\""));
}

#[test]
fn foreign_bundle_missing_bundle_and_plaintext_are_refused() {
    let cp = ControlPlane::start();
    let other = ControlPlane::start();
    let home = tempfile::tempdir().unwrap();
    let token = std::fs::read_to_string(cp.dir.path().join("admin-token")).unwrap();
    let before = services(&cp);
    let create = ["service", "create", "sneaky", "--port", "80"];

    // The other control plane's CA did not sign this certificate.
    let foreign = other.bundle();
    let env = [
        ("MESH_CONTROL_PLANE_ADMIN", cp.admin.as_str()),
        ("MESH_ADMIN_TOKEN", token.trim()),
        ("MESH_CA_BUNDLE", foreign.to_str().unwrap()),
        ("MESH_DATA_DIR", "/nonexistent/mesh-cli-remote"),
    ];
    fails_with(
        &mesh_cli(home.path(), &env, &create),
        &[
            "cannot reach the control plane",
            "certificate",
            "MESH_CA_BUNDLE",
        ],
    );

    // No bundle at all (neither set nor in the default data dir under the empty $HOME): the
    // error says what to set.
    fails_with(
        &mesh_cli(home.path(), &env[..2], &create),
        &["no trust bundle", "MESH_CA_BUNDLE", "--data-dir"],
    );

    // Plaintext HTTP/2 to the TLS port with the right token: the handshake never happens.
    let plain = format!("http://{}", cp.admin);
    fails_with(
        &mesh_cli(
            home.path(),
            &[
                ("MESH_CONTROL_PLANE_ADMIN", plain.as_str()),
                ("MESH_ADMIN_TOKEN", token.trim()),
            ],
            &create,
        ),
        &["the control plane at", "use https://"],
    );
    assert_eq!(services(&cp), before, "a refused call changed the server");
}

#[test]
fn admin_tls_off_is_reached_over_http() {
    let cp = ControlPlane::start_with(&["--admin-tls=false"]);
    let home = tempfile::tempdir().unwrap();
    let a = addrs_json(&cp);
    assert_eq!(
        a["admin_url"],
        format!("http://{}", a["admin"].as_str().unwrap())
    );
    // From the data dir: its addrs.json says http://.
    cp.cli(&["service", "create", "plain", "--port", "80"]).ok();
    // Explicitly, with the scheme.
    let token = std::fs::read_to_string(cp.dir.path().join("admin-token")).unwrap();
    let url = format!("http://{}", cp.admin);
    let env = [
        ("MESH_CONTROL_PLANE_ADMIN", url.as_str()),
        ("MESH_ADMIN_TOKEN", token.trim()),
    ];
    let list = ok(&mesh_cli(
        home.path(),
        &env,
        &["service", "list", "-o", "json"],
    ));
    assert!(list.contains("\"plain\""), "{list}");
    // A bare address means TLS, which this control plane does not speak there.
    let bundle = cp.bundle();
    let env = [
        ("MESH_CONTROL_PLANE_ADMIN", cp.admin.as_str()),
        ("MESH_ADMIN_TOKEN", token.trim()),
        ("MESH_CA_BUNDLE", bundle.to_str().unwrap()),
    ];
    fails_with(
        &mesh_cli(home.path(), &env, &["service", "list"]),
        &["does not speak TLS", "http://"],
    );
}
