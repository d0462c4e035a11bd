//! What the broker's one door answers when it hands out no token: the
//! request's fault, the caller's, or upstream's, and the broker's own words
//! for each ([`Refusal`]), so nothing above it looks into the cache's or the
//! authority's errors.

use crate::access::{Forbidden, RequestError};
use crate::authority::response::EntraError;
use crate::authority::AcquireError;
use crate::cache::CacheError;
use std::time::Duration;

/// Why the broker would not hand out a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// The request itself is bad (400).
    #[error(transparent)]
    BadRequest(#[from] RequestError),
    /// This caller may not have it (403).
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    /// No token could be had (from Entra, or within the load deadline).
    #[error(transparent)]
    Unavailable(#[from] CacheError<AcquireError>),
    /// An account with `"*"` started its `max_new_tenants_per_minute`
    /// fetches for tenants not yet cached (429).
    #[error("account \"{account}\" asked for more new tenants than its max_new_tenants_per_minute allows; retry after {} s", .retry_after.as_secs().max(1))]
    NewTenantsLimited {
        account: String,
        retry_after: std::time::Duration,
    },
    /// An account with `"*"` already has its half of the upstream slots
    /// busy with new tenants, past the load deadline (429).
    #[error("account \"{account}\" has half of app.max_concurrent_requests busy fetching tokens for new tenants; retry after 1 s")]
    NewTenantsBusy { account: String },
}

/// What kind of refusal a [`TokenError`] is, for whoever answers the
/// caller (the HTTP layer maps each to a status): the broker's own words,
/// so nothing above it looks into the cache's or the authority's errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The request itself is bad.
    BadRequest,
    /// This caller may not have it.
    Forbidden,
    /// The account's budget of new tenants is spent for now.
    TooManyNewTenants { retry_after: Duration },
    /// Entra refused (consent, tenant, credential): retrying will not help
    /// until someone acts.
    EntraRefused,
    /// Entra throttles this tenant; no request upstream until then.
    Throttled { retry_after: Duration },
    /// Entra, or the path to it, failed for now.
    Unavailable { retry_after: Duration },
    /// No answer within the deadline.
    Timeout,
    /// This host's own credential could not sign.
    Credential,
}

impl TokenError {
    /// What kind of refusal this is.
    pub fn refusal(&self) -> Refusal {
        use crate::cache::schedule::TRANSIENT_HOLD;
        match self {
            TokenError::BadRequest(_) => Refusal::BadRequest,
            TokenError::Forbidden(_) => Refusal::Forbidden,
            TokenError::NewTenantsLimited { retry_after, .. } => Refusal::TooManyNewTenants {
                retry_after: *retry_after,
            },
            TokenError::NewTenantsBusy { .. } => Refusal::TooManyNewTenants {
                retry_after: Duration::from_secs(1),
            },
            TokenError::Unavailable(CacheError::Load(e)) => match e {
                AcquireError::Refused { .. } => Refusal::EntraRefused,
                AcquireError::Throttled { retry_after, .. } => Refusal::Throttled {
                    retry_after: *retry_after,
                },
                AcquireError::Unavailable { .. } => Refusal::Unavailable {
                    retry_after: TRANSIENT_HOLD,
                },
                AcquireError::Timeout { .. } => Refusal::Timeout,
                AcquireError::Credential(_) => Refusal::Credential,
            },
            TokenError::Unavailable(CacheError::Deadline { .. }) => Refusal::Timeout,
            TokenError::Unavailable(
                CacheError::TooShortLived { .. } | CacheError::Abandoned { .. },
            ) => Refusal::Unavailable {
                retry_after: TRANSIENT_HOLD,
            },
        }
    }

    /// The machine code callers get (`invalid_request`, `entra_refused`, …).
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::BadRequest(_) => "invalid_request",
            TokenError::Forbidden(_) => "forbidden",
            TokenError::NewTenantsLimited { .. } | TokenError::NewTenantsBusy { .. } => {
                "too_many_new_tenants"
            }
            TokenError::Unavailable(CacheError::Load(e)) => e.code(),
            TokenError::Unavailable(CacheError::Deadline { .. }) => "entra_timeout",
            TokenError::Unavailable(_) => "entra_unavailable",
        }
    }

    /// Entra's answer behind the refusal, if any (its ids help Microsoft's
    /// support find the request).
    pub fn entra(&self) -> Option<&EntraError> {
        match self {
            TokenError::Unavailable(CacheError::Load(e)) => e.entra(),
            _ => None,
        }
    }
}
