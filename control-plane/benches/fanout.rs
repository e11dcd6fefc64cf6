//! Fan-out benchmark: the real control-plane binary as a child process, 1,000 discovery streams
//! (each subscribed to a few services), 10,000 endpoints; one endpoint is changed N times and
//! the time from the admin call to every subscriber having the new version is measured, with
//! the control plane's RSS. Run: `cargo bench -p mesh-control-plane --bench fanout`.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use mesh_proto::admin::v1 as apb;
use mesh_proto::admin::v1::admin_client::AdminClient;
use mesh_proto::discovery::v1::discovery_client::DiscoveryClient;
use mesh_proto::discovery::v1::{DeltaDiscoveryRequest, Node};
use mesh_proto::type_url::{CLUSTER, ENDPOINTS, LISTENER};
use mesh_proto::types::v1 as pb;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// Sizes from the issue: 1,000 proxies, 10,000 endpoints.
const PROXIES: usize = 1_000;
const SERVICES: usize = 100;
/// Static endpoints per service; the proxies add PROXIES / SERVICES each, 10,000 in total.
const STATIC_PER_SERVICE: usize = 90;
/// Changes measured (each waits for every subscriber before the next).
const CHANGES: u32 = 50;
/// The endpoint that changes, in the service every proxy subscribes to.
const HOT: &str = "s000";
const HOT_ADDR: &str = "10.200.0.1:8080";
/// Bounds any single wait so a broken build fails instead of hanging.
const WAIT: Duration = Duration::from_secs(120);

fn svc(i: usize) -> String {
    format!("s{i:03}")
}

fn rss_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Adds the admin bearer token to every call.
#[derive(Clone)]
struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", self.0.clone());
        Ok(r)
    }
}

type Admin = AdminClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

async fn register(a: &mut Admin, service: &str, addr: &str, weight: u32) {
    a.register_endpoint(apb::RegisterEndpointRequest {
        service: service.into(),
        endpoint: Some(pb::Endpoint {
            address: addr.into(),
            weight,
            ..Default::default()
        }),
    })
    .await
    .expect("register endpoint");
}

/// One simulated proxy: subscribes, ACKs everything, reports each version of the hot endpoint.
async fn proxy(i: usize, ch: Channel, report: mpsc::UnboundedSender<(usize, u32)>) {
    let (tx, rx) = mpsc::channel(16);
    let node = Node {
        id: format!("p{i}"),
        service: svc(i % SERVICES),
        namespace: "bench".into(),
        address: format!("10.{}.{}.{}", 100 + i / 65_536, (i / 256) % 256, i % 256),
        inbound_port: 15006,
        app_ports: vec![8080],
        ..Default::default()
    };
    let subs = [
        HOT.to_string(),
        svc((i * 7 + 1) % SERVICES),
        svc((i * 13 + 2) % SERVICES),
    ];
    let mut reqs = vec![DeltaDiscoveryRequest {
        node: Some(node),
        type_url: LISTENER.into(),
        resource_names_subscribe: vec!["*".into()],
        ..Default::default()
    }];
    for t in [CLUSTER, ENDPOINTS] {
        reqs.push(DeltaDiscoveryRequest {
            type_url: t.into(),
            resource_names_subscribe: subs.to_vec(),
            ..Default::default()
        });
    }
    for r in reqs {
        tx.send(r).await.expect("queue");
    }
    let mut stream = DiscoveryClient::new(ch)
        .delta_stream(ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    while let Ok(Some(resp)) = stream.message().await {
        let _ = tx
            .send(DeltaDiscoveryRequest {
                type_url: resp.type_url.clone(),
                response_nonce: resp.nonce.clone(),
                ..Default::default()
            })
            .await;
        for r in &resp.resources {
            if let Some(pb::resource::Kind::Endpoints(e)) = &r.kind
                && r.name == HOT
                && let Some(ep) = e.endpoints.iter().find(|e| e.address == HOT_ADDR)
            {
                let _ = report.send((i, ep.weight));
            }
        }
    }
}

/// Waits until `n` distinct proxies reported `weight`; returns their arrival times.
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<(usize, u32)>,
    weight: u32,
    n: usize,
) -> Vec<Instant> {
    let mut seen = std::collections::HashSet::new();
    let mut times = Vec::with_capacity(n);
    while times.len() < n {
        let (i, w) = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("subscribers report in time")
            .expect("reporters alive");
        if w == weight && seen.insert(i) {
            times.push(Instant::now());
        }
    }
    times
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addrs_file = dir.path().join("addrs.json");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mesh-control-plane"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "--discovery-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .args(["--http-addr", "127.0.0.1:0"])
        // The bench's proxies speak plaintext gRPC: it measures fan-out, not TLS.
        .arg("--discovery-tls=false")
        .arg("--allow-anonymous-proxies")
        .arg("--addrs-file")
        .arg(&addrs_file)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn control plane");
    let pid = child.id().expect("pid");
    let mut addrs: Option<HashMap<String, String>> = None;
    for _ in 0..600 {
        if let Ok(b) = std::fs::read(&addrs_file) {
            addrs = serde_json::from_slice(&b).ok();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let addrs = addrs.expect("control plane started");
    let token = std::fs::read_to_string(dir.path().join("data/admin-token")).expect("token");
    let bearer: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
        format!("Bearer {}", token.trim()).parse().expect("header");
    // The admin API speaks TLS (the default): verified with the data dir's trust bundle and
    // the certificate's `127.0.0.1`, as mesh-cli does.
    let bundle =
        std::fs::read_to_string(dir.path().join("data/ca/trust-bundle.pem")).expect("bundle");
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(bundle))
        .domain_name("127.0.0.1");
    let admin_ch = Channel::from_shared(addrs["admin_url"].clone())
        .expect("uri")
        .tls_config(tls)
        .expect("tls config")
        .connect()
        .await
        .expect("admin");
    let mut admin: Admin = AdminClient::with_interceptor(admin_ch, Bearer(bearer));

    let t = Instant::now();
    for s in 0..SERVICES {
        admin
            .create_service(apb::CreateServiceRequest {
                service: svc(s),
                namespace: "bench".into(),
                ports: vec![8080],
                identities: Vec::new(),
            })
            .await
            .expect("create service");
    }
    // Every registration is its own durable transaction; 8 writers keep the pipe full.
    let mut writers = Vec::new();
    for w in 0..8 {
        let mut a = admin.clone();
        writers.push(tokio::spawn(async move {
            for k in (w..SERVICES * STATIC_PER_SERVICE).step_by(8) {
                let (s, e) = (k / STATIC_PER_SERVICE, k % STATIC_PER_SERVICE);
                let addr = if s == 0 && e == 0 {
                    HOT_ADDR.to_string()
                } else {
                    format!("10.201.{}.{}:8080", k / 250, k % 250 + 1)
                };
                register(&mut a, &svc(s), &addr, 1).await;
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    println!(
        "setup: {SERVICES} services, {} static endpoints in {:?}",
        SERVICES * STATIC_PER_SERVICE,
        t.elapsed()
    );

    let t = Instant::now();
    let (report_tx, mut report_rx) = mpsc::unbounded_channel();
    let discovery = format!("http://{}", addrs["discovery"]);
    for i in 0..PROXIES {
        // One connection per proxy, as in a real mesh.
        let ch = Channel::from_shared(discovery.clone())
            .expect("uri")
            .connect()
            .await
            .expect("discovery connect");
        tokio::spawn(proxy(i, ch, report_tx.clone()));
    }
    collect(&mut report_rx, 1, PROXIES).await;
    // Let the last announcements' coalesced publish settle before counting and measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    while report_rx.try_recv().is_ok() {}
    let services = admin
        .list_services(apb::ListRequest {})
        .await
        .expect("list")
        .into_inner()
        .services;
    let endpoints: u32 = services.iter().map(|s| s.endpoint_count).sum();
    println!(
        "{PROXIES} streams connected and synced in {:?}; {endpoints} endpoints in {} services",
        t.elapsed(),
        services.len()
    );
    let rss_idle = rss_kb(pid, "VmRSS:");

    let mut per_subscriber = Vec::new();
    let mut all = Vec::new();
    let mut stored = Vec::new();
    let mut fanout = Vec::new();
    for k in 0..CHANGES {
        let weight = k + 2;
        let t0 = Instant::now();
        register(&mut admin, HOT, HOT_ADDR, weight).await;
        let t_stored = Instant::now();
        stored.push(t_stored.duration_since(t0));
        let times = collect(&mut report_rx, weight, PROXIES).await;
        let lat: Vec<Duration> = times.iter().map(|t| t.duration_since(t0)).collect();
        all.push(*lat.iter().max().expect("non-empty"));
        let last = times.iter().max().expect("non-empty");
        fanout.push(last.saturating_duration_since(t_stored));
        per_subscriber.extend(lat);
    }
    per_subscriber.sort();
    all.sort();
    stored.sort();
    fanout.sort();
    println!(
        "admin call (validate + fsync'd store write): p50 {:?}  p99 {:?}",
        pct(&stored, 0.50),
        pct(&stored, 0.99)
    );
    let rss = rss_kb(pid, "VmRSS:");
    let hwm = rss_kb(pid, "VmHWM:");
    println!("changes: {CHANGES}, subscribers per change: {PROXIES}");
    println!(
        "change -> one subscriber:  p50 {:?}  p99 {:?}",
        pct(&per_subscriber, 0.50),
        pct(&per_subscriber, 0.99)
    );
    println!(
        "change -> all subscribers: p50 {:?}  p99 {:?}  max {:?}",
        pct(&all, 0.50),
        pct(&all, 0.99),
        all[all.len() - 1]
    );
    println!(
        "write acknowledged -> all subscribers (publish + fan-out): p50 {:?}  p99 {:?}",
        pct(&fanout, 0.50),
        pct(&fanout, 0.99)
    );
    println!(
        "control-plane RSS: {} MiB after sync, {} MiB after changes, peak {} MiB",
        rss_idle / 1024,
        rss / 1024,
        hwm / 1024
    );
    let _ = child.start_kill();
}
