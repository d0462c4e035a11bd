//! What the broker knows about each tenant beyond its token: the consent
//! state Entra's answers imply, the last error, upstream counts, and the
//! roles the token carries. Read by the admin API and `tokenbroker status`.
//! The classification and the JSON shapes are pure; the book is a bounded map.

use crate::authority::aadsts::{self, ConsentSignal};
use crate::authority::AcquireError;
use crate::cache::{BoxFuture, CacheKey, Fetched, LoadContext, TokenSource};
use crate::clock::SharedClock;
use crate::config::{TenantId, TenantKey};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Whether a tenant granted the app admin consent, as far as Entra said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Consent {
    /// A token was issued.
    Granted,
    /// AADSTS700016 or 65001: not consented (or an unknown tenant).
    Missing,
    /// AADSTS7000112: the app is disabled in the tenant.
    Disabled,
    /// No answer yet.
    #[default]
    Unknown,
}

impl Consent {
    /// The metric and JSON label.
    pub fn as_str(self) -> &'static str {
        match self {
            Consent::Granted => "granted",
            Consent::Missing => "missing",
            Consent::Disabled => "disabled",
            Consent::Unknown => "unknown",
        }
    }

    /// What a failed request says about consent; `None` when it says nothing
    /// (throttling, an outage, a certificate problem).
    pub fn after_error(error: &AcquireError) -> Option<Consent> {
        Some(match aadsts::consent(&error.entra()?.codes)? {
            ConsentSignal::Missing => Consent::Missing,
            ConsentSignal::Disabled => Consent::Disabled,
        })
    }
}

/// The last failure for a (tenant, resource).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastError {
    /// Unix seconds.
    pub at: u64,
    /// The code callers get (`entra_refused`, `throttled`, …).
    pub error: &'static str,
    pub aadsts: Option<String>,
    pub correlation_id: Option<String>,
    pub message: String,
}

/// Upstream outcomes of token loads for one (tenant, resource).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Upstream {
    pub success: u64,
    pub failure: u64,
}

/// What is recorded per (tenant, resource).
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub last_error: Option<LastError>,
    pub upstream: Upstream,
    /// Unix seconds of the newest token.
    pub acquired_at: Option<u64>,
    /// The newest token's `roles` claim, when it could be read.
    pub roles: Option<Vec<String>>,
}

/// Per (tenant, resource) records and per tenant consent, bounded like the
/// cache (entries nobody touched for `keep_warm` go).
#[derive(Debug)]
pub struct StatusBook {
    records: moka::sync::Cache<CacheKey, Arc<Mutex<Record>>>,
    consent: moka::sync::Cache<TenantKey, Consent>,
}

impl StatusBook {
    pub fn new(max_entries: u64, keep: Duration) -> StatusBook {
        StatusBook {
            records: moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .time_to_idle(keep)
                .build(),
            consent: moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .time_to_idle(keep)
                .build(),
        }
    }

    fn with_record(&self, key: &CacheKey, update: impl FnOnce(&mut Record)) {
        let record = self.records.get_with_by_ref(key, Arc::default);
        let mut record = record.lock().unwrap_or_else(|p| p.into_inner());
        update(&mut record);
    }

    /// A token arrived; returns the tenant's consent if it changed. An
    /// earlier error is superseded: status shows errors no success followed.
    pub fn success(&self, key: &CacheKey, at: u64, roles: Option<Vec<String>>) -> Option<Consent> {
        self.with_record(key, |r| {
            r.upstream.success += 1;
            r.last_error = None;
            r.acquired_at = Some(at);
            r.roles = roles;
        });
        self.set_consent(&key.tenant, Consent::Granted)
    }

    /// A load failed; returns the tenant's consent if it changed.
    pub fn failure(&self, key: &CacheKey, at: u64, error: &AcquireError) -> Option<Consent> {
        let entra = error.entra();
        let last = LastError {
            at,
            error: error.code(),
            aadsts: entra.and_then(|e| e.aadsts()),
            correlation_id: entra.and_then(|e| e.correlation_id.clone()),
            message: error.to_string(),
        };
        self.with_record(key, |r| {
            r.upstream.failure += 1;
            r.last_error = Some(last);
        });
        Consent::after_error(error).and_then(|c| self.set_consent(&key.tenant, c))
    }

    fn set_consent(&self, tenant: &TenantId, consent: Consent) -> Option<Consent> {
        let tenant = tenant.key();
        let changed = self.consent.get(&tenant) != Some(consent);
        self.consent.insert(tenant, consent);
        changed.then_some(consent)
    }

    pub fn consent(&self, tenant: &TenantId) -> Consent {
        self.consent.get(&tenant.key()).unwrap_or_default()
    }

    pub fn record(&self, key: &CacheKey) -> Record {
        self.records
            .get(key)
            .map(|r| r.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .unwrap_or_default()
    }

    /// Forgets `key`'s last error (an evicted tenant starts clean).
    pub fn forget_error(&self, key: &CacheKey) {
        if let Some(record) = self.records.get(key) {
            record.lock().unwrap_or_else(|p| p.into_inner()).last_error = None;
        }
    }

    /// Forgets everything (the app identity changed).
    pub fn clear(&self) {
        self.records.invalidate_all();
        self.consent.invalidate_all();
    }
}

/// Records each fetch's outcome in the status book, and a change of
/// consent with the observer: a layer over the token source (above the
/// fleet, so a token or refusal another host shared counts as one fetched
/// here would), not code inside it.
pub(super) struct Recorded<S> {
    inner: S,
    book: Arc<StatusBook>,
    known: Arc<super::known::KnownTenants>,
    clock: SharedClock,
    observer: Arc<dyn super::Observer>,
}

impl<S> Recorded<S> {
    pub(super) fn new(
        inner: S,
        book: Arc<StatusBook>,
        known: Arc<super::known::KnownTenants>,
        clock: SharedClock,
        observer: Arc<dyn super::Observer>,
    ) -> Recorded<S> {
        Recorded {
            inner,
            book,
            known,
            clock,
            observer,
        }
    }
}

impl<S: TokenSource<Error = AcquireError>> TokenSource for Recorded<S> {
    type Error = AcquireError;

    fn fetch(
        &self,
        key: &CacheKey,
        load: &LoadContext,
    ) -> BoxFuture<Result<Fetched, AcquireError>> {
        let fetched = self.inner.fetch(key, load);
        let book = Arc::clone(&self.book);
        let known = Arc::clone(&self.known);
        let clock = Arc::clone(&self.clock);
        let observer = Arc::clone(&self.observer);
        let key = key.clone();
        Box::pin(async move {
            let result = fetched.await;
            let changed = match &result {
                Ok(token) => {
                    known.insert(&key.tenant);
                    book.success(
                        &key,
                        clock.unix_now(),
                        token_roles(token.access_token.expose()),
                    )
                }
                Err(e) => book.failure(&key, clock.unix_now(), e),
            };
            if let Some(consent) = changed {
                observer.consent(&key.tenant, consent);
            }
            result
        })
    }
}

/// The `roles` claim of a JWT access token, best effort: Microsoft says
/// tokens are opaque, so this is for diagnostics only. `None` when the
/// token is not a readable JWT; an empty list when it has no roles.
pub fn token_roles(token: &str) -> Option<Vec<String>> {
    let claims = crate::token::peek_claims(token).ok()?;
    Some(
        claims
            .get("roles")
            .and_then(|r| r.as_array())
            .map(|r| {
                r.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    )
}

/// `required` minus `roles`; `None` when the roles are unknown. (The
/// admin status and `check --online` both ask this.)
pub fn missing_permissions<P: AsRef<str>>(
    required: &[P],
    roles: Option<&[String]>,
) -> Option<Vec<String>> {
    let roles = roles?;
    Some(
        required
            .iter()
            .map(AsRef::as_ref)
            .filter(|p| !roles.iter().any(|r| r == p))
            .map(str::to_owned)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::response::EntraError;

    fn refused(code: u32) -> AcquireError {
        AcquireError::Refused {
            tenant: "t".into(),
            entra: Arc::new(EntraError {
                status: 400,
                error: "unauthorized_client".into(),
                description: format!("AADSTS{code}: no"),
                codes: vec![code],
                correlation_id: Some("corr".into()),
                trace_id: None,
            }),
        }
    }

    #[test]
    fn consent_follows_what_entra_said() {
        assert_eq!(
            Consent::after_error(&refused(700_016)),
            Some(Consent::Missing)
        );
        assert_eq!(
            Consent::after_error(&refused(65_001)),
            Some(Consent::Missing)
        );
        assert_eq!(
            Consent::after_error(&refused(7_000_112)),
            Some(Consent::Disabled)
        );
        assert_eq!(Consent::after_error(&refused(700_027)), None);
        let down = AcquireError::Unavailable {
            tenant: "t".into(),
            reason: "x".into(),
            entra: None,
        };
        assert_eq!(Consent::after_error(&down), None);
    }

    #[test]
    fn the_book_records_outcomes_and_reports_consent_changes() {
        let book = StatusBook::new(100, Duration::from_secs(3600));
        let key = CacheKey::new(
            &TenantId::try_from("Contoso.com".to_owned()).unwrap(),
            &crate::config::Resource::parse("https://graph.microsoft.com").unwrap(),
        );
        assert_eq!(book.consent(&key.tenant), Consent::Unknown);
        assert_eq!(
            book.failure(&key, 10, &refused(700_016)),
            Some(Consent::Missing)
        );
        assert_eq!(book.failure(&key, 11, &refused(700_016)), None, "no change");
        let record = book.record(&key);
        assert_eq!(
            record.upstream,
            Upstream {
                success: 0,
                failure: 2
            }
        );
        let last = record.last_error.unwrap();
        assert_eq!((last.at, last.error), (11, "entra_refused"));
        assert_eq!(last.aadsts.as_deref(), Some("AADSTS700016"));
        assert_eq!(last.correlation_id.as_deref(), Some("corr"));
        assert_eq!(
            book.success(&key, 12, Some(vec!["Mail.Read".into()])),
            Some(Consent::Granted)
        );
        let record = book.record(&key);
        assert_eq!(record.acquired_at, Some(12));
        assert_eq!(record.roles.as_deref(), Some(&["Mail.Read".to_owned()][..]));
        // A success supersedes the last error: the row no longer shows it.
        assert!(record.last_error.is_none());
        book.failure(&key, 13, &refused(700_016));
        assert!(book.record(&key).last_error.is_some());
        book.forget_error(&key);
        assert!(book.record(&key).last_error.is_none());
    }

    #[test]
    fn missing_permissions_are_required_minus_roles() {
        let required = vec!["Mail.Send".to_owned(), "Mail.ReadWrite".to_owned()];
        let roles = vec!["Mail.ReadWrite".to_owned()];
        assert_eq!(
            missing_permissions(&required, Some(&roles)),
            Some(vec!["Mail.Send".to_owned()])
        );
        assert_eq!(missing_permissions(&required, None), None);
        assert_eq!(
            missing_permissions::<String>(&[], Some(&roles)),
            Some(vec![])
        );
    }

    #[test]
    fn roles_are_read_from_a_jwt_best_effort() {
        use base64::Engine;
        let enc = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let jwt = format!(
            "{}.{}.sig",
            enc(&serde_json::json!({"alg": "RS256"})),
            enc(&serde_json::json!({"roles": ["Mail.Read", "Mail.Send"]}))
        );
        assert_eq!(
            token_roles(&jwt),
            Some(vec!["Mail.Read".to_owned(), "Mail.Send".to_owned()])
        );
        let none = format!(
            "{}.{}.sig",
            enc(&serde_json::json!({})),
            enc(&serde_json::json!({}))
        );
        assert_eq!(token_roles(&none), Some(vec![]));
        assert_eq!(token_roles("opaque"), None);
    }
}
