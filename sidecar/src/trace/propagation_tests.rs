//! Tests of trace context extraction and injection.

use super::*;
use http::HeaderMap;

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn headers(kv: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in kv {
        h.insert(*k, v.parse().unwrap());
    }
    h
}

#[test]
fn w3c_round_trip_keeps_tracestate() {
    let h = headers(&[("traceparent", TP), ("tracestate", "vendor=1")]);
    let cx = extract(&h).expect("valid traceparent");
    assert!(cx.sampled);
    assert_eq!(hex(&cx.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    let mut out = HeaderMap::new();
    inject(&cx, &mut out);
    assert_eq!(out["traceparent"], TP);
    assert_eq!(out["tracestate"], "vendor=1");
}

#[test]
fn b3_single_and_multi_are_answered_in_kind() {
    let single = extract(&headers(&[(
        "b3",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1",
    )]))
    .expect("b3 single");
    assert_eq!(single.format, Format::B3Single);
    let mut out = HeaderMap::new();
    inject(&single, &mut out);
    assert!(
        out["b3"]
            .to_str()
            .unwrap()
            .starts_with("80f198ee56343ba864fe8b2a57d3eff7-")
    );
    assert!(out.contains_key("traceparent"));

    let multi = extract(&headers(&[
        ("x-b3-traceid", "64fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-sampled", "0"),
    ]))
    .expect("b3 multi, 64-bit trace id");
    assert!(!multi.sampled);
    assert_eq!(&multi.trace_id[..8], &[0u8; 8]);
    let mut out = HeaderMap::new();
    inject(&multi, &mut out);
    assert_eq!(out["x-b3-traceid"], "000000000000000064fe8b2a57d3eff7");
    assert_eq!(out["x-b3-sampled"], "0");
}

#[test]
fn malformed_contexts_start_a_new_trace() {
    for bad in [
        "",
        "00-zz-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    ] {
        assert!(
            extract(&headers(&[("traceparent", bad)])).is_none(),
            "{bad}"
        );
    }
    assert!(extract(&headers(&[("b3", "1")])).is_none());
}

proptest::proptest! {
    #[test]
    fn garbage_headers_never_panic(tp in ".{0,80}", b3 in ".{0,80}") {
        let mut h = HeaderMap::new();
        if let Ok(v) = tp.parse() { h.insert("traceparent", v); }
        if let Ok(v) = b3.parse() { h.insert("b3", v); }
        let _ = extract(&h);
    }
}
