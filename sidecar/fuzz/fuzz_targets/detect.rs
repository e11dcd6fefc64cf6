//! Fuzzes protocol detection and the HTTP/1 head validator: total functions, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_sidecar::proxy::detect::{Verdict, classify};
use mesh_sidecar::proxy::guard::validate;

fuzz_target!(|data: &[u8]| {
    // Every prefix must classify without panicking, and a verdict never un-happens: once a
    // prefix is known, longer inputs with that prefix do not ask for more bytes.
    let mut known = false;
    for end in 0..=data.len().min(64) {
        match classify(&data[..end]) {
            Verdict::NeedMore => assert!(!known || end == 0, "verdict regressed to NeedMore"),
            Verdict::Preamble(_, len) => {
                assert!(len <= end);
                known = true;
            }
            Verdict::Known(_) => known = true,
        }
    }
    let _ = classify(data);
    let _ = validate(data, 4096);
});
