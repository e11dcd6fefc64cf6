//! Criterion micro-benchmarks of the per-request work: route matching, balancer picks, header handling.
//!
//! Run: `cargo bench -p mesh-sidecar --bench micro` (release profile); a filter picks groups,
//! e.g. `cargo bench -p mesh-sidecar --bench micro -- balance/`. Every group is measured in
//! the same run as `baseline/hashmap_get` (one `HashMap<Arc<str>, _>` lookup by `&str`, the
//! cheapest thing the data path does per request), and the run ends with a table of every
//! figure as a multiple of it, so results compare across machines. Figures are the benchmark
//! thread's CPU time ([`cpu::CpuTime`]), not wall-clock time: the machine is shared. Nothing
//! is timed against a limit: `cargo test --benches` runs each benchmark once (criterion's test
//! mode) to check it works.

mod balance;
mod cpu;
mod headers;
mod routes;
mod summary;

use std::collections::HashMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use cpu::CpuTime;
use criterion::Criterion;
use mesh_sidecar::state::Name;

fn main() {
    let started = SystemTime::now();
    // Criterion's report directory, set explicitly so the summary reads what this run wrote
    // (criterion would otherwise derive it from `CARGO_TARGET_DIR` or `cargo metadata`).
    let out: PathBuf = [env!("CARGO_TARGET_TMPDIR"), "..", "criterion"]
        .iter()
        .collect();
    // 1 s warm-up + 2 s of samples per benchmark (criterion's defaults are 3 s + 5 s): the
    // whole set (~30 benchmarks) then takes about two minutes, and every figure here is a
    // nanosecond-scale loop whose 95 % confidence interval is within ~2 % after 2 s.
    // Command-line flags (`--measurement-time`, `--warm-up-time`) override both.
    let mut c = Criterion::default()
        .with_measurement(CpuTime)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .output_directory(&out)
        .configure_from_args();
    baseline(&mut c);
    routes::bench(&mut c);
    balance::bench(&mut c);
    headers::bench(&mut c);
    c.final_summary();
    if summary::measuring() {
        summary::print(&out, started, summary::BASELINE);
    }
}

/// The yardstick: one lookup in a 100-entry map keyed like the snapshot's maps.
fn baseline(c: &mut Criterion<CpuTime>) {
    let map: HashMap<Name, u32> = (0..100)
        .map(|i| (Name::from(format!("svc-{i}")), i))
        .collect();
    c.bench_function(summary::BASELINE, |b| {
        b.iter(|| map.get(black_box("svc-42")).copied())
    });
}
