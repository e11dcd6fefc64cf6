//! The containers and annotation injection adds to a pod template, and their exact removal.

use serde_json::json;
use serde_norway::{Mapping, Value};

use super::identity;
use super::{InjectConfig, InjectError, child_map, string_map};

pub const ANN_INJECT: &str = "mesh.io/inject";
pub const ANN_INJECTED: &str = "mesh.io/injected";
pub const ANN_EXCLUDE_INBOUND: &str = "mesh.io/exclude-inbound-ports";
pub const ANN_EXCLUDE_OUTBOUND: &str = "mesh.io/exclude-outbound-ports";
pub const ANN_OPAQUE: &str = "mesh.io/opaque-ports";
pub const ANN_PROXY_CPU: &str = "mesh.io/proxy-cpu";
pub const ANN_PROXY_MEMORY: &str = "mesh.io/proxy-memory";

pub const INIT_NAME: &str = "mesh-init";
pub const PROXY_NAME: &str = "mesh-proxy";
/// The proxy's dedicated uid: `mesh-sidecar init` exempts it from the outbound redirect, so the
/// proxy's own connections are not looped back into itself (Istio uses the same number).
pub const PROXY_UID: u32 = 1337;

/// Proxy ports (ARCHITECTURE.md): outbound, inbound, admin.
const OUTBOUND_PORT: u16 = 15001;
const INBOUND_PORT: u16 = 15006;
const ADMIN_PORT: u16 = 15000;
/// The sidecar's DNS port: `mesh-sidecar init` redirects the workload's port 53 here.
const DNS_PORT: u16 = 15053;

/// Default proxy requests when no annotation says otherwise: small enough not to block scheduling,
/// enough for a few hundred rps. No CPU limit: CFS throttling of a proxy shows as tail latency
/// for every request of the pod.
const DEFAULT_PROXY_CPU: &str = "100m";
const DEFAULT_PROXY_MEMORY: &str = "64Mi";

/// What injection needs to know about one pod template.
pub(super) struct PodContext {
    disabled: bool,
    injected: bool,
    host_network: bool,
    service: String,
    /// `spec.serviceAccountName` (Kubernetes' default: `default`): names the join-token Secret.
    service_account: String,
    /// Pod labels as `k=v,k=v` (the `version` label selects the endpoint's subset).
    labels: String,
    app_ports: Vec<u16>,
    exclude_inbound: Vec<u16>,
    exclude_outbound: Vec<u16>,
    opaque: Vec<u16>,
    cpu: String,
    memory: Option<String>,
}

impl PodContext {
    /// Reads annotations (the template's override the workload's), labels and ports, validating
    /// every annotation value so a typo fails the whole run instead of injecting a wrong pod.
    pub(super) fn read(
        template: &Mapping,
        outer: Vec<(String, String)>,
        name: &str,
        workload: &str,
    ) -> Result<Self, InjectError> {
        let meta = template.get("metadata");
        let mut ann = outer;
        ann.extend(string_map(meta.and_then(|m| m.get("annotations"))));
        let get = |key: &str| {
            ann.iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.trim().to_string())
        };
        let labels = string_map(meta.and_then(|m| m.get("labels")));
        let label = |key: &str| {
            labels
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let spec = template.get("spec");
        let ports = |key: &str| -> Result<Vec<u16>, InjectError> {
            get(key).map_or(Ok(Vec::new()), |v| {
                parse_ports(&v).map_err(|message| InjectError::Workload {
                    workload: workload.to_string(),
                    message: format!("annotation {key}: {message}"),
                })
            })
        };
        let disabled = match get(ANN_INJECT).as_deref() {
            None | Some("enabled") | Some("true") => false,
            Some("disabled") | Some("false") => true,
            Some(other) => {
                return Err(InjectError::Workload {
                    workload: workload.to_string(),
                    message: format!("annotation {ANN_INJECT}: {other:?} is not enabled|disabled"),
                });
            }
        };
        let app_ports = containers(spec, "containers")
            .iter()
            .filter_map(|c| c.get("ports").and_then(Value::as_sequence))
            .flatten()
            .filter_map(|p| p.get("containerPort").and_then(Value::as_u64))
            .filter_map(|p| u16::try_from(p).ok())
            .collect();
        Ok(Self {
            disabled,
            injected: get(ANN_INJECTED).is_some()
                || containers(spec, "initContainers").iter().any(is_ours),
            host_network: spec
                .and_then(|s| s.get("hostNetwork"))
                .and_then(Value::as_bool)
                == Some(true),
            service: label("app")
                .or_else(|| label("app.kubernetes.io/name"))
                .unwrap_or_else(|| name.to_string()),
            service_account: spec
                .and_then(|s| s.get("serviceAccountName"))
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
            app_ports,
            exclude_inbound: ports(ANN_EXCLUDE_INBOUND)?,
            exclude_outbound: ports(ANN_EXCLUDE_OUTBOUND)?,
            opaque: ports(ANN_OPAQUE)?,
            cpu: get(ANN_PROXY_CPU).unwrap_or_else(|| DEFAULT_PROXY_CPU.to_string()),
            memory: get(ANN_PROXY_MEMORY),
        })
    }

    /// Why this pod is left alone, if it is.
    pub(super) fn skip_reason(&self) -> Option<&'static str> {
        if self.disabled {
            Some("mesh.io/inject: disabled")
        } else if self.injected {
            Some("already injected")
        } else if self.host_network {
            // The init container's iptables rules would rewrite the node's own network.
            Some("hostNetwork pods cannot be injected")
        } else {
            None
        }
    }
}

/// Adds the init container, the native sidecar, the trust-bundle volume and the
/// `mesh.io/injected` annotation.
pub(super) fn add(template: &mut Mapping, ctx: &PodContext, cfg: &InjectConfig) {
    child_map(child_map(template, "metadata"), "annotations")
        .insert(ANN_INJECTED.into(), Value::from(cfg.version.clone()));
    let spec = child_map(template, "spec");
    if let Value::Sequence(inits) = sequence(spec, "initContainers") {
        // Ours go first: the app's own init containers then already run behind the proxy.
        inits.insert(0, to_value(proxy_container(ctx, cfg)));
        inits.insert(0, to_value(init_container(ctx, cfg)));
    }
    if let Value::Sequence(volumes) = sequence(spec, "volumes") {
        // Not optional: a pod without the namespace's bundle fails to start, naming the
        // ConfigMap, rather than running without a way to verify the control plane.
        volumes.push(to_value(json!({
            "name": identity::BUNDLE_NAME,
            "configMap": {"name": identity::BUNDLE_NAME},
        })));
    }
}

/// The sequence under `key`, created (or replaced, when it is not a sequence) as needed.
fn sequence<'a>(spec: &'a mut Mapping, key: &str) -> &'a mut Value {
    let slot = spec
        .entry(key.into())
        .or_insert(Value::Sequence(Vec::new()));
    if !slot.is_sequence() {
        *slot = Value::Sequence(Vec::new());
    }
    slot
}

/// Removes what `add` added; false when the template was not injected. Containers that became
/// empty are removed only when this call emptied them (inject created them).
pub(super) fn remove(template: &mut Mapping) -> bool {
    let mut changed = false;
    if let Some(Value::Mapping(spec)) = template.get_mut("spec") {
        changed |= remove_from(spec, "initContainers", is_ours);
        changed |= remove_from(spec, "volumes", |v| {
            v.get("name").and_then(Value::as_str) == Some(identity::BUNDLE_NAME)
        });
    }
    if let Some(Value::Mapping(meta)) = template.get_mut("metadata")
        && let Some(Value::Mapping(ann)) = meta.get_mut("annotations")
        && ann.shift_remove(ANN_INJECTED).is_some()
    {
        changed = true;
        if ann.is_empty() {
            meta.shift_remove("annotations");
            if meta.is_empty() {
                template.shift_remove("metadata");
            }
        }
    }
    changed
}

/// Removes the entries of `spec[key]` that `ours` matches; drops the key when that emptied it.
fn remove_from(spec: &mut Mapping, key: &str, ours: impl Fn(&Value) -> bool) -> bool {
    let Some(Value::Sequence(items)) = spec.get_mut(key) else {
        return false;
    };
    let before = items.len();
    items.retain(|v| !ours(v));
    if items.len() == before {
        return false;
    }
    if items.is_empty() {
        spec.shift_remove(key);
    }
    true
}

fn is_ours(container: &Value) -> bool {
    matches!(
        container.get("name").and_then(Value::as_str),
        Some(INIT_NAME | PROXY_NAME)
    )
}

fn containers<'a>(spec: Option<&'a Value>, key: &str) -> &'a [Value] {
    spec.and_then(|s| s.get(key))
        .and_then(Value::as_sequence)
        .map_or(&[], Vec::as_slice)
}

/// `mesh-sidecar init`: only NET_ADMIN/NET_RAW, as root, nothing else.
fn init_container(ctx: &PodContext, cfg: &InjectConfig) -> serde_json::Value {
    // `mesh-sidecar init` itself never redirects the proxy's ports (15000/15001/15006) or the
    // control plane's; only the workload's own exclusions are passed.
    let mut args = vec![
        "init".to_string(),
        "--proxy-uid".to_string(),
        PROXY_UID.to_string(),
    ];
    if !ctx.exclude_inbound.is_empty() {
        args.push("--exclude-inbound-ports".to_string());
        args.push(join(&ctx.exclude_inbound));
    }
    if !ctx.exclude_outbound.is_empty() {
        args.push("--exclude-outbound-ports".to_string());
        args.push(join(&ctx.exclude_outbound));
    }
    json!({
        "name": INIT_NAME,
        "image": cfg.image,
        "args": args,
        // Installing a few iptables rules needs next to nothing.
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
        "securityContext": {
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "runAsUser": 0,
            "runAsNonRoot": false,
            "allowPrivilegeEscalation": false,
            "privileged": false,
            "readOnlyRootFilesystem": true,
        },
    })
}

/// The proxy as a native sidecar: an init container with `restartPolicy: Always` starts before
/// the app (and its startup probe holds the app back until the proxy has its config), and does
/// not keep a finished Job alive.
fn proxy_container(ctx: &PodContext, cfg: &InjectConfig) -> serde_json::Value {
    let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
    let mut env = vec![
        json!({"name": "MESH_SERVICE", "value": ctx.service}),
        json!({"name": "MESH_NAMESPACE", "valueFrom": field("metadata.namespace")}),
        json!({"name": "MESH_SERVICE_ACCOUNT", "valueFrom": field("spec.serviceAccountName")}),
        // The pod name is unique in its namespace: a stable, readable proxy id in `status`.
        json!({"name": "MESH_PROXY_ID", "valueFrom": field("metadata.name")}),
        // Peers reach the inbound listener on the pod IP.
        json!({"name": "MESH_ADVERTISE_ADDRESS", "valueFrom": field("status.podIP")}),
        // The kubelet's startup probe comes from outside the pod: admin must listen on the pod IP.
        json!({"name": "MESH_ADMIN_ADDR", "value": format!("0.0.0.0:{ADMIN_PORT}")}),
        json!({"name": "MESH_CONTROL_PLANE", "value": cfg.control_plane}),
        // The init rules redirect the workload's DNS (UDP/TCP 53) to this port on loopback: the
        // sidecar answers mesh names with their VIPs and forwards every other name.
        json!({"name": "MESH_DNS_ADDR", "value": format!("127.0.0.1:{DNS_PORT}")}),
        // Identity: the service account's join token (Secret, not optional: a pod whose
        // Secret is missing fails to start naming it, instead of running unencrypted) and the
        // namespace's trust bundle (`mesh-cli token create --k8s-secret` prints both).
        json!({"name": "MESH_JOIN_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": identity::secret_name(&ctx.service_account),
            "key": identity::TOKEN_KEY,
        }}}),
        json!({"name": "MESH_CA_BUNDLE", "value": identity::bundle_path()}),
    ];
    if !ctx.labels.is_empty() {
        env.push(json!({"name": "MESH_LABELS", "value": ctx.labels}));
    }
    if !ctx.app_ports.is_empty() {
        env.push(json!({"name": "MESH_APP_PORTS", "value": join(&ctx.app_ports)}));
    }
    if !ctx.opaque.is_empty() {
        env.push(json!({"name": "MESH_OPAQUE_PORTS", "value": join(&ctx.opaque)}));
    }
    let mut resources = json!({"requests": {"cpu": ctx.cpu, "memory": ctx.memory.as_deref().unwrap_or(DEFAULT_PROXY_MEMORY)}});
    if let Some(memory) = &ctx.memory {
        resources["limits"] = json!({"memory": memory});
    }
    json!({
        "name": PROXY_NAME,
        "image": cfg.image,
        "restartPolicy": "Always",
        "env": env,
        "ports": [
            {"name": "mesh-outbound", "containerPort": OUTBOUND_PORT},
            {"name": "mesh-inbound", "containerPort": INBOUND_PORT},
            {"name": "mesh-admin", "containerPort": ADMIN_PORT},
        ],
        // Probed every second for up to 10 minutes: the app starts as soon as the proxy is ready,
        // and a slow control plane delays the pod instead of failing it.
        "startupProbe": {
            "httpGet": {"path": "/ready", "port": ADMIN_PORT},
            "periodSeconds": 1,
            "failureThreshold": 600,
        },
        "resources": resources,
        "volumeMounts": [
            {"name": identity::BUNDLE_NAME, "mountPath": identity::BUNDLE_DIR, "readOnly": true},
        ],
        "securityContext": {
            "runAsUser": PROXY_UID,
            "runAsGroup": PROXY_UID,
            "runAsNonRoot": true,
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": true,
        },
    })
}

/// Converts a container built with `json!` (keys sorted) and moves `name` first, as people write it.
fn to_value(v: serde_json::Value) -> Value {
    // A JSON value always has a YAML representation.
    let Ok(Value::Mapping(m)) = serde_norway::to_value(v) else {
        return Value::Null;
    };
    let mut out = Mapping::new();
    if let Some(name) = m.get("name") {
        out.insert("name".into(), name.clone());
    }
    out.extend(m.into_iter().filter(|(k, _)| k != "name"));
    Value::Mapping(out)
}

fn join(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// `"8080, 9090"` → ports; empty entries are ignored.
fn parse_ports(s: &str) -> Result<Vec<u16>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(format!(
                "{p:?} is not a port (1-65535); write a comma-separated list like \"8080,9090\""
            )),
            Ok(port) => Ok(port),
        })
        .collect()
}
