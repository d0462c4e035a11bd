//! Repeated log lines, once a minute with a count. One failure of Entra or
//! of the listener can hit every tenant or every accept at once; a line per
//! occurrence buries the log (hundreds of identical lines a second). The
//! first of a kind is logged at once; the rest of its minute are counted
//! and the count rides on the next line of that kind.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Kinds remembered at once; past it the oldest window is forgotten (its
/// next line is logged as if new).
const MAX_KINDS: usize = 256;

/// Decides which occurrences of each kind of line are written.
#[derive(Debug)]
pub struct LogLimit {
    window: Duration,
    kinds: Mutex<HashMap<String, Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    suppressed: u64,
}

impl LogLimit {
    /// At most one line per kind per `window`.
    pub fn new(window: Duration) -> LogLimit {
        LogLimit {
            window,
            kinds: Mutex::new(HashMap::new()),
        }
    }

    /// Whether to write this occurrence of `kind` at `now`: `Some(n)` with
    /// the number of occurrences held back since the last line written,
    /// `None` to hold this one back.
    pub fn admit(&self, kind: &str, now: Instant) -> Option<u64> {
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(window) = kinds.get_mut(kind) {
            if now.saturating_duration_since(window.started) < self.window {
                window.suppressed = window.suppressed.saturating_add(1);
                return None;
            }
            let held = window.suppressed;
            *window = Window {
                started: now,
                suppressed: 0,
            };
            return Some(held);
        }
        if kinds.len() >= MAX_KINDS {
            if let Some(oldest) = kinds
                .iter()
                .min_by_key(|(_, w)| w.started)
                .map(|(k, _)| k.clone())
            {
                kinds.remove(&oldest);
            }
        }
        kinds.insert(
            kind.to_owned(),
            Window {
                started: now,
                suppressed: 0,
            },
        );
        Some(0)
    }
}

/// Whether to write this occurrence of `kind` now, under the limit the
/// daemon's own repeated warnings share (one line a minute per kind); see
/// [`LogLimit::admit`].
pub fn admit(kind: &str) -> Option<u64> {
    static LIMIT: std::sync::OnceLock<LogLimit> = std::sync::OnceLock::new();
    LIMIT
        .get_or_init(|| LogLimit::new(Duration::from_secs(60)))
        .admit(kind, Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_per_kind_per_window_with_the_count_held_back() {
        let limit = LogLimit::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(limit.admit("tls", t0), Some(0));
        for i in 1..=300 {
            assert_eq!(
                limit.admit("tls", t0 + Duration::from_millis(100 * i)),
                None
            );
        }
        // Another kind is not held back by the first.
        assert_eq!(limit.admit("accept", t0 + Duration::from_secs(1)), Some(0));
        assert_eq!(limit.admit("tls", t0 + Duration::from_secs(60)), Some(300));
        assert_eq!(limit.admit("tls", t0 + Duration::from_secs(61)), None);
        assert_eq!(limit.admit("tls", t0 + Duration::from_secs(200)), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn the_kinds_remembered_are_bounded() {
        let limit = LogLimit::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..(MAX_KINDS as u64 + 50) {
            assert_eq!(
                limit.admit(&format!("k{i}"), t0 + Duration::from_millis(i)),
                Some(0)
            );
        }
        assert_eq!(limit.kinds.lock().unwrap().len(), MAX_KINDS);
        // The newest are still held back; the oldest were forgotten.
        assert_eq!(
            limit.admit(&format!("k{}", MAX_KINDS + 49), t0 + Duration::from_secs(1)),
            None
        );
        assert_eq!(limit.admit("k0", t0 + Duration::from_secs(1)), Some(0));
    }
}
