//! Graceful shutdown of the real binary: in-flight inbound requests finish, the inbound listener
//! stops accepting, outbound keeps serving the app through the grace period, exit code 0.

mod ctl_support;

use std::time::Duration;

use ctl_support::{
    App, Sidecar, WAIT, endpoints, get_via, listener, meshed_endpoints, static_file,
};

#[tokio::test]
async fn sigterm_finishes_in_flight_stops_inbound_keeps_outbound_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = App::start().await;
    let app_port = app.addr.port().to_string();

    // Server sidecar in front of the app; its own outbound reaches `backend` (the same app,
    // unmeshed) so the test can call out through it while it drains.
    let backend = endpoints("backend", "b1", &[&app.addr.to_string()]);
    let server_cfg = static_file(dir.path(), "server.json", &[listener("api", "l1"), backend]);
    let grace = Duration::from_secs(8);
    let mut server = Sidecar::start(
        dir.path(),
        &[
            "--service",
            "api",
            "--app-ports",
            &app_port,
            "--static-config",
            &server_cfg,
            "--drain-grace-ms",
            &grace.as_millis().to_string(),
        ],
    )
    .await;
    server.wait_ready(200).await;

    // Client sidecar: `api` is the server sidecar's inbound (meshed, HTTP/2 between sidecars).
    let client_cfg = static_file(
        dir.path(),
        "client.json",
        &[
            listener("web", "l1"),
            meshed_endpoints("api", "e1", server.addrs.inbound, app.addr.port()),
        ],
    );
    let client = Sidecar::start(
        dir.path(),
        &["--service", "web", "--static-config", &client_cfg],
    )
    .await;
    client.wait_ready(200).await;
    assert_eq!(
        get_via(client.addrs.outbound, "api", "/hello")
            .await
            .unwrap(),
        (200, "app /hello".to_string())
    );

    // Requests in flight at the app when SIGTERM arrives (bounded: ten).
    const IN_FLIGHT: usize = 10;
    let outbound = client.addrs.outbound;
    let in_flight: Vec<_> = (0..IN_FLIGHT)
        .map(|i| tokio::spawn(async move { get_via(outbound, "api", &format!("/slow/{i}")).await }))
        .collect();
    for _ in 0..IN_FLIGHT {
        app.arrived().await;
    }
    server.sigterm();
    server.wait_ready(503).await;

    // The inbound listener closes: new peers are refused.
    let inbound = server.addrs.inbound;
    ctl_support::eventually_async("inbound refuses new connections", || async move {
        tokio::net::TcpStream::connect(inbound).await.is_err()
    })
    .await;

    // The draining sidecar's outbound still serves its app.
    assert_eq!(
        get_via(server.addrs.outbound, "backend", "/out")
            .await
            .unwrap(),
        (200, "app /out".to_string())
    );

    for _ in 0..IN_FLIGHT {
        app.release();
    }
    for (i, request) in in_flight.into_iter().enumerate() {
        let got = tokio::time::timeout(WAIT, request).await.unwrap().unwrap();
        assert_eq!(
            got.unwrap(),
            (200, format!("app /slow/{i}")),
            "in-flight request {i} finished"
        );
    }

    // Bounds a hang only; the process exits by itself at the end of the grace period.
    let status = server.wait_exit(grace + WAIT).await;
    assert_eq!(status.code(), Some(0));
}
