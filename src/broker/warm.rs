//! The broker's side of a warm restart: what goes into the state file
//! (every cached token and the known tenants) and what comes back from it.
//! The file's format and I/O are [`crate::state_file`]'s.

use super::Broker;
use crate::cache::{schedule, CacheKey, CachedToken};
use crate::seal::TokenRecord;
use crate::state_file::{StateError, StateFile};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// What a restore took back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Tokens back in the cache.
    pub tokens: usize,
    /// Tokens left out: too little life left, or their tenant or resource
    /// is no longer served.
    pub stale: usize,
    pub known_tenants: usize,
}

impl Broker {
    /// Keeps the cache in `file` across restarts (`cache.state_file`).
    pub fn with_state_file(mut self, file: Option<StateFile>) -> Broker {
        self.state_file = file.map(Arc::new);
        self
    }

    /// The state file, when configured.
    pub fn state_file(&self) -> Option<&Arc<StateFile>> {
        self.state_file.as_ref()
    }

    /// Takes back what the state file holds: every token with more than
    /// its hand-out floor left (`min_remaining`) whose tenant and resource
    /// someone may still have, and the known tenants. Read before the
    /// listeners answer; a file that cannot be read is the caller's WARN.
    pub fn restore_state(&self) -> Result<RestoreReport, StateError> {
        let Some(file) = &self.state_file else {
            return Ok(RestoreReport::default());
        };
        let max = usize::try_from(self.cache.settings().max_entries.saturating_mul(2))
            .unwrap_or(usize::MAX);
        let restored = file.read(max, max)?;
        let now = self.clock.unix_now();
        let min_remaining = self.cache.settings().min_remaining;
        let policy = &self.state.load().policy;
        let mut report = RestoreReport::default();
        for (app, tenant) in &restored.known {
            self.known.insert(app, tenant);
        }
        for (key, record) in restored.tokens {
            let lifetime = Duration::from_secs(record.expires_on.saturating_sub(record.issued_on));
            let left = Duration::from_secs(record.expires_on.saturating_sub(now));
            let wanted = policy.anyone_may_have(&key.app, &key.tenant, &key.resource);
            if !wanted || left <= schedule::handout_floor(lifetime, min_remaining) {
                report.stale += 1;
                continue;
            }
            self.known.insert(&key.app, &key.tenant);
            if self.cache.restore(&key, record.into_fetched(now)) {
                report.tokens += 1;
            }
        }
        report.known_tenants = self.known.len();
        // What was just read needs no rewrite.
        self.saved_changes
            .store(self.state_changes(), Ordering::Relaxed);
        Ok(report)
    }

    /// Stores, tokens dropped and tenants learnt so far.
    fn state_changes(&self) -> u64 {
        self.cache.changes().wrapping_add(self.known.generation())
    }

    /// Writes the state file if anything changed since it was last written
    /// (or always, with `force`). Returns the bytes written, `None` when
    /// nothing needed writing. The write runs on a blocking thread.
    pub async fn save_state(&self, force: bool) -> Result<Option<u64>, StateError> {
        let Some(file) = self.state_file.clone() else {
            return Ok(None);
        };
        let changes = self.state_changes();
        if !force && changes == self.saved_changes.load(Ordering::Relaxed) {
            return Ok(None);
        }
        // References to the cached tokens, not copies: each record is made
        // as it is written, so a write holds one token's copy at a time.
        let tokens: Vec<(CacheKey, Arc<CachedToken>)> = self.cache.tokens();
        let known = self.known.snapshot();
        let written = tokio::task::spawn_blocking(move || {
            let records = tokens.iter().map(|(key, token)| {
                let record = TokenRecord {
                    access_token: token.access_token.expose().to_owned(),
                    issued_on: token.obtained_on,
                    expires_on: token.expires_on,
                    refresh_on: None,
                };
                (key, record)
            });
            file.write(records, &known)
        })
        .await
        .map_err(|e| StateError::Write {
            path: self
                .state_file
                .as_ref()
                .map(|f| f.path().to_owned())
                .unwrap_or_default(),
            source: std::io::Error::other(e.to_string()),
        })??;
        self.saved_changes.store(changes, Ordering::Relaxed);
        Ok(Some(written))
    }
}
