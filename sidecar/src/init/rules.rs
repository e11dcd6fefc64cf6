//! The interception rules as a pure function of `InterceptOptions`, in iptables-restore syntax.
//!
//! Layout (nat table):
//! - `PREROUTING -p tcp → MESH_INBOUND`: skips the sidecar's own and excluded ports, the rest
//!   goes to `MESH_IN_REDIRECT` (REDIRECT to the inbound port).
//! - `OUTPUT udp/tcp dport 53 → MESH_DNS`: the workload's DNS goes to the sidecar's DNS port,
//!   except the proxy's own queries (it forwards them to the real resolver).
//! - `OUTPUT -p tcp → MESH_OUTPUT`: the proxy uid/gid returns first (its own upstream
//!   connections are never looped back), then loopback destinations, excluded ports and CIDRs;
//!   what is left (or only the included CIDRs) goes to `MESH_REDIRECT` (REDIRECT to the outbound
//!   port). Traffic leaving through `lo` to a *non*-loopback address (the app calling its own pod
//!   IP or a VIP answered locally) is deliberately not excluded: it is a service call like any
//!   other and must pass the outbound sidecar.
//!
//! Locally generated packets never traverse nat PREROUTING (the NAT decision is taken once per
//! connection, at OUTPUT), so the inbound chain only sees traffic from other hosts.

use std::fmt::Write as _;

use super::options::{CONTROL_PLANE_PORTS, Family, IncludeCidrs, InterceptOptions, PortRange};

/// Prefix of every chain we own; cleanup removes every nat chain with it.
pub const CHAIN_PREFIX: &str = "MESH_";
pub const INBOUND: &str = "MESH_INBOUND";
pub const IN_REDIRECT: &str = "MESH_IN_REDIRECT";
pub const OUTPUT: &str = "MESH_OUTPUT";
pub const REDIRECT: &str = "MESH_REDIRECT";
pub const DNS: &str = "MESH_DNS";

/// Our chains, in declaration order.
pub const CHAINS: [&str; 5] = [INBOUND, IN_REDIRECT, OUTPUT, REDIRECT, DNS];

/// The generated nat-table rules for one address family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSet {
    /// Rules inside our own chains (`-A MESH_… …`).
    pub chain_rules: Vec<String>,
    /// Jumps from the built-in chains into ours (`-A PREROUTING …`, `-A OUTPUT …`).
    pub jumps: Vec<String>,
}

/// Generates the complete rule set for `family`.
pub fn generate(opts: &InterceptOptions, family: Family) -> RuleSet {
    let mut rules = Vec::new();
    let mut add = |chain: &str, spec: String| rules.push(format!("-A {chain} {spec}"));

    add(
        IN_REDIRECT,
        format!("-p tcp -j REDIRECT --to-ports {}", opts.inbound_port),
    );
    add(
        REDIRECT,
        format!("-p tcp -j REDIRECT --to-ports {}", opts.outbound_port),
    );

    // Inbound: the sidecar's own listeners are reached directly (peers dial the inbound port,
    // kubelet probes the admin port), as are the control-plane ports and user excludes.
    let own = [opts.admin_port, opts.outbound_port, opts.inbound_port].map(PortRange::single);
    let inbound_skip = own
        .iter()
        .chain([&CONTROL_PLANE_PORTS])
        .chain(&opts.exclude_inbound_ports);
    for ports in dedup(inbound_skip) {
        add(INBOUND, format!("-p tcp -m tcp --dport {ports} -j RETURN"));
    }
    add(INBOUND, format!("-p tcp -j {IN_REDIRECT}"));

    // Outbound: the proxy's own connections first, so nothing it dials is ever looped back.
    for owner in owners(opts) {
        add(OUTPUT, format!("{owner} -j RETURN"));
    }
    add(OUTPUT, format!("-d {} -j RETURN", family.loopback()));
    let outbound_skip = [&CONTROL_PLANE_PORTS]
        .into_iter()
        .chain(&opts.exclude_outbound_ports);
    for ports in dedup(outbound_skip) {
        add(OUTPUT, format!("-p tcp -m tcp --dport {ports} -j RETURN"));
    }
    for cidr in opts
        .exclude_outbound_cidrs
        .iter()
        .filter(|c| c.family() == family)
    {
        add(OUTPUT, format!("-d {cidr} -j RETURN"));
    }
    match &opts.include_outbound_cidrs {
        IncludeCidrs::All => add(OUTPUT, format!("-j {REDIRECT}")),
        IncludeCidrs::Only(cidrs) => {
            for cidr in cidrs.iter().filter(|c| c.family() == family) {
                add(OUTPUT, format!("-d {cidr} -j {REDIRECT}"));
            }
        }
    }

    let mut jumps = vec![format!("-A PREROUTING -p tcp -j {INBOUND}")];
    if let Some(dns_port) = opts.dns_port {
        // The proxy forwards non-mesh names to the real resolver: its queries pass untouched.
        for owner in owners(opts) {
            add(DNS, format!("{owner} -j RETURN"));
        }
        for proto in ["udp", "tcp"] {
            add(DNS, format!("-p {proto} -j REDIRECT --to-ports {dns_port}"));
            // Before the TCP jump: DNS to a loopback stub (127.0.0.53) must still be captured.
            jumps.push(format!(
                "-A OUTPUT -p {proto} -m {proto} --dport 53 -j {DNS}"
            ));
        }
    }
    jumps.push(format!("-A OUTPUT -p tcp -j {OUTPUT}"));

    RuleSet {
        chain_rules: rules,
        jumps,
    }
}

/// `-m owner` matches for the proxy uid and gid.
fn owners(opts: &InterceptOptions) -> Vec<String> {
    let mut v = vec![format!("-m owner --uid-owner {}", opts.proxy_uid)];
    if let Some(gid) = opts.proxy_gid {
        v.push(format!("-m owner --gid-owner {gid}"));
    }
    v
}

/// Keeps the first occurrence of each range, preserving order.
fn dedup<'a>(ranges: impl Iterator<Item = &'a PortRange>) -> Vec<PortRange> {
    let mut out: Vec<PortRange> = Vec::new();
    for r in ranges {
        if !out.contains(r) {
            out.push(*r);
        }
    }
    out
}

// === impl RuleSet ===

impl RuleSet {
    /// The rules as a standalone iptables-restore document (what `--dry-run` prints). Declaring
    /// a chain in `--noflush` mode creates it or flushes it, so applying this twice is a no-op.
    pub fn render(&self) -> String {
        let mut out = String::from("*nat\n");
        for chain in CHAINS {
            let _ = writeln!(out, ":{chain} - [0:0]");
        }
        for line in self.chain_rules.iter().chain(&self.jumps) {
            let _ = writeln!(out, "{line}");
        }
        out.push_str("COMMIT\n");
        out
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
