//! Exponential backoff with "equal jitter", for the authority client's
//! retries within one request and the cache's retries of a failed
//! background refresh. Pure.

use std::time::Duration;

/// Delays that double from `base` up to `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub base: Duration,
    /// Delays stop growing here.
    pub cap: Duration,
}

impl Backoff {
    /// The delay before retry number `retry` (1 for the first): base ×
    /// 2^(retry-1), capped, then scaled by `unit` ∈ [0, 1] into its upper
    /// half, so retries spread out but never collapse to zero.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let exp = retry.saturating_sub(1).min(20);
        let full = self.base.saturating_mul(1 << exp).min(self.cap);
        full.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_cap_and_keep_their_upper_half() {
        let b = Backoff {
            base: Duration::from_millis(250),
            cap: Duration::from_secs(4),
        };
        assert_eq!(b.delay(1, 1.0), Duration::from_millis(250));
        assert_eq!(b.delay(2, 1.0), Duration::from_millis(500));
        assert_eq!(b.delay(3, 1.0), Duration::from_secs(1));
        assert_eq!(b.delay(9, 1.0), Duration::from_secs(4));
        assert_eq!(b.delay(u32::MAX, 1.0), Duration::from_secs(4));
        assert_eq!(b.delay(1, 0.0), Duration::from_millis(125));
        assert_eq!(b.delay(0, 0.5), Duration::from_micros(187_500));
        assert_eq!(b.delay(1, 7.0), Duration::from_millis(250));
    }
}
