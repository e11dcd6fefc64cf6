//! Unit tests of the per-hop trace decisions: parent links, sampling inheritance, propagation format.

use http::HeaderMap;

use super::*;

fn headers(kv: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in kv {
        h.insert(*k, v.parse().unwrap());
    }
    h
}

#[test]
fn incoming_context_is_the_parent_and_the_next_hop_sees_this_span() {
    let mut h = headers(&[(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    )]);
    let incoming = trace::extract(&h);
    // The ratio says yes, the parent said no: the parent wins.
    let hop = begin(&Sampler::new(1.0), incoming.as_ref());
    assert!(!hop.sampled);
    assert_eq!(
        trace::hex_id(&hop.trace_id),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(
        hop.parent.map(|p| trace::hex_id(&p)).as_deref(),
        Some("00f067aa0ba902b7")
    );
    inject(&hop, incoming, &mut h);
    let out = trace::extract(&h).unwrap();
    assert_eq!(out.span_id, hop.span_id);
    assert!(!out.sampled);
}

#[test]
fn no_context_starts_a_trace_and_b3_is_answered_in_kind() {
    let hop = begin(&Sampler::new(0.0), None);
    assert!(hop.parent.is_none() && !hop.sampled);

    let mut h = headers(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")]);
    let incoming = trace::extract(&h);
    let hop = begin(&Sampler::new(0.0), incoming.as_ref());
    assert!(hop.sampled);
    inject(&hop, incoming, &mut h);
    let b3 = h["b3"].to_str().unwrap();
    assert_eq!(
        b3,
        format!(
            "80f198ee56343ba864fe8b2a57d3eff7-{}-1",
            trace::hex_id(&hop.span_id)
        )
    );
    assert!(h.contains_key("traceparent"));
}

#[test]
fn causes_read_back_as_static_names_only() {
    let h = headers(&[(MESH_ERROR, "no-endpoints")]);
    assert_eq!(cause_of(&h), Some("no-endpoints"));
    assert_eq!(cause_of(&headers(&[(MESH_ERROR, "made-up")])), None);
    assert_eq!(metrics::status_class(503), "5xx");
}
