//! Where the cache's slots live: two bounded maps, one for the tenants the
//! configuration names and one for every other tenant, so that callers
//! naming unconfigured tenants (an account with `"*"`) can never push a
//! configured tenant's token out.
//!
//! Each map is a sharded hash map with its own bound: at the bound, a new
//! entry takes the place of the least recently used of a few in its shard,
//! and entries nobody used for `idle` are swept now and then (the timer
//! drops the slots it refreshes itself; the sweep is the backstop for the
//! others). A general-purpose cache (moka) was measured at 370 to 465 bytes
//! per entry, a third of the broker's budget of 1 KiB per cached tenant;
//! this costs about a hundred.

use crate::config::{AppKey, TenantId, TenantKey};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use tokio::time::Instant;

use super::CacheKey;

/// What a map needs of its values: when each was last used, in
/// milliseconds since the epoch the map was made with.
pub(super) trait LastUsed {
    fn last_used(&self) -> u64;
}

/// Told of a key the map itself pushed out (over capacity, or idle).
pub(super) type OnEvicted = Arc<dyn Fn(&CacheKey) + Send + Sync>;

/// Shards per map: enough that threads serving different tenants rarely
/// meet on one lock.
const SHARDS: usize = 16;
/// Entries looked at to find the least recently used one at the bound.
const SAMPLE: usize = 8;
/// Inserts between two sweeps of idle entries.
const SWEEP_EVERY: u64 = 4096;

/// One bounded map.
struct Map<V> {
    shards: Box<[RwLock<HashMap<CacheKey, V>>]>,
    hasher: RandomState,
    max: u64,
    len: AtomicU64,
    inserts: AtomicU64,
}

impl<V: Clone + LastUsed> Map<V> {
    fn new(max: u64) -> Map<V> {
        Map {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            max: max.max(1),
            len: AtomicU64::new(0),
            inserts: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &CacheKey) -> &RwLock<HashMap<CacheKey, V>> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        &self.shards[i]
    }

    fn read(shard: &RwLock<HashMap<CacheKey, V>>) -> RwLockReadGuard<'_, HashMap<CacheKey, V>> {
        // Entries are inserted and removed whole: a poisoned map is whole.
        shard.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(shard: &RwLock<HashMap<CacheKey, V>>) -> RwLockWriteGuard<'_, HashMap<CacheKey, V>> {
        shard.write().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, key: &CacheKey) -> Option<V> {
        Map::read(self.shard(key)).get(key).cloned()
    }

    /// The value of `key`, made by `init` when missing; when it was made,
    /// the key pushed out to make room, if any, and whether a sweep is due.
    fn get_with(
        &self,
        key: &CacheKey,
        init: impl FnOnce() -> V,
    ) -> (V, Option<(Option<CacheKey>, bool)>) {
        if let Some(v) = self.get(key) {
            return (v, None);
        }
        let shard = self.shard(key);
        let mut map = Map::write(shard);
        if let Some(v) = map.get(key) {
            return (v.clone(), None);
        }
        let value = init();
        let evicted = self.make_room(&mut map);
        map.insert(key.clone(), value.clone());
        self.len.fetch_add(1, Ordering::Relaxed);
        let sweep = self.count_insert();
        (value, Some((evicted, sweep)))
    }

    /// Inserts or replaces; the key pushed out to make room, if any, and
    /// whether a sweep is due.
    fn insert(&self, key: CacheKey, value: V) -> (Option<CacheKey>, bool) {
        let mut map = Map::write(self.shard(&key));
        if let Some(old) = map.get_mut(&key) {
            *old = value;
            return (None, false);
        }
        let evicted = self.make_room(&mut map);
        map.insert(key, value);
        self.len.fetch_add(1, Ordering::Relaxed);
        (evicted, self.count_insert())
    }

    /// Inserts if absent (a slot already there wins); the key pushed out.
    fn insert_absent(&self, key: CacheKey, value: V) -> Option<CacheKey> {
        let mut map = Map::write(self.shard(&key));
        if map.contains_key(&key) {
            return None;
        }
        let evicted = self.make_room(&mut map);
        map.insert(key, value);
        self.len.fetch_add(1, Ordering::Relaxed);
        evicted
    }

    /// Counts an insert; whether this one makes a sweep due (every
    /// [`SWEEP_EVERY`], counted once however many threads insert).
    fn count_insert(&self) -> bool {
        (self.inserts.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(SWEEP_EVERY)
    }

    /// At the bound, removes the least recently used of a few entries of
    /// `map` (the shard about to grow; an empty one takes from no one, so
    /// the bound may be passed by at most a shard's worth).
    fn make_room(&self, map: &mut HashMap<CacheKey, V>) -> Option<CacheKey> {
        if self.len.load(Ordering::Relaxed) < self.max {
            return None;
        }
        let oldest = map
            .iter()
            .take(SAMPLE)
            .min_by_key(|(_, v)| v.last_used())
            .map(|(k, _)| k.clone())?;
        map.remove(&oldest);
        self.len.fetch_sub(1, Ordering::Relaxed);
        Some(oldest)
    }

    fn remove(&self, key: &CacheKey) -> Option<V> {
        let removed = Map::write(self.shard(key)).remove(key);
        if removed.is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    fn clear(&self) {
        for shard in self.shards.iter() {
            let mut map = Map::write(shard);
            self.len.fetch_sub(map.len() as u64, Ordering::Relaxed);
            map.clear();
        }
    }

    /// Removes entries unused for `idle` at `now` (both in milliseconds);
    /// returns their keys.
    fn sweep(&self, idle: u64, now: u64) -> Vec<CacheKey> {
        let mut gone = Vec::new();
        for shard in self.shards.iter() {
            let mut map = Map::write(shard);
            let before = map.len();
            map.retain(|k, v| {
                let keep = now.saturating_sub(v.last_used()) < idle;
                if !keep {
                    gone.push(k.clone());
                }
                keep
            });
            self.len
                .fetch_sub((before - map.len()) as u64, Ordering::Relaxed);
        }
        gone
    }

    fn len(&self) -> u64 {
        self.len.load(Ordering::Relaxed)
    }

    fn entries(&self) -> Vec<(CacheKey, V)> {
        let mut all = Vec::with_capacity(usize::try_from(self.len()).unwrap_or(0));
        for shard in self.shards.iter() {
            all.extend(Map::read(shard).iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        all
    }
}

/// Whether `key` is one of the configured (app, tenant) pairs.
fn is_in(tenants: &HashMap<TenantKey, Vec<AppKey>>, key: &CacheKey) -> bool {
    tenants
        .get(&key.tenant)
        .is_some_and(|apps| apps.contains(&key.app))
}

/// The two maps and which tenants go in the first.
pub(super) struct Slots<V> {
    configured: Map<V>,
    others: Map<V>,
    /// Lower-case ids of the configured tenants, each with the apps it
    /// consented to.
    tenants: ArcSwap<HashMap<TenantKey, Vec<AppKey>>>,
    idle: Duration,
    /// What the values' [`LastUsed`] counts from.
    epoch: Instant,
    on_evicted: OnEvicted,
}

impl<V: Clone + LastUsed> Slots<V> {
    /// Each map holds at most `max` entries; `idle` is the backstop for
    /// entries nobody touches (the timer drops its own slots earlier);
    /// values count their last use from `epoch`.
    pub(super) fn new(max: u64, idle: Duration, epoch: Instant, on_evicted: OnEvicted) -> Slots<V> {
        Slots {
            configured: Map::new(max),
            others: Map::new(max),
            tenants: ArcSwap::default(),
            idle,
            epoch,
            on_evicted,
        }
    }

    /// `now` and the idle bound, in the values' milliseconds.
    fn sweep_bounds(&self, now: Instant) -> (u64, u64) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        (ms(self.idle), ms(now.saturating_duration_since(self.epoch)))
    }

    fn of(&self, key: &CacheKey) -> &Map<V> {
        if self.is_configured(key) {
            &self.configured
        } else {
            &self.others
        }
    }

    /// Whether `key` is a configured tenant's, for an app it consented to.
    pub(super) fn is_configured(&self, key: &CacheKey) -> bool {
        is_in(&self.tenants.load(), key)
    }

    /// Reports a key pushed out, and sweeps idle entries when due.
    fn after_insert(&self, map: &Map<V>, evicted: Option<CacheKey>, sweep: bool) {
        if let Some(key) = evicted {
            (self.on_evicted)(&key);
        }
        if sweep {
            let (idle, now) = self.sweep_bounds(Instant::now());
            for key in map.sweep(idle, now) {
                (self.on_evicted)(&key);
            }
        }
    }

    pub(super) fn get_with(&self, key: &CacheKey, init: impl FnOnce() -> V) -> V {
        // A reload moving entries between the maps may have left this one
        // in the other map for a moment: found there, it is used.
        if let Some(value) = self.get(key) {
            return value;
        }
        let map = self.of(key);
        let (value, inserted) = map.get_with(key, init);
        // Only an insert may push out or sweep: a hit writes nothing.
        if let Some((evicted, sweep)) = inserted {
            self.after_insert(map, evicted, sweep);
        }
        value
    }

    pub(super) fn get(&self, key: &CacheKey) -> Option<V> {
        let (first, second) = if self.is_configured(key) {
            (&self.configured, &self.others)
        } else {
            (&self.others, &self.configured)
        };
        first.get(key).or_else(|| second.get(key))
    }

    pub(super) fn insert(&self, key: CacheKey, value: V) {
        let map = self.of(&key);
        let (evicted, sweep) = map.insert(key, value);
        self.after_insert(map, evicted, sweep);
    }

    pub(super) fn invalidate(&self, key: &CacheKey) {
        self.configured.remove(key);
        self.others.remove(key);
    }

    pub(super) fn invalidate_all(&self) {
        self.configured.clear();
        self.others.clear();
    }

    /// Sweeps entries idle past the bound (a status or metrics read asks).
    pub(super) fn run_pending_tasks(&self) {
        let (idle, now) = self.sweep_bounds(Instant::now());
        for map in [&self.configured, &self.others] {
            for key in map.sweep(idle, now) {
                (self.on_evicted)(&key);
            }
        }
    }

    pub(super) fn entry_count(&self) -> u64 {
        self.configured.len() + self.others.len()
    }

    pub(super) fn contains_key(&self, key: &CacheKey) -> bool {
        self.get(key).is_some()
    }

    /// Every entry of both maps.
    pub(super) fn entries(&self) -> Vec<(CacheKey, V)> {
        let mut all = self.configured.entries();
        all.extend(self.others.entries());
        all
    }

    /// The configured (app, tenant) pairs changed: their entries move to
    /// the map of their new kind.
    pub(super) fn set_configured(&self, pairs: impl IntoIterator<Item = (AppKey, TenantId)>) {
        let mut tenants: HashMap<TenantKey, Vec<AppKey>> = HashMap::new();
        for (app, tenant) in pairs {
            let apps = tenants.entry(tenant.key()).or_default();
            if !apps.contains(&app) {
                apps.push(app);
            }
        }
        let old = self.tenants.swap(Arc::new(tenants.clone()));
        let moved = |from: &Map<V>, to: &Map<V>, now_configured: bool| {
            let keys: Vec<CacheKey> = from
                .entries()
                .into_iter()
                .map(|(k, _)| k)
                .filter(|k| is_in(&tenants, k) == now_configured)
                .collect();
            for key in keys {
                if let Some(value) = from.remove(&key) {
                    // A slot a lookup made there meanwhile wins.
                    if let Some(evicted) = to.insert_absent(key, value) {
                        (self.on_evicted)(&evicted);
                    }
                }
            }
        };
        if *old != tenants {
            moved(&self.others, &self.configured, true);
            moved(&self.configured, &self.others, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Resource;
    use std::sync::Mutex;

    /// A value that says when it was last used.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Used(u32, u64);

    impl LastUsed for Used {
        fn last_used(&self) -> u64 {
            self.1
        }
    }

    fn key(tenant: &str) -> CacheKey {
        CacheKey::new(
            &crate::config::AppKey::example(),
            &TenantId::try_from(tenant.to_owned()).unwrap(),
            &Resource::parse("https://graph.microsoft.com").unwrap(),
        )
    }

    fn quiet() -> OnEvicted {
        Arc::new(|_| {})
    }

    #[test]
    fn unconfigured_tenants_never_push_configured_ones_out() {
        let slots: Slots<Used> = Slots::new(10, Duration::from_secs(3600), Instant::now(), quiet());
        slots.set_configured([(
            AppKey::example(),
            TenantId::try_from("Fabrikam.com".to_owned()).unwrap(),
        )]);
        let now = 5;
        assert!(slots.is_configured(&key("fabrikam.com")));
        // The tenant with an app it did not consent to is not configured.
        let other_app = CacheKey {
            app: AppKey {
                name: crate::config::Name::try_from("notify".to_owned()).unwrap(),
                ..AppKey::example()
            },
            ..key("fabrikam.com")
        };
        assert!(!slots.is_configured(&other_app));
        slots.get_with(&key("fabrikam.com"), || Used(1, now));
        for i in 0..500 {
            slots.get_with(&key(&format!("t{i}.example.com")), || Used(2, now));
        }
        assert_eq!(slots.get(&key("fabrikam.com")), Some(Used(1, now)));
        // The bound holds within a shard's worth.
        assert!(
            slots.entry_count() <= 10 + SHARDS as u64,
            "{}",
            slots.entry_count()
        );
    }

    #[test]
    fn at_the_bound_the_least_recently_used_goes_and_is_reported() {
        let evicted = Arc::new(Mutex::new(Vec::new()));
        let told = Arc::clone(&evicted);
        let slots: Slots<Used> = Slots::new(
            SHARDS as u64,
            Duration::from_secs(3600),
            Instant::now(),
            Arc::new(move |k: &CacheKey| told.lock().unwrap().push(k.clone())),
        );
        for i in 0..SHARDS * 4 {
            let at = 1000 * i as u64;
            slots.get_with(&key(&format!("t{i}.example.com")), || Used(0, at));
        }
        assert!(slots.entry_count() <= 2 * SHARDS as u64);
        let evicted = evicted.lock().unwrap();
        assert!(evicted.len() >= SHARDS * 2, "{}", evicted.len());
        // The newest ones stay.
        let newest = key(&format!("t{}.example.com", SHARDS * 4 - 1));
        assert!(slots.contains_key(&newest));
        assert!(!evicted.contains(&newest));
    }

    #[test]
    fn entries_idle_past_the_bound_are_swept_and_reported() {
        let evicted = Arc::new(Mutex::new(Vec::new()));
        let told = Arc::clone(&evicted);
        let epoch = Instant::now();
        let slots: Slots<Used> = Slots::new(
            100,
            Duration::from_secs(60),
            epoch,
            Arc::new(move |k: &CacheKey| told.lock().unwrap().push(k.clone())),
        );
        slots.insert(key("old.com"), Used(1, 0));
        slots.insert(key("new.com"), Used(2, 120_000));
        let (idle, now) = slots.sweep_bounds(epoch + Duration::from_secs(120));
        for map in [&slots.configured, &slots.others] {
            for key in map.sweep(idle, now) {
                (slots.on_evicted)(&key);
            }
        }
        assert_eq!(*evicted.lock().unwrap(), vec![key("old.com")]);
        assert_eq!(slots.entry_count(), 1);
        slots.invalidate(&key("new.com"));
        assert_eq!(slots.entry_count(), 0);
    }

    #[test]
    fn a_reload_moves_entries_to_their_new_map() {
        let slots: Slots<Used> = Slots::new(10, Duration::from_secs(3600), Instant::now(), quiet());
        let now = 7;
        slots.get_with(&key("a.com"), || Used(1, now));
        slots.set_configured([(
            AppKey::example(),
            TenantId::try_from("a.com".to_owned()).unwrap(),
        )]);
        assert_eq!(slots.get(&key("a.com")), Some(Used(1, now)));
        assert_eq!(slots.configured.len(), 1);
        slots.set_configured([]);
        assert_eq!(slots.get(&key("a.com")), Some(Used(1, now)));
        assert_eq!((slots.configured.len(), slots.others.len()), (0, 1));
    }
}
