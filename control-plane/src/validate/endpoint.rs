//! Endpoint, node and service-declaration validation.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use mesh_proto::discovery::v1 as dpb;
use mesh_proto::types::v1 as pb;

use super::cluster::unknown_enum;
use super::{
    Result, ValidationError, bounded, err, identity, opt_text, port, ports, service_name, text,
};
use crate::model::{Endpoint, EndpointSource, EndpointState, ProxyNode, ServiceDecl};

/// Highest endpoint weight: relative weights beyond 10,000:1 are never meaningful and large
/// values would overflow weighted-round-robin sums in the proxy.
const MAX_WEIGHT: u32 = 10_000;

/// Namespace used when a node or declaration leaves it empty.
pub const DEFAULT_NAMESPACE: &str = "default";

impl TryFrom<pb::Endpoint> for Endpoint {
    type Error = ValidationError;

    /// Admin-registered (static) endpoint; `source` on the wire is ignored.
    fn try_from(e: pb::Endpoint) -> Result<Self> {
        let address: SocketAddr = e.address.parse().map_err(|_| {
            err(
                "endpoint.address",
                format!("{:?} is not ip:port", e.address),
            )
        })?;
        if address.port() == 0 {
            return Err(err("endpoint.address", "port 0 is not reachable"));
        }
        if e.weight > MAX_WEIGHT {
            return Err(err(
                "endpoint.weight",
                format!("{} is out of range (at most {MAX_WEIGHT})", e.weight),
            ));
        }
        let state = match pb::EndpointState::try_from(e.state) {
            Ok(pb::EndpointState::Unspecified | pb::EndpointState::Healthy) => {
                EndpointState::Healthy
            }
            Ok(pb::EndpointState::Draining) => EndpointState::Draining,
            Ok(pb::EndpointState::Unhealthy) => EndpointState::Unhealthy,
            Err(_) => return Err(unknown_enum("endpoint.state", e.state)),
        };
        Ok(Endpoint {
            address,
            // 0 = unset: an equal share.
            weight: e.weight.max(1),
            zone: opt_text("endpoint.zone", &e.zone)?,
            labels: labels("endpoint.labels", e.labels)?,
            state,
            identity: match e.identity.as_str() {
                "" => None,
                s => Some(identity("endpoint.identity", s)?),
            },
            app_port: match e.app_port {
                0 => None,
                p => Some(port("endpoint.app_port", p)?),
            },
            source: EndpointSource::Static,
        })
    }
}

/// The node of a discovery stream's first request.
pub fn node_from_proto(n: dpb::Node) -> Result<ProxyNode> {
    if n.id.is_empty() {
        return Err(err("node.id", "must not be empty"));
    }
    text("node.id", &n.id)?;
    let address: IpAddr = n.address.parse().map_err(|_| {
        err(
            "node.address",
            format!("{:?} is not an IP address", n.address),
        )
    })?;
    Ok(ProxyNode {
        id: n.id,
        identity: match n.identity.as_str() {
            "" => None,
            s => Some(identity("node.identity", s)?),
        },
        service: service_name("node.service", &n.service)?,
        namespace: namespace("node.namespace", &n.namespace)?,
        service_account: {
            text("node.service_account", &n.service_account)?;
            n.service_account
        },
        labels: node_labels(n.labels)?,
        proxy_version: {
            text("node.proxy_version", &n.proxy_version)?;
            n.proxy_version
        },
        address,
        inbound_port: port("node.inbound_port", n.inbound_port)?,
        app_ports: ports("node.app_ports", &n.app_ports)?,
        zone: opt_text("node.zone", &n.zone)?,
    })
}

/// Labels a proxy may announce: at most this many, each key and value at most 63 bytes (the
/// Kubernetes label limits), so one endpoint adds at most ~4 KiB to its service's Endpoints
/// resource and no single proxy can push a response past what clients accept.
pub const MAX_NODE_LABELS: usize = 32;
const MAX_NODE_LABEL_LEN: usize = 63;

fn node_labels(m: std::collections::HashMap<String, String>) -> Result<BTreeMap<String, String>> {
    if m.len() > MAX_NODE_LABELS {
        return Err(err(
            "node.labels",
            format!("{} labels; at most {MAX_NODE_LABELS}", m.len()),
        ));
    }
    for (k, v) in &m {
        if k.len() > MAX_NODE_LABEL_LEN || v.len() > MAX_NODE_LABEL_LEN {
            return Err(err(
                format!("node.labels[{:?}]", k.chars().take(16).collect::<String>()),
                format!("keys and values are at most {MAX_NODE_LABEL_LEN} bytes"),
            ));
        }
    }
    labels("node.labels", m)
}

/// A service created through the admin API.
/// A service created through the admin API. `identities` are SPIFFE IDs, or `sa/NAME` /
/// `ns/NS/sa/NAME` short forms resolved in `trust_domain` and the service's namespace.
pub fn service_decl(
    service: &str,
    ns: &str,
    service_ports: &[u32],
    identities: &[String],
    trust_domain: &str,
) -> Result<ServiceDecl> {
    let namespace = namespace("namespace", ns)?;
    bounded("identities", identities.len())?;
    let mut ids = Vec::with_capacity(identities.len());
    for (i, raw) in identities.iter().enumerate() {
        let field = format!("identities[{i}]");
        let full = if raw.starts_with("spiffe://") {
            raw.clone()
        } else if let Some(sa) = raw.strip_prefix("sa/") {
            format!("spiffe://{trust_domain}/ns/{namespace}/sa/{sa}")
        } else if raw.starts_with("ns/") {
            format!("spiffe://{trust_domain}/{raw}")
        } else {
            return Err(err(
                &field,
                format!("{raw:?}: expected a SPIFFE ID, sa/NAME or ns/NS/sa/NAME"),
            ));
        };
        ids.push(identity(&field, &full)?);
    }
    ids.sort();
    ids.dedup();
    let name = service_name("service", service)?;
    // A `name.namespace` service names its namespace itself; a namespace given besides must
    // agree (the default one is the absence of a choice).
    let (_, own) = mesh_proto::names::split(&name);
    let namespace = if name.contains('.') && namespace == DEFAULT_NAMESPACE {
        own.to_string()
    } else {
        namespace
    };
    if name.contains('.') && own != namespace {
        return Err(err(
            "namespace",
            format!("{namespace:?} differs from the namespace in the service name {name:?}"),
        ));
    }
    Ok(ServiceDecl {
        service: mesh_proto::names::qualified(&name, &namespace),
        namespace,
        ports: ports("ports", service_ports)?,
        identities: ids,
    })
}

fn namespace(field: &str, ns: &str) -> Result<String> {
    if ns.is_empty() {
        return Ok(DEFAULT_NAMESPACE.to_string());
    }
    service_name(field, ns)
}

fn labels<M>(field: &str, m: M) -> Result<BTreeMap<String, String>>
where
    M: IntoIterator<Item = (String, String)>,
{
    let map: BTreeMap<String, String> = m.into_iter().collect();
    bounded(field, map.len())?;
    for (k, v) in &map {
        if k.is_empty() {
            return Err(err(field, "empty label key"));
        }
        text(&format!("{field}[{k:?}]"), k)?;
        text(&format!("{field}[{k:?}]"), v)?;
    }
    Ok(map)
}
