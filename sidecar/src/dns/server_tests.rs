//! Real UDP/TCP queries over loopback: mesh names answered locally, other names forwarded to
//! a test upstream on 127.0.0.1 (never a real resolver), garbage survived, dead upstreams.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::AsyncReadExt;

use super::*;
use crate::dns::message::{Response, TYPE_A, TYPE_AAAA, build_query, parse_response};

const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(240, 240, 0, 7));
/// What the test upstream answers for every name (TEST-NET-1, never routed).
const UPSTREAM_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
/// Bounds every wait: only a hang reaches it.
const WAIT: Duration = Duration::from_secs(10);

fn names() -> MeshNames {
    MeshNames {
        namespace: "shop".into(),
        trust_domain: "mesh.local".into(),
    }
}

fn lookup(service: &str, namespace: &str) -> Option<IpAddr> {
    (service == "api" && namespace == "shop").then_some(VIP)
}

/// A test resolver on 127.0.0.1 (UDP and TCP, same port) answering every A query with
/// `UPSTREAM_IP`, counting the queries it saw.
async fn upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let (udp, tcp) = bind_pair("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = udp.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let answer = |msg: &[u8]| {
        let q = message::parse_query(msg).unwrap();
        message::answer(msg, &q, Some(UPSTREAM_IP), 60)
    };
    let count = seen.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((len, from)) = udp.recv_from(&mut buf).await {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = udp.send_to(&answer(&buf[..len]), from).await;
        }
    });
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = tcp.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let len = s.read_u16().await.unwrap();
            let mut msg = vec![0u8; usize::from(len)];
            s.read_exact(&mut msg).await.unwrap();
            write_framed(&mut s, &answer(&msg)).await.unwrap();
        }
    });
    (addr, seen)
}

async fn server(upstreams: Vec<SocketAddr>) -> SocketAddr {
    let mut cfg = DnsConfig::new(0, upstreams, names());
    // Short, so the dead-upstream test finishes quickly; only bounds a wait.
    cfg.forward_timeout = Duration::from_millis(300);
    let server = DnsServer::bind(cfg, Arc::new(lookup)).await.unwrap();
    let addr = server.local_addr();
    tokio::spawn(server.serve(std::future::pending()));
    addr
}

async fn udp_query(server: SocketAddr, msg: &[u8]) -> Response {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(msg, server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let len = timeout(WAIT, sock.recv(&mut buf)).await.unwrap().unwrap();
    parse_response(&buf[..len]).unwrap()
}

async fn tcp_query(stream: &mut TcpStream, msg: &[u8]) -> Response {
    write_framed(stream, msg).await.unwrap();
    let len = timeout(WAIT, stream.read_u16()).await.unwrap().unwrap();
    let mut resp = vec![0u8; usize::from(len)];
    timeout(WAIT, stream.read_exact(&mut resp))
        .await
        .unwrap()
        .unwrap();
    parse_response(&resp).unwrap()
}

#[tokio::test]
async fn mesh_names_are_answered_locally_over_udp() {
    let (up, seen) = upstream().await;
    let dns = server(vec![up]).await;
    for (id, name) in [(1, "api"), (2, "api.shop"), (3, "API.shop.svc.mesh.local.")] {
        let resp = udp_query(dns, &build_query(id, name, TYPE_A)).await;
        assert_eq!(
            resp,
            Response {
                id,
                rcode: 0,
                addrs: vec![VIP]
            },
            "{name}"
        );
    }
    // AAAA for an IPv4 VIP: answered locally with no records, not forwarded.
    let resp = udp_query(dns, &build_query(4, "api", TYPE_AAAA)).await;
    assert_eq!(
        resp,
        Response {
            id: 4,
            rcode: 0,
            addrs: vec![]
        }
    );
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "mesh names never reach the upstream"
    );
}

#[tokio::test]
async fn other_names_are_forwarded_over_udp() {
    let (up, seen) = upstream().await;
    let dns = server(vec![up]).await;
    for (id, name) in [(10, "www.example.org"), (11, "nosuch"), (12, "api.other")] {
        let resp = udp_query(dns, &build_query(id, name, TYPE_A)).await;
        assert_eq!(
            resp,
            Response {
                id,
                rcode: 0,
                addrs: vec![UPSTREAM_IP]
            },
            "{name}"
        );
    }
    assert_eq!(seen.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn tcp_answers_and_forwards_on_one_connection() {
    let (up, seen) = upstream().await;
    let dns = server(vec![up]).await;
    let mut stream = timeout(WAIT, TcpStream::connect(dns))
        .await
        .unwrap()
        .unwrap();
    let resp = tcp_query(&mut stream, &build_query(20, "api.shop", TYPE_A)).await;
    assert_eq!(resp.addrs, vec![VIP]);
    let resp = tcp_query(&mut stream, &build_query(21, "example.org", TYPE_A)).await;
    assert_eq!(
        resp,
        Response {
            id: 21,
            rcode: 0,
            addrs: vec![UPSTREAM_IP]
        }
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn garbage_is_survived_and_malformed_questions_get_formerr() {
    let (up, _) = upstream().await;
    let dns = server(vec![up]).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for junk in [&b""[..], b"\x00", &[0xff; 300]] {
        sock.send_to(junk, dns).await.unwrap();
    }
    let mut bad = build_query(30, "api", TYPE_A);
    bad[12] = 0xc0; // a pointer where the name starts: malformed
    assert_eq!(udp_query(dns, &bad).await.rcode, message::RCODE_FORMERR);
    assert_eq!(
        udp_query(dns, &build_query(31, "api", TYPE_A)).await.addrs,
        vec![VIP]
    );
}

#[tokio::test]
async fn ipv6_loopback_is_served_on_the_same_port() {
    let (up, _) = upstream().await;
    let dns = server(vec![up]).await;
    let v6 = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), dns.port());
    let sock = match UdpSocket::bind("[::1]:0").await {
        Ok(sock) => sock,
        Err(e) => return eprintln!("SKIPPED: no IPv6 loopback here: {e}"),
    };
    sock.send_to(&build_query(50, "api", TYPE_A), v6)
        .await
        .unwrap();
    let mut buf = vec![0u8; 512];
    let len = timeout(WAIT, sock.recv(&mut buf)).await.unwrap().unwrap();
    assert_eq!(parse_response(&buf[..len]).unwrap().addrs, vec![VIP]);
}

#[tokio::test]
async fn dead_upstreams_give_servfail() {
    // Bound but never read: queries to it are never answered.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dns = server(vec![silent.local_addr().unwrap()]).await;
    let resp = udp_query(dns, &build_query(40, "example.org", TYPE_A)).await;
    assert_eq!(
        resp,
        Response {
            id: 40,
            rcode: message::RCODE_SERVFAIL,
            addrs: vec![]
        }
    );
    // No upstream at all: SERVFAIL too, and mesh names still work.
    let dns = server(vec![]).await;
    assert_eq!(
        udp_query(dns, &build_query(41, "x.y", TYPE_A)).await.rcode,
        2
    );
    assert_eq!(
        udp_query(dns, &build_query(42, "api", TYPE_A)).await.addrs,
        vec![VIP]
    );
}

/// A lookup that learns `late` only when asked to fetch it (an on-demand subscription).
struct OnDemand {
    fetched: Arc<std::sync::atomic::AtomicBool>,
    fetches: Arc<AtomicUsize>,
}

impl VipLookup for OnDemand {
    fn vip(&self, service: &str, _namespace: &str) -> Option<IpAddr> {
        (service == "late" && self.fetched.load(Ordering::SeqCst)).then_some(VIP)
    }

    fn fetch(&self, service: &str, _namespace: &str) -> crate::dns::Fetch {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let (fetched, found) = (self.fetched.clone(), service == "late");
        Box::pin(async move { fetched.store(found, Ordering::SeqCst) })
    }
}

#[tokio::test]
async fn unknown_mesh_names_are_fetched_once_then_answered_or_forwarded() {
    let (up, seen) = upstream().await;
    let fetches = Arc::new(AtomicUsize::new(0));
    let lookup = OnDemand {
        fetched: Default::default(),
        fetches: fetches.clone(),
    };
    let server = DnsServer::bind(DnsConfig::new(0, vec![up], names()), Arc::new(lookup));
    let server = server.await.unwrap();
    let dns = server.local_addr();
    tokio::spawn(server.serve(std::future::pending()));

    let resp = udp_query(dns, &build_query(60, "late", TYPE_A)).await;
    assert_eq!(
        resp,
        Response {
            id: 60,
            rcode: 0,
            addrs: vec![VIP]
        }
    );
    assert_eq!(seen.load(Ordering::SeqCst), 0, "fetched, not forwarded");
    // Shaped like a mesh name but not one: fetched, still unknown, so forwarded.
    let resp = udp_query(dns, &build_query(61, "www.example", TYPE_A)).await;
    assert_eq!(resp.addrs, vec![UPSTREAM_IP]);
    // Not shaped like a mesh name at all: forwarded without a fetch.
    let resp = udp_query(dns, &build_query(62, "a.b.c", TYPE_A)).await;
    assert_eq!(resp.addrs, vec![UPSTREAM_IP]);
    assert_eq!(
        (fetches.load(Ordering::SeqCst), seen.load(Ordering::SeqCst)),
        (2, 2)
    );
}
