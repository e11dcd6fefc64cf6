//! The `mesh-sidecar` binary's control side: readiness, admin pages, snapshot restart, SIGTERM.

mod ctl_support;

use std::time::Duration;

use ctl_support::{FakeCp, Sidecar, bad_route, endpoints, listener};
use mesh_proto::type_url::{AUTHORIZATION_POLICY, CLUSTER, ENDPOINTS, LISTENER, ROUTE, RUNTIME};

/// Answers the proxy's listener and its own authorization policy: its first complete config.
async fn serve_first_config(s: &mut ctl_support::CpStream, service: &str) {
    s.recv_initial(&[RUNTIME, LISTENER, AUTHORIZATION_POLICY])
        .await;
    let n = s.send(LISTENER, vec![listener(service, "l1")], &[]).await;
    s.recv_reply(&n).await;
    let n = s.send(AUTHORIZATION_POLICY, vec![], &[service]).await;
    s.recv_reply(&n).await;
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test]
async fn ready_only_after_first_config_and_config_dump_shows_versions_and_nack() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = FakeCp::start().await;
    let url = cp.url();
    let sc = Sidecar::start(
        dir.path(),
        &[
            "--service",
            "web",
            "--control-plane",
            &url,
            "--outbound-services",
            "db",
        ],
    )
    .await;
    assert_eq!(sc.get("/live").await.0, 200);
    let mut s = cp.accept().await;
    let (status, body) = sc.get("/ready").await;
    assert_eq!((status, body.as_str()), (503, "no config applied yet\n"));

    serve_first_config(&mut s, "web").await;
    sc.wait_ready(200).await;
    s.answer_no_cluster_no_route("db").await;

    let n = s
        .send(
            ENDPOINTS,
            vec![endpoints("db", "e1", &["127.0.0.1:9"])],
            &[],
        )
        .await;
    assert!(s.recv_reply(&n).await.error_detail.is_none());
    let n = s.send(ROUTE, vec![bad_route("db", "r9")], &[]).await;
    let nack = s.recv_reply(&n).await.error_detail.expect("NACK");

    let (status, body) = sc.get("/config_dump").await;
    assert_eq!(status, 200);
    let dump = json(&body);
    assert_eq!(dump["source"], "control-plane");
    assert_eq!(dump["connected"], true);
    let resources = dump["resources"].as_array().unwrap();
    let eps = resources
        .iter()
        .find(|r| r["type_url"] == ENDPOINTS && r["name"] == "db")
        .expect("endpoints in the dump");
    assert_eq!(eps["version"], "e1");
    assert_eq!(
        eps["resource"]["kind"]["endpoints"]["endpoints"][0]["address"],
        "127.0.0.1:9"
    );
    assert!(
        resources.iter().all(|r| r["type_url"] != ROUTE),
        "rejected route not applied"
    );
    assert_eq!(dump["last_nack"]["nonce"], n);
    assert_eq!(dump["last_nack"]["error"], nack.message);

    let (status, body) = sc.get("/clusters").await;
    assert_eq!(status, 200);
    let clusters = json(&body);
    assert_eq!(clusters[0]["service"], "db");
    assert_eq!(clusters[0]["endpoints"][0]["address"], "127.0.0.1:9");
    assert_eq!(clusters[0]["endpoints"][0]["in_flight"], 0);
    assert_eq!(clusters[0]["endpoints"][0]["ejected"], false);
    assert_eq!(clusters[0]["endpoints"][0]["state"], "healthy");

    let (status, metrics) = sc.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("mesh_discovery_connected 1"), "{metrics}");
    assert!(
        metrics.contains("mesh_discovery_nacks_total{type_url=\"mesh.types.v1.Route\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn drain_and_logging_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let static_file = dir.path().join("static.json");
    std::fs::write(
        &static_file,
        serde_json::to_vec(&vec![listener("web", "s1")]).unwrap(),
    )
    .unwrap();
    let sc = Sidecar::start(
        dir.path(),
        &[
            "--service",
            "web",
            "--static-config",
            static_file.to_str().unwrap(),
        ],
    )
    .await;
    sc.wait_ready(200).await;
    assert_eq!(json(&sc.get("/config_dump").await.1)["source"], "static");

    assert_eq!(sc.get("/logging").await, (200, "warn\n".to_string()));
    assert_eq!(sc.post("/logging?level=debug%2Ch2%3Dinfo").await.0, 200);
    assert_eq!(
        sc.get("/logging").await,
        (200, "debug,h2=info\n".to_string())
    );
    let (status, body) = sc.post("/logging?level=info,[").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(sc.post("/logging").await.0, 400);
    assert_eq!(sc.get("/logging").await.1, "debug,h2=info\n");

    assert_eq!(sc.get("/drain").await.0, 405);
    assert_eq!(sc.post("/drain").await, (200, "draining\n".to_string()));
    assert_eq!(sc.get("/ready").await, (503, "draining\n".to_string()));
    assert_eq!(sc.get("/live").await.0, 200, "draining is not dead");
    assert_eq!(sc.get("/nope").await.0, 404);
}

#[tokio::test]
async fn restarted_with_control_plane_down_serves_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let app = ctl_support::App::start().await;
    let app_addr = app.addr.to_string();
    {
        let mut cp = FakeCp::start().await;
        let url = cp.url();
        let mut sc = Sidecar::start(
            dir.path(),
            &[
                "--service",
                "web",
                "--control-plane",
                &url,
                "--data-dir",
                data_arg,
                "--outbound-services",
                "db",
                "--drain-grace-ms",
                "0",
            ],
        )
        .await;
        let mut s = cp.accept().await;
        serve_first_config(&mut s, "web").await;
        s.answer_no_cluster_no_route("db").await;
        let n = s
            .send(ENDPOINTS, vec![endpoints("db", "e5", &[&app_addr])], &[])
            .await;
        s.recv_reply(&n).await;
        let snapshot = data.join(mesh_sidecar::xds::persist::SNAPSHOT_FILE);
        ctl_support::eventually("snapshot written", || {
            std::fs::read_to_string(&snapshot).is_ok_and(|t| t.contains("\"e5\""))
        })
        .await;
        sc.sigterm();
        assert!(sc.wait_exit(ctl_support::WAIT).await.success());
    }

    // Nobody listens on this port any more: the control plane is down.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cp_addr = dead.local_addr().unwrap();
    let url = format!("http://{cp_addr}");
    drop(dead);
    let sc = Sidecar::start(
        dir.path(),
        &[
            "--service",
            "web",
            "--control-plane",
            &url,
            "--data-dir",
            data_arg,
        ],
    )
    .await;
    sc.wait_ready(200).await;
    let dump = json(&sc.get("/config_dump").await.1);
    assert_eq!(dump["source"], "snapshot-file");
    assert_eq!(dump["connected"], false);
    assert_eq!(dump["services"][0], "db");
    let versions: Vec<(String, String)> = dump["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().into(),
                r["version"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        versions.contains(&("db".into(), "e5".into())),
        "{versions:?}"
    );
    assert!(
        versions.contains(&("web".into(), "l1".into())),
        "{versions:?}"
    );
    // Traffic flows on the snapshot's endpoints.
    assert_eq!(
        ctl_support::get_via(sc.addrs.outbound, "db", "/from-snapshot")
            .await
            .unwrap(),
        (200, "app /from-snapshot".to_string())
    );

    // The control plane comes back where the proxy looks: the proxy reconnects, says what it
    // holds, and a new route applies.
    let mut cp = FakeCp::start_on(cp_addr).await;
    let mut s = cp.accept().await;
    let initial = s.recv_initial(&[RUNTIME, LISTENER, ENDPOINTS, ROUTE]).await;
    assert_eq!(
        initial[ENDPOINTS].initial_resource_versions.get("db"),
        Some(&"e5".to_string())
    );
    let n = s.send(ROUTE, vec![redirect_route("db", "r2")], &[]).await;
    assert!(s.recv_reply(&n).await.error_detail.is_none());
    let (status, _) = ctl_support::get_via(sc.addrs.outbound, "db", "/old")
        .await
        .unwrap();
    assert_eq!(status, 302, "the new route is in force");
    assert_eq!(
        json(&sc.get("/config_dump").await.1)["source"],
        "control-plane"
    );
}

/// A route sending every request of `service` elsewhere with a 302.
fn redirect_route(service: &str, version: &str) -> mesh_proto::types::v1::Resource {
    use mesh_proto::types::v1 as pb;
    ctl_support::res(
        service,
        version,
        pb::resource::Kind::Route(pb::Route {
            service: service.into(),
            rules: vec![pb::RouteRule {
                redirect: Some(pb::Redirect {
                    path: "/moved".into(),
                    status: 302,
                    ..Default::default()
                }),
                ..Default::default()
            }],
        }),
    )
}

#[tokio::test]
async fn sigterm_turns_readiness_off_and_exits_zero_within_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let static_file = dir.path().join("static.json");
    std::fs::write(
        &static_file,
        serde_json::to_vec(&vec![listener("web", "s1")]).unwrap(),
    )
    .unwrap();
    let grace = Duration::from_secs(2);
    let mut sc = Sidecar::start(
        dir.path(),
        &[
            "--service",
            "web",
            "--static-config",
            static_file.to_str().unwrap(),
            "--drain-grace-ms",
            &grace.as_millis().to_string(),
        ],
    )
    .await;
    sc.wait_ready(200).await;
    sc.sigterm();
    sc.wait_ready(503).await;
    // Bounds a hang only: the process must exit by itself once the grace period is over.
    let status = sc.wait_exit(grace + ctl_support::WAIT).await;
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn bad_settings_are_all_reported_and_exit_2() {
    let out = tokio::time::timeout(
        ctl_support::WAIT,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_mesh-sidecar"))
            .args(["--workers", "0", "--app-ports", "http"])
            .env("MESH_ADMIN_ADDR", "localhost")
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for origin in ["--service", "--workers", "--app-ports", "MESH_ADMIN_ADDR"] {
        assert!(err.contains(origin), "{origin} missing from: {err}");
    }
}

#[tokio::test]
async fn an_unknown_service_is_subscribed_on_first_use_and_routed_once_answered() {
    let dir = tempfile::tempdir().unwrap();
    let app = ctl_support::App::start().await;
    let mut cp = FakeCp::start().await;
    let url = cp.url();
    let sc = Sidecar::start(dir.path(), &["--service", "web", "--control-plane", &url]).await;
    let mut s = cp.accept().await;
    serve_first_config(&mut s, "web").await;

    let outbound = sc.addrs.outbound;
    let request =
        tokio::spawn(async move { ctl_support::get_via(outbound, "reviews", "/on-demand").await });
    let mut kinds = Vec::new();
    while kinds.len() < 3 {
        let r = s.recv().await;
        if r.resource_names_subscribe == ["reviews"] {
            kinds.push(r.type_url);
        }
    }
    kinds.sort();
    assert_eq!(kinds, [CLUSTER, ENDPOINTS, ROUTE]);
    let app_addr = app.addr.to_string();
    s.send(
        ENDPOINTS,
        vec![endpoints("reviews", "e1", &[&app_addr])],
        &[],
    )
    .await;
    s.send(CLUSTER, vec![], &["reviews"]).await;
    s.send(ROUTE, vec![], &["reviews"]).await;
    let got = tokio::time::timeout(ctl_support::WAIT, request)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.unwrap(), (200, "app /on-demand".to_string()));
    let dump = json(&sc.get("/config_dump").await.1);
    assert_eq!(dump["services"][0], "reviews");
}

#[tokio::test]
async fn data_path_runs_on_its_own_worker_threads_apart_from_control() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ctl_support::static_file(dir.path(), "s.json", &[listener("web", "l1")]);
    let sc = Sidecar::start(
        dir.path(),
        &[
            "--service",
            "web",
            "--static-config",
            &cfg,
            "--workers",
            "3",
        ],
    )
    .await;
    sc.wait_ready(200).await;
    let pid = sc.child.id().unwrap();
    let threads = || {
        let mut names = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
            let comm = task.unwrap().path().join("comm");
            if let Ok(name) = std::fs::read_to_string(comm) {
                names.push(name.trim().to_string());
            }
        }
        names
    };
    let count = |names: &[String], n: &str| names.iter().filter(|t| *t == n).count();
    // Worker threads start asynchronously with the runtime: wait for them, then count exactly.
    ctl_support::eventually("data workers started", || {
        count(&threads(), "mesh-data") >= 3
    })
    .await;
    let names = threads();
    assert_eq!(count(&names, "mesh-data"), 3, "{names:?}");
    assert_eq!(count(&names, "mesh-control"), 1, "{names:?}");
}

#[tokio::test]
async fn static_config_clusters_get_active_health_checks() {
    use mesh_proto::types::v1 as pb;
    let dir = tempfile::tempdir().unwrap();
    let app = ctl_support::App::start().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let live_addr = app.addr.to_string();
    let cluster = ctl_support::res(
        "db",
        "c1",
        pb::resource::Kind::Cluster(pb::Cluster {
            name: "db".into(),
            // TCP checks every 50 ms; one failure takes an endpoint out.
            health_check: Some(pb::HealthCheck {
                interval_ms: 50,
                timeout_ms: 1000,
                healthy_threshold: 1,
                unhealthy_threshold: 1,
                ..Default::default()
            }),
            ..Default::default()
        }),
    );
    let cfg = ctl_support::static_file(
        dir.path(),
        "s.json",
        &[
            listener("web", "l1"),
            cluster,
            endpoints("db", "e1", &[&live_addr, &dead_addr]),
        ],
    );
    let sc = Sidecar::start(dir.path(), &["--service", "web", "--static-config", &cfg]).await;
    sc.wait_ready(200).await;
    let deadline = tokio::time::Instant::now() + ctl_support::WAIT;
    loop {
        let clusters = json(&sc.get("/clusters").await.1);
        let down = |addr: &str| {
            clusters[0]["endpoints"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["address"] == addr)
                .map(|e| e["health_down"] == true)
                .unwrap()
        };
        if down(&dead_addr) {
            assert!(!down(&live_addr), "{clusters}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never checked: {clusters}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
