//! The admin gRPC API (`mesh.admin.v1.Admin`): a thin adapter that converts requests to
//! domain types, calls the core, and maps errors to gRPC status codes.

pub mod auth;
mod proxies;

use std::net::SocketAddr;
use std::sync::Arc;

use mesh_proto::admin::v1 as apb;
use mesh_proto::admin::v1::admin_server::Admin;
use mesh_proto::types::v1 as pb;
use tonic::{Request, Response, Status};

use crate::ca::CertificateAuthority;
use crate::core::{Core, CoreError, RouteEdit, TokenRecord};
use crate::encode;
use crate::model::{AuthzPolicy, ClusterPolicy, Endpoint, Route, Runtime};
use crate::registry::ServiceView;
use crate::validate::{ValidationError, service_decl, service_name};

pub struct AdminService {
    core: Arc<Core>,
    /// The CA whose signing certificate's expiry `Health` reports.
    ca: Arc<CertificateAuthority>,
}

type R<T> = Result<Response<T>, Status>;

fn status(e: CoreError) -> Status {
    match e {
        CoreError::Invalid(v) => Status::invalid_argument(v.to_string()),
        CoreError::NotFound(what) => Status::not_found(format!("{what} not found")),
        CoreError::Store(s) => Status::unavailable(s.to_string()),
        CoreError::Exhausted(x) => Status::resource_exhausted(x.to_string()),
        CoreError::Denied(d) => Status::permission_denied(d.to_string()),
        CoreError::Conflict(m) => Status::aborted(m),
    }
}

fn invalid(e: ValidationError) -> Status {
    Status::invalid_argument(e.to_string())
}

fn required<T>(v: Option<T>, field: &str) -> Result<T, Status> {
    v.ok_or_else(|| Status::invalid_argument(format!("{field}: required")))
}

fn address(s: &str) -> Result<SocketAddr, Status> {
    s.parse()
        .map_err(|_| Status::invalid_argument(format!("address: {s:?} is not ip:port")))
}

// === impl AdminService ===

impl AdminService {
    pub fn new(core: Arc<Core>, ca: Arc<CertificateAuthority>) -> Self {
        Self { core, ca }
    }

    /// Runs a core call that may write (and fsync) off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Core) -> Result<T, CoreError> + Send + 'static,
    ) -> Result<T, Status> {
        let core = self.core.clone();
        tokio::task::spawn_blocking(move || f(&core))
            .await
            .map_err(|_| Status::internal("admin task failed"))?
            .map_err(status)
    }
}

fn service_info(v: ServiceView) -> apb::ServiceInfo {
    apb::ServiceInfo {
        service: v.service,
        namespace: v.namespace,
        ports: v.ports.into_iter().map(u32::from).collect(),
        vip: v.vip.map(|ip| ip.to_string()).unwrap_or_default(),
        endpoint_count: v.endpoint_count as u32,
        declared: v.declared,
        identities: v.identities,
    }
}

fn endpoint_entry(service: &str, e: &Endpoint) -> apb::EndpointEntry {
    apb::EndpointEntry {
        service: service.to_string(),
        endpoint: Some(encode::endpoint(e)),
    }
}

fn token_info(t: TokenRecord) -> apb::TokenInfo {
    apb::TokenInfo {
        id: t.id,
        identity: t.identity,
        created_unix: t.created_unix,
        expires_unix: t.expires_unix,
        revoked: t.revoked,
        max_uses: t.max_uses,
        uses: t.uses,
        services: t.services,
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn set_route(&self, req: Request<apb::SetRouteRequest>) -> R<apb::SetRouteResponse> {
        let req = req.into_inner();
        let route = Route::try_from(required(req.route, "route")?).map_err(invalid)?;
        let expected = match req.expected_version.as_str() {
            "" => None,
            "none" => Some(String::new()),
            v => Some(v.to_string()),
        };
        let version = self
            .blocking(move |c| c.set_route(route, req.dry_run, expected.as_deref()))
            .await?;
        Ok(Response::new(apb::SetRouteResponse { version }))
    }

    async fn set_route_rule(
        &self,
        req: Request<apb::SetRouteRuleRequest>,
    ) -> R<apb::SetRouteResponse> {
        let req = req.into_inner();
        // The rule is validated as a route of one rule: every field check applies.
        let one = Route::try_from(pb::Route {
            service: req.service.clone(),
            rules: vec![required(req.rule, "rule")?],
        })
        .map_err(invalid)?;
        let rule = one
            .rules
            .into_iter()
            .next()
            .ok_or_else(|| Status::invalid_argument("rule: required"))?;
        let service = one.service;
        let version = self
            .blocking(move |c| {
                c.edit_route(&service, RouteEdit::SetRule(Box::new(rule)), req.dry_run)
            })
            .await?
            .unwrap_or_default();
        Ok(Response::new(apb::SetRouteResponse { version }))
    }

    async fn delete_route_rule(
        &self,
        req: Request<apb::DeleteRouteRuleRequest>,
    ) -> R<apb::DeleteRouteRuleResponse> {
        let req = req.into_inner();
        let version = self
            .blocking(move |c| c.edit_route(&req.service, RouteEdit::DeleteRule(req.rule), false))
            .await?
            .unwrap_or_default();
        Ok(Response::new(apb::DeleteRouteRuleResponse { version }))
    }

    async fn get_route(&self, req: Request<apb::ServiceRef>) -> R<apb::RouteEntry> {
        let s = req.into_inner().service;
        let (r, version) = self
            .core
            .get_route(&s)
            .ok_or_else(|| Status::not_found(format!("no route for {s:?}")))?;
        Ok(Response::new(apb::RouteEntry {
            route: Some(encode::route(&r)),
            version,
        }))
    }

    async fn list_routes(&self, _: Request<apb::ListRequest>) -> R<apb::ListRoutesResponse> {
        let routes = self
            .core
            .list_routes()
            .into_iter()
            .map(|(r, version)| apb::RouteEntry {
                route: Some(encode::route(&r)),
                version,
            })
            .collect();
        Ok(Response::new(apb::ListRoutesResponse { routes }))
    }

    async fn delete_route(&self, req: Request<apb::ServiceRef>) -> R<apb::DeleteResponse> {
        let s = req.into_inner().service;
        let existed = self.blocking(move |c| c.delete_route(&s)).await?;
        Ok(Response::new(apb::DeleteResponse { existed }))
    }

    async fn set_cluster_policy(
        &self,
        req: Request<apb::SetClusterPolicyRequest>,
    ) -> R<apb::SetClusterPolicyResponse> {
        let req = req.into_inner();
        let p = ClusterPolicy::try_from(required(req.cluster, "cluster")?).map_err(invalid)?;
        let version = self
            .blocking(move |c| c.set_cluster_policy(p, req.dry_run))
            .await?;
        Ok(Response::new(apb::SetClusterPolicyResponse { version }))
    }

    async fn get_cluster_policy(
        &self,
        req: Request<apb::ServiceRef>,
    ) -> R<apb::ClusterPolicyEntry> {
        let s = req.into_inner().service;
        let (p, version) = self
            .core
            .get_cluster_policy(&s)
            .ok_or_else(|| Status::not_found(format!("no cluster policy for {s:?}")))?;
        Ok(Response::new(apb::ClusterPolicyEntry {
            cluster: Some(encode::cluster_policy(&p)),
            version,
        }))
    }

    async fn list_cluster_policies(
        &self,
        _: Request<apb::ListRequest>,
    ) -> R<apb::ListClusterPoliciesResponse> {
        let clusters = self
            .core
            .list_cluster_policies()
            .into_iter()
            .map(|(p, version)| apb::ClusterPolicyEntry {
                cluster: Some(encode::cluster_policy(&p)),
                version,
            })
            .collect();
        Ok(Response::new(apb::ListClusterPoliciesResponse { clusters }))
    }

    async fn delete_cluster_policy(&self, req: Request<apb::ServiceRef>) -> R<apb::DeleteResponse> {
        let s = req.into_inner().service;
        let existed = self.blocking(move |c| c.delete_cluster_policy(&s)).await?;
        Ok(Response::new(apb::DeleteResponse { existed }))
    }

    async fn set_authorization_policy(
        &self,
        req: Request<apb::SetAuthorizationPolicyRequest>,
    ) -> R<apb::SetAuthorizationPolicyResponse> {
        let req = req.into_inner();
        let p = AuthzPolicy::try_from(required(req.policy, "policy")?).map_err(invalid)?;
        let version = self
            .blocking(move |c| c.set_authz_policy(p, req.dry_run))
            .await?;
        Ok(Response::new(apb::SetAuthorizationPolicyResponse {
            version,
        }))
    }

    async fn get_authorization_policy(
        &self,
        req: Request<apb::ServiceRef>,
    ) -> R<apb::AuthorizationPolicyEntry> {
        let s = req.into_inner().service;
        let (p, version) = self
            .core
            .get_authz_policy(&s)
            .ok_or_else(|| Status::not_found(format!("no authorization policy for {s:?}")))?;
        Ok(Response::new(apb::AuthorizationPolicyEntry {
            policy: Some(encode::authz(&p)),
            version,
        }))
    }

    async fn delete_authorization_policy(
        &self,
        req: Request<apb::ServiceRef>,
    ) -> R<apb::DeleteResponse> {
        let s = req.into_inner().service;
        let existed = self.blocking(move |c| c.delete_authz_policy(&s)).await?;
        Ok(Response::new(apb::DeleteResponse { existed }))
    }

    async fn create_service(&self, req: Request<apb::CreateServiceRequest>) -> R<apb::ServiceInfo> {
        let req = req.into_inner();
        let decl = service_decl(
            &req.service,
            &req.namespace,
            &req.ports,
            &req.identities,
            &self.core.config.trust_domain,
        )
        .map_err(invalid)?;
        let view = self.blocking(move |c| c.create_service(decl)).await?;
        Ok(Response::new(service_info(view)))
    }

    async fn delete_service(&self, req: Request<apb::ServiceRef>) -> R<apb::DeleteResponse> {
        let s = req.into_inner().service;
        let existed = self.blocking(move |c| c.delete_service(&s)).await?;
        Ok(Response::new(apb::DeleteResponse { existed }))
    }

    async fn list_services(&self, _: Request<apb::ListRequest>) -> R<apb::ListServicesResponse> {
        let services = self
            .core
            .list_services()
            .into_iter()
            .map(service_info)
            .collect();
        Ok(Response::new(apb::ListServicesResponse { services }))
    }

    async fn list_endpoints(&self, req: Request<apb::ServiceRef>) -> R<apb::ListEndpointsResponse> {
        let s = req.into_inner().service;
        let endpoints = self
            .core
            .list_endpoints(&s)
            .map_err(status)?
            .iter()
            .map(|e| endpoint_entry(&s, e))
            .collect();
        Ok(Response::new(apb::ListEndpointsResponse { endpoints }))
    }

    async fn register_endpoint(
        &self,
        req: Request<apb::RegisterEndpointRequest>,
    ) -> R<apb::EndpointEntry> {
        let req = req.into_inner();
        let service = service_name("service", &req.service).map_err(invalid)?;
        let e = Endpoint::try_from(required(req.endpoint, "endpoint")?).map_err(invalid)?;
        let svc = service.clone();
        let e = self.blocking(move |c| c.register_endpoint(&svc, e)).await?;
        Ok(Response::new(endpoint_entry(&service, &e)))
    }

    async fn deregister_endpoint(&self, req: Request<apb::EndpointRef>) -> R<apb::DeleteResponse> {
        let req = req.into_inner();
        let addr = address(&req.address)?;
        let existed = self
            .blocking(move |c| c.deregister_endpoint(&req.service, addr))
            .await?;
        Ok(Response::new(apb::DeleteResponse { existed }))
    }

    async fn drain_endpoint(&self, req: Request<apb::EndpointRef>) -> R<apb::EndpointEntry> {
        let req = req.into_inner();
        let addr = address(&req.address)?;
        let service = req.service.clone();
        let e = self
            .blocking(move |c| c.drain_endpoint(&req.service, addr))
            .await?;
        Ok(Response::new(endpoint_entry(&service, &e)))
    }

    async fn list_proxies(&self, _: Request<apb::ListRequest>) -> R<apb::ListProxiesResponse> {
        Ok(Response::new(apb::ListProxiesResponse {
            proxies: proxies::list(&self.core),
        }))
    }

    async fn create_token(
        &self,
        req: Request<apb::CreateTokenRequest>,
    ) -> R<apb::CreateTokenResponse> {
        let req = req.into_inner();
        let (token, rec) = self
            .blocking(move |c| {
                c.create_token(
                    &req.namespace,
                    &req.service_account,
                    req.ttl_secs,
                    &req.services,
                    req.max_uses,
                )
            })
            .await?;
        Ok(Response::new(apb::CreateTokenResponse {
            token,
            id: rec.id,
            identity: rec.identity,
            expires_unix: rec.expires_unix,
            trust_bundle_pem: self.core.runtime().trust_bundle_pem,
        }))
    }

    async fn list_tokens(&self, _: Request<apb::ListRequest>) -> R<apb::ListTokensResponse> {
        let tokens = self
            .core
            .list_tokens()
            .into_iter()
            .map(token_info)
            .collect();
        Ok(Response::new(apb::ListTokensResponse { tokens }))
    }

    async fn revoke_token(&self, req: Request<apb::RevokeTokenRequest>) -> R<apb::DeleteResponse> {
        let id = req.into_inner().id;
        let existed = self.blocking(move |c| c.revoke_token(&id)).await?;
        Ok(Response::new(apb::DeleteResponse { existed }))
    }

    async fn revoke_identity(
        &self,
        req: Request<apb::RevokeIdentityRequest>,
    ) -> R<apb::RevokeIdentityResponse> {
        let raw = req.into_inner().identity;
        let (identity, newly_revoked) = self.blocking(move |c| c.revoke_identity(&raw)).await?;
        tracing::warn!(%identity, newly_revoked, "workload identity revoked");
        Ok(Response::new(apb::RevokeIdentityResponse {
            identity,
            newly_revoked,
        }))
    }

    async fn set_runtime(
        &self,
        req: Request<apb::SetRuntimeRequest>,
    ) -> R<apb::SetRuntimeResponse> {
        let rt =
            Runtime::try_from(required(req.into_inner().runtime, "runtime")?).map_err(invalid)?;
        let version = self.blocking(move |c| c.set_runtime(rt)).await?;
        Ok(Response::new(apb::SetRuntimeResponse { version }))
    }

    async fn get_runtime(&self, _: Request<apb::ListRequest>) -> R<pb::Runtime> {
        Ok(Response::new(encode::runtime(&self.core.runtime())))
    }

    async fn health(&self, _: Request<apb::ListRequest>) -> R<apb::HealthResponse> {
        Ok(Response::new(apb::HealthResponse {
            ready: true,
            version: env!("CARGO_PKG_VERSION").to_string(),
            connected_proxies: self.core.proxies.len() as u32,
            trust_domain: self.core.config.trust_domain.clone(),
            ca_not_after_unix: self
                .ca
                .signer_not_after()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        }))
    }
}
