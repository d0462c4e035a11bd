//! When to refresh a cached token, and when to retry a failed refresh.
//! Pure functions of durations and a jitter value, so they are tested
//! exhaustively without time passing.

use super::FailureKind;
use crate::backoff::Backoff;
use std::time::Duration;

/// Refreshes never come sooner than this after a token was obtained, even if
/// Entra says so (a guard against refresh loops on odd responses).
pub const MIN_REFRESH_DELAY: Duration = Duration::from_secs(30);

/// Jitter spreads refreshes over ±this fraction of the lifetime, so that
/// thousands of tenants prefetched together do not refresh together.
pub const JITTER_FRACTION: f64 = 0.05;

/// Delay from obtaining a token until its background refresh.
///
/// - At `refresh_in` when Entra sent one, else at two thirds of `lifetime`;
/// - moved by `jitter` (in `[-1, 1]`) × [`JITTER_FRACTION`] × `lifetime`,
///   symmetric so the mean interval stays on target;
/// - never later than the point where the token would stop being handed out
///   (`lifetime - min_remaining`), less a margin of the same jitter span for
///   the refresh itself; never sooner than [`MIN_REFRESH_DELAY`].
pub fn refresh_delay(
    lifetime: Duration,
    refresh_in: Option<Duration>,
    min_remaining: Duration,
    jitter: f64,
) -> Duration {
    let jitter = jitter.clamp(-1.0, 1.0);
    let span = lifetime.mul_f64(JITTER_FRACTION);
    let target = match refresh_in {
        Some(r) if r > Duration::ZERO && r < lifetime => r,
        _ => lifetime.mul_f64(2.0 / 3.0),
    };
    let jittered = if jitter >= 0.0 {
        target.saturating_add(span.mul_f64(jitter))
    } else {
        target.saturating_sub(span.mul_f64(-jitter))
    };
    let latest = lifetime.saturating_sub(min_remaining).saturating_sub(span);
    jittered.min(latest).max(MIN_REFRESH_DELAY.min(latest))
}

/// Retries of a failed background refresh: from 5 s, doubling, to 5 min.
pub const REFRESH_RETRY: Backoff = Backoff {
    base: Duration::from_secs(5),
    cap: Duration::from_secs(300),
};

/// How long a transient failure (after the source's own retries) is
/// answered locally: the `Retry-After` callers are told, so callers in a
/// loop cannot multiply upstream requests.
pub const TRANSIENT_HOLD: Duration = Duration::from_secs(5);

/// How long a failed load is remembered and answered locally: a refusal for
/// `negative_ttl`, a throttle for the time the issuer asked, a transient
/// failure for [`TRANSIENT_HOLD`].
pub fn hold_for(kind: FailureKind, negative_ttl: Duration) -> Duration {
    match kind {
        FailureKind::Refused => negative_ttl,
        FailureKind::Throttled(wait) => wait,
        FailureKind::Transient => TRANSIENT_HOLD,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const FIVE_MIN: Duration = Duration::from_secs(300);

    #[test]
    fn refresh_at_two_thirds_without_refresh_in() {
        assert_eq!(
            refresh_delay(HOUR, None, FIVE_MIN, 0.0),
            Duration::from_secs(2400)
        );
        let ninety = Duration::from_secs(5400);
        assert_eq!(
            refresh_delay(ninety, None, FIVE_MIN, 0.0),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn refresh_at_refresh_in_when_sent() {
        assert_eq!(
            refresh_delay(HOUR, Some(Duration::from_secs(1800)), FIVE_MIN, 0.0),
            Duration::from_secs(1800)
        );
        // Nonsense refresh_in (zero, or past the lifetime) falls back to 2/3.
        assert_eq!(
            refresh_delay(HOUR, Some(Duration::ZERO), FIVE_MIN, 0.0),
            Duration::from_secs(2400)
        );
        assert_eq!(
            refresh_delay(HOUR, Some(2 * HOUR), FIVE_MIN, 0.0),
            Duration::from_secs(2400)
        );
    }

    #[test]
    fn jitter_is_symmetric_and_bounded() {
        assert_eq!(
            refresh_delay(HOUR, None, FIVE_MIN, 1.0),
            Duration::from_secs(2580)
        );
        assert_eq!(
            refresh_delay(HOUR, None, FIVE_MIN, -1.0),
            Duration::from_secs(2220)
        );
        assert_eq!(
            refresh_delay(HOUR, None, FIVE_MIN, 7.0),
            Duration::from_secs(2580)
        );
        // The mean over a symmetric spread is the target.
        let n = 1000;
        let total: Duration = (0..=n)
            .map(|i| {
                refresh_delay(
                    HOUR,
                    None,
                    FIVE_MIN,
                    -1.0 + 2.0 * f64::from(i) / f64::from(n),
                )
            })
            .sum();
        let mean = total / (n + 1);
        assert!(
            mean.abs_diff(Duration::from_secs(2400)) < Duration::from_secs(1),
            "{mean:?}"
        );
    }

    #[test]
    fn refresh_always_happens_while_the_token_is_still_handed_out() {
        for lifetime_s in [60u64, 300, 600, 3599, 3600, 5400, 86_400] {
            for min_remaining_s in [0u64, 60, 300, 1800] {
                for jitter in [-1.0, -0.3, 0.0, 0.5, 1.0] {
                    for refresh_in in [None, Some(Duration::from_secs(lifetime_s - 1))] {
                        let lifetime = Duration::from_secs(lifetime_s);
                        let min_remaining = Duration::from_secs(min_remaining_s);
                        let d = refresh_delay(lifetime, refresh_in, min_remaining, jitter);
                        assert!(
                            d <= lifetime.saturating_sub(min_remaining),
                            "lifetime {lifetime_s} min_remaining {min_remaining_s} jitter {jitter}: {d:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn refresh_is_not_sooner_than_the_floor_when_there_is_room() {
        assert_eq!(
            refresh_delay(HOUR, Some(Duration::from_secs(1)), FIVE_MIN, 0.0),
            MIN_REFRESH_DELAY
        );
        // A token too short-lived for the floor refreshes at the last useful moment.
        let short = Duration::from_secs(40);
        assert_eq!(
            refresh_delay(short, None, Duration::from_secs(30), 0.0),
            Duration::from_secs(8)
        );
    }

    #[test]
    fn every_failure_is_remembered_for_its_own_time() {
        let ttl = Duration::from_secs(30);
        assert_eq!(hold_for(FailureKind::Refused, ttl), ttl);
        assert_eq!(
            hold_for(FailureKind::Throttled(Duration::from_secs(60)), ttl),
            Duration::from_secs(60)
        );
        assert_eq!(hold_for(FailureKind::Transient, ttl), TRANSIENT_HOLD);
    }

    #[test]
    fn refresh_retries_start_at_5s_and_cap_at_5min() {
        assert_eq!(REFRESH_RETRY.delay(1, 1.0), Duration::from_secs(5));
        assert_eq!(REFRESH_RETRY.delay(3, 1.0), Duration::from_secs(20));
        assert_eq!(REFRESH_RETRY.delay(7, 1.0), REFRESH_RETRY.cap);
    }
}
