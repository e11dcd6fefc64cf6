//! Tests of proto → domain conversion: valid resources convert, bad fields are named.

use mesh_proto::types::v1 as pb;

use crate::state::*;

fn rule_to(service: &str) -> pb::RouteRule {
    pb::RouteRule {
        backends: vec![pb::WeightedBackend {
            service: service.into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn route_with_bad_regex_names_the_field() {
    let mut rule = rule_to("b");
    rule.matches.push(pb::RouteMatch {
        path: Some(pb::PathMatch {
            kind: pb::PathMatchKind::Regex as i32,
            value: "(".into(),
        }),
        ..Default::default()
    });
    let route = pb::Route {
        service: "a".into(),
        rules: vec![rule_to("b"), rule],
    };
    let err = Route::try_from(&route).unwrap_err();
    assert_eq!(err.field, "rules[1].matches[0].path.value");
}

#[test]
fn route_weights_default_to_even() {
    let mut rule = rule_to("b");
    rule.backends.push(pb::WeightedBackend {
        service: "c".into(),
        subset: "v2".into(),
        weight: 0,
    });
    let route = Route::try_from(&pb::Route {
        service: "a".into(),
        rules: vec![rule],
    })
    .unwrap();
    assert_eq!(route.rules[0].total_weight, 2);
    assert_eq!(route.rules[0].backends[1].subset.as_deref(), Some("v2"));
}

#[test]
fn rule_without_backend_or_redirect_is_rejected() {
    let err = Route::try_from(&pb::Route {
        service: "a".into(),
        rules: vec![pb::RouteRule::default()],
    })
    .unwrap_err();
    assert_eq!(err.field, "rules[0].backends");
}

#[test]
fn rule_aborting_every_request_needs_no_backend() {
    let fault = |permille| pb::Fault {
        abort_status: 503,
        abort_permille: permille,
        ..Default::default()
    };
    let route = |permille| pb::Route {
        service: "a".into(),
        rules: vec![pb::RouteRule {
            fault: Some(fault(permille)),
            ..Default::default()
        }],
    };
    let ok = Route::try_from(&route(1000)).unwrap();
    assert!(ok.rules[0].backends.is_empty());
    // A partial abort lets the rest through, so it still needs somewhere to send them.
    let err = Route::try_from(&route(500)).unwrap_err();
    assert_eq!(err.field, "rules[0].backends");
}

#[test]
fn bad_header_op_and_redirect_status_are_rejected() {
    let mut rule = rule_to("b");
    rule.request_headers.push(pb::HeaderOp {
        kind: pb::HeaderOpKind::Set as i32,
        name: "bad header".into(),
        value: "v".into(),
    });
    let err = RouteRule::try_from(&rule).unwrap_err();
    assert_eq!(err.field, "request_headers[0].name");

    let mut rule = rule_to("b");
    rule.redirect = Some(pb::Redirect {
        status: 200,
        ..Default::default()
    });
    assert_eq!(
        RouteRule::try_from(&rule).unwrap_err().field,
        "redirect.status"
    );
}

#[test]
fn endpoint_address_must_parse() {
    let eps = pb::Endpoints {
        service: "a".into(),
        endpoints: vec![
            pb::Endpoint {
                address: "127.0.0.1:1".into(),
                ..Default::default()
            },
            pb::Endpoint {
                address: "nope".into(),
                ..Default::default()
            },
        ],
    };
    assert_eq!(
        Endpoints::try_from(&eps).unwrap_err().field,
        "endpoints[1].address"
    );
}

#[test]
fn endpoint_converts_labels_weight_state() {
    let ep = Endpoint::try_from(&pb::Endpoint {
        address: "10.0.0.1:15006".into(),
        labels: [
            ("version".to_string(), "v2".to_string()),
            ("a".into(), "b".into()),
        ]
        .into_iter()
        .collect(),
        state: pb::EndpointState::Draining as i32,
        app_port: 8080,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(ep.weight, 1);
    assert_eq!(ep.label("version").map(|v| &**v), Some("v2"));
    assert_eq!(ep.state, EndpointState::Draining);
    assert!(!ep.is_meshed());
}

#[test]
fn cluster_vip_and_ports_validated() {
    let mut c = pb::Cluster {
        name: "a".into(),
        vip: "10.96.0.1".into(),
        ports: vec![80],
        ..Default::default()
    };
    let ok = Cluster::try_from(&c).unwrap();
    assert_eq!(ok.lb, LbPolicy::P2cEwma);
    c.ports.push(70000);
    assert_eq!(Cluster::try_from(&c).unwrap_err().field, "ports[1]");
    c.ports.pop();
    c.vip = "x".into();
    assert_eq!(Cluster::try_from(&c).unwrap_err().field, "vip");
}

#[test]
fn authz_wildcards() {
    let p = AuthorizationPolicy::try_from(&pb::AuthorizationPolicy {
        service: "a".into(),
        default_action: pb::AuthzAction::Deny as i32,
        allow: vec![pb::AuthzRule {
            sources: vec!["spiffe://td/ns/x/*".into(), "*".into()],
            ..Default::default()
        }],
    })
    .unwrap();
    assert!(p.allow[0].sources[0].matches("spiffe://td/ns/x/sa/y"));
    assert!(!p.allow[0].sources[0].matches("spiffe://td/ns/z/sa/y"));
    assert_eq!(p.allow[0].sources[1], SourceMatch::Any);
}

#[test]
fn runtime_ratio_bounds() {
    let r = pb::Runtime {
        trace_sampling_ratio: 1.5,
        ..Default::default()
    };
    assert_eq!(
        Runtime::try_from(&r).unwrap_err().field,
        "trace_sampling_ratio"
    );
}

#[test]
fn cluster_fields_nothing_enforces_are_refused() {
    let base = || pb::Cluster {
        name: "a".into(),
        ..Default::default()
    };
    let outlier = |o: pb::OutlierDetection| pb::Cluster {
        outlier_detection: Some(o),
        ..base()
    };
    let refused = [
        (
            outlier(pb::OutlierDetection {
                failure_percentage: 50,
                ..Default::default()
            }),
            "outlier_detection.failure_percentage",
        ),
        (
            outlier(pb::OutlierDetection {
                failure_percentage_min_requests: 20,
                ..Default::default()
            }),
            "outlier_detection.failure_percentage_min_requests",
        ),
        (
            outlier(pb::OutlierDetection {
                interval_ms: 10_000,
                ..Default::default()
            }),
            "outlier_detection.interval_ms",
        ),
        (
            pb::Cluster {
                circuit_breakers: Some(pb::CircuitBreakers {
                    max_connections: 4,
                    ..Default::default()
                }),
                ..base()
            },
            "circuit_breakers.max_connections",
        ),
    ];
    for (c, field) in refused {
        let err = Cluster::try_from(&c).unwrap_err();
        assert_eq!(err.field, field);
        assert!(err.reason.starts_with("not supported"), "{err}");
    }

    // What the data path enforces converts; unset falls back to the proxy's defaults.
    let c = Cluster::try_from(&pb::Cluster {
        connect_timeout_ms: 200,
        idle_timeout_ms: 5_000,
        protocol: pb::Protocol::Tcp as i32,
        circuit_breakers: Some(pb::CircuitBreakers {
            max_pending_requests: 8,
            ..Default::default()
        }),
        ..base()
    })
    .unwrap();
    assert_eq!(
        c.connect_timeout,
        Some(std::time::Duration::from_millis(200))
    );
    assert_eq!(c.idle_timeout, std::time::Duration::from_secs(5));
    assert_eq!(c.protocol, Protocol::Tcp);
    assert_eq!(c.circuit_breakers.max_pending_requests, Some(8));
    let d = Cluster::try_from(&base()).unwrap();
    assert_eq!(d.connect_timeout, None);
    assert_eq!(d.idle_timeout, Cluster::DEFAULT_IDLE_TIMEOUT);
}
