//! Grammar of the policy, endpoints, token and proxy-debugging commands.

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use crate::spec;

fn service_name(s: &str) -> Result<String, String> {
    spec::name(s, "service")
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Change a service's cluster policy; flags not given keep their current value.
    #[command(
        after_help = "Examples:\n  mesh-cli policy set reviews --lb ring-hash --hash-on cookie:session\n  mesh-cli policy set reviews --consecutive-5xx 5 --ejection-time 30s --max-requests 1000\n  mesh-cli policy set reviews --health-check-path /healthz --health-check-interval 5s --tls-mode strict"
    )]
    Set(Box<PolicySetArgs>),
    /// Show a service's cluster policy.
    #[command(after_help = "Example:\n  mesh-cli policy get reviews -o json")]
    Get {
        #[arg(value_parser = service_name)]
        service: String,
        /// Namespace of the service [default: default].
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lb {
    /// Power of two choices over peak EWMA latency (default).
    P2c,
    RoundRobin,
    WeightedRoundRobin,
    RingHash,
    Maglev,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsMode {
    Strict,
    Permissive,
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    Detect,
    Http1,
    Http2,
    Grpc,
    Tcp,
}

/// `--hash-on header:x-user|cookie:session|source-ip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    Header(String),
    Cookie(String),
    SourceIp,
}

fn hash_on(s: &str) -> Result<HashOn, String> {
    match s.split_once(':') {
        Some(("header", h)) if !h.is_empty() => Ok(HashOn::Header(h.to_ascii_lowercase())),
        Some(("cookie", c)) if !c.is_empty() => Ok(HashOn::Cookie(c.to_string())),
        None if s == "source-ip" => Ok(HashOn::SourceIp),
        _ => Err(format!(
            "{s:?}: write header:NAME, cookie:NAME or source-ip"
        )),
    }
}

#[derive(Debug, Args)]
pub struct PolicySetArgs {
    #[arg(value_parser = service_name)]
    pub service: String,
    /// Namespace of the service [default: default].
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Load-balancing algorithm.
    #[arg(long, value_enum)]
    pub lb: Option<Lb>,
    /// Hash key for ring-hash/maglev.
    #[arg(long, value_parser = hash_on)]
    pub hash_on: Option<HashOn>,
    /// Outlier detection: eject an endpoint after N consecutive 5xx.
    #[arg(long, value_name = "N")]
    pub consecutive_5xx: Option<u32>,
    /// Outlier detection: base ejection time.
    #[arg(long, value_name = "DURATION", value_parser = spec::duration)]
    pub ejection_time: Option<Duration>,
    /// Outlier detection: at most this share of endpoints ejected.
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u32).range(0..=100))]
    pub max_ejection_percent: Option<u32>,
    /// Turn outlier detection off.
    #[arg(long)]
    pub no_outlier_detection: bool,
    /// Circuit breaker: max requests waiting for a new upstream connection at once.
    #[arg(long, value_name = "N")]
    pub max_pending: Option<u32>,
    /// Circuit breaker: max concurrent requests.
    #[arg(long, value_name = "N")]
    pub max_requests: Option<u32>,
    /// Circuit breaker: max concurrent retries.
    #[arg(long, value_name = "N")]
    pub max_retries: Option<u32>,
    /// Active health check path (empty: TCP connect check).
    #[arg(long, value_name = "PATH")]
    pub health_check_path: Option<String>,
    /// Active health check interval.
    #[arg(long, value_name = "DURATION", value_parser = spec::duration)]
    pub health_check_interval: Option<Duration>,
    /// Active health check timeout.
    #[arg(long, value_name = "DURATION", value_parser = spec::duration)]
    pub health_check_timeout: Option<Duration>,
    /// Connect timeout to an endpoint.
    #[arg(long, value_name = "DURATION", value_parser = spec::duration)]
    pub connect_timeout: Option<Duration>,
    /// Idle connection timeout.
    #[arg(long, value_name = "DURATION", value_parser = spec::duration)]
    pub idle_timeout: Option<Duration>,
    /// Default request timeout when a route sets none.
    #[arg(long, value_name = "DURATION", value_parser = spec::duration)]
    pub request_timeout: Option<Duration>,
    /// mTLS mode towards the service.
    #[arg(long, value_enum)]
    pub tls_mode: Option<TlsMode>,
    /// Application protocol (default: detect).
    #[arg(long, value_enum)]
    pub protocol: Option<Protocol>,
    /// Validate on the control plane without storing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct EndpointsArgs {
    #[command(subcommand)]
    pub action: Option<EndpointsCommand>,
    /// The service whose endpoints to list.
    #[arg(value_parser = service_name)]
    pub service: Option<String>,
    /// Namespace of the service [default: default].
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
}

#[derive(Debug, Subcommand)]
pub enum EndpointsCommand {
    /// Stop sending new requests to one endpoint; in-flight ones finish.
    #[command(after_help = "Example:\n  mesh-cli endpoints drain reviews 10.0.0.7:15006")]
    Drain {
        #[arg(value_parser = service_name)]
        service: String,
        /// Namespace of the service [default: default].
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// The endpoint's ip:port as `mesh-cli endpoints SERVICE` shows it.
        address: std::net::SocketAddr,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a join token for a workload identity (shown once).
    #[command(
        after_help = "Example:\n  mesh-cli token create --namespace default --service-account reviews --ttl 1h"
    )]
    Create {
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        #[arg(long)]
        service_account: String,
        /// Lifetime [default: the control plane's, 24h; at most 365d].
        #[arg(long, value_name = "DURATION", value_parser = spec::duration)]
        ttl: Option<Duration>,
        /// Print Kubernetes manifests instead: the Secret `mesh-join-<service-account>` with
        /// the token and the ConfigMap `mesh-trust-bundle`, which injected pods read.
        #[arg(long)]
        k8s_secret: bool,
        /// A service the identity may serve besides the one named like the service account
        /// (repeatable); the binding ends when the token is revoked.
        #[arg(long = "serve", value_name = "SERVICE")]
        serves: Vec<String>,
        /// How many certificates the token may obtain (1 = single use) [default: any number
        /// until it expires]. A running workload renews with its certificate, not the token.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        max_uses: Option<u32>,
    },
    /// List tokens (never their secret).
    #[command(after_help = "Example:\n  mesh-cli token list -o json")]
    List,
    /// Revoke a token by id.
    #[command(after_help = "Example:\n  mesh-cli token revoke 3f2a9c")]
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Revoke a workload identity: NAMESPACE/SERVICE_ACCOUNT or a SPIFFE ID.
    #[command(after_help = "Example:\n  mesh-cli identity revoke default/reviews")]
    Revoke { identity: String },
}

#[derive(Debug, Subcommand)]
pub enum RuntimeCommand {
    /// The sampling ratios in force and the trust bundle's root count.
    #[command(after_help = "Example:\n  mesh-cli runtime get -o json")]
    Get,
    /// Change the sampling ratios; an option left out keeps its current value.
    #[command(
        after_help = "Example:\n  mesh-cli runtime set --trace-sampling 1% --access-log 0.1%"
    )]
    Set {
        /// Share of requests without a sampled parent that start a trace, e.g. 1% or 100%.
        #[arg(long, value_name = "PERCENT", value_parser = spec::percent)]
        trace_sampling: Option<u32>,
        /// Share of successful requests written to the access log, e.g. 0.1%.
        #[arg(long, value_name = "PERCENT", value_parser = spec::percent)]
        access_log: Option<u32>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConfigSection {
    Routes,
    Clusters,
    Endpoints,
    Listeners,
    Certs,
    All,
}

#[derive(Debug, Args)]
pub struct ProxyConfigArgs {
    /// The sidecar's admin address (ip:port).
    pub proxy: String,
    /// Which part of the config dump.
    #[arg(value_enum, default_value_t = ConfigSection::All)]
    pub section: ConfigSection,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also check this sidecar's workload certificate and trust bundle (repeatable).
    #[arg(long = "proxy-admin", value_name = "ADDR")]
    pub proxies: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StatArgs {
    /// Only this service.
    pub service: Option<String>,
    /// Sidecar admin address to scrape (repeatable).
    #[arg(long = "proxy-admin", value_name = "ADDR", required = true)]
    pub proxies: Vec<String>,
    /// Refresh every interval until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// Window over which rates are computed (two scrapes this far apart).
    #[arg(long, value_name = "DURATION", value_parser = spec::duration, default_value = "2s")]
    pub interval: Duration,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The sidecar's admin address (ip:port).
    pub proxy: String,
    /// HTTP method.
    pub method: String,
    /// Request URL, like http://reviews:9080/api.
    pub url: String,
    /// Request header NAME:VALUE (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME:VALUE")]
    pub headers: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Declare a service before any proxy announces it (kept across restarts; gets a VIP).
    #[command(
        after_help = "Examples:\n  mesh-cli service create reviews --namespace bookinfo --port 9080\n  mesh-cli service create api --identity sa/api --identity sa/api-canary"
    )]
    Create {
        #[arg(value_parser = service_name)]
        service: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Service port (repeatable).
        #[arg(long = "port", value_name = "PORT", value_parser = clap::value_parser!(u32).range(1..=65535))]
        ports: Vec<u32>,
        /// An identity allowed to serve the service (repeatable): `sa/NAME` (in the service's
        /// namespace), `ns/NS/sa/NAME` or a full SPIFFE ID. Default: the service account
        /// named like the service.
        #[arg(long = "identity", value_name = "IDENTITY")]
        identities: Vec<String>,
    },
    /// Every service: declared or announced by proxies, with VIP and endpoint count.
    #[command(after_help = "Example:\n  mesh-cli service list -o json")]
    List,
    /// Delete a declared service.
    #[command(after_help = "Example:\n  mesh-cli service delete reviews")]
    Delete {
        #[arg(value_parser = service_name)]
        service: String,
        /// Namespace of the service [default: default].
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
}
