//! Loads: one per slot at a time, in its own task, its outcome shared with
//! every waiter and remembered (a token, a refusal, a throttle); and the
//! background refresher that keeps a slot warm on its schedule.

use super::{
    schedule, wait, Blocked, CachedToken, FailureKind, Fetched, Inner, LoadContext, LoadError,
    Outcome, Slot, SlotState, Trigger,
};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::watch;
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
                    lifetime: response.age + response.expires_in,
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
                state.planned = Some(planned);
                state.next_refresh = Some(planned.at);
                self.observer.token_stored(&slot.key, &token);
                self.changed();
                if !state.refresher_started {
                    state.refresher_started = true;
                    tokio::spawn(refresher(Arc::clone(self), Arc::clone(slot)));
                }
                Ok(token)
            }
            Err(error) => {
                state.failures = state.failures.saturating_add(1);
                let hold = schedule::hold_for(error.kind(), settings.negative_ttl);
                state.blocked = Some(Blocked {
                    error: error.clone(),
                    until: now + hold,
                });
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
                if heals && !state.refresher_started {
                    state.refresher_started = true;
                    tokio::spawn(refresher(Arc::clone(self), Arc::clone(slot)));
                }
                tracing::warn!(tenant = %slot.key.tenant, resource = %slot.key.resource,
                    failures = state.failures, keeps_token, "token load failed: {error}");
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

/// The background refresher of one slot: refresh on schedule, drop when idle.
async fn refresher<E: LoadError>(inner: Arc<Inner<E>>, slot: Arc<Slot<E>>) {
    loop {
        let next = slot.lock().next_refresh;
        let Some(next) = next else { return };
        tokio::time::sleep_until(next).await;
        if !inner.still_cached(&slot) {
            return; // evicted for capacity; a new slot will be made on demand
        }
        let now = Instant::now();
        // A configured tenant still healing (no token yet) is kept however
        // idle: nobody may ask for it until its consent arrives.
        let healing = slot.current.load().is_none() && inner.slots.is_configured(&slot.key);
        if !healing
            && now.saturating_duration_since(slot.idle_since()) >= inner.settings.load().keep_warm
        {
            inner.slots.invalidate(&slot.key);
            inner.observer.dropped(&slot.key);
            inner.changed();
            tracing::debug!(tenant = %slot.key.tenant, resource = %slot.key.resource, "dropped: unused for keep_warm");
            return;
        }
        let mut receiver = {
            let mut state = slot.lock();
            match state.next_refresh {
                // Evicted meanwhile: no refresh follows an evict.
                None => return,
                // A demand load succeeded meanwhile and rescheduled.
                Some(n) if n > now => continue,
                Some(_) => {}
            }
            if let Some(planned) = state.planned.take() {
                inner.pacer.release(planned);
            }
            match &state.in_flight {
                Some(receiver) => receiver.clone(),
                None => Inner::start_load(
                    &inner,
                    &slot,
                    &mut state,
                    Trigger::Background,
                    LoadContext::default(),
                ),
            }
        };
        // The outcome is recorded in the slot by the load itself.
        let _ = wait(&mut receiver, &slot.key.tenant).await;
    }
}
