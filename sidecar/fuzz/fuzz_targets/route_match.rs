//! Fuzzes Route conversion (any protobuf bytes) and matching against arbitrary requests.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proto::types::v1 as pb;
use mesh_sidecar::routing::{RequestInfo, pick_backend, rewrite, select};
use mesh_sidecar::state::Route;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    // First byte: split point between the route message and the request description.
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let split = (split as usize).min(rest.len());
    let (route_bytes, req_bytes) = rest.split_at(split);
    let Ok(proto) = pb::Route::decode(route_bytes) else {
        return;
    };
    let Ok(route) = Route::try_from(&proto) else {
        return;
    };

    // Request: "<method> <path-and-query>\n<name>: <value>\n…", invalid parts skipped.
    let text = String::from_utf8_lossy(req_bytes);
    let mut lines = text.lines();
    let mut builder = http::Request::builder();
    if let Some((method, pq)) = lines.next().and_then(|l| l.split_once(' ')) {
        builder = builder.method(method).uri(pq);
    }
    for l in lines {
        if let Some((n, v)) = l.split_once(": ") {
            builder = builder.header(n, v);
        }
    }
    let Ok(req) = builder.body(()) else { return };
    if let Some(sel) = select(&route, RequestInfo::from_request(&req)) {
        let _ = rewrite(&sel, req.uri());
        for draw in [0, 1, sel.rule.total_weight.saturating_sub(1), u32::MAX] {
            let _ = pick_backend(sel.rule, draw);
        }
    }
});
