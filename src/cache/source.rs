//! What the cache asks of its token source: a fetch per key, the reason
//! for it, the token it hands over, and errors the cache can classify.

use super::CacheKey;
use crate::config::TenantId;
use crate::token::AccessToken;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Where tokens come from (the authority client, or a test double).
pub trait TokenSource: Send + Sync + 'static {
    /// What a failed fetch says; shared by every caller waiting on it.
    type Error: LoadError;
    /// Fetches a new token for `key`; `load` says why, and what this
    /// host holds now.
    fn fetch(&self, key: &CacheKey, load: &LoadContext) -> BoxFuture<Result<Fetched, Self::Error>>;
}

/// Why a load runs, and what the host holds: a source that reads a shared
/// cache takes a shared token only if it is newer than `current` and is not
/// `rejected`, and reads none when `forced`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadContext {
    /// SHA-256 and expiry (unix seconds) of the token this host holds.
    pub current: Option<([u8; 32], u64)>,
    /// A token a caller saw rejected (`token_sha256_to_refresh`).
    pub rejected: Option<[u8; 32]>,
    /// An operator asked for a new token (`tokenbroker refresh`).
    pub forced: bool,
    /// The background refresher runs it (else a caller waits on it).
    pub background: bool,
}

/// A token as the source hands it over.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub access_token: AccessToken,
    /// Lifetime from now.
    pub expires_in: Duration,
    /// When the issuer suggests refreshing, from when it issued the token.
    pub refresh_in: Option<Duration>,
    /// How long ago the token was issued (zero when fetched just now; a
    /// token from a shared cache may be older).
    pub age: Duration,
}

/// What kind of failure a load ended in: the cache decides from it what
/// to remember ([`schedule::hold_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The issuer refused (consent, certificate, …): asking again soon will
    /// not help.
    Refused,
    /// The issuer asked us to wait this long.
    Throttled(Duration),
    /// Worth trying again (unreachable, 5xx, timed out).
    Transient,
}

/// A source's error, as the cache needs to see it.
pub trait LoadError: std::error::Error + Clone + Send + Sync + 'static {
    fn kind(&self) -> FailureKind;
    /// The same error with the time left to wait replaced (a remembered
    /// throttle answered locally says how long is left).
    fn with_retry_after(&self, left: Duration) -> Self;
    /// What makes two failures "the same" for the log (one line a minute
    /// per kind): the error without what differs per tenant or per answer
    /// (ids, correlation ids, times).
    fn log_kind(&self) -> String;
}

impl<E: LoadError> CacheError<E> {
    /// As [`LoadError::log_kind`], for every way the cache fails.
    pub fn log_kind(&self) -> String {
        match self {
            CacheError::Load(e) => e.log_kind(),
            CacheError::Deadline { .. } => "deadline".to_owned(),
            CacheError::TooShortLived { .. } => "too short-lived".to_owned(),
            CacheError::Abandoned { .. } => "abandoned".to_owned(),
        }
    }
}

/// Why the cache could not hand out a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheError<E: LoadError> {
    /// The load failed (or a remembered failure was answered).
    #[error(transparent)]
    Load(E),
    /// The load did not finish within `cache.load_timeout`; it goes on for
    /// later callers.
    #[error("no token for tenant {tenant} within {} s (cache.load_timeout); the request to Entra goes on, ask again shortly", .after.as_secs())]
    Deadline { tenant: TenantId, after: Duration },
    /// The issuer's token lives less than `min_remaining`.
    #[error("Entra issued a token for tenant {tenant} with only {} s of life, less than cache.min_remaining ({} s); lower cache.min_remaining", .remaining.as_secs(), .min_remaining.as_secs())]
    TooShortLived {
        tenant: TenantId,
        remaining: Duration,
        min_remaining: Duration,
    },
    /// The load ended without a result (the runtime is shutting down).
    #[error("the token load for tenant {tenant} ended without a result (shutting down)")]
    Abandoned { tenant: TenantId },
}
