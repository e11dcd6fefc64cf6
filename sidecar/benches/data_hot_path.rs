//! Micro-benchmarks of the per-request decisions: detection, route selection, weighted pick,
//! balancer picks. Prints ns/op next to a baseline (one HashMap lookup) measured in the same
//! run, so numbers compare across machines. Not a test: nothing is asserted.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use mesh_proto::types::v1 as pb;
use mesh_sidecar::balance::{ServiceLb, hash64};
use mesh_sidecar::proxy::detect::classify;
use mesh_sidecar::routing::{RequestInfo, pick_backend, select};
use mesh_sidecar::state::{Cluster, Endpoint, EndpointState, Endpoints, LbPolicy, Name, Route};

/// Iterations per measurement: enough for ~10–100 ms per case on a laptop-class core.
const ITERS: u32 = 200_000;

fn measure(name: &str, baseline_ns: Option<f64>, mut f: impl FnMut(u32)) -> f64 {
    // Warm-up: a tenth of the iterations, so caches and branch predictors settle.
    for i in 0..ITERS / 10 {
        f(i);
    }
    let start = Instant::now();
    for i in 0..ITERS {
        f(i);
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(ITERS);
    match baseline_ns {
        Some(b) => println!("{name:<40} {ns:>8.1} ns/op  {:>6.1}× baseline", ns / b),
        None => println!("{name:<40} {ns:>8.1} ns/op  (baseline)"),
    }
    ns
}

fn route() -> Route {
    let rule = |name: &str, prefix: &str| pb::RouteRule {
        name: name.into(),
        matches: vec![pb::RouteMatch {
            path: Some(pb::PathMatch {
                kind: pb::PathMatchKind::Prefix as i32,
                value: prefix.into(),
            }),
            headers: vec![pb::KeyValueMatch {
                name: "x-tenant".into(),
                kind: pb::ValueMatchKind::Exact as i32,
                value: "acme".into(),
            }],
            ..Default::default()
        }],
        backends: vec![pb::WeightedBackend {
            service: "svc".into(),
            subset: "v1".into(),
            weight: 1,
        }],
        ..Default::default()
    };
    let mut rules: Vec<_> = (0..4)
        .map(|i| rule(&format!("r{i}"), &format!("/api/{i}/")))
        .collect();
    rules.push(pb::RouteRule {
        name: "split".into(),
        backends: vec![
            pb::WeightedBackend {
                service: "svc".into(),
                subset: "v1".into(),
                weight: 80,
            },
            pb::WeightedBackend {
                service: "svc".into(),
                subset: "v2".into(),
                weight: 20,
            },
        ],
        ..Default::default()
    });
    Route::try_from(&pb::Route {
        service: "svc".into(),
        rules,
    })
    .expect("valid route")
}

fn lb(policy: LbPolicy, n: u16) -> ServiceLb {
    let mut c = Cluster::with_defaults("svc".into());
    c.lb = policy;
    let endpoints = (0..n)
        .map(|i| Endpoint {
            addr: ([10, 0, 0, 1], 15006 + i).into(),
            app_port: 8080,
            weight: 1,
            zone: None,
            labels: vec![(Name::from("version"), Name::from("v1"))],
            state: EndpointState::Healthy,
            identity: None,
            source: "static".into(),
        })
        .collect();
    let eps = Endpoints {
        service: "svc".into(),
        endpoints,
    };
    ServiceLb::build("svc".into(), Some(Arc::new(c)), Some(Arc::new(eps)), None)
}

fn main() {
    println!("data path hot-path costs ({ITERS} iterations each)");
    let map: HashMap<Name, u32> = (0..100)
        .map(|i| (Name::from(format!("svc-{i}")), i))
        .collect();
    let base = measure("baseline: HashMap<Arc<str>> lookup", None, |_| {
        black_box(map.get(black_box("svc-42")));
    });

    let head = b"GET /api/v1/users HTTP/1.1\r\nHost: svc\r\n\r\n";
    measure("detect: HTTP/1 request line", Some(base), |_| {
        black_box(classify(black_box(head)));
    });

    let r = route();
    let req = http::Request::get("/other/path")
        .header("x-tenant", "acme")
        .body(())
        .expect("request");
    measure("route: select (falls through 4 rules)", Some(base), |_| {
        black_box(select(black_box(&r), RequestInfo::from_request(&req)));
    });
    let rule = &r.rules[4];
    measure("route: weighted pick 80/20", Some(base), |i| {
        black_box(pick_backend(rule, i % 100));
    });

    for (name, policy) in [
        ("lb: P2C PeakEWMA pick (10 endpoints)", LbPolicy::P2cEwma),
        ("lb: round robin pick (10 endpoints)", LbPolicy::RoundRobin),
        ("lb: ring hash pick (10 endpoints)", LbPolicy::RingHash),
        ("lb: maglev pick (10 endpoints)", LbPolicy::Maglev),
    ] {
        let l = lb(policy, 10);
        let s = l.subset(None).expect("all endpoints");
        measure(name, Some(base), |i| {
            black_box(s.pick(Some(hash64(&i.to_le_bytes()))));
        });
    }
    let l = lb(LbPolicy::P2cEwma, 10);
    let s = l.subset(None).expect("all endpoints");
    measure(
        "lb: pick + in-flight guard start/finish",
        Some(base),
        |_| {
            if let Some(ep) = s.pick(None) {
                ep.start()
                    .finish(mesh_sidecar::balance::Outcome::Status(200));
            }
        },
    );
}
