//! `inject` / `uninject`: adds or removes the mesh on every workload of a multi-document manifest.
//!
//! Documents are parsed into `serde_norway::Value`, so every field we do not touch survives the
//! round trip (comments do not: YAML values carry none). Non-workload documents pass through.

pub mod identity;
mod sidecar;

use serde::Deserialize;
use serde_norway::{Mapping, Value};

pub use sidecar::{
    ANN_EXCLUDE_INBOUND, ANN_EXCLUDE_OUTBOUND, ANN_INJECT, ANN_INJECTED, ANN_OPAQUE, ANN_PROXY_CPU,
    ANN_PROXY_MEMORY, INIT_NAME, PROXY_NAME, PROXY_UID,
};

/// What the injected containers look like; flags of `mesh-cli inject`.
#[derive(Debug, Clone)]
pub struct InjectConfig {
    /// Sidecar image (runs both `mesh-sidecar init` and the proxy).
    pub image: String,
    /// Written to the `mesh.io/injected` annotation.
    pub version: String,
    /// Discovery address of the control plane as seen from inside the cluster.
    pub control_plane: String,
}

impl InjectConfig {
    /// Defaults for this build: the image tag is the CLI's own version, so the proxy and the
    /// CLI that injected it always agree.
    pub fn for_version(version: &str) -> Self {
        Self {
            image: format!("ghcr.io/mesh/mesh-sidecar:{version}"),
            version: version.to_string(),
            // The Service deploy/kubernetes creates for the control plane's discovery port; TLS,
            // verified with the trust bundle (the control plane's certificate names the Service).
            control_plane: "https://mesh-control-plane.mesh-system.svc:15010".to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("document {doc}: not valid YAML: {source}")]
    Parse {
        doc: usize,
        source: serde_norway::Error,
    },
    #[error("{workload}: {message}")]
    Workload { workload: String, message: String },
    #[error("cannot write YAML: {0}")]
    Write(#[from] serde_norway::Error),
}

/// Result of a pass over a manifest: the rewritten documents and one note per workload that was
/// deliberately left alone (opted out, already injected, host network).
#[derive(Debug, Default)]
pub struct Outcome {
    pub documents: Vec<Value>,
    pub notes: Vec<String>,
}

impl Outcome {
    /// Renders the documents as one multi-document YAML stream.
    pub fn to_yaml(&self) -> Result<String, InjectError> {
        let mut out = String::new();
        for (i, doc) in self.documents.iter().enumerate() {
            if i > 0 {
                out.push_str("---\n");
            }
            out.push_str(&serde_norway::to_string(doc)?);
        }
        Ok(out)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Inject,
    Uninject,
}

/// Parses every document of `input`; empty documents (a stray `---`) are dropped.
pub fn parse_documents(input: &str) -> Result<Vec<Value>, InjectError> {
    let mut docs = Vec::new();
    for (i, de) in serde_norway::Deserializer::from_str(input).enumerate() {
        let doc = Value::deserialize(de).map_err(|source| InjectError::Parse { doc: i, source })?;
        if !doc.is_null() {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// Adds the mesh to every injectable workload in `input`.
pub fn inject(input: &str, cfg: &InjectConfig) -> Result<Outcome, InjectError> {
    run(input, cfg, Mode::Inject)
}

/// Removes exactly what `inject` added.
pub fn uninject(input: &str) -> Result<Outcome, InjectError> {
    run(input, &InjectConfig::for_version("-"), Mode::Uninject)
}

fn run(input: &str, cfg: &InjectConfig, mode: Mode) -> Result<Outcome, InjectError> {
    let mut outcome = Outcome::default();
    for mut doc in parse_documents(input)? {
        visit(&mut doc, cfg, mode, &mut outcome.notes)?;
        outcome.documents.push(doc);
    }
    Ok(outcome)
}

/// Applies `mode` to one document, recursing into `kind: List` items.
fn visit(
    doc: &mut Value,
    cfg: &InjectConfig,
    mode: Mode,
    notes: &mut Vec<String>,
) -> Result<(), InjectError> {
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if kind == "List" {
        if let Some(Value::Sequence(items)) = doc.get_mut("items") {
            for item in items {
                visit(item, cfg, mode, notes)?;
            }
        }
        return Ok(());
    }
    let Some(path) = pod_template_path(&kind) else {
        return Ok(());
    };
    let name = doc
        .get("metadata")
        .and_then(|m| m.get("name").or_else(|| m.get("generateName")))
        .and_then(Value::as_str)
        .unwrap_or("unnamed")
        .to_string();
    let workload = format!("{kind}/{name}");
    // Annotations on the workload itself count too, but the pod template's win.
    let outer = string_map(doc.get("metadata").and_then(|m| m.get("annotations")));
    let Some(template) = walk_mut(doc, path) else {
        return Ok(());
    };
    let Value::Mapping(template) = template else {
        return Err(InjectError::Workload {
            workload,
            message: format!("{} is not a mapping", path.join(".")),
        });
    };
    match mode {
        Mode::Inject => {
            let ctx = sidecar::PodContext::read(template, outer, &name, &workload)?;
            if let Some(why) = ctx.skip_reason() {
                notes.push(format!("{workload}: unchanged ({why})"));
                return Ok(());
            }
            sidecar::add(template, &ctx, cfg);
        }
        Mode::Uninject => {
            if !sidecar::remove(template) {
                notes.push(format!("{workload}: unchanged (not injected)"));
            }
        }
    }
    Ok(())
}

/// Where each workload kind keeps its pod template (empty = the document is the pod).
fn pod_template_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            Some(&["spec", "template"])
        }
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template"]),
        "Pod" => Some(&[]),
        _ => None,
    }
}

fn walk_mut<'a>(mut v: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    for key in path {
        v = v.get_mut(*key)?;
    }
    Some(v)
}

/// Reads a `map[string]string` such as `annotations`; non-string values are skipped.
fn string_map(v: Option<&Value>) -> Vec<(String, String)> {
    let Some(Value::Mapping(m)) = v else {
        return Vec::new();
    };
    m.iter()
        .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
        .collect()
}

/// `map[key]`, inserting an empty mapping when absent (or when the value is `null`).
fn child_map<'a>(map: &'a mut Mapping, key: &str) -> &'a mut Mapping {
    let slot = map
        .entry(Value::from(key))
        .or_insert(Value::Mapping(Mapping::new()));
    if !slot.is_mapping() {
        *slot = Value::Mapping(Mapping::new());
    }
    match slot {
        Value::Mapping(m) => m,
        _ => unreachable!("replaced by a mapping just above"),
    }
}
