//! What the cache holds and how it is tuned: the key of a slot (app,
//! tenant and resource), a cached token with its lifetimes, and `[cache]`'s settings.

use super::schedule;
use crate::backoff::Backoff;
use crate::config::{AppKey, Resource, TenantId, TenantKey};
use crate::token::AccessToken;
use std::time::Duration;
use tokio::time::Instant;

/// What a token is for: the app registration that asks, the tenant, the
/// resource. The tenant id is lower-cased so that `Contoso.com` and
/// `contoso.com` share a slot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub app: AppKey,
    pub tenant: TenantKey,
    /// The audience, without `/.default`.
    pub resource: Resource,
}

impl CacheKey {
    /// The key for `app`, `tenant` and `resource`.
    pub fn new(app: &AppKey, tenant: &TenantId, resource: &Resource) -> CacheKey {
        CacheKey {
            app: app.clone(),
            tenant: tenant.key(),
            resource: resource.clone(),
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
    pub max_entries: u64,
    /// No caller waits longer than this for a load.
    pub load_timeout: Duration,
    /// At most one refresh forced by a rejected token's hash per key in this time.
    pub forced_refresh_interval: Duration,
    /// Retries of a failed background refresh.
    pub refresh_retry: Backoff,
    /// Background retries of a configured tenant with no token stop
    /// doubling here ([`schedule::heal_delay`]).
    pub failed_retry_max: Duration,
}

impl CacheSettings {
    /// The settings `[cache]` describes.
    pub fn from_config(config: &crate::config::CacheConfig) -> CacheSettings {
        CacheSettings {
            min_remaining: config.min_remaining.0,
            keep_warm: config.keep_warm.0,
            negative_ttl: config.negative_ttl.0,
            max_entries: config.max_entries,
            load_timeout: config.load_timeout.0,
            forced_refresh_interval: config.forced_refresh_interval.0,
            refresh_retry: schedule::REFRESH_RETRY,
            failed_retry_max: config.failed_retry_max.0,
        }
    }
}

/// A token in the cache.
#[derive(Debug, Clone)]
pub struct CachedToken {
    pub access_token: AccessToken,
    /// SHA-256 of the token string: what a caller that saw it rejected sends
    /// back as `token_sha256_to_refresh`.
    pub sha256: [u8; 32],
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

    /// Its whole life, from when it was issued to when it expires.
    pub fn lifetime(&self) -> Duration {
        Duration::from_secs(self.expires_on.saturating_sub(self.obtained_on))
    }

    /// The least life it must have left to be handed out
    /// ([`schedule::handout_floor`]).
    pub fn floor(&self, min_remaining: Duration) -> Duration {
        schedule::handout_floor(self.lifetime(), min_remaining)
    }
}
