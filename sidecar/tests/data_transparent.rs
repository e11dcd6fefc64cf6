//! Transparent outbound: iptables REDIRECT + `SO_ORIGINAL_DST` inside a private network
//! namespace (the test re-runs itself under `unshare -n`; skipped with a reason where that is
//! not permitted). Traffic stays inside the namespace, on its loopback.

mod data_support;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use data_support::apps::{http_app, server_first, tcp_echo};
use data_support::*;
use http_body_util::Full;
use mesh_proto::types::v1 as pb;
use mesh_sidecar::state::{Cluster, Listener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const INNER_ENV: &str = "MESH_TEST_INSIDE_NETNS";

#[test]
fn transparent_mode_via_original_dst() {
    if std::env::var_os(INNER_ENV).is_some() {
        return;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new("unshare")
        .arg("-n")
        .arg("--")
        .arg(&exe)
        .args([
            "--exact",
            "transparent_inner",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INNER_ENV, "1")
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            skipped(&format!("cannot run unshare ({e})"));
            return;
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if stderr.contains("unshare failed") || stderr.contains("Operation not permitted") {
        skipped(&format!("no permission for a network namespace: {stderr}"));
        return;
    }
    if stdout.contains("SKIP:") {
        skipped(&stdout);
        return;
    }
    assert!(
        out.status.success(),
        "inner test failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "inner test did not run:\n{stdout}"
    );
}

fn sh(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

fn redirect(vip: &str, port: u16, to: u16) -> bool {
    let (port, to) = (port.to_string(), to.to_string());
    sh(
        "iptables",
        &[
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            vip,
            "--dport",
            &port,
            "-j",
            "REDIRECT",
            "--to-ports",
            &to,
        ],
    )
}

/// The half of `transparent_mode_via_original_dst` that runs inside its network namespace; run
/// directly (no `MESH_TEST_INSIDE_NETNS`), it has nothing to do: the outer test re-runs it.
#[tokio::test]
async fn transparent_inner() {
    if std::env::var_os(INNER_ENV).is_none() {
        return;
    }
    // The namespace's own loopback carries the VIPs.
    if !(sh("ip", &["link", "set", "lo", "up"])
        && sh("ip", &["addr", "add", "10.96.0.0/24", "dev", "lo"]))
    {
        println!("SKIP: cannot configure loopback in the namespace");
        return;
    }
    let mut mesh = Mesh::new().await;
    let (app, _) = http_app("web", Duration::ZERO).await;
    let echo = tcp_echo().await;
    let smtp = server_first().await;
    let web = mesh.pod(app, "v1").await;
    let echo_pod = mesh.pod(echo, "v1").await;
    let smtp_pod = mesh.pod(smtp, "v1").await;
    // Declared TCP by their clusters, on no opaque or server-first port of the listener.
    let greeter = mesh.pod(server_first().await, "v1").await;
    let raw = mesh.pod(tcp_echo().await, "v1").await;
    for (name, vip, port, pod, protocol) in [
        ("web", [10, 96, 0, 1], 80, &web, pb::Protocol::Unspecified),
        (
            "echo",
            [10, 96, 0, 2],
            81,
            &echo_pod,
            pb::Protocol::Unspecified,
        ),
        (
            "smtp",
            [10, 96, 0, 3],
            25,
            &smtp_pod,
            pb::Protocol::Unspecified,
        ),
        ("greeter", [10, 96, 0, 4], 2525, &greeter, pb::Protocol::Tcp),
        ("raw", [10, 96, 0, 5], 8080, &raw, pb::Protocol::Tcp),
    ] {
        let mut c = Cluster::try_from(&pb::Cluster {
            name: name.into(),
            protocol: protocol as i32,
            ..Default::default()
        })
        .unwrap();
        c.vip = Some(vip.into());
        c.ports = vec![port];
        mesh.set_cluster(c);
        mesh.set_endpoints(name, &[pod]);
    }
    // Port 25 speaks first; detection would otherwise wait a minute.
    mesh.state.update(|s| {
        s.listener = Some(Arc::new(Listener {
            name: "client".into(),
            app_ports: vec![],
            opaque_ports: vec![],
            server_first_ports: vec![25],
            detect_timeout: Some(Duration::from_secs(60)),
            tls_mode: Default::default(),
            max_connections: None,
        }))
    });
    let to = mesh.outbound.port();
    if !(redirect("10.96.0.1", 80, to)
        && redirect("10.96.0.2", 81, to)
        && redirect("10.96.0.3", 25, to)
        && redirect("10.96.0.4", 2525, to)
        && redirect("10.96.0.5", 8080, to))
    {
        println!("SKIP: iptables REDIRECT unavailable");
        return;
    }

    // HTTP to the VIP, with an IP-literal Host: the original destination names the service.
    let mut tx = h1_conn("10.96.0.1:80".parse().unwrap()).await;
    let got = send_h1(
        &mut tx,
        get("10.96.0.1", "/vip").body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.body, "web GET /vip HTTP/1.1");

    // Opaque TCP to a VIP: detected as opaque, proxied with the preamble to the peer.
    let mut s = within(TcpStream::connect("10.96.0.2:81")).await.unwrap();
    s.write_all(b"\x00\x01binary").await.unwrap();
    let mut buf = [0u8; 8];
    within(s.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"\x00\x01binary");

    // Server-first port: the greeting arrives although the client sends nothing.
    let mut s = within(TcpStream::connect("10.96.0.3:25")).await.unwrap();
    let mut greeting = [0u8; 11];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut greeting))
        .await
        .expect("greeting must not wait for detection")
        .unwrap();
    assert_eq!(&greeting, b"220 hello\r\n");

    // A cluster declaring TCP: its VIP is never sniffed. A server-first greeting arrives
    // without the listener naming the port (detection would wait its 60 s)...
    let mut s = within(TcpStream::connect("10.96.0.4:2525")).await.unwrap();
    let mut greeting = [0u8; 11];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut greeting))
        .await
        .expect("a TCP cluster's greeting must not wait for detection")
        .unwrap();
    assert_eq!(&greeting, b"220 hello\r\n");
    // ...and bytes that look like HTTP travel as bytes, echoed back unchanged (detected as
    // HTTP they would become a request, and the echo no valid response).
    let head = b"GET /not-parsed HTTP/1.1\r\nHost: raw\r\n\r\n";
    let mut s = within(TcpStream::connect("10.96.0.5:8080")).await.unwrap();
    s.write_all(head).await.unwrap();
    let mut back = vec![0u8; head.len()];
    within(s.read_exact(&mut back)).await.unwrap();
    assert_eq!(back, head);
}

/// Reports a skip, or fails when the project's test command requires namespace tests to run
/// (`MESH_REQUIRE_NETNS`): CI must not pass by skipping them.
fn skipped(why: &str) {
    assert!(
        std::env::var_os("MESH_REQUIRE_NETNS").is_none(),
        "MESH_REQUIRE_NETNS is set but the namespace test cannot run: {why}"
    );
    eprintln!("skipped: {why}");
}
