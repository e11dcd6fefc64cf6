//! `mesh-sidecar init` through the real binary: `--dry-run` prints the rules it would install
//! and touches nothing; bad flags fail with a clear message and a non-zero exit.

use std::process::Command;

#[test]
fn init_dry_run_prints_the_rules_from_the_binary() {
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-sidecar"))
        .args(["init", "--dry-run"])
        .output()
        .expect("run mesh-sidecar init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(":MESH_OUTPUT"), "{text}");
    assert!(text.contains("--to-ports 15001"), "{text}");
    assert!(text.contains("--to-ports 15006"), "{text}");
    assert!(text.contains("--uid-owner 1337"), "{text}");
}

#[test]
fn init_refuses_a_root_proxy_uid() {
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-sidecar"))
        .args(["init", "--dry-run", "--proxy-uid", "0"])
        .output()
        .expect("run mesh-sidecar init");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mesh-sidecar init:"), "{err}");
}
