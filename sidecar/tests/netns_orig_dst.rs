//! `original_dst` after a real iptables REDIRECT inside a network namespace: IPv4, IPv6, an
//! IPv4 client on a dual-stack listener, and a direct (not redirected) connection.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use mesh_sidecar::orig_dst::original_dst;
use mesh_tests::netns::{self, B_ADDR, B_ADDR6, Side, TestNet};

const CHILD_TEST: &str = "child_process_entry";

/// Inside the namespace: dial redirected addresses and report what the accepting side recovers.
#[test]
fn child_process_entry() {
    if netns::child_role().as_deref() != Some("origdst") {
        return;
    }
    let v4 = TcpListener::bind("127.0.0.1:18080").unwrap();
    let v6 = TcpListener::bind("[::1]:18080").unwrap();
    let dual = TcpListener::bind("[::]:18081").unwrap();
    let cases: [(&str, SocketAddr, &TcpListener); 4] = [
        ("ORIG4", (B_ADDR, 8080).into(), &v4),
        ("ORIG6", (B_ADDR6, 8080).into(), &v6),
        ("MAPPED", (B_ADDR, 8081).into(), &dual),
        ("DIRECT", "127.0.0.1:18080".parse().unwrap(), &v4),
    ];
    for (label, dial, listener) in cases {
        // 5 s only bounds a hang: the redirect is local, the connect is immediate.
        let _client = TcpStream::connect_timeout(&dial, Duration::from_secs(5)).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        match original_dst(&accepted) {
            Ok(addr) => println!("{label} {addr}"),
            Err(e) => println!("{label} error {:?}", e.kind()),
        }
    }
}

#[test]
fn original_destination_is_recovered_after_redirect() {
    if !netns::can_run() {
        return;
    }
    let mut net = TestNet::new().unwrap();
    for (tool, dst, port, to) in [
        ("iptables", B_ADDR.to_string(), "8080", "18080"),
        ("ip6tables", B_ADDR6.to_string(), "8080", "18080"),
        ("iptables", B_ADDR.to_string(), "8081", "18081"),
    ] {
        let rule = [
            "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", &dst, "--dport", port,
        ];
        let target = ["-j", "REDIRECT", "--to-ports", to];
        net.a.run(tool, &[&rule[..], &target[..]].concat()).unwrap();
    }
    let cmd = netns::self_command(CHILD_TEST, "origdst").unwrap();
    let lines = net.spawn(Side::A, &cmd).unwrap();
    let wait = Duration::from_secs(20);
    assert_eq!(lines.expect("ORIG4", wait).unwrap(), "10.199.0.2:8080");
    assert_eq!(lines.expect("ORIG6", wait).unwrap(), "[fd99:199::2]:8080");
    assert_eq!(lines.expect("MAPPED", wait).unwrap(), "10.199.0.2:8081");
    assert_eq!(lines.expect("DIRECT", wait).unwrap(), "error NotFound");
}
