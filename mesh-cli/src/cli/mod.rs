//! Command-line grammar (clap derive): global flags and the command tree.

mod ops;
mod route;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use ops::*;
pub use route::*;

mod namespace;

use crate::output::Format;

/// Operate the mesh: traffic policy, status, debugging and sidecar injection.
#[derive(Debug, Parser)]
#[command(
    name = "mesh-cli",
    version,
    after_help = "Examples:\n  mesh-cli status\n  mesh-cli route set reviews --to v1=90,v2=10 --wait\n  mesh-cli inject -f app.yaml | kubectl apply -f -\n\nExit codes: 0 ok, 2 bad input, 3 control plane unreachable or failed, 4 --wait failed (NACK or timeout)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Admin URL of the control plane; HOST:PORT means https:// (use http:// for one started
    /// with --admin-tls=false) [default: `admin_url` in <data-dir>/addrs.json, else
    /// https://127.0.0.1:15011].
    #[arg(
        long,
        global = true,
        env = "MESH_CONTROL_PLANE_ADMIN",
        value_name = "ADDR"
    )]
    pub control_plane: Option<String>,
    /// The control plane's data directory (admin token, bound addresses, trust bundle) [default: $HOME/.mesh/control-plane].
    #[arg(long, global = true, env = "MESH_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Trust bundle (PEM) that verifies the control plane's TLS certificate [default:
    /// <data-dir>/ca/trust-bundle.pem].
    #[arg(long, global = true, env = "MESH_CA_BUNDLE", value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add the mesh (init container + native sidecar) to every workload of a manifest.
    #[command(
        after_help = "Example:\n  mesh-cli inject -f deploy.yaml | kubectl apply -f -\n  kubectl get deploy web -o yaml | mesh-cli inject -f -\n\nOpt a workload out with the pod annotation `mesh.io/inject: disabled`."
    )]
    Inject(InjectArgs),
    /// Remove exactly what `inject` added.
    #[command(after_help = "Example:\n  mesh-cli uninject -f injected.yaml > plain.yaml")]
    Uninject(FileArg),
    /// Traffic rules of a service: weighted splits, matches, timeouts, retries, faults, mirroring.
    #[command(
        subcommand,
        after_help = "Example:\n  mesh-cli route set reviews --to v1=90,v2=10 --wait\n  mesh-cli route list"
    )]
    Route(RouteCommand),
    /// Cluster policy of a service: load balancing, outlier detection, limits, health check, TLS.
    #[command(
        subcommand,
        after_help = "Example:\n  mesh-cli policy set reviews --lb ring-hash --hash-on header:x-user\n  mesh-cli policy get reviews -o yaml"
    )]
    Policy(PolicyCommand),
    /// Declared services (routes and policies need their service to exist): create, list, delete.
    #[command(
        subcommand,
        after_help = "Example:\n  mesh-cli service create reviews --port 9080\n  mesh-cli service list"
    )]
    Service(ServiceCommand),
    /// Control plane health and every connected proxy with the config it ACKed (and NACKed).
    #[command(after_help = "Example:\n  mesh-cli status\n  mesh-cli status -o json")]
    Status,
    /// Endpoints of a service with state, weight, zone and identity; `drain` one of them.
    #[command(
        args_conflicts_with_subcommands = true,
        after_help = "Example:\n  mesh-cli endpoints reviews\n  mesh-cli endpoints drain reviews 10.0.0.7:15006"
    )]
    Endpoints(EndpointsArgs),
    /// Join tokens for workloads: create, list, revoke.
    #[command(
        subcommand,
        after_help = "Example:\n  mesh-cli token create --namespace default --service-account reviews --ttl 24h"
    )]
    Token(TokenCommand),
    /// Workload identities: `revoke` stops an identity's certificate renewals and closes its
    /// discovery streams at once.
    #[command(
        subcommand,
        after_help = "Example:\n  mesh-cli identity revoke default/reviews"
    )]
    Identity(IdentityCommand),
    /// Mesh-wide sampling: the share of requests traced and access-logged (errors always are).
    #[command(
        subcommand,
        after_help = "Example:\n  mesh-cli runtime set --trace-sampling 1% --access-log 0.1%\n  mesh-cli runtime get -o json"
    )]
    Runtime(RuntimeCommand),
    /// Pre-flight: control plane reachable, CA not near expiry, every proxy in sync, and the
    /// certificates of the sidecars given with --proxy-admin valid and renewed in time.
    #[command(
        after_help = "Example:\n  mesh-cli check && echo ready\n  mesh-cli check --proxy-admin 127.0.0.1:15000"
    )]
    Check(CheckArgs),
    /// What a proxy really applied, from its admin /config_dump.
    #[command(
        after_help = "Example:\n  mesh-cli proxy-config 127.0.0.1:15000 routes\n  mesh-cli proxy-config 127.0.0.1:15000 certs\n  mesh-cli proxy-config 127.0.0.1:15000 -o json"
    )]
    ProxyConfig(ProxyConfigArgs),
    /// Golden metrics (rps, success rate, latency percentiles) per service and version, from sidecars.
    #[command(
        after_help = "Example:\n  mesh-cli stat reviews --proxy-admin 127.0.0.1:15000 --proxy-admin 127.0.0.1:25000"
    )]
    Stat(StatArgs),
    /// Which route rule and backend a request would take through a proxy, and why.
    #[command(
        after_help = "Example:\n  mesh-cli explain 127.0.0.1:15000 GET http://reviews:9080/api/v1 -H x-canary:1"
    )]
    Explain(ExplainArgs),
    /// Run a local demo mesh: control plane, demo apps with sidecars, load, a live table and a canary shift.
    Demo(crate::demo::DemoArgs),
    /// Run a workload with its sidecar: the app starts only once the proxy is ready, and `run`
    /// exits with the app's exit code.
    Run(crate::run::RunArgs),
    /// Run one demo application (used by `demo`).
    #[command(hide = true)]
    DemoApp(crate::demo::DemoAppArgs),
    /// Print a shell completion script.
    #[command(
        after_help = "Example:\n  mesh-cli completion bash > /etc/bash_completion.d/mesh-cli"
    )]
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct FileArg {
    /// Manifest to read; `-` reads standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct InjectArgs {
    #[command(flatten)]
    pub file: FileArg,
    /// Sidecar image [default: ghcr.io/mesh/mesh-sidecar:<mesh-cli version>].
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// Discovery URL of the control plane as seen from the pods [default:
    /// https://mesh-control-plane.mesh-system.svc:15010, deploy/kubernetes's Service].
    #[arg(long, value_name = "URL")]
    pub discovery: Option<String>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_tree_is_consistent() {
        use clap::CommandFactory;
        // clap's own checks: no duplicate flags, valid defaults, requires/conflicts that exist.
        super::Cli::command().debug_assert();
    }
}
