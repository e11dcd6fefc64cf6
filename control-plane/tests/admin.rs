//! Admin API over a real socket: authentication, and every validation rule answering
//! InvalidArgument with the field named while the store stays unchanged.

mod common;

use common::*;
use mesh_proto::admin::v1 as apb;
use mesh_proto::admin::v1::admin_client::AdminClient;
use mesh_proto::types::v1 as pb;
use tonic::Code;
use tonic::transport::Channel;

fn backend(service: &str, weight: u32) -> pb::WeightedBackend {
    pb::WeightedBackend {
        service: service.into(),
        subset: String::new(),
        weight,
    }
}

fn rule(backends: Vec<pb::WeightedBackend>) -> pb::RouteRule {
    pb::RouteRule {
        backends,
        ..Default::default()
    }
}

fn prefix(p: &str) -> pb::RouteMatch {
    pb::RouteMatch {
        path: Some(pb::PathMatch {
            kind: pb::PathMatchKind::Prefix as i32,
            value: p.into(),
        }),
        ..Default::default()
    }
}

fn route(rules: Vec<pb::RouteRule>) -> pb::Route {
    pb::Route {
        service: "web".into(),
        rules,
    }
}

/// Everything the admin API can read back, to prove a rejected write stored nothing.
async fn everything(a: &mut Admin) -> String {
    let routes = a
        .list_routes(apb::ListRequest {})
        .await
        .unwrap()
        .into_inner();
    let clusters = a
        .list_cluster_policies(apb::ListRequest {})
        .await
        .unwrap()
        .into_inner();
    let authz = a
        .get_authorization_policy(apb::ServiceRef {
            service: "web".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut services = a
        .list_services(apb::ListRequest {})
        .await
        .unwrap()
        .into_inner();
    services.services.sort_by(|x, y| x.service.cmp(&y.service));
    let endpoints = a
        .list_endpoints(apb::ServiceRef {
            service: "web".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let runtime = a
        .get_runtime(apb::ListRequest {})
        .await
        .unwrap()
        .into_inner();
    serde_json::to_string(&(routes, clusters, authz, services, endpoints, runtime)).unwrap()
}

#[tokio::test]
async fn calls_without_a_good_token_are_unauthenticated() {
    let cp = start().await;
    assert!(
        cp.handle.admin_url.starts_with("https://"),
        "TLS by default"
    );
    let ch = admin_channel(cp.handle.addrs.admin, &bundle(cp.dir.path()))
        .await
        .expect("TLS handshake with the data dir's bundle");
    let err = within(
        "anonymous",
        AdminClient::new(ch).list_services(apb::ListRequest {}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut bad = admin_at(
        cp.handle.addrs.admin,
        "not-the-token",
        &bundle(cp.dir.path()),
    )
    .await;
    let err = within("bad token", bad.list_services(apb::ListRequest {}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let token = std::fs::read_to_string(cp.dir.path().join("admin-token")).unwrap();
    assert_eq!(token.trim(), cp.handle.admin_token);
    let mut good = admin(&cp).await;
    within("health", good.health(apb::ListRequest {}))
        .await
        .expect("authenticated call works");
}

/// Creates a service with the right token over plaintext HTTP/2; the error (connect or call).
async fn plaintext_create(addr: std::net::SocketAddr, token: &str) -> String {
    let ch = match within(
        "plaintext connect",
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect(),
    )
    .await
    {
        Ok(ch) => ch,
        Err(e) => return format!("connect: {e}"),
    };
    let mut a = AdminClient::with_interceptor(ch, Bearer(token.to_string()));
    match within(
        "plaintext call",
        a.create_service(apb::CreateServiceRequest {
            service: "sneaky".into(),
            namespace: "default".into(),
            ports: vec![80],
            identities: Vec::new(),
        }),
    )
    .await
    {
        Ok(_) => String::new(),
        Err(status) => format!("call: {status}"),
    }
}

#[tokio::test]
async fn plaintext_to_the_tls_admin_port_fails_and_changes_nothing() {
    let cp = start().await;
    let err = plaintext_create(cp.handle.addrs.admin, &cp.handle.admin_token).await;
    assert!(
        !err.is_empty(),
        "a plaintext call to the TLS admin port succeeded"
    );
    let mut a = admin(&cp).await;
    let services = within("list", a.list_services(apb::ListRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(
        services.services.is_empty(),
        "the plaintext call changed the store: {services:?}"
    );
}

/// The whole error chain of a failed connection, for matching the TLS cause.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(next) = cur {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cur = next.source();
    }
    text
}

#[tokio::test]
async fn a_client_trusting_another_ca_or_name_refuses_the_admin_certificate() {
    let cp = start().await;
    let other = start().await;
    let err = admin_channel(cp.handle.addrs.admin, &bundle(other.dir.path()))
        .await
        .expect_err("a certificate from a foreign CA must be refused");
    let text = chain(&err);
    assert!(text.contains("UnknownIssuer"), "{text}");

    // The right CA but a name the certificate does not carry is refused too.
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(bundle(
            cp.dir.path(),
        )))
        .domain_name("mesh.example");
    let err = within(
        "connect with a wrong name",
        Channel::from_shared(format!("https://{}", cp.handle.addrs.admin))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect(),
    )
    .await
    .expect_err("a certificate for other names must be refused");
    let text = chain(&err);
    assert!(text.contains("not valid for name"), "{text}");
}

#[tokio::test]
async fn admin_tls_off_serves_plaintext_to_http_urls() {
    let cp = start_with(|c| c.admin_tls = false).await;
    assert_eq!(
        cp.handle.admin_url,
        format!("http://{}", cp.handle.addrs.admin)
    );
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cp.dir.path().join("addrs.json")).unwrap()).unwrap();
    assert_eq!(written["admin_url"], cp.handle.admin_url);
    assert_eq!(
        plaintext_create(cp.handle.addrs.admin, &cp.handle.admin_token).await,
        ""
    );
}

type Call = Box<dyn FnOnce(Admin) -> futures_util::future::BoxFuture<'static, tonic::Status>>;

fn set_route(r: pb::Route) -> Call {
    Box::new(move |mut a| {
        Box::pin(async move {
            a.set_route(apb::SetRouteRequest {
                route: Some(r),
                dry_run: false,
                expected_version: String::new(),
            })
            .await
            .expect_err("rejected")
        })
    })
}

fn set_cluster(c: pb::Cluster) -> Call {
    Box::new(move |mut a| {
        Box::pin(async move {
            a.set_cluster_policy(apb::SetClusterPolicyRequest {
                cluster: Some(c),
                dry_run: false,
            })
            .await
            .expect_err("rejected")
        })
    })
}

fn set_authz(p: pb::AuthorizationPolicy) -> Call {
    Box::new(move |mut a| {
        Box::pin(async move {
            a.set_authorization_policy(apb::SetAuthorizationPolicyRequest {
                policy: Some(p),
                dry_run: false,
            })
            .await
            .expect_err("rejected")
        })
    })
}

fn register(e: pb::Endpoint) -> Call {
    Box::new(move |mut a| {
        Box::pin(async move {
            a.register_endpoint(apb::RegisterEndpointRequest {
                service: "web".into(),
                endpoint: Some(e),
            })
            .await
            .expect_err("rejected")
        })
    })
}

fn cases() -> Vec<(&'static str, Call)> {
    let ok_rule = || rule(vec![backend("api", 100)]);
    let with_rule = |f: &dyn Fn(&mut pb::RouteRule)| {
        let mut r = ok_rule();
        f(&mut r);
        route(vec![r])
    };
    vec![
        (
            "route.service",
            set_route(pb::Route {
                service: "ghost".into(),
                rules: vec![ok_rule()],
            }),
        ),
        (
            "route.rules[0].backends[1].service",
            set_route(route(vec![rule(vec![
                backend("api", 50),
                backend("ghost", 50),
            ])])),
        ),
        (
            "route.rules[0].backends[*].weight",
            set_route(route(vec![rule(vec![
                backend("api", 50),
                backend("web", 40),
            ])])),
        ),
        (
            "route.rules[1].backends[0].weight",
            set_route(route(vec![
                pb::RouteRule {
                    matches: vec![prefix("/a")],
                    ..ok_rule()
                },
                rule(vec![backend("api", 120), backend("web", 0)]),
            ])),
        ),
        (
            "route.rules[0].backends[0].weight",
            set_route(route(vec![rule(vec![backend("api", 60)])])),
        ),
        (
            "route.rules[0].matches[0].path.value",
            set_route(with_rule(&|r| {
                r.matches = vec![pb::RouteMatch {
                    path: Some(pb::PathMatch {
                        kind: pb::PathMatchKind::Regex as i32,
                        value: "(unclosed".into(),
                    }),
                    ..Default::default()
                }]
            })),
        ),
        (
            "route.rules[0].matches[0].headers[0].value",
            set_route(with_rule(&|r| {
                r.matches = vec![pb::RouteMatch {
                    headers: vec![pb::KeyValueMatch {
                        name: "x-user".into(),
                        kind: pb::ValueMatchKind::Regex as i32,
                        value: "[z-a]".into(),
                    }],
                    ..Default::default()
                }]
            })),
        ),
        (
            "route.rules[1].matches[0]",
            set_route(route(vec![
                pb::RouteRule {
                    matches: vec![prefix("/x")],
                    ..ok_rule()
                },
                pb::RouteRule {
                    matches: vec![prefix("/x")],
                    ..ok_rule()
                },
            ])),
        ),
        (
            "route.rules[0].timeout_ms",
            set_route(with_rule(&|r| r.timeout_ms = 3_600_001)),
        ),
        (
            "route.rules[0].retry.per_try_timeout_ms",
            set_route(with_rule(&|r| {
                r.retry = Some(pb::RetryPolicy {
                    attempts: 3,
                    per_try_timeout_ms: 7_200_000,
                    ..Default::default()
                })
            })),
        ),
        (
            "route.rules[0].retry.retry_on[0]",
            set_route(with_rule(&|r| {
                r.retry = Some(pb::RetryPolicy {
                    attempts: 2,
                    retry_on: vec!["sometimes".into()],
                    ..Default::default()
                })
            })),
        ),
        (
            "route.rules[0].fault.abort_permille",
            set_route(with_rule(&|r| {
                r.fault = Some(pb::Fault {
                    abort_status: 503,
                    abort_permille: 1001,
                    ..Default::default()
                })
            })),
        ),
        (
            "route.rules[0].request_headers[0].name",
            set_route(with_rule(&|r| {
                r.request_headers = vec![pb::HeaderOp {
                    kind: 0,
                    name: "bad header".into(),
                    value: "v".into(),
                }]
            })),
        ),
        ("route: required", set_route_none()),
        (
            "cluster.name",
            set_cluster(pb::Cluster {
                name: "ghost".into(),
                ..Default::default()
            }),
        ),
        (
            "cluster.connect_timeout_ms",
            set_cluster(pb::Cluster {
                name: "web".into(),
                connect_timeout_ms: 7_200_000,
                ..Default::default()
            }),
        ),
        (
            "cluster.outlier_detection.max_ejection_percent",
            set_cluster(pb::Cluster {
                name: "web".into(),
                outlier_detection: Some(pb::OutlierDetection {
                    max_ejection_percent: 101,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        ),
        (
            "cluster.lb_policy",
            set_cluster(pb::Cluster {
                name: "web".into(),
                lb_policy: 99,
                ..Default::default()
            }),
        ),
        (
            "policy.allow[0].sources[1]",
            set_authz(pb::AuthorizationPolicy {
                service: "web".into(),
                default_action: 0,
                allow: vec![pb::AuthzRule {
                    sources: vec![
                        "spiffe://cluster.local/ns/default/sa/api".into(),
                        "spiffe:/broken".into(),
                    ],
                    ..Default::default()
                }],
            }),
        ),
        (
            "policy.service",
            set_authz(pb::AuthorizationPolicy {
                service: "ghost".into(),
                ..Default::default()
            }),
        ),
        (
            "endpoint.address",
            register(pb::Endpoint {
                address: "10.0.0.1".into(),
                ..Default::default()
            }),
        ),
        (
            "endpoint.identity",
            register(pb::Endpoint {
                address: "10.0.0.1:80".into(),
                identity: "alice".into(),
                ..Default::default()
            }),
        ),
        (
            "runtime.trace_sampling_ratio",
            Box::new(|mut a: Admin| {
                Box::pin(async move {
                    a.set_runtime(apb::SetRuntimeRequest {
                        runtime: Some(pb::Runtime {
                            trace_sampling_ratio: 1.5,
                            ..Default::default()
                        }),
                    })
                    .await
                    .expect_err("rejected")
                })
            }),
        ),
        (
            "service",
            Box::new(|mut a: Admin| {
                Box::pin(async move {
                    a.create_service(apb::CreateServiceRequest {
                        service: "Bad Name".into(),
                        ..Default::default()
                    })
                    .await
                    .expect_err("rejected")
                })
            }),
        ),
    ]
}

fn set_route_none() -> Call {
    Box::new(|mut a| {
        Box::pin(async move {
            a.set_route(apb::SetRouteRequest {
                route: None,
                dry_run: false,
                expected_version: String::new(),
            })
            .await
            .expect_err("rejected")
        })
    })
}

#[tokio::test]
async fn every_validation_rule_names_the_field_and_stores_nothing() {
    let cp = start().await;
    let mut a = admin(&cp).await;
    for s in ["web", "api"] {
        a.create_service(apb::CreateServiceRequest {
            service: s.into(),
            namespace: "default".into(),
            ports: vec![80],
            identities: Vec::new(),
        })
        .await
        .unwrap();
    }
    let good = route(vec![rule(vec![backend("api", 100)])]);
    a.set_route(apb::SetRouteRequest {
        route: Some(good),
        dry_run: false,
        expected_version: String::new(),
    })
    .await
    .unwrap();
    a.set_authorization_policy(apb::SetAuthorizationPolicyRequest {
        policy: Some(pb::AuthorizationPolicy {
            service: "web".into(),
            default_action: pb::AuthzAction::Deny as i32,
            allow: vec![pb::AuthzRule {
                sources: vec!["spiffe://cluster.local/ns/default/*".into()],
                ..Default::default()
            }],
        }),
        dry_run: false,
    })
    .await
    .unwrap();
    let before = everything(&mut a).await;

    for (field, call) in cases() {
        let status = within(field, call(a.clone())).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().starts_with(field),
            "message {:?} does not name {field}",
            status.message()
        );
    }
    // A dry run of a valid change answers its version but stores nothing either.
    let dry = a
        .set_route(apb::SetRouteRequest {
            route: Some(route(vec![rule(vec![backend("web", 100)])])),
            dry_run: true,
            expected_version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!dry.version.is_empty());
    assert_eq!(everything(&mut a).await, before);
}

#[tokio::test]
async fn a_stale_read_modify_write_of_a_route_is_refused() {
    let cp = start().await;
    let mut a = admin(&cp).await;
    a.create_service(apb::CreateServiceRequest {
        service: "reviews".into(),
        namespace: "default".into(),
        ports: vec![80],
        identities: Vec::new(),
    })
    .await
    .unwrap();
    let route = |timeout_ms| pb::Route {
        service: "reviews".into(),
        rules: vec![pb::RouteRule {
            name: "all".into(),
            backends: vec![pb::WeightedBackend {
                service: "reviews".into(),
                subset: String::new(),
                weight: 100,
            }],
            timeout_ms,
            ..Default::default()
        }],
    };
    let set = |r: pb::Route, expected: &str| apb::SetRouteRequest {
        route: Some(r),
        dry_run: false,
        expected_version: expected.into(),
    };
    // "none": only if there is no route yet.
    let v1 = a
        .set_route(set(route(100), "none"))
        .await
        .unwrap()
        .into_inner()
        .version;
    let err = a.set_route(set(route(200), "none")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Aborted, "{err}");
    // A writer that read v1 may write; one still holding v1 afterwards may not.
    a.set_route(set(route(300), &v1)).await.unwrap();
    let err = a.set_route(set(route(400), &v1)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Aborted, "{err}");
    assert!(err.message().contains("read it again"), "{err}");
    let stored = a
        .get_route(apb::ServiceRef {
            service: "reviews".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.route.unwrap().rules[0].timeout_ms, 300);
}

/// Fields the proto still carries but no proxy enforces are refused by name, saying so, and
/// store nothing; the cluster fields the proxy does enforce are accepted and read back.
#[tokio::test]
async fn unenforced_fields_are_refused_as_not_supported() {
    let cp = start().await;
    let mut a = admin(&cp).await;
    for s in ["web", "api"] {
        a.create_service(apb::CreateServiceRequest {
            service: s.into(),
            namespace: "default".into(),
            ports: vec![80],
            identities: Vec::new(),
        })
        .await
        .unwrap();
    }
    // `everything` reads web's authorization policy back.
    a.set_authorization_policy(apb::SetAuthorizationPolicyRequest {
        policy: Some(pb::AuthorizationPolicy {
            service: "web".into(),
            ..Default::default()
        }),
        dry_run: false,
    })
    .await
    .unwrap();
    let before = everything(&mut a).await;
    let outlier = |edit: fn(&mut pb::OutlierDetection)| {
        let mut o = pb::OutlierDetection::default();
        edit(&mut o);
        set_cluster(pb::Cluster {
            name: "web".into(),
            outlier_detection: Some(o),
            ..Default::default()
        })
    };
    let cases: Vec<(&str, Call)> = vec![
        (
            "cluster.outlier_detection.failure_percentage",
            outlier(|o| o.failure_percentage = 50),
        ),
        (
            "cluster.outlier_detection.failure_percentage_min_requests",
            outlier(|o| o.failure_percentage_min_requests = 20),
        ),
        (
            "cluster.outlier_detection.interval_ms",
            outlier(|o| o.interval_ms = 10_000),
        ),
        (
            "cluster.circuit_breakers.max_connections",
            set_cluster(pb::Cluster {
                name: "web".into(),
                circuit_breakers: Some(pb::CircuitBreakers {
                    max_connections: 10,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        ),
        (
            "route.rules[0].rate_limit.per_source",
            set_route(route(vec![pb::RouteRule {
                rate_limit: Some(pb::RateLimit {
                    requests_per_second: 10,
                    burst: 10,
                    per_source: true,
                }),
                ..rule(vec![backend("api", 100)])
            }])),
        ),
    ];
    for (field, call) in cases {
        let status = within(field, call(a.clone())).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        let m = status.message();
        assert!(
            m.starts_with(&format!("{field}: not supported")),
            "{m:?} does not refuse {field} as not supported"
        );
    }
    assert_eq!(everything(&mut a).await, before);

    // Enforced by the proxy: stored and read back as sent.
    let enforced = pb::Cluster {
        name: "web".into(),
        connect_timeout_ms: 200,
        idle_timeout_ms: 5_000,
        protocol: pb::Protocol::Http2 as i32,
        circuit_breakers: Some(pb::CircuitBreakers {
            max_pending_requests: 8,
            ..Default::default()
        }),
        ..Default::default()
    };
    a.set_cluster_policy(apb::SetClusterPolicyRequest {
        cluster: Some(enforced),
        dry_run: false,
    })
    .await
    .unwrap();
    let got = a
        .get_cluster_policy(apb::ServiceRef {
            service: "web".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .cluster
        .unwrap();
    assert_eq!(
        (got.connect_timeout_ms, got.idle_timeout_ms, got.protocol),
        (200, 5_000, pb::Protocol::Http2 as i32)
    );
    assert_eq!(got.circuit_breakers.unwrap().max_pending_requests, 8);
}
