//! Checks deploy/kubernetes against the binaries' defaults in ARCHITECTURE.md: images, ports, probes, users, volumes, RBAC.

// Each deploy_* test file uses part of the shared helpers.
#[allow(dead_code)]
mod deploy_support;

use std::collections::{BTreeMap, BTreeSet};

use deploy_support::{port, repo_root, seq_at, str_at, workspace_version, yaml_doc, yaml_docs};
use serde_norway::Value;

const K8S: &str = "deploy/kubernetes";
const CONTROL_PLANE: &str = "mesh-control-plane";
/// Namespace every namespaced object of the control plane lives in.
const NAMESPACE: &str = "mesh-system";
/// The /ready path of the control plane's HTTP port (ARCHITECTURE.md).
const READY_PATH: &str = "/ready";

/// Every document of every manifest the kustomization lists, with the file it came from.
fn manifests() -> Vec<(String, Value)> {
    let kustomization = yaml_doc(&format!("{K8S}/kustomization.yaml"));
    seq_at(&kustomization, "resources")
        .iter()
        .flat_map(|r| {
            let file = r.as_str().expect("kustomization resources are file names");
            let rel = format!("{K8S}/{file}");
            yaml_docs(&rel).into_iter().map(move |d| (rel.clone(), d))
        })
        .collect()
}

/// The one manifest document of `kind`.
fn one_of_kind(kind: &str) -> Value {
    let mut found: Vec<Value> = manifests()
        .into_iter()
        .filter(|(_, d)| d.get("kind").and_then(Value::as_str) == Some(kind))
        .map(|(_, d)| d)
        .collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind} in {K8S}");
    found.remove(0)
}

fn name_of(doc: &Value) -> &str {
    doc.get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .expect("every object has metadata.name")
}

/// The control plane's pod spec and its one container.
fn pod_and_container() -> (Value, Value) {
    let deploy = one_of_kind("Deployment");
    let pod = deploy["spec"]["template"]["spec"].clone();
    let containers = seq_at(&pod, "containers");
    assert_eq!(
        containers.len(),
        1,
        "the control plane pod runs one container"
    );
    let container = containers[0].clone();
    (pod, container)
}

/// Container ports by name, as numbers.
fn container_ports(container: &Value) -> BTreeMap<String, u16> {
    seq_at(container, "ports")
        .iter()
        .map(|p| {
            let name = str_at(p, "name", "container port").to_string();
            let number = p["containerPort"]
                .as_u64()
                .expect("containerPort is a number");
            (name, u16::try_from(number).expect("containerPort fits u16"))
        })
        .collect()
}

/// A probe's or Service's port, which may be a number or a container port name.
fn resolve_port(port_ref: &Value, ports: &BTreeMap<String, u16>) -> u16 {
    match port_ref {
        Value::Number(n) => u16::try_from(n.as_u64().expect("port number")).expect("port fits u16"),
        Value::String(name) => *ports
            .get(name)
            .unwrap_or_else(|| panic!("port name `{name}` is not a container port")),
        other => panic!("unexpected port reference {other:?}"),
    }
}

/// The ConfigMap the control plane reads its MESH_* settings from.
fn config_map() -> BTreeMap<String, String> {
    let cm = one_of_kind("ConfigMap");
    let data = cm["data"].as_mapping().expect("ConfigMap has data");
    data.iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                other => panic!("ConfigMap values must be strings, got {other:?}"),
            };
            (k.as_str().expect("string keys").to_string(), value)
        })
        .collect()
}

fn expected_control_plane_ports() -> BTreeSet<u16> {
    [
        port(CONTROL_PLANE, "discovery"),
        port(CONTROL_PLANE, "admin"),
        port(CONTROL_PLANE, "http"),
    ]
    .into()
}

#[test]
fn kustomization_lists_every_manifest_and_pins_the_image_tag() {
    let kustomization = yaml_doc(&format!("{K8S}/kustomization.yaml"));
    let listed: BTreeSet<String> = seq_at(&kustomization, "resources")
        .iter()
        .map(|r| r.as_str().expect("resource file name").to_string())
        .collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(repo_root().join(K8S))
        .expect("deploy/kubernetes exists")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(
        listed, on_disk,
        "kustomization.yaml must list exactly the manifests in {K8S}"
    );
    assert_eq!(
        str_at(&kustomization, "namespace", "kustomization"),
        NAMESPACE
    );

    let images = seq_at(&kustomization, "images");
    assert_eq!(images.len(), 1, "one image: the control plane");
    let name = str_at(&images[0], "name", "kustomization image");
    assert!(
        name.rsplit('/').next() == Some(CONTROL_PLANE),
        "image `{name}` must be named after the binary {CONTROL_PLANE}"
    );
    let tag = match &images[0]["newTag"] {
        Value::String(s) => s.clone(),
        other => panic!("newTag must be a string, got {other:?}"),
    };
    assert_eq!(tag, workspace_version(), "image tag = workspace version");
}

#[test]
fn every_manifest_is_a_named_object_in_the_mesh_namespace() {
    let docs = manifests();
    assert!(
        docs.len() >= 7,
        "namespace, SA, Role, RoleBinding, ConfigMap, PVC, Deployment, Service"
    );
    for (file, doc) in &docs {
        let ctx = format!(
            "{file} ({})",
            doc.get("kind").and_then(Value::as_str).unwrap_or("?")
        );
        str_at(doc, "apiVersion", &ctx);
        let kind = str_at(doc, "kind", &ctx);
        let meta = doc
            .get("metadata")
            .unwrap_or_else(|| panic!("{ctx}: no metadata"));
        str_at(meta, "name", &ctx);
        if kind != "Namespace" {
            assert_eq!(
                str_at(meta, "namespace", &ctx),
                NAMESPACE,
                "{ctx}: namespace"
            );
        }
    }
    let ns = one_of_kind("Namespace");
    assert_eq!(name_of(&ns), NAMESPACE);
}

#[test]
fn control_plane_deployment_matches_the_binary_defaults() {
    let deploy = one_of_kind("Deployment");
    // One writer for the embedded store, replaced (not rolled) so the volume is free.
    assert_eq!(deploy["spec"]["replicas"].as_u64(), Some(1), "replicas");
    assert_eq!(
        deploy["spec"]["strategy"]["type"].as_str(),
        Some("Recreate"),
        "strategy"
    );

    let (pod, container) = pod_and_container();
    let image = str_at(&container, "image", "control plane container");
    let (repo, tag) = image.rsplit_once(':').expect("image has an explicit tag");
    assert_eq!(
        repo.rsplit('/').next(),
        Some(CONTROL_PLANE),
        "image named after the binary"
    );
    assert_eq!(tag, workspace_version(), "image tag = workspace version");

    let ports = container_ports(&container);
    let numbers: BTreeSet<u16> = ports.values().copied().collect();
    assert_eq!(
        numbers,
        expected_control_plane_ports(),
        "container ports = ARCHITECTURE.md"
    );

    let http = port(CONTROL_PLANE, "http");
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(READY_PATH), "{probe} path");
        assert_eq!(resolve_port(&get["port"], &ports), http, "{probe} port");
    }

    // Non-root, at pod level (the container may only tighten it).
    let psc = &pod["securityContext"];
    assert_eq!(
        psc["runAsNonRoot"].as_bool(),
        Some(true),
        "pod runAsNonRoot"
    );
    assert!(
        psc["runAsUser"].as_u64().is_some_and(|u| u != 0),
        "pod runAsUser non-zero"
    );
    let csc = &container["securityContext"];
    assert_eq!(csc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(csc["readOnlyRootFilesystem"].as_bool(), Some(true));

    // Settings come from the ConfigMap; the data dir is the PersistentVolume's mount.
    let cm = one_of_kind("ConfigMap");
    let env_from = seq_at(&container, "envFrom");
    assert!(
        env_from
            .iter()
            .any(|e| e["configMapRef"]["name"].as_str() == Some(name_of(&cm))),
        "container takes its env from the ConfigMap"
    );
    let pvc = one_of_kind("PersistentVolumeClaim");
    let volume = seq_at(&pod, "volumes")
        .iter()
        .find(|v| v["persistentVolumeClaim"]["claimName"].as_str() == Some(name_of(&pvc)))
        .expect("a volume from the PVC");
    let volume_name = str_at(volume, "name", "volume");
    let mount = seq_at(&container, "volumeMounts")
        .iter()
        .find(|m| m["name"].as_str() == Some(volume_name))
        .expect("the PVC volume is mounted");
    let settings = config_map();
    assert_eq!(
        settings.get("MESH_DATA_DIR").map(String::as_str),
        mount["mountPath"].as_str(),
        "MESH_DATA_DIR is the PersistentVolume's mount path"
    );

    let sa = one_of_kind("ServiceAccount");
    assert_eq!(pod["serviceAccountName"].as_str(), Some(name_of(&sa)));
}

#[test]
fn config_map_binds_the_default_ports_on_all_interfaces() {
    let settings = config_map();
    for (var, role) in [
        ("MESH_DISCOVERY_ADDR", "discovery"),
        ("MESH_ADMIN_ADDR", "admin"),
        ("MESH_HTTP_ADDR", "http"),
    ] {
        let addr = settings
            .get(var)
            .unwrap_or_else(|| panic!("ConfigMap sets {var}"));
        let (host, p) = addr.rsplit_once(':').expect("host:port");
        // In a pod the listeners must accept other pods' traffic, not only loopback.
        assert_eq!(host, "0.0.0.0", "{var} binds all interfaces");
        assert_eq!(
            p.parse::<u16>().ok(),
            Some(port(CONTROL_PLANE, role)),
            "{var} port"
        );
    }
    assert!(
        settings.keys().all(|k| k.starts_with("MESH_")),
        "the ConfigMap holds MESH_* settings only"
    );
    // Injected sidecars dial discovery over https by the Service's name: TLS on, and the
    // certificate names what `mesh-cli inject` puts in MESH_CONTROL_PLANE.
    assert_eq!(
        settings.get("MESH_DISCOVERY_TLS").map(String::as_str),
        Some("true"),
        "discovery TLS is set explicitly in-cluster"
    );
    let sans: Vec<&str> = settings
        .get("MESH_DISCOVERY_SANS")
        .map(|s| s.split(',').map(str::trim).collect())
        .unwrap_or_default();
    let injected_url = injected_control_plane_url();
    let host = injected_url
        .strip_prefix("https://")
        .and_then(|rest| rest.rsplit_once(':'))
        .map(|(host, _)| host)
        .unwrap_or_else(|| panic!("inject's control plane is https://host:port: {injected_url}"));
    assert!(
        sans.contains(&host),
        "the discovery certificate names {host} (MESH_DISCOVERY_SANS: {sans:?})"
    );
    // The admin API carries the bearer token: TLS stays on, set explicitly next to it.
    assert_eq!(
        settings.get("MESH_ADMIN_TLS").map(String::as_str),
        Some("true"),
        "admin TLS is set explicitly in-cluster"
    );
}

#[test]
fn service_routes_every_port_to_the_control_plane_pod() {
    let svc = one_of_kind("Service");
    let deploy = one_of_kind("Deployment");
    let pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
        .as_mapping()
        .expect("pod labels");
    let selector = svc["spec"]["selector"]
        .as_mapping()
        .expect("service selector");
    for (k, v) in selector {
        assert_eq!(pod_labels.get(k), Some(v), "selector {k:?} matches the pod");
    }
    assert_eq!(
        deploy["spec"]["selector"]["matchLabels"].as_mapping(),
        Some(selector),
        "Service and Deployment select the same pods"
    );

    let (_, container) = pod_and_container();
    let ports = container_ports(&container);
    let mut served = BTreeSet::new();
    for p in seq_at(&svc["spec"], "ports") {
        let number = p["port"].as_u64().expect("service port number");
        let target = resolve_port(&p["targetPort"], &ports);
        assert_eq!(
            Some(u64::from(target)),
            Some(number),
            "service port {number} keeps its number"
        );
        served.insert(target);
    }
    assert_eq!(
        served,
        expected_control_plane_ports(),
        "Service exposes ARCHITECTURE.md's ports"
    );
}

#[test]
fn rbac_is_minimal_and_bound_to_the_control_plane_account() {
    let sa = one_of_kind("ServiceAccount");
    let role = one_of_kind("Role");
    let binding = one_of_kind("RoleBinding");
    assert_eq!(binding["roleRef"]["kind"].as_str(), Some("Role"));
    assert_eq!(binding["roleRef"]["name"].as_str(), Some(name_of(&role)));
    assert!(
        seq_at(&binding, "subjects").iter().any(|s| {
            s["kind"].as_str() == Some("ServiceAccount") && s["name"].as_str() == Some(name_of(&sa))
        }),
        "the binding names the control plane's ServiceAccount"
    );
    for rule in seq_at(&role, "rules") {
        let words = |key: &str| -> Vec<String> {
            seq_at(rule, key)
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        };
        assert!(
            !words("verbs")
                .iter()
                .any(|v| v == "*" || v == "create" || v == "delete"),
            "read-only verbs"
        );
        assert!(
            !words("resources")
                .iter()
                .any(|r| r == "*" || r == "secrets"),
            "no wildcard, no secrets"
        );
        assert!(
            !words("resourceNames").is_empty(),
            "rules are pinned to named objects"
        );
    }
}

/// The `MESH_CONTROL_PLANE` the real `mesh-cli inject` gives a proxy.
fn injected_control_plane_url() -> String {
    use std::io::Write;
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: a}]}\n";
    let mut child = std::process::Command::new(mesh_tests::bin_path("mesh-cli"))
        .args(["inject", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run mesh-cli inject");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(pod.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "mesh-cli inject failed");
    let doc: Value = serde_norway::from_slice(&out.stdout).unwrap();
    let proxy = seq_at(&doc["spec"], "initContainers")
        .iter()
        .find(|c| c["name"] == "mesh-proxy")
        .expect("the injected proxy");
    proxy["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "MESH_CONTROL_PLANE")
        .and_then(|e| e["value"].as_str())
        .expect("MESH_CONTROL_PLANE")
        .to_string()
}
