//! Tenants this broker knows: a token was issued for them (here, restored
//! from the state file, or read from the shared cache). Known tenants are
//! never charged to an account's `max_new_tenants_per_minute`, so a restart
//! or a fleet peer's fetch does not turn every customer into a "new" one.

use crate::config::TenantKey;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

/// The set, bounded: past `max` tenants, new ones are not remembered (they
/// are charged as new, the safe side).
#[derive(Debug)]
pub struct KnownTenants {
    set: RwLock<HashSet<TenantKey>>,
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

    pub fn contains(&self, tenant: &TenantKey) -> bool {
        self.set
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(tenant)
    }

    /// Remembers `tenant`; a no-op when it is known already or the set is full.
    pub fn insert(&self, tenant: &TenantKey) {
        if self.contains(tenant) {
            return;
        }
        let mut set = self.set.write().unwrap_or_else(|p| p.into_inner());
        if set.len() < self.max && set.insert(tenant.clone()) {
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every known tenant (for the state file).
    pub fn snapshot(&self) -> Vec<TenantKey> {
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
    fn tenants_are_known_case_blind_up_to_the_bound() {
        let known = KnownTenants::new(2);
        known.insert(&key("Contoso.com"));
        assert!(known.contains(&key("contoso.COM")));
        known.insert(&key("contoso.com"));
        assert_eq!(known.generation(), 1);
        known.insert(&key("b.com"));
        known.insert(&key("c.com"));
        assert_eq!(known.len(), 2);
        assert!(!known.contains(&key("c.com")));
    }
}
