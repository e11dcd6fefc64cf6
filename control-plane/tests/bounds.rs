//! What an unauthenticated client can hold on the control plane's ports, with hostile peers on
//! real sockets: 2,000 half-open connections on the discovery port do not stop a new
//! workload from getting its certificate; the metrics port survives slowloris clients.

mod common;

use std::time::Duration;

use common::*;
use mesh_proto::identity::v1::CertifyRequest;
use mesh_proto::identity::v1::identity_client::IdentityClient;
use rcgen::{CertificateParams, KeyPair, SanType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

/// Connections that open TCP and never start TLS (the figure).
const HALF_OPEN: usize = 2_000;
/// Clients trickling (or never sending) their request head on the metrics port.
const SLOW: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_do_not_stop_a_new_workload_from_joining() {
    let cp = start_with(|c| {
        c.discovery_tls = true;
        c.allow_anonymous_proxies = false;
    })
    .await;
    let addr = cp.handle.addrs.discovery;
    let mut idle = Vec::with_capacity(HALF_OPEN);
    for _ in 0..HALF_OPEN {
        idle.push(within("connect", TcpStream::connect(addr)).await.unwrap());
    }
    // A new workload: TLS to the control plane, a join token, a certificate.
    let (token, _) = cp
        .handle
        .core
        .create_token("default", "late", 0, &[], 0)
        .unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(bundle(cp.dir.path())))
        .domain_name("localhost");
    let channel = Channel::from_shared(cp.handle.discovery_url.clone())
        .unwrap()
        .tls_config(tls)
        .unwrap();
    let channel = within("connect over TLS", channel.connect()).await.unwrap();
    let identity = "spiffe://cluster.local/ns/default/sa/late";
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(identity.try_into().unwrap())];
    let resp = within(
        "certify",
        IdentityClient::new(channel).certify(CertifyRequest {
            token,
            identity: identity.into(),
            csr_der: params.serialize_request(&key).unwrap().der().to_vec(),
            requested_ttl_secs: 0,
        }),
    )
    .await
    .expect("certificate issued while 2,000 connections sit half-open");
    assert!(!resp.into_inner().leaf_pem.is_empty());
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_port_survives_slowloris() {
    let cp = start().await;
    let addr = cp.handle.addrs.http;
    let mut slow = Vec::with_capacity(SLOW);
    for i in 0..SLOW {
        let mut s = within("connect", TcpStream::connect(addr)).await.unwrap();
        if i % 2 == 0 {
            // Half trickle a request head and never finish it; half say nothing at all.
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: cp\r\n")
                .await
                .unwrap();
        }
        slow.push(s);
    }
    // Honest scrapes are answered meanwhile.
    let mut s = within("connect", TcpStream::connect(addr)).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: cp\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    within("read", s.read_to_string(&mut out)).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    // Every slow connection is closed by the server once the header deadline passes.
    let deadline = mesh_control_plane::http::HEADER_READ_TIMEOUT + Duration::from_secs(10);
    for (i, s) in slow.iter_mut().enumerate() {
        let mut buf = [0u8; 512];
        let closed = tokio::time::timeout(deadline, async {
            loop {
                match s.read(&mut buf).await {
                    // A 408 (or nothing) and then the end of the connection.
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "slow connection {i} still open");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vip_is_released_after_its_service_has_had_nothing_for_the_grace_period() {
    use mesh_control_plane::model::ServiceDecl;
    let cp = start_with(|c| c.vip_grace = Duration::from_millis(300)).await;
    let decl = |name: &str| ServiceDecl {
        service: name.into(),
        namespace: "default".into(),
        ports: vec![80],
        identities: Vec::new(),
    };
    let core = &cp.handle.core;
    let first = core.create_service(decl("brief")).unwrap().vip.unwrap();
    core.create_service(decl("kept")).unwrap();
    assert!(core.delete_service("brief").unwrap());
    let released = async {
        while core.vip_of("brief").is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    within("VIP released", released).await;
    assert!(
        core.vip_of("kept").is_some(),
        "a declared service keeps its VIP"
    );
    // The address is free again: the allocator may hand it out once its cursor comes round.
    let again = core.create_service(decl("brief")).unwrap().vip.unwrap();
    assert_ne!(again, first, "a fresh allocation, not the old binding");
}
