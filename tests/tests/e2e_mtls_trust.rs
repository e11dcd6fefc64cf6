//! Trust-bundle rotation applied live: a running sidecar starts trusting a peer whose leaf chains to a new root as soon as the control plane publishes old + new roots, without restarting.
//!
//! The control plane has no admin call to add a root; the operator path is a restart with
//! `--ca-cert/--ca-key` (the current signer) and `--ca-bundle` holding old + new roots. The
//! restarted control plane publishes both roots in the `Runtime` resource, and the sidecar's
//! verifiers use them for the next handshake.

mod mtls_support;

use std::path::Path;

use mesh_proto::admin::v1::SetClusterPolicyRequest;
use mesh_proto::types::v1::{Cluster, OutlierDetection};
use mesh_tests::admin::admin;
use mesh_tests::http::{EchoApp, get_via};
use mesh_tests::{ControlPlane, Sidecar, SidecarOpts, eventually};
use mtls_support::{CONVERGE, TLS, meshed, metrics_text, register_static, sample, token};

/// Copies the CA's cert and key out of a control plane's data dir (operator files).
fn operator_files(cp_dir: &Path, to: &Path) -> (String, String) {
    std::fs::create_dir_all(to).unwrap();
    let copy = |name: &str| {
        let dst = to.join(name);
        std::fs::copy(cp_dir.join("ca").join(name), &dst).unwrap();
        dst.display().to_string()
    };
    (copy("ca.crt"), copy("ca.key"))
}

fn operator_args<'a>(cert: &'a str, key: &'a str, bundle: &'a str) -> Vec<&'a str> {
    let mut args = TLS.to_vec();
    args.extend(["--ca-cert", cert, "--ca-key", key, "--ca-bundle", bundle]);
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_root_published_by_the_control_plane_is_trusted_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Root B: created by a throwaway control plane, then handed over as operator files.
    drop(ControlPlane::start(&d.join("b0"), &[]));
    let (b_cert, b_key) = operator_files(&d.join("b0"), &d.join("op-b"));
    // Root A: the control plane our client sidecar belongs to.
    let mut cp_a = ControlPlane::start(&d.join("a"), TLS);
    let (a_cert, a_key) = operator_files(&d.join("a"), &d.join("op-a"));
    let both = d.join("a+b.pem");
    std::fs::write(
        &both,
        std::fs::read_to_string(&a_cert).unwrap() + &std::fs::read_to_string(&b_cert).unwrap(),
    )
    .unwrap();
    let both = both.display().to_string();

    // A peer whose leaf chains to B (its control plane signs with B and trusts A + B).
    let cp_b = ControlPlane::start(&d.join("b"), &operator_args(&b_cert, &b_key, &both));
    let app = EchoApp::start("echo-b").await;
    let peer = Sidecar::start(
        d,
        &SidecarOpts {
            service: "echo".into(),
            app_ports: vec![app.addr.port()],
            control_plane: Some(cp_b.tls_discovery_url()),
            extra: cp_b.sidecar_tls_args(),
            env: vec![("MESH_JOIN_TOKEN".into(), token(&cp_b, "echo").await)],
            ..Default::default()
        },
    );
    let client = meshed(&cp_a, d, "client", None).await;
    let sa = "spiffe://cluster.local/ns/default/sa/echo";
    register_static(&cp_a, "echo-b", peer.inbound, sa, app.addr.port()).await;
    // The refusals below are expected: they must not eject the only endpoint.
    tokio::time::timeout(
        mtls_support::IO_LIMIT,
        admin(&cp_a)
            .await
            .set_cluster_policy(SetClusterPolicyRequest {
                cluster: Some(Cluster {
                    name: "echo-b".into(),
                    outlier_detection: Some(OutlierDetection {
                        disabled: true,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                dry_run: false,
            }),
    )
    .await
    .expect("cluster policy in time")
    .expect("set cluster policy");

    // Trusting only A, the client refuses the peer's B-chained certificate.
    eventually("client refuses the B peer", CONVERGE, || async {
        get_via(client.outbound, "echo-b", "/", &[])
            .await
            .ok()
            .filter(|r| r.0 == 502)
    })
    .await;
    let unknown_ca =
        r#"mesh_tls_handshake_failures_total{direction="outbound",reason="unknown_ca"}"#;
    let refused = sample(&metrics_text(client.admin).await, unknown_ca);
    assert!(refused > 0.0, "{unknown_ca} = {refused}");
    assert_eq!(app.hits(), 0, "the peer's app was reached without trust");

    // The operator adds B to A's bundle: same signer, same ports, same data dir.
    let addrs = [cp_a.discovery, cp_a.admin, cp_a.http];
    cp_a.kill9();
    let cp_a = ControlPlane::start_on(&d.join("a"), addrs, &operator_args(&a_cert, &a_key, &both));

    // The client sidecar (never restarted) now trusts B for new handshakes.
    let (status, who, _, _) = eventually("client trusts the new root", CONVERGE, || async {
        get_via(client.outbound, "echo-b", "/rotated", &[])
            .await
            .ok()
            .filter(|r| r.0 == 200)
    })
    .await;
    assert_eq!(status, 200);
    assert_eq!(who.as_deref(), Some("echo-b"));
    drop(cp_a);
}
