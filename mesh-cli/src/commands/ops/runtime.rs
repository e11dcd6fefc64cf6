//! `mesh-cli runtime`: the mesh-wide trace and access-log sampling ratios.

use mesh_proto::admin::v1::{ListRequest, SetRuntimeRequest};
use mesh_proto::types::v1 as pb;
use serde::Serialize;

use crate::cli::{Global, RuntimeCommand};
use crate::client;
use crate::error::Result;
use crate::output::{Table, print_structured};

/// What `runtime get` shows (stable JSON names); the bundle only as a count, the roots
/// themselves are in `proxy-config <proxy> certs`.
#[derive(Debug, Serialize)]
struct RuntimeView {
    trace_sampling_ratio: f64,
    access_log_ratio: f64,
    trust_bundle_roots: usize,
}

pub async fn runtime(global: &Global, cmd: RuntimeCommand) -> Result<()> {
    let mut admin = client::connect(global).await?;
    let current = admin
        .client
        .get_runtime(ListRequest {})
        .await
        .map_err(|s| admin.error("reading the runtime settings", s))?
        .into_inner();
    let shown = match cmd {
        RuntimeCommand::Get => current,
        RuntimeCommand::Set {
            trace_sampling,
            access_log,
        } => {
            // Per-mille from the parser: 1000 = 100 %.
            let ratio = |permille: u32| f64::from(permille) / 1000.0;
            let wanted = pb::Runtime {
                trace_sampling_ratio: trace_sampling.map_or(current.trace_sampling_ratio, ratio),
                access_log_ratio: access_log.map_or(current.access_log_ratio, ratio),
                // The control plane keeps its CA's bundle whatever is sent here.
                trust_bundle_pem: Vec::new(),
            };
            let version = admin
                .client
                .set_runtime(SetRuntimeRequest {
                    runtime: Some(wanted.clone()),
                })
                .await
                .map_err(|s| admin.error("changing the runtime settings", s))?
                .into_inner()
                .version;
            eprintln!("runtime: version {version} pushed to every proxy");
            pb::Runtime {
                trust_bundle_pem: current.trust_bundle_pem,
                ..wanted
            }
        }
    };
    let view = RuntimeView {
        trace_sampling_ratio: shown.trace_sampling_ratio,
        access_log_ratio: shown.access_log_ratio,
        trust_bundle_roots: shown.trust_bundle_pem.len(),
    };
    if !print_structured(global.output, &view)? {
        let pct = |r: f64| format!("{}%", r * 100.0);
        let mut t = Table::new(&["TRACE SAMPLING", "ACCESS LOG", "TRUST BUNDLE ROOTS"]);
        t.row(vec![
            pct(view.trace_sampling_ratio),
            pct(view.access_log_ratio),
            view.trust_bundle_roots.to_string(),
        ]);
        t.print();
    }
    Ok(())
}
