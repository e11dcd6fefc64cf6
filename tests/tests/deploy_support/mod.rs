//! Shared helpers for the deploy/ checks: repository paths, YAML documents, ARCHITECTURE.md's port table, required tools.

pub mod contract;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use serde_norway::Value;

/// The repository root (the workspace directory above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
        .to_path_buf()
}

/// A file under the repository root, as text; a missing file fails the test with its path.
pub fn read(rel: &str) -> String {
    let path = repo_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every non-empty document of a (multi-document) YAML file.
pub fn yaml_docs(rel: &str) -> Vec<Value> {
    let text = read(rel);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{rel}: invalid YAML: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// The single document of a YAML file.
pub fn yaml_doc(rel: &str) -> Value {
    let mut docs = yaml_docs(rel);
    assert_eq!(docs.len(), 1, "{rel}: expected exactly one YAML document");
    docs.remove(0)
}

/// A string field, or the test fails naming the field.
pub fn str_at<'a>(v: &'a Value, key: &str, ctx: &str) -> &'a str {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{ctx}: missing string field `{key}`"))
}

/// A sequence field (missing = empty).
pub fn seq_at<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The default ports of ARCHITECTURE.md's "Processes and ports" table, keyed by
/// (process, first word of the "what" column in lower case): e.g. ("mesh-control-plane",
/// "discovery") -> 15010, ("mesh-sidecar", "admin") -> 15000.
pub fn architecture_ports() -> BTreeMap<(String, String), u16> {
    let text = read("ARCHITECTURE.md");
    let mut ports = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("| `mesh-")) {
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        // cols[0] is the empty text before the first '|'.
        let (process, addr, what) = match cols.as_slice() {
            [_, p, a, w, ..] => (p.trim_matches('`'), *a, *w),
            _ => panic!("ARCHITECTURE.md: unexpected port table row: {line}"),
        };
        let port: u16 = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("ARCHITECTURE.md: no port in `{addr}`"));
        let role = what
            .split(|c: char| !c.is_ascii_alphanumeric())
            .find(|w| !w.is_empty())
            .unwrap_or_default()
            .to_ascii_lowercase();
        ports.insert((process.to_string(), role), port);
    }
    ports
}

/// One default port from ARCHITECTURE.md, or the test fails saying which row is missing.
pub fn port(process: &str, role: &str) -> u16 {
    *architecture_ports()
        .get(&(process.to_string(), role.to_string()))
        .unwrap_or_else(|| panic!("ARCHITECTURE.md has no `{role}` port row for {process}"))
}

/// `[workspace.package] version` of the root Cargo.toml: the tag of the images.
pub fn workspace_version() -> String {
    let text = read("Cargo.toml");
    let section = text
        .split("[workspace.package]")
        .nth(1)
        .expect("Cargo.toml has [workspace.package]");
    section
        .lines()
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| l.strip_prefix("version = "))
        .map(|v| v.trim().trim_matches('"').to_string())
        .expect("[workspace.package] has a version")
}

/// The path of a tool the checks need. Missing tools fail the test (never a silent skip) and
/// say how to install them.
pub fn require_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is not on PATH: run deploy/scripts/setup.sh (it installs {name})")
        })
}

/// Runs a command to completion; the test fails with its output unless it exits 0.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
