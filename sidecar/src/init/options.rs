//! Typed interception options (ports, port ranges, CIDRs) parsed from the `init` flags.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Outbound listener port (ARCHITECTURE.md: transparent outbound on :15001).
pub const DEFAULT_OUTBOUND_PORT: u16 = 15001;
/// Inbound listener port (ARCHITECTURE.md: peer sidecars → :15006).
pub const DEFAULT_INBOUND_PORT: u16 = 15006;
/// Sidecar admin port: kubelet probes reach `/ready` here directly.
pub const DEFAULT_ADMIN_PORT: u16 = 15000;
/// DNS capture port (why 15053: see there).
pub const DEFAULT_DNS_PORT: u16 = crate::dns::DEFAULT_DNS_PORT;
/// The uid (and gid) the sidecar runs as. 1337 is the de-facto mesh convention (Istio and
/// the injector templates use it), a uid no distribution assigns to a real user.
pub const DEFAULT_PROXY_UID: u32 = 1337;
/// Control-plane ports (15010 discovery, 15011 admin API, 15014 metrics; 15012/15013 kept
/// for future control-plane listeners). Never intercepted in either direction: an injected
/// control plane must stay reachable by the sidecars that bootstrap from it, and an app that
/// talks to the control plane (e.g. `mesh-cli`) reaches it directly.
pub const CONTROL_PLANE_PORTS: PortRange = PortRange {
    first: 15010,
    last: 15014,
};

/// Bad `init` input: a clear message naming the value, never a panic.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionError {
    #[error("invalid port {0:?}: expected 1-65535 or a range like 8000-8010")]
    Port(String),
    #[error(
        "invalid CIDR {0:?}: expected an address with an optional prefix, like 10.0.0.0/8 or fd00::/8"
    )]
    Cidr(String),
    #[error(
        "--proxy-uid/--proxy-gid 0 would exempt every root process from interception: run the sidecar as a dedicated uid"
    )]
    RootProxy,
    #[error("--{0} must not be 0")]
    ZeroPort(&'static str),
}

/// An inclusive port range; a single port has `first == last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

/// An address prefix, normalised so host bits are zero (iptables-save prints it that way, so
/// normalising keeps the generated text and the saved text identical).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

/// Which outbound destinations are redirected.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum IncludeCidrs {
    /// Everything not excluded (`*`, the default).
    #[default]
    All,
    /// Only these prefixes; other destinations bypass the sidecar.
    Only(Vec<Cidr>),
}

/// Whether the IPv6 rules are installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Ipv6Mode {
    /// When `ip6tables-restore` is on PATH.
    #[default]
    Auto,
    Always,
    Never,
}

/// Address family a rule set is generated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// Everything the rule generator needs: a pure value, so the rules are testable without root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterceptOptions {
    pub proxy_uid: u32,
    pub proxy_gid: Option<u32>,
    pub outbound_port: u16,
    pub inbound_port: u16,
    pub admin_port: u16,
    /// `None` disables DNS capture.
    pub dns_port: Option<u16>,
    pub exclude_inbound_ports: Vec<PortRange>,
    pub exclude_outbound_ports: Vec<PortRange>,
    pub exclude_outbound_cidrs: Vec<Cidr>,
    pub include_outbound_cidrs: IncludeCidrs,
}

// === impl PortRange ===

impl FromStr for PortRange {
    type Err = OptionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || OptionError::Port(s.to_string());
        let port = |p: &str| match p.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(err()),
            Ok(p) => Ok(p),
        };
        let (first, last) = match s.split_once(['-', ':']) {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(s)?, port(s)?),
        };
        if first > last {
            return Err(err());
        }
        Ok(PortRange { first, last })
    }
}

impl fmt::Display for PortRange {
    /// iptables syntax: `80` or `8000:8010`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}:{}", self.first, self.last)
        }
    }
}

impl PortRange {
    pub const fn single(port: u16) -> Self {
        PortRange {
            first: port,
            last: port,
        }
    }
}

// === impl Cidr ===

impl FromStr for Cidr {
    type Err = OptionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || OptionError::Cidr(s.to_string());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| err())?,
            None => max,
        };
        if prefix > max {
            return Err(err());
        }
        Ok(Cidr {
            addr: mask(addr, prefix),
            prefix,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    pub fn family(&self) -> Family {
        if self.addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
}

// === impl IncludeCidrs ===

impl IncludeCidrs {
    /// Parses the `--include-outbound-cidrs` list: empty or `*` means everything.
    pub fn parse(items: &[String]) -> Result<Self, OptionError> {
        if items.is_empty() || items.iter().any(|i| i.trim() == "*") {
            return Ok(IncludeCidrs::All);
        }
        let cidrs = items.iter().map(|i| i.parse()).collect::<Result<_, _>>()?;
        Ok(IncludeCidrs::Only(cidrs))
    }
}

// === impl Family ===

impl Family {
    /// The loopback range: connections to it never leave the host, so never intercepted.
    pub fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.0/8",
            Family::V6 => "::1/128",
        }
    }

    pub fn restore_tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }

    pub fn save_tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables-save",
            Family::V6 => "ip6tables-save",
        }
    }
}

// === impl InterceptOptions ===

impl Default for InterceptOptions {
    fn default() -> Self {
        InterceptOptions {
            proxy_uid: DEFAULT_PROXY_UID,
            proxy_gid: Some(DEFAULT_PROXY_UID),
            outbound_port: DEFAULT_OUTBOUND_PORT,
            inbound_port: DEFAULT_INBOUND_PORT,
            admin_port: DEFAULT_ADMIN_PORT,
            dns_port: Some(DEFAULT_DNS_PORT),
            exclude_inbound_ports: Vec::new(),
            exclude_outbound_ports: Vec::new(),
            exclude_outbound_cidrs: Vec::new(),
            include_outbound_cidrs: IncludeCidrs::All,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_and_print_in_iptables_syntax() {
        assert_eq!("22".parse::<PortRange>().unwrap().to_string(), "22");
        assert_eq!(
            "8000-8010".parse::<PortRange>().unwrap().to_string(),
            "8000:8010"
        );
        assert_eq!(
            "8000:8010".parse::<PortRange>().unwrap().to_string(),
            "8000:8010"
        );
        for bad in ["0", "65536", "x", "10-5", "", "1-", "-3"] {
            assert_eq!(
                bad.parse::<PortRange>(),
                Err(OptionError::Port(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn cidrs_are_normalised() {
        assert_eq!(
            "10.1.2.3/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            "10.1.2.3".parse::<Cidr>().unwrap().to_string(),
            "10.1.2.3/32"
        );
        assert_eq!(
            "0.0.0.0/0".parse::<Cidr>().unwrap().to_string(),
            "0.0.0.0/0"
        );
        assert_eq!("fd00::1/8".parse::<Cidr>().unwrap().to_string(), "fd00::/8");
        for bad in ["10.0.0.0/33", "fd00::/129", "nope", "10.0.0.0/x", "/8"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn include_star_means_all() {
        assert_eq!(IncludeCidrs::parse(&[]).unwrap(), IncludeCidrs::All);
        assert_eq!(
            IncludeCidrs::parse(&["*".into()]).unwrap(),
            IncludeCidrs::All
        );
        assert!(matches!(
            IncludeCidrs::parse(&["10.0.0.0/8".into()]).unwrap(),
            IncludeCidrs::Only(v) if v.len() == 1
        ));
    }
}
