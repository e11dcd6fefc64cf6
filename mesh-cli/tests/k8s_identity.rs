//! The Kubernetes identity path without a cluster: `mesh-cli token create --k8s-secret` prints
//! the Secret and the trust-bundle ConfigMap, `inject` makes the proxy read exactly those
//! objects, and a real sidecar given what the kubelet would project from them (the token, the
//! bundle file, namespace and service account) gets that identity from a TLS control plane.

mod support;

use serde_norway::Value;
use support::ControlPlane;
use support::mesh::Sidecar;

fn docs(s: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(s)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

/// A Deployment of `reviews` in `shop` running as service account `reviews`.
const DEPLOYMENT: &str = "
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec:
      serviceAccountName: reviews
      containers: [{name: reviews, image: example/reviews:1.0}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_secret_and_bundle_configmap_are_what_injected_pods_read_and_they_work() {
    let cp = ControlPlane::start_with(&["--discovery-tls=true"]);
    let dir = cp.dir.path().to_path_buf();
    let run = cp
        .cli_async(&[
            "token",
            "create",
            "--namespace",
            "shop",
            "--service-account",
            "reviews",
            "--k8s-secret",
        ])
        .await
        .ok();
    let objects = docs(&run.stdout);
    assert_eq!(objects.len(), 2, "{}", run.stdout);
    let (secret, bundle) = (&objects[0], &objects[1]);
    assert_eq!(secret["kind"], "Secret");
    assert_eq!(secret["metadata"]["name"], "mesh-join-reviews");
    assert_eq!(secret["metadata"]["namespace"], "shop");
    let token = secret["stringData"]["token"].as_str().unwrap();
    assert!(!token.is_empty());
    assert_eq!(bundle["kind"], "ConfigMap");
    assert_eq!(bundle["metadata"]["name"], "mesh-trust-bundle");
    assert_eq!(bundle["metadata"]["namespace"], "shop");
    let pem = bundle["data"]["trust-bundle.pem"].as_str().unwrap();
    let on_disk = std::fs::read_to_string(dir.join("ca").join("trust-bundle.pem")).unwrap();
    assert_eq!(
        pem, on_disk,
        "the ConfigMap carries the control plane's bundle"
    );
    assert!(run.stderr.contains("kubectl apply"), "{}", run.stderr);

    // The injected proxy reads exactly these objects.
    let injected = cp.cli_stdin(&["inject", "-f", "-"], DEPLOYMENT).ok();
    let pod = &docs(&injected.stdout)[0]["spec"]["template"]["spec"];
    let proxy = pod["initContainers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "mesh-proxy")
        .unwrap();
    let env = |name: &str| {
        proxy["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .clone()
    };
    let key = &env("MESH_JOIN_TOKEN")["valueFrom"]["secretKeyRef"];
    assert_eq!(key["name"], secret["metadata"]["name"]);
    assert!(secret["stringData"][key["key"].as_str().unwrap()].is_string());
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["configMap"]["name"] == bundle["metadata"]["name"])
        .expect("the bundle ConfigMap as a pod volume");
    let mount = proxy["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("mounted into the proxy");
    let bundle_path = env("MESH_CA_BUNDLE")["value"].as_str().unwrap().to_string();
    let file = bundle_path
        .strip_prefix(&format!("{}/", mount["mountPath"].as_str().unwrap()))
        .expect("MESH_CA_BUNDLE lies in the mounted volume");
    assert!(
        bundle["data"][file].is_string(),
        "{file} is a key of the ConfigMap"
    );

    // What the kubelet would project, handed to a real sidecar: it gets the identity.
    let token_file = dir.join("projected-token");
    std::fs::write(&token_file, token).unwrap();
    let bundle_file = dir.join("projected-bundle.pem");
    std::fs::write(&bundle_file, pem).unwrap();
    let url = format!("https://{}", cp.discovery);
    let sidecar = Sidecar::start_with(
        &dir,
        &url,
        "reviews",
        "v1",
        None,
        &[
            "--namespace",
            "shop",
            "--service-account",
            "reviews",
            "--join-token-file",
            token_file.to_str().unwrap(),
            "--ca-bundle",
            bundle_file.to_str().unwrap(),
        ],
    )
    .await;
    let admin = sidecar.admin.to_string();
    let certs = cp
        .cli_async(&["proxy-config", &admin, "certs", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(
        certs["leaf"]["spiffe_id"], "spiffe://cluster.local/ns/shop/sa/reviews",
        "{certs}"
    );
}
