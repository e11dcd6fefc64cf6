//! Interception with real identities: a control plane on the host serving discovery and
//! identity over TLS, join tokens created through its admin API, and the real `mesh-sidecar`
//! binary in namespaces A and B, each running as the proxy uid behind `init`'s rules. An
//! unmodified curl in A calls `web` in B by name; the test shows it went through both sidecars,
//! that the A–B link carried only TLS records, and that the sidecars' own connections (to the
//! peer, to the control plane) were exempt by uid instead of looping back into a sidecar.

mod netns_support;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mesh_control_plane::config::Config;
use mesh_proto::admin::v1::admin_client::AdminClient;
use mesh_proto::admin::v1::{CreateServiceRequest, CreateTokenRequest};
use mesh_tests::netns::{self, A_ADDR, B_ADDR, Capture, PROXY_UID, Side, TestNet, VETH, capture};
use netns_support::{APP_PORT, BODY, child, init_cmd};

/// Bounds every wait; only a hang reaches it.
const WAIT: Duration = Duration::from_secs(20);
const NAMESPACE: &str = "default";

/// Entry point of the re-executed test binary (a no-op in a normal run).
#[test]
fn child_process_entry() {
    netns_support::run_child_role();
}

/// The control plane in this process on the host side of the uplinks, discovery over TLS
/// with a certificate that also names `host` (the address the namespaces dial).
fn control_plane(rt: &tokio::runtime::Runtime, dir: &Path, host: Ipv4Addr) -> ControlPlane {
    let mut cfg = Config::ephemeral(dir.join("cp"));
    cfg.discovery_addr = (host, 0).into();
    cfg.discovery_tls = true;
    cfg.discovery_sans = vec![host.to_string()];
    let handle = rt
        .block_on(mesh_control_plane::run(cfg))
        .expect("control plane starts");
    // The data dir is private (0700); the sidecars run as the proxy uid and get a copy.
    let bundle = dir.join("trust-bundle.pem");
    std::fs::copy(dir.join("cp/ca/trust-bundle.pem"), &bundle).unwrap();
    ControlPlane {
        url: format!("https://{}", handle.addrs.discovery),
        bundle,
        handle,
    }
}

struct ControlPlane {
    url: String,
    bundle: PathBuf,
    handle: mesh_control_plane::Handle,
}

/// Calls the admin API (TLS verified with the trust bundle, bearer token, as mesh-cli does):
/// declares `web` (returns its VIP) and creates one join token per workload identity, written
/// to `dir/<sa>.token`.
fn admin_setup(rt: &tokio::runtime::Runtime, cp: &ControlPlane, dir: &Path) -> Ipv4Addr {
    let auth: tonic::metadata::MetadataValue<_> =
        format!("Bearer {}", cp.handle.admin_token).parse().unwrap();
    let pem = std::fs::read_to_string(&cp.bundle).unwrap();
    // The admin port listens on 127.0.0.1, a name the control plane's certificate carries.
    let tls = mesh_sidecar::identity::ControlTls::new(&[pem], "127.0.0.1", None).unwrap();
    rt.block_on(async {
        let endpoint = tls.endpoint(&cp.handle.admin_url).unwrap();
        let channel = tls.connect(endpoint).await.expect("admin API");
        let mut client =
            AdminClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
                req.metadata_mut().insert("authorization", auth.clone());
                Ok(req)
            });
        let web = tokio::time::timeout(
            WAIT,
            client.create_service(CreateServiceRequest {
                service: "web".into(),
                namespace: NAMESPACE.into(),
                ports: vec![u32::from(APP_PORT)],
                identities: Vec::new(),
            }),
        )
        .await
        .unwrap()
        .unwrap()
        .into_inner();
        for sa in ["web", "client"] {
            let token = tokio::time::timeout(
                WAIT,
                client.create_token(CreateTokenRequest {
                    namespace: NAMESPACE.into(),
                    service_account: sa.into(),
                    ttl_secs: 0,
                    services: Vec::new(),
                    max_uses: 0,
                }),
            )
            .await
            .unwrap()
            .unwrap()
            .into_inner()
            .token;
            std::fs::write(dir.join(format!("{sa}.token")), token).unwrap();
        }
        web.vip.parse().expect("web has an IPv4 VIP")
    })
}

/// The real sidecar for `service`, identity `default/<service>`, announcing `advertise`.
fn sidecar_cmd(cp: &ControlPlane, dir: &Path, service: &str, advertise: Ipv4Addr) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mesh-sidecar"));
    cmd.args(["--service", service, "--service-account", service])
        .args(["--namespace", NAMESPACE, "--control-plane", &cp.url])
        .arg("--ca-bundle")
        .arg(&cp.bundle)
        .arg("--join-token-file")
        .arg(dir.join(format!("{service}.token")))
        .args(["--advertise-address", &advertise.to_string()]);
    if service == "web" {
        cmd.args(["--app-ports", &APP_PORT.to_string()]);
    } else {
        // Subscribed at start, so the VIP maps back to `web` on the first request; the
        // sidecar answers the workload's DNS where `init` redirects port 53.
        cmd.args([
            "--outbound-services",
            "web",
            "--dns-addr",
            "127.0.0.1:15053",
        ]);
    }
    cmd
}

/// GETs `path` from the sidecar's admin server inside `side` (loopback: never intercepted).
fn admin_get(net: &TestNet, side: Side, path: &str) -> Option<String> {
    let url = format!("http://127.0.0.1:15000{path}");
    let out = net
        .ns(side)
        .output("curl", &["-sf", "--max-time", "5", &url]);
    out.ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Polls until `check` holds for `path` in `side`: 200 polls of 100 ms bound a hang.
fn wait_admin(net: &TestNet, side: Side, path: &str, check: impl Fn(&str) -> bool) {
    for _ in 0..200 {
        if admin_get(net, side, path).is_some_and(|b| check(&b)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{side:?}: {path} never satisfied the check");
}

/// Sum of `mesh_requests_total` samples with `direction="<dir>"` in a metrics page.
fn requests(metrics: &str, dir: &str) -> u64 {
    let label = format!("direction=\"{dir}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("mesh_requests_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Whether a TCP payload starts a TLS record of `content_type` with the TLS 1.2+ record
/// version 0x0303 (TLS 1.3 keeps that legacy version on every record after the ClientHello).
fn tls_record(payload: &[u8], content_type: u8) -> bool {
    payload.len() >= 5 && payload[0] == content_type && payload[1..3] == [0x03, 0x03]
}

#[test]
fn curl_by_name_through_mtls_sidecars_with_identities_from_the_control_plane() {
    if !netns::can_run() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The sidecars run as the proxy uid: let them read their token and bundle files.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut net = TestNet::new().unwrap();
    let host = net.link_host().unwrap();
    let cp = control_plane(&rt, dir.path(), host);
    let vip = admin_setup(&rt, &cp, dir.path());

    net.spawn(Side::B, &child("app"))
        .unwrap()
        .expect("READY", WAIT)
        .unwrap();
    let server = sidecar_cmd(&cp, dir.path(), "web", B_ADDR);
    net.mesh_host(Side::B, &init_cmd(&[]), &server).unwrap();
    let client = sidecar_cmd(&cp, dir.path(), "client", A_ADDR);
    net.mesh_host(Side::A, &init_cmd(&[]), &client).unwrap();
    // Ready = certificate issued through the control plane (token + CSR) and config applied.
    wait_admin(&net, Side::B, "/ready", |_| true);
    wait_admin(&net, Side::A, "/ready", |_| true);
    // A has discovered B's endpoint (announced by B's sidecar over its TLS discovery stream).
    let endpoint = format!("{B_ADDR}:15006");
    wait_admin(&net, Side::A, "/clusters", |b| b.contains(&endpoint));
    // A's sidecar answers the workload's DNS: `web` is the VIP the control plane allocated.
    let answer = net.a.run("getent", &["ahostsv4", "web"]).unwrap();
    assert!(
        answer.starts_with(&format!("{vip} ")),
        "web resolved to {answer}"
    );

    let capture = Capture::start(&net.a, VETH, dir.path(), 200).unwrap();
    let out = net
        .a
        .output(
            "curl",
            &["-sS", "--max-time", "10", "http://web:8080/by-name"],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), BODY);

    // Through both sidecars, exactly once each: one outbound request in A, one inbound in B.
    // A loop (a sidecar's own connection redirected back into a sidecar) would count more.
    let metrics_a = admin_get(&net, Side::A, "/metrics").unwrap();
    let metrics_b = admin_get(&net, Side::B, "/metrics").unwrap();
    assert_eq!(requests(&metrics_a, "outbound"), 1, "A outbound");
    assert_eq!(requests(&metrics_a, "inbound"), 0, "A inbound");
    assert_eq!(requests(&metrics_b, "inbound"), 1, "B inbound");
    assert_eq!(requests(&metrics_b, "outbound"), 0, "B outbound");

    // uid exclusion: in both namespaces the proxy uid's connections (to the peer's inbound
    // port, to the control plane, to the app) matched the RETURN rule, and A redirected
    // exactly curl's single connection to its sidecar.
    let uid_rule = format!("-A MESH_OUTPUT -m owner --uid-owner {PROXY_UID} -j RETURN");
    for side in [Side::A, Side::B] {
        let exempt = net.nat_packets(side, &uid_rule).unwrap();
        assert!(exempt.is_some_and(|p| p > 0), "{side:?}: uid rule unused");
    }
    let redirected = net
        .nat_packets(Side::A, "-A MESH_OUTPUT -j MESH_REDIRECT")
        .unwrap();
    assert_eq!(redirected, Some(1), "A redirected only curl's connection");
    // Both sidecars hold exactly one discovery stream to the control plane on the host: their
    // TLS connections there were exempt too (a redirected one would never have reached it).
    let cp_metrics = format!("http://{}/metrics", cp.handle.addrs.http);
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "5", &cp_metrics])
        .output()
        .unwrap();
    let cp_metrics = String::from_utf8_lossy(&out.stdout);
    assert!(
        cp_metrics
            .lines()
            .any(|l| l == "mesh_cp_connected_proxies 2"),
        "control plane streams: {cp_metrics}"
    );

    // On the A–B link: TLS handshake and application-data records, nothing in the clear.
    let payloads = capture.finish().unwrap();
    assert!(
        payloads.iter().any(|p| tls_record(p, 0x16)),
        "no TLS handshake record on the wire"
    );
    assert!(
        payloads.iter().any(|p| tls_record(p, 0x17)),
        "no TLS application-data record on the wire"
    );
    for needle in [
        &b"GET /by-name"[..],
        BODY.trim().as_bytes(),
        b"PRI * HTTP/2.0",
    ] {
        assert!(
            !capture::contains(&payloads, needle),
            "plaintext {:?} on the wire",
            String::from_utf8_lossy(needle)
        );
    }
    drop(net);
    cp.handle.shutdown();
}
