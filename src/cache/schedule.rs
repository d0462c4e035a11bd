//! When to refresh a cached token, and when to retry a failed refresh.
//! Pure functions of durations, so they are tested exhaustively without
//! time passing. Where in its window each token's refresh lands is the
//! [`pacing`](super::pacing) module's choice.

use super::FailureKind;
use crate::backoff::Backoff;
use std::time::Duration;

/// Refreshes never come sooner than this after a token was obtained, even if
/// Entra says so (a guard against refresh loops on odd responses).
pub const MIN_REFRESH_DELAY: Duration = Duration::from_secs(30);

/// The span of a token's life in which its background refresh may happen,
/// as offsets from when it was obtained (docs/contract.md, "Any token
/// lifetime"): from half the lifetime (or Entra's later `refresh_in`) to
/// `lifetime − max(min(15 min, lifetime / 4), 3 × floor)`, never before
/// half-life, where `floor` is [`handout_floor`]. So for any lifetime and
/// any `min_remaining` a token is fetched at most twice per lifetime (and
/// at most once per [`MIN_REFRESH_DELAY`] for lifetimes from 60 s), and is
/// refreshed while it is still handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Duration,
    pub end: Duration,
}

/// Most of the margin before expiry; see [`Window`].
const MAX_END_MARGIN: Duration = Duration::from_secs(15 * 60);

/// The least life a token of `lifetime` must have left to be handed out:
/// `min_remaining`, or a quarter of its lifetime when that is less (a
/// tenant's token-lifetime policy may issue tokens far shorter than the
/// configuration expects; they are used, not refetched at once).
pub fn handout_floor(lifetime: Duration, min_remaining: Duration) -> Duration {
    min_remaining.min(lifetime / 4)
}

/// The refresh window of a token of `lifetime`.
pub fn refresh_window(
    lifetime: Duration,
    refresh_in: Option<Duration>,
    min_remaining: Duration,
) -> Window {
    let floor = handout_floor(lifetime, min_remaining);
    let half = lifetime / 2;
    // Entra's hint is followed when it is later than half-life; an earlier
    // one would fetch more than twice per lifetime.
    let start = match refresh_in {
        Some(r) if r > Duration::ZERO && r < lifetime => r.max(half),
        _ => half,
    };
    let margin = MAX_END_MARGIN
        .min(lifetime / 4)
        .max(floor.saturating_mul(3))
        .min(half);
    // Never past the point where the token stops being handed out.
    let end = lifetime
        .saturating_sub(margin)
        .min(lifetime.saturating_sub(floor));
    // Not sooner than the floor when there is room (tokens under a minute).
    let start = start.max(MIN_REFRESH_DELAY).min(end);
    Window { start, end }
}

/// The window of a slot's *first* token: it may open at a quarter of the
/// lifetime instead of half. Tokens fetched together (a first start, a
/// restart without the state file, a reload adding many tenants) would
/// otherwise all refresh inside one narrow window: a convoy in the first
/// cycle that the pacer could only spread out over later cycles. A tenant
/// costs at most one early fetch when it enters the cache (so its first
/// lifetime may see three fetches: the fill, the early refresh, the
/// regular one); every later token keeps [`refresh_window`]'s half-life
/// start, two fetches per lifetime.
pub fn first_window(window: Window, lifetime: Duration) -> Window {
    let early = (lifetime / 4).max(MIN_REFRESH_DELAY);
    Window {
        start: window.start.min(early.min(window.end)),
        end: window.end,
    }
}

/// A stable position in `[0, 1)` for `key`: the same on every host, so that
/// hosts sharing a cache prefer the same moment for the same token, and
/// different keys spread evenly.
pub fn position(key: &[u8]) -> f64 {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    // 53 bits: exactly representable in an f64.
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// Retries of a failed background refresh: from 5 s, doubling, to 5 min.
pub const REFRESH_RETRY: Backoff = Backoff {
    base: Duration::from_secs(5),
    cap: Duration::from_secs(300),
};

/// The first background retry of a configured tenant that has no token
/// (its fetch failed: consent missing, say); later ones double up to
/// `cache.failed_retry_max`.
pub const HEAL_FIRST: Duration = Duration::from_secs(60);

/// When a configured tenant with no token retries after `failures`
/// consecutive failed fetches: 1 min, 2, 4, … up to `max`, so it heals by
/// itself once an admin grants consent, without hammering Entra before.
pub fn heal_delay(failures: u32, max: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    HEAL_FIRST.saturating_mul(1 << exp).min(max.max(HEAL_FIRST))
}

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

    fn window(lifetime_s: u64, refresh_in_s: Option<u64>, min_remaining_s: u64) -> (u64, u64) {
        let w = refresh_window(
            Duration::from_secs(lifetime_s),
            refresh_in_s.map(Duration::from_secs),
            Duration::from_secs(min_remaining_s),
        );
        (w.start.as_secs(), w.end.as_secs())
    }

    #[test]
    fn the_window_runs_from_half_life_to_the_margin_before_expiry() {
        // An hour's token, min_remaining 5 min: from 30 min to 60 − 15 min.
        assert_eq!(window(3600, None, 300), (1800, 2700));
        // 90 minutes: the margin is still 15 min.
        assert_eq!(window(5400, None, 300), (2700, 4500));
        // 20 minutes: the margin is a quarter of the lifetime.
        assert_eq!(window(1200, None, 60), (600, 900));
        // A large min_remaining widens the margin to 3 × min_remaining.
        assert_eq!(window(3600, None, 600), (1800, 1800));
        assert_eq!(window(120, None, 5), (60, 90));
    }

    #[test]
    fn the_window_starts_at_refresh_in_when_sent() {
        assert_eq!(window(86_400, Some(43_200), 300), (43_200, 85_500));
        assert_eq!(window(3600, Some(2400), 300), (2400, 2700));
        // One earlier than half-life would fetch more than twice per lifetime.
        assert_eq!(window(3600, Some(600), 300), (1800, 2700));
        // Nonsense refresh_in (zero, or past the lifetime) falls back to half.
        assert_eq!(window(3600, Some(0), 300), (1800, 2700));
        assert_eq!(window(3600, Some(7200), 300), (1800, 2700));
        assert_eq!(window(3600, Some(1), 300), (1800, 2700));
        // Under a minute there is no room: at the end, not sooner.
        assert_eq!(window(40, None, 0), (30, 30));
    }

    #[test]
    fn refresh_always_happens_while_the_token_is_still_handed_out() {
        for lifetime_s in [10u64, 60, 300, 600, 3599, 3600, 5400, 86_400] {
            for min_remaining_s in [0u64, 60, 300, 1800] {
                for refresh_in in [
                    None,
                    Some(lifetime_s / 3),
                    Some(lifetime_s.saturating_sub(1)),
                ] {
                    let (start, end) = window(lifetime_s, refresh_in, min_remaining_s);
                    assert!(
                        start <= end,
                        "{lifetime_s} {min_remaining_s} {refresh_in:?}"
                    );
                    let floor = (lifetime_s / 4).min(min_remaining_s);
                    assert!(
                        end <= lifetime_s - floor,
                        "lifetime {lifetime_s} min_remaining {min_remaining_s}: ends at {end}"
                    );
                }
            }
        }
    }

    #[test]
    fn positions_are_stable_and_spread() {
        assert_eq!(position(b"contoso"), position(b"contoso"));
        assert_ne!(position(b"contoso"), position(b"fabrikam"));
        let mut deciles = [0u32; 10];
        for i in 0..10_000 {
            let p = position(format!("tenant-{i}").as_bytes());
            assert!((0.0..1.0).contains(&p));
            deciles[(p * 10.0) as usize] += 1;
        }
        assert!(
            deciles.iter().all(|&n| (900..1100).contains(&n)),
            "{deciles:?}"
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
        let max = Duration::from_secs(15 * 60);
        let heal: Vec<u64> = (1..=7).map(|n| heal_delay(n, max).as_secs()).collect();
        assert_eq!(heal, [60, 120, 240, 480, 900, 900, 900]);
        assert_eq!(heal_delay(u32::MAX, max), max);
        // A maximum below the first retry never makes it sooner.
        assert_eq!(heal_delay(1, Duration::from_secs(5)), HEAL_FIRST);
        assert_eq!(REFRESH_RETRY.delay(3, 1.0), Duration::from_secs(20));
        assert_eq!(REFRESH_RETRY.delay(7, 1.0), REFRESH_RETRY.cap);
    }

    proptest::proptest! {
        /// The contract for any lifetime from 60 s to 24 h and any accepted
        /// `min_remaining` (0 to 59 min): at most two fetches per lifetime,
        /// none sooner than 30 s after the last, and the refresh while the
        /// token still has its floor of life left.
        #[test]
        fn any_lifetime_is_fetched_at_most_twice_per_lifetime(
            lifetime_ms in 60_000u64..=86_400_000,
            min_remaining_s in 0u64..=3540,
            refresh_in_permille in proptest::option::of(0u64..=1000),
        ) {
            let lifetime = Duration::from_millis(lifetime_ms);
            let min_remaining = Duration::from_secs(min_remaining_s);
            let refresh_in = refresh_in_permille.map(|p| lifetime * p as u32 / 1000);
            let w = refresh_window(lifetime, refresh_in, min_remaining);
            let floor = handout_floor(lifetime, min_remaining);
            proptest::prop_assert!(w.start <= w.end);
            proptest::prop_assert!(w.start >= lifetime / 2, "{w:?}");
            proptest::prop_assert!(w.start >= MIN_REFRESH_DELAY, "{w:?}");
            proptest::prop_assert!(w.end <= lifetime - floor, "{w:?} floor {floor:?}");
            proptest::prop_assert!(floor <= min_remaining && floor <= lifetime / 4);
            // A slot's first token may refresh from a quarter of its life,
            // never sooner than 30 s, never later than the usual window.
            let first = first_window(w, lifetime);
            proptest::prop_assert!(first.end == w.end && first.start <= w.start);
            proptest::prop_assert!(first.start >= (lifetime / 4).min(w.end), "{first:?}");
            proptest::prop_assert!(first.start >= MIN_REFRESH_DELAY.min(w.end), "{first:?}");
        }
    }
}
