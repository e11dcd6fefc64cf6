//! Virtual IP allocation: one stable address per service from a configured IPv4 range.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 CIDR range VIPs are drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipRange {
    base: u32,
    prefix: u8,
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an IPv4 CIDR range with a prefix between /8 and /30 (e.g. 240.240.0.0/16)")]
pub struct BadRange(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the VIP range is exhausted; configure a larger --vip-range")]
pub struct Exhausted;

/// Service → VIP, plus the reverse set for "is this address taken".
#[derive(Debug)]
pub struct VipAllocator {
    range: VipRange,
    by_service: HashMap<String, Ipv4Addr>,
    taken: HashSet<Ipv4Addr>,
    /// Next host offset to try; allocation scans forward from here so it stays O(1) amortised.
    cursor: u32,
}

// === impl VipRange ===

impl FromStr for VipRange {
    type Err = BadRange;

    fn from_str(s: &str) -> Result<Self, BadRange> {
        let bad = || BadRange(s.to_string());
        let (ip, prefix) = s.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        // Below /8 is absurdly large; above /30 leaves no usable host addresses.
        if !(8..=30).contains(&prefix) {
            return Err(bad());
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Self {
            base: u32::from(ip) & mask,
            prefix,
        })
    }
}

impl std::fmt::Display for VipRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

impl VipRange {
    /// Usable host offsets: the network and broadcast addresses are skipped.
    fn hosts(&self) -> u32 {
        (1u32 << (32 - self.prefix)) - 2
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix);
        u32::from(ip) & mask == self.base
    }
}

// === impl VipAllocator ===

impl VipAllocator {
    pub fn new(range: VipRange) -> Self {
        Self {
            range,
            by_service: HashMap::new(),
            taken: HashSet::new(),
            cursor: 0,
        }
    }

    /// Restores a stored allocation. Addresses outside the (possibly changed) range are
    /// dropped so the service gets a fresh one.
    pub fn restore(&mut self, service: &str, ip: Ipv4Addr) -> bool {
        if !self.range.contains(ip) || self.taken.contains(&ip) {
            return false;
        }
        self.taken.insert(ip);
        self.by_service.insert(service.to_string(), ip);
        true
    }

    pub fn get(&self, service: &str) -> Option<Ipv4Addr> {
        self.by_service.get(service).copied()
    }

    /// Frees a service's VIP (it may be handed to another service later).
    pub fn release(&mut self, service: &str) -> Option<Ipv4Addr> {
        let ip = self.by_service.remove(service)?;
        self.taken.remove(&ip);
        Some(ip)
    }

    /// Every service holding a VIP.
    pub fn services(&self) -> impl Iterator<Item = &String> {
        self.by_service.keys()
    }

    /// The service's VIP, allocating one if needed. `Ok((ip, true))` means newly allocated:
    /// the caller must store it.
    pub fn ensure(&mut self, service: &str) -> Result<(Ipv4Addr, bool), Exhausted> {
        if let Some(ip) = self.get(service) {
            return Ok((ip, false));
        }
        let hosts = self.range.hosts();
        for _ in 0..hosts {
            let offset = self.cursor % hosts + 1;
            self.cursor = self.cursor.wrapping_add(1);
            let ip = Ipv4Addr::from(self.range.base + offset);
            if self.taken.insert(ip) {
                self.by_service.insert(service.to_string(), ip);
                return Ok((ip, true));
            }
        }
        Err(Exhausted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_stably_and_skips_taken() {
        let range: VipRange = "240.240.0.0/16".parse().unwrap();
        let mut a = VipAllocator::new(range);
        assert!(a.restore("b", Ipv4Addr::new(240, 240, 0, 1)));
        let (ip, new) = a.ensure("a").unwrap();
        assert!(new);
        assert_eq!(ip, Ipv4Addr::new(240, 240, 0, 2));
        assert_eq!(a.ensure("a").unwrap(), (ip, false));
        assert!(!a.restore("c", Ipv4Addr::new(10, 0, 0, 1)));
    }

    #[test]
    fn small_range_exhausts() {
        let mut a = VipAllocator::new("10.0.0.0/30".parse().unwrap());
        a.ensure("a").unwrap();
        a.ensure("b").unwrap();
        assert_eq!(a.ensure("c"), Err(Exhausted));
        assert!("10.0.0.0/31".parse::<VipRange>().is_err());
        assert!("nope".parse::<VipRange>().is_err());
    }
}
