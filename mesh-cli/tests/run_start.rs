//! `mesh-cli run` start-up and Job semantics: the app starts only after the sidecar is ready,
//! the app's exit code becomes run's, and a sidecar that cannot get ready fails run with code 3.

mod run_support;

use run_support::*;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The app of the readiness test: it fails with 7 unless, at its very first instruction, the
/// sidecar's admin answers /ready with 200 and the proxy in HTTP_PROXY accepts connections.
const NEEDS_PROXY: &str = r#"
curl -fsS --noproxy '*' --max-time 5 "$MESH_SIDECAR_ADMIN/ready" >/dev/null || exit 7
hostport=${HTTP_PROXY#http://}
bash -c "exec 3<>/dev/tcp/${hostport%:*}/${hostport##*:}" 2>/dev/null || exit 7
[ "$MESH_SERVICE" = reviews ] || exit 8
exit 0
"#;

#[test]
fn app_starts_only_after_the_proxy_is_ready() {
    // Control: without a ready proxy the very same app fails with 7.
    let closed = free_port();
    let status = Command::new("sh")
        .args(["-c", NEEDS_PROXY])
        .env("HTTP_PROXY", format!("http://127.0.0.1:{closed}"))
        .env("MESH_SIDECAR_ADMIN", format!("http://127.0.0.1:{closed}"))
        .env("MESH_SERVICE", "reviews")
        .status()
        .expect("run the app alone");
    assert_eq!(
        status.code(),
        Some(7),
        "the app must detect a missing proxy"
    );

    let cp = ControlPlane::start();
    let mut child = Running(
        cp.run_cmd("reviews", Some(free_port()))
            .args(["--", "sh", "-c", NEEDS_PROXY])
            .spawn()
            .expect("start mesh-cli run"),
    );
    let (status, pids) = wait_watching(&mut child, START_LIMIT);
    assert_eq!(status.code(), Some(0), "the app found its proxy ready");
    assert!(!pids.is_empty(), "run had a sidecar and an app");
    assert_all_gone(&pids);
}

#[test]
fn job_exit_codes_become_runs_and_the_sidecar_never_keeps_a_job_alive() {
    let cp = ControlPlane::start();
    // A ten-minute sidecar drain grace (MESH_* reaches the sidecar): run must still stop it at
    // once when the job ends, so each case finishes well inside the hang bound.
    for (script, want) in [("exit 0", 0), ("exit 3", 3), ("kill -9 $$", 128 + 9)] {
        let mut child = Running(
            cp.run_cmd("batch", None)
                .env("MESH_DRAIN_GRACE_MS", "600000")
                .args(["--", "sh", "-c", script])
                .spawn()
                .expect("start mesh-cli run"),
        );
        let (status, pids) = wait_watching(&mut child, START_LIMIT);
        assert_eq!(status.code(), Some(want), "job `{script}`");
        assert!(!pids.is_empty(), "a sidecar ran");
        assert_all_gone(&pids);
    }
}

#[test]
fn sidecar_never_ready_fails_with_3_and_the_app_never_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("app-started");
    let closed = free_port();
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_mesh-cli"))
            .args(["run", "--service", "lonely", "--ready-timeout", "2"])
            .args(["--control-plane", &format!("127.0.0.1:{closed}")])
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--")
            .arg("touch")
            .arg(&marker)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mesh-cli run"),
    );
    require_bin("mesh-sidecar");
    let (status, pids) = wait_watching(&mut child, START_LIMIT);
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().expect("stderr"), &mut err)
        .expect("read stderr");
    assert_eq!(status.code(), Some(3), "stderr: {err}");
    assert!(err.contains("not ready"), "clear message: {err}");
    assert!(
        !marker.exists(),
        "the app must not start without a ready proxy"
    );
    assert_all_gone(&pids);
}

#[test]
fn bad_mesh_setting_reaches_the_sidecar_and_fails_the_start() {
    let cp = ControlPlane::start();
    let marker = cp.dir.path().join("app-started");
    let mut child = Running(
        cp.run_cmd("reviews", None)
            .env("MESH_DETECT_TIMEOUT_MS", "not-a-number")
            .arg("--")
            .arg("touch")
            .arg(&marker)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mesh-cli run"),
    );
    let (status, pids) = wait_watching(&mut child, START_LIMIT);
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().expect("stderr"), &mut err)
        .expect("read stderr");
    assert_eq!(status.code(), Some(3), "stderr: {err}");
    assert!(
        err.contains("MESH_DETECT_TIMEOUT_MS"),
        "the sidecar's complaint is shown: {err}"
    );
    assert!(!marker.exists(), "the app must not start");
    assert_all_gone(&pids);
}

#[test]
fn run_gets_a_join_token_for_the_sidecar_and_keeps_tokens_from_the_app() {
    let cp = ControlPlane::start();
    // The join token run creates is for the sidecar only: the app must not see it.
    let mut child = Running(
        cp.run_cmd("details", None)
            .args(["--namespace", "shop", "--service-account", "details-sa"])
            .args([
                "--",
                "sh",
                "-c",
                r#"[ -z "$MESH_JOIN_TOKEN$MESH_ADMIN_TOKEN" ]"#,
            ])
            .spawn()
            .expect("start mesh-cli run"),
    );
    let (status, pids) = wait_watching(&mut child, START_LIMIT);
    assert_eq!(status.code(), Some(0), "the app saw no mesh secret");
    assert_all_gone(&pids);

    // The control plane issued one token for the workload's identity.
    let tokens = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(list_tokens(&cp));
    let identities: Vec<&str> = tokens.iter().map(|t| t.identity.as_str()).collect();
    assert_eq!(identities.len(), 1, "one token: {identities:?}");
    assert!(
        identities[0].ends_with("/ns/shop/sa/details-sa"),
        "token for the workload's identity: {identities:?}"
    );
}

async fn list_tokens(cp: &ControlPlane) -> Vec<mesh_proto::admin::v1::TokenInfo> {
    use mesh_proto::admin::v1::ListRequest;
    // The admin API as mesh-cli finds it: URL (TLS), token and bundle from the data dir.
    let sources = mesh_cli::access::Sources {
        data_dir: Some(cp.dir.path().to_path_buf()),
        ..Default::default()
    };
    let limit = Duration::from_secs(30);
    let (mut client, _) = tokio::time::timeout(limit, sources.connect())
        .await
        .expect("connect in time")
        .expect("connect");
    tokio::time::timeout(limit, client.list_tokens(ListRequest {}))
        .await
        .expect("answer in time")
        .expect("list tokens")
        .into_inner()
        .tokens
}
