//! What one account with `"*"` may spend upstream on tenants nobody
//! configured and this broker does not know: fetches per minute (a token
//! bucket per account, refilled evenly over the minute, so one account
//! cannot make the broker send thousands of requests to Entra), and
//! fetches at once (half the upstream slots, so another account's tenants
//! always find a slot free).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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

/// Fetches at once for new tenants, per account: each account gets half
/// of `app.max_concurrent_requests` (at least one).
#[derive(Debug, Default)]
pub struct FetchShares {
    /// Account → (slots it was made with, its semaphore).
    shares: Mutex<HashMap<String, (usize, Arc<Semaphore>)>>,
}

impl FetchShares {
    /// The share of `account` when the client has `max_concurrent` slots.
    fn of(&self, account: &str, max_concurrent: usize) -> Arc<Semaphore> {
        let slots = (max_concurrent / 2).max(1);
        let mut shares = self.shares.lock().unwrap_or_else(|p| p.into_inner());
        match shares.get(account) {
            Some((n, semaphore)) if *n == slots => Arc::clone(semaphore),
            // New, or the configuration changed the number of slots.
            _ => {
                let semaphore = Arc::new(Semaphore::new(slots));
                shares.insert(account.to_owned(), (slots, Arc::clone(&semaphore)));
                semaphore
            }
        }
    }

    /// Waits up to `wait` for one of `account`'s slots; `None` when none
    /// came free in time.
    pub async fn acquire(
        &self,
        account: &str,
        max_concurrent: usize,
        wait: Duration,
    ) -> Option<OwnedSemaphorePermit> {
        let semaphore = self.of(account, max_concurrent);
        tokio::time::timeout(wait, semaphore.acquire_owned())
            .await
            .ok()?
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_account_holds_at_most_half_of_the_upstream_slots() {
        let shares = FetchShares::default();
        let wait = Duration::from_secs(1);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(shares.acquire("a", 8, wait).await.unwrap());
        }
        assert!(shares.acquire("a", 8, wait).await.is_none());
        // Another account has a share of its own.
        assert!(shares.acquire("b", 8, wait).await.is_some());
        held.pop();
        assert!(shares.acquire("a", 8, wait).await.is_some());
        // One slot in all still gives each account one.
        assert!(shares.acquire("c", 1, wait).await.is_some());
    }

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
