//! The service registry: declared and announced services, their endpoints (proxy leases and
//! static registrations, with health/drain state) and VIPs. Pure in-memory bookkeeping; the
//! core persists what must survive a restart.

mod vip;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};

pub use vip::{BadRange, Exhausted, VipAllocator, VipRange};

use crate::model::{Endpoint, EndpointSource, EndpointState, ProxyNode, ServiceDecl};
use crate::validate::DEFAULT_NAMESPACE;

#[derive(Debug)]
pub struct Registry {
    services: BTreeMap<String, ServiceEntry>,
    pub vips: VipAllocator,
    /// For the default binding's SPIFFE ID.
    trust_domain: String,
}

/// An announce for an address another workload's endpoint holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "endpoint {address} of {service:?} belongs to {owner}; a proxy with identity {claimant} cannot take it over"
)]
pub struct AddressOwned {
    pub service: String,
    pub address: SocketAddr,
    pub owner: String,
    pub claimant: String,
}

#[derive(Debug, Default)]
struct ServiceEntry {
    decl: Option<ServiceDecl>,
    /// Namespace and ports learned from announcing proxies (for undeclared services).
    announced_namespace: Option<String>,
    announced_ports: BTreeSet<u16>,
    endpoints: BTreeMap<SocketAddr, Slot>,
}

#[derive(Debug)]
struct Slot {
    endpoint: Endpoint,
    lease: Lease,
}

#[derive(Debug, Clone, Copy)]
enum Lease {
    Static,
    /// Held by `holders` live streams; `generation` changes on every (re)announce so an
    /// expiry timer armed before a reconnect does nothing.
    Proxy {
        holders: u32,
        generation: u64,
    },
}

/// What the admin API and the Cluster resource need to know about a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceView {
    pub service: String,
    pub namespace: String,
    pub ports: Vec<u16>,
    pub vip: Option<Ipv4Addr>,
    pub endpoint_count: usize,
    pub declared: bool,
    /// SPIFFE IDs allowed to serve it: the declared binding, else the default one.
    pub identities: Vec<String>,
}

/// A proxy's hold on its endpoint; give it back with [`Registry::release`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseKey {
    pub service: String,
    pub address: SocketAddr,
}

// === impl Registry ===

impl Registry {
    pub fn new(range: VipRange, trust_domain: &str) -> Self {
        Self {
            services: BTreeMap::new(),
            vips: VipAllocator::new(range),
            trust_domain: trust_domain.to_string(),
        }
    }

    /// The identities allowed to serve `service` (secure naming): its declared binding, else
    /// the service account named like the service in the service's namespace (a declared
    /// service's, else `default`), as a Kubernetes Deployment runs under its own account.
    /// The namespace is the key's (`name.namespace`), never an announcing proxy's: the first
    /// to announce must not choose who may serve a name.
    pub fn bound_identities(&self, service: &str) -> Vec<String> {
        let decl = self.services.get(service).and_then(|e| e.decl.as_ref());
        match decl {
            Some(d) if !d.identities.is_empty() => d.identities.clone(),
            _ => {
                // `service` is a key: `name` (default namespace) or `name.namespace`.
                let (name, ns) = mesh_proto::names::split(service);
                vec![format!("spiffe://{}/ns/{ns}/sa/{name}", self.trust_domain)]
            }
        }
    }

    /// A service exists when it was declared or has at least one endpoint.
    pub fn is_known(&self, service: &str) -> bool {
        self.services
            .get(service)
            .is_some_and(|e| e.decl.is_some() || !e.endpoints.is_empty())
    }

    pub fn declare(&mut self, decl: ServiceDecl) {
        let name = decl.service.clone();
        self.services.entry(name).or_default().decl = Some(decl);
    }

    /// Removes the declaration and the static endpoints; proxy-held endpoints stay (their
    /// proxies still run), so the service may remain known.
    pub fn undeclare(&mut self, service: &str) -> (bool, Vec<SocketAddr>) {
        let Some(e) = self.services.get_mut(service) else {
            return (false, Vec::new());
        };
        let existed = e.decl.take().is_some();
        let statics: Vec<SocketAddr> = e
            .endpoints
            .iter()
            .filter(|(_, s)| matches!(s.lease, Lease::Static))
            .map(|(a, _)| *a)
            .collect();
        for a in &statics {
            e.endpoints.remove(a);
        }
        (existed, statics)
    }

    /// Registers (or renews) a proxy's workload endpoint. An address held by a live or
    /// lingering endpoint of another identity (or of an identified workload, for an anonymous
    /// proxy) stays with its owner: the announce is refused.
    pub fn announce(&mut self, node: &ProxyNode) -> Result<LeaseKey, AddressOwned> {
        let address = node.endpoint().address;
        if let Some(slot) = self
            .services
            .get(&node.service)
            .and_then(|e| e.endpoints.get(&address))
            && matches!(slot.lease, Lease::Proxy { .. })
            && slot.endpoint.identity != node.identity
        {
            return Err(AddressOwned {
                service: node.service.clone(),
                address,
                owner: slot
                    .endpoint
                    .identity
                    .clone()
                    .unwrap_or_else(|| "an anonymous proxy".into()),
                claimant: node.identity.clone().unwrap_or_else(|| "(none)".into()),
            });
        }
        let entry = self.services.entry(node.service.clone()).or_default();
        entry
            .announced_namespace
            .get_or_insert_with(|| node.namespace.clone());
        entry.announced_ports.extend(node.app_ports.iter().copied());
        let mut endpoint = node.endpoint();
        match entry.endpoints.get_mut(&address) {
            Some(slot) => match &mut slot.lease {
                Lease::Proxy {
                    holders,
                    generation,
                } => {
                    *holders += 1;
                    *generation += 1;
                    // An operator's drain outlives a reconnect of the same workload.
                    endpoint.state = slot.endpoint.state;
                    slot.endpoint = endpoint;
                }
                // A static registration of the same address wins: the operator said so.
                Lease::Static => {}
            },
            None => {
                entry.endpoints.insert(
                    address,
                    Slot {
                        endpoint,
                        lease: Lease::Proxy {
                            holders: 1,
                            generation: 0,
                        },
                    },
                );
            }
        }
        Ok(LeaseKey {
            service: node.service.clone(),
            address,
        })
    }

    /// A stream holding the lease ended. Returns the generation to pass to [`Self::expire`]
    /// after the grace period when this was the last holder.
    pub fn release(&mut self, key: &LeaseKey) -> Option<u64> {
        let slot = self
            .services
            .get_mut(&key.service)?
            .endpoints
            .get_mut(&key.address)?;
        match &mut slot.lease {
            Lease::Proxy {
                holders,
                generation,
            } => {
                *holders = holders.saturating_sub(1);
                (*holders == 0).then_some(*generation)
            }
            Lease::Static => None,
        }
    }

    /// Removes a proxy endpoint whose lease ran out, unless it was renewed meanwhile.
    pub fn expire(&mut self, key: &LeaseKey, at_generation: u64) -> bool {
        let Some(entry) = self.services.get_mut(&key.service) else {
            return false;
        };
        let expired = matches!(
            entry.endpoints.get(&key.address).map(|s| s.lease),
            Some(Lease::Proxy { holders: 0, generation }) if generation == at_generation
        );
        if expired {
            entry.endpoints.remove(&key.address);
            self.gc(&key.service);
        }
        expired
    }

    pub fn upsert_static(&mut self, service: &str, mut endpoint: Endpoint) {
        endpoint.source = EndpointSource::Static;
        self.services
            .entry(service.to_string())
            .or_default()
            .endpoints
            .insert(
                endpoint.address,
                Slot {
                    endpoint,
                    lease: Lease::Static,
                },
            );
    }

    /// Removes an endpoint of either kind; returns it.
    pub fn remove_endpoint(&mut self, service: &str, address: SocketAddr) -> Option<Endpoint> {
        let slot = self.services.get_mut(service)?.endpoints.remove(&address)?;
        self.gc(service);
        Some(slot.endpoint)
    }

    pub fn set_state(
        &mut self,
        service: &str,
        address: SocketAddr,
        state: EndpointState,
    ) -> Option<Endpoint> {
        let slot = self
            .services
            .get_mut(service)?
            .endpoints
            .get_mut(&address)?;
        slot.endpoint.state = state;
        Some(slot.endpoint.clone())
    }

    pub fn endpoint(&self, service: &str, address: SocketAddr) -> Option<&Endpoint> {
        Some(
            &self
                .services
                .get(service)?
                .endpoints
                .get(&address)?
                .endpoint,
        )
    }

    /// The endpoints of a service, ordered by address.
    pub fn endpoints(&self, service: &str) -> Vec<Endpoint> {
        self.services
            .get(service)
            .map(|e| e.endpoints.values().map(|s| s.endpoint.clone()).collect())
            .unwrap_or_default()
    }

    pub fn view(&self, service: &str) -> Option<ServiceView> {
        if !self.is_known(service) {
            return None;
        }
        let e = self.services.get(service)?;
        let (namespace, mut ports) = match &e.decl {
            Some(d) => (d.namespace.clone(), d.ports.clone()),
            None => (
                e.announced_namespace
                    .clone()
                    .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
                Vec::new(),
            ),
        };
        ports.extend(e.announced_ports.iter().copied());
        ports.sort_unstable();
        ports.dedup();
        Some(ServiceView {
            service: service.to_string(),
            namespace,
            ports,
            vip: self.vips.get(service),
            endpoint_count: e.endpoints.len(),
            declared: e.decl.is_some(),
            identities: self.bound_identities(service),
        })
    }

    pub fn known_services(&self) -> Vec<ServiceView> {
        self.services.keys().filter_map(|s| self.view(s)).collect()
    }

    /// Forgets a service entry that no longer holds anything (its VIP stays allocated).
    fn gc(&mut self, service: &str) {
        if let Some(e) = self.services.get(service)
            && e.decl.is_none()
            && e.endpoints.is_empty()
        {
            self.services.remove(service);
        }
    }
}

#[cfg(test)]
mod tests;
