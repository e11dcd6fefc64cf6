//! The Identity gRPC service over real TLS on loopback: token → cert, wrong identity, revoked and unknown tokens, garbage CSRs.

use std::sync::Arc;
use std::time::Duration;

use mesh_control_plane::ca::{
    CaConfig, CertificateAuthority, JoinToken, JoinTokens, MemoryCaStorage, SpiffeId,
};
use mesh_control_plane::identity_server::IdentityService;
use mesh_control_plane::serving::ServingTls;
use mesh_proto::identity::v1::CertifyRequest;
use mesh_proto::identity::v1::identity_client::IdentityClient;
use rcgen::{CertificateParams, KeyPair, SanType};
use tokio::time::timeout;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Server};

/// Bounds a hang only; every step here takes milliseconds.
const STEP: Duration = Duration::from_secs(20);

struct Cp {
    client: IdentityClient<Channel>,
    tokens: JoinTokens,
    bundle: Vec<String>,
}

async fn start() -> Cp {
    let ca = Arc::new(
        CertificateAuthority::load_or_create(
            CaConfig::default(),
            Arc::new(MemoryCaStorage::default()),
        )
        .unwrap(),
    );
    let tokens = JoinTokens::in_memory();
    // The control plane's own listener TLS (renewing serving certificate, client certs
    // verified against the bundle), as the binary serves it.
    let tls = ServingTls::new(ca.clone(), Vec::new(), Duration::from_secs(3600)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = IdentityService::new(ca.clone(), tokens.clone()).into_server();
    let server = Server::builder().add_service(svc);
    tokio::spawn(server.serve_with_incoming(tls.incoming(listener)));

    // The client trusts only the mesh bundle and checks the CP's DNS SAN `localhost`.
    let client_tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.trust_bundle().concat()))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(client_tls)
        .unwrap();
    let channel = timeout(STEP, channel.connect()).await.unwrap().unwrap();
    Cp {
        client: IdentityClient::new(channel),
        tokens,
        bundle: ca.trust_bundle(),
    }
}

fn id(sa: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://cluster.local/ns/default/sa/{sa}")).unwrap()
}

fn request(token: &JoinToken, identity: &SpiffeId, csr_uri: &SpiffeId) -> CertifyRequest {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(csr_uri.as_str().try_into().unwrap())];
    CertifyRequest {
        token: token.as_str().to_owned(),
        identity: identity.to_string(),
        csr_der: params.serialize_request(&key).unwrap().der().to_vec(),
        requested_ttl_secs: 0,
    }
}

async fn certify(
    cp: &mut Cp,
    req: CertifyRequest,
) -> Result<mesh_proto::identity::v1::CertifyResponse, tonic::Status> {
    timeout(STEP, cp.client.certify(req))
        .await
        .expect("certify hung")
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn token_gets_a_cert_for_its_identity_over_tls() {
    let mut cp = start().await;
    let (token, _) = cp.tokens.create(id("a"), None).unwrap();
    let resp = certify(&mut cp, request(&token, &id("a"), &id("a")))
        .await
        .unwrap();
    assert!(resp.leaf_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(resp.trust_bundle_pem, cp.bundle);
    assert!(resp.chain_pem.is_empty());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let life = resp.not_after_unix - now;
    assert!((86_000..=86_400).contains(&life), "about a day: {life}");
}

#[tokio::test]
async fn token_for_a_cannot_get_b() {
    let mut cp = start().await;
    let (token, _) = cp.tokens.create(id("a"), None).unwrap();
    let err = certify(&mut cp, request(&token, &id("b"), &id("b")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    // Field says A, the CSR's SAN says B.
    let err = certify(&mut cp, request(&token, &id("a"), &id("b")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
}

#[tokio::test]
async fn revoked_unknown_and_expired_tokens_are_unauthenticated() {
    let mut cp = start().await;
    let (token, record) = cp.tokens.create(id("a"), None).unwrap();
    assert!(cp.tokens.revoke(&record.id).unwrap());
    let err = certify(&mut cp, request(&token, &id("a"), &id("a")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    assert!(err.message().contains("revoked"), "{err}");

    let mut req = request(&token, &id("a"), &id("a"));
    req.token = "not-a-token".to_owned();
    let err = certify(&mut cp, req).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");

    let past = std::time::SystemTime::now() - Duration::from_secs(3600);
    let (old, _) = cp
        .tokens
        .create_at(id("a"), Some(Duration::from_secs(60)), past)
        .unwrap();
    let err = certify(&mut cp, request(&old, &id("a"), &id("a")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    assert!(err.message().contains("expired"), "{err}");
}

#[tokio::test]
async fn thousand_garbage_csrs_over_grpc_then_a_valid_one() {
    let mut cp = start().await;
    let (token, _) = cp.tokens.create(id("a"), None).unwrap();
    for i in 0..1000u32 {
        let mut req = request(&token, &id("a"), &id("a"));
        req.csr_der = i.to_le_bytes().repeat((i % 64) as usize + 1);
        let err = certify(&mut cp, req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "#{i}: {err}");
        assert!(err.message().contains("CSR"), "#{i}: {err}");
    }
    let resp = certify(&mut cp, request(&token, &id("a"), &id("a")))
        .await
        .unwrap();
    assert!(!resp.leaf_pem.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_flood_gets_clear_errors_then_a_valid_request_works() {
    let mut cp = start().await;
    let (token, _) = cp.tokens.create(id("a"), None).unwrap();
    let template = request(&token, &id("a"), &id("a"));
    let mut tasks = Vec::new();
    for i in 0..500u32 {
        let mut client = cp.client.clone();
        let mut req = template.clone();
        req.csr_der = vec![(i % 251) as u8; (i as usize % 300) + 1];
        tasks.push(tokio::spawn(async move {
            timeout(STEP, client.certify(req))
                .await
                .expect("hung")
                .unwrap_err()
                .code()
        }));
    }
    for t in tasks {
        let code = t.await.unwrap();
        assert!(
            matches!(code, Code::InvalidArgument | Code::ResourceExhausted),
            "{code:?}"
        );
    }
    let resp = certify(&mut cp, template).await.unwrap();
    assert!(!resp.leaf_pem.is_empty());
}
