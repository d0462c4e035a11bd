//! Tenants this broker knows, per app: a token of that app was issued for
//! them (here, restored from the state file, or read from the shared
//! cache). Known tenants are never charged to an account's
//! `max_new_tenants_per_minute` for that app, so a restart or a fleet
//! peer's fetch does not turn every customer into a "new" one, while a
//! tenant known to one app is still new to another (which Entra may well
//! refuse: the tenant consented to the first).

use crate::config::{AppKey, TenantKey};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

/// The set of (app, tenant), bounded: past `max` pairs, new ones are not
/// remembered (they are charged as new, the safe side).
#[derive(Debug)]
pub struct KnownTenants {
    set: RwLock<HashSet<(AppKey, TenantKey)>>,
    max: usize,
    /// Bumped on every change (the state file is rewritten only then).
    generation: AtomicU64,
}

impl KnownTenants {
    pub fn new(max: usize) -> KnownTenants {
        KnownTenants {
            set: RwLock::new(HashSet::new()),
            max,
            generation: AtomicU64::new(0),
        }
    }

    pub fn contains(&self, app: &AppKey, tenant: &TenantKey) -> bool {
        // The pair is built to be looked up: two reference counts, no copy.
        self.set
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(app.clone(), tenant.clone()))
    }

    /// Remembers `tenant` for `app`; a no-op when it is known already or
    /// the set is full.
    pub fn insert(&self, app: &AppKey, tenant: &TenantKey) {
        if self.contains(app, tenant) {
            return;
        }
        let mut set = self.set.write().unwrap_or_else(|p| p.into_inner());
        if set.len() < self.max && set.insert((app.clone(), tenant.clone())) {
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every known (app, tenant) (for the state file).
    pub fn snapshot(&self) -> Vec<(AppKey, TenantKey)> {
        self.set
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Changes so far.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.set.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TenantId;

    fn key(t: &str) -> TenantKey {
        TenantId::try_from(t.to_owned()).unwrap().key()
    }

    #[test]
    fn tenants_are_known_per_app_case_blind_up_to_the_bound() {
        let app = AppKey::example();
        let other = AppKey {
            name: crate::config::Name::try_from("notify".to_owned()).unwrap(),
            ..AppKey::example()
        };
        let known = KnownTenants::new(2);
        known.insert(&app, &key("Contoso.com"));
        assert!(known.contains(&app, &key("contoso.COM")));
        assert!(
            !known.contains(&other, &key("contoso.com")),
            "new to another app"
        );
        known.insert(&app, &key("contoso.com"));
        assert_eq!(known.generation(), 1);
        known.insert(&app, &key("b.com"));
        known.insert(&app, &key("c.com"));
        assert_eq!(known.len(), 2);
        assert!(!known.contains(&app, &key("c.com")));
    }
}
