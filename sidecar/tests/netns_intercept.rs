//! Transparent interception end to end between two network namespaces: an unmodified curl in
//! A calls an HTTP server in B by its plain address (and by a mesh name through the captured
//! DNS); `init` rules in both send the connection through a redirect-aware forwarder on each
//! side, running as the proxy uid, which recovers the original destination and whose own
//! connections are not intercepted again.
//!
//! The forwarders stand in for the sidecar's outbound (:15001) and inbound (:15006) listeners;
//! `TestNet::mesh_host` is the same helper a full sidecar test uses with the real binary (where
//! the on-the-wire check flips to "no plaintext").

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use mesh_sidecar::dns::{DnsConfig, DnsServer, MeshNames};
use mesh_sidecar::init::{InitArgs, run_init};
use mesh_sidecar::orig_dst::original_dst;
use mesh_tests::netns::{self, B_ADDR, Capture, PROXY_UID, Side, TestNet, VETH, capture};

const CHILD_TEST: &str = "child_process_entry";
const APP_PORT: u16 = 8080;
const BODY: &str = "hello from B\n";
/// Connections a forwarder or the app serves before exiting: a bound, the test makes two.
const MAX_CONNS: usize = 16;
/// Bounds every wait on a child; only a hang reaches it.
const WAIT: Duration = Duration::from_secs(20);

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    init: InitArgs,
}

/// Entry point of the re-executed test binary (a no-op in a normal run).
#[test]
fn child_process_entry() {
    match netns::child_role().as_deref() {
        Some("init") => {
            let cli = Cli::try_parse_from(["init"]).unwrap();
            run_init(cli.init).unwrap();
        }
        Some("app") => app(),
        Some("forwarder") => forwarder(),
        Some("dns") => dns(),
        _ => {}
    }
}

/// The workload in B: answers every request with `BODY` and reports who called.
fn app() {
    let listener = TcpListener::bind(("0.0.0.0", APP_PORT)).unwrap();
    println!("READY");
    for conn in listener.incoming().take(MAX_CONNS) {
        let Ok(mut conn) = conn else { continue };
        let peer = conn
            .peer_addr()
            .map(|p| p.ip().to_string())
            .unwrap_or_default();
        let mut head = BufReader::new(conn.try_clone().unwrap());
        let mut request_line = String::new();
        let _ = head.read_line(&mut request_line);
        let mut line = String::new();
        while head.read_line(&mut line).is_ok_and(|n| n > 2) {
            line.clear();
        }
        println!("REQ {} FROM {peer}", request_line.trim());
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
            BODY.len()
        );
        let _ = conn.write_all(resp.as_bytes());
    }
}

/// A redirect-aware TCP forwarder: `FWD_LISTEN` address; `FWD_TO=orig` dials the original
/// destination (outbound), `FWD_TO=local` dials 127.0.0.1:<original port> (inbound).
fn forwarder() {
    let listen = std::env::var("FWD_LISTEN").unwrap();
    let to_local = std::env::var("FWD_TO").unwrap() == "local";
    let listener = TcpListener::bind(&listen).unwrap();
    println!("READY");
    for conn in listener.incoming().take(MAX_CONNS) {
        let Ok(client) = conn else { continue };
        let uid = nix::unistd::geteuid();
        let orig = match original_dst(&client) {
            Ok(orig) => orig,
            Err(e) => {
                println!("CONN orig=none ({e}) uid={uid}");
                continue;
            }
        };
        println!("CONN orig={orig} uid={uid}");
        let target = if to_local {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), orig.port())
        } else {
            orig
        };
        std::thread::spawn(move || {
            let Ok(upstream) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
                return;
            };
            pipe(client, upstream);
        });
    }
}

fn pipe(a: TcpStream, b: TcpStream) {
    let (a2, b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let half = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        })
    };
    let t = half(a, b);
    let _ = half(b2, a2).join();
    let _ = t.join();
}

/// The sidecar's DNS server in A: `web` is a mesh service whose "VIP" is B's address.
fn dns() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let names = MeshNames {
            namespace: "default".into(),
            trust_domain: "mesh.local".into(),
        };
        let cfg = DnsConfig::new(mesh_sidecar::dns::DEFAULT_DNS_PORT, Vec::new(), names);
        let lookup = |svc: &str, _ns: &str| (svc == "web").then_some(IpAddr::V4(B_ADDR));
        let server = DnsServer::bind(cfg, Arc::new(lookup)).await.unwrap();
        println!("READY");
        server.serve(std::future::pending()).await;
    });
}

fn child(role: &str) -> Command {
    netns::self_command(CHILD_TEST, role).unwrap()
}

fn forwarder_cmd(listen: &str, to: &str) -> Command {
    let mut cmd = child("forwarder");
    cmd.env("FWD_LISTEN", listen).env("FWD_TO", to);
    cmd
}

fn curl(net: &TestNet, url: &str) -> String {
    // --max-time bounds a hang; --noproxy: an unmodified client that knows nothing of a proxy.
    let out = net
        .a
        .output("curl", &["-sS", "--max-time", "10", "--noproxy", "*", url])
        .unwrap();
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn curl_is_intercepted_on_both_sides_and_proxy_traffic_is_not() {
    if !netns::can_run() {
        return;
    }
    let mut net = TestNet::new().unwrap();
    let app = net.spawn(Side::B, &child("app")).unwrap();
    app.expect("READY", WAIT).unwrap();
    let outbound = net.mesh_host(
        Side::A,
        &child("init"),
        &forwarder_cmd("127.0.0.1:15001", "orig"),
    );
    let outbound = outbound.unwrap();
    let inbound = net.mesh_host(
        Side::B,
        &child("init"),
        &forwarder_cmd("0.0.0.0:15006", "local"),
    );
    let inbound = inbound.unwrap();
    let dns = net
        .spawn_as(Side::A, PROXY_UID, PROXY_UID, &child("dns"))
        .unwrap();
    for lines in [&outbound, &inbound, &dns] {
        lines.expect("READY", WAIT).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let capture = Capture::start(&net.a, VETH, dir.path(), 200).unwrap();

    // By plain address, then by mesh name (resolved by the captured DNS).
    assert_eq!(
        curl(&net, &format!("http://{B_ADDR}:{APP_PORT}/by-address")),
        BODY
    );
    assert_eq!(curl(&net, &format!("http://web:{APP_PORT}/by-name")), BODY);

    let want = format!("orig={B_ADDR}:{APP_PORT} uid={PROXY_UID}");
    for (side, lines) in [("outbound", &outbound), ("inbound", &inbound)] {
        for _ in 0..2 {
            assert_eq!(lines.expect("CONN", WAIT).unwrap(), want, "{side}");
        }
        // Exactly one connection per request: the forwarder's own upstream connection was not
        // redirected back to it (that would show here as another CONN, and loop).
        assert_eq!(lines.drain(), Vec::<String>::new(), "{side}");
    }
    for path in ["/by-address", "/by-name"] {
        // The app saw the request from loopback: it came through B's inbound forwarder.
        assert_eq!(
            app.expect("REQ", WAIT).unwrap(),
            format!("GET {path} HTTP/1.1 FROM 127.0.0.1")
        );
    }

    // The rules that did it, by their packet counters.
    let uid_rule = format!("-A MESH_OUTPUT -m owner --uid-owner {PROXY_UID} -j RETURN");
    for (side, rule) in [
        (Side::A, "-A MESH_OUTPUT -j MESH_REDIRECT"),
        (Side::A, uid_rule.as_str()),
        (Side::A, "-A MESH_DNS -p udp -j REDIRECT --to-ports 15053"),
        (Side::B, "-A MESH_INBOUND -p tcp -j MESH_IN_REDIRECT"),
        (Side::B, uid_rule.as_str()),
    ] {
        let packets = net.nat_packets(side, rule).unwrap();
        assert!(
            packets.is_some_and(|p| p > 0),
            "{side:?} `{rule}` matched nothing: {packets:?}"
        );
    }

    // These forwarders are plain TCP, so the request line is visible on the veth; with the real
    // sidecars (mTLS between them) the same capture must NOT contain it.
    let payloads = capture.finish().unwrap();
    assert!(
        capture::contains(&payloads, b"GET /by-address HTTP/1.1"),
        "capture saw the request"
    );
}

#[test]
fn capture_reader_handles_what_tcpdump_writes() {
    if !netns::can_run() {
        return;
    }
    let mut net = TestNet::new().unwrap();
    let app = net.spawn(Side::B, &child("app")).unwrap();
    app.expect("READY", WAIT).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let capture = Capture::start(&net.a, VETH, dir.path(), 50).unwrap();
    assert_eq!(
        curl(&net, &format!("http://{B_ADDR}:{APP_PORT}/plain")),
        BODY
    );
    let payloads = capture.finish().unwrap();
    assert!(capture::contains(&payloads, b"GET /plain HTTP/1.1"));
    assert!(capture::contains(&payloads, BODY.as_bytes()));
    assert!(!capture::contains(&payloads, b"GET /never-sent"));
}
