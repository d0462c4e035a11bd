//! The token cache: one slot per (tenant, resource), single-flight loads,
//! remembered failures, and background refresh ahead of expiry.
//!
//! - The map is a bounded moka cache of `Arc<Slot>`; it is touched only to
//!   find or create a slot, never held across I/O.
//! - Each slot has a small mutex (never held across an `.await`) over its
//!   state: the current token, the load in flight (a `watch` channel every
//!   waiter subscribes to, so one upstream result — token or error — reaches
//!   them all), and a remembered failure (throttling or a refusal) that is
//!   answered locally until it runs out.
//! - Loads run in their own task, so a caller that gives up does not cancel
//!   the load for the others.
//! - After its first token, a slot gets a refresher task that sleeps until
//!   [`schedule::refresh_delay`], refreshes while callers keep getting the
//!   current token, retries failures with [`schedule::retry_delay`] (keeping
//!   the old token), and drops the slot once nobody asked for `keep_warm`.
//!
//! The cache knows only a [`TokenSource`] and tokio's clock, so its
//! behaviour over simulated hours is tested with a fake source.

pub mod schedule;

use crate::authority::response::TokenResponse;
use crate::authority::AcquireError;
use crate::clock::SharedClock;
use crate::jitter::Jitter;
use crate::token::AccessToken;
use arc_swap::ArcSwapOption;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Where tokens come from (the authority client, or a test double).
pub trait TokenSource: Send + Sync + 'static {
    /// Fetches a new token for `key`.
    fn fetch(&self, key: &CacheKey) -> BoxFuture<Result<TokenResponse, AcquireError>>;
}

/// What a token is for. The tenant id is lower-cased so that
/// `Contoso.com` and `contoso.com` share a slot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// Tenant GUID or domain, lower case.
    pub tenant: String,
    /// Resource (audience) without `/.default`.
    pub resource: String,
}

impl CacheKey {
    /// The key for `tenant` and `resource`.
    pub fn new(tenant: &str, resource: &str) -> CacheKey {
        CacheKey {
            tenant: tenant.to_ascii_lowercase(),
            resource: resource.to_owned(),
        }
    }
}

/// Cache tuning (`[cache]`).
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    /// Hand out a token only with at least this much life left.
    pub min_remaining: Duration,
    /// Drop a slot nobody asked for this long.
    pub keep_warm: Duration,
    /// Remember a refusal this long.
    pub negative_ttl: Duration,
    /// Bound on slots.
    pub max_entries: u64,
    /// First retry delay after a failed background refresh.
    pub refresh_retry_base: Duration,
    /// Largest retry delay after failed background refreshes.
    pub refresh_retry_cap: Duration,
}

impl CacheSettings {
    /// The settings `[cache]` describes.
    pub fn from_config(config: &crate::config::CacheConfig) -> CacheSettings {
        CacheSettings {
            min_remaining: config.min_remaining.0,
            keep_warm: config.keep_warm.0,
            negative_ttl: config.negative_ttl.0,
            max_entries: config.max_entries,
            refresh_retry_base: schedule::RETRY_BASE,
            refresh_retry_cap: schedule::RETRY_CAP,
        }
    }
}

/// A token in the cache.
#[derive(Debug, Clone)]
pub struct CachedToken {
    /// The token.
    pub access_token: AccessToken,
    /// When it stops being valid (monotonic).
    pub expires_at: Instant,
    /// When it stops being valid, in unix seconds (for callers).
    pub expires_on: u64,
    /// When it was obtained, in unix seconds (`not_before` for callers).
    pub obtained_on: u64,
}

impl CachedToken {
    /// Life left at `now`.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.expires_at.saturating_duration_since(now)
    }
}

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
    /// The metric label.
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
    /// The number of slots holding a token changed.
    fn token_stored(&self, _key: &CacheKey, _token: &CachedToken) {}
}

/// An observer that records nothing.
#[derive(Debug, Default)]
pub struct NoObserver;
impl CacheObserver for NoObserver {}

type Outcome = Result<Arc<CachedToken>, AcquireError>;

#[derive(Debug)]
struct Blocked {
    error: AcquireError,
    until: Instant,
}

/// The parts of a slot that change only when a load starts or ends; guarded
/// by the slot's mutex. (The current token is outside it: see [`Slot`].)
#[derive(Default)]
struct SlotState {
    in_flight: Option<watch::Receiver<Option<Outcome>>>,
    blocked: Option<Blocked>,
    /// Consecutive failed loads since the last success.
    failures: u32,
    /// When the refresher should next refresh.
    next_refresh: Option<Instant>,
    refresher_started: bool,
}

/// One (tenant, resource). A cache hit takes no lock and writes no shared
/// memory but a reference count: the current token is published through an
/// `ArcSwap`, "a load is in flight" is mirrored in an atomic, and the last
/// access is an atomic written at most once a second. Every worker thread
/// serving one busy tenant hits the same slot, so a mutex here would be
/// contended on every request.
struct Slot {
    key: CacheKey,
    /// The newest token; replaced (never cleared) by successful loads.
    current: ArcSwapOption<CachedToken>,
    /// Mirrors `state.in_flight.is_some()` for the lock-free path; written
    /// under the state lock.
    loading: AtomicBool,
    /// Last access, in milliseconds since `epoch`.
    last_access_ms: AtomicU64,
    epoch: Instant,
    state: Mutex<SlotState>,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        // A panic while holding this lock cannot leave the state torn (every
        // update is a plain assignment), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn touch(&self, now: Instant) {
        let ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        // Write only when a second has passed, so hot slots stay unshared.
        if self
            .last_access_ms
            .load(Ordering::Relaxed)
            .saturating_add(1000)
            <= ms
        {
            self.last_access_ms.store(ms, Ordering::Relaxed);
        }
    }

    fn idle_since(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_access_ms.load(Ordering::Relaxed))
    }

    /// The current token if it has at least `min_remaining` left at `now`.
    fn usable(&self, now: Instant, min_remaining: Duration) -> Option<Arc<CachedToken>> {
        self.current
            .load_full()
            .filter(|token| token.remaining(now) >= min_remaining)
    }
}

struct Inner {
    slots: moka::sync::Cache<CacheKey, Arc<Slot>>,
    source: Arc<dyn TokenSource>,
    settings: CacheSettings,
    clock: SharedClock,
    jitter: Jitter,
    observer: Arc<dyn CacheObserver>,
}

/// The token cache. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct TokenCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("entries", &self.inner.slots.entry_count())
            .field("settings", &self.inner.settings)
            .finish()
    }
}

/// A token handed to a caller, and how it was found.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The token.
    pub token: Arc<CachedToken>,
    /// Hit, refreshing or miss.
    pub lookup: Lookup,
}

impl TokenCache {
    /// A cache loading from `source`.
    pub fn new(
        source: Arc<dyn TokenSource>,
        settings: CacheSettings,
        clock: SharedClock,
        jitter: Jitter,
        observer: Arc<dyn CacheObserver>,
    ) -> TokenCache {
        TokenCache {
            inner: Arc::new(Inner {
                slots: moka::sync::Cache::builder()
                    .max_capacity(settings.max_entries)
                    // A backstop for slots without a refresher (a tenant
                    // that never got a token); refreshers drop their own.
                    .time_to_idle(settings.keep_warm)
                    .build(),
                source,
                settings,
                clock,
                jitter,
                observer,
            }),
        }
    }

    /// A token for `key` with at least `min_remaining` left: the cached one,
    /// or one from the load in flight, or from a new load.
    pub async fn get(&self, key: &CacheKey) -> Result<Grant, AcquireError> {
        let inner = &self.inner;
        let slot = inner
            .slots
            .get_with_by_ref(key, || Arc::new(Slot::new(key.clone())));
        let now = Instant::now();
        slot.touch(now);
        let hit = |token| {
            let lookup = if slot.loading.load(Ordering::Acquire) {
                Lookup::Refreshing
            } else {
                Lookup::Hit
            };
            inner.observer.lookup(lookup);
            Ok(Grant { token, lookup })
        };
        // The hot path: no lock.
        if let Some(token) = slot.usable(now, inner.settings.min_remaining) {
            return hit(token);
        }
        let mut receiver = {
            let mut state = slot.lock();
            // A load may have finished since the look above.
            if let Some(token) = slot.usable(now, inner.settings.min_remaining) {
                return hit(token);
            }
            if let Some(blocked) = &state.blocked {
                if now < blocked.until {
                    inner.observer.lookup(Lookup::Miss);
                    return Err(blocked.error.with_retry_after(blocked.until - now));
                }
                state.blocked = None;
            }
            match &state.in_flight {
                Some(receiver) => receiver.clone(),
                None => Inner::start_load(inner, &slot, &mut state, Trigger::Demand),
            }
        };
        inner.observer.lookup(Lookup::Miss);
        let outcome = wait(&mut receiver, &key.tenant).await?;
        let token = outcome?;
        if token.remaining(Instant::now()) < inner.settings.min_remaining {
            return Err(AcquireError::Unavailable {
                tenant: key.tenant.clone(),
                reason: format!(
                    "Entra issued a token with only {} s of life, less than cache.min_remaining ({} s); lower cache.min_remaining",
                    token.remaining(Instant::now()).as_secs(),
                    inner.settings.min_remaining.as_secs()
                ),
                entra: None,
            });
        }
        Ok(Grant {
            token,
            lookup: Lookup::Miss,
        })
    }

    /// Starts loading `keys` in the background (configured tenants at start);
    /// returns at once. Upstream concurrency is bounded by the source.
    pub fn prefetch(&self, keys: Vec<CacheKey>) {
        for key in keys {
            let cache = self.clone();
            tokio::spawn(async move {
                if let Err(e) = cache.get(&key).await {
                    tracing::warn!(tenant = %key.tenant, resource = %key.resource, "prefetch failed: {e}");
                }
            });
        }
    }

    /// Number of slots (tenants × resources) in the cache.
    pub fn len(&self) -> u64 {
        self.inner.slots.run_pending_tasks();
        self.inner.slots.entry_count()
    }

    /// Whether the cache has no slots.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of cached tokens that are still valid (for the gauge).
    pub fn token_count(&self) -> usize {
        let now = Instant::now();
        self.inner
            .slots
            .iter()
            .filter(|(_, slot)| {
                slot.current
                    .load()
                    .as_ref()
                    .is_some_and(|t| t.expires_at > now)
            })
            .count()
    }

    /// Whether `key` has a slot.
    pub fn contains(&self, key: &CacheKey) -> bool {
        self.inner.slots.contains_key(key)
    }
}

/// Waits for a load's outcome.
async fn wait(
    receiver: &mut watch::Receiver<Option<Outcome>>,
    tenant: &str,
) -> Result<Outcome, AcquireError> {
    match receiver.wait_for(Option::is_some).await {
        Ok(outcome) => Ok(outcome
            .clone()
            .unwrap_or_else(|| unreachable_outcome(tenant))),
        Err(_) => Err(AcquireError::Unavailable {
            tenant: tenant.to_owned(),
            reason: "the token load ended without a result (shutting down)".into(),
            entra: None,
        }),
    }
}

fn unreachable_outcome(tenant: &str) -> Outcome {
    Err(AcquireError::Unavailable {
        tenant: tenant.to_owned(),
        reason: "the token load ended without a result".into(),
        entra: None,
    })
}

impl Slot {
    fn new(key: CacheKey) -> Slot {
        Slot {
            key,
            current: ArcSwapOption::empty(),
            loading: AtomicBool::new(false),
            last_access_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            state: Mutex::new(SlotState::default()),
        }
    }
}

impl Inner {
    /// Starts a load for `slot` in its own task; the caller holds the slot's
    /// lock and has checked that none is in flight.
    fn start_load(
        this: &Arc<Inner>,
        slot: &Arc<Slot>,
        state: &mut SlotState,
        trigger: Trigger,
    ) -> watch::Receiver<Option<Outcome>> {
        let (sender, receiver) = watch::channel(None);
        state.in_flight = Some(receiver.clone());
        slot.loading.store(true, Ordering::Release);
        this.observer.load_started(trigger);
        let inner = Arc::clone(this);
        let slot = Arc::clone(slot);
        tokio::spawn(async move {
            let result = inner.source.fetch(&slot.key).await;
            let outcome = inner.finish_load(&slot, result);
            // Nobody listening is fine: the result is in the slot.
            let _ = sender.send(Some(outcome));
        });
        receiver
    }

    /// Records a load's result in the slot and schedules what follows.
    fn finish_load(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        result: Result<TokenResponse, AcquireError>,
    ) -> Outcome {
        let now = Instant::now();
        let mut state = slot.lock();
        state.in_flight = None;
        slot.loading.store(false, Ordering::Release);
        match result {
            Ok(response) => {
                let wall = self.clock.unix_now();
                let token = Arc::new(CachedToken {
                    access_token: response.access_token,
                    expires_at: now + response.expires_in,
                    expires_on: wall + response.expires_in.as_secs(),
                    obtained_on: wall,
                });
                let delay = schedule::refresh_delay(
                    response.expires_in,
                    response.refresh_in,
                    self.settings.min_remaining,
                    self.jitter.symmetric(),
                );
                slot.current.store(Some(Arc::clone(&token)));
                state.blocked = None;
                state.failures = 0;
                state.next_refresh = Some(now + delay);
                self.observer.token_stored(&slot.key, &token);
                if !state.refresher_started {
                    state.refresher_started = true;
                    tokio::spawn(refresher(Arc::clone(self), Arc::clone(slot)));
                }
                Ok(token)
            }
            Err(error) => {
                state.failures = state.failures.saturating_add(1);
                let hold = error.hold_for(self.settings.negative_ttl);
                if let Some(hold) = hold {
                    state.blocked = Some(Blocked {
                        error: error.clone(),
                        until: now + hold,
                    });
                }
                // Retry the refresh with backoff, and not before a throttle ends.
                let retry = now
                    + schedule::retry_delay(
                        state.failures,
                        self.jitter.unit(),
                        self.settings.refresh_retry_base,
                        self.settings.refresh_retry_cap,
                    );
                state.next_refresh = Some(match hold {
                    Some(hold) => retry.max(now + hold),
                    None => retry,
                });
                let keeps_token = slot.usable(now, self.settings.min_remaining).is_some();
                tracing::warn!(tenant = %slot.key.tenant, resource = %slot.key.resource,
                    failures = state.failures, keeps_token, "token load failed: {error}");
                Err(error)
            }
        }
    }

    fn still_cached(&self, slot: &Arc<Slot>) -> bool {
        self.slots
            .get(&slot.key)
            .is_some_and(|current| Arc::ptr_eq(&current, slot))
    }
}

/// The background refresher of one slot: refresh on schedule, drop when idle.
async fn refresher(inner: Arc<Inner>, slot: Arc<Slot>) {
    loop {
        let next = slot.lock().next_refresh;
        let Some(next) = next else { return };
        tokio::time::sleep_until(next).await;
        if !inner.still_cached(&slot) {
            return; // evicted for capacity; a new slot will be made on demand
        }
        let now = Instant::now();
        if now.saturating_duration_since(slot.idle_since()) >= inner.settings.keep_warm {
            inner.slots.invalidate(&slot.key);
            tracing::debug!(tenant = %slot.key.tenant, resource = %slot.key.resource, "dropped: unused for keep_warm");
            return;
        }
        let mut receiver = {
            let mut state = slot.lock();
            if state.next_refresh.is_some_and(|n| n > now) {
                continue; // a demand load succeeded meanwhile and rescheduled
            }
            match &state.in_flight {
                Some(receiver) => receiver.clone(),
                None => Inner::start_load(&inner, &slot, &mut state, Trigger::Background),
            }
        };
        // The outcome is recorded in the slot by the load itself.
        let _ = wait(&mut receiver, &slot.key.tenant).await;
    }
}

#[cfg(test)]
mod tests;
