//! A real admin API client for scenarios: TLS verified with the control plane's trust bundle
//! (as `mesh-cli` does), authenticated with its token.

use mesh_proto::admin::v1::admin_client::AdminClient;
use mesh_proto::admin::v1::{ListRequest, SetRouteRequest};
use mesh_proto::types::v1::{
    KeyValueMatch, Route, RouteMatch, RouteRule, ValueMatchKind, WeightedBackend,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::ControlPlane;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub type Admin = AdminClient<InterceptedService<Channel, Bearer>>;

/// A channel to the admin API at the URL the control plane wrote: for `https://`, trusting only
/// its bundle and checking the certificate's `127.0.0.1` (the address dialled).
pub async fn channel(cp: &ControlPlane) -> Result<Channel, tonic::transport::Error> {
    let mut endpoint = Channel::from_shared(cp.admin_url.clone()).expect("admin URL");
    if cp.admin_url.starts_with("https://") {
        let pem = std::fs::read_to_string(cp.ca_bundle()).expect("trust bundle in data dir");
        endpoint = endpoint.tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(pem))
                .domain_name(cp.admin.ip().to_string()),
        )?;
    }
    endpoint.connect().await
}

pub async fn admin(cp: &ControlPlane) -> Admin {
    let channel = channel(cp).await.expect("connect admin API");
    let v = format!("Bearer {}", cp.admin_token())
        .parse()
        .expect("token");
    AdminClient::with_interceptor(channel, Bearer(v))
}

/// A weighted split of `service` between subsets, e.g. `[("v1", 80), ("v2", 20)]`.
pub fn split_rule(service: &str, name: &str, weights: &[(&str, u32)]) -> RouteRule {
    RouteRule {
        name: name.into(),
        backends: weights
            .iter()
            .map(|(subset, weight)| WeightedBackend {
                service: service.into(),
                subset: (*subset).into(),
                weight: *weight,
            })
            .collect(),
        ..Default::default()
    }
}

/// A rule sending requests with header `name: value` to one subset.
pub fn header_rule(service: &str, header: &str, value: &str, subset: &str) -> RouteRule {
    RouteRule {
        name: format!("{header}-{value}"),
        matches: vec![RouteMatch {
            headers: vec![KeyValueMatch {
                name: header.into(),
                kind: ValueMatchKind::Exact as i32,
                value: value.into(),
            }],
            ..Default::default()
        }],
        ..split_rule(service, "", &[(subset, 100)])
    }
}

/// Stores the route and returns its version.
pub async fn set_route(admin: &mut Admin, service: &str, rules: Vec<RouteRule>) -> String {
    admin
        .set_route(SetRouteRequest {
            route: Some(Route {
                service: service.into(),
                rules,
            }),
            dry_run: false,
            expected_version: String::new(),
        })
        .await
        .expect("set route")
        .into_inner()
        .version
}

/// True when every proxy subscribed to `service`'s route has ACKed `version`.
pub async fn route_acked(admin: &mut Admin, service: &str, version: &str) -> bool {
    let Ok(resp) = admin.list_proxies(ListRequest {}).await else {
        return false;
    };
    let mut subscribed = 0;
    for p in resp.into_inner().proxies {
        for r in p.resources {
            if r.type_url == mesh_proto::type_url::ROUTE
                && r.subscribed.iter().any(|s| s == service)
            {
                subscribed += 1;
                if r.acked_versions.get(service).map(String::as_str) != Some(version) {
                    return false;
                }
            }
        }
    }
    subscribed > 0
}
