//! Links from a `TestNet`'s namespaces to the host, so a process on the host (a control plane)
//! is reachable from both A and B at one host address.
//!
//! Each namespace gets its own veth pair `up0` ↔ `mt<pid>x<n><a|b>` (host side). Link `k`
//! (a process-wide counter) uses 10.198.<2k>.0/30 for A and 10.198.<2k+1>.0/30 for B; the
//! host side is `.1`, the namespace side `.2`. The host address of A's link is the one to
//! listen on: B reaches it through its own link with a host route, so traffic to the host never
//! crosses the A–B veth (whose capture then shows only sidecar-to-sidecar traffic).
//! The host-side interfaces are deleted with the namespaces (a veth dies with either end).

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};

use anyhow::{Result, bail};

use super::{Side, TestNet, run_ok};

/// The interface inside each namespace facing the host.
pub const UPLINK: &str = "up0";
/// Host links are numbered per process; 100 pairs (10.198.0.0–10.198.199.0) is far more than
/// the handful of tests that need one, and wrapping after that reuses long-deleted subnets.
const MAX_LINKS: u8 = 100;
static NEXT_LINK: AtomicU8 = AtomicU8::new(0);

// === impl TestNet ===

impl TestNet {
    /// Connects A and B to the host; returns the host address reachable from both (the host
    /// side of A's link). Processes on the host listening there serve both namespaces.
    pub fn link_host(&mut self) -> Result<Ipv4Addr> {
        if !self.uplinks.is_empty() {
            bail!("this TestNet is already linked to the host");
        }
        let k = NEXT_LINK.fetch_add(1, Ordering::Relaxed) % MAX_LINKS;
        let subnet = |side: u8| [10, 198, 2 * k + side, 0];
        let host_addr = |side: u8| {
            let [a, b, c, _] = subnet(side);
            Ipv4Addr::new(a, b, c, 1)
        };
        let shared = host_addr(0);
        for (i, side) in [Side::A, Side::B].into_iter().enumerate() {
            let i = u8::try_from(i)?;
            let host_if = format!(
                "mt{}x{k}{}",
                std::process::id(),
                if side == Side::A { 'a' } else { 'b' }
            );
            let ns = self.ns(side).name().to_string();
            run_ok(Command::new("ip").args([
                "link", "add", &host_if, "type", "veth", "peer", "name", UPLINK, "netns", &ns,
            ]))?;
            self.uplinks.push(host_if.clone());
            let host = host_addr(i);
            let [a, b, c, _] = subnet(i);
            let inner = Ipv4Addr::new(a, b, c, 2);
            run_ok(Command::new("ip").args([
                "addr",
                "add",
                &format!("{host}/30"),
                "dev",
                &host_if,
            ]))?;
            run_ok(Command::new("ip").args(["link", "set", &host_if, "up"]))?;
            let netns = self.ns(side);
            netns.ip(&["addr", "add", &format!("{inner}/30"), "dev", UPLINK])?;
            netns.ip(&["link", "set", UPLINK, "up"])?;
            if host != shared {
                netns.ip(&[
                    "route",
                    "add",
                    &format!("{shared}/32"),
                    "via",
                    &host.to_string(),
                ])?;
            }
        }
        Ok(shared)
    }

    /// Removes the host-side interfaces (their namespace ends go with them).
    pub(super) fn unlink_host(&mut self) {
        for host_if in self.uplinks.drain(..) {
            let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        }
    }
}
