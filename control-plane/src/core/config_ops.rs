//! Admin operations on stored traffic configuration: routes, cluster policies, authorization
//! policies and runtime. Each write is validated against the registry, stored in one
//! transaction, then published before the call returns.

use std::sync::Arc;

use tokio::time::Instant;

use super::{Core, CoreError, RUNTIME};
use crate::model::{AuthzPolicy, ClusterPolicy, Route, RouteRule, Runtime};
use crate::snapshot::{Kind, version_of};
use crate::store::{Op, Table};
use crate::validate::{check_services, unknown};

/// A stored item and the version of the resource it produces.
pub type Versioned<T> = (T, String);

/// One change to a service's route, applied to the stored route under the state lock, so two
/// operators editing different rules at once both keep their change.
#[derive(Debug, Clone)]
pub enum RouteEdit {
    /// Replaces the rule of the same name in place; a new rule with matches goes before the
    /// first catch-all rule (otherwise it could never match); a new catch-all goes last.
    SetRule(Box<RouteRule>),
    DeleteRule(String),
}

/// Most rules in one route: the validation bound on whole routes.
const MAX_RULES: usize = crate::validate::MAX_ITEMS;

impl Core {
    /// Stores `route`. With `expected_version` (what the writer read; `""` = no route), the
    /// write happens only if the stored route is still that one: a stale read-modify-write
    /// fails with [`CoreError::Conflict`] instead of losing another writer's change.
    pub fn set_route(
        &self,
        route: Route,
        dry_run: bool,
        expected_version: Option<&str>,
    ) -> Result<String, CoreError> {
        let mut st = self.state.lock();
        if let Some(expected) = expected_version {
            let current = st
                .routes
                .get(&route.service)
                .map(|r| version_of(Kind::Route, r).to_string())
                .unwrap_or_default();
            if current != expected {
                return Err(CoreError::Conflict(format!(
                    "route {} changed since it was read (read version {:?}, now {:?}); read it again and retry",
                    route.service,
                    short(expected),
                    short(&current)
                )));
            }
        }
        check_services(&route, |s| st.registry.is_known(s))?;
        let version = version_of(Kind::Route, &route).to_string();
        if dry_run {
            return Ok(version);
        }
        self.persist(
            "put_route",
            vec![Op::put(Table::Routes, &route.service, &route)],
        )?;
        let name: Arc<str> = route.service.as_str().into();
        st.routes.insert(route.service.clone(), route);
        drop(st);
        self.rebuild([((Kind::Route, name), Instant::now())]);
        Ok(version)
    }

    /// Applies one rule change to `service`'s stored route atomically. Returns the route's new
    /// version, or `None` when deleting its last rule deleted the route.
    pub fn edit_route(
        &self,
        service: &str,
        edit: RouteEdit,
        dry_run: bool,
    ) -> Result<Option<String>, CoreError> {
        let mut st = self.state.lock();
        let mut route = st.routes.get(service).cloned().unwrap_or_else(|| Route {
            service: service.to_string(),
            rules: Vec::new(),
        });
        match edit {
            RouteEdit::SetRule(rule) => merge_rule(&mut route.rules, *rule),
            RouteEdit::DeleteRule(name) => {
                let before = route.rules.len();
                route.rules.retain(|r| r.name != name);
                if route.rules.len() == before {
                    return Err(CoreError::NotFound(format!(
                        "rule {name:?} in the route of {service:?}"
                    )));
                }
            }
        }
        if route.rules.len() > MAX_RULES {
            return Err(crate::validate::err(
                "route.rules",
                format!("{} rules; at most {MAX_RULES}", route.rules.len()),
            )
            .into());
        }
        check_services(&route, |s| st.registry.is_known(s))?;
        let name: Arc<str> = service.into();
        if route.rules.is_empty() {
            if dry_run {
                return Ok(None);
            }
            self.persist("delete_route", vec![Op::delete(Table::Routes, service)])?;
            st.routes.remove(service);
            drop(st);
            self.rebuild([((Kind::Route, name), Instant::now())]);
            return Ok(None);
        }
        let version = version_of(Kind::Route, &route).to_string();
        if dry_run {
            return Ok(Some(version));
        }
        self.persist("put_route", vec![Op::put(Table::Routes, service, &route)])?;
        st.routes.insert(service.to_string(), route);
        drop(st);
        self.rebuild([((Kind::Route, name), Instant::now())]);
        Ok(Some(version))
    }

    pub fn get_route(&self, service: &str) -> Option<Versioned<Route>> {
        let r = self.state.lock().routes.get(service).cloned()?;
        let v = version_of(Kind::Route, &r).to_string();
        Some((r, v))
    }

    pub fn list_routes(&self) -> Vec<Versioned<Route>> {
        let st = self.state.lock();
        st.routes
            .values()
            .map(|r| (r.clone(), version_of(Kind::Route, r).to_string()))
            .collect()
    }

    pub fn delete_route(&self, service: &str) -> Result<bool, CoreError> {
        self.delete_config(Table::Routes, Kind::Route, service, |st| {
            st.routes.remove(service).is_some()
        })
    }

    pub fn set_cluster_policy(&self, p: ClusterPolicy, dry_run: bool) -> Result<String, CoreError> {
        let mut st = self.state.lock();
        if !st.registry.is_known(&p.service) {
            return Err(unknown("cluster.name", &p.service).into());
        }
        let version = self.policy_version(&p);
        if dry_run {
            return Ok(version);
        }
        self.persist(
            "put_cluster_policy",
            vec![Op::put(Table::ClusterPolicies, &p.service, &p)],
        )?;
        let service = p.service.clone();
        st.clusters.insert(service.clone(), p);
        drop(st);
        let now = Instant::now();
        let keys = [Kind::Cluster, Kind::Listener].map(|k| ((k, service.as_str().into()), now));
        let versions = self.rebuild(keys);
        Ok(versions
            .get(&(Kind::Cluster, service.as_str().into()))
            .cloned()
            .flatten()
            .map_or(version, |v| v.to_string()))
    }

    /// The version of the stored policy alone (Get/List, dry runs). The published Cluster's
    /// version also covers VIP and ports.
    fn policy_version(&self, p: &ClusterPolicy) -> String {
        version_of(Kind::Cluster, p).to_string()
    }

    pub fn get_cluster_policy(&self, service: &str) -> Option<Versioned<ClusterPolicy>> {
        let p = self.state.lock().clusters.get(service).cloned()?;
        let v = self.policy_version(&p);
        Some((p, v))
    }

    pub fn list_cluster_policies(&self) -> Vec<Versioned<ClusterPolicy>> {
        let st = self.state.lock();
        st.clusters
            .values()
            .map(|p| (p.clone(), self.policy_version(p)))
            .collect()
    }

    pub fn delete_cluster_policy(&self, service: &str) -> Result<bool, CoreError> {
        let existed = self.delete_config(Table::ClusterPolicies, Kind::Cluster, service, |st| {
            st.clusters.remove(service).is_some()
        })?;
        self.rebuild([((Kind::Listener, service.into()), Instant::now())]);
        Ok(existed)
    }

    pub fn set_authz_policy(&self, p: AuthzPolicy, dry_run: bool) -> Result<String, CoreError> {
        let mut st = self.state.lock();
        if !st.registry.is_known(&p.service) {
            return Err(unknown("policy.service", &p.service).into());
        }
        let version = version_of(Kind::Authz, &p).to_string();
        if dry_run {
            return Ok(version);
        }
        self.persist(
            "put_authz_policy",
            vec![Op::put(Table::AuthzPolicies, &p.service, &p)],
        )?;
        let name: Arc<str> = p.service.as_str().into();
        st.authz.insert(p.service.clone(), p);
        drop(st);
        self.rebuild([((Kind::Authz, name), Instant::now())]);
        Ok(version)
    }

    pub fn get_authz_policy(&self, service: &str) -> Option<Versioned<AuthzPolicy>> {
        let p = self.state.lock().authz.get(service).cloned()?;
        let v = version_of(Kind::Authz, &p).to_string();
        Some((p, v))
    }

    pub fn delete_authz_policy(&self, service: &str) -> Result<bool, CoreError> {
        self.delete_config(Table::AuthzPolicies, Kind::Authz, service, |st| {
            st.authz.remove(service).is_some()
        })
    }

    /// Stores new runtime settings; the trust bundle is the CA's and is kept as it is.
    pub fn set_runtime(&self, rt: Runtime) -> Result<String, CoreError> {
        self.update_runtime(|cur| {
            let bundle = std::mem::take(&mut cur.trust_bundle_pem);
            *cur = rt;
            cur.trust_bundle_pem = bundle;
        })
    }

    /// The CA's seam: replaces the trusted roots carried in the Runtime resource (several
    /// during a root rotation) and pushes them to every proxy.
    pub fn set_trust_bundle(&self, roots_pem: Vec<String>) -> Result<String, CoreError> {
        self.update_runtime(|cur| cur.trust_bundle_pem = roots_pem)
    }

    /// Read-modify-write of the runtime under the state lock, stored then published.
    fn update_runtime(&self, f: impl FnOnce(&mut Runtime)) -> Result<String, CoreError> {
        let mut st = self.state.lock();
        let mut rt = st.runtime.clone();
        f(&mut rt);
        self.persist("put_runtime", vec![Op::put(Table::Runtime, RUNTIME, &rt)])?;
        st.runtime = rt;
        drop(st);
        let versions = self.rebuild([((Kind::Runtime, RUNTIME.into()), Instant::now())]);
        Ok(versions
            .into_values()
            .next()
            .flatten()
            .map(|v| v.to_string())
            .unwrap_or_default())
    }

    pub fn runtime(&self) -> Runtime {
        self.state.lock().runtime.clone()
    }

    /// Deletes a stored item if present (store first, then memory) and republishes.
    fn delete_config(
        &self,
        table: Table,
        kind: Kind,
        service: &str,
        remove: impl FnOnce(&mut super::State) -> bool,
    ) -> Result<bool, CoreError> {
        let mut st = self.state.lock();
        self.persist("delete", vec![Op::delete(table, service)])?;
        let existed = remove(&mut st);
        drop(st);
        if existed {
            self.rebuild([((kind, service.into()), Instant::now())]);
        }
        Ok(existed)
    }
}

/// The merge rule of `RouteEdit::SetRule`.
fn merge_rule(rules: &mut Vec<RouteRule>, rule: RouteRule) {
    if let Some(existing) = rules.iter_mut().find(|r| r.name == rule.name) {
        *existing = rule;
        return;
    }
    let pos = if rule.matches.is_empty() {
        rules.len()
    } else {
        rules
            .iter()
            .position(|r| r.matches.is_empty())
            .unwrap_or(rules.len())
    };
    rules.insert(pos, rule);
}

/// The first 12 characters of a version, as `mesh-cli` shows them.
fn short(v: &str) -> &str {
    v.get(..12).unwrap_or(v)
}
