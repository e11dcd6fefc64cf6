//! Process configuration: command-line flags with `MESH_*` environment fallbacks, parsed once
//! into a typed `Config`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::registry::VipRange;

/// The mesh control plane: discovery, admin API, metrics.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "mesh-control-plane", version)]
pub struct Args {
    /// Directory for the store (mesh.redb), the admin token and addrs.json.
    /// Default: $HOME/.mesh/control-plane.
    #[arg(long, env = "MESH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Discovery + identity gRPC listen address (port 0 = any free port).
    #[arg(long, env = "MESH_DISCOVERY_ADDR", default_value = "127.0.0.1:15010")]
    pub discovery_addr: SocketAddr,
    /// Admin gRPC listen address (bearer-token authenticated).
    #[arg(long, env = "MESH_ADMIN_ADDR", default_value = "127.0.0.1:15011")]
    pub admin_addr: SocketAddr,
    /// HTTP listen address for /metrics and /ready.
    #[arg(long, env = "MESH_HTTP_ADDR", default_value = "127.0.0.1:15014")]
    pub http_addr: SocketAddr,
    /// SPIFFE trust domain of the mesh.
    #[arg(long, env = "MESH_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// IPv4 range service VIPs are allocated from. The default is reserved class-E space that
    /// is never routed, so a VIP can never reach a real host by accident.
    #[arg(long, env = "MESH_VIP_RANGE", default_value = "240.240.0.0/16")]
    pub vip_range: VipRange,
    /// How long a proxy's endpoint outlives its discovery stream (ms): long enough to ride out
    /// a control-plane or proxy reconnect without flapping the endpoint out of every client.
    #[arg(long, env = "MESH_LEASE_GRACE_MS", default_value_t = 10_000)]
    pub lease_grace_ms: u64,
    /// At most one registry publish per this many ms: an isolated change goes out at once, a
    /// burst (a deployment rolling 100 pods, a node failing) becomes one push per window.
    /// 50 ms bounds pushes to 20/s per proxy while adding delay far below what a human or a
    /// health check notices.
    #[arg(long, env = "MESH_COALESCE_MS", default_value_t = 50)]
    pub coalesce_ms: u64,
    /// Also write the bound addresses as JSON to this file (atomically, after binding).
    #[arg(long, env = "MESH_ADDRS_FILE")]
    pub addrs_file: Option<PathBuf>,
    /// Operator CA certificate (root or intermediate, PEM); needs --ca-key. Default: a root
    /// created once in DATA_DIR/ca.
    #[arg(long, env = "MESH_CA_CERT", requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,
    /// Private key (PEM) of --ca-cert.
    #[arg(long, env = "MESH_CA_KEY", requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
    /// Root certificate(s) (PEM) above an intermediate --ca-cert.
    #[arg(long, env = "MESH_CA_BUNDLE", requires = "ca_cert")]
    pub ca_bundle: Option<PathBuf>,
    /// Serve discovery + identity over TLS (certificate issued by the mesh CA; clients verify
    /// it with DATA_DIR/ca/trust-bundle.pem). On by default: a sidecar must not take its
    /// routes or certificate from an unverified server. `--discovery-tls=false` serves
    /// plaintext (a test client speaking raw gRPC, or a cluster that terminates TLS elsewhere).
    #[arg(long, env = "MESH_DISCOVERY_TLS", default_value_t = true, action = clap::ArgAction::Set)]
    pub discovery_tls: bool,
    /// Serve the admin API over TLS with the same CA-issued certificate as discovery (same
    /// names: `localhost`, `127.0.0.1`, `::1` and every `--discovery-san`). On by default: the
    /// bearer token must not cross a network in the clear, and `mesh-cli` must know it talks to
    /// this control plane. `--admin-tls=false` serves plaintext (reach it with `http://`).
    #[arg(long, env = "MESH_ADMIN_TLS", default_value_t = true, action = clap::ArgAction::Set)]
    pub admin_tls: bool,
    /// OTLP gRPC collector for the control plane's own spans (admin calls, pushes), e.g.
    /// http://127.0.0.1:4317. Unset: no trace export.
    #[arg(long, env = "MESH_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Extra names (DNS names or IPs) on the control plane's TLS certificate (discovery and
    /// admin ports) besides `localhost`, `127.0.0.1` and `::1`, for clients dialling another
    /// address (e.g. workloads in network namespaces reaching the host side of their veth, or
    /// `mesh-cli` reaching a remote admin port by name). Repeatable or comma-separated.
    #[arg(
        long = "discovery-san",
        env = "MESH_DISCOVERY_SANS",
        value_delimiter = ','
    )]
    pub discovery_sans: Vec<String>,
    /// How long (ms) a service with no endpoint and no configuration (declaration, route,
    /// cluster or authorization policy) keeps its VIP before the VIP is released: an hour
    /// outlives DNS caches and restarts of a whole deployment, while names that only ever
    /// appeared briefly cannot hold the VIP range forever.
    #[arg(long, env = "MESH_VIP_GRACE_MS", default_value_t = 3_600_000)]
    pub vip_grace_ms: u64,
    /// Accept discovery streams from proxies without a mesh certificate (development only:
    /// such a proxy registers endpoints with no identity, marked anonymous, and strict callers
    /// refuse them). Off by default: the control plane takes a proxy's identity from its
    /// verified workload certificate and nothing else. Required with `--discovery-tls=false`.
    #[arg(long, env = "MESH_ALLOW_ANONYMOUS_PROXIES", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub allow_anonymous_proxies: bool,
    /// Lifetime of the workload certificates the CA issues (e.g. `24h`, `90m`, `1m`), when the
    /// proxy asks for none. Proxies renew at 50–70 % of it. At least 1m, at most 7d.
    #[arg(long, env = "MESH_WORKLOAD_CERT_TTL", default_value = "24h", value_parser = parse_duration)]
    pub workload_cert_ttl: Duration,
    /// Lifetime of the control plane's own serving certificate (discovery and admin ports);
    /// it is re-issued at half its life without a restart. At least 1m, at most 7d.
    #[arg(long, env = "MESH_SERVING_CERT_TTL", default_value = "24h", value_parser = parse_duration)]
    pub serving_cert_ttl: Duration,
}

/// Shortest certificate lifetime the flags accept: rotation can be watched in a test within
/// minutes, and a renewal at half-life (30 s) still leaves time for retries.
pub const MIN_CERT_TTL: Duration = Duration::from_secs(60);
/// Longest: the CA's cap on leaves (a week); a longer-lived leaf outlives a compromise.
pub const MAX_CERT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// `90s`, `1m`, `24h`, `7d` (a number and one unit), within [`MIN_CERT_TTL`]..=[`MAX_CERT_TTL`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit (s, m, h, d), e.g. 24h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("{s:?}: unit must be s, m, h or d (e.g. 24h)")),
    };
    let d = Duration::from_secs(secs);
    if d < MIN_CERT_TTL || d > MAX_CERT_TTL {
        return Err(format!("{s:?}: must be between 1m and 7d"));
    }
    Ok(d)
}

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub discovery_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub trust_domain: String,
    pub vip_range: VipRange,
    pub lease_grace: Duration,
    pub coalesce: Duration,
    pub addrs_file: Option<PathBuf>,
    pub operator_ca: crate::identity_wiring::OperatorCa,
    pub discovery_tls: bool,
    pub admin_tls: bool,
    pub otlp_endpoint: Option<String>,
    pub discovery_sans: Vec<String>,
    pub allow_anonymous_proxies: bool,
    pub workload_cert_ttl: Duration,
    pub serving_cert_ttl: Duration,
    pub vip_grace: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--data-dir is not set and $HOME is unknown")]
    NoDataDir,
    #[error("--trust-domain {0:?}: must be non-empty [a-z0-9.-_]")]
    TrustDomain(String),
    #[error(
        "--discovery-tls=false cannot authenticate proxies: add --allow-anonymous-proxies to run a plaintext (development) mesh"
    )]
    PlaintextNeedsAnonymous,
}

// === impl Config ===

impl Config {
    /// Builds the config from parsed flags; `home` is `$HOME` as read once at start-up.
    pub fn from_args(a: Args, home: Option<PathBuf>) -> Result<Self, ConfigError> {
        let data_dir = match a.data_dir {
            Some(d) => d,
            None => home
                .ok_or(ConfigError::NoDataDir)?
                .join(".mesh/control-plane"),
        };
        let td = &a.trust_domain;
        if td.is_empty()
            || !td.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')
            })
        {
            return Err(ConfigError::TrustDomain(td.clone()));
        }
        if !a.discovery_tls && !a.allow_anonymous_proxies {
            return Err(ConfigError::PlaintextNeedsAnonymous);
        }
        Ok(Self {
            data_dir,
            discovery_addr: a.discovery_addr,
            admin_addr: a.admin_addr,
            http_addr: a.http_addr,
            trust_domain: a.trust_domain,
            vip_range: a.vip_range,
            lease_grace: Duration::from_millis(a.lease_grace_ms),
            coalesce: Duration::from_millis(a.coalesce_ms),
            addrs_file: a.addrs_file,
            operator_ca: crate::identity_wiring::OperatorCa {
                cert: a.ca_cert,
                key: a.ca_key,
                bundle: a.ca_bundle,
            },
            discovery_tls: a.discovery_tls,
            admin_tls: a.admin_tls,
            otlp_endpoint: a.otlp_endpoint.filter(|e| !e.is_empty()),
            discovery_sans: a.discovery_sans,
            allow_anonymous_proxies: a.allow_anonymous_proxies,
            workload_cert_ttl: a.workload_cert_ttl,
            serving_cert_ttl: a.serving_cert_ttl,
            vip_grace: Duration::from_millis(a.vip_grace_ms),
        })
    }

    /// Defaults with every port 0 (for tests and embedding). Discovery is plaintext here so
    /// in-process tests can use a bare discovery channel (the binary defaults to TLS); the
    /// admin API keeps its TLS default, so every admin client is exercised as in production.
    pub fn ephemeral(data_dir: PathBuf) -> Self {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        Self {
            data_dir,
            discovery_addr: any,
            admin_addr: any,
            http_addr: any,
            trust_domain: "cluster.local".to_string(),
            vip_range: "240.240.0.0/16".parse().unwrap_or_else(|_| unreachable!()),
            lease_grace: Duration::from_secs(10),
            coalesce: Duration::from_millis(50),
            addrs_file: None,
            operator_ca: Default::default(),
            discovery_tls: false,
            admin_tls: true,
            otlp_endpoint: None,
            discovery_sans: Vec::new(),
            // Plaintext discovery cannot see a certificate: in-process tests that use it run
            // an anonymous (development) mesh; TLS tests turn both back.
            allow_anonymous_proxies: true,
            workload_cert_ttl: crate::ca::DEFAULT_LEAF_TTL,
            serving_cert_ttl: Duration::from_secs(24 * 3600),
            vip_grace: Duration::from_secs(3600),
        }
    }
}
