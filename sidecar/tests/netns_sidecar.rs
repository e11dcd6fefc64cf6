//! The real `mesh-sidecar` binary with interception in two network namespaces: an unmodified
//! curl in A calls `web` in B by its mesh name; DNS capture answers with the service VIP, the
//! init rules send the connection to sidecar A, which reaches sidecar B's inbound listener
//! (its own connection exempt by uid) and B's sidecar delivers to the app. Configured with
//! `--static-config` (one resource set per sidecar), so no control plane is needed.
//!
//! Until the binary serves its data path, the same scenario runs with the sidecar's own
//! outbound/inbound/DNS code started from the library inside each namespace as the proxy uid
//! (`lib_sidecar`): everything real except the binary's wiring.

mod netns_support;

use std::process::Command;
use std::time::Duration;

use mesh_proto::types::v1 as pb;
use mesh_proto::types::v1::resource::Kind;
use mesh_tests::netns::{self, B_ADDR, Capture, PROXY_UID, Side, TestNet, VETH, capture};
use netns_support::{APP_PORT, BODY, child, dns_cmd, init_cmd};

/// The VIP the control plane would have allocated to `web` (from the reserved 240/4 range,
/// never routed anywhere: only interception makes it reachable).
const WEB_VIP: &str = "240.240.0.10";
/// Bounds every wait; only a hang reaches it.
const WAIT: Duration = Duration::from_secs(20);

/// Entry point of the re-executed test binary (a no-op in a normal run).
#[test]
fn child_process_entry() {
    if netns::child_role().as_deref() == Some("lib-sidecar") {
        lib_sidecar();
    }
    netns_support::run_child_role();
}

/// The sidecar's data path from the library: `LIB_SIDE=client` serves outbound (:15001) and
/// DNS (:15053) from a state holding `client_config()`; `server` serves inbound (:15006).
fn lib_sidecar() {
    use mesh_sidecar::dns::{DnsConfig, DnsServer, MeshNames};
    use mesh_sidecar::inbound::{self, InboundConfig, InboundCtx, Plaintext};
    use mesh_sidecar::outbound::{self, OutboundConfig, OutboundCtx};
    use mesh_sidecar::state::{Cluster, Endpoints, StateHandle};
    use std::sync::Arc;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let state = StateHandle::default();
        let (_trigger, drain) = mesh_sidecar::proxy::drain::channel();
        if std::env::var("LIB_SIDE").unwrap() == "client" {
            for r in client_config() {
                match r.kind.unwrap() {
                    Kind::Cluster(c) => {
                        let c = Cluster::try_from(&c).unwrap();
                        state.update(|s| s.clusters.insert(c.name.clone(), Arc::new(c)));
                    }
                    Kind::Endpoints(e) => {
                        let e = Endpoints::try_from(&e).unwrap();
                        state.update(|s| s.endpoints.insert(e.service.clone(), Arc::new(e)));
                    }
                    _ => {}
                }
            }
            let l = tokio::net::TcpListener::bind("127.0.0.1:15001")
                .await
                .unwrap();
            let ctx = OutboundCtx::new(state.clone(), OutboundConfig::default());
            tokio::spawn(outbound::serve(l, ctx, drain));
            // DNS answers from the same state (on-demand, as the binary will wire it).
            let names = MeshNames {
                namespace: "default".into(),
                trust_domain: "cluster.local".into(),
            };
            let cfg = DnsConfig::new(mesh_sidecar::dns::DEFAULT_DNS_PORT, Vec::new(), names);
            let dns = DnsServer::bind(cfg, Arc::new(state.clone())).await.unwrap();
            tokio::spawn(dns.serve(std::future::pending()));
        } else {
            let l = tokio::net::TcpListener::bind("0.0.0.0:15006")
                .await
                .unwrap();
            let cfg = InboundConfig {
                app_ports: vec![APP_PORT],
                ..Default::default()
            };
            let ctx = InboundCtx::new(state, cfg);
            tokio::spawn(inbound::serve(l, ctx, Arc::new(Plaintext), drain));
        }
        println!("READY");
        std::future::pending::<()>().await;
    });
}

fn resource(name: &str, kind: Kind) -> pb::Resource {
    pb::Resource {
        name: name.into(),
        version: "v1".into(),
        kind: Some(kind),
    }
}

/// Sidecar A's config: it knows `web` (VIP and the endpoint: B's inbound listener).
fn client_config() -> Vec<pb::Resource> {
    vec![
        resource(
            "web",
            Kind::Cluster(pb::Cluster {
                name: "web".into(),
                vip: WEB_VIP.into(),
                ports: vec![u32::from(APP_PORT)],
                namespace: "default".into(),
                ..Default::default()
            }),
        ),
        resource(
            "web",
            Kind::Endpoints(pb::Endpoints {
                service: "web".into(),
                endpoints: vec![pb::Endpoint {
                    address: format!("{B_ADDR}:15006"),
                    app_port: u32::from(APP_PORT),
                    weight: 1,
                    // A sidecar-backed endpoint (as the control plane reports one): meshed,
                    // so HTTP travels sidecar to sidecar as HTTP/2.
                    identity: "spiffe://cluster.local/ns/default/sa/web".into(),
                    ..Default::default()
                }],
            }),
        ),
    ]
}

/// Sidecar B's config: its own listener for the app port.
fn server_config() -> Vec<pb::Resource> {
    vec![resource(
        "web",
        Kind::Listener(pb::Listener {
            name: "web".into(),
            app_ports: vec![u32::from(APP_PORT)],
            ..Default::default()
        }),
    )]
}

fn sidecar_cmd(dir: &std::path::Path, service: &str, config: &[pb::Resource]) -> Command {
    let file = dir.join(format!("{service}.json"));
    std::fs::write(&file, serde_json::to_vec(config).unwrap()).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mesh-sidecar"));
    cmd.args(["--service", service, "--app-ports", &APP_PORT.to_string()])
        .arg("--static-config")
        .arg(file);
    cmd
}

/// Polls the sidecar's `/ready` inside `side` (loopback: never intercepted). 200 polls of
/// 50 ms: only a hang reaches the bound.
fn wait_ready(net: &TestNet, side: Side) {
    for _ in 0..200 {
        let out = net.ns(side).output(
            "curl",
            &[
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "http://127.0.0.1:15000/ready",
            ],
        );
        if out.is_ok_and(|o| o.stdout == b"200") {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("sidecar in {side:?} never became ready");
}

#[test]
fn curl_by_mesh_name_goes_through_both_real_sidecars() {
    if !netns::can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The sidecars run as the proxy uid: let them read their config files.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut net = TestNet::new().unwrap();
    net.spawn(Side::B, &child("app"))
        .unwrap()
        .expect("READY", WAIT)
        .unwrap();
    let server = sidecar_cmd(dir.path(), "web", &server_config());
    net.mesh_host(Side::B, &init_cmd(&[]), &server).unwrap();
    let client = sidecar_cmd(dir.path(), "client", &client_config());
    net.mesh_host(Side::A, &init_cmd(&[]), &client).unwrap();
    let dns = dns_cmd("127.0.0.1:15053", "web", WEB_VIP, None);
    let dns = net.spawn_as(Side::A, PROXY_UID, PROXY_UID, &dns).unwrap();
    dns.expect("READY", WAIT).unwrap();
    wait_ready(&net, Side::A);
    wait_ready(&net, Side::B);
    let capture = Capture::start(&net.a, VETH, dir.path(), 200).unwrap();

    let out = net.a.output(
        "curl",
        &["-sS", "--max-time", "10", "http://web:8080/by-name"],
    );
    let out = out.unwrap();
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), BODY);

    assert_carried_by_both_sidecars(&net, capture);
}

#[test]
fn curl_by_mesh_name_goes_through_the_proxy_code_on_both_sides() {
    if !netns::can_run() {
        return;
    }
    let mut net = TestNet::new().unwrap();
    let app = net.spawn(Side::B, &child("app")).unwrap();
    app.expect("READY", WAIT).unwrap();
    for (side, role) in [(Side::B, "server"), (Side::A, "client")] {
        let mut sidecar = child("lib-sidecar");
        sidecar.env("LIB_SIDE", role);
        let lines = net.mesh_host(side, &init_cmd(&[]), &sidecar).unwrap();
        lines.expect("READY", WAIT).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let capture = Capture::start(&net.a, VETH, dir.path(), 200).unwrap();

    let out = net.a.output(
        "curl",
        &["-sS", "--max-time", "10", "http://web:8080/by-name"],
    );
    let out = out.unwrap();
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), BODY);
    // Restored to HTTP/1.1 by B's sidecar, which dialled the app on loopback.
    let req = app.expect("REQ", WAIT).unwrap();
    assert_eq!(req, "GET /by-name HTTP/1.1 FROM 127.0.0.1");
    assert_carried_by_both_sidecars(&net, capture);
}

#[test]
fn opaque_tcp_to_the_vip_is_mapped_back_to_the_service() {
    if !netns::can_run() {
        return;
    }
    let mut net = TestNet::new().unwrap();
    let app = net.spawn(Side::B, &child("app")).unwrap();
    app.expect("READY", WAIT).unwrap();
    for (side, role) in [(Side::B, "server"), (Side::A, "client")] {
        let mut sidecar = child("lib-sidecar");
        sidecar.env("LIB_SIDE", role);
        let lines = net.mesh_host(side, &init_cmd(&[]), &sidecar).unwrap();
        lines.expect("READY", WAIT).unwrap();
    }
    // A plain TCP client (bash's /dev/tcp) dialling the VIP, which exists nowhere: only the
    // interception and the outbound's VIP:port → service mapping make it reach B's app.
    let script =
        format!("exec 3<>/dev/tcp/{WEB_VIP}/{APP_PORT}; printf 'ping\\n' >&3; head -n 1 <&3");
    let out = net
        .a
        .run("timeout", &["10", "bash", "-c", &script])
        .unwrap();
    assert_eq!(out, "echo: ping\n");
    assert_eq!(app.expect("TCP", WAIT).unwrap(), "ping FROM 127.0.0.1");
}

/// What shows the request went app → sidecar A → sidecar B → app: rule counters (A redirected
/// curl's DNS and connection to its sidecar and exempted the sidecar's own connection; B let
/// that connection reach its sidecar's inbound port directly, and exempted the sidecar's dial
/// to the app), and HTTP/2, not the app's HTTP/1, on the link between them.
fn assert_carried_by_both_sidecars(net: &TestNet, capture: Capture) {
    let uid_rule = format!("-A MESH_OUTPUT -m owner --uid-owner {PROXY_UID} -j RETURN");
    for (side, rule) in [
        (Side::A, "-A MESH_DNS -p udp -j REDIRECT --to-ports 15053"),
        (Side::A, "-A MESH_OUTPUT -j MESH_REDIRECT"),
        (Side::A, uid_rule.as_str()),
        (
            Side::B,
            "-A MESH_INBOUND -p tcp -m tcp --dport 15006 -j RETURN",
        ),
        (Side::B, uid_rule.as_str()),
    ] {
        let packets = net.nat_packets(side, rule).unwrap();
        assert!(
            packets.is_some_and(|p| p > 0),
            "{side:?} `{rule}` matched nothing"
        );
    }
    // (Once mTLS wraps sidecar-to-sidecar connections, the h2 preface disappears as well.)
    let payloads = capture.finish().unwrap();
    assert!(
        !capture::contains(&payloads, b"GET /by-name HTTP/1.1"),
        "HTTP/1 on the wire"
    );
    assert!(
        capture::contains(&payloads, b"PRI * HTTP/2.0"),
        "sidecars speak HTTP/2"
    );
}
