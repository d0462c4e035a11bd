//! What the broker knows about each tenant beyond its token: the consent
//! state Entra's answers imply, the last error, upstream counts, and the
//! roles the token carries. Read by the admin API and `tokenbroker status`.
//! The classification and the JSON shapes are pure; the book is a bounded map.

use crate::authority::aadsts::{self, ConsentSignal};
use crate::authority::AcquireError;
use crate::cache::{
    BoxFuture, CacheKey, CacheObserver, CachedToken, Fetched, LoadContext, Lookup, TokenSource,
    Trigger,
};
use crate::clock::SharedClock;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

/// What is recorded for a (tenant, resource) whose fetch failed: kept only
/// until a success supersedes it, since a broker may cache tens of
/// thousands of keys and most never fail. (Upstream counts are the
/// cache's; when a token was obtained and its roles are read from the
/// token itself.)
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub last_error: Option<Box<LastError>>,
    /// What Entra's last answer said of consent (`None`: nothing).
    pub consent: Option<Consent>,
}

/// The records of failed (tenant, resource) keys. An entry goes with a
/// success, or when the cache drops the key ([`BookKeeping`]), so the book
/// is bounded by the cache's own bound.
#[derive(Debug, Default)]
pub struct StatusBook {
    records: Mutex<HashMap<CacheKey, Record>>,
}

impl StatusBook {
    pub fn new() -> StatusBook {
        StatusBook::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Record>> {
        // Updates are plain assignments: a poisoned map is still whole.
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A token arrived: the record (and its error) is superseded. Returns
    /// the consent if it may have changed.
    pub fn success(&self, key: &CacheKey) -> Option<Consent> {
        let before = self.lock().remove(key);
        match before.and_then(|r| r.consent) {
            Some(Consent::Granted) => None,
            _ => Some(Consent::Granted),
        }
    }

    /// A load failed at `at` (unix seconds); returns the tenant's consent
    /// if it changed.
    pub fn failure(&self, key: &CacheKey, at: u64, error: &AcquireError) -> Option<Consent> {
        let entra = error.entra();
        let last = LastError {
            at,
            error: error.code(),
            aadsts: entra.and_then(|e| e.aadsts()),
            correlation_id: entra.and_then(|e| e.correlation_id.clone()),
            message: error.to_string(),
        };
        let said = Consent::after_error(error);
        let mut records = self.lock();
        let record = records.entry(key.clone()).or_default();
        record.last_error = Some(Box::new(last));
        let said = said?;
        let changed = record.consent != Some(said);
        record.consent = Some(said);
        changed.then_some(said)
    }

    /// What is recorded for `key` (nothing: no failure since its last success).
    pub fn record(&self, key: &CacheKey) -> Option<Record> {
        self.lock().get(key).cloned()
    }

    /// Forgets `key`'s last error (an evicted tenant starts clean).
    pub fn forget_error(&self, key: &CacheKey) {
        if let Some(record) = self.lock().get_mut(key) {
            record.last_error = None;
        }
    }

    /// Forgets `key` (the cache dropped it).
    pub fn forget(&self, key: &CacheKey) {
        self.lock().remove(key);
    }

    /// Forgets everything (the app identity changed).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Records kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The cache's observer as the broker sees it: every event goes on to the
/// metrics, and a key the cache drops leaves the status book too.
#[derive(Debug)]
pub(super) struct BookKeeping {
    pub(super) inner: Arc<dyn CacheObserver>,
    pub(super) book: Arc<StatusBook>,
}

impl CacheObserver for BookKeeping {
    fn lookup(&self, result: Lookup) {
        self.inner.lookup(result);
    }
    fn load_started(&self, trigger: Trigger) {
        self.inner.load_started(trigger);
    }
    fn token_stored(&self, key: &CacheKey, token: &CachedToken) {
        self.inner.token_stored(key, token);
    }
    fn forced_by_hash(&self) {
        self.inner.forced_by_hash();
    }
    fn dropped(&self, key: &CacheKey) {
        self.book.forget(key);
        self.inner.dropped(key);
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
                Ok(_) => {
                    known.insert(&key.app, &key.tenant);
                    book.success(&key)
                }
                Err(e) => book.failure(&key, clock.unix_now(), e),
            };
            if let Some(consent) = changed {
                observer.consent(&key, consent);
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
    fn the_book_records_failures_until_a_success_and_reports_consent_changes() {
        let book = StatusBook::new();
        let key = CacheKey::new(
            &crate::config::AppKey::example(),
            &crate::config::TenantId::try_from("Contoso.com".to_owned()).unwrap(),
            &crate::config::Resource::parse("https://graph.microsoft.com").unwrap(),
        );
        assert!(book.record(&key).is_none());
        assert_eq!(
            book.failure(&key, 10, &refused(700_016)),
            Some(Consent::Missing)
        );
        assert_eq!(book.failure(&key, 11, &refused(700_016)), None, "no change");
        let record = book.record(&key).unwrap();
        assert_eq!(record.consent, Some(Consent::Missing));
        let last = record.last_error.unwrap();
        assert_eq!((last.at, last.error), (11, "entra_refused"));
        assert_eq!(last.aadsts.as_deref(), Some("AADSTS700016"));
        assert_eq!(last.correlation_id.as_deref(), Some("corr"));
        // A success supersedes the record: the row no longer shows the error.
        assert_eq!(book.success(&key), Some(Consent::Granted));
        assert!(book.is_empty());
        book.failure(&key, 13, &refused(700_016));
        book.forget_error(&key);
        assert!(book.record(&key).unwrap().last_error.is_none());
        // The cache dropped the key: so does the book.
        book.forget(&key);
        assert!(book.is_empty());
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
