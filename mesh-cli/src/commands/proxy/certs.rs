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

/// A sidecar renews at 70 % ± 10 % of its certificate's life, so with less than a fifth left
/// renewal is overdue: the control plane or the join token is failing it.
const RENEW_OVERDUE_FRACTION: f64 = 0.2;

/// Roots are rotated with an overlap; a week's notice leaves time to publish the next one
/// (the same margin `check` applies to the control plane's CA).
const ROOT_WARN_SECS: i64 = 7 * 86_400;

/// `mesh-cli check` lines for one sidecar's certificates: (ok, text).
pub fn check_lines(proxy: &str, dump: &Value) -> Vec<(bool, String)> {
    let Some(certs) = dump.get("certs") else {
        return vec![(
            false,
            format!("proxy {proxy}: its config dump has no certs section (upgrade the sidecar)"),
        )];
    };
    if certs.is_null() {
        return vec![(
            true,
            format!("proxy {proxy}: no workload identity (plaintext; no certificate to check)"),
        )];
    }
    let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_i64).unwrap_or(0);
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
    let mut out = Vec::new();
    match certs.get("leaf").filter(|l| !l.is_null()) {
        None => out.push((
            false,
            format!(
                "proxy {proxy}: no certificate yet for {} (is the control plane reachable and the join token valid?)",
                text(certs, "identity")
            ),
        )),
        Some(leaf) => {
            let (left, life) = (num(leaf, "expires_in_secs"), num(leaf, "lifetime_secs"));
            let id = text(leaf, "spiffe_id");
            out.push(if left <= 0 {
                (
                    false,
                    format!("proxy {proxy}: certificate for {id} {}", expires_in(leaf)),
                )
            } else if (left as f64) < life as f64 * RENEW_OVERDUE_FRACTION {
                (
                    false,
                    format!(
                        "proxy {proxy}: certificate for {id} expires in {}: renewal is overdue (see the sidecar's log)",
                        expires_in(leaf)
                    ),
                )
            } else {
                (
                    true,
                    format!(
                        "proxy {proxy}: certificate for {id} valid for {}",
                        expires_in(leaf)
                    ),
                )
            });
        }
    }
    let roots = certs
        .get("trust_bundle")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    // A rotation publishes old + new roots: what matters is that one root lasts.
    let longest = roots.iter().map(|r| num(r, "expires_in_secs")).max();
    out.push(match longest {
        None => (false, format!("proxy {proxy}: empty trust bundle")),
        Some(s) if s <= ROOT_WARN_SECS => (
            false,
            format!(
                "proxy {proxy}: every trust-bundle root expires within {} days; rotate the CA",
                ROOT_WARN_SECS / 86_400
            ),
        ),
        Some(s) => (
            true,
            format!(
                "proxy {proxy}: {} trust-bundle root(s), the longest valid for {}d",
                roots.len(),
                s / 86_400
            ),
        ),
    });
    out
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

    use super::{check_lines, expires_in};

    #[test]
    fn expiry_in_operator_units() {
        let e = |s: i64| expires_in(&json!({ "expires_in_secs": s }));
        assert_eq!(e(400 * 86_400), "400d");
        assert_eq!(e(86_399), "23h59m");
        assert_eq!(e(125), "2m");
        assert_eq!(e(-7_200), "EXPIRED 2h0m ago");
        assert_eq!(expires_in(&json!({})), "");
    }

    #[test]
    fn check_flags_expired_overdue_and_expiring_roots() {
        let dump = |left: i64, root_left: i64| {
            json!({"certs": {
                "identity": "spiffe://td/ns/default/sa/api",
                "leaf": {"spiffe_id": "spiffe://td/ns/default/sa/api", "expires_in_secs": left, "lifetime_secs": 86_400},
                "trust_bundle": [{"expires_in_secs": root_left}],
            }})
        };
        let oks = |d: serde_json::Value| -> Vec<bool> {
            check_lines("p", &d).into_iter().map(|(ok, _)| ok).collect()
        };
        let year = 365 * 86_400;
        assert_eq!(oks(dump(50_000, year)), [true, true]);
        // Under a fifth of 24 h left: renewal should have happened.
        assert_eq!(oks(dump(10_000, year)), [false, true]);
        assert_eq!(oks(dump(-5, year)), [false, true]);
        assert_eq!(oks(dump(50_000, 3 * 86_400)), [true, false]);
        assert_eq!(oks(json!({"certs": null})), [true]);
        assert_eq!(oks(json!({})), [false]);
        let no_leaf = json!({"certs": {"identity": "x", "leaf": null, "trust_bundle": []}});
        assert_eq!(oks(no_leaf), [false, false]);
    }
}
