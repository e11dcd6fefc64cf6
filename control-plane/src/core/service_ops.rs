//! Registry operations: declared services, static endpoints, drains, and the leases of
//! proxy-announced endpoints. Endpoint churn is published through the coalescing builder.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::time::Instant;

use super::{Core, CoreError, Denied, service_keys, static_key};
use crate::model::{Endpoint, EndpointSource, EndpointState, ProxyNode, ServiceDecl};
use crate::registry::{LeaseKey, ServiceView};
use crate::snapshot::Kind;
use crate::store::{Op, Table};
use crate::validate::unknown;

impl Core {
    pub fn create_service(&self, decl: ServiceDecl) -> Result<ServiceView, CoreError> {
        let mut st = self.state.lock();
        self.ensure_vip(&mut st, &decl.service)?;
        self.persist(
            "put_service",
            vec![Op::put(Table::Services, &decl.service, &decl)],
        )?;
        let service = decl.service.clone();
        st.registry.declare(decl);
        let view = st.registry.view(&service);
        drop(st);
        let now = Instant::now();
        self.rebuild(service_keys(&service).map(|k| (k, now)));
        view.ok_or_else(|| CoreError::NotFound(format!("service {service:?}")))
    }

    /// Deletes a declared service with everything stored for it: static endpoints, route,
    /// cluster and authorization policy. Endpoints of running proxies stay until they go.
    pub fn delete_service(&self, service: &str) -> Result<bool, CoreError> {
        let mut st = self.state.lock();
        let statics: Vec<String> = st
            .registry
            .endpoints(service)
            .iter()
            .filter(|e| e.source == EndpointSource::Static)
            .map(|e| static_key(service, e))
            .collect();
        let mut ops = vec![
            Op::delete(Table::Services, service),
            Op::delete(Table::Routes, service),
            Op::delete(Table::ClusterPolicies, service),
            Op::delete(Table::AuthzPolicies, service),
        ];
        ops.extend(
            statics
                .into_iter()
                .map(|k| Op::delete(Table::StaticEndpoints, k)),
        );
        self.persist("delete_service", ops)?;
        let (declared, removed) = st.registry.undeclare(service);
        let route = st.routes.remove(service).is_some();
        let cluster = st.clusters.remove(service).is_some();
        let authz = st.authz.remove(service).is_some();
        drop(st);
        let now = Instant::now();
        let mut keys: Vec<_> = service_keys(service).into_iter().collect();
        keys.push((Kind::Route, service.into()));
        keys.push((Kind::Authz, service.into()));
        self.rebuild(keys.into_iter().map(|k| (k, now)));
        Ok(declared || !removed.is_empty() || route || cluster || authz)
    }

    pub fn list_services(&self) -> Vec<ServiceView> {
        let st = self.state.lock();
        let mut views = st.registry.known_services();
        for v in &mut views {
            v.identities = st.bound_identities(&v.service);
        }
        views
    }

    pub fn list_endpoints(&self, service: &str) -> Result<Vec<Endpoint>, CoreError> {
        let st = self.state.lock();
        if !st.registry.is_known(service) {
            return Err(CoreError::NotFound(format!("service {service:?}")));
        }
        Ok(st.registry.endpoints(service))
    }

    /// Registers (or replaces) a static endpoint of a known service.
    pub fn register_endpoint(&self, service: &str, e: Endpoint) -> Result<Endpoint, CoreError> {
        let mut st = self.state.lock();
        if !st.registry.is_known(service) {
            return Err(unknown("service", service).into());
        }
        let mut e = e;
        e.source = EndpointSource::Static;
        // Secure naming holds for operator-registered endpoints too: callers verify the peer
        // against the service's bound identities, so an unbound one could never be reached.
        if let Some(id) = &e.identity {
            let bound = st.bound_identities(service);
            if !bound.contains(id) {
                return Err(crate::validate::err(
                    "endpoint.identity",
                    format!(
                        "{id} is not bound to service {service:?} (bound: {}); bind it with `mesh-cli service create {service} --identity {id}`",
                        bound.join(", ")
                    ),
                )
                .into());
            }
        }
        self.persist(
            "put_endpoint",
            vec![Op::put(Table::StaticEndpoints, static_key(service, &e), &e)],
        )?;
        st.registry.upsert_static(service, e.clone());
        drop(st);
        self.mark_dirty(service_keys(service));
        Ok(e)
    }

    pub fn deregister_endpoint(&self, service: &str, addr: SocketAddr) -> Result<bool, CoreError> {
        let mut st = self.state.lock();
        let Some(e) = st.registry.endpoint(service, addr).cloned() else {
            return Ok(false);
        };
        if e.source == EndpointSource::Static {
            self.persist(
                "delete_endpoint",
                vec![Op::delete(Table::StaticEndpoints, static_key(service, &e))],
            )?;
        }
        st.registry.remove_endpoint(service, addr);
        drop(st);
        self.mark_dirty(service_keys(service));
        Ok(true)
    }

    /// Marks an endpoint draining: proxies finish in-flight requests and send it no new ones.
    pub fn drain_endpoint(&self, service: &str, addr: SocketAddr) -> Result<Endpoint, CoreError> {
        let mut st = self.state.lock();
        let Some(mut e) = st.registry.endpoint(service, addr).cloned() else {
            return Err(CoreError::NotFound(format!(
                "endpoint {addr} of {service:?}"
            )));
        };
        e.state = EndpointState::Draining;
        if e.source == EndpointSource::Static {
            self.persist(
                "put_endpoint",
                vec![Op::put(Table::StaticEndpoints, static_key(service, &e), &e)],
            )?;
        }
        st.registry
            .set_state(service, addr, EndpointState::Draining);
        drop(st);
        self.mark_dirty(service_keys(service));
        Ok(e)
    }

    /// Registers a connecting proxy's workload endpoint; hold the key until the stream ends.
    pub fn announce(&self, node: &ProxyNode) -> Result<LeaseKey, CoreError> {
        let mut st = self.state.lock();
        self.ensure_vip(&mut st, &node.service)?;
        let was_known = st.registry.is_known(&node.service);
        let key = st.registry.announce(node).map_err(Denied::from)?;
        drop(st);
        if was_known {
            self.mark_dirty(service_keys(&node.service));
        } else {
            // A new service is published before the stream is served, so the proxy's first
            // subscription finds its own listener instead of a removal.
            let now = Instant::now();
            self.rebuild(service_keys(&node.service).map(|k| (k, now)));
        }
        Ok(key)
    }

    /// The stream holding `key` ended: remove the endpoint after the lease grace period
    /// unless the proxy reconnects first.
    pub fn release(self: &Arc<Self>, key: LeaseKey) {
        let Some(generation) = self.state.lock().registry.release(&key) else {
            return;
        };
        let core = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(core.config.lease_grace).await;
            let expired = core.state.lock().registry.expire(&key, generation);
            if expired {
                tracing::info!(service = %key.service, address = %key.address, "endpoint lease expired");
                core.mark_dirty(service_keys(&key.service));
            }
        });
    }
}
