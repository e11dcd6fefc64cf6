//! Transparent interception end to end between two network namespaces: an unmodified curl in
//! A calls an HTTP server in B by its plain address (and by a mesh name through the captured
//! DNS); `init` rules in both send the connection through a redirect-aware forwarder on each
//! side, running as the proxy uid, which recovers the original destination and whose own
//! connections are not intercepted again.
//!
//! The forwarders stand in for the sidecar's outbound (:15001) and inbound (:15006) listeners;
//! `TestNet::mesh_host` is the same helper a full sidecar test uses with the real binary (where
//! the on-the-wire check flips to "no plaintext").

mod netns_support;

use std::net::SocketAddr;
use std::time::Duration;

use mesh_tests::netns::{
    self, A_ADDR, B_ADDR, B_ADDR6, Capture, PROXY_UID, Side, TestNet, VETH, capture,
};
use netns_support::{APP_PORT, BODY, child, dns_cmd, forwarder_cmd, init_cmd};

/// Bounds every wait on a child; only a hang reaches it.
const WAIT: Duration = Duration::from_secs(20);

/// Entry point of the re-executed test binary (a no-op in a normal run).
#[test]
fn child_process_entry() {
    netns_support::run_child_role();
}

fn curl(net: &TestNet, url: &str) -> String {
    // --max-time bounds a hang; -g: [v6] literals are not globs; --noproxy: an unmodified client that knows nothing of a proxy.
    let out = net
        .a
        .output(
            "curl",
            &["-sS", "-g", "--max-time", "10", "--noproxy", "*", url],
        )
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
        // Both loopbacks: the IPv6 rules redirect to [::1].
        &forwarder_cmd("127.0.0.1:15001,[::1]:15001", "orig"),
    );
    let outbound = outbound.unwrap();
    let inbound = net.mesh_host(
        Side::B,
        &child("init"),
        // Dual-stack: IPv4 clients arrive v4-mapped, original_dst unmaps them.
        &forwarder_cmd("[::]:15006", "local"),
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
    let v6 = SocketAddr::from((B_ADDR6, APP_PORT));
    assert_eq!(curl(&net, &format!("http://{v6}/by-v6")), BODY);

    // A name the mesh does not know: the sidecar's DNS forwards it from the proxy uid, so the
    // query reaches the resolver in B instead of being captured again.
    let resolved = net.a.run("getent", &["ahostsv4", "external.test"]).unwrap();
    assert!(resolved.starts_with("192.0.2.1 "), "{resolved}");

    let v4 = format!("orig={B_ADDR}:{APP_PORT} uid={PROXY_UID}");
    let want = [v4.clone(), v4, format!("orig={v6} uid={PROXY_UID}")];
    for (side, lines) in [("outbound", &outbound), ("inbound", &inbound)] {
        let seen: Vec<String> = want
            .iter()
            .map(|_| lines.expect("CONN", WAIT).unwrap())
            .collect();
        assert_eq!(seen, want, "{side}");
        // Exactly one connection per request: the forwarder's own upstream connection was not
        // redirected back to it (that would show here as another CONN, and loop).
        assert_eq!(lines.drain(), Vec::<String>::new(), "{side}");
    }
    // The app saw each request from loopback: it came through B's inbound forwarder.
    for (path, from) in [
        ("/by-address", "127.0.0.1"),
        ("/by-name", "127.0.0.1"),
        ("/by-v6", "::1"),
    ] {
        assert_eq!(
            app.expect("REQ", WAIT).unwrap(),
            format!("GET {path} HTTP/1.1 FROM {from}")
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
