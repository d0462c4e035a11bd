//! What the cache reports (lookups, loads, refreshes): hooks for metrics,
//! all no-ops by default.

use super::{CacheKey, CachedToken};

/// How a lookup was answered (the `result` label of the lookups metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A cached token, no refresh running.
    Hit,
    /// A cached token, while a refresh for it is in flight.
    Refreshing,
    /// The caller waited for an upstream request (started or joined).
    Miss,
}

impl Lookup {
    pub fn as_str(self) -> &'static str {
        match self {
            Lookup::Hit => "hit",
            Lookup::Refreshing => "refreshing",
            Lookup::Miss => "miss",
        }
    }
}

/// Why a load ran (the `trigger` label of the refreshes metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A caller found no usable token.
    Demand,
    /// The refresher's schedule.
    Background,
}

/// Hooks for metrics; all no-ops by default.
pub trait CacheObserver: Send + Sync + std::fmt::Debug + 'static {
    /// A lookup was answered.
    fn lookup(&self, _result: Lookup) {}
    /// A load started.
    fn load_started(&self, _trigger: Trigger) {}
    /// A load succeeded and stored `token` for `key` (every successful load).
    fn token_stored(&self, _key: &CacheKey, _token: &CachedToken) {}
    /// A caller's rejected-token hash forced a refresh.
    fn forced_by_hash(&self) {}
    /// `key`'s token left the cache (idle, evicted, or its tenant left).
    fn dropped(&self, _key: &CacheKey) {}
}

/// An observer that records nothing.
#[derive(Debug, Default)]
pub struct NoObserver;
impl CacheObserver for NoObserver {}
