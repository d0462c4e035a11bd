//! Why no token came from Entra ([`AcquireError`]), what an operator does
//! about it, how the cache should treat it, and what of it the fleet
//! shares.

use super::aadsts;
use super::response::EntraError;
use crate::cache::{FailureKind, LoadError};
use crate::config::TenantId;
use std::sync::Arc;
use std::time::Duration;

/// Why a token could not be had. Cloneable: one upstream result is shared by
/// every caller waiting on it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AcquireError {
    /// Entra refused: consent missing, tenant unknown, certificate not registered… (HTTP 502).
    #[error("Entra refused the token request for tenant {tenant}: {entra}{}", remedy_suffix(.entra))]
    Refused {
        tenant: String,
        /// Entra's answer.
        entra: Arc<EntraError>,
    },
    /// Entra is throttling this tenant and resource; nothing goes upstream until it passes (HTTP 503).
    #[error("Entra is throttling requests for tenant {tenant}; retry after {} s", .retry_after.as_secs())]
    Throttled {
        tenant: String,
        /// Time left until a request may go upstream again.
        retry_after: Duration,
        /// Entra's answer, if it gave one.
        entra: Option<Arc<EntraError>>,
    },
    /// Entra could not be reached or kept failing (HTTP 503).
    #[error("Entra is unavailable for tenant {tenant}: {reason}")]
    Unavailable {
        tenant: String,
        /// The last failure.
        reason: String,
        /// Entra's last answer, if it gave one.
        entra: Option<Arc<EntraError>>,
    },
    /// Entra did not answer in time (HTTP 504).
    #[error("Entra did not answer within {} ms for tenant {tenant}", .after.as_millis())]
    Timeout {
        tenant: String,
        /// The per-request timeout that expired.
        after: Duration,
    },
    /// The credential could not sign or reload (HTTP 500; an operator must act).
    #[error("the app credential failed: {0}")]
    Credential(String),
}

fn remedy_suffix(entra: &EntraError) -> String {
    entra
        .codes
        .iter()
        .find_map(|c| aadsts::remedy(*c))
        .map(|r| format!(". What to do: {r}"))
        .unwrap_or_default()
}

/// What the fleet shares of Entra's refusals (decided here, where Entra's
/// answers are classified): a throttle, and a refusal about the tenant
/// (consent, an unknown tenant, a disabled app), which every host of the
/// fleet would meet alike; never this host's own (its credential, its
/// clock, Conditional Access on its address) nor a transient failure.
impl crate::fleet::record::Shareable for AcquireError {
    fn shared(&self) -> Option<crate::fleet::record::Shared> {
        use crate::fleet::record::Shared;
        let detail = |entra: &EntraError| serde_json::to_value(entra).ok();
        match self {
            AcquireError::Throttled { entra, .. } => match self.kind() {
                FailureKind::Throttled(wait) => Some(Shared::Throttled {
                    wait,
                    detail: entra.as_deref().and_then(detail),
                }),
                _ => None,
            },
            AcquireError::Refused { entra, .. } if self.is_tenant_wide() => Some(Shared::Refused {
                detail: detail(entra),
            }),
            _ => None,
        }
    }

    fn from_shared(tenant: &TenantId, shared: crate::fleet::record::Shared) -> AcquireError {
        use crate::fleet::record::Shared;
        let entra = |detail: Option<serde_json::Value>| {
            detail
                .and_then(|d| serde_json::from_value::<EntraError>(d).ok())
                .map(Arc::new)
        };
        let tenant_str = tenant.as_str().to_owned();
        match shared {
            Shared::Refused { detail } => match entra(detail) {
                Some(entra) => AcquireError::Refused {
                    tenant: tenant_str,
                    entra,
                },
                // A refusal whose words do not read is answered as a
                // short throttle, never as a token.
                None => AcquireError::Throttled {
                    tenant: tenant_str,
                    retry_after: Duration::from_secs(1),
                    entra: None,
                },
            },
            Shared::Throttled { wait, detail } => AcquireError::Throttled {
                tenant: tenant_str,
                retry_after: wait,
                entra: entra(detail),
            },
        }
    }
}

impl AcquireError {
    /// The `error` code callers get for it (and the admin status shows).
    pub fn code(&self) -> &'static str {
        match self {
            AcquireError::Refused { .. } => "entra_refused",
            AcquireError::Throttled { .. } => "throttled",
            AcquireError::Unavailable { .. } => "entra_unavailable",
            AcquireError::Timeout { .. } => "entra_timeout",
            AcquireError::Credential(_) => "credential_error",
        }
    }

    /// Whether Entra refused for a reason about the tenant, which every
    /// host of the fleet would meet alike (consent, an unknown tenant, a
    /// disabled app): not this host's credential, clock or address.
    pub fn is_tenant_wide(&self) -> bool {
        matches!(self, AcquireError::Refused { entra, .. } if aadsts::tenant_wide(&entra.codes))
    }

    /// Entra's answer behind the error, if any.
    pub fn entra(&self) -> Option<&EntraError> {
        match self {
            AcquireError::Refused { entra, .. } => Some(entra),
            AcquireError::Throttled { entra, .. } | AcquireError::Unavailable { entra, .. } => {
                entra.as_deref()
            }
            AcquireError::Timeout { .. } | AcquireError::Credential(_) => None,
        }
    }
}

impl LoadError for AcquireError {
    fn log_kind(&self) -> String {
        let entra = |e: &EntraError| {
            format!(
                "HTTP {} {} {}",
                e.status,
                e.error,
                e.aadsts().unwrap_or_default()
            )
        };
        match self {
            AcquireError::Refused { entra: e, .. } => format!("refused {}", entra(e)),
            AcquireError::Throttled { .. } => "throttled".to_owned(),
            AcquireError::Unavailable { entra: Some(e), .. } => format!("unavailable {}", entra(e)),
            // A transport failure's text names the authority's URL, not the tenant's
            // answer; the tenant is in its path.
            AcquireError::Unavailable {
                tenant,
                reason,
                entra: None,
            } => {
                format!(
                    "unavailable {}",
                    reason.replace(tenant.as_str(), "<tenant>")
                )
            }
            AcquireError::Timeout { .. } => "timeout".to_owned(),
            AcquireError::Credential(reason) => format!("credential {reason}"),
        }
    }

    fn kind(&self) -> FailureKind {
        match self {
            // A credential that cannot sign needs an operator, as a refusal does.
            AcquireError::Refused { .. } | AcquireError::Credential(_) => FailureKind::Refused,
            AcquireError::Throttled { retry_after, .. } => FailureKind::Throttled(*retry_after),
            AcquireError::Unavailable { .. } | AcquireError::Timeout { .. } => {
                FailureKind::Transient
            }
        }
    }

    fn with_retry_after(&self, left: Duration) -> AcquireError {
        match self {
            AcquireError::Throttled { tenant, entra, .. } => AcquireError::Throttled {
                tenant: tenant.clone(),
                retry_after: left,
                entra: entra.clone(),
            },
            other => other.clone(),
        }
    }
}
