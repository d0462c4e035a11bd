//! How many fetches for tenants not yet cached an account with `"*"` may
//! start: a token bucket per account, refilled evenly over the minute, so
//! one account cannot make the broker send thousands of requests to Entra.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets, by account name (so they outlive reloads).
#[derive(Debug, Default)]
pub struct NewTenantLimit {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl NewTenantLimit {
    /// Takes one fetch from `account`'s bucket of `per_minute`; when it is
    /// empty, the time until the next one.
    pub fn take(&self, account: &str, per_minute: u32, now: Instant) -> Result<(), Duration> {
        let per_minute = f64::from(per_minute.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(account.to_owned()).or_insert(Bucket {
            tokens: per_minute,
            at: now,
        });
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * per_minute / 60.0;
        bucket.tokens = (bucket.tokens + refill).min(per_minute);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) * 60.0 / per_minute,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_the_limit_then_an_even_rate() {
        let limit = NewTenantLimit::default();
        let start = Instant::now();
        for _ in 0..60 {
            assert!(limit.take("a", 60, start).is_ok());
        }
        let wait = limit.take("a", 60, start).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        // Another account has its own bucket.
        assert!(limit.take("b", 60, start).is_ok());
        // One a second comes back.
        assert!(limit
            .take("a", 60, start + Duration::from_millis(1000))
            .is_ok());
        assert!(limit
            .take("a", 60, start + Duration::from_millis(1500))
            .is_err());
        assert!(limit
            .take("a", 60, start + Duration::from_millis(2000))
            .is_ok());
    }
}
