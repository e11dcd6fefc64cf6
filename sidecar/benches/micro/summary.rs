//! The closing table: every benchmark of this run as nanoseconds and as a multiple of the baseline.
//!
//! Criterion keeps no results in memory that a caller can read, but writes each benchmark's
//! estimates to `<out>/<id>/new/{benchmark,estimates}.json`; this reads back the ones written
//! during this run, in the order they were written.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::Value;

/// The id of the benchmark every other figure is divided by.
pub const BASELINE: &str = "baseline/hashmap_get";

/// True when criterion measures (`cargo bench`), not in test, list or profile mode: the same
/// decision criterion takes from the arguments cargo passes (`--bench`, `--test`, ...).
pub fn measuring() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    has("--bench") && !has("--test") && !has("--list") && !has("--profile-time")
}

/// Prints `id, ns, × baseline` for the estimates written since `started`.
pub fn print(out: &Path, started: SystemTime, baseline: &str) {
    let mut rows: Vec<(SystemTime, String, f64)> = Vec::new();
    collect(out, started, &mut rows);
    rows.sort_by_key(|r| r.0);
    let base = rows.iter().find(|r| r.1 == baseline).map(|r| r.2);
    println!("\n{:<56} {:>10} {:>12}", "benchmark", "ns/op", "× baseline");
    for (_, id, ns) in &rows {
        match base {
            Some(b) => println!("{id:<56} {ns:>10.1} {:>12.1}", ns / b),
            None => println!("{id:<56} {ns:>10.1} {:>12}", "–"),
        }
    }
}

/// Walks `dir` for `new/estimates.json` files written since `started`.
fn collect(dir: &Path, started: SystemTime, rows: &mut Vec<(SystemTime, String, f64)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            if let Some(row) = read(&path).filter(|r| r.0 >= started) {
                rows.push(row);
            }
        } else {
            collect(&path, started, rows);
        }
    }
}

/// (written at, full id, typical ns): criterion's typical value is the regression slope when
/// it has one (iterations sampled linearly), else the mean, the middle figure it prints.
fn read(new: &Path) -> Option<(SystemTime, String, f64)> {
    let json = |name: &str| -> Option<(PathBuf, Value)> {
        let p = new.join(name);
        let v = serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
        Some((p, v))
    };
    let (_, id) = json("benchmark.json")?;
    let (path, est) = json("estimates.json")?;
    let written = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
    let typical = match &est["slope"] {
        Value::Null => &est["mean"],
        slope => slope,
    };
    Some((
        written,
        id["full_id"].as_str()?.to_owned(),
        typical["point_estimate"].as_f64()?,
    ))
}
