//! Balancer picks for every policy the balance module offers, over 10 and 1,000 endpoints.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion};
use mesh_sidecar::balance::{Outcome, ServiceLb};
use mesh_sidecar::state::{Cluster, Endpoint, EndpointState, Endpoints, LbPolicy, Name};

use crate::cpu::CpuTime;

/// A small service and the largest one the 1,000-endpoint configuration can hold.
const SIZES: [u16; 2] = [10, 1000];

pub fn bench(c: &mut Criterion<CpuTime>) {
    let mut g = c.benchmark_group("balance");
    for n in SIZES {
        for (name, policy) in [
            ("p2c_peak_ewma", LbPolicy::P2cEwma),
            ("round_robin", LbPolicy::RoundRobin),
            ("weighted_round_robin", LbPolicy::WeightedRoundRobin),
            ("ring_hash", LbPolicy::RingHash),
            ("maglev", LbPolicy::Maglev),
        ] {
            let lb = service(policy, n);
            let pool = lb.subset(None).expect("all endpoints");
            // Hashed policies get a different key each time (a Fibonacci-hashed counter, a
            // nanosecond, so the figure is the walk, not the key hashing); the others ignore it.
            g.bench_with_input(BenchmarkId::new(name, n), &pool, |b, pool| {
                let mut i = 0u64;
                b.iter(|| {
                    i = i.wrapping_add(1);
                    let key = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    pool.pick(black_box(Some(key))).map(|e| e.endpoint.addr)
                })
            });
        }
        // What a request really does with the default policy: pick, count it in flight, and
        // record its outcome (PeakEWMA latency update, error penalty) when it ends.
        let lb = service(LbPolicy::P2cEwma, n);
        let pool = lb.subset(None).expect("all endpoints");
        g.bench_with_input(
            BenchmarkId::new("p2c_pick_start_finish", n),
            &pool,
            |b, pool| {
                b.iter(|| {
                    if let Some(ep) = pool.pick(None) {
                        ep.start().finish(Outcome::Status(200));
                    }
                })
            },
        );
    }
    // Subset lookup by `version` label (a weighted backend names one), then a pick.
    let lb = service(LbPolicy::P2cEwma, 10);
    g.bench_function("subset_lookup_and_pick/10", |b| {
        b.iter(|| {
            lb.subset(black_box(Some("v1")))
                .and_then(|s| s.pick(None))
                .map(|e| e.endpoint.addr)
        })
    });
    g.finish();
}

/// `n` healthy endpoints with weights 1–4 (so weighted round robin has a real schedule), half
/// labelled `version=v1`, half `v2`.
fn service(policy: LbPolicy, n: u16) -> ServiceLb {
    let mut cluster = Cluster::with_defaults("svc".into());
    cluster.lb = policy;
    let endpoints = (0..n)
        .map(|i| Endpoint {
            addr: ([10, 0, (i >> 8) as u8, i as u8], 15006).into(),
            app_port: 8080,
            weight: 1 + u32::from(i % 4),
            zone: None,
            labels: vec![(
                Name::from("version"),
                Name::from(if i % 2 == 0 { "v1" } else { "v2" }),
            )],
            state: EndpointState::Healthy,
            identity: None,
            source: "static".into(),
        })
        .collect();
    let endpoints = Endpoints {
        service: "svc".into(),
        endpoints,
    };
    ServiceLb::build(
        "svc".into(),
        Some(Arc::new(cluster)),
        Some(Arc::new(endpoints)),
        None,
    )
}
