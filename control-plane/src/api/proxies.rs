//! ListProxies: each connected proxy with, per resource type, what was sent and ACKed, the
//! last NACK and the config age.

use mesh_proto::admin::v1 as apb;
use tokio::time::Instant;

use crate::core::Core;
use crate::snapshot::Kind;

pub(super) fn list(core: &Core) -> Vec<apb::ProxyStatus> {
    let now = Instant::now();
    let mut out: Vec<apb::ProxyStatus> = core
        .proxies
        .iter()
        .map(|p| {
            let types = p.types.lock();
            let resources = Kind::ALL
                .iter()
                .map(|k| {
                    let ts = &types[k.index()];
                    let since = ts.last_ack.unwrap_or(p.connected_at);
                    apb::ResourceTypeStatus {
                        type_url: k.type_url().to_string(),
                        acked_versions: ts.acked.clone().into_iter().collect(),
                        sent_versions: ts.sent.clone().into_iter().collect(),
                        last_nack_error: ts.last_nack_error.clone(),
                        last_nack_unix_ms: ts.last_nack_unix_ms,
                        nack_count: ts.nack_count,
                        config_age_ms: now.duration_since(since).as_millis() as u64,
                        subscribed: ts.effective(p.wildcard_name(*k)).into_iter().collect(),
                    }
                })
                .collect();
            let n = &p.node;
            apb::ProxyStatus {
                id: n.id.clone(),
                identity: n.identity.clone().unwrap_or_default(),
                service: n.service.clone(),
                namespace: n.namespace.clone(),
                labels: n.labels.clone().into_iter().collect(),
                address: format!("{}:{}", n.address, n.inbound_port),
                connected_since_unix_ms: p.connected_since_unix_ms,
                resources,
                proxy_version: n.proxy_version.clone(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}
