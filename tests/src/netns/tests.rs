//! Tests of the test hosts themselves: no leftovers, addresses only inside.

use std::sync::mpsc;

use super::*;

/// Namespaces and processes are gone after a test panics with a `TestNet` alive.
#[test]
fn teardown_leaves_nothing_even_on_panic() {
    if !can_run() {
        return;
    }
    let (tx, rx) = mpsc::channel();
    let result = std::panic::catch_unwind(move || {
        let mut net = TestNet::new().unwrap();
        let mut sleep = Command::new("sleep");
        // Far longer than the test: only the teardown can end it.
        sleep.arg("600");
        let lines = net.spawn(Side::A, &sleep).unwrap();
        let names = [net.a.name().to_string(), net.b.name().to_string()];
        tx.send((names, lines.pid)).unwrap();
        panic!("a failing test");
    });
    assert!(result.is_err());
    let (names, pid) = rx.recv().unwrap();
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    for name in names {
        assert!(!list.contains(&name), "{name} left behind: {list}");
    }
    assert!(
        !Path::new("/proc").join(pid.to_string()).exists(),
        "process {pid} left behind"
    );
}

#[test]
fn addresses_only_inside_the_namespaces() {
    if !can_run() {
        return;
    }
    let net = TestNet::new().unwrap();
    let host = Command::new("ip").args(["-o", "addr"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&host.stdout).contains("10.199.0."));
    let inside = net
        .a
        .run("ip", &["-o", "addr", "show", "dev", VETH])
        .unwrap();
    assert!(inside.contains(&format!("{A_ADDR}/30")), "{inside}");
    let routes = net.a.run("ip", &["route"]).unwrap();
    assert!(
        routes.contains(&format!("default via {B_ADDR}")),
        "{routes}"
    );
}
