//! Random jitter for retry backoff: a lock-free splitmix64 stream,
//! seeded from the system RNG in production and from a fixed seed in tests
//! (so paused-time tests are reproducible). Not for anything secret.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// A shared source of jitter values.
pub struct Jitter {
    state: AtomicU64,
}

impl fmt::Debug for Jitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Jitter")
    }
}

impl Jitter {
    /// Seeded from the system random generator.
    pub fn from_entropy() -> Jitter {
        let mut seed = [0u8; 8];
        // Jitter only spreads load; a fixed seed is an acceptable fallback.
        if aws_lc_rs::rand::fill(&mut seed).is_err() {
            seed = 0x5eed_u64.to_le_bytes();
        }
        Jitter::seeded(u64::from_le_bytes(seed))
    }

    /// A reproducible stream.
    pub fn seeded(seed: u64) -> Jitter {
        Jitter {
            state: AtomicU64::new(seed),
        }
    }

    fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_in_range_and_spread() {
        let j = Jitter::seeded(42);
        let values: Vec<f64> = (0..10_000).map(|_| j.unit()).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        let below = values.iter().filter(|v| **v < 0.1).count();
        assert!((800..1200).contains(&below), "{below}");
    }

    #[test]
    fn seeded_streams_repeat() {
        let a = Jitter::seeded(7);
        let b = Jitter::seeded(7);
        for _ in 0..100 {
            assert_eq!(a.unit().to_bits(), b.unit().to_bits());
        }
    }
}
