//! Cache behaviour over simulated time, with a fake token source.

use super::*;
use crate::authority::response::EntraError;
use crate::clock::TokioClock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

const HOUR: Duration = Duration::from_secs(3600);

/// A token source whose answers the test controls, counting every fetch.
struct FakeSource {
    lifetime: Duration,
    refresh_in: Option<Duration>,
    latency: Duration,
    failure: Mutex<Option<AcquireError>>,
    fetches: Mutex<HashMap<String, usize>>,
    issued: AtomicUsize,
}

impl FakeSource {
    fn new(lifetime: Duration) -> Arc<FakeSource> {
        Arc::new(FakeSource {
            lifetime,
            refresh_in: None,
            latency: Duration::from_millis(100),
            failure: Mutex::new(None),
            fetches: Mutex::new(HashMap::new()),
            issued: AtomicUsize::new(0),
        })
    }

    fn fail_with(&self, error: Option<AcquireError>) {
        *self.failure.lock().unwrap() = error;
    }

    fn fetches(&self, tenant: &str) -> usize {
        self.fetches
            .lock()
            .unwrap()
            .get(tenant)
            .copied()
            .unwrap_or(0)
    }
}

impl TokenSource for FakeSource {
    fn fetch(&self, key: &CacheKey) -> BoxFuture<Result<TokenResponse, AcquireError>> {
        *self
            .fetches
            .lock()
            .unwrap()
            .entry(key.tenant.clone())
            .or_default() += 1;
        let failure = self.failure.lock().unwrap().clone();
        let n = self.issued.fetch_add(1, Ordering::SeqCst);
        let (lifetime, refresh_in, latency) = (self.lifetime, self.refresh_in, self.latency);
        let tenant = key.tenant.clone();
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            match failure {
                Some(error) => Err(error),
                None => Ok(TokenResponse {
                    access_token: AccessToken::new(format!("token-{tenant}-{n}")),
                    expires_in: lifetime,
                    refresh_in,
                }),
            }
        })
    }
}

fn settings() -> CacheSettings {
    CacheSettings {
        min_remaining: Duration::from_secs(300),
        keep_warm: Duration::from_secs(24 * 3600),
        negative_ttl: Duration::from_secs(30),
        max_entries: 10_000,
        refresh_retry_base: schedule::RETRY_BASE,
        refresh_retry_cap: schedule::RETRY_CAP,
    }
}

fn cache_with(source: Arc<FakeSource>, settings: CacheSettings) -> TokenCache {
    TokenCache::new(
        source,
        settings,
        Arc::new(TokioClock::starting_at(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        )),
        Jitter::seeded(1),
        Arc::new(NoObserver),
    )
}

fn refused(tenant: &str) -> AcquireError {
    AcquireError::Refused {
        tenant: tenant.into(),
        entra: Arc::new(EntraError {
            status: 400,
            error: "unauthorized_client".into(),
            description: "AADSTS700016: not found".into(),
            codes: vec![700_016],
            correlation_id: Some("corr".into()),
            trace_id: None,
        }),
    }
}

fn unavailable(tenant: &str) -> AcquireError {
    AcquireError::Unavailable {
        tenant: tenant.into(),
        reason: "connection refused".into(),
        entra: None,
    }
}

async fn concurrent_gets(
    cache: &TokenCache,
    key: &CacheKey,
    n: usize,
) -> Vec<Result<Grant, AcquireError>> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let cache = cache.clone();
        let key = key.clone();
        tasks.spawn(async move { cache.get(&key).await });
    }
    let mut results = Vec::new();
    while let Some(r) = tasks.join_next().await {
        results.push(r.unwrap());
    }
    results
}

#[tokio::test(start_paused = true)]
async fn a_thousand_cold_callers_make_one_upstream_request() {
    let source = FakeSource::new(HOUR);
    let cache = cache_with(source.clone(), settings());
    let key = CacheKey::new("contoso.com", "https://graph.microsoft.com");
    let results = concurrent_gets(&cache, &key, 1000).await;
    assert_eq!(source.fetches("contoso.com"), 1);
    let tokens: std::collections::HashSet<String> = results
        .iter()
        .map(|r| r.as_ref().unwrap().token.access_token.expose().to_owned())
        .collect();
    assert_eq!(tokens.len(), 1, "everyone shares the one token");
    assert!(results
        .iter()
        .all(|r| r.as_ref().unwrap().lookup == Lookup::Miss));
    // Afterwards: a hit, no new request.
    let again = cache.get(&key).await.unwrap();
    assert_eq!(again.lookup, Lookup::Hit);
    assert_eq!(source.fetches("contoso.com"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_thousand_callers_share_one_error_and_it_is_remembered() {
    let source = FakeSource::new(HOUR);
    source.fail_with(Some(refused("contoso.com")));
    let cache = cache_with(source.clone(), settings());
    let key = CacheKey::new("Contoso.com", "https://graph.microsoft.com");
    let results = concurrent_gets(&cache, &key, 1000).await;
    assert_eq!(source.fetches("contoso.com"), 1);
    for r in &results {
        match r {
            Err(AcquireError::Refused { entra, .. }) => assert_eq!(entra.codes, vec![700_016]),
            other => panic!("{other:?}"),
        }
    }
    // Remembered for negative_ttl: a caller in a loop cannot hammer Entra.
    tokio::time::advance(Duration::from_secs(29)).await;
    assert!(cache.get(&key).await.is_err());
    assert_eq!(source.fetches("contoso.com"), 1);
    // Afterwards the next caller asks again (consent may have been granted).
    tokio::time::advance(Duration::from_secs(2)).await;
    source.fail_with(None);
    assert!(cache.get(&key).await.is_ok());
    assert_eq!(source.fetches("contoso.com"), 2);
}

#[tokio::test(start_paused = true)]
async fn throttling_is_answered_locally_with_the_time_left() {
    let source = FakeSource::new(HOUR);
    source.fail_with(Some(AcquireError::Throttled {
        tenant: "t.com".into(),
        retry_after: Duration::from_secs(30),
        entra: None,
    }));
    let cache = cache_with(source.clone(), settings());
    let key = CacheKey::new("t.com", "https://graph.microsoft.com");
    assert!(matches!(
        cache.get(&key).await,
        Err(AcquireError::Throttled { .. })
    ));
    tokio::time::advance(Duration::from_secs(10)).await;
    match cache.get(&key).await {
        Err(AcquireError::Throttled { retry_after, .. }) => {
            assert!(
                retry_after <= Duration::from_secs(20) && retry_after >= Duration::from_secs(19),
                "{retry_after:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        source.fetches("t.com"),
        1,
        "nothing upstream inside the window"
    );
    tokio::time::advance(Duration::from_secs(21)).await;
    source.fail_with(None);
    assert!(cache.get(&key).await.is_ok());
    assert_eq!(source.fetches("t.com"), 2);
}

#[tokio::test(start_paused = true)]
async fn an_outage_does_not_drop_a_valid_token_and_refresh_recovers() {
    let source = FakeSource::new(HOUR);
    let cache = cache_with(source.clone(), settings());
    let key = CacheKey::new("t.com", "https://graph.microsoft.com");
    let first = cache.get(&key).await.unwrap().token.access_token.clone();
    source.fail_with(Some(unavailable("t.com")));
    // Past the refresh point (≈ 40 min) and well into the retries: callers
    // still get the first token, without waiting.
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let grant = cache.get(&key).await.unwrap();
        assert_ne!(grant.lookup, Lookup::Miss);
        assert_eq!(grant.token.access_token, first);
    }
    let failed_refreshes = source.fetches("t.com") - 1;
    assert!(
        failed_refreshes >= 3,
        "the refresher kept retrying: {failed_refreshes}"
    );
    // The authority comes back: the next retry refreshes, a new token is served.
    source.fail_with(None);
    tokio::time::sleep(schedule::RETRY_CAP + Duration::from_secs(1)).await;
    let grant = cache.get(&key).await.unwrap();
    assert_ne!(grant.token.access_token, first);
    assert_eq!(grant.lookup, Lookup::Hit);
}

#[tokio::test(start_paused = true)]
async fn a_token_near_expiry_is_not_handed_out() {
    let source = FakeSource::new(HOUR);
    let cache = cache_with(source.clone(), settings());
    let key = CacheKey::new("t.com", "https://graph.microsoft.com");
    let first = cache.get(&key).await.unwrap();
    source.fail_with(Some(unavailable("t.com")));
    // 56 minutes in: under 5 minutes left, so the token is withheld and the
    // caller waits on (and gets the failure of) a fresh request.
    tokio::time::advance(Duration::from_secs(56 * 60)).await;
    let result = cache.get(&key).await;
    assert!(
        matches!(result, Err(AcquireError::Unavailable { .. })),
        "{result:?}"
    );
    assert!(first.token.remaining(Instant::now()) < Duration::from_secs(300));
}

#[tokio::test(start_paused = true)]
async fn a_day_of_steady_callers_refreshes_on_schedule_and_never_waits() {
    let lifetime = HOUR;
    let source = FakeSource::new(lifetime);
    let cache = cache_with(source.clone(), settings());
    let tenants = ["a.com", "b.com", "c.com", "d.com"];
    let keys: Vec<CacheKey> = tenants
        .iter()
        .map(|t| CacheKey::new(t, "https://graph.microsoft.com"))
        .collect();
    // Warm-up.
    for key in &keys {
        cache.get(key).await.unwrap();
    }
    let start = Instant::now();
    let mut waited = 0;
    let mut lookups = 0;
    while Instant::now() - start < Duration::from_secs(24 * 3600) {
        tokio::time::sleep(Duration::from_secs(7)).await;
        for key in &keys {
            let grant = cache.get(key).await.unwrap();
            assert!(grant.token.remaining(Instant::now()) >= Duration::from_secs(300));
            lookups += 1;
            if grant.lookup == Lookup::Miss {
                waited += 1;
            }
        }
    }
    assert_eq!(
        waited, 0,
        "after warm-up no caller waits on the authority ({lookups} lookups)"
    );
    // 24 h ÷ (⅔ × 1 h) = 36 refreshes, plus the warm-up request.
    let expected = 24.0 * 3600.0 / (lifetime.as_secs_f64() * 2.0 / 3.0) + 1.0;
    for tenant in tenants {
        let n = source.fetches(tenant) as f64;
        assert!(
            (n - expected).abs() <= 1.0,
            "{tenant}: {n} upstream requests, expected {expected} ± 1"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn refresh_in_from_entra_is_followed() {
    let mut source = FakeSource::new(HOUR);
    Arc::get_mut(&mut source).unwrap().refresh_in = Some(Duration::from_secs(1800));
    let cache = cache_with(source.clone(), settings());
    let key = CacheKey::new("a.com", "https://graph.microsoft.com");
    cache.get(&key).await.unwrap();
    tokio::time::sleep(Duration::from_secs(12 * 3600)).await;
    // 12 h ÷ 30 min = 24 refreshes, plus the first request.
    let n = source.fetches("a.com");
    assert!((24..=26).contains(&n), "{n}");
}

#[tokio::test(start_paused = true)]
async fn unused_tenants_are_dropped_after_keep_warm() {
    let source = FakeSource::new(HOUR);
    let mut settings = settings();
    settings.keep_warm = Duration::from_secs(3 * 3600);
    let cache = cache_with(source.clone(), settings);
    let idle = CacheKey::new("idle.com", "https://graph.microsoft.com");
    let busy = CacheKey::new("busy.com", "https://graph.microsoft.com");
    cache.get(&idle).await.unwrap();
    cache.get(&busy).await.unwrap();
    for _ in 0..(6 * 60) {
        tokio::time::sleep(Duration::from_secs(60)).await;
        cache.get(&busy).await.unwrap();
    }
    assert!(!cache.contains(&idle), "idle tenant dropped");
    assert!(cache.contains(&busy));
    let refreshes_when_dropped = source.fetches("idle.com");
    // Refreshed while warm (≈ every 40 min for 3 h), then never again.
    assert!(
        (4..=6).contains(&refreshes_when_dropped),
        "{refreshes_when_dropped}"
    );
    tokio::time::sleep(Duration::from_secs(10 * 3600)).await;
    assert_eq!(source.fetches("idle.com"), refreshes_when_dropped);
    // Asking again starts afresh.
    cache.get(&idle).await.unwrap();
    assert_eq!(source.fetches("idle.com"), refreshes_when_dropped + 1);
}

#[tokio::test(start_paused = true)]
async fn keys_are_separate_per_tenant_and_resource() {
    let source = FakeSource::new(HOUR);
    let cache = cache_with(source.clone(), settings());
    let graph = CacheKey::new("a.com", "https://graph.microsoft.com");
    let other = CacheKey::new("a.com", "https://outlook.office365.com");
    let g = cache.get(&graph).await.unwrap();
    let o = cache.get(&other).await.unwrap();
    assert_ne!(g.token.access_token, o.token.access_token);
    assert_eq!(source.fetches("a.com"), 2);
    assert_eq!(cache.len(), 2);
}
