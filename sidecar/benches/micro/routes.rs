//! Route matching over a 100-service table: authority → service → first matching rule → backend.

use std::hint::black_box;
use std::sync::Arc;

use criterion::Criterion;
use http::Request;
use mesh_proto::types::v1 as pb;
use mesh_sidecar::outbound::service_name;
use mesh_sidecar::routing::{RequestInfo, pick_backend, select};
use mesh_sidecar::state::{Name, Route, Snapshot};

use crate::cpu::CpuTime;

/// Services in the table: the size the idle-RSS goal is stated for (100 routes).
const SERVICES: usize = 100;

pub fn bench(c: &mut Criterion<CpuTime>) {
    let snap = table();
    let mut g = c.benchmark_group("route");
    // What `outbound::forward` does per request before picking an endpoint: the service from
    // the authority (`Host`), its Route from the snapshot, the first matching rule, and the
    // weighted backend of that rule.
    let cases = [
        // Rule 0: path prefix + header, the first rule tried.
        (
            "first_rule_path_prefix_and_header",
            "/api/v2/items",
            Some(("x-canary", "true")),
            "canary",
        ),
        // Rule 2: prefix + header after an exact-path rule and a miss on rule 0's header.
        (
            "third_rule_after_header_miss",
            "/api/v1/items",
            Some(("x-tenant", "acme")),
            "tenant",
        ),
        // Rule 4: a regex path (`^/users/[0-9]+$`) after four literal misses.
        ("regex_rule", "/users/42", None, "users"),
        // No rule matches until the catch-all weighted split (6th rule).
        ("fall_through_to_default", "/other/page", None, "default"),
    ];
    for (name, path, header, rule) in cases {
        let mut req = Request::get(path).header("host", "svc-57.default.svc.cluster.local:8080");
        if let Some((k, v)) = header {
            req = req.header(k, v);
        }
        let req = req.body(()).expect("request");
        // The fixture must exercise the rule the case is named for.
        let route = &snap.routes["svc-57"];
        let sel = select(route, RequestInfo::from_request(&req)).expect("a rule matches");
        assert_eq!(&*sel.rule.name, rule, "{name}");
        g.bench_function(name, |b| {
            let mut draw = 0u32;
            b.iter(|| {
                draw = draw.wrapping_add(7);
                let host = req.headers()["host"].to_str().ok()?;
                let route = snap
                    .routes
                    .get(&*service_name(black_box(host), "default"))?;
                let sel = select(route, RequestInfo::from_request(black_box(&req)))?;
                pick_backend(sel.rule, draw).map(|b| b.weight)
            })
        });
    }
    // The parts on their own.
    g.bench_function("authority_to_service_name", |b| {
        b.iter(|| {
            service_name(
                black_box("svc-57.default.svc.cluster.local:8080"),
                "default",
            )
            .len()
        })
    });
    g.bench_function("service_lookup", |b| {
        b.iter(|| snap.routes.get(black_box("svc-57")).map(|r| r.rules.len()))
    });
    g.finish();
}

/// 100 services, each with six rules in the order an operator would write them.
fn table() -> Snapshot {
    let mut snap = Snapshot::default();
    for i in 0..SERVICES {
        let service = format!("svc-{i}");
        let route = Route::try_from(&pb::Route {
            service: service.clone(),
            rules: rules(&service),
        })
        .expect("valid route");
        snap.routes.insert(Name::from(service), Arc::new(route));
    }
    snap
}

fn rules(service: &str) -> Vec<pb::RouteRule> {
    let path = |kind: pb::PathMatchKind, value: &str| {
        Some(pb::PathMatch {
            kind: kind as i32,
            value: value.into(),
        })
    };
    let header = |name: &str, value: &str| pb::KeyValueMatch {
        name: name.into(),
        kind: pb::ValueMatchKind::Exact as i32,
        value: value.into(),
    };
    let to = |subset: &str, weight: u32| pb::WeightedBackend {
        service: service.into(),
        subset: subset.into(),
        weight,
    };
    let rule = |name: &str, m: pb::RouteMatch, backends: Vec<pb::WeightedBackend>| pb::RouteRule {
        name: name.into(),
        matches: vec![m],
        backends,
        ..Default::default()
    };
    use pb::PathMatchKind::{Exact, Prefix, Regex};
    vec![
        rule(
            "canary",
            pb::RouteMatch {
                path: path(Prefix, "/api/v2/"),
                headers: vec![header("x-canary", "true")],
                ..Default::default()
            },
            vec![to("v2", 1)],
        ),
        rule(
            "health",
            pb::RouteMatch {
                path: path(Exact, "/healthz"),
                ..Default::default()
            },
            vec![to("v1", 1)],
        ),
        rule(
            "tenant",
            pb::RouteMatch {
                path: path(Prefix, "/api/"),
                headers: vec![header("x-tenant", "acme")],
                ..Default::default()
            },
            vec![to("v1", 1)],
        ),
        rule(
            "static",
            pb::RouteMatch {
                path: path(Prefix, "/static/"),
                method: "GET".into(),
                ..Default::default()
            },
            vec![to("v1", 1)],
        ),
        rule(
            "users",
            pb::RouteMatch {
                path: path(Regex, "^/users/[0-9]+$"),
                ..Default::default()
            },
            vec![to("v1", 1)],
        ),
        pb::RouteRule {
            name: "default".into(),
            backends: vec![to("v1", 90), to("v2", 10)],
            ..Default::default()
        },
    ]
}
