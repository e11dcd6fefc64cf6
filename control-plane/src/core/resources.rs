//! Builds one published resource from the core state: the Cluster/Endpoints/Listener of a
//! known service, stored Routes and AuthorizationPolicies, and the Runtime singleton.

use mesh_proto::types::v1 as pb;
use serde::Serialize;
use tokio::time::Instant;

use super::{RUNTIME, State};
use crate::encode;
use crate::model::{ClusterPolicy, Endpoint, Protocol};
use crate::snapshot::{Content, Key, Kind, ListenerTemplate, Versioned, version_of};

/// Hash input for a Cluster: the policy plus what the registry adds.
#[derive(Serialize)]
struct ClusterContent<'a> {
    policy: &'a ClusterPolicy,
    vip: Option<std::net::Ipv4Addr>,
    ports: &'a [u16],
    namespace: &'a str,
    identities: &'a [String],
}

#[derive(Serialize)]
struct EndpointsContent<'a> {
    service: &'a str,
    endpoints: &'a [Endpoint],
}

pub(super) fn build(st: &State, key: &Key, changed_at: Instant) -> Option<Versioned> {
    let (kind, name) = (key.0, &*key.1);
    let (version, content) = match kind {
        Kind::Cluster => {
            let view = st.registry.view(name)?;
            let default;
            let policy = match st.clusters.get(name) {
                Some(p) => p,
                None => {
                    default = ClusterPolicy::default_for(name);
                    &default
                }
            };
            let identities = st.bound_identities(name);
            let version = version_of(
                kind,
                &ClusterContent {
                    policy,
                    vip: view.vip,
                    ports: &view.ports,
                    namespace: &view.namespace,
                    identities: &identities,
                },
            );
            let mut c = encode::cluster_policy(policy);
            c.vip = view.vip.map(|ip| ip.to_string()).unwrap_or_default();
            c.ports = view.ports.iter().copied().map(u32::from).collect();
            c.namespace = view.namespace;
            c.identities = identities;
            (version, resource(name, pb::resource::Kind::Cluster(c)))
        }
        Kind::Endpoints => {
            if !st.registry.is_known(name) {
                return None;
            }
            let endpoints = st.registry.endpoints(name);
            let version = version_of(
                kind,
                &EndpointsContent {
                    service: name,
                    endpoints: &endpoints,
                },
            );
            let e = pb::Endpoints {
                service: name.to_string(),
                endpoints: endpoints.iter().map(encode::endpoint).collect(),
            };
            (version, resource(name, pb::resource::Kind::Endpoints(e)))
        }
        Kind::Listener => {
            if !st.registry.is_known(name) {
                return None;
            }
            let policy = st.clusters.get(name);
            let template = ListenerTemplate {
                service: name.to_string(),
                tls_mode: policy.map(|p| p.tls_mode).unwrap_or_default(),
                opaque: policy.is_some_and(|p| p.protocol == Protocol::Tcp),
            };
            (version_of(kind, &template), Content::Listener(template))
        }
        Kind::Route => {
            let r = st.routes.get(name)?;
            (
                version_of(kind, r),
                resource(name, pb::resource::Kind::Route(encode::route(r))),
            )
        }
        Kind::Authz => {
            let p = st.authz.get(name)?;
            (
                version_of(kind, p),
                resource(
                    name,
                    pb::resource::Kind::AuthorizationPolicy(encode::authz(p)),
                ),
            )
        }
        Kind::Runtime => {
            if name != RUNTIME {
                return None;
            }
            (
                version_of(kind, &st.runtime),
                resource(
                    name,
                    pb::resource::Kind::Runtime(encode::runtime(&st.runtime)),
                ),
            )
        }
    };
    let content = match content {
        Content::Resource(mut r) => {
            r.version = version.to_string();
            Content::Resource(r)
        }
        other => other,
    };
    Some(Versioned {
        version,
        content,
        changed_at,
    })
}

fn resource(name: &str, kind: pb::resource::Kind) -> Content {
    Content::Resource(Box::new(pb::Resource {
        name: name.to_string(),
        version: String::new(),
        kind: Some(kind),
    }))
}
