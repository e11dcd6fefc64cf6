//! `route set --wait`: poll the proxies until every subscriber ACKed the new route version.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mesh_proto::admin::v1::{ListRequest, ProxyStatus, ResourceTypeStatus};
use mesh_proto::type_url;

use crate::client::Admin;
use crate::error::{CliError, Result};

/// Convergence normally takes tens of milliseconds; polling every 50 ms keeps the printed time
/// honest to within that, at a cost of a few tiny unary calls.
const POLL: Duration = Duration::from_millis(50);

/// NACK counters per proxy before the change, so only a new NACK fails the wait.
pub type NackBaseline = HashMap<String, u64>;

pub async fn baseline(admin: &mut Admin) -> Result<NackBaseline> {
    Ok(proxies(admin)
        .await?
        .iter()
        .filter_map(|p| Some((p.id.clone(), route_status(p)?.nack_count)))
        .collect())
}

/// Outcome of a successful wait.
pub struct Converged {
    pub proxies: usize,
    pub elapsed: Duration,
}

/// Waits until every proxy subscribed to `service`'s route ACKed `version`. `started` is when
/// the change was sent, so the elapsed time covers the whole push.
pub async fn until_acked(
    admin: &mut Admin,
    service: &str,
    version: &str,
    before: &NackBaseline,
    started: Instant,
    timeout: Duration,
) -> Result<Converged> {
    loop {
        let all = proxies(admin).await?;
        let subscribed: Vec<(&ProxyStatus, &ResourceTypeStatus)> = all
            .iter()
            .filter_map(|p| Some((p, route_status(p)?)))
            .filter(|(_, r)| subscribes(r, service))
            .collect();
        for (p, r) in &subscribed {
            let acked = r.acked_versions.get(service).map(String::as_str);
            let sent = r.sent_versions.get(service).map(String::as_str);
            let new_nack = r.nack_count > before.get(&p.id).copied().unwrap_or(0);
            if new_nack && acked != Some(version) && sent == Some(version) {
                return Err(CliError::Wait(format!(
                    "proxy {} ({}) rejected route {service} version {version}: {} (fix the rule and set it again; `mesh-cli status` shows every proxy)",
                    p.id, p.service, r.last_nack_error
                )));
            }
        }
        let pending: Vec<String> = subscribed
            .iter()
            .filter(|(_, r)| r.acked_versions.get(service).map(String::as_str) != Some(version))
            .map(|(p, _)| p.id.clone())
            .collect();
        if pending.is_empty() {
            return Ok(Converged {
                proxies: subscribed.len(),
                elapsed: started.elapsed(),
            });
        }
        if started.elapsed() >= timeout {
            return Err(CliError::Wait(format!(
                "timed out after {:.1}s: {} of {} proxies have not ACKed route {service} version {version}: {} (are they connected? see `mesh-cli status`; raise --wait-timeout)",
                timeout.as_secs_f64(),
                pending.len(),
                subscribed.len(),
                pending.join(", ")
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn proxies(admin: &mut Admin) -> Result<Vec<ProxyStatus>> {
    let resp = admin.client.list_proxies(ListRequest {}).await;
    Ok(resp
        .map_err(|s| admin.error("listing proxies", s))?
        .into_inner()
        .proxies)
}

fn route_status(p: &ProxyStatus) -> Option<&ResourceTypeStatus> {
    p.resources.iter().find(|r| r.type_url == type_url::ROUTE)
}

fn subscribes(r: &ResourceTypeStatus, service: &str) -> bool {
    r.subscribed
        .iter()
        .any(|s| s == service || s == mesh_proto::WILDCARD)
        || r.sent_versions.contains_key(service)
}
