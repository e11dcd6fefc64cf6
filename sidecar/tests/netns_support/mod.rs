//! Child processes for the netns tests: the test binary re-executed inside a namespace (see
//! `mesh_tests::netns::self_command`) runs one of these roles: `init`, a toy `app`, a
//! redirect-aware `forwarder` standing in for the sidecar's listeners, or the `dns` server.

// Each test crate includes this module and uses only some of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use mesh_sidecar::dns::{DnsConfig, DnsServer, MeshNames};
use mesh_sidecar::init::{InitArgs, run_init};
use mesh_sidecar::orig_dst::original_dst;
use mesh_tests::netns;

/// The test every netns test file defines to call `run_child_role`.
pub const CHILD_TEST: &str = "child_process_entry";
/// Separates init arguments in the child's environment (never part of a flag).
const SEP: char = '\u{1f}';
pub const APP_PORT: u16 = 8080;
pub const BODY: &str = "hello from B\n";
/// Connections a forwarder or the app serves before exiting: a bound, tests make a handful.
const MAX_CONNS: usize = 16;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    init: InitArgs,
}

/// Runs the role this process was started with, if any (a no-op in a normal test run).
pub fn run_child_role() {
    match netns::child_role().as_deref() {
        Some("init") => init(),
        Some("app") => app(),
        Some("forwarder") => forwarder(),
        Some("dns") => dns(),
        _ => {}
    }
}

/// `mesh-sidecar init` with `MESH_INIT_ARGS`, exactly as main would run it; prints the outcome
/// and exits non-zero on error.
fn init() {
    let args = std::env::var("MESH_INIT_ARGS").unwrap_or_default();
    let argv = std::iter::once("init").chain(args.split(SEP).filter(|a| !a.is_empty()));
    let cli = Cli::try_parse_from(argv).expect("init arguments");
    match run_init(cli.init) {
        Ok(outcome) => println!("INIT-OK {outcome:?}"),
        Err(e) => {
            println!("INIT-ERR {e}");
            std::process::exit(1);
        }
    }
}

/// A workload: on each port of `APP_PORTS` (default `APP_PORT`) answers every HTTP request
/// with `BODY` (any other first line is echoed back) and reports the request and who called.
fn app() {
    let ports = std::env::var("APP_PORTS").unwrap_or_else(|_| APP_PORT.to_string());
    let listeners: Vec<TcpListener> = ports
        .split(',')
        // [::] is dual-stack: IPv4 and IPv6 clients alike.
        .map(|p| TcpListener::bind(("::", p.parse().unwrap())).unwrap())
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
            .map(|p| p.ip().to_canonical().to_string())
            .unwrap_or_default();
        let mut head = BufReader::new(conn.try_clone().unwrap());
        let mut request_line = String::new();
        let _ = head.read_line(&mut request_line);
        if !request_line.contains(" HTTP/") {
            // Not HTTP: a line-echo server, for opaque TCP.
            println!("TCP {} FROM {peer}", request_line.trim());
            let _ = conn.write_all(format!("echo: {request_line}").as_bytes());
            continue;
        }
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
    let listeners: Vec<TcpListener> = listen
        .split(',')
        .map(|addr| TcpListener::bind(addr).unwrap())
        .collect();
    println!("READY");
    let loops: Vec<_> = listeners
        .into_iter()
        .map(|l| std::thread::spawn(move || forward_loop(l, to_local)))
        .collect();
    for t in loops {
        let _ = t.join();
    }
}

fn forward_loop(listener: TcpListener, to_local: bool) {
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
        let target = match (to_local, orig.ip()) {
            (false, _) => orig,
            (true, IpAddr::V4(_)) => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), orig.port()),
            (true, IpAddr::V6(_)) => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), orig.port()),
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

pub fn dns_cmd(listen: &str, service: &str, ip: &str, upstream: Option<&str>) -> Command {
    let mut cmd = child("dns");
    cmd.env("DNS_LISTEN", listen)
        .env("DNS_SERVICE", service)
        .env("DNS_IP", ip);
    if let Some(upstream) = upstream {
        cmd.env("DNS_UPSTREAM", upstream);
    }
    cmd
}

pub fn child(role: &str) -> Command {
    netns::self_command(CHILD_TEST, role).unwrap()
}

pub fn init_cmd(args: &[&str]) -> Command {
    let mut cmd = child("init");
    cmd.env("MESH_INIT_ARGS", args.join(&SEP.to_string()));
    cmd
}

pub fn forwarder_cmd(listen: &str, to: &str) -> Command {
    let mut cmd = child("forwarder");
    cmd.env("FWD_LISTEN", listen).env("FWD_TO", to);
    cmd
}
