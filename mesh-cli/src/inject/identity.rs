//! The Kubernetes objects that give an injected pod its mesh identity: a join-token Secret per
//! service account and the trust-bundle ConfigMap, their names, and how the proxy uses them.
//!
//! `mesh-cli token create --k8s-secret` prints both for one namespace/service account; `inject`
//! makes the proxy read the token from the Secret (env) and the bundle from the ConfigMap (a
//! read-only volume), so a pod presents its service account's identity without a secret in the
//! manifest itself.

use serde_json::json;

/// Key of the token inside its Secret and of the PEM inside the ConfigMap.
pub const TOKEN_KEY: &str = "token";
pub const BUNDLE_KEY: &str = "trust-bundle.pem";
/// The ConfigMap (and the pod volume) holding the trust bundle, one per namespace.
pub const BUNDLE_NAME: &str = "mesh-trust-bundle";
/// Where the proxy container mounts the bundle.
pub const BUNDLE_DIR: &str = "/var/run/mesh";

/// The Secret holding the join token of `service_account`.
pub fn secret_name(service_account: &str) -> String {
    format!("mesh-join-{service_account}")
}

/// The proxy's bundle path inside its container.
pub fn bundle_path() -> String {
    format!("{BUNDLE_DIR}/{BUNDLE_KEY}")
}

/// The Secret and ConfigMap for one workload identity, as a multi-document YAML stream for
/// `kubectl apply -f -`.
pub fn manifests(
    namespace: &str,
    service_account: &str,
    token: &str,
    bundle_pem: &[String],
) -> Result<String, serde_norway::Error> {
    let labels = json!({"app.kubernetes.io/part-of": "mesh"});
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name(service_account),
            "namespace": namespace,
            "labels": labels,
        },
        "type": "Opaque",
        "stringData": {TOKEN_KEY: token},
    });
    let bundle = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": BUNDLE_NAME, "namespace": namespace, "labels": labels},
        "data": {BUNDLE_KEY: bundle_pem.concat()},
    });
    Ok(format!(
        "{}---\n{}",
        serde_norway::to_string(&secret)?,
        serde_norway::to_string(&bundle)?
    ))
}
