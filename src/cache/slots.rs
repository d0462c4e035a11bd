//! Where the cache's slots live: two bounded maps, one for the tenants the
//! configuration names and one for every other tenant, so that callers
//! naming unconfigured tenants (an account with `"*"`) can never push a
//! configured tenant's token out.

use crate::config::{TenantId, TenantKey};
use arc_swap::ArcSwap;
use moka::sync::Cache;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::CacheKey;

/// The two maps and which tenants go in the first.
pub(super) struct Slots<V: Clone + Send + Sync + 'static> {
    configured: Cache<CacheKey, V>,
    others: Cache<CacheKey, V>,
    /// Lower-case ids of the configured tenants.
    tenants: ArcSwap<HashSet<TenantKey>>,
}

/// Told of a key the map itself pushed out (over capacity, or idle).
pub(super) type OnEvicted = Arc<dyn Fn(&CacheKey) + Send + Sync>;

fn map<V: Clone + Send + Sync + 'static>(
    max: u64,
    idle: Duration,
    on_evicted: OnEvicted,
) -> Cache<CacheKey, V> {
    Cache::builder()
        .max_capacity(max)
        .time_to_idle(idle)
        .eviction_listener(move |key: Arc<CacheKey>, _, cause| {
            // Explicit removals are the cache's own and reported by it.
            if cause.was_evicted() {
                on_evicted(&key);
            }
        })
        .build()
}

impl<V: Clone + Send + Sync + 'static> Slots<V> {
    /// Each map holds at most `max` entries; `idle` is the backstop for
    /// entries nobody touches (refreshers drop their own earlier).
    pub(super) fn new(max: u64, idle: Duration, on_evicted: OnEvicted) -> Slots<V> {
        Slots {
            configured: map(max, idle, Arc::clone(&on_evicted)),
            others: map(max, idle, on_evicted),
            tenants: ArcSwap::default(),
        }
    }

    fn of(&self, key: &CacheKey) -> &Cache<CacheKey, V> {
        if self.tenants.load().contains(&key.tenant) {
            &self.configured
        } else {
            &self.others
        }
    }

    /// Whether `key`'s tenant is a configured one.
    pub(super) fn is_configured(&self, key: &CacheKey) -> bool {
        self.tenants.load().contains(&key.tenant)
    }

    pub(super) fn get_with(&self, key: &CacheKey, init: impl FnOnce() -> V) -> V {
        self.of(key).get_with_by_ref(key, init)
    }

    pub(super) fn get(&self, key: &CacheKey) -> Option<V> {
        self.of(key).get(key)
    }

    pub(super) fn insert(&self, key: CacheKey, value: V) {
        self.of(&key).insert(key, value);
    }

    pub(super) fn invalidate(&self, key: &CacheKey) {
        self.configured.invalidate(key);
        self.others.invalidate(key);
    }

    pub(super) fn invalidate_all(&self) {
        self.configured.invalidate_all();
        self.others.invalidate_all();
        self.run_pending_tasks();
    }

    pub(super) fn run_pending_tasks(&self) {
        self.configured.run_pending_tasks();
        self.others.run_pending_tasks();
    }

    pub(super) fn entry_count(&self) -> u64 {
        self.configured.entry_count() + self.others.entry_count()
    }

    pub(super) fn contains_key(&self, key: &CacheKey) -> bool {
        self.of(key).contains_key(key)
    }

    /// Every entry of both maps.
    pub(super) fn entries(&self) -> Vec<(CacheKey, V)> {
        self.configured
            .iter()
            .chain(self.others.iter())
            .map(|(k, v)| (k.as_ref().clone(), v))
            .collect()
    }

    /// The configured tenants changed: their entries move to the map of
    /// their new kind.
    pub(super) fn set_configured(&self, tenants: impl IntoIterator<Item = TenantId>) {
        let tenants: HashSet<TenantKey> = tenants.into_iter().map(|t| t.key()).collect();
        let old = self.tenants.swap(Arc::new(tenants.clone()));
        let moved = |from: &Cache<CacheKey, V>, to: &Cache<CacheKey, V>, now_configured: bool| {
            let keys: Vec<Arc<CacheKey>> = from
                .iter()
                .map(|(k, _)| k)
                .filter(|k| tenants.contains(&k.tenant) == now_configured)
                .collect();
            for key in keys {
                if let Some(value) = from.remove(key.as_ref()) {
                    to.insert(key.as_ref().clone(), value);
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

    fn key(tenant: &str) -> CacheKey {
        CacheKey::new(
            &TenantId::try_from(tenant.to_owned()).unwrap(),
            &Resource::parse("https://graph.microsoft.com").unwrap(),
        )
    }

    #[test]
    fn unconfigured_tenants_never_push_configured_ones_out() {
        let slots: Slots<u32> = Slots::new(10, Duration::from_secs(3600), Arc::new(|_| {}));
        slots.set_configured([TenantId::try_from("Fabrikam.com".to_owned()).unwrap()]);
        slots.get_with(&key("fabrikam.com"), || 1);
        for i in 0..500 {
            slots.get_with(&key(&format!("t{i}.example.com")), || 2);
        }
        slots.run_pending_tasks();
        assert_eq!(slots.get(&key("fabrikam.com")), Some(1));
        assert!(slots.entry_count() <= 11, "{}", slots.entry_count());
    }

    #[test]
    fn a_reload_moves_entries_to_their_new_map() {
        let slots: Slots<u32> = Slots::new(10, Duration::from_secs(3600), Arc::new(|_| {}));
        slots.get_with(&key("a.com"), || 1);
        slots.set_configured([TenantId::try_from("a.com".to_owned()).unwrap()]);
        assert_eq!(slots.get(&key("a.com")), Some(1));
        assert!(slots.configured.contains_key(&key("a.com")));
        slots.set_configured([]);
        assert_eq!(slots.get(&key("a.com")), Some(1));
        assert!(slots.others.contains_key(&key("a.com")));
    }
}
