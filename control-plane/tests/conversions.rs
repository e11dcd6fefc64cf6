//! Property tests of every proto → domain conversion: arbitrary (mostly invalid) input never
//! panics, and whatever is accepted converts back and re-validates to the same value.

use mesh_control_plane::encode;
use mesh_control_plane::model::{AuthzPolicy, ClusterPolicy, Endpoint, Route, Runtime};
use mesh_control_plane::validate::{node_from_proto, service_decl};
use mesh_proto::discovery::v1 as dpb;
use mesh_proto::types::v1 as pb;
use proptest::collection::{hash_map, vec};
use proptest::prelude::*;
use prost::Message;

/// Strings drawn from values that are valid somewhere and values that are invalid everywhere.
fn s() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z][a-z0-9-]{0,8}",
        Just("/api".to_string()),
        Just("^/v[0-9]+/.*$".to_string()),
        Just("(unclosed".to_string()),
        Just("x-user".to_string()),
        Just("GET".to_string()),
        Just("spiffe://cluster.local/ns/a/sa/b".to_string()),
        Just("spiffe://cluster.local/ns/a/*".to_string()),
        Just("*".to_string()),
        Just("10.0.0.1:8080".to_string()),
        Just("[::1]:80".to_string()),
        Just("10.0.0.1".to_string()),
        "\\PC{0,24}",
    ]
}

fn n32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(50),
        Just(100),
        Just(1000),
        0..70_000u32,
        any::<u32>()
    ]
}

fn n64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1000),
        Just(3_600_000),
        Just(3_600_001),
        any::<u64>()
    ]
}

fn e() -> impl Strategy<Value = i32> {
    prop_oneof![0..6i32, any::<i32>()]
}

fn kv() -> impl Strategy<Value = pb::KeyValueMatch> {
    (s(), e(), s()).prop_map(|(name, kind, value)| pb::KeyValueMatch { name, kind, value })
}

fn header_op() -> impl Strategy<Value = pb::HeaderOp> {
    (e(), s(), s()).prop_map(|(kind, name, value)| pb::HeaderOp { kind, name, value })
}

fn route_match() -> impl Strategy<Value = pb::RouteMatch> {
    (
        proptest::option::of((e(), s()).prop_map(|(kind, value)| pb::PathMatch { kind, value })),
        s(),
        vec(kv(), 0..3),
        vec(kv(), 0..2),
    )
        .prop_map(|(path, method, headers, query_params)| pb::RouteMatch {
            path,
            method,
            headers,
            query_params,
        })
}

fn rule() -> impl Strategy<Value = pb::RouteRule> {
    let backends = vec(
        (s(), s(), n32()).prop_map(|(service, subset, weight)| pb::WeightedBackend {
            service,
            subset,
            weight,
        }),
        0..4,
    );
    let retry = proptest::option::of(
        (n32(), vec(s(), 0..3), n64(), any::<bool>(), n64(), n64()).prop_map(
            |(attempts, retry_on, per_try_timeout_ms, allow_non_idempotent, b, m)| {
                pb::RetryPolicy {
                    attempts,
                    retry_on,
                    per_try_timeout_ms,
                    allow_non_idempotent,
                    backoff_base_ms: b,
                    backoff_max_ms: m,
                }
            },
        ),
    );
    let extras = (
        proptest::option::of(
            (s(), s(), s(), n32()).prop_map(|(scheme, host, path, status)| pb::Redirect {
                scheme,
                host,
                path,
                status,
            }),
        ),
        proptest::option::of(
            (n64(), n32(), n32(), n32()).prop_map(|(d, dp, a, ap)| pb::Fault {
                delay_ms: d,
                delay_permille: dp,
                abort_status: a,
                abort_permille: ap,
            }),
        ),
        proptest::option::of((s(), s(), n32()).prop_map(|(service, subset, permille)| {
            pb::Mirror {
                service,
                subset,
                permille,
            }
        })),
        proptest::option::of(
            (n32(), n32(), any::<bool>()).prop_map(|(r, b, p)| pb::RateLimit {
                requests_per_second: r,
                burst: b,
                per_source: p,
            }),
        ),
    );
    (
        s(),
        vec(route_match(), 0..3),
        backends,
        n64(),
        retry,
        vec(header_op(), 0..2),
        vec(header_op(), 0..2),
        s(),
        extras,
    )
        .prop_map(
            |(name, matches, backends, timeout_ms, retry, req, resp, rewrite, (rd, f, m, rl))| {
                pb::RouteRule {
                    name,
                    matches,
                    backends,
                    timeout_ms,
                    retry,
                    request_headers: req,
                    response_headers: resp,
                    rewrite_prefix: rewrite,
                    redirect: rd,
                    fault: f,
                    mirror: m,
                    rate_limit: rl,
                }
            },
        )
}

fn route() -> impl Strategy<Value = pb::Route> {
    (s(), vec(rule(), 0..4)).prop_map(|(service, rules)| pb::Route { service, rules })
}

fn cluster() -> impl Strategy<Value = pb::Cluster> {
    let hash_on = proptest::option::of(
        (
            proptest::option::of(prop_oneof![
                s().prop_map(pb::hash_on::Key::Header),
                s().prop_map(pb::hash_on::Key::Cookie),
                any::<bool>().prop_map(pb::hash_on::Key::SourceIp),
            ]),
            any::<bool>(),
            n64(),
        )
            .prop_map(|(key, generate_cookie, cookie_ttl_secs)| pb::HashOn {
                key,
                generate_cookie,
                cookie_ttl_secs,
            }),
    );
    let outlier = proptest::option::of(
        (
            any::<bool>(),
            n32(),
            n32(),
            n32(),
            n32(),
            n64(),
            n64(),
            n32(),
        )
            .prop_map(
                |(disabled, c5, cg, fp, fpm, i, b, m)| pb::OutlierDetection {
                    disabled,
                    consecutive_5xx: c5,
                    consecutive_gateway_failures: cg,
                    failure_percentage: fp,
                    failure_percentage_min_requests: fpm,
                    interval_ms: i,
                    base_ejection_ms: b,
                    max_ejection_percent: m,
                },
            ),
    );
    let hc = proptest::option::of((s(), n32(), n64(), n64(), n32(), n32()).prop_map(
        |(http_path, expected_status, interval_ms, timeout_ms, h, u)| pb::HealthCheck {
            http_path,
            expected_status,
            interval_ms,
            timeout_ms,
            healthy_threshold: h,
            unhealthy_threshold: u,
        },
    ));
    let budget = proptest::option::of(
        (
            prop_oneof![Just(0.2f64), any::<f64>(), 0.0..1.0f64],
            n32(),
            n64(),
        )
            .prop_map(|(ratio, m, w)| pb::RetryBudget {
                ratio,
                min_retries_per_second: m,
                window_ms: w,
            }),
    );
    (
        (s(), e(), hash_on, outlier, hc, budget),
        (n64(), n64(), e(), e(), n64(), n32()),
    )
        .prop_map(
            |((name, lb, hash_on, od, hc, rb), (ct, it, tls, proto, rt, cb))| pb::Cluster {
                name,
                lb_policy: lb,
                hash_on,
                outlier_detection: od,
                circuit_breakers: Some(pb::CircuitBreakers {
                    max_connections: cb,
                    ..Default::default()
                }),
                health_check: hc,
                connect_timeout_ms: ct,
                idle_timeout_ms: it,
                tls_mode: tls,
                protocol: proto,
                retry_budget: rb,
                request_timeout_ms: rt,
                ..Default::default()
            },
        )
}

fn authz() -> impl Strategy<Value = pb::AuthorizationPolicy> {
    let rule = (vec(s(), 0..4), vec(n32(), 0..3), s()).prop_map(|(sources, ports, path_prefix)| {
        pb::AuthzRule {
            sources,
            ports,
            path_prefix,
        }
    });
    (s(), e(), vec(rule, 0..3)).prop_map(|(service, default_action, allow)| {
        pb::AuthorizationPolicy {
            service,
            default_action,
            allow,
        }
    })
}

fn endpoint() -> impl Strategy<Value = pb::Endpoint> {
    (
        s(),
        n32(),
        s(),
        hash_map(s(), s(), 0..3),
        e(),
        s(),
        n32(),
        s(),
    )
        .prop_map(
            |(address, weight, zone, labels, state, identity, app_port, source)| pb::Endpoint {
                address,
                weight,
                zone,
                labels,
                state,
                identity,
                app_port,
                source,
            },
        )
}

fn node() -> impl Strategy<Value = dpb::Node> {
    (
        (s(), s(), s(), s(), s()),
        (
            hash_map(s(), s(), 0..3),
            s(),
            s(),
            n32(),
            vec(n32(), 0..3),
            s(),
        ),
    )
        .prop_map(
            |((id, identity, service, namespace, sa), (labels, v, address, port, ports, zone))| {
                dpb::Node {
                    id,
                    identity,
                    service,
                    namespace,
                    service_account: sa,
                    labels,
                    proxy_version: v,
                    address,
                    inbound_port: port,
                    app_ports: ports,
                    zone,
                }
            },
        )
}

/// Mostly-valid routes, so the round-trip property is exercised on accepted input too.
fn valid_route() -> impl Strategy<Value = pb::Route> {
    let path = (1..4i32, "/[a-z]{0,6}").prop_map(|(kind, value)| pb::PathMatch { kind, value });
    let header = ("x-[a-z]{1,6}", 0..4i32, "[a-z0-9]{0,6}")
        .prop_map(|(name, kind, value)| pb::KeyValueMatch { name, kind, value });
    let m = (
        proptest::option::of(path),
        prop_oneof![Just(""), Just("GET"), Just("post")],
        vec(header, 0..2),
    )
        .prop_map(|(path, method, headers)| pb::RouteMatch {
            path,
            method: method.to_string(),
            headers,
            query_params: Vec::new(),
        });
    let backends = prop_oneof![
        "[a-z]{1,4}".prop_map(|s| vec![pb::WeightedBackend {
            service: s,
            subset: String::new(),
            weight: 100
        }]),
        ("[a-z]{1,4}", "[a-z]{1,4}", 0..=100u32, "v[0-9]").prop_map(|(a, b, w, subset)| vec![
            pb::WeightedBackend {
                service: a,
                subset: subset.clone(),
                weight: w
            },
            pb::WeightedBackend {
                service: b,
                subset,
                weight: 100 - w
            },
        ]),
    ];
    let retry = proptest::option::of(
        (
            0..=10u32,
            vec(
                prop_oneof![
                    Just("5xx"),
                    Just("reset"),
                    Just("503"),
                    Just("grpc:unavailable")
                ],
                0..3,
            ),
            0..60_000u64,
        )
            .prop_map(|(attempts, on, per_try)| pb::RetryPolicy {
                attempts,
                retry_on: on.into_iter().map(String::from).collect(),
                per_try_timeout_ms: per_try,
                backoff_base_ms: 25,
                backoff_max_ms: 250,
                ..Default::default()
            }),
    );
    let fault = proptest::option::of(
        (
            0..5_000u64,
            0..=1000u32,
            prop_oneof![Just(0u32), 200..600u32],
            0..=1000u32,
        )
            .prop_map(|(d, dp, a, ap)| pb::Fault {
                delay_ms: d,
                delay_permille: dp,
                abort_status: a,
                abort_permille: ap,
            }),
    );
    let rl = proptest::option::of((1..10_000u32, 0..20_000u32, any::<bool>()).prop_map(
        |(r, b, p)| pb::RateLimit {
            requests_per_second: r,
            burst: b,
            per_source: p,
        },
    ));
    let rule = (
        vec(m, 0..3),
        backends,
        0..3_600_000u64,
        retry,
        fault,
        rl,
        vec(header_op_valid(), 0..2),
    )
        .prop_map(
            |(matches, backends, timeout_ms, retry, fault, rate_limit, request_headers)| {
                pb::RouteRule {
                    name: "r".into(),
                    matches,
                    backends,
                    timeout_ms,
                    retry,
                    fault,
                    rate_limit,
                    request_headers,
                    ..Default::default()
                }
            },
        );
    ("[a-z]{1,6}", vec(rule, 1..4)).prop_map(|(service, rules)| pb::Route { service, rules })
}

fn header_op_valid() -> impl Strategy<Value = pb::HeaderOp> {
    (0..4i32, "[A-Za-z][a-z-]{0,8}", "[ -~]{0,12}").prop_map(|(kind, name, value)| pb::HeaderOp {
        kind,
        name,
        value,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn route_conversion_never_panics_and_round_trips(r in route()) {
        if let Ok(d) = Route::try_from(r) {
            prop_assert_eq!(Route::try_from(encode::route(&d)).expect("re-validates"), d);
        }
    }

    #[test]
    fn valid_route_round_trips(r in valid_route()) {
        if let Ok(d) = Route::try_from(r) {
            prop_assert_eq!(Route::try_from(encode::route(&d)).expect("re-validates"), d);
        }
    }

    #[test]
    fn cluster_conversion_never_panics_and_round_trips(c in cluster()) {
        if let Ok(d) = ClusterPolicy::try_from(c) {
            prop_assert_eq!(ClusterPolicy::try_from(encode::cluster_policy(&d)).expect("re-validates"), d);
        }
    }

    #[test]
    fn authz_conversion_never_panics_and_round_trips(p in authz()) {
        if let Ok(d) = AuthzPolicy::try_from(p) {
            prop_assert_eq!(AuthzPolicy::try_from(encode::authz(&d)).expect("re-validates"), d);
        }
    }

    #[test]
    fn endpoint_conversion_never_panics_and_round_trips(e in endpoint()) {
        if let Ok(d) = Endpoint::try_from(e) {
            prop_assert_eq!(Endpoint::try_from(encode::endpoint(&d)).expect("re-validates"), d);
        }
    }

    #[test]
    fn runtime_conversion_never_panics(a in any::<f64>(), b in any::<f64>()) {
        let r = pb::Runtime { trace_sampling_ratio: a, access_log_ratio: b, ..Default::default() };
        if let Ok(d) = Runtime::try_from(r) {
            prop_assert_eq!(Runtime::try_from(encode::runtime(&d)).expect("re-validates"), d);
        }
    }

    #[test]
    fn node_and_service_conversions_never_panic(n in node(), ns in s(), ports in vec(n32(), 0..4)) {
        let _ = service_decl(&n.service, &ns, &ports, &n.labels.values().cloned().collect::<Vec<_>>(), "cluster.local");
        let _ = node_from_proto(n);
    }

    /// Raw bytes decoded as each message: whatever prost accepts must convert without panic.
    #[test]
    fn decoded_garbage_never_panics(bytes in vec(any::<u8>(), 0..256)) {
        if let Ok(m) = pb::Route::decode(bytes.as_slice()) { let _ = Route::try_from(m); }
        if let Ok(m) = pb::Cluster::decode(bytes.as_slice()) { let _ = ClusterPolicy::try_from(m); }
        if let Ok(m) = pb::AuthorizationPolicy::decode(bytes.as_slice()) { let _ = AuthzPolicy::try_from(m); }
        if let Ok(m) = pb::Endpoint::decode(bytes.as_slice()) { let _ = Endpoint::try_from(m); }
        if let Ok(m) = pb::Runtime::decode(bytes.as_slice()) { let _ = Runtime::try_from(m); }
        if let Ok(m) = dpb::Node::decode(bytes.as_slice()) { let _ = node_from_proto(m); }
    }
}
