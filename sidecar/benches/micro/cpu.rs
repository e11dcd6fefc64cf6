//! A criterion measurement of the benchmark thread's CPU time instead of wall-clock time.
//!
//! The machine these run on is shared: wall-clock samples include the time the thread was
//! preempted, which multiplies nanosecond-scale figures under load. The thread's CPU clock
//! (`CLOCK_THREAD_CPUTIME_ID`, nanosecond resolution) only advances while it runs. Reading it
//! is a system call (~0.3 µs), once per sample of many iterations; criterion's regression over
//! samples of growing size puts that constant in the intercept, not in the per-iteration slope.

use criterion::Throughput;
use criterion::measurement::{Measurement, ValueFormatter};
use nix::time::{ClockId, clock_gettime};

/// Thread CPU time in nanoseconds.
pub struct CpuTime;

fn now_ns() -> u64 {
    // The thread CPU clock exists on every Linux since 2.6.12; failing to read it would make
    // every figure meaningless, so stopping the run is the right answer.
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("thread CPU clock");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

impl Measurement for CpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        now_ns()
    }
    fn end(&self, start: u64) -> u64 {
        now_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (div, unit) = match typical {
            t if t < 1e3 => (1.0, "ns"),
            t if t < 1e6 => (1e3, "µs"),
            t if t < 1e9 => (1e6, "ms"),
            _ => (1e9, "s"),
        };
        values.iter_mut().for_each(|v| *v /= div);
        unit
    }

    fn scale_throughputs(&self, _typical: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        // Per CPU-second; no benchmark here sets a throughput, this only keeps the trait total.
        let n = match *t {
            Throughput::Bytes(n)
            | Throughput::BytesDecimal(n)
            | Throughput::Elements(n)
            | Throughput::Bits(n) => n as f64,
        };
        values.iter_mut().for_each(|v| *v = n * 1e9 / *v);
        "/CPU-s"
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}
