//! Consistent hashing: a stable key hash, the ketama-style ring and the Maglev table.

use std::net::IpAddr;

use http::HeaderMap;

use crate::state::{HashKey, HashOn};

/// 64-bit FNV-1a followed by a SplitMix64 finaliser. Stable across processes and releases
/// (unlike std's SipHash keys), so every client sidecar maps a key to the same endpoint.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The request's hash key per `hash_on`, or `None` when the key is absent (the balancer then
/// picks as if unhashed; a generated cookie, if configured, is set by the caller).
pub fn request_hash(hash_on: &HashOn, headers: &HeaderMap, source: Option<IpAddr>) -> Option<u64> {
    match &hash_on.key {
        HashKey::Header(name) => headers.get(name).map(|v| hash64(v.as_bytes())),
        HashKey::Cookie(name) => cookie(headers, name).map(|v| hash64(v.as_bytes())),
        HashKey::SourceIp => source.map(|ip| match ip {
            IpAddr::V4(v4) => hash64(&v4.octets()),
            IpAddr::V6(v6) => hash64(&v6.octets()),
        }),
    }
}

/// Value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// Ketama-style ring: each endpoint owns `replicas ∝ weight` points; a key belongs to the
/// first point at or after its hash.
#[derive(Debug)]
pub struct Ring {
    points: Vec<(u64, u32)>,
}

/// Points per unit of relative weight. 160 (ketama's choice) keeps each endpoint's share
/// within a few percent of ideal; the total is capped so a huge weight cannot blow up memory.
const RING_POINTS_PER_WEIGHT: u64 = 160;
const RING_MAX_POINTS: u64 = 1 << 16;

impl Ring {
    /// `members`: (stable identity bytes, weight) per endpoint index.
    pub fn new(members: &[(Vec<u8>, u32)]) -> Self {
        let min_w = members.iter().map(|m| m.1.max(1)).min().unwrap_or(1);
        let want: u64 = members
            .iter()
            .map(|m| RING_POINTS_PER_WEIGHT * u64::from(m.1.max(1) / min_w))
            .sum();
        let scale = (want as f64 / RING_MAX_POINTS as f64).max(1.0);
        let mut points = Vec::new();
        for (idx, (id, w)) in members.iter().enumerate() {
            let n = ((RING_POINTS_PER_WEIGHT * u64::from(w.max(&1) / min_w)) as f64 / scale)
                .max(1.0) as u64;
            for r in 0..n {
                let mut key = id.clone();
                key.extend_from_slice(&r.to_le_bytes());
                points.push((hash64(&key), idx as u32));
            }
        }
        points.sort_unstable();
        Self { points }
    }

    /// Endpoint indexes in ring order starting at `hash`'s owner (distinct not guaranteed);
    /// callers walk it to skip unavailable endpoints.
    pub fn walk(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|p| p.0 < hash);
        let n = self.points.len();
        (0..n).map(move |i| self.points[(start + i) % n].1 as usize)
    }
}

/// Maglev lookup table (Eisenbud et al. 2016): near-perfect balance and minimal disruption.
#[derive(Debug)]
pub struct Maglev {
    table: Vec<u32>,
}

/// Table size: a prime well above 100 × endpoints for the sets a sidecar sees (Google's paper
/// uses 65537 as its small size), so each endpoint's share is within ~1 %.
const MAGLEV_SIZE: usize = 65_537;

impl Maglev {
    pub fn new(members: &[(Vec<u8>, u32)]) -> Self {
        let m = MAGLEV_SIZE as u64;
        let mut table = vec![u32::MAX; MAGLEV_SIZE];
        if members.is_empty() {
            return Self { table: Vec::new() };
        }
        let perms: Vec<(u64, u64)> = members
            .iter()
            .map(|(id, _)| {
                let h = hash64(id);
                (h % m, mix(h) % (m - 1) + 1)
            })
            .collect();
        let max_w = members.iter().map(|m| m.1.max(1)).max().unwrap_or(1);
        let mut next = vec![0u64; members.len()];
        // Weighted variant: each round, endpoint i fills a slot only while its credit allows.
        let mut credit = vec![0u64; members.len()];
        let mut filled = 0;
        'outer: loop {
            for i in 0..members.len() {
                credit[i] += u64::from(members[i].1.max(1));
                if credit[i] < u64::from(max_w) {
                    continue;
                }
                credit[i] -= u64::from(max_w);
                let (offset, skip) = perms[i];
                loop {
                    let slot = ((offset + next[i] * skip) % m) as usize;
                    next[i] += 1;
                    if table[slot] == u32::MAX {
                        table[slot] = i as u32;
                        filled += 1;
                        break;
                    }
                }
                if filled == MAGLEV_SIZE {
                    break 'outer;
                }
            }
        }
        Self { table }
    }

    /// Endpoint indexes starting at `hash`'s slot, then the following slots.
    pub fn walk(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let n = self.table.len();
        let start = if n == 0 {
            0
        } else {
            (hash % n as u64) as usize
        };
        (0..n).map(move |i| self.table[(start + i) % n] as usize)
    }
}
