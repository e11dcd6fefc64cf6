//! `mesh_endpoints{service,state}`: the endpoints of every service this proxy balances over, by state, read from the current snapshot at scrape time.

use std::collections::BTreeMap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::balance::LbEndpoint;
use crate::state::EndpointState;

/// States in a fixed order, so every service exports all four series (a ratio of healthy to
/// non-draining endpoints needs the zeros).
const STATES: [&str; 4] = ["healthy", "ejected", "unhealthy", "draining"];

fn state_of(ep: &LbEndpoint) -> usize {
    match ep.endpoint.state {
        EndpointState::Draining => 3,
        EndpointState::Unhealthy => 2,
        EndpointState::Healthy if ep.stats.health_down() => 2,
        EndpointState::Healthy if ep.stats.ejected() => 1,
        EndpointState::Healthy => 0,
    }
}

/// Reads the observer's state handle when scraped (off the data path: admin runtime).
#[derive(Debug)]
pub(super) struct Endpoints;

impl Collector for Endpoints {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(state) = super::global().state.as_ref() else {
            return Ok(());
        };
        let snap = state.load();
        // Sorted by service so the exposition is stable between scrapes.
        let mut by_service: BTreeMap<&str, [i64; 4]> = BTreeMap::new();
        for (name, lb) in snap.lbs() {
            let counts = by_service.entry(name).or_default();
            for ep in lb.endpoints() {
                counts[state_of(ep)] += 1;
            }
        }
        let mut family = encoder.encode_descriptor(
            "endpoints",
            "Endpoints per service as this proxy sees them, by state (healthy, ejected, unhealthy, draining)",
            None,
            MetricType::Gauge,
        )?;
        for (service, counts) in &by_service {
            for (state, n) in STATES.iter().zip(counts) {
                let labels = [("service", *service), ("state", *state)];
                ConstGauge::new(*n).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
