//! `mesh-cli proxy-config <proxy> certs`: the workload certificate and trust bundle a proxy holds, from its config dump.

use serde_json::Value;

use crate::cli::Global;
use crate::error::{CliError, Result};
use crate::output::{Table, print_structured};

/// Prints the dump's `certs` section: JSON/YAML as the proxy wrote it, or a table.
pub fn print(global: &Global, proxy: &str, dump: &Value) -> Result<()> {
    let Some(certs) = dump.get("certs") else {
        return Err(CliError::server(format!(
            "the config dump of {proxy} has no `certs` section: the sidecar predates it; upgrade it, or read its /metrics (mesh_cert_expiration_timestamp_seconds)"
        )));
    };
    if print_structured(global.output, certs)? {
        return Ok(());
    }
    if certs.is_null() {
        println!(
            "proxy {proxy} has no workload identity (started without a join token): it speaks plaintext and presents no certificate"
        );
        return Ok(());
    }
    let s = |v: &Value, k: &str| {
        v.get(k)
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
            .filter(|x| x != "null")
            .unwrap_or_default()
    };
    println!(
        "proxy {proxy}: identity {}, certificate set {} time(s), last at {}",
        s(certs, "identity"),
        s(certs, "rotations"),
        s(certs, "received_at"),
    );
    let mut t = Table::new(&[
        "CERT",
        "SPIFFE ID / SUBJECT",
        "SERIAL",
        "NOT BEFORE",
        "NOT AFTER",
        "EXPIRES IN",
        "ISSUER",
        "CHAIN",
    ]);
    match certs.get("leaf").filter(|l| !l.is_null()) {
        Some(leaf) => t.row(vec![
            "leaf".into(),
            s(leaf, "spiffe_id"),
            s(leaf, "serial"),
            s(leaf, "not_before"),
            s(leaf, "not_after"),
            expires_in(leaf),
            s(leaf, "issuer"),
            s(leaf, "chain_length"),
        ]),
        None => t.row(vec![
            "leaf".into(),
            "(none yet: waiting for the control plane)".into(),
        ]),
    }
    let roots = certs
        .get("trust_bundle")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, root) in roots.iter().enumerate() {
        t.row(vec![
            format!("root[{i}]"),
            s(root, "subject"),
            s(root, "serial"),
            s(root, "not_before"),
            s(root, "not_after"),
            expires_in(root),
            s(root, "issuer"),
            String::new(),
        ]);
    }
    t.print();
    Ok(())
}

/// `364d`, `23h59m`, `12m`, or `EXPIRED 3h ago`: the unit an operator acts on.
fn expires_in(cert: &Value) -> String {
    let Some(secs) = cert.get("expires_in_secs").and_then(Value::as_i64) else {
        return String::new();
    };
    let span = |s: i64| match s {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3_600 => format!("{}h{}m", s / 3_600, s % 3_600 / 60),
        s => format!("{}m", s / 60),
    };
    if secs < 0 {
        format!("EXPIRED {} ago", span(-secs))
    } else {
        span(secs)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::expires_in;

    #[test]
    fn expiry_in_operator_units() {
        let e = |s: i64| expires_in(&json!({ "expires_in_secs": s }));
        assert_eq!(e(400 * 86_400), "400d");
        assert_eq!(e(86_399), "23h59m");
        assert_eq!(e(125), "2m");
        assert_eq!(e(-7_200), "EXPIRED 2h0m ago");
        assert_eq!(expires_in(&json!({})), "");
    }
}
