//! `mesh-sidecar init`: installs (or removes) the traffic-interception rules in the current
//! network namespace, the init-container step of an injected workload.

pub mod apply;
pub mod options;
pub mod rules;

use clap::Args;

use self::options::{
    Cidr, DEFAULT_ADMIN_PORT, DEFAULT_DNS_PORT, DEFAULT_INBOUND_PORT, DEFAULT_OUTBOUND_PORT,
    DEFAULT_PROXY_UID, Family, IncludeCidrs, InterceptOptions, Ipv6Mode, OptionError, PortRange,
};

/// Flags of `mesh-sidecar init` (each also readable from a `MESH_*` variable, which is how the
/// injector passes the `mesh.io/exclude-*` annotations).
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct InitArgs {
    /// The uid the sidecar runs as; its own traffic is never intercepted.
    #[arg(long, env = "MESH_PROXY_UID", default_value_t = DEFAULT_PROXY_UID)]
    pub proxy_uid: u32,
    /// The gid the sidecar runs as (default: same as --proxy-uid).
    #[arg(long, env = "MESH_PROXY_GID")]
    pub proxy_gid: Option<u32>,
    /// Port of the sidecar's transparent outbound listener.
    #[arg(long, default_value_t = DEFAULT_OUTBOUND_PORT)]
    pub outbound_port: u16,
    /// Port of the sidecar's inbound listener.
    #[arg(long, default_value_t = DEFAULT_INBOUND_PORT)]
    pub inbound_port: u16,
    /// Port of the sidecar's admin listener (probes reach it directly).
    #[arg(long, default_value_t = DEFAULT_ADMIN_PORT)]
    pub admin_port: u16,
    /// Port the workload's DNS (UDP/TCP 53) is redirected to.
    #[arg(long, default_value_t = DEFAULT_DNS_PORT)]
    pub dns_port: u16,
    /// Do not capture DNS.
    #[arg(long)]
    pub no_dns: bool,
    /// Inbound ports (or ranges a-b) that reach the app directly, e.g. 22,8080-8090.
    #[arg(long, env = "MESH_EXCLUDE_INBOUND_PORTS", value_delimiter = ',')]
    pub exclude_inbound_ports: Vec<String>,
    /// Outbound destination ports (or ranges) that bypass the sidecar.
    #[arg(long, env = "MESH_EXCLUDE_OUTBOUND_PORTS", value_delimiter = ',')]
    pub exclude_outbound_ports: Vec<String>,
    /// Outbound destination CIDRs that bypass the sidecar.
    #[arg(long, env = "MESH_EXCLUDE_OUTBOUND_CIDRS", value_delimiter = ',')]
    pub exclude_outbound_cidrs: Vec<String>,
    /// Only these outbound destination CIDRs are intercepted (`*`: all).
    #[arg(
        long,
        env = "MESH_INCLUDE_OUTBOUND_CIDRS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub include_outbound_cidrs: Vec<String>,
    /// Install the IPv6 rules too: auto = when ip6tables-restore is on PATH.
    #[arg(long, value_enum, default_value_t = Ipv6Mode::Auto)]
    pub ipv6: Ipv6Mode,
    /// Print the rules instead of installing them.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove every rule and chain this command installs.
    #[arg(long, conflicts_with = "dry_run")]
    pub cleanup: bool,
}

/// Why `init` failed; the message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Option(#[from] OptionError),
    #[error("cannot run {tool}: {source} (install iptables, e.g. deploy/scripts/setup.sh)")]
    Spawn {
        tool: &'static str,
        source: std::io::Error,
    },
    #[error("{tool} failed ({status}): {stderr} (init needs root or CAP_NET_ADMIN)")]
    Failed {
        tool: &'static str,
        status: String,
        stderr: String,
    },
}

/// What `run_init` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitOutcome {
    /// The rules that would be installed, one iptables-restore document per family.
    DryRun(String),
    Applied {
        families: Vec<Family>,
    },
    CleanedUp {
        families: Vec<Family>,
    },
}

/// Runs the `init` subcommand in the current network namespace.
pub fn run_init(args: InitArgs) -> Result<InitOutcome, InitError> {
    let opts = InterceptOptions::try_from(&args)?;
    let families = families(args.ipv6);
    if args.dry_run {
        let mut text = String::new();
        for family in &families {
            text.push_str(&format!(
                "# {family:?}: {} --noflush\n",
                family.restore_tool()
            ));
            text.push_str(&rules::generate(&opts, *family).render());
        }
        print!("{text}");
        return Ok(InitOutcome::DryRun(text));
    }
    for family in &families {
        let installed = apply::parse_installed(&apply::save(*family)?);
        if args.cleanup {
            if let Some(doc) = apply::cleanup_document(&installed) {
                apply::restore(*family, &doc)?;
            }
            tracing::info!(
                ?family,
                chains = installed.chains.len(),
                "interception rules removed"
            );
        } else {
            let doc = apply::apply_document(&rules::generate(&opts, *family), &installed);
            apply::restore(*family, &doc)?;
            tracing::info!(?family, "interception rules installed");
        }
    }
    Ok(if args.cleanup {
        InitOutcome::CleanedUp { families }
    } else {
        InitOutcome::Applied { families }
    })
}

fn families(mode: Ipv6Mode) -> Vec<Family> {
    let v6 = match mode {
        Ipv6Mode::Always => true,
        Ipv6Mode::Never => false,
        Ipv6Mode::Auto => apply::on_path(Family::V6.restore_tool()),
    };
    if v6 {
        vec![Family::V4, Family::V6]
    } else {
        vec![Family::V4]
    }
}

// === impl InterceptOptions ===

impl TryFrom<&InitArgs> for InterceptOptions {
    type Error = OptionError;

    fn try_from(a: &InitArgs) -> Result<Self, Self::Error> {
        fn all<T: std::str::FromStr<Err = OptionError>>(
            v: &[String],
        ) -> Result<Vec<T>, OptionError> {
            v.iter()
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().parse())
                .collect()
        }
        if a.proxy_uid == 0 || a.proxy_gid == Some(0) {
            return Err(OptionError::RootProxy);
        }
        for (flag, port) in [
            ("outbound-port", a.outbound_port),
            ("inbound-port", a.inbound_port),
            ("admin-port", a.admin_port),
            ("dns-port", a.dns_port),
        ] {
            if port == 0 {
                return Err(OptionError::ZeroPort(flag));
            }
        }
        Ok(InterceptOptions {
            proxy_uid: a.proxy_uid,
            proxy_gid: Some(a.proxy_gid.unwrap_or(a.proxy_uid)),
            outbound_port: a.outbound_port,
            inbound_port: a.inbound_port,
            admin_port: a.admin_port,
            dns_port: (!a.no_dns).then_some(a.dns_port),
            exclude_inbound_ports: all::<PortRange>(&a.exclude_inbound_ports)?,
            exclude_outbound_ports: all::<PortRange>(&a.exclude_outbound_ports)?,
            exclude_outbound_cidrs: all::<Cidr>(&a.exclude_outbound_cidrs)?,
            include_outbound_cidrs: IncludeCidrs::parse(&a.include_outbound_cidrs)?,
        })
    }
}
