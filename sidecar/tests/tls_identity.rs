//! Sidecar bootstrap against the real Identity service: token rules, join-token sources, the cert store, CP TLS.

mod tls_common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_proto::identity::v1::identity_client::IdentityClient;
use mesh_sidecar::identity::{CertStore, ControlTls, IdentityError, JoinToken, Rotation, certify};
use mesh_sidecar::tls::TrustBundle;
use tls_common::{Cp, STEP, id};
use tokio::time::timeout;

#[tokio::test]
async fn token_for_a_cannot_get_b_and_revoked_token_is_refused() {
    let cp = Cp::start().await;
    let mut client = cp.client().await;
    let token_a = cp.token("a");
    let err = certify(&mut client, Some(&token_a), &id("b"), None)
        .await
        .unwrap_err();
    match &err {
        IdentityError::Refused(s) => assert_eq!(s.code(), tonic::Code::PermissionDenied),
        other => panic!("expected a refusal, got {other}"),
    }
    assert!(err.is_permanent());
    assert!(
        certify(&mut client, Some(&token_a), &id("a"), None)
            .await
            .is_ok()
    );

    let cp_id = cp.ca.trust_domain().workload("default", "c").unwrap();
    let (secret, record) = cp.tokens.create(cp_id, None).unwrap();
    cp.tokens.revoke(&record.id).unwrap();
    let token_c = JoinToken::new(secret.into_string()).unwrap();
    let err = certify(&mut client, Some(&token_c), &id("c"), None)
        .await
        .unwrap_err();
    match &err {
        IdentityError::Refused(s) => assert_eq!(s.code(), tonic::Code::Unauthenticated),
        other => panic!("expected a refusal, got {other}"),
    }
}

#[test]
fn join_token_from_env_or_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "from-file\n").unwrap();
    let t = JoinToken::resolve(Some("from-env".into()), Some(&file)).unwrap();
    assert_eq!(t.as_str(), "from-env");
    assert_eq!(format!("{t:?}"), "JoinToken(<redacted>)");
    let t = JoinToken::resolve(Some("  ".into()), Some(&file)).unwrap();
    assert_eq!(t.as_str(), "from-file");
    assert!(matches!(
        JoinToken::resolve(None, None),
        Err(IdentityError::NoToken)
    ));
    let missing = dir.path().join("missing");
    let err = JoinToken::resolve(None, Some(&missing)).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    std::fs::write(&file, "\n").unwrap();
    assert!(matches!(
        JoinToken::resolve(None, Some(&file)),
        Err(IdentityError::NoToken)
    ));
}

#[tokio::test]
async fn rotation_task_fills_the_store_and_exposes_expiry() {
    let cp = Cp::start().await;
    let store = CertStore::new(id("web"), TrustBundle::from_pem(&cp.bundle()).unwrap());
    assert!(store.current().is_none());
    assert_eq!(store.expiration_timestamp_seconds(), None);
    let task = tokio::spawn(
        Rotation {
            client: cp.client().await,
            token: cp.token("web"),
            store: store.clone(),
            ttl: Some(Duration::from_secs(3600)),
            keep: None,
            reconnect: None,
        }
        .run(),
    );
    timeout(STEP, store.ready())
        .await
        .expect("first certificate");
    assert!(store.current().is_some());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let exp = store.expiration_timestamp_seconds().unwrap();
    assert!(
        (now + 3500..=now + 3600).contains(&exp),
        "expires in about an hour: {exp} vs {now}"
    );
    assert_eq!(store.generation(), 1);
    task.abort();
}

#[tokio::test]
async fn sidecar_refuses_a_control_plane_outside_its_bundle() {
    let cp = Cp::start().await;
    let foreign = Cp::start().await;
    let tls = ControlTls::new(&foreign.bundle(), "localhost", None).unwrap();
    let endpoint = tls.endpoint(&format!("https://{}", cp.addr)).unwrap();
    let result = timeout(STEP, tls.connect(endpoint)).await.unwrap();
    let err = match result {
        // Channel may connect lazily; the first call then fails.
        Ok(ch) => {
            let mut c = IdentityClient::new(ch);
            certify(&mut c, Some(&cp.token("a")), &id("a"), None)
                .await
                .unwrap_err()
                .to_string()
        }
        Err(e) => format!("{e:?}"),
    };
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn a_renewal_proves_the_current_certificate_without_a_token() {
    let cp = Cp::start().await;
    let store = cp.workload("renewer").await;
    let first = store.credentials().unwrap().not_after;
    // No token at all: the channel presents the current certificate and that is the proof.
    let mut client = cp.client_as(Some(store.clone())).await;
    let (creds, _) = certify(&mut client, None, &id("renewer"), None)
        .await
        .expect("renewal by certificate");
    assert!(creds.not_after >= first);
    // The certificate proves one identity only: it cannot obtain another.
    let err = certify(&mut client, None, &id("other"), None)
        .await
        .unwrap_err();
    match &err {
        IdentityError::Refused(s) => assert_eq!(s.code(), tonic::Code::PermissionDenied),
        other => panic!("expected a refusal, got {other}"),
    }
    // Without a certificate and without a token nothing is issued.
    let mut anonymous = cp.client().await;
    let err = certify(&mut anonymous, None, &id("renewer"), None)
        .await
        .unwrap_err();
    match &err {
        IdentityError::Refused(s) => assert_eq!(s.code(), tonic::Code::Unauthenticated),
        other => panic!("expected a refusal, got {other}"),
    }
}

#[tokio::test]
async fn a_kept_certificate_survives_a_restart_and_only_for_its_identity() {
    use std::os::unix::fs::PermissionsExt;
    let cp = Cp::start().await;
    let store = cp.workload("keeper").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.pem");
    store.credentials().unwrap().save(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the key is readable by the sidecar only");
    let loaded = mesh_sidecar::identity::Credentials::load(&path, &id("keeper")).unwrap();
    assert_eq!(loaded.not_after, store.credentials().unwrap().not_after);
    assert!(
        mesh_sidecar::identity::Credentials::load(&path, &id("someone-else")).is_err(),
        "a kept certificate serves only the identity it names"
    );
    std::fs::write(&path, "garbage").unwrap();
    assert!(mesh_sidecar::identity::Credentials::load(&path, &id("keeper")).is_err());
}
