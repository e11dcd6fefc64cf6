//! Flags and MESH_* environment to typed config, with defaults and validation.
//!
//! Parsing is a pure function of the argument list and an environment map
//! ([`Config::from_sources`]): nothing reads the process environment after start-up, and tests
//! feed plain maps. A flag wins over its environment variable, which wins over the default.
//! Every bad setting is reported, then parsing fails once.

mod parse;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use parse::Reader;

/// One configurable setting: its flag, its environment variable and its help line.
struct Setting {
    flag: &'static str,
    env: &'static str,
    help: &'static str,
    /// May be given several times (the environment variable then holds a comma list).
    repeated: bool,
}

const fn one(flag: &'static str, env: &'static str, help: &'static str) -> Setting {
    Setting {
        flag,
        env,
        help,
        repeated: false,
    }
}

/// Every setting, in `--help` order.
const SETTINGS: &[Setting] = &[
    one(
        "control-plane",
        "MESH_CONTROL_PLANE",
        "Discovery server URL [default: http://127.0.0.1:15010]",
    ),
    one(
        "id",
        "MESH_PROXY_ID",
        "Unique proxy id [default: <service>-<pid>]",
    ),
    one(
        "service",
        "MESH_SERVICE",
        "The workload's service (required)",
    ),
    one(
        "namespace",
        "MESH_NAMESPACE",
        "Workload namespace [default: default]",
    ),
    one(
        "service-account",
        "MESH_SERVICE_ACCOUNT",
        "Service account the identity is issued for [default: the service]",
    ),
    one(
        "trust-domain",
        "MESH_TRUST_DOMAIN",
        "SPIFFE trust domain [default: cluster.local]",
    ),
    one(
        "labels",
        "MESH_LABELS",
        "Workload labels, k=v,k=v (e.g. version=v1)",
    ),
    one("zone", "MESH_ZONE", "Locality zone of the workload"),
    one(
        "app-ports",
        "MESH_APP_PORTS",
        "The app's own ports, comma list; the first is the default inbound target",
    ),
    one(
        "inbound-addr",
        "MESH_INBOUND_ADDR",
        "Inbound listener (from peer sidecars) [default: 0.0.0.0:15006]",
    ),
    one(
        "outbound-addr",
        "MESH_OUTBOUND_ADDR",
        "Outbound listener (from the app) [default: 127.0.0.1:15001]",
    ),
    one(
        "admin-addr",
        "MESH_ADMIN_ADDR",
        "Admin HTTP listener [default: 127.0.0.1:15000]",
    ),
    one(
        "advertise-address",
        "MESH_ADVERTISE_ADDRESS",
        "IP peers use to reach the inbound listener [default: 127.0.0.1]",
    ),
    one(
        "workers",
        "MESH_WORKERS",
        "Data-path worker threads [default: 1]",
    ),
    one(
        "data-dir",
        "MESH_SIDECAR_DATA_DIR",
        "Directory of the config snapshot file; none = no snapshot",
    ),
    one(
        "detect-timeout-ms",
        "MESH_DETECT_TIMEOUT_MS",
        "Protocol detection timeout [default: 500]",
    ),
    one(
        "opaque-ports",
        "MESH_OPAQUE_PORTS",
        "Ports never sniffed (opaque TCP), comma list",
    ),
    one(
        "server-first-ports",
        "MESH_SERVER_FIRST_PORTS",
        "Server-speaks-first ports (no detection), comma list",
    ),
    one(
        "max-header-bytes",
        "MESH_MAX_HEADER_BYTES",
        "Largest request/response head accepted [default: 65536]",
    ),
    Setting {
        flag: "tcp-forward",
        env: "MESH_TCP_FORWARD",
        help: "Fixed local port to a service, LISTEN_ADDR=service:port (repeatable)",
        repeated: true,
    },
    one(
        "static-config",
        "MESH_STATIC_CONFIG",
        "JSON list of resources to serve without a control plane",
    ),
    one(
        "addrs-file",
        "MESH_ADDRS_FILE",
        "Write the bound addresses as JSON here after binding",
    ),
    one(
        "drain-grace-ms",
        "MESH_DRAIN_GRACE_MS",
        "Graceful shutdown period [default: 10000]",
    ),
    one(
        "outbound-services",
        "MESH_OUTBOUND_SERVICES",
        "Services to subscribe at start, comma list (others on first use)",
    ),
    one(
        "ca-bundle",
        "MESH_CA_BUNDLE",
        "Mesh trust bundle (PEM) verifying the control plane (https://) and, at start, peers",
    ),
    one(
        "join-token-file",
        "MESH_JOIN_TOKEN_FILE",
        "File holding the join token (MESH_JOIN_TOKEN wins); with a token the sidecar gets an identity and speaks mTLS",
    ),
    one(
        "log",
        "MESH_LOG",
        "Tracing filter directives [default: info]",
    ),
    one(
        "otlp-endpoint",
        "MESH_OTLP_ENDPOINT",
        "OTLP/gRPC collector URL for spans; empty = tracing off [default: empty]",
    ),
    one(
        "trace-sampling",
        "MESH_TRACE_SAMPLING",
        "Ratio of new traces sampled, 0..=1; the control plane's Runtime overrides [default: 1]",
    ),
    one(
        "access-log",
        "MESH_ACCESS_LOG",
        "Access log: stdout, off, or a file path [default: stdout]",
    ),
    one(
        "access-log-sampling",
        "MESH_ACCESS_LOG_SAMPLING",
        "Ratio of successful requests logged, 0..=1; errors always are [default: 0.01]",
    ),
    one(
        "dns-addr",
        "MESH_DNS_ADDR",
        "Serve the workload's DNS here (mesh names -> VIPs, others forwarded), e.g. 127.0.0.1:15053 where `init` redirects port 53 [default: off]",
    ),
];

/// Default discovery server: the control plane's discovery port on this host.
const DEFAULT_CONTROL_PLANE: &str = "https://127.0.0.1:15010";
const DEFAULT_INBOUND: &str = "0.0.0.0:15006";
const DEFAULT_OUTBOUND: &str = "127.0.0.1:15001";
const DEFAULT_ADMIN: &str = "127.0.0.1:15000";
/// The data path's own default (its reasoning is there): one source of truth.
const DEFAULT_DETECT_TIMEOUT: Duration = crate::proxy::DEFAULT_DETECT_TIMEOUT;
/// Upper bound of a detection timeout: beyond this, detection is a stall, not a heuristic.
const MAX_DETECT_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_MAX_HEADER_BYTES: usize = crate::proxy::DEFAULT_MAX_HEADER_BYTES;
/// hyper's own buffer must hold at least one small head.
const MIN_MAX_HEADER_BYTES: usize = 1024;
/// Covers common request deadlines (5–10 s) and the app's last outbound calls while it shuts
/// down, and stays well inside Kubernetes' default 30 s `terminationGracePeriodSeconds`, so the
/// sidecar exits on its own instead of being killed mid-response. Every shutdown lasts this long
/// (outbound serves until its end: the proxy cannot see when the app is done), so longer would
/// slow every rollout.
const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(10);
/// Worker threads beyond this are a typo, not a deployment.
const MAX_WORKERS: usize = 256;

/// The typed sidecar configuration, parsed once at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Discovery server URL (`http://host:port`).
    pub control_plane: String,
    pub id: String,
    pub service: String,
    pub namespace: String,
    pub service_account: String,
    pub trust_domain: String,
    pub labels: BTreeMap<String, String>,
    pub zone: Option<String>,
    pub app_ports: Vec<u16>,
    pub inbound_addr: SocketAddr,
    pub outbound_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub advertise_address: IpAddr,
    pub workers: usize,
    pub data_dir: Option<PathBuf>,
    pub detect_timeout: Duration,
    pub opaque_ports: Vec<u16>,
    pub server_first_ports: Vec<u16>,
    pub max_header_bytes: usize,
    pub tcp_forwards: Vec<TcpForward>,
    pub static_config: Option<PathBuf>,
    pub addrs_file: Option<PathBuf>,
    pub drain_grace: Duration,
    pub outbound_services: Vec<String>,
    pub ca_bundle: Option<PathBuf>,
    pub join_token_file: Option<PathBuf>,
    pub log: String,
    /// `None`: no span export (sampling decisions are still propagated).
    pub otlp_endpoint: Option<String>,
    pub trace_sampling: f64,
    pub access_log: AccessLogDest,
    pub access_log_sampling: f64,
    /// `Some`: answer the workload's DNS there (interception mode).
    pub dns_addr: Option<SocketAddr>,
}

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogDest {
    Off,
    Stdout,
    File(PathBuf),
}

/// Every new trace is sampled by default: exporting only happens when an endpoint is set, the
/// decision is parent-based (the edge decides for the whole trace), and the control plane's
/// Runtime ratio replaces this as soon as traffic is large enough to need it.
const DEFAULT_TRACE_SAMPLING: f64 = 1.0;
/// Errors are always logged; 1 % of successes keeps a busy proxy's stdout readable while
/// still showing what normal traffic looks like.
const DEFAULT_ACCESS_LOG_SAMPLING: f64 = 0.01;

/// A fixed local listener whose raw TCP goes to one service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpForward {
    pub listen: SocketAddr,
    pub service: String,
    pub port: u16,
}

/// Why the configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unknown flag, missing value, or `--help`/`--version` (print it as it is).
    #[error("{0}")]
    Usage(#[from] clap::Error),
    #[error("{}", Invalid::list(.0))]
    Invalid(Vec<Invalid>),
}

/// One bad setting: where it came from, what it was and why it is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// `--flag` or `MESH_VAR`, whichever supplied the value.
    pub origin: String,
    pub value: String,
    pub reason: String,
}

// === impl Config ===

impl Config {
    /// Parses the process's own arguments and environment.
    pub fn from_process() -> Result<Self, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::from_sources(std::env::args(), &env)
    }

    /// Parses `args` (including the program name) with `env` as fallback.
    pub fn from_sources(
        args: impl IntoIterator<Item = String>,
        env: &HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let raw = parse::raw_values(SETTINGS, args, env)?;
        let mut r = Reader::new(&raw);

        let service = r.required("service", parse::name);
        let control_plane = r.value("control-plane", DEFAULT_CONTROL_PLANE.into(), parse::url);
        let default_id = format!(
            "{}-{}",
            service.as_deref().unwrap_or(""),
            std::process::id()
        );
        let id = r.value("id", default_id, parse::nonempty);
        let namespace = r.value("namespace", "default".into(), parse::name);
        let service_account = r.optional("service-account", parse::name);
        let trust_domain = r.value("trust-domain", "cluster.local".into(), parse::trust_domain);
        let labels = r.value("labels", BTreeMap::new(), parse::labels);
        let zone = r.optional("zone", parse::nonempty);
        let app_ports = r.value("app-ports", Vec::new(), parse::ports);
        let inbound_addr = r.value("inbound-addr", sock(DEFAULT_INBOUND), parse::socket_addr);
        let outbound_addr = r.value("outbound-addr", sock(DEFAULT_OUTBOUND), parse::socket_addr);
        let admin_addr = r.value("admin-addr", sock(DEFAULT_ADMIN), parse::socket_addr);
        let advertise_address = r.value(
            "advertise-address",
            IpAddr::from([127, 0, 0, 1]),
            parse::advertise_ip,
        );
        let workers = r.value("workers", 1, |s| parse::bounded(s, 1, MAX_WORKERS));
        let data_dir = r.optional("data-dir", parse::path);
        let detect_timeout = r.value("detect-timeout-ms", DEFAULT_DETECT_TIMEOUT, |s| {
            parse::millis(s, Duration::from_millis(1), MAX_DETECT_TIMEOUT)
        });
        let opaque_ports = r.value("opaque-ports", Vec::new(), parse::ports);
        let server_first_ports = r.value("server-first-ports", Vec::new(), parse::ports);
        let max_header_bytes = r.value("max-header-bytes", DEFAULT_MAX_HEADER_BYTES, |s| {
            parse::bounded(s, MIN_MAX_HEADER_BYTES, 16 * 1024 * 1024)
        });
        let tcp_forwards = r.each("tcp-forward", parse::tcp_forward);
        let static_config = r.optional("static-config", parse::path);
        let addrs_file = r.optional("addrs-file", parse::path);
        let drain_grace = r.value("drain-grace-ms", DEFAULT_DRAIN_GRACE, |s| {
            parse::millis(s, Duration::ZERO, Duration::from_secs(3600))
        });
        let outbound_services = r.value("outbound-services", Vec::new(), parse::names);
        let ca_bundle = r.optional("ca-bundle", parse::path);
        let join_token_file = r.optional("join-token-file", parse::path);
        let log = r.value("log", "info".into(), parse::log_filter);
        let otlp_endpoint = r.optional("otlp-endpoint", parse::optional_url).flatten();
        let trace_sampling = r.value("trace-sampling", DEFAULT_TRACE_SAMPLING, parse::ratio);
        let access_log = r.value("access-log", AccessLogDest::Stdout, parse::access_log);
        let access_log_sampling = r.value(
            "access-log-sampling",
            DEFAULT_ACCESS_LOG_SAMPLING,
            parse::ratio,
        );
        let dns_addr = r.optional("dns-addr", parse::socket_addr);

        let errors = r.finish();
        match service {
            Some(service) if errors.is_empty() => Ok(Self {
                service_account: service_account.unwrap_or_else(|| service.clone()),
                control_plane,
                id,
                service,
                namespace,
                trust_domain,
                labels,
                zone,
                app_ports,
                inbound_addr,
                outbound_addr,
                admin_addr,
                advertise_address,
                workers,
                data_dir,
                detect_timeout,
                opaque_ports,
                server_first_ports,
                max_header_bytes,
                tcp_forwards,
                static_config,
                addrs_file,
                drain_grace,
                outbound_services,
                ca_bundle,
                join_token_file,
                log,
                otlp_endpoint,
                trace_sampling,
                access_log,
                access_log_sampling,
                dns_addr,
            }),
            _ => Err(ConfigError::Invalid(errors)),
        }
    }

    /// The workload's SPIFFE identity.
    /// This workload's service as the mesh names it: `service` in the default namespace,
    /// `service.namespace` elsewhere (resource names, authorization, metric labels).
    pub fn service_key(&self) -> String {
        mesh_proto::names::qualified(&self.service, &self.namespace)
    }

    pub fn identity(&self) -> String {
        format!(
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }

    /// A minimal valid configuration for `service` with every listener on an ephemeral loopback
    /// port (tests and embedding).
    pub fn for_service(service: &str) -> Self {
        let args = [
            "mesh-sidecar",
            "--service",
            service,
            "--inbound-addr",
            "127.0.0.1:0",
            "--outbound-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ];
        Self::from_sources(args.map(String::from), &HashMap::new())
            .expect("the built-in loopback configuration is valid")
    }
}

fn sock(s: &str) -> SocketAddr {
    s.parse().expect("built-in default addresses parse")
}

// === impl Invalid ===

impl Invalid {
    fn list(all: &[Invalid]) -> String {
        let mut out = format!("{} invalid setting(s):", all.len());
        for i in all {
            out.push_str(&format!("\n  {i}"));
        }
        out
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={:?}: {}", self.origin, self.value, self.reason)
    }
}
