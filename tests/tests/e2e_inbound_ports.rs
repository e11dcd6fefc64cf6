//! A hostile peer on the inbound port cannot reach the sidecar's own listeners: a port hint
//! naming the admin port (`POST /drain`) is refused with `no-route`, even when the workload
//! declares no app port, and the sidecar keeps serving. The peer is a plaintext client of an
//! anonymous mesh on purpose: it stands for any peer that got onto the inbound port.

mod mtls_support;

use mesh_tests::{ControlPlane, Sidecar, SidecarOpts, eventually};
use mtls_support::{CONVERGE, IO_LIMIT, admin_get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_hint_for_the_admin_port_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &["--discovery-tls=false"]);
    let api = Sidecar::start(
        dir.path(),
        &SidecarOpts {
            service: "api".into(),
            control_plane: Some(cp.discovery_url()),
            ..Default::default()
        },
    );
    eventually("api ready", CONVERGE, || async {
        (admin_get(api.admin, "/ready").await == "ready\n").then_some(())
    })
    .await;
    let port = api.admin.port();
    let mut s = tokio::time::timeout(IO_LIMIT, tokio::net::TcpStream::connect(api.inbound))
        .await
        .expect("connect in time")
        .expect("connect");
    let req = format!(
        "POST /drain HTTP/1.1\r\nhost: api\r\nx-mesh-app-port: {port}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    let _ = tokio::time::timeout(IO_LIMIT, s.read_to_string(&mut out)).await;
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    assert!(out.contains("x-mesh-error: no-route"), "{out}");
    // The admin never saw it: the sidecar is not draining.
    assert_eq!(admin_get(api.admin, "/ready").await, "ready\n");
}
