//! Per-request header work: hop-by-hop stripping, forwarding headers, trace context, detection.

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{BatchSize, Criterion};
use http::header::{HeaderMap, HeaderValue};
use mesh_sidecar::proxy::detect::{H2_PREFACE, classify};
use mesh_sidecar::proxy::headers::{
    MESH_APP_PORT, MESH_ORIG_PROTO, add_forwarded_for, ensure_request_id, strip_hop_by_hop,
};
use mesh_sidecar::trace::{extract, inject};

use crate::cpu::CpuTime;

pub fn bench(c: &mut Criterion<CpuTime>) {
    let client: IpAddr = [127, 0, 0, 1].into();
    let h1 = request_head(true);
    let h2 = request_head(false);
    let b3 = {
        let mut h = request_head(false);
        h.remove("traceparent");
        h.remove("tracestate");
        h.insert("x-b3-traceid", v("80f198ee56343ba864fe8b2a57d3eff7"));
        h.insert("x-b3-spanid", v("e457b5a2e4d86bd1"));
        h.insert("x-b3-sampled", v("1"));
        h
    };

    let mut g = c.benchmark_group("headers");
    // Mutating benchmarks start from a fresh copy each time; the copy (setup) is not timed.
    let fresh = |h: &HeaderMap| {
        let h = h.clone();
        move || h.clone()
    };
    g.bench_function("strip_hop_by_hop/none_present", |b| {
        // Every HTTP/2 message and most responses: one scan of the names, nothing removed.
        let mut h = h2.clone();
        b.iter(|| strip_hop_by_hop(black_box(&mut h), false))
    });
    g.bench_function("strip_hop_by_hop/connection_keep_alive", |b| {
        b.iter_batched(
            fresh(&h1),
            |mut h| {
                strip_hop_by_hop(&mut h, false);
                h
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("forwarded_for_and_request_id", |b| {
        b.iter_batched(
            fresh(&h2),
            |mut h| {
                add_forwarded_for(&mut h, client);
                ensure_request_id(&mut h);
                h
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("trace_extract/w3c", |b| b.iter(|| extract(black_box(&h2))));
    g.bench_function("trace_extract/b3_multi", |b| {
        b.iter(|| extract(black_box(&b3)))
    });
    let w3c_cx = extract(&h2).expect("w3c context");
    g.bench_function("trace_inject/w3c", |b| {
        // Re-injecting replaces the same headers, so the map needs no reset.
        let mut h = h2.clone();
        b.iter(|| inject(black_box(&w3c_cx), &mut h))
    });
    let b3_cx = extract(&b3).expect("b3 context");
    g.bench_function("trace_inject/b3_multi", |b| {
        let mut h = b3.clone();
        b.iter(|| inject(black_box(&b3_cx), &mut h))
    });
    g.bench_function("request_head_clone", |b| {
        // The request driver keeps a copy of the head for a retry (outbound::forward).
        b.iter(|| black_box(&h1).clone())
    });
    g.bench_function("outbound_request_head/http1", |b| {
        // Everything above in the order `outbound::forward` and the observe layer apply it to
        // an HTTP/1.1 request.
        b.iter_batched(
            fresh(&h1),
            |mut h| {
                let incoming = extract(&h);
                strip_hop_by_hop(&mut h, false);
                add_forwarded_for(&mut h, client);
                ensure_request_id(&mut h);
                h.remove(&MESH_APP_PORT);
                h.remove(&MESH_ORIG_PROTO);
                if let Some(cx) = &incoming {
                    inject(cx, &mut h);
                }
                h
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("detect");
    // Once per connection, not per request: the first bytes decide HTTP/1, HTTP/2, TLS, opaque.
    let get = b"GET /api/v1/users HTTP/1.1\r\nHost: svc\r\n\r\n";
    g.bench_function("http1_request_line", |b| {
        b.iter(|| classify(black_box(get)))
    });
    g.bench_function("http2_preface", |b| {
        b.iter(|| classify(black_box(H2_PREFACE)))
    });
    g.finish();
}

fn v(s: &'static str) -> HeaderValue {
    HeaderValue::from_static(s)
}

/// A browser-like request head as an app sends it to its sidecar, with a W3C trace context;
/// `http1` adds the `Connection: keep-alive` pair an HTTP/1.1 client sends.
fn request_head(http1: bool) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", v("reviews.default.svc.cluster.local:9080"));
    h.insert(
        "user-agent",
        v("Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"),
    );
    h.insert("accept", v("application/json, text/plain, */*"));
    h.insert("accept-encoding", v("gzip, deflate, br"));
    h.insert("accept-language", v("en-US,en;q=0.5"));
    h.insert("cookie", v("session=2f6c1d9e; theme=dark"));
    h.insert(
        "traceparent",
        v("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    h.insert("tracestate", v("vendor=opaque"));
    h.insert("x-tenant", v("acme"));
    if http1 {
        h.insert("connection", v("keep-alive"));
        h.insert("keep-alive", v("timeout=5"));
    }
    h
}
