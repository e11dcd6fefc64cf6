//! Parent-based sampling with a ratio the control plane can change at run time.

use std::sync::atomic::{AtomicU64, Ordering};

/// Follows the caller's decision when there is one; otherwise samples `ratio` of new traces,
/// decided from the trace id so every hop of one trace decides the same way.
#[derive(Debug)]
pub struct Sampler {
    /// f64 bits of the ratio in 0..=1, swapped atomically (read on every request).
    ratio: AtomicU64,
}

impl Sampler {
    pub fn new(ratio: f64) -> Self {
        Sampler {
            ratio: AtomicU64::new(clamp(ratio).to_bits()),
        }
    }

    pub fn set_ratio(&self, ratio: f64) {
        self.ratio.store(clamp(ratio).to_bits(), Ordering::Relaxed);
    }

    pub fn ratio(&self) -> f64 {
        f64::from_bits(self.ratio.load(Ordering::Relaxed))
    }

    /// The sampling decision for a request: `parent` is the caller's decision if any.
    pub fn should_sample(&self, parent: Option<bool>, trace_id: &[u8; 16]) -> bool {
        if let Some(p) = parent {
            return p;
        }
        let ratio = self.ratio();
        if ratio >= 1.0 {
            return true;
        }
        if ratio <= 0.0 {
            return false;
        }
        // The low 8 bytes of a trace id are random (W3C level 2), so comparing them to the
        // ratio's share of u64 is a fair coin that every hop flips the same way.
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace_id[8..]);
        let x = u64::from_be_bytes(low);
        (x as f64) < ratio * (u64::MAX as f64)
    }
}

fn clamp(r: f64) -> f64 {
    if r.is_nan() { 1.0 } else { r.clamp(0.0, 1.0) }
}

#[cfg(test)]
mod tests {
    use super::Sampler;

    #[test]
    fn parent_decision_wins_and_ratio_bounds_hold() {
        let s = Sampler::new(0.0);
        assert!(s.should_sample(Some(true), &[1; 16]));
        assert!(!s.should_sample(None, &[0xff; 16]));
        s.set_ratio(1.0);
        assert!(s.should_sample(None, &[0xff; 16]));
        assert!(!s.should_sample(Some(false), &[1; 16]));
        s.set_ratio(0.5);
        let sampled = (0u64..1000)
            .filter(|i| {
                let mut id = [0u8; 16];
                id[8..].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
                s.should_sample(None, &id)
            })
            .count();
        assert!((400..600).contains(&sampled), "{sampled}");
    }
}
