//! Registry unit tests: leases, reconnects within the grace period, static endpoints.

use std::collections::BTreeMap;

use super::*;
use crate::model::ProxyNode;

fn node(id: &str, service: &str, ip: [u8; 4]) -> ProxyNode {
    ProxyNode {
        id: id.into(),
        identity: None,
        service: service.into(),
        namespace: "prod".into(),
        service_account: "sa".into(),
        labels: BTreeMap::new(),
        proxy_version: "t".into(),
        address: std::net::IpAddr::from(ip),
        inbound_port: 15006,
        app_ports: vec![8080],
        zone: None,
    }
}

fn registry() -> Registry {
    Registry::new("240.240.0.0/16".parse().unwrap())
}

#[test]
fn lease_expires_only_without_renewal() {
    let mut r = registry();
    let n = node("p1", "web", [10, 0, 0, 1]);
    let key = r.announce(&n);
    assert!(r.is_known("web"));
    let generation = r.release(&key).unwrap();
    // Reconnect within the grace period: the old timer must not remove it.
    r.announce(&n);
    assert!(!r.expire(&key, generation));
    assert_eq!(r.endpoints("web").len(), 1);
    let generation = r.release(&key).unwrap();
    assert!(r.expire(&key, generation));
    assert!(!r.is_known("web"));
}

#[test]
fn two_streams_hold_one_endpoint() {
    let mut r = registry();
    let n = node("p1", "web", [10, 0, 0, 1]);
    let key = r.announce(&n);
    r.announce(&n);
    assert_eq!(r.release(&key), None);
    assert!(r.release(&key).is_some());
}

#[test]
fn view_merges_declaration_and_announcements() {
    let mut r = registry();
    r.declare(ServiceDecl {
        service: "web".into(),
        namespace: "shop".into(),
        ports: vec![80],
    });
    r.announce(&node("p1", "web", [10, 0, 0, 1]));
    let v = r.view("web").unwrap();
    assert_eq!(v.namespace, "shop");
    assert_eq!(v.ports, vec![80, 8080]);
    assert!(v.declared);
    assert_eq!(v.endpoint_count, 1);
    let (existed, statics) = r.undeclare("web");
    assert!(existed && statics.is_empty());
    assert!(r.is_known("web"));
}
