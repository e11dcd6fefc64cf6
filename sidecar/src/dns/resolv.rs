//! The upstream resolvers from resolv.conf, read once at start-up (the file may be replaced
//! later, e.g. by the injector's DNS settings; the sidecar keeps what it started with).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// Standard DNS port.
const DNS_PORT: u16 = 53;

/// The `nameserver` entries of resolv.conf text, in order, as `ip:53`.
///
/// Scoped IPv6 entries (`fe80::1%eth0`) are skipped: a scope needs an interface index, and
/// link-local resolvers are not something a workload namespace has.
pub fn parse(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            words.next()?.parse::<IpAddr>().ok()
        })
        .map(|ip| SocketAddr::new(ip, DNS_PORT))
        .collect()
}

/// Reads `path` (normally /etc/resolv.conf).
pub fn read(path: &Path) -> std::io::Result<Vec<SocketAddr>> {
    Ok(parse(&std::fs::read_to_string(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_in_order() {
        let text = "# generated\nsearch default.svc.cluster.local\nnameserver 10.96.0.10\n\
                    nameserver   ::1\nnameserver fe80::1%eth0\nnameserver\noptions ndots:5\n";
        let got: Vec<String> = parse(text).iter().map(ToString::to_string).collect();
        assert_eq!(got, ["10.96.0.10:53", "[::1]:53"]);
    }
}
