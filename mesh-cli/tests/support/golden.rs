//! Golden `-o json` snapshots: masking of what legitimately varies between runs, comparison
//! with `tests/snapshots/NAME.json` (`MESH_UPDATE_GOLDEN=1` rewrites them).

use std::path::Path;

use serde_json::Value;

/// Keys whose values vary run to run (timestamps, ages, per-run secrets and ids).
const VOLATILE: [&str; 7] = [
    "ca_not_after_unix",
    "connected_since_unix_ms",
    "config_age_ms",
    "last_nack_unix_ms",
    "created_unix",
    "expires_unix",
    "token",
];

/// Masks volatile keys, content hashes (versions) and the control plane's ephemeral port;
/// `ids` also masks `id` (token ids are random).
pub fn mask(v: &mut Value, ids: bool) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                if VOLATILE.contains(&k.as_str()) || (ids && k == "id") {
                    *x = Value::String("<masked>".into());
                } else {
                    mask(x, ids);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| mask(x, ids)),
        Value::String(s) if s.len() >= 12 && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
            *s = "<hash>".into()
        }
        Value::String(s) if s.starts_with("127.0.0.1:") => *s = "127.0.0.1:<port>".into(),
        Value::String(s) if s.starts_with("https://127.0.0.1:") => {
            *s = "https://127.0.0.1:<port>".into()
        }
        _ => {}
    }
}

pub fn snapshot(name: &str, out: &str) {
    let mut v: Value =
        serde_json::from_str(out).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {out}"));
    mask(&mut v, name.starts_with("token"));
    let text = serde_json::to_string_pretty(&v).unwrap() + "\n";
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.json"));
    if std::env::var_os("MESH_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with MESH_UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert_eq!(text, want, "{name}: -o json output changed");
}
