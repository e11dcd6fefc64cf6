//! Full mTLS handshakes per second over loopback, through `MeshAcceptor`/`MeshConnector`, on one core.
//!
//! Run: `cargo bench -p mesh-sidecar --bench handshake` (release profile). Prints, from the
//! same run: plaintext TCP connects/s as a baseline, mTLS handshakes/s with both ends on one
//! thread, and with the server alone on one thread (what one inbound core sustains).
//! Each figure is given per wall-clock second and per CPU-second of the measured thread(s):
//! on a shared machine the CPU-second figure is the one that means "per core".

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_control_plane::ca::{CaConfig, CertificateAuthority, MemoryCaStorage, SpiffeId as CaId};
use mesh_sidecar::identity::{CertStore, SpiffeId, WorkloadKey};
use mesh_sidecar::tls::{Alpn, InboundMode, MeshAcceptor, MeshConnector, TrustBundle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Enough handshakes for a stable rate (a few seconds each), few enough to stay quick.
const HANDSHAKES: usize = 3000;
/// Plaintext connects are ~20x cheaper; more of them keep the 10 ms CPU-clock resolution
/// under 2 % of the measurement, while staying well inside the ephemeral port range.
const PLAIN_CONNECTS: usize = 10_000;
/// Warm-up connections, not counted (page faults, allocator, lazily built tables).
const WARMUP: usize = 200;
/// Concurrent client connections: keeps the server busy while a client waits on the network.
const CONCURRENCY: usize = 16;

fn main() {
    let (server, client) = workloads();
    let rt = current_thread();
    let (plain, plain_cpu) = rt.block_on(async {
        let addr = listen(None).await;
        run(addr, None, WARMUP).await;
        let cpu = cpu_seconds(SELF);
        let rate = run(addr, None, PLAIN_CONNECTS).await;
        (rate, PLAIN_CONNECTS as f64 / (cpu_seconds(SELF) - cpu))
    });
    println!(
        "plaintext TCP connect + 1 byte, both ends on one thread: {plain:>7.0} /s wall, {plain_cpu:>7.0} /CPU-s (baseline)"
    );
    let (both, both_cpu) = rt.block_on(async {
        let addr = listen(Some(server.clone())).await;
        run(addr, Some(client.clone()), WARMUP).await;
        let cpu = cpu_seconds(SELF);
        let rate = run(addr, Some(client.clone()), HANDSHAKES).await;
        (rate, HANDSHAKES as f64 / (cpu_seconds(SELF) - cpu))
    });
    println!(
        "mTLS 1.3 full handshakes, both ends on one thread:      {both:>7.0} /s wall, {both_cpu:>7.0} /CPU-s"
    );

    // Server on its own single-threaded runtime (one core), clients on another thread.
    let (tx, rx) = std::sync::mpsc::channel();
    let srv = server.clone();
    std::thread::spawn(move || {
        current_thread().block_on(async move {
            tx.send(listen(Some(srv)).await).unwrap();
            std::future::pending::<()>().await
        })
    });
    let addr = rx.recv().unwrap();
    let (split, server_cpu) = rt.block_on(async {
        run(addr, Some(client.clone()), WARMUP).await;
        let (all, me) = (cpu_seconds(SELF), cpu_seconds(THREAD));
        let rate = run(addr, Some(client), HANDSHAKES).await;
        // Server thread CPU = whole process minus this (client) thread.
        let server = (cpu_seconds(SELF) - all) - (cpu_seconds(THREAD) - me);
        (rate, HANDSHAKES as f64 / server)
    });
    println!(
        "mTLS 1.3 full handshakes, server alone on one thread:   {split:>7.0} /s wall, {server_cpu:>7.0} /CPU-s of the server thread"
    );
    println!(
        "TLS cost vs plaintext (both ends, per CPU-s): {:.1}x",
        plain_cpu / both_cpu
    );
}

const SELF: &str = "/proc/self/stat";
const THREAD: &str = "/proc/thread-self/stat";

/// User + system CPU time from a `/proc/.../stat` file (fields 14 and 15, in clock ticks of
/// 1/100 s, the Linux USER_HZ): 10 ms resolution, under 1 % of a multi-second run.
fn cpu_seconds(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap();
    // The command name (field 2) may contain spaces; the fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Two workloads with certificates from a real CA (ECDSA P-256 everywhere).
fn workloads() -> (Arc<CertStore>, Arc<CertStore>) {
    let ca = CertificateAuthority::load_or_create(
        CaConfig::default(),
        Arc::new(MemoryCaStorage::default()),
    )
    .unwrap();
    let bundle = ca.trust_bundle();
    let make = |sa: &str| {
        let id = SpiffeId::parse(&format!("spiffe://cluster.local/ns/bench/sa/{sa}")).unwrap();
        let ca_id = CaId::parse(id.as_str()).unwrap();
        let key = WorkloadKey::generate().unwrap();
        let issued = ca
            .certify(&ca_id, id.as_str(), &key.csr_der(&id).unwrap(), None)
            .unwrap();
        let store = CertStore::new(id.clone(), TrustBundle::from_pem(&bundle).unwrap());
        store.set_credentials(
            key.credentials(&id, &issued.leaf_pem, &issued.chain_pem)
                .unwrap(),
        );
        store
    };
    (make("server"), make("client"))
}

/// Accepts forever; answers each connection with one byte once the handshake is done.
async fn listen(tls: Option<Arc<CertStore>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tls.map(MeshAcceptor::new);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match acceptor {
                    Some(a) => {
                        if let Ok((mut s, _peer)) = a.accept(tcp, InboundMode::Strict).await {
                            let _ = s.write_all(b"k").await;
                            let _ = s.shutdown().await;
                        }
                    }
                    None => {
                        let mut tcp = tcp;
                        let _ = tcp.write_all(b"k").await;
                    }
                }
            });
        }
    });
    addr
}

/// Opens `n` connections, `CONCURRENCY` at a time; returns connections per second.
async fn run(addr: SocketAddr, tls: Option<Arc<CertStore>>, n: usize) -> f64 {
    let expected = SpiffeId::parse("spiffe://cluster.local/ns/bench/sa/server").unwrap();
    let connector = tls.map(MeshConnector::new);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..CONCURRENCY {
        let connector = connector.clone();
        let expected = expected.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = worker;
            while i < n {
                let mut b = [0u8; 1];
                match &connector {
                    Some(c) => {
                        let mut s = c.connect(addr, &expected, Alpn::H2).await.unwrap();
                        s.read_exact(&mut b).await.unwrap();
                    }
                    None => {
                        let mut s = TcpStream::connect(addr).await.unwrap();
                        s.read_exact(&mut b).await.unwrap();
                    }
                }
                i += CONCURRENCY;
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(300), t)
            .await
            .unwrap()
            .unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}
