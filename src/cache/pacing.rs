//! Where in its refresh window each token's background refresh lands, so
//! that the upstream rate stays near the population's mean instead of
//! following the moments tokens happened to be fetched (a prefetch of
//! thousands of tenants would otherwise come back as one burst every
//! cycle: a refresh convoy).
//!
//! The pacer counts the refreshes planned in each second and puts a new one
//! in the least-loaded part of its window. Ties go to the token's own
//! stable [`position`](super::schedule::position), so an empty pacer spreads
//! keys evenly, and hosts sharing a cache prefer the same moment for the same
//! token (the first one there refreshes it for all).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// A window is looked at in at most this many parts, so planning costs the
/// same for a day-long window as for a minute-long one.
const MAX_PARTS: u64 = 512;

/// Refreshes planned per second.
#[derive(Debug)]
pub struct Pacer {
    epoch: Instant,
    /// Second since `epoch` → refreshes planned in it.
    planned: Mutex<BTreeMap<u64, u32>>,
}

/// A planned refresh: when, and the second it counts in (to release it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    pub at: Instant,
    second: u64,
}

impl Pacer {
    pub fn new() -> Pacer {
        Pacer {
            epoch: Instant::now(),
            planned: Mutex::new(BTreeMap::new()),
        }
    }

    fn second_of(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_secs()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, u32>> {
        // Counts only steer a choice; a poisoned map is still usable.
        self.planned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Plans a refresh between `earliest` and `latest` (inclusive), at
    /// `position` in `[0, 1)` when the window is evenly loaded.
    pub fn plan(&self, earliest: Instant, latest: Instant, position: f64) -> Planned {
        let latest = latest.max(earliest);
        let first = self.second_of(earliest);
        let last = self.second_of(latest);
        let mut planned = self.lock();
        // Seconds gone by hold nothing to steer.
        let now = self.second_of(Instant::now());
        *planned = planned.split_off(&now);
        let second = choose(&planned, first, last, position.clamp(0.0, 1.0));
        *planned.entry(second).or_insert(0) += 1;
        let at = (self.epoch + Duration::from_secs(second)).clamp(earliest, latest);
        Planned { at, second }
    }

    /// Forgets a planned refresh (it ran, or was replaced or dropped).
    pub fn release(&self, planned: Planned) {
        let mut map = self.lock();
        if let Some(count) = map.get_mut(&planned.second) {
            *count -= 1;
            if *count == 0 {
                map.remove(&planned.second);
            }
        }
    }

    /// Refreshes planned in the seconds `[from, to)` after the pacer's start
    /// (for tests and the admin view).
    pub fn load_between(&self, from: Instant, to: Instant) -> u32 {
        let (from, to) = (self.second_of(from), self.second_of(to));
        self.lock().range(from..to).map(|(_, n)| n).sum()
    }
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer::new()
    }
}

/// The second in `[first, last]` to plan in: the window is cut into at most
/// [`MAX_PARTS`] parts; the least-loaded part wins, ties going to the part
/// nearest `position`; within the part, the second at `position`.
fn choose(planned: &BTreeMap<u64, u32>, first: u64, last: u64, position: f64) -> u64 {
    let seconds = last - first + 1;
    let width = seconds.div_ceil(MAX_PARTS);
    let parts = seconds.div_ceil(width);
    let mut load = vec![0u64; usize::try_from(parts).unwrap_or(1).max(1)];
    for (&second, &count) in planned.range(first..=last) {
        let part = usize::try_from((second - first) / width).unwrap_or(0);
        if let Some(slot) = load.get_mut(part) {
            *slot += u64::from(count);
        }
    }
    let preferred = (position * parts as f64).floor();
    let (best, _) = load
        .iter()
        .enumerate()
        .min_by(|(a, load_a), (b, load_b)| {
            load_a.cmp(load_b).then_with(|| {
                let da = (*a as f64 - preferred).abs();
                let db = (*b as f64 - preferred).abs();
                da.total_cmp(&db)
            })
        })
        .unwrap_or((0, &0));
    let start = first + best as u64 * width;
    let within = ((position * width as f64) as u64).min(width - 1);
    (start + within).min(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choose_in(planned: &[(u64, u32)], first: u64, last: u64, position: f64) -> u64 {
        choose(&planned.iter().copied().collect(), first, last, position)
    }

    #[test]
    fn an_empty_window_takes_the_keys_position() {
        assert_eq!(choose_in(&[], 100, 199, 0.0), 100);
        assert_eq!(choose_in(&[], 100, 199, 0.5), 150);
        assert_eq!(choose_in(&[], 100, 199, 0.999), 199);
        // A one-second window.
        assert_eq!(choose_in(&[], 7, 7, 0.3), 7);
    }

    #[test]
    fn the_least_loaded_second_wins() {
        let busy: Vec<(u64, u32)> = (100..200).map(|s| (s, 2)).collect();
        let mut planned = busy.clone();
        planned.retain(|&(s, _)| s != 140);
        planned.push((140, 1));
        assert_eq!(choose_in(&planned, 100, 199, 0.9), 140);
        // Outside the window does not count.
        assert_eq!(choose_in(&[(50, 9), (150, 9)], 100, 199, 0.5), 149);
    }

    #[test]
    fn long_windows_are_looked_at_in_parts() {
        // A day: 86,400 seconds in 512 parts of 169 s.
        let s = choose_in(&[], 0, 86_399, 0.25);
        assert!((21_500..21_700).contains(&s), "{s}");
        let crowded: Vec<(u64, u32)> = (0..86_400).step_by(100).map(|s| (s, 1)).collect();
        let s = choose_in(&crowded, 0, 86_399, 0.0);
        assert!(s < 86_400);
    }

    /// The property the pacer exists for: many tokens obtained at once, with
    /// windows that overlap, are planned at a near-even rate.
    #[tokio::test(start_paused = true)]
    async fn a_burst_of_tokens_is_planned_evenly() {
        let pacer = Pacer::new();
        let start = Instant::now();
        let window = super::super::schedule::refresh_window(
            Duration::from_secs(3600),
            None,
            Duration::from_secs(300),
        );
        for i in 0..3000 {
            let position = super::super::schedule::position(format!("t{i}").as_bytes());
            pacer.plan(start + window.start, start + window.end, position);
        }
        // 3000 refreshes over the 900 s window: 33 per 10 s on average.
        let mut busiest = 0;
        let mut emptiest = u32::MAX;
        for ten in 0..90 {
            let from = start + window.start + Duration::from_secs(ten * 10);
            let n = pacer.load_between(from, from + Duration::from_secs(10));
            busiest = busiest.max(n);
            emptiest = emptiest.min(n);
        }
        assert!(busiest <= 40 && emptiest >= 30, "{emptiest}..{busiest}");
    }

    #[tokio::test(start_paused = true)]
    async fn released_plans_free_their_second() {
        let pacer = Pacer::new();
        let now = Instant::now();
        let a = pacer.plan(
            now + Duration::from_secs(10),
            now + Duration::from_secs(10),
            0.0,
        );
        assert_eq!(pacer.load_between(now, now + Duration::from_secs(60)), 1);
        pacer.release(a);
        assert_eq!(pacer.load_between(now, now + Duration::from_secs(60)), 0);
        // Past seconds are forgotten when the next plan is made.
        pacer.plan(
            now + Duration::from_secs(5),
            now + Duration::from_secs(5),
            0.0,
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        pacer.plan(
            now + Duration::from_secs(40),
            now + Duration::from_secs(40),
            0.0,
        );
        assert_eq!(pacer.load_between(now, now + Duration::from_secs(30)), 0);
    }
}
