//! Loads: one per slot at a time, in its own task, its outcome shared with
//! every waiter and remembered (a token, a refusal, a throttle); and the
//! one timer that refreshes every slot on its schedule.

use super::{
    schedule, Blocked, CachedToken, FailureKind, Fetched, Inner, LoadContext, LoadError, Outcome,
    Slot, SlotState, Trigger,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

impl<E: LoadError> Inner<E> {
    /// Starts a load for `slot` in its own task; the caller holds the slot's
    /// lock and has checked that none is in flight.
    pub(super) fn start_load(
        this: &Arc<Inner<E>>,
        slot: &Arc<Slot<E>>,
        state: &mut SlotState<E>,
        trigger: Trigger,
        mut load: LoadContext,
    ) -> watch::Receiver<Option<Outcome<E>>> {
        load.current = slot
            .current
            .load()
            .as_ref()
            .map(|t| (t.sha256, t.expires_on));
        load.background = trigger == Trigger::Background;
        let (sender, receiver) = watch::channel(None);
        state.in_flight = Some(receiver.clone());
        slot.loading.store(true, Ordering::Release);
        this.observer.load_started(trigger);
        let inner = Arc::clone(this);
        let slot = Arc::clone(slot);
        tokio::spawn(async move {
            let result = inner.source.fetch(&slot.key, &load).await;
            let outcome = inner.finish_load(&slot, result, true);
            // Nobody listening is fine: the result is in the slot.
            let _ = sender.send(Some(outcome));
        });
        receiver
    }

    /// Records a load's result in the slot and schedules what follows.
    /// `fetched_now`: the token came from a fetch (not from the state
    /// file); a slot's first such token may refresh early
    /// ([`schedule::first_window`]), so tokens fetched together spread out.
    pub(super) fn finish_load(
        self: &Arc<Self>,
        slot: &Arc<Slot<E>>,
        result: Result<Fetched, E>,
        fetched_now: bool,
    ) -> Outcome<E> {
        let now = Instant::now();
        let settings = self.settings.load();
        let mut state = slot.lock();
        state.in_flight = None;
        slot.loading.store(false, Ordering::Release);
        match result {
            Ok(response) => {
                let wall = self.clock.unix_now();
                let sha256 = response.access_token.sha256();
                let token = Arc::new(CachedToken {
                    access_token: response.access_token,
                    sha256,
                    expires_at: now + response.expires_in,
                    expires_on: wall + response.expires_in.as_secs(),
                    obtained_on: wall.saturating_sub(response.age.as_secs()),
                });
                // The window counts from when the token was issued, which
                // for a token from a shared cache was a while ago.
                let lifetime = response.age + response.expires_in;
                let mut window =
                    schedule::refresh_window(lifetime, response.refresh_in, settings.min_remaining);
                if fetched_now && slot.current.load().is_none() {
                    window = schedule::first_window(window, lifetime);
                }
                let issued = now.checked_sub(response.age).unwrap_or(now);
                let latest = (issued + window.end).max(now);
                let earliest = (issued + window.start)
                    .max(now + schedule::MIN_REFRESH_DELAY)
                    .min(latest);
                let position = pace_position(&slot.key);
                if let Some(old) = state.planned.take() {
                    self.pacer.release(old);
                }
                let planned = self.pacer.plan(earliest, latest, position);
                slot.current.store(Some(Arc::clone(&token)));
                state.blocked = None;
                state.failures = 0;
                if fetched_now {
                    state.fetched.0 = state.fetched.0.saturating_add(1);
                }
                state.planned = Some(planned);
                state.next_refresh = Some(planned.at);
                self.observer.token_stored(&slot.key, &token);
                self.changed();
                state.refresher_started = true;
                self.schedule(slot, planned.at);
                Ok(token)
            }
            Err(error) => {
                state.failures = state.failures.saturating_add(1);
                state.fetched.1 = state.fetched.1.saturating_add(1);
                let hold = schedule::hold_for(error.kind(), settings.negative_ttl);
                state.blocked = Some(Box::new(Blocked {
                    error: error.clone(),
                    until: now + hold,
                }));
                // Retry the refresh with backoff; not before a refusal or a
                // throttle ends (a transient hold is for callers only).
                let retry = now
                    + settings
                        .refresh_retry
                        .delay(state.failures, self.jitter.unit());
                let keeps_token = slot.usable(now, settings.min_remaining).is_some();
                let heals = !keeps_token && self.slots.is_configured(&slot.key);
                let retry = if heals {
                    // A configured tenant without a token heals by itself
                    // (consent granted later), paced with the refreshes.
                    let delay = schedule::heal_delay(state.failures, settings.failed_retry_max);
                    let earliest = (now + delay).max(now + hold);
                    if let Some(old) = state.planned.take() {
                        self.pacer.release(old);
                    }
                    let planned =
                        self.pacer
                            .plan(earliest, earliest + delay / 8, pace_position(&slot.key));
                    state.planned = Some(planned);
                    planned.at
                } else {
                    match error.kind() {
                        FailureKind::Transient => retry,
                        FailureKind::Refused | FailureKind::Throttled(_) => retry.max(now + hold),
                    }
                };
                state.next_refresh = Some(retry);
                // A slot that had a token retries its refresh; a configured
                // one without heals; any other waits for its next caller.
                if heals || state.refresher_started {
                    state.refresher_started = true;
                    self.schedule(slot, retry);
                }
                // The same failure for many tenants (Entra down, a TLS
                // proxy) is one line a minute, with how many were held back.
                let text = error.to_string();
                let kind = error.log_kind();
                if let Some(held_back) = crate::log_limit::admit(&kind) {
                    tracing::warn!(tenant = %slot.key.tenant, resource = %slot.key.resource,
                        failures = state.failures, keeps_token, held_back,
                        "token load failed: {text}");
                }
                Err(error)
            }
        }
    }

    fn still_cached(&self, slot: &Arc<Slot<E>>) -> bool {
        self.slots
            .get(&slot.key)
            .is_some_and(|current| Arc::ptr_eq(&current, slot))
    }
}

/// A key's stable place in its window ([`schedule::position`]).
fn pace_position(key: &super::CacheKey) -> f64 {
    schedule::position(format!("{}|{}", key.tenant, key.resource).as_bytes())
}

impl<E: LoadError> Inner<E> {
    /// Wakes the background refresh of `slot` at `at`. One timer task
    /// serves every slot (a task per slot would cost each cached tenant
    /// hundreds of bytes); it starts with the first slot scheduled.
    fn schedule(self: &Arc<Self>, slot: &Arc<Slot<E>>, at: Instant) {
        let seq = self.timers.seq.fetch_add(1, Ordering::Relaxed);
        let sooner = {
            let mut due = self.timers.lock();
            let first = due.keys().next().map(|(t, _)| *t);
            due.insert((at, seq), Arc::downgrade(slot));
            first.is_none_or(|first| at < first)
        };
        if !self.timers.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(timer(Arc::downgrade(self), Arc::clone(&self.timers.wake)));
        } else if sooner {
            self.timers.wake.notify_one();
        }
    }

    /// What the timer does for a slot whose time came: refresh it, or drop
    /// it when nobody asked for it in `keep_warm`. The load's end schedules
    /// what follows.
    fn refresh_due(self: &Arc<Self>, slot: &Arc<Slot<E>>, now: Instant) {
        if !self.still_cached(slot) {
            return; // evicted for capacity; a new slot will be made on demand
        }
        // A configured tenant still healing (no token yet) is kept however
        // idle: nobody may ask for it until its consent arrives.
        let healing = slot.current.load().is_none() && self.slots.is_configured(&slot.key);
        if healing {
            // Not idle for the map's sweep either.
            slot.touch(now, self.epoch);
        }
        if !healing
            && now.saturating_duration_since(slot.idle_since(self.epoch))
                >= self.settings.load().keep_warm
        {
            self.slots.invalidate(&slot.key);
            self.observer.dropped(&slot.key);
            self.changed();
            tracing::debug!(tenant = %slot.key.tenant, resource = %slot.key.resource, "dropped: unused for keep_warm");
            return;
        }
        let mut state = slot.lock();
        match state.next_refresh {
            // Evicted meanwhile: no refresh follows an evict.
            None => return,
            // Rescheduled (a demand load succeeded): a later timer holds it.
            Some(next) if next > now => return,
            Some(_) => {}
        }
        if let Some(planned) = state.planned.take() {
            self.pacer.release(planned);
        }
        if state.in_flight.is_none() {
            Inner::start_load(
                self,
                slot,
                &mut state,
                Trigger::Background,
                LoadContext::default(),
            );
        }
    }
}

/// Slots by the time their refresh is due (and a sequence number).
type Due<E> = BTreeMap<(Instant, u64), Weak<Slot<E>>>;

/// The slots' refresh times, for the one timer task.
pub(super) struct Timers<E> {
    due: Mutex<Due<E>>,
    /// Tells entries at the same instant apart.
    seq: AtomicU64,
    /// Told when a sooner time is scheduled.
    wake: Arc<Notify>,
    started: AtomicBool,
}

impl<E> Timers<E> {
    pub(super) fn new() -> Timers<E> {
        Timers {
            due: Mutex::new(BTreeMap::new()),
            seq: AtomicU64::new(0),
            wake: Arc::new(Notify::new()),
            started: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Due<E>> {
        // Entries are inserted and removed whole.
        self.due.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The slots due at `now`, and the next time after them.
    fn take_due(&self, now: Instant) -> (Vec<Weak<Slot<E>>>, Option<Instant>) {
        let mut due = self.lock();
        let later = due.split_off(&(now, u64::MAX));
        let taken = std::mem::replace(&mut *due, later);
        let next = due.keys().next().map(|(t, _)| *t);
        (taken.into_values().collect(), next)
    }
}

/// The one timer task: sleeps until the soonest refresh, runs what is due,
/// and ends once the cache is gone.
async fn timer<E: LoadError>(inner: Weak<Inner<E>>, wake: Arc<Notify>) {
    loop {
        let next = {
            let Some(inner) = inner.upgrade() else { return };
            let now = Instant::now();
            let (due, next) = inner.timers.take_due(now);
            for slot in due.iter().filter_map(Weak::upgrade) {
                inner.refresh_due(&slot, now);
            }
            next
        };
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = wake.notified() => {}
                }
            }
            // Nothing scheduled: until something is (or, for a cache that
            // was dropped, for good; the task holds nothing of it).
            None => wake.notified().await,
        }
    }
}
