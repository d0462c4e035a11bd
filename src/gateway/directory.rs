//! What Graph said about mailboxes named in the form a rule does not list
//! (an object id for a listed user principal name, or the reverse): kept
//! per tenant for `graph.directory_ttl`, so each is looked up once. Bounded:
//! past [`MAX_ENTRIES`] the expired entries go, then the oldest.

use super::rules::{Directory, DirectoryEntry};
use crate::config::TenantKey;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::time::Instant;

/// Mailboxes remembered across all tenants.
pub const MAX_ENTRIES: usize = 10_000;

#[derive(Debug)]
struct Remembered {
    /// `None`: Graph has no such user (the rule cannot allow it).
    entry: Option<DirectoryEntry>,
    until: Instant,
}

/// The lookups' answers, shared by every request.
#[derive(Debug, Default)]
pub struct DirectoryCache {
    entries: Mutex<HashMap<(TenantKey, String), Remembered>>,
}

impl DirectoryCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(TenantKey, String), Remembered>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers what Graph said of `name` in `tenant` until `now + ttl`.
    /// A found user is remembered under both of its names.
    pub fn remember(
        &self,
        tenant: &TenantKey,
        name: &str,
        entry: Option<DirectoryEntry>,
        now: Instant,
        ttl: std::time::Duration,
    ) {
        let until = now + ttl;
        let mut entries = self.lock();
        if entries.len() + 2 > MAX_ENTRIES {
            entries.retain(|_, r| r.until > now);
        }
        while entries.len() + 2 > MAX_ENTRIES {
            let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, r)| r.until)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            entries.remove(&oldest);
        }
        let mut names = vec![name.to_ascii_lowercase()];
        if let Some(e) = &entry {
            names.push(e.id.to_ascii_lowercase());
            names.push(e.upn.to_ascii_lowercase());
        }
        names.sort();
        names.dedup();
        for n in names {
            entries.insert(
                (tenant.clone(), n),
                Remembered {
                    entry: entry.clone(),
                    until,
                },
            );
        }
    }

    /// The directory of one tenant as of `now`, for the rules.
    pub fn of<'a>(&'a self, tenant: &'a TenantKey, now: Instant) -> TenantDirectory<'a> {
        TenantDirectory {
            cache: self,
            tenant,
            now,
        }
    }

    /// Forgets everything (a reload may change what the rules list).
    pub fn clear(&self) {
        self.lock().clear();
    }
}

/// One tenant's remembered mailboxes.
#[derive(Debug)]
pub struct TenantDirectory<'a> {
    cache: &'a DirectoryCache,
    tenant: &'a TenantKey,
    now: Instant,
}

/// An answer for a user Graph does not have: it matches no listed name.
fn nobody() -> DirectoryEntry {
    DirectoryEntry {
        id: String::new(),
        upn: String::new(),
    }
}

impl Directory for TenantDirectory<'_> {
    fn lookup(&self, mailbox: &str) -> Option<DirectoryEntry> {
        let entries = self.cache.lock();
        let remembered = entries.get(&(self.tenant.clone(), mailbox.to_ascii_lowercase()))?;
        (remembered.until > self.now).then(|| remembered.entry.clone().unwrap_or_else(nobody))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TenantId;
    use std::time::Duration;

    fn tenant(id: &str) -> TenantKey {
        TenantId::try_from(id.to_owned()).unwrap().key()
    }

    #[test]
    fn a_found_user_is_known_by_both_names_until_the_ttl() {
        let cache = DirectoryCache::default();
        let contoso = tenant("contoso.onmicrosoft.com");
        let now = Instant::now();
        let alice = DirectoryEntry {
            id: "7D6C2F0E-1111-2222-3333-444444444444".into(),
            upn: "Alice@contoso.com".into(),
        };
        cache.remember(
            &contoso,
            "alice@contoso.com",
            Some(alice.clone()),
            now,
            Duration::from_secs(60),
        );
        let dir = cache.of(&contoso, now);
        assert_eq!(dir.lookup("ALICE@contoso.com"), Some(alice.clone()));
        assert_eq!(
            dir.lookup("7d6c2f0e-1111-2222-3333-444444444444"),
            Some(alice)
        );
        // Another tenant's directory does not know her.
        let other = tenant("fabrikam.onmicrosoft.com");
        assert_eq!(cache.of(&other, now).lookup("alice@contoso.com"), None);
        // After the ttl, she is looked up again.
        let later = now + Duration::from_secs(61);
        assert_eq!(cache.of(&contoso, later).lookup("alice@contoso.com"), None);
    }

    #[test]
    fn a_user_graph_does_not_have_matches_nothing() {
        let cache = DirectoryCache::default();
        let contoso = tenant("contoso.onmicrosoft.com");
        let now = Instant::now();
        cache.remember(
            &contoso,
            "ghost@contoso.com",
            None,
            now,
            Duration::from_secs(60),
        );
        assert_eq!(
            cache.of(&contoso, now).lookup("ghost@contoso.com"),
            Some(nobody())
        );
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = DirectoryCache::default();
        let contoso = tenant("contoso.onmicrosoft.com");
        let now = Instant::now();
        for i in 0..MAX_ENTRIES + 50 {
            let at = now + Duration::from_millis(i as u64);
            cache.remember(
                &contoso,
                &format!("u{i}@contoso.com"),
                None,
                at,
                Duration::from_secs(3600),
            );
        }
        assert!(cache.lock().len() <= MAX_ENTRIES);
        // The newest is still there.
        let last = format!("u{}@contoso.com", MAX_ENTRIES + 49);
        assert!(cache.of(&contoso, now).lookup(&last).is_some());
    }
}
