//! JSON bodies of `/config_dump` and `/clusters`.

use mesh_proto::types::v1::Resource;
use serde::Serialize;

use super::certs::{self, CertsView};
use crate::identity::CertStore;
use crate::state::{EndpointState, StateHandle};
use crate::xds::store::url_of;
use crate::xds::{ConfigSource, Discovery, Nack};

#[derive(Serialize)]
struct ConfigDump<'a> {
    source: ConfigSource,
    connected: bool,
    /// Generation of the applied domain snapshot (bumped on every applied change).
    generation: u64,
    services: Vec<String>,
    resources: Vec<DumpedResource<'a>>,
    last_nack: Option<&'a Nack>,
    /// The workload certificate and trust bundle in use; `null` without an identity.
    certs: Option<CertsView>,
}

#[derive(Serialize)]
struct DumpedResource<'a> {
    type_url: &'static str,
    name: &'a str,
    version: &'a str,
    resource: &'a Resource,
}

/// Every applied resource with its version, the last NACK, the stream state and the
/// certificates in use.
pub fn config_dump(
    discovery: &Discovery,
    state: &StateHandle,
    identity: Option<&CertStore>,
) -> String {
    let store = discovery.store();
    let nack = discovery.last_nack();
    let dump = ConfigDump {
        source: discovery.source(),
        connected: discovery.is_connected(),
        generation: state.snapshot().generation,
        services: discovery.services(),
        resources: store
            .iter()
            .map(|(kind, r)| DumpedResource {
                type_url: url_of(kind),
                name: &r.name,
                version: &r.version,
                resource: r,
            })
            .collect(),
        last_nack: nack.as_deref(),
        certs: identity.map(certs::view),
    };
    to_json(&dump)
}

#[derive(Serialize)]
struct ClusterView {
    service: String,
    lb_policy: String,
    endpoints: Vec<EndpointView>,
}

#[derive(Serialize)]
struct EndpointView {
    address: String,
    weight: u32,
    state: &'static str,
    version: Option<String>,
    zone: Option<String>,
    /// The balancer's PeakEWMA latency estimate (decayed to now), in milliseconds.
    ewma_ms: f64,
    in_flight: u32,
    /// Ejected by outlier detection right now (no new requests until it returns).
    ejected: bool,
    /// Failing its active health checks (out of the pool until it recovers).
    health_down: bool,
}

/// Every service the balancers know, with each endpoint's weight, state, EWMA and in-flight.
pub fn clusters(state: &StateHandle) -> String {
    let snap = state.snapshot();
    let mut out: Vec<ClusterView> = snap
        .lbs()
        .map(|(name, lb)| ClusterView {
            service: name.to_string(),
            lb_policy: format!("{:?}", lb.cluster.lb),
            endpoints: lb
                .endpoints()
                .iter()
                .map(|e| EndpointView {
                    address: e.endpoint.addr.to_string(),
                    weight: e.endpoint.weight,
                    state: match e.endpoint.state {
                        EndpointState::Healthy => "healthy",
                        EndpointState::Draining => "draining",
                        EndpointState::Unhealthy => "unhealthy",
                    },
                    version: e
                        .endpoint
                        .label(crate::state::Endpoint::VERSION_LABEL)
                        .map(|v| v.to_string()),
                    zone: e.endpoint.zone.as_ref().map(|z| z.to_string()),
                    ewma_ms: e.stats.ewma().as_secs_f64() * 1000.0,
                    in_flight: e.stats.in_flight(),
                    ejected: e.stats.ejected(),
                    health_down: e.stats.health_down(),
                })
                .collect(),
        })
        .collect();
    out.sort_by(|a, b| a.service.cmp(&b.service));
    to_json(&out)
}

fn to_json(v: &impl Serialize) -> String {
    // Serialising plain structs and generated messages into a String cannot fail.
    serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
