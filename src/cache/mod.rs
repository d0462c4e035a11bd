//! The token cache: one slot per (tenant, resource), single-flight loads,
//! remembered failures, and background refresh ahead of expiry.
//!
//! - The map is a bounded, sharded hash map of `Arc<Slot>` ([`slots`]); it
//!   is touched only to find or create a slot, never held across I/O.
//! - Each slot has a small mutex (never held across an `.await`) over its
//!   state: the current token, the load in flight (a `watch` channel every
//!   waiter subscribes to, so one upstream result — token or error — reaches
//!   them all), and a remembered failure (throttling or a refusal) that is
//!   answered locally until it runs out.
//! - Loads run in their own task, so a caller that gives up does not cancel
//!   the load for the others.
//! - After its first token, a slot is refreshed in the background: one
//!   timer task for all slots wakes each at its place in
//!   [`schedule::refresh_window`] (chosen by the [`pacing::Pacer`]),
//!   refreshes while callers keep getting the current token, retries
//!   failures with [`schedule::REFRESH_RETRY`] (keeping the old token), and
//!   drops the slot once nobody asked for `keep_warm`.
//!
//! - No caller waits longer than `load_timeout` ([`CacheError::Deadline`]);
//!   the load itself goes on and its result serves the next caller.
//!
//! The cache knows only a [`TokenSource`], tokio's clock and a wall
//! [`Clock`](crate::clock::Clock): nothing of HTTP or Entra. Which failures it
//! remembers, and for how long, is its own rule ([`schedule::hold_for`]) over
//! the [`FailureKind`] a source's error reports. Its behaviour over simulated
//! hours is tested with a fake source.

mod load;
mod observe;
pub mod pacing;
pub mod schedule;
mod slots;
mod source;
mod types;

pub use observe::{CacheObserver, Lookup, NoObserver, Trigger};
pub use source::{
    BoxFuture, CacheError, FailureKind, Fetched, LoadContext, LoadError, TokenSource,
};
pub use types::{CacheKey, CacheSettings, CachedToken};

use crate::clock::SharedClock;
use crate::config::TenantId;
use crate::jitter::Jitter;
use arc_swap::{ArcSwap, ArcSwapOption};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

type Outcome<E> = Result<Arc<CachedToken>, E>;

#[derive(Debug)]
struct Blocked<E> {
    error: E,
    until: Instant,
}

impl<E: LoadError> Blocked<E> {
    fn is_throttle(&self) -> bool {
        matches!(self.error.kind(), FailureKind::Throttled(_))
    }
}

/// The parts of a slot that change only when a load starts or ends; guarded
/// by the slot's mutex. (The current token is outside it: see [`Slot`].)
struct SlotState<E> {
    in_flight: Option<watch::Receiver<Option<Outcome<E>>>>,
    /// Boxed: most slots never hold one, and every slot pays for the space.
    blocked: Option<Box<Blocked<E>>>,
    /// Consecutive failed loads since the last success.
    failures: u32,
    /// Loads that brought a token, and loads that failed, so far.
    fetched: (u32, u32),
    /// When the background refresh should next run.
    next_refresh: Option<Instant>,
    /// Its place in the pacer, released when it is replaced.
    planned: Option<pacing::Planned>,
    /// The timer refreshes this slot (it had a token, or it heals).
    refresher_started: bool,
    /// When a rejected token's hash last forced a refresh.
    last_forced: Option<Instant>,
}

/// One (tenant, resource). A cache hit takes no lock and writes no shared
/// memory but a reference count: the current token is published through an
/// `ArcSwap`, "a load is in flight" is mirrored in an atomic, and the last
/// access is an atomic written at most once a second. Every worker thread
/// serving one busy tenant hits the same slot, so a mutex here would be
/// contended on every request.
struct Slot<E> {
    key: CacheKey,
    /// The newest token; replaced (never cleared) by successful loads.
    current: ArcSwapOption<CachedToken>,
    /// Mirrors `state.in_flight.is_some()` for the lock-free path; written
    /// under the state lock.
    loading: AtomicBool,
    /// Last access, in milliseconds since the cache's epoch.
    last_access_ms: AtomicU64,
    state: Mutex<SlotState<E>>,
}

impl<E> slots::LastUsed for Arc<Slot<E>> {
    fn last_used(&self) -> u64 {
        self.last_access_ms.load(Ordering::Relaxed)
    }
}

impl<E> Slot<E> {
    fn lock(&self) -> MutexGuard<'_, SlotState<E>> {
        // A panic while holding this lock cannot leave the state torn (every
        // update is a plain assignment), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks it used at `now`; `epoch` is the cache's.
    fn touch(&self, now: Instant, epoch: Instant) {
        let ms =
            u64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX);
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

    fn idle_since(&self, epoch: Instant) -> Instant {
        epoch + Duration::from_millis(self.last_access_ms.load(Ordering::Relaxed))
    }

    /// The current token if it has at least its floor of life left at
    /// `now` (`min_remaining`, or a quarter of its lifetime if less).
    fn usable(&self, now: Instant, min_remaining: Duration) -> Option<Arc<CachedToken>> {
        self.current
            .load_full()
            .filter(|token| token.remaining(now) >= token.floor(min_remaining))
    }
}

struct Inner<E: LoadError> {
    slots: slots::Slots<Arc<Slot<E>>>,
    source: Arc<dyn TokenSource<Error = E>>,
    /// Swapped by a reload (all but `max_entries`, fixed at start).
    settings: ArcSwap<CacheSettings>,
    clock: SharedClock,
    jitter: Jitter,
    pacer: pacing::Pacer,
    observer: Arc<dyn CacheObserver>,
    /// Bumped whenever a token is stored or dropped (the state file is
    /// rewritten only when it moved).
    changes: AtomicU64,
    /// Told of every change as `changes` is (token files are rewritten
    /// when their token changed, without polling the cache for it).
    changed: watch::Sender<()>,
    /// When each slot's background refresh is due.
    timers: load::Timers<E>,
    /// What slots count their last use from.
    epoch: Instant,
}

/// The token cache. Cheap to clone; clones share the cache.
pub struct TokenCache<E: LoadError> {
    inner: Arc<Inner<E>>,
}

impl<E: LoadError> Clone for TokenCache<E> {
    fn clone(&self) -> Self {
        TokenCache {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<E: LoadError> std::fmt::Debug for TokenCache<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("entries", &self.inner.slots.entry_count())
            .field("settings", &**self.inner.settings.load())
            .finish()
    }
}

/// A token handed to a caller, and how it was found.
#[derive(Debug, Clone)]
pub struct Grant {
    pub token: Arc<CachedToken>,
    /// Hit, refreshing or miss.
    pub lookup: Lookup,
}

impl<E: LoadError> TokenCache<E> {
    /// A cache loading from `source`.
    pub fn new(
        source: Arc<dyn TokenSource<Error = E>>,
        settings: CacheSettings,
        clock: SharedClock,
        jitter: Jitter,
        observer: Arc<dyn CacheObserver>,
    ) -> TokenCache<E> {
        let epoch = Instant::now();
        TokenCache {
            inner: Arc::new(Inner {
                // `keep_warm` is a backstop for slots the timer does not
                // refresh (a tenant that never got a token); it drops its own.
                slots: slots::Slots::new(settings.max_entries, settings.keep_warm, epoch, {
                    let observer = Arc::clone(&observer);
                    Arc::new(move |key: &CacheKey| observer.dropped(key))
                }),
                source,
                settings: ArcSwap::from_pointee(settings),
                clock,
                jitter,
                pacer: pacing::Pacer::new(),
                observer,
                changes: AtomicU64::new(0),
                changed: watch::Sender::new(()),
                timers: load::Timers::new(),
                epoch,
            }),
        }
    }

    /// A token for `key` with at least `min_remaining` left: the cached one,
    /// or one from the load in flight, or from a new load.
    pub async fn get(&self, key: &CacheKey) -> Result<Grant, CacheError<E>> {
        self.lookup(key, None).await
    }

    /// As [`get`](Self::get), for a caller whose resource rejected the token
    /// with SHA-256 `rejected`: if the cached token is that one, a new one is
    /// fetched first — one load however many callers send the hash, at most
    /// one per `forced_refresh_interval` (within it the current token is
    /// answered). Another hash gets the cached token, already newer.
    pub async fn get_replacing(
        &self,
        key: &CacheKey,
        rejected: &[u8; 32],
    ) -> Result<Grant, CacheError<E>> {
        self.lookup(key, Some(rejected)).await
    }

    async fn lookup(
        &self,
        key: &CacheKey,
        rejected: Option<&[u8; 32]>,
    ) -> Result<Grant, CacheError<E>> {
        let inner = &self.inner;
        let settings = inner.settings.load();
        let (slot, now) = self.touch(key);
        let hit = |token| {
            let lookup = if slot.loading.load(Ordering::Acquire) {
                Lookup::Refreshing
            } else {
                Lookup::Hit
            };
            inner.observer.lookup(lookup);
            Ok(Grant { token, lookup })
        };
        let is_rejected = |token: &CachedToken| rejected.is_some_and(|h| *h == token.sha256);
        // The hot path: no lock.
        if let Some(token) = slot.usable(now, settings.min_remaining) {
            if !is_rejected(&token) {
                return hit(token);
            }
        }
        let mut receiver = {
            let mut state = slot.lock();
            let usable = slot.usable(now, settings.min_remaining);
            match &usable {
                // A load may have finished since the look above.
                Some(token) if !is_rejected(token) => return hit(Arc::clone(token)),
                // The caller saw this token rejected.
                Some(token) => {
                    let recent = state.last_forced.is_some_and(|at| {
                        now.saturating_duration_since(at) < settings.forced_refresh_interval
                    });
                    if recent && state.in_flight.is_none() {
                        // One forced refresh per interval: answer the current token.
                        let token = Arc::clone(token);
                        drop(state);
                        return hit(token);
                    }
                }
                None => {}
            }
            if let Some(blocked) = &state.blocked {
                if now < blocked.until {
                    inner.observer.lookup(Lookup::Miss);
                    return Err(CacheError::Load(
                        blocked.error.with_retry_after(blocked.until - now),
                    ));
                }
                state.blocked = None;
            }
            match &state.in_flight {
                Some(receiver) => receiver.clone(),
                None => {
                    // A shared cache must not hand back the token the caller
                    // saw rejected, even when this host never held it.
                    let load = LoadContext {
                        rejected: rejected.copied(),
                        ..LoadContext::default()
                    };
                    if usable.is_some() {
                        state.last_forced = Some(now);
                        inner.observer.forced_by_hash();
                    }
                    Inner::start_load(inner, &slot, &mut state, Trigger::Demand, load)
                }
            }
        };
        inner.observer.lookup(Lookup::Miss);
        self.await_load(key, &mut receiver, &settings).await
    }

    /// The slot of `key` (made when missing), marked as used now.
    fn touch(&self, key: &CacheKey) -> (Arc<Slot<E>>, Instant) {
        let slot = self.inner.slots.get_with(key, || {
            Arc::new(Slot::new(key.clone(), Instant::now(), self.inner.epoch))
        });
        let now = Instant::now();
        slot.touch(now, self.inner.epoch);
        (slot, now)
    }

    /// Waits for a load (at most `load_timeout`; the load itself goes on).
    async fn await_load(
        &self,
        key: &CacheKey,
        receiver: &mut watch::Receiver<Option<Outcome<E>>>,
        settings: &CacheSettings,
    ) -> Result<Grant, CacheError<E>> {
        // The load runs in its own task: a caller that gives up at the
        // deadline leaves it running for the next one.
        let deadline = settings.load_timeout;
        let outcome = tokio::time::timeout(deadline, wait(receiver, &key.tenant))
            .await
            .map_err(|_| CacheError::Deadline {
                tenant: (*key.tenant).clone(),
                after: deadline,
            })??;
        let token = outcome.map_err(CacheError::Load)?;
        let remaining = token.remaining(Instant::now());
        if remaining < token.floor(settings.min_remaining) {
            return Err(CacheError::TooShortLived {
                tenant: (*key.tenant).clone(),
                remaining,
                min_remaining: settings.min_remaining,
            });
        }
        Ok(Grant {
            token,
            lookup: Lookup::Miss,
        })
    }

    /// Fetches a new token for `key` now (the admin's refresh), past the
    /// cached token and any remembered refusal; a throttle (Retry-After)
    /// is still honoured.
    pub async fn refresh(&self, key: &CacheKey) -> Result<Grant, CacheError<E>> {
        let inner = &self.inner;
        let settings = inner.settings.load();
        let (slot, now) = self.touch(key);
        let mut receiver = {
            let mut state = slot.lock();
            if let Some(blocked) = &state.blocked {
                if blocked.is_throttle() && now < blocked.until {
                    return Err(CacheError::Load(
                        blocked.error.with_retry_after(blocked.until - now),
                    ));
                }
                state.blocked = None;
            }
            match &state.in_flight {
                Some(receiver) => receiver.clone(),
                None => {
                    let load = LoadContext {
                        forced: true,
                        ..LoadContext::default()
                    };
                    Inner::start_load(inner, &slot, &mut state, Trigger::Demand, load)
                }
            }
        };
        self.await_load(key, &mut receiver, &settings).await
    }

    /// Drops the cached token and remembered refusal of `key`, and stops its
    /// background refresh; a throttle (Retry-After) stays. Returns whether
    /// there was anything cached.
    pub fn evict(&self, key: &CacheKey) -> bool {
        let Some(slot) = self.inner.slots.get(key) else {
            return false;
        };
        let throttle = {
            let mut state = slot.lock();
            state.next_refresh = None;
            if let Some(planned) = state.planned.take() {
                self.inner.pacer.release(planned);
            }
            state.blocked.take().filter(|b| b.is_throttle())
        };
        match throttle {
            // A fresh slot holding only the throttle; the old slot's
            // timer sees it is no longer cached and leaves it.
            Some(blocked) => {
                let fresh = Slot::new(key.clone(), Instant::now(), self.inner.epoch);
                fresh.lock().blocked = Some(blocked);
                self.inner.slots.insert(key.clone(), Arc::new(fresh));
            }
            None => self.inner.slots.invalidate(key),
        }
        self.inner.observer.dropped(key);
        self.inner.changed();
        true
    }

    /// Drops every token (the app identity changed: they belong to another app).
    pub fn clear(&self) {
        for key in self.keys() {
            self.inner.observer.dropped(&key);
        }
        self.inner.slots.invalidate_all();
        self.inner.changed();
    }

    /// Drops the entries whose key `keep` refuses (a reload removed their
    /// tenant or resource).
    pub fn retain(&self, keep: impl Fn(&CacheKey) -> bool) -> usize {
        let gone: Vec<CacheKey> = self
            .inner
            .slots
            .entries()
            .into_iter()
            .filter(|(key, _)| !keep(key))
            .map(|(key, _)| key)
            .collect();
        for key in &gone {
            self.inner.slots.invalidate(key);
            self.inner.observer.dropped(key);
        }
        self.inner.changed();
        gone.len()
    }

    /// The tuning in force.
    pub fn settings(&self) -> CacheSettings {
        **self.inner.settings.load()
    }

    /// The (app, tenant) pairs the configuration names (each configured
    /// tenant with each app it consented to): their slots have a bound of
    /// their own, so unconfigured tenants never push them out, and they
    /// heal when their fetch failed.
    pub fn set_configured(
        &self,
        pairs: impl IntoIterator<Item = (crate::config::AppKey, TenantId)>,
    ) {
        self.inner.slots.set_configured(pairs);
    }

    /// Puts new tuning in force (`max_entries` needs a restart).
    pub fn set_settings(&self, settings: CacheSettings) {
        self.inner.settings.store(Arc::new(settings));
    }

    /// The keys in the cache.
    pub fn keys(&self) -> Vec<CacheKey> {
        self.inner
            .slots
            .entries()
            .into_iter()
            .map(|(key, _)| key)
            .collect()
    }

    /// What the cache holds for `key`, without touching it.
    pub fn inspect(&self, key: &CacheKey) -> Option<SlotView> {
        let slot = self.inner.slots.get(key)?;
        let state = slot.lock();
        Some(SlotView {
            token: slot.current.load_full(),
            next_refresh: state.next_refresh,
            loading: state.in_flight.is_some(),
            fetched: state.fetched,
        })
    }

    /// Starts loading `keys` in the background (configured tenants at start);
    /// returns at once. Upstream concurrency is bounded by the source.
    pub fn prefetch(&self, keys: Vec<CacheKey>) {
        for key in keys {
            let cache = self.clone();
            tokio::spawn(async move {
                if let Err(e) = cache.get(&key).await {
                    let text = e.to_string();
                    let kind = format!("prefetch: {}", e.log_kind());
                    if let Some(held_back) = crate::log_limit::admit(&kind) {
                        tracing::warn!(tenant = %key.tenant, resource = %key.resource, held_back,
                            "prefetch failed: {text}");
                    }
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
            .entries()
            .into_iter()
            .filter(|(_, slot)| {
                slot.current
                    .load()
                    .as_ref()
                    .is_some_and(|t| t.expires_at > now)
            })
            .count()
    }

    /// Whether a lookup of `key` now would send a fetch upstream: no usable
    /// token, no load in flight to join, no remembered failure answering
    /// for it. (What an account's budget of new tenants is charged for.)
    pub fn would_fetch(&self, key: &CacheKey) -> bool {
        let Some(slot) = self.inner.slots.get(key) else {
            return true;
        };
        let now = Instant::now();
        if slot
            .usable(now, self.inner.settings.load().min_remaining)
            .is_some()
        {
            return false;
        }
        let state = slot.lock();
        state.in_flight.is_none() && state.blocked.as_ref().is_none_or(|b| now >= b.until)
    }

    /// Puts a token kept from an earlier run (the state file) in place of
    /// an empty slot, as if it had just been loaded: served at once, and
    /// refreshed on its schedule. Returns whether it was put in (a slot
    /// that has a token or a load already is left alone).
    pub fn restore(&self, key: &CacheKey, fetched: Fetched) -> bool {
        let (slot, _) = self.touch(key);
        {
            let state = slot.lock();
            if slot.current.load().is_some() || state.in_flight.is_some() {
                return false;
            }
        }
        self.inner.finish_load(&slot, Ok(fetched), false).is_ok()
    }

    /// Every cached token, with its key (for the state file).
    pub fn tokens(&self) -> Vec<(CacheKey, Arc<CachedToken>)> {
        self.inner
            .slots
            .entries()
            .into_iter()
            .filter_map(|(key, slot)| Some((key, slot.current.load_full()?)))
            .collect()
    }

    /// How many times a token was stored or dropped so far.
    pub fn changes(&self) -> u64 {
        self.inner.changes.load(Ordering::Relaxed)
    }

    /// Marked changed whenever a token is stored or dropped.
    pub fn watch_changes(&self) -> watch::Receiver<()> {
        self.inner.changed.subscribe()
    }

    /// Whether `key` has a slot.
    pub fn contains(&self, key: &CacheKey) -> bool {
        self.inner.slots.contains_key(key)
    }
}

/// What the cache holds for one key (for the admin status).
#[derive(Debug, Clone)]
pub struct SlotView {
    pub token: Option<Arc<CachedToken>>,
    /// When the background refresh is due.
    pub next_refresh: Option<Instant>,
    pub loading: bool,
    /// Loads that brought a token, and loads that failed.
    pub fetched: (u32, u32),
}

/// Waits for a load's outcome.
async fn wait<E: LoadError>(
    receiver: &mut watch::Receiver<Option<Outcome<E>>>,
    tenant: &TenantId,
) -> Result<Outcome<E>, CacheError<E>> {
    let abandoned = || CacheError::Abandoned {
        tenant: tenant.clone(),
    };
    match receiver.wait_for(Option::is_some).await {
        Ok(outcome) => outcome.clone().ok_or_else(abandoned),
        Err(_) => Err(abandoned()),
    }
}

impl<E: LoadError> Inner<E> {
    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::Relaxed);
        self.changed.send_replace(());
    }
}

impl<E> Slot<E> {
    /// A new slot, used now (`now` and `epoch` are the cache's).
    fn new(key: CacheKey, now: Instant, epoch: Instant) -> Slot<E> {
        Slot {
            key,
            current: ArcSwapOption::empty(),
            loading: AtomicBool::new(false),
            last_access_ms: AtomicU64::new(
                u64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX),
            ),
            state: Mutex::new(SlotState {
                in_flight: None,
                blocked: None,
                failures: 0,
                fetched: (0, 0),
                next_refresh: None,
                planned: None,
                refresher_started: false,
                last_forced: None,
            }),
        }
    }
}

#[cfg(test)]
mod tests;
