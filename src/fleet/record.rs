//! What the shared cache holds besides tokens ([`crate::seal::record`]),
//! before sealing: a refusal or
//! throttle the whole fleet answers without asking Entra again. Plain data
//! with its JSON form; pure, so tested without a store.

use crate::cache::{CacheKey, LoadError};
use crate::config::TenantId;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// No later than the year 2286.
const MAX_UNIX: u64 = 9_999_999_999;

/// Why a shared value is not a record (it is never served).
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("not a {kind} record: {source}")]
    NotJson {
        kind: &'static str,
        source: serde_json::Error,
    },
    #[error("not a refusal record: its end is out of range")]
    BlockOutOfRange,
}

/// A failure as the fleet shares it. What is shared, and how it reads
/// again, is the source error's decision ([`Shareable`]); the fleet stores
/// it and answers it, and `detail` (the issuer's own words) is opaque to it.
#[derive(Debug, Clone, PartialEq)]
pub enum Shared {
    /// The issuer throttles this (tenant, resource) for `wait`.
    Throttled {
        wait: Duration,
        detail: Option<serde_json::Value>,
    },
    /// The issuer refused for a reason every host would meet alike.
    Refused { detail: Option<serde_json::Value> },
}

/// A token source's error that the fleet can share: which failures every
/// host would meet alike, and the error a shared one becomes on another
/// host. (This host's own failures, of its credential or clock, and
/// transient ones, are not shared.)
pub trait Shareable: LoadError {
    /// What to share of this failure, if anything.
    fn shared(&self) -> Option<Shared>;
    /// The error callers of `tenant` get for a failure another host shared.
    fn from_shared(tenant: &TenantId, shared: Shared) -> Self;
}

/// What was refused, for how long, and the issuer's words for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockRecord {
    /// `throttled` or `refused`.
    pub kind: String,
    /// Until when (unix seconds) the fleet answers it locally.
    pub until: u64,
    /// The issuer's words (for Entra, its error body), opaque to the fleet.
    #[serde(default, rename = "entra")]
    pub detail: Option<serde_json::Value>,
}

impl BlockRecord {
    /// What the fleet should remember of `error`, seen at `now`: a throttle
    /// for its wait, a refusal the error calls shareable for `negative_ttl`.
    pub fn of<E: Shareable>(error: &E, now: u64, negative_ttl: Duration) -> Option<BlockRecord> {
        Some(match error.shared()? {
            Shared::Throttled { wait, detail } => BlockRecord {
                kind: "throttled".into(),
                until: now + wait.as_secs().max(1),
                detail,
            },
            Shared::Refused { detail } => BlockRecord {
                kind: "refused".into(),
                until: now + negative_ttl.as_secs().max(1),
                detail,
            },
        })
    }

    pub fn is_throttle(&self) -> bool {
        self.kind == "throttled"
    }

    /// The error callers get for it at `now`, as if this host had seen it.
    pub fn to_error<E: Shareable>(&self, key: &CacheKey, now: u64) -> E {
        let shared = match (self.is_throttle(), self.detail.clone()) {
            (false, Some(detail)) => Shared::Refused {
                detail: Some(detail),
            },
            (_, detail) => Shared::Throttled {
                wait: Duration::from_secs(self.until.saturating_sub(now).max(1)),
                detail,
            },
        };
        E::from_shared(&key.tenant, shared)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<BlockRecord, RecordError> {
        let block: BlockRecord =
            serde_json::from_slice(bytes).map_err(|source| RecordError::NotJson {
                kind: "refusal",
                source,
            })?;
        if block.until > MAX_UNIX {
            return Err(RecordError::BlockOutOfRange);
        }
        Ok(block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::response::EntraError;
    use crate::authority::AcquireError;
    use std::sync::Arc;

    fn entra(codes: &[u32]) -> Arc<EntraError> {
        Arc::new(EntraError {
            status: 400,
            error: "invalid_client".into(),
            description: "AADSTS…".into(),
            codes: codes.to_vec(),
            correlation_id: Some("c".into()),
            trace_id: None,
        })
    }

    #[test]
    fn throttles_and_tenant_refusals_are_shared_the_rest_is_not() {
        let ttl = Duration::from_secs(30);
        let throttled = AcquireError::Throttled {
            tenant: "t".into(),
            retry_after: Duration::from_secs(60),
            entra: None,
        };
        let block = BlockRecord::of(&throttled, 1000, ttl).unwrap();
        assert_eq!((block.kind.as_str(), block.until), ("throttled", 1060));
        let consent = AcquireError::Refused {
            tenant: "t".into(),
            entra: entra(&[700_016]),
        };
        assert_eq!(BlockRecord::of(&consent, 1000, ttl).unwrap().until, 1030);
        // This host's certificate or clock: another host may do better.
        for local in [700_027, 700_024] {
            let e = AcquireError::Refused {
                tenant: "t".into(),
                entra: entra(&[local]),
            };
            assert!(BlockRecord::of(&e, 1000, ttl).is_none());
        }
        let transient = AcquireError::Unavailable {
            tenant: "t".into(),
            reason: "503".into(),
            entra: None,
        };
        assert!(BlockRecord::of(&transient, 1000, ttl).is_none());
        let key = CacheKey::new(
            &crate::config::AppKey::example(),
            &"contoso.com".to_owned().try_into().unwrap(),
            &crate::config::Resource::parse("https://graph.microsoft.com").unwrap(),
        );
        match BlockRecord::decode(&block.encode())
            .unwrap()
            .to_error(&key, 1010)
        {
            AcquireError::Throttled { retry_after, .. } => {
                assert_eq!(retry_after, Duration::from_secs(50))
            }
            other => panic!("{other:?}"),
        }
        let refused = BlockRecord::of(&consent, 1000, ttl)
            .unwrap()
            .to_error(&key, 1001);
        assert!(
            matches!(refused, AcquireError::Refused { ref entra, .. } if entra.codes == [700_016])
        );
    }
}
