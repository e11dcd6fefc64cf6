//! `status` (control plane health + every proxy, NACKs included) and `check` (pre-flight).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use mesh_proto::admin::v1::{HealthResponse, ListRequest, ProxyStatus};
use mesh_proto::type_url;
use serde::Serialize;

use crate::cli::{CheckArgs, Global};
use crate::client::{self, Admin};
use crate::commands::proxy::{certs, config_dump};
use crate::error::{CliError, Result};
use crate::output::{Table, print_structured};

/// A CA expiring within this window is reported: a week leaves time to rotate calmly.
const CA_WARN_SECS: i64 = 7 * 86_400;

#[derive(Serialize)]
struct StatusView {
    control_plane: ControlPlaneView,
    proxies: Vec<ProxyView>,
}

#[derive(Serialize)]
struct ControlPlaneView {
    address: String,
    ready: bool,
    version: String,
    connected_proxies: u32,
    trust_domain: String,
    ca_not_after_unix: i64,
}

#[derive(Serialize)]
struct ProxyView {
    id: String,
    service: String,
    namespace: String,
    identity: String,
    address: String,
    proxy_version: String,
    connected_since_unix_ms: i64,
    in_sync: bool,
    resources: Vec<ResourceView>,
}

#[derive(Serialize)]
struct ResourceView {
    #[serde(rename = "type")]
    kind: String,
    acked: BTreeMap<String, String>,
    sent: BTreeMap<String, String>,
    in_sync: bool,
    config_age_ms: u64,
    nack_count: u64,
    last_nack_error: String,
    last_nack_unix_ms: i64,
}

async fn fetch(admin: &mut Admin) -> Result<(HealthResponse, Vec<ProxyStatus>)> {
    let health = admin.client.health(ListRequest {}).await;
    let health = health.map_err(|s| admin.error("health", s))?.into_inner();
    let proxies = admin.client.list_proxies(ListRequest {}).await;
    let mut proxies = proxies
        .map_err(|s| admin.error("listing proxies", s))?
        .into_inner()
        .proxies;
    proxies.sort_by(|a, b| (&a.service, &a.id).cmp(&(&b.service, &b.id)));
    Ok((health, proxies))
}

fn view(addr: &str, h: HealthResponse, proxies: Vec<ProxyStatus>) -> StatusView {
    let proxies = proxies
        .into_iter()
        .map(|p| {
            let mut resources: Vec<ResourceView> = p
                .resources
                .into_iter()
                .map(|r| {
                    let in_sync = r
                        .sent_versions
                        .iter()
                        .all(|(k, v)| r.acked_versions.get(k) == Some(v));
                    ResourceView {
                        kind: r
                            .type_url
                            .rsplit('.')
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                        acked: r.acked_versions.into_iter().collect(),
                        sent: r.sent_versions.into_iter().collect(),
                        in_sync,
                        config_age_ms: r.config_age_ms,
                        nack_count: r.nack_count,
                        last_nack_error: r.last_nack_error,
                        last_nack_unix_ms: r.last_nack_unix_ms,
                    }
                })
                .collect();
            let order = |k: &str| {
                type_url::ALL
                    .iter()
                    .position(|t| t.ends_with(k))
                    .unwrap_or(usize::MAX)
            };
            resources.sort_by_key(|r| order(&r.kind));
            ProxyView {
                in_sync: resources.iter().all(|r| r.in_sync),
                id: p.id,
                service: p.service,
                namespace: p.namespace,
                identity: p.identity,
                address: p.address,
                proxy_version: p.proxy_version,
                connected_since_unix_ms: p.connected_since_unix_ms,
                resources,
            }
        })
        .collect();
    StatusView {
        control_plane: ControlPlaneView {
            address: addr.to_string(),
            ready: h.ready,
            version: h.version,
            connected_proxies: h.connected_proxies,
            trust_domain: h.trust_domain,
            ca_not_after_unix: h.ca_not_after_unix,
        },
        proxies,
    }
}

pub async fn status(global: &Global) -> Result<()> {
    let mut admin = client::connect(global).await?;
    let (h, proxies) = fetch(&mut admin).await?;
    let v = view(&admin.addr, h, proxies);
    if print_structured(global.output, &v)? {
        return Ok(());
    }
    let cp = &v.control_plane;
    println!(
        "control plane {}: {}, version {}, trust domain {}, CA {}, {} prox{} connected",
        cp.address,
        if cp.ready { "ready" } else { "NOT READY" },
        cp.version,
        cp.trust_domain,
        ca_text(cp.ca_not_after_unix),
        cp.connected_proxies,
        if cp.connected_proxies == 1 {
            "y"
        } else {
            "ies"
        }
    );
    if v.proxies.is_empty() {
        println!("no proxies connected");
        return Ok(());
    }
    let types = [
        "Runtime",
        "Cluster",
        "Endpoints",
        "Listener",
        "AuthorizationPolicy",
        "Route",
    ];
    let mut header = vec!["ID", "SERVICE", "IDENTITY"];
    header.extend(types);
    header.extend(["CONFIG AGE", "LAST NACK"]);
    let mut t = Table::new(&header);
    for p in &v.proxies {
        let mut row = vec![p.id.clone(), p.service.clone(), p.identity.clone()];
        for ty in types {
            row.push(
                p.resources
                    .iter()
                    .find(|r| r.kind == ty)
                    .map_or(String::new(), acked_cell),
            );
        }
        let age = p
            .resources
            .iter()
            .map(|r| r.config_age_ms)
            .min()
            .unwrap_or(0);
        row.push(format!("{:.1}s", age as f64 / 1000.0));
        // NACKs are never hidden: every type with one shows its last error text in full.
        let nacks: Vec<String> = p
            .resources
            .iter()
            .filter(|r| r.nack_count > 0)
            .map(|r| format!("{} ({}x): {}", r.kind, r.nack_count, r.last_nack_error))
            .collect();
        row.push(nacks.join("; "));
        t.row(row);
    }
    t.print();
    Ok(())
}

fn ca_text(not_after: i64) -> String {
    if not_after == 0 {
        "not reported".to_string()
    } else {
        format!("valid until {}", super::unix_date(not_after))
    }
}

/// `name=version` per resource for one or two; a count beyond that; `*` marks not-yet-ACKed.
fn acked_cell(r: &ResourceView) -> String {
    let mark = if r.in_sync { "" } else { "*" };
    if r.acked.is_empty() {
        return format!("none{mark}");
    }
    if r.acked.len() <= 2 {
        let parts: Vec<String> = r
            .acked
            .iter()
            .map(|(k, v)| format!("{k}={}", v.chars().take(8).collect::<String>()))
            .collect();
        return format!("{}{mark}", parts.join(","));
    }
    format!("{} acked{mark}", r.acked.len())
}

/// Pre-flight: each check prints one line; any failure exits 3 naming it.
pub async fn check(global: &Global, args: &CheckArgs) -> Result<()> {
    let mut admin = client::connect(global).await?;
    let (h, proxies) = fetch(&mut admin).await?;
    let v = view(&admin.addr, h, proxies);
    let mut failures = Vec::new();
    let mut line = |ok: bool, text: String| {
        println!("{} {text}", if ok { "ok  " } else { "FAIL" });
        if !ok {
            failures.push(text);
        }
    };
    let cp = &v.control_plane;
    line(true, format!("control plane reachable at {}", cp.address));
    line(
        cp.ready,
        format!("control plane ready (version {})", cp.version),
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let left = cp.ca_not_after_unix - now;
    if cp.ca_not_after_unix == 0 {
        println!("note the control plane reports no CA certificate (identity not configured)");
    } else {
        line(
            left > CA_WARN_SECS,
            format!(
                "CA certificate {} ({} days left; rotate below {})",
                ca_text(cp.ca_not_after_unix),
                left / 86_400,
                CA_WARN_SECS / 86_400
            ),
        );
    }
    for p in &v.proxies {
        let nack = p.resources.iter().find(|r| !r.in_sync && r.nack_count > 0);
        let detail = match nack {
            Some(r) => format!(": {} NACKed: {}", r.kind, r.last_nack_error),
            None if !p.in_sync => ": waiting for ACKs".to_string(),
            None => String::new(),
        };
        line(
            p.in_sync,
            format!("proxy {} ({}) in sync{detail}", p.id, p.service),
        );
    }
    if v.proxies.is_empty() {
        println!("note no proxies connected");
    }
    for proxy in &args.proxies {
        match config_dump(proxy).await {
            Ok(dump) => {
                for (ok, text) in certs::check_lines(proxy, &dump) {
                    line(ok, text);
                }
            }
            Err(e) => line(false, e.to_string()),
        }
    }
    match failures.len() {
        0 => Ok(()),
        n => Err(CliError::server(format!(
            "{n} check(s) failed; first: {}",
            failures[0]
        ))),
    }
}
