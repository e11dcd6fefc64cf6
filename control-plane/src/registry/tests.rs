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
    Registry::new("240.240.0.0/16".parse().unwrap(), "cluster.local")
}

#[test]
fn lease_expires_only_without_renewal() {
    let mut r = registry();
    let n = node("p1", "web", [10, 0, 0, 1]);
    let key = r.announce(&n).unwrap();
    assert!(r.is_known("web"));
    let generation = r.release(&key).unwrap();
    // Reconnect within the grace period: the old timer must not remove it.
    r.announce(&n).unwrap();
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
    let key = r.announce(&n).unwrap();
    r.announce(&n).unwrap();
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
        identities: Vec::new(),
    });
    r.announce(&node("p1", "web", [10, 0, 0, 1])).unwrap();
    let v = r.view("web").unwrap();
    assert_eq!(v.namespace, "shop");
    assert_eq!(v.ports, vec![80, 8080]);
    assert!(v.declared);
    assert_eq!(v.endpoint_count, 1);
    let (existed, statics) = r.undeclare("web");
    assert!(existed && statics.is_empty());
    assert!(r.is_known("web"));
}

#[test]
fn an_address_stays_with_its_identity() {
    let mut r = registry();
    let mut owner = node("p1", "api", [10, 0, 0, 1]);
    owner.identity = Some("spiffe://cluster.local/ns/default/sa/api".into());
    r.announce(&owner).unwrap();
    let mut thief = node("p2", "api", [10, 0, 0, 1]);
    thief.identity = Some("spiffe://cluster.local/ns/default/sa/web".into());
    let e = r.announce(&thief).unwrap_err();
    assert_eq!(e.owner, "spiffe://cluster.local/ns/default/sa/api");
    let stripper = node("p3", "api", [10, 0, 0, 1]);
    assert!(
        r.announce(&stripper).is_err(),
        "no identity may not strip one"
    );
    let eps = r.endpoints("api");
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].identity, owner.identity);
    // The same workload restarting (a new proxy id, same identity) keeps its address.
    let mut again = owner.clone();
    again.id = "p4".into();
    r.announce(&again).unwrap();
}

#[test]
fn default_binding_is_the_service_account_named_like_the_service() {
    let mut r = registry();
    assert_eq!(
        r.bound_identities("api"),
        vec!["spiffe://cluster.local/ns/default/sa/api".to_string()]
    );
    // `api` of namespace shop is the service `api.shop`.
    assert_eq!(
        r.bound_identities("api.shop"),
        vec!["spiffe://cluster.local/ns/shop/sa/api".to_string()]
    );
    r.declare(ServiceDecl {
        service: "api.shop".into(),
        namespace: "shop".into(),
        ports: vec![],
        identities: vec!["spiffe://cluster.local/ns/shop/sa/backend".into()],
    });
    assert_eq!(
        r.bound_identities("api.shop"),
        vec!["spiffe://cluster.local/ns/shop/sa/backend".to_string()]
    );
    assert_eq!(
        r.bound_identities("api"),
        vec!["spiffe://cluster.local/ns/default/sa/api".to_string()]
    );
}
