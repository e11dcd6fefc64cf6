//! Namespaces are real, with the real binaries and strict mTLS: `reviews` in `default` and
//! `reviews` in `shop` are two services — two identities, two VIPs, two route tables, two
//! endpoint lists — and a short name resolves within the caller's namespace, as Kubernetes
//! DNS does.

mod mtls_support;

use std::process::Command;

use mesh_proto::admin::v1::ServiceRef;
use mesh_tests::admin::admin;
use mesh_tests::http::{EchoApp, get_via};
use mesh_tests::{ControlPlane, Sidecar, SidecarOpts, bin_path, eventually};
use mtls_support::{CONVERGE, TLS, token_for};

/// A sidecar of `service` in `namespace`, joining with a token for that namespace's
/// service account named like the service.
async fn meshed_in(
    cp: &ControlPlane,
    dir: &std::path::Path,
    namespace: &str,
    service: &str,
    app: Option<u16>,
) -> Sidecar {
    let token = token_for(cp, namespace, service, 0).await;
    Sidecar::start(
        dir,
        &SidecarOpts {
            service: service.into(),
            namespace: Some(namespace.into()),
            app_ports: app.into_iter().collect(),
            control_plane: Some(cp.tls_discovery_url()),
            extra: cp.sidecar_tls_args(),
            env: vec![("MESH_JOIN_TOKEN".into(), token)],
            ..Default::default()
        },
    )
}

async fn answered_by(proxy: std::net::SocketAddr, authority: &str) -> String {
    eventually(&format!("{authority} reachable"), CONVERGE, || async {
        get_via(proxy, authority, "/", &[])
            .await
            .ok()
            .filter(|r| r.0 == 200)
            .and_then(|r| r.1)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_namespaces_with_a_service_of_the_same_name_stay_apart() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), TLS);
    let in_default = EchoApp::start("reviews-default").await;
    let in_shop = EchoApp::start("reviews-shop").await;
    let _a = meshed_in(
        &cp,
        dir.path(),
        "default",
        "reviews",
        Some(in_default.addr.port()),
    )
    .await;
    let _b = meshed_in(
        &cp,
        dir.path(),
        "shop",
        "reviews",
        Some(in_shop.addr.port()),
    )
    .await;
    let web = meshed_in(&cp, dir.path(), "default", "web", None).await;
    let web_shop = meshed_in(&cp, dir.path(), "shop", "web", None).await;

    // Short names resolve within the caller's namespace; `name.ns` reaches across.
    assert_eq!(
        answered_by(web.outbound, "reviews").await,
        "reviews-default"
    );
    assert_eq!(
        answered_by(web_shop.outbound, "reviews").await,
        "reviews-shop"
    );
    assert_eq!(
        answered_by(web.outbound, "reviews.shop").await,
        "reviews-shop"
    );
    assert_eq!(
        answered_by(web_shop.outbound, "reviews.default.svc.cluster.local").await,
        "reviews-default"
    );

    // Two endpoint lists, each with its own namespace's identity; two VIPs.
    let mut a = admin(&cp).await;
    let mut identities = Vec::new();
    for key in ["reviews", "reviews.shop"] {
        let eps = a
            .list_endpoints(ServiceRef {
                service: key.into(),
            })
            .await
            .expect("list endpoints")
            .into_inner()
            .endpoints;
        assert_eq!(eps.len(), 1, "{key}: {eps:?}");
        identities.push(eps[0].endpoint.as_ref().unwrap().identity.clone());
    }
    assert_eq!(
        identities,
        [
            "spiffe://cluster.local/ns/default/sa/reviews",
            "spiffe://cluster.local/ns/shop/sa/reviews"
        ]
    );
    let cli = |args: &[&str]| {
        let out = Command::new(bin_path("mesh-cli"))
            .arg("--data-dir")
            .arg(&cp.data_dir)
            .args(args)
            .output()
            .expect("run mesh-cli");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let services: serde_json::Value =
        serde_json::from_str(&cli(&["service", "list", "-o", "json"])).unwrap();
    let vip = |key: &str| {
        services
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == key)
            .map(|s| s["vip"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{key} in {services}"))
    };
    assert_ne!(vip("reviews"), vip("reviews.shop"));

    // A route in shop changes shop's traffic only.
    cli(&[
        "route",
        "set",
        "reviews",
        "-n",
        "shop",
        "--set-response-header",
        "x-route=shop",
        "--wait",
    ]);
    let shop_header = eventually("shop's route applied", CONVERGE, || async {
        let r = get_via(web_shop.outbound, "reviews", "/", &[]).await.ok()?;
        r.3.get("x-route")
            .map(|v| v.to_str().unwrap_or_default().to_string())
    })
    .await;
    assert_eq!(shop_header, "shop");
    let r = get_via(web.outbound, "reviews", "/", &[]).await.unwrap();
    assert_eq!(r.1.as_deref(), Some("reviews-default"));
    assert!(
        r.3.get("x-route").is_none(),
        "default's traffic took shop's route"
    );
    let endpoints = cli(&["endpoints", "reviews", "-n", "shop"]);
    assert!(
        endpoints.contains("spiffe://cluster.local/ns/shop/sa/reviews"),
        "{endpoints}"
    );
}
