//! Trace context extraction and injection: W3C `traceparent`/`tracestate`, B3 single and multi.

use http::{HeaderMap, HeaderName, HeaderValue};

// Pre-parsed names: a lookup by `&str` parses and validates the name on every request.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const B3: HeaderName = HeaderName::from_static("b3");
const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");

/// Which header format the context arrived in; we answer downstream in the same format
/// (plus W3C), so B3-only services keep working.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    W3c,
    B3Single,
    B3Multi,
}

/// A span's position in a trace, as carried between hops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
    pub tracestate: Option<HeaderValue>,
    pub format: Format,
}

/// Extracts the caller's context, W3C first, then B3 single, then B3 multi.
/// Malformed headers are ignored (a new trace starts), never an error for the request.
pub fn extract(h: &HeaderMap) -> Option<TraceContext> {
    if let Some(tp) = h.get(TRACEPARENT).and_then(|v| v.to_str().ok())
        && let Some(mut cx) = parse_traceparent(tp)
    {
        cx.tracestate = h.get(TRACESTATE).cloned();
        return Some(cx);
    }
    if let Some(b3) = h.get(B3).and_then(|v| v.to_str().ok()) {
        return parse_b3_single(b3);
    }
    let tid = h.get(B3_TRACE_ID)?.to_str().ok()?;
    let sid = h.get(B3_SPAN_ID)?.to_str().ok()?;
    // Absent means "defer": we sample, as the caller asked us to trace by sending ids.
    let sampled = !matches!(
        h.get(B3_SAMPLED).and_then(|v| v.to_str().ok()),
        Some("0" | "false")
    );
    Some(TraceContext {
        trace_id: parse_trace_id(tid)?,
        span_id: parse_hex::<8>(sid)?,
        sampled,
        tracestate: None,
        format: Format::B3Multi,
    })
}

/// Writes `cx` (with `cx.span_id` as the parent of the next hop) into `h`: always W3C, and B3
/// in the format the context arrived in.
pub fn inject(cx: &TraceContext, h: &mut HeaderMap) {
    // `00-<32 hex>-<16 hex>-<2 hex>`: 55 bytes, built on the stack (no String per request).
    let mut tp = [b'-'; 55];
    tp[..2].copy_from_slice(b"00");
    hex_into(&cx.trace_id, &mut tp[3..35]);
    hex_into(&cx.span_id, &mut tp[36..52]);
    tp[53..].copy_from_slice(if cx.sampled { b"01" } else { b"00" });
    if let Ok(v) = HeaderValue::from_bytes(&tp) {
        h.insert(TRACEPARENT, v);
    }
    if let Some(ts) = &cx.tracestate {
        h.insert(TRACESTATE, ts.clone());
    }
    if cx.format == Format::W3c {
        return;
    }
    let tid = hex(&cx.trace_id);
    let sid = hex(&cx.span_id);
    let sampled = if cx.sampled { "1" } else { "0" };
    match cx.format {
        Format::W3c => {}
        Format::B3Single => {
            if let Ok(v) = HeaderValue::from_str(&format!("{tid}-{sid}-{sampled}")) {
                h.insert(B3, v);
            }
        }
        Format::B3Multi => {
            for (k, v) in [
                ("x-b3-traceid", tid.as_str()),
                ("x-b3-spanid", sid.as_str()),
                ("x-b3-sampled", sampled),
            ] {
                if let Ok(v) = HeaderValue::from_str(v) {
                    h.insert(k, v);
                }
            }
            h.remove("x-b3-parentspanid");
        }
    }
}

fn parse_traceparent(s: &str) -> Option<TraceContext> {
    let mut it = s.trim().split('-');
    let version = it.next()?;
    if version.len() != 2 || version == "ff" {
        return None;
    }
    let trace_id = parse_hex::<16>(it.next()?)?;
    let span_id = parse_hex::<8>(it.next()?)?;
    let flags = parse_hex::<1>(it.next()?)?[0];
    // Version 00 has exactly four fields; later versions may append more.
    if version == "00" && it.next().is_some() {
        return None;
    }
    valid(&trace_id, &span_id).then_some(TraceContext {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
        tracestate: None,
        format: Format::W3c,
    })
}

fn parse_b3_single(s: &str) -> Option<TraceContext> {
    let mut it = s.trim().split('-');
    let first = it.next()?;
    if first == "0" || first == "1" || first == "d" {
        // A bare sampling decision carries no ids: start a new trace.
        return None;
    }
    let trace_id = parse_trace_id(first)?;
    let span_id = parse_hex::<8>(it.next()?)?;
    let sampled = !matches!(it.next(), Some("0"));
    valid(&trace_id, &span_id).then_some(TraceContext {
        trace_id,
        span_id,
        sampled,
        tracestate: None,
        format: Format::B3Single,
    })
}

/// B3 trace ids may be 64-bit (16 hex) or 128-bit (32 hex); 64-bit ids are left-padded.
fn parse_trace_id(s: &str) -> Option<[u8; 16]> {
    match s.len() {
        32 => parse_hex::<16>(s),
        16 => {
            let low = parse_hex::<8>(s)?;
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&low);
            Some(id)
        }
        _ => None,
    }
}

fn valid(trace_id: &[u8; 16], span_id: &[u8; 8]) -> bool {
    trace_id.iter().any(|b| *b != 0) && span_id.iter().any(|b| *b != 0)
}

fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nibble(b[2 * i])? << 4) | nibble(b[2 * i + 1])?;
    }
    Some(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Lower-case hex of `bytes`.
/// Lower-case hex of `bytes` into `out` (twice as long).
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, o) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        o[0] = DIGITS[(b >> 4) as usize];
        o[1] = DIGITS[(b & 0xf) as usize];
    }
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

#[cfg(test)]
#[path = "propagation_tests.rs"]
mod tests;
