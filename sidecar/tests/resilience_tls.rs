//! A failed mTLS handshake on the real data path: the outbound sidecar retries it on another endpoint (no request byte reached an app) and, with none left, answers `502` with `x-mesh-error: tls-handshake`.

mod data_support;
mod resilience_support;
mod tls_common;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use data_support::*;
use http_body_util::Full;
use mesh_sidecar::inbound::{self, InboundConfig, InboundCtx, MtlsTransport};
use mesh_sidecar::outbound::OutboundConfig;
use mesh_sidecar::proxy::{self, DrainTrigger};
use mesh_sidecar::state::StateHandle;
use mesh_sidecar::tls::{MeshAcceptor, MeshConnector};
use resilience_support::Backend;
use tls_common::{Cp, id};
use tokio::net::TcpListener;

/// An inbound sidecar holding `sa`'s certificate in front of `app` (strict mTLS: no Listener
/// resource). The trigger drains it when dropped: keep it.
async fn mtls_inbound(cp: &Cp, sa: &str, app: SocketAddr) -> (DrainTrigger, Pod) {
    let state = StateHandle::default();
    let ctx = InboundCtx::new(
        state.clone(),
        InboundConfig {
            app_ports: vec![app.port()],
            ..Default::default()
        },
    );
    let transport = MtlsTransport::new(MeshAcceptor::new(cp.workload(sa).await), state);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let inbound = listener.local_addr().unwrap();
    let (trigger, drain) = proxy::drain::channel();
    tokio::spawn(inbound::serve(listener, ctx, Arc::new(transport), drain));
    let pod = Pod {
        app,
        inbound,
        version: "v1",
        trigger: None,
    };
    (trigger, pod)
}

fn post() -> http::Request<Full<Bytes>> {
    http::Request::post("/orders")
        .header(http::header::HOST, "svc")
        .body(Full::new(Bytes::from_static(b"{\"id\":1}")))
        .unwrap()
}

#[tokio::test]
async fn a_failed_handshake_is_retried_elsewhere_and_answered_tls_handshake() {
    let cp = Cp::start().await;
    let app = Backend::start().await;
    let (_genuine_sidecar, genuine) = mtls_inbound(&cp, "server", app.addr).await;
    // A valid mesh certificate, but not for the identity discovery names for the endpoint.
    let (_impostor_sidecar, impostor) = mtls_inbound(&cp, "impostor", app.addr).await;
    let mesh = Mesh::with_config(OutboundConfig {
        tls: Some(MeshConnector::new(cp.workload("client").await)),
        ..Default::default()
    })
    .await;
    let server = id("server").to_string();
    let as_server = |_: usize, e: &mut mesh_sidecar::state::Endpoint| {
        e.identity = Some(server.as_str().into());
    };

    // The handshake failure happens before any request byte is sent: retried for POST too.
    mesh.set_endpoints_with("svc", &[&impostor, &genuine], as_server);
    let mut tx = mesh.h1().await;
    for _ in 0..10 {
        let got = send_h1(&mut tx, post()).await;
        assert_eq!(got.status, 200, "{}", got.body);
    }
    assert_eq!(app.hits(), 10, "every POST reached the app exactly once");

    // With only the impostor left, the client learns why, under the handshake's own cause.
    mesh.set_endpoints_with("svc", &[&impostor], as_server);
    let got = send_h1(&mut tx, post()).await;
    assert_eq!(got.status, 502, "{}", got.body);
    assert_eq!(got.headers["x-mesh-error"], "tls-handshake");
    assert_eq!(app.hits(), 10, "the impostor never forwarded it");
}
