//! Secure naming against the real control plane over real TLS, with hostile discovery
//! clients: no certificate, a certificate of an identity not bound to the service, a node that
//! claims another identity, a bound identity taking over another workload's address, and a
//! revoked identity. The proxy's identity is what its certificate proves, nothing else.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use mesh_control_plane::config::Config;
use mesh_control_plane::model::ServiceDecl;
use mesh_proto::discovery::v1::discovery_client::DiscoveryClient;
use mesh_proto::discovery::v1::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Node};
use mesh_proto::identity::v1::identity_client::IdentityClient;
use mesh_proto::type_url;
use mesh_sidecar::identity::{CertStore, ControlTls, JoinToken, SpiffeId, certify};
use mesh_sidecar::tls::TrustBundle;
use tokio::time::timeout;
use tonic::{Code, Status, Streaming};

/// Bounds a hang only; every step takes milliseconds.
const STEP: Duration = Duration::from_secs(20);

struct Cp {
    handle: mesh_control_plane::Handle,
    bundle: Vec<String>,
    _dir: tempfile::TempDir,
}

async fn start() -> Cp {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::ephemeral(dir.path().join("cp"));
    // As the binary runs by default: TLS, and only proxies with a mesh certificate.
    cfg.discovery_tls = true;
    cfg.allow_anonymous_proxies = false;
    let handle = mesh_control_plane::run(cfg).await.expect("control plane");
    let pem = std::fs::read_to_string(dir.path().join("cp/ca/trust-bundle.pem")).unwrap();
    Cp {
        handle,
        bundle: vec![pem],
        _dir: dir,
    }
}

fn id(sa: &str) -> String {
    format!("spiffe://cluster.local/ns/default/sa/{sa}")
}

impl Cp {
    fn tls(&self, workload: Option<Arc<CertStore>>) -> ControlTls {
        ControlTls::new(&self.bundle, "127.0.0.1", workload).unwrap()
    }

    /// A workload of `default/<sa>` holding a certificate obtained with a join token.
    async fn workload(&self, sa: &str) -> Arc<CertStore> {
        let (token, _) = self
            .handle
            .core
            .create_token("default", sa, 0, &[], 0)
            .unwrap();
        let me = SpiffeId::parse(&id(sa)).unwrap();
        let store = CertStore::new(me.clone(), TrustBundle::from_pem(&self.bundle).unwrap());
        let tls = self.tls(None);
        let channel = tls
            .connect(tls.endpoint(&self.handle.discovery_url).unwrap())
            .await
            .unwrap();
        let token = JoinToken::new(token).unwrap();
        let (creds, _) = certify(&mut IdentityClient::new(channel), Some(&token), &me, None)
            .await
            .unwrap();
        store.set_credentials(creds);
        store
    }

    /// Opens a discovery stream presenting `workload`'s certificate (none: anonymous) with
    /// `node`, subscribed to `api`'s endpoints; returns the stream once its first response
    /// arrived, or the refusal.
    async fn open(
        &self,
        workload: Option<Arc<CertStore>>,
        node: Node,
    ) -> Result<(Streaming<DeltaDiscoveryResponse>, DeltaDiscoveryResponse), Status> {
        let tls = self.tls(workload);
        let channel = tls
            .connect(tls.endpoint(&self.handle.discovery_url).unwrap())
            .await
            .unwrap();
        let first = DeltaDiscoveryRequest {
            node: Some(node),
            type_url: type_url::ENDPOINTS.to_string(),
            resource_names_subscribe: vec!["api".into()],
            ..Default::default()
        };
        // The request side stays open (a second message never comes) for as long as the
        // stream is used.
        let requests =
            futures_util::stream::iter(vec![first]).chain(futures_util::stream::pending());
        let mut stream = timeout(STEP, DiscoveryClient::new(channel).delta_stream(requests))
            .await
            .expect("answer in time")?
            .into_inner();
        let resp = timeout(STEP, stream.message())
            .await
            .expect("first response in time")?
            .expect("a response");
        Ok((stream, resp))
    }

    fn api_endpoints(&self) -> Vec<(String, Option<String>)> {
        self.handle
            .core
            .list_endpoints("api")
            .map(|eps| {
                eps.into_iter()
                    .map(|e| (e.address.to_string(), e.identity))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn denied(&self, reason: &str) -> u64 {
        let text = self.handle.core.metrics.encode();
        let line = format!("mesh_cp_announces_denied_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

fn node(id: &str, service: &str, address: &str, claimed_identity: &str) -> Node {
    Node {
        id: id.into(),
        identity: claimed_identity.into(),
        service: service.into(),
        namespace: "default".into(),
        address: address.into(),
        inbound_port: 15006,
        app_ports: vec![8080],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_without_a_mesh_certificate_registers_nothing() {
    let cp = start().await;
    let err = cp
        .open(None, node("rogue", "api", "10.0.0.9", &id("api")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    assert!(err.message().contains("certificate"), "{err}");
    assert!(cp.api_endpoints().is_empty());
    assert_eq!(cp.denied("unauthenticated"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_not_bound_to_the_service_is_refused_naming_both() {
    let cp = start().await;
    let web = cp.workload("web").await;
    let err = cp
        .open(Some(web), node("rogue", "api", "10.0.0.9", &id("api")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(err.message().contains(&id("web")), "{err}");
    assert!(err.message().contains("\"api\""), "{err}");
    assert!(cp.api_endpoints().is_empty());
    assert_eq!(cp.denied("not_bound"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_identity_is_the_certificate_s_not_the_node_s() {
    let cp = start().await;
    let api = cp.workload("api").await;
    // The node claims another identity; the certificate says sa/api, and that is what counts.
    let (_stream, resp) = cp
        .open(Some(api), node("p1", "api", "10.0.0.1", &id("admin")))
        .await
        .expect("bound identity is admitted");
    assert_eq!(resp.type_url, type_url::ENDPOINTS);
    assert_eq!(
        cp.api_endpoints(),
        vec![("10.0.0.1:15006".to_string(), Some(id("api")))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_proxy_cannot_take_over_an_endpoint_address() {
    let cp = start().await;
    // Two identities may serve api; neither may take the other's address.
    cp.handle
        .core
        .create_service(ServiceDecl {
            service: "api".into(),
            namespace: "default".into(),
            ports: vec![8080],
            identities: vec![id("api"), id("api-canary")],
        })
        .unwrap();
    let api = cp.workload("api").await;
    let canary = cp.workload("api-canary").await;
    let (_owner, _) = cp
        .open(Some(api), node("owner", "api", "10.0.0.1", ""))
        .await
        .expect("owner admitted");
    let err = cp
        .open(Some(canary.clone()), node("thief", "api", "10.0.0.1", ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(err.message().contains(&id("api")), "names the owner: {err}");
    assert_eq!(
        cp.api_endpoints(),
        vec![("10.0.0.1:15006".to_string(), Some(id("api")))]
    );
    assert_eq!(cp.denied("address_owned"), 1);
    // Its own address is fine.
    let (_canary, _) = cp
        .open(Some(canary), node("canary", "api", "10.0.0.2", ""))
        .await
        .expect("canary on its own address");
    assert_eq!(cp.api_endpoints().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_an_identity_closes_its_stream_and_stops_renewal() {
    let cp = start().await;
    let api = cp.workload("api").await;
    let (mut stream, _) = cp
        .open(Some(api.clone()), node("p1", "api", "10.0.0.1", ""))
        .await
        .expect("admitted");
    let (revoked, new) = cp.handle.core.revoke_identity("ns/default/sa/api").unwrap();
    assert!(new);
    assert_eq!(revoked, id("api"));
    // The open stream ends with the reason.
    let end = loop {
        match timeout(STEP, stream.message())
            .await
            .expect("closed in time")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), Code::PermissionDenied, "{end}");
    assert!(end.message().contains("revoked"), "{end}");
    // A new stream and a renewal are refused.
    let err = cp
        .open(Some(api.clone()), node("p1", "api", "10.0.0.1", ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    let tls = cp.tls(Some(api));
    let channel = tls
        .connect(tls.endpoint(&cp.handle.discovery_url).unwrap())
        .await
        .unwrap();
    let me = SpiffeId::parse(&id("api")).unwrap();
    let err = certify(&mut IdentityClient::new(channel), None, &me, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("revoked"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_use_token_obtains_one_certificate_and_renewal_needs_none() {
    let cp = start().await;
    let (token, _) = cp
        .handle
        .core
        .create_token("default", "once", 0, &[], 1)
        .unwrap();
    let token = JoinToken::new(token).unwrap();
    let me = SpiffeId::parse(&id("once")).unwrap();
    let tls = cp.tls(None);
    let endpoint = tls.endpoint(&cp.handle.discovery_url).unwrap();
    let mut client = IdentityClient::new(tls.connect(endpoint.clone()).await.unwrap());
    let (creds, _) = certify(&mut client, Some(&token), &me, None)
        .await
        .expect("first use");
    let err = certify(&mut client, Some(&token), &me, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("max-uses"), "{err}");
    // The certificate it obtained renews itself.
    let store = CertStore::new(me.clone(), TrustBundle::from_pem(&cp.bundle).unwrap());
    store.set_credentials(creds);
    let tls = cp.tls(Some(store));
    let mut renewer = IdentityClient::new(tls.connect(endpoint).await.unwrap());
    certify(&mut renewer, None, &me, None)
        .await
        .expect("renewal by certificate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_endpoint_may_claim_only_a_bound_identity() {
    use mesh_control_plane::model::{Endpoint, EndpointSource, EndpointState};
    let cp = start().await;
    cp.handle
        .core
        .create_service(ServiceDecl {
            service: "api".into(),
            namespace: "default".into(),
            ports: vec![8080],
            identities: Vec::new(),
        })
        .unwrap();
    let endpoint = |identity: &str| Endpoint {
        address: "10.0.0.5:15006".parse().unwrap(),
        weight: 1,
        zone: None,
        labels: Default::default(),
        state: EndpointState::Healthy,
        identity: Some(identity.to_string()),
        app_port: Some(8080),
        source: EndpointSource::Static,
    };
    let err = cp
        .handle
        .core
        .register_endpoint("api", endpoint(&id("web")))
        .unwrap_err();
    assert!(err.to_string().contains("not bound"), "{err}");
    cp.handle
        .core
        .register_endpoint("api", endpoint(&id("api")))
        .expect("the default binding");
}
