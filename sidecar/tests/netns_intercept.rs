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
use mesh_tests::netns::{self, A_ADDR, B_ADDR, Capture, PROXY_UID, Side, TestNet, VETH, capture};

const CHILD_TEST: &str = "child_process_entry";
/// Separates init arguments in the child's environment (never part of a flag).
const SEP: char = '\u{1f}';
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
            let args = std::env::var("MESH_INIT_ARGS").unwrap_or_default();
            let argv = std::iter::once("init").chain(args.split(SEP).filter(|a| !a.is_empty()));
            run_init(Cli::try_parse_from(argv).unwrap().init).unwrap();
        }
        Some("app") => app(),
        Some("forwarder") => forwarder(),
        Some("dns") => dns(),
        _ => {}
    }
}

/// A workload: on each port of `APP_PORTS` (default `APP_PORT`) answers every request with
/// `BODY` and reports the request and who called.
fn app() {
    let ports = std::env::var("APP_PORTS").unwrap_or_else(|_| APP_PORT.to_string());
    let listeners: Vec<TcpListener> = ports
        .split(',')
        .map(|p| TcpListener::bind(("0.0.0.0", p.parse().unwrap())).unwrap())
        .collect();
    println!("READY");
    let serving: Vec<_> = listeners
        .into_iter()
        .map(|l| std::thread::spawn(move || serve(l)))
        .collect();
    for t in serving {
        let _ = t.join();
    }
}

fn serve(listener: TcpListener) {
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
            match TcpStream::connect_timeout(&target, Duration::from_secs(5)) {
                Ok(upstream) => pipe(client, upstream),
                Err(e) => eprintln!("forwarder: connecting {target}: {e}"),
            }
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

/// A DNS server on `DNS_LISTEN` answering `DNS_SERVICE` (any namespace) with `DNS_IP` and
/// forwarding other names to `DNS_UPSTREAM` if set. In A it is the sidecar's (`web` is a mesh
/// service whose "VIP" is B's address); in B it plays the upstream resolver.
fn dns() {
    let var = |k: &str| std::env::var(k).unwrap();
    let listen: SocketAddr = var("DNS_LISTEN").parse().unwrap();
    let (service, ip): (String, IpAddr) = (var("DNS_SERVICE"), var("DNS_IP").parse().unwrap());
    let upstreams = std::env::var("DNS_UPSTREAM")
        .ok()
        .map(|u| u.parse().unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let names = MeshNames {
            namespace: "default".into(),
            trust_domain: "mesh.local".into(),
        };
        let mut cfg = DnsConfig::new(listen.port(), upstreams.into_iter().collect(), names);
        cfg.listen = listen;
        let lookup = move |svc: &str, _ns: &str| (svc == service).then_some(ip);
        let server = DnsServer::bind(cfg, Arc::new(lookup)).await.unwrap();
        println!("READY");
        server.serve(std::future::pending()).await;
    });
}

fn dns_cmd(listen: &str, service: &str, ip: &str, upstream: Option<&str>) -> Command {
    let mut cmd = child("dns");
    cmd.env("DNS_LISTEN", listen)
        .env("DNS_SERVICE", service)
        .env("DNS_IP", ip);
    if let Some(upstream) = upstream {
        cmd.env("DNS_UPSTREAM", upstream);
    }
    cmd
}

fn child(role: &str) -> Command {
    netns::self_command(CHILD_TEST, role).unwrap()
}

fn init_cmd(args: &[&str]) -> Command {
    let mut cmd = child("init");
    cmd.env("MESH_INIT_ARGS", args.join(&SEP.to_string()));
    cmd
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
    // The sidecar's DNS in A (as the proxy uid), forwarding non-mesh names to a resolver in B.
    let upstream = format!("{B_ADDR}:53");
    let dns_a = dns_cmd(
        "127.0.0.1:15053",
        "web",
        &B_ADDR.to_string(),
        Some(&upstream),
    );
    let dns = net.spawn_as(Side::A, PROXY_UID, PROXY_UID, &dns_a).unwrap();
    let resolver = net.spawn(
        Side::B,
        &dns_cmd("0.0.0.0:53", "external", "192.0.2.1", None),
    );
    let resolver = resolver.unwrap();
    for lines in [&outbound, &inbound, &dns, &resolver] {
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

    // A name the mesh does not know: the sidecar's DNS forwards it from the proxy uid, so the
    // query reaches the resolver in B instead of being captured again.
    let resolved = net.a.run("getent", &["ahostsv4", "external.test"]).unwrap();
    assert!(resolved.starts_with("192.0.2.1 "), "{resolved}");

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
        (Side::A, "-A MESH_DNS -m owner --uid-owner 1337 -j RETURN"),
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

#[test]
fn excluded_ports_bypass_and_own_address_is_intercepted() {
    if !netns::can_run() {
        return;
    }
    let mut net = TestNet::new().unwrap();
    let mut app_b = child("app");
    app_b.env("APP_PORTS", "8080,8081,8082");
    let mut app_a = child("app");
    app_a.env("APP_PORTS", "8090");
    for (side, cmd) in [(Side::B, &app_b), (Side::A, &app_a)] {
        net.spawn(side, cmd).unwrap().expect("READY", WAIT).unwrap();
    }
    let a_init = init_cmd(&["--exclude-outbound-ports=8081", "--no-dns"]);
    let outbound = net.mesh_host(Side::A, &a_init, &forwarder_cmd("127.0.0.1:15001", "orig"));
    let outbound = outbound.unwrap();
    let b_init = init_cmd(&["--exclude-inbound-ports=8082", "--no-dns"]);
    let inbound = net.mesh_host(Side::B, &b_init, &forwarder_cmd("0.0.0.0:15006", "local"));
    let inbound = inbound.unwrap();
    for lines in [&outbound, &inbound] {
        lines.expect("READY", WAIT).unwrap();
    }

    // 8081: outbound excluded in A, still intercepted inbound in B. 8082: the other way round.
    // 10.199.0.1 is A's own address (routed through `lo`): a service call like any other,
    // intercepted. 127.0.0.1 never is.
    for url in [
        format!("http://{B_ADDR}:8081/"),
        format!("http://{B_ADDR}:8082/"),
        format!("http://{A_ADDR}:8090/"),
        "http://127.0.0.1:8090/".to_string(),
        // Last, intercepted on both sides: it marks the end of each forwarder's sequence.
        format!("http://{B_ADDR}:8080/"),
    ] {
        assert_eq!(curl(&net, &url), BODY, "{url}");
    }
    // Lines arrive in order: a connection that should have bypassed a forwarder would show
    // up in its sequence before the final 8080 one.
    let seen = |lines: &netns::Lines, n: usize| -> Vec<String> {
        (0..n)
            .map(|_| lines.expect("CONN orig=", WAIT).unwrap())
            .collect()
    };
    let want = |addrs: &[String]| -> Vec<String> {
        addrs
            .iter()
            .map(|a| format!("{a} uid={PROXY_UID}"))
            .collect()
    };
    let (b, a) = (B_ADDR, A_ADDR);
    assert_eq!(
        seen(&outbound, 3),
        want(&[
            format!("{b}:8082"),
            format!("{a}:8090"),
            format!("{b}:8080")
        ])
    );
    assert_eq!(
        seen(&inbound, 2),
        want(&[format!("{b}:8081"), format!("{b}:8080")])
    );
}
