//! Admin commands other than routes: policy, status, endpoints, tokens, check.

mod policy;
mod runtime;
mod status;

use std::collections::BTreeMap;

use mesh_proto::admin::v1::{
    CreateServiceRequest, CreateTokenRequest, EndpointRef, ListRequest, RevokeIdentityRequest,
    RevokeTokenRequest, ServiceRef,
};
use mesh_proto::types::v1 as pb;
use serde::Serialize;

use crate::cli::{
    EndpointsArgs, EndpointsCommand, Global, IdentityCommand, ServiceCommand, TokenCommand,
};
use crate::client;
use crate::error::{CliError, Result};
use crate::inject::identity;
use crate::output::{Table, print_structured};

pub use policy::policy;
pub use runtime::runtime;
pub use status::{check, status};

/// The JSON shape of one endpoint (stable: scripts and tests rely on these names).
#[derive(Debug, Serialize)]
pub struct EndpointView {
    pub service: String,
    pub address: String,
    pub version: String,
    pub state: &'static str,
    pub weight: u32,
    pub zone: String,
    pub identity: String,
    pub app_port: u32,
    pub labels: BTreeMap<String, String>,
    pub source: String,
    /// Registered by a proxy without a mesh certificate (a control plane started with
    /// `--allow-anonymous-proxies`): strict callers never dial it.
    pub anonymous: bool,
}

impl EndpointView {
    fn new(service: String, e: pb::Endpoint) -> Self {
        let anonymous = e.identity.is_empty() && e.source.starts_with("proxy:");
        Self {
            anonymous,
            service,
            version: e.labels.get("version").cloned().unwrap_or_default(),
            state: state_name(e.state),
            // 0 on the wire means "default", which the proxy treats as 1.
            weight: e.weight.max(1),
            address: e.address,
            zone: e.zone,
            identity: e.identity,
            app_port: e.app_port,
            labels: e.labels.into_iter().collect(),
            source: e.source,
        }
    }
}

pub fn state_name(s: i32) -> &'static str {
    match pb::EndpointState::try_from(s) {
        Ok(pb::EndpointState::Draining) => "draining",
        Ok(pb::EndpointState::Unhealthy) => "unhealthy",
        _ => "healthy",
    }
}

pub async fn endpoints(global: &Global, args: EndpointsArgs) -> Result<()> {
    let mut admin = client::connect(global).await?;
    if let Some(EndpointsCommand::Drain {
        service, address, ..
    }) = args.action
    {
        let req = EndpointRef {
            service: service.clone(),
            address: address.to_string(),
        };
        let resp = admin.client.drain_endpoint(req).await;
        let entry = resp
            .map_err(|s| admin.error(&format!("draining {address} of {service}"), s))?
            .into_inner();
        let view = EndpointView::new(entry.service, entry.endpoint.unwrap_or_default());
        if !print_structured(global.output, &view)? {
            println!(
                "endpoint {address} of {service} is {}: it finishes in-flight requests and gets no new ones",
                view.state
            );
        }
        return Ok(());
    }
    let service = args.service.ok_or_else(|| {
        CliError::usage(
            "name the service: mesh-cli endpoints SERVICE (see `mesh-cli status` for services)",
        )
    })?;
    let resp = admin
        .client
        .list_endpoints(ServiceRef {
            service: service.clone(),
        })
        .await;
    let entries = resp
        .map_err(|s| admin.error(&format!("endpoints of {service}"), s))?
        .into_inner()
        .endpoints;
    let mut views: Vec<EndpointView> = entries
        .into_iter()
        .map(|e| EndpointView::new(e.service, e.endpoint.unwrap_or_default()))
        .collect();
    views.sort_by(|a, b| a.address.cmp(&b.address));
    if print_structured(global.output, &views)? {
        return Ok(());
    }
    if views.is_empty() {
        println!(
            "service {service} has no endpoints (are its sidecars running and connected? see `mesh-cli status`)"
        );
        return Ok(());
    }
    let mut t = Table::new(&[
        "SERVICE", "ADDRESS", "VERSION", "STATE", "WEIGHT", "ZONE", "IDENTITY",
    ]);
    for v in views {
        t.row(vec![
            v.service,
            v.address,
            v.version,
            v.state.to_string(),
            v.weight.to_string(),
            v.zone,
            if v.anonymous {
                "(anonymous proxy)".to_string()
            } else {
                v.identity
            },
        ]);
    }
    t.print();
    Ok(())
}

pub async fn token(global: &Global, cmd: TokenCommand) -> Result<()> {
    let mut admin = client::connect(global).await?;
    match cmd {
        TokenCommand::Create {
            namespace,
            service_account,
            ttl,
            k8s_secret,
            serves,
            max_uses,
        } => {
            let req = CreateTokenRequest {
                namespace: namespace.clone(),
                service_account: service_account.clone(),
                ttl_secs: ttl.map_or(0, |d| d.as_secs().max(1)),
                services: serves,
                max_uses: max_uses.unwrap_or(0),
            };
            let resp = admin.client.create_token(req).await;
            let t = resp
                .map_err(|s| admin.error("creating a token", s))?
                .into_inner();
            if k8s_secret {
                if t.trust_bundle_pem.is_empty() {
                    return Err(CliError::server(
                        "the control plane returned no trust bundle with the token (is it older than this CLI?)",
                    ));
                }
                let yaml = identity::manifests(
                    &namespace,
                    &service_account,
                    &t.token,
                    &t.trust_bundle_pem,
                )
                .map_err(|e| CliError::server(format!("cannot write YAML: {e}")))?;
                print!("{yaml}");
                eprintln!(
                    "token {} for {} (expires {}) as Secret {}; apply with kubectl apply -f -",
                    t.id,
                    t.identity,
                    unix_date(t.expires_unix),
                    identity::secret_name(&service_account)
                );
            } else if !print_structured(global.output, &t)? {
                println!("{}", t.token);
                eprintln!(
                    "token {} for {} (expires {}); shown once: store it now",
                    t.id,
                    t.identity,
                    unix_date(t.expires_unix)
                );
            }
        }
        TokenCommand::List => {
            let resp = admin.client.list_tokens(ListRequest {}).await;
            let tokens = resp
                .map_err(|s| admin.error("listing tokens", s))?
                .into_inner()
                .tokens;
            if !print_structured(global.output, &tokens)? {
                let mut t = Table::new(&["ID", "IDENTITY", "CREATED", "EXPIRES", "REVOKED"]);
                for k in tokens {
                    t.row(vec![
                        k.id,
                        k.identity,
                        unix_date(k.created_unix),
                        unix_date(k.expires_unix),
                        k.revoked.to_string(),
                    ]);
                }
                t.print();
            }
        }
        TokenCommand::Revoke { id } => {
            let resp = admin
                .client
                .revoke_token(RevokeTokenRequest { id: id.clone() })
                .await;
            let existed = resp
                .map_err(|s| admin.error(&format!("revoking token {id}"), s))?
                .into_inner()
                .existed;
            if !existed {
                return Err(CliError::usage(format!(
                    "no token with id {id:?} (see `mesh-cli token list`)"
                )));
            }
            println!("token {id} revoked");
        }
    }
    Ok(())
}

pub async fn identity(global: &Global, cmd: IdentityCommand) -> Result<()> {
    let mut admin = client::connect(global).await?;
    match cmd {
        IdentityCommand::Revoke { identity } => {
            let resp = admin
                .client
                .revoke_identity(RevokeIdentityRequest {
                    identity: identity.clone(),
                })
                .await;
            let info = resp
                .map_err(|s| admin.error(&format!("revoking identity {identity}"), s))?
                .into_inner();
            if !print_structured(global.output, &info)? {
                if info.newly_revoked {
                    println!(
                        "identity {} revoked: no more renewals, its discovery streams closed",
                        info.identity
                    );
                } else {
                    println!("identity {} was already revoked", info.identity);
                }
            }
        }
    }
    Ok(())
}

pub async fn service(global: &Global, cmd: ServiceCommand) -> Result<()> {
    let mut admin = client::connect(global).await?;
    match cmd {
        ServiceCommand::Create {
            service,
            namespace,
            ports,
            identities,
        } => {
            let req = CreateServiceRequest {
                service: service.clone(),
                namespace,
                ports,
                identities,
            };
            let resp = admin.client.create_service(req).await;
            let info = resp
                .map_err(|s| admin.error(&format!("creating service {service}"), s))?
                .into_inner();
            if !print_structured(global.output, &info)? {
                println!(
                    "service {} created in namespace {} (VIP {})",
                    info.service, info.namespace, info.vip
                );
            }
        }
        ServiceCommand::List => {
            let resp = admin.client.list_services(ListRequest {}).await;
            let mut services = resp
                .map_err(|s| admin.error("listing services", s))?
                .into_inner()
                .services;
            services.sort_by(|a, b| a.service.cmp(&b.service));
            if !print_structured(global.output, &services)? {
                let mut t = Table::new(&[
                    "SERVICE",
                    "NAMESPACE",
                    "VIP",
                    "PORTS",
                    "ENDPOINTS",
                    "DECLARED",
                    "IDENTITIES",
                ]);
                for s in services {
                    let ports = s
                        .ports
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(",");
                    t.row(vec![
                        s.service,
                        s.namespace,
                        s.vip,
                        ports,
                        s.endpoint_count.to_string(),
                        s.declared.to_string(),
                        s.identities.join(","),
                    ]);
                }
                t.print();
            }
        }
        ServiceCommand::Delete { service, .. } => {
            let resp = admin
                .client
                .delete_service(ServiceRef {
                    service: service.clone(),
                })
                .await;
            let existed = resp
                .map_err(|s| admin.error(&format!("deleting service {service}"), s))?
                .into_inner()
                .existed;
            if !existed {
                return Err(CliError::usage(format!(
                    "no declared service {service:?} (see `mesh-cli service list`)"
                )));
            }
            println!("service {service} deleted");
        }
    }
    Ok(())
}

/// `1700000000` → `2023-11-14T22:13:20Z` (civil-from-days, no date crate needed).
pub fn unix_date(secs: i64) -> String {
    if secs <= 0 {
        return String::new();
    }
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::unix_date(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(super::unix_date(0), "");
    }
}
