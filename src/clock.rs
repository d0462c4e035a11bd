//! Time, injected.
//!
//! Scheduling and expiry use `tokio::time::Instant` (monotonic, and frozen or
//! advanced at will under `tokio::time::pause`). Wall-clock time is needed
//! only where it leaves the process: assertion `nbf`/`exp` and `expires_on`.
//! That comes from a [`Clock`], so tests can run hours of simulated time.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;

    /// The current wall-clock time in whole unix seconds.
    fn unix_now(&self) -> u64 {
        unix_seconds(self.now())
    }
}

/// Whole unix seconds of `t` (0 before 1970).
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// The shared handle the rest of the crate holds.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Wall-clock time that follows tokio's clock: it starts at a given instant
/// and advances exactly as `tokio::time::Instant` does, so paused-time tests
/// see consistent wall and monotonic time.
#[derive(Debug, Clone)]
pub struct TokioClock {
    base_wall: SystemTime,
    base_instant: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that reads `start` now.
    pub fn starting_at(start: SystemTime) -> TokioClock {
        TokioClock {
            base_wall: start,
            base_instant: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> SystemTime {
        self.base_wall + self.base_instant.elapsed()
    }
}
