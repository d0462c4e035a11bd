//! Cache behaviour over simulated time, with a fake token source.

use super::*;
use crate::clock::TokioClock;
use crate::config::Resource;
use crate::token::AccessToken;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

const HOUR: Duration = Duration::from_secs(3600);

/// A source's error: what kind, and a word to tell errors apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}")]
struct FakeError {
    kind: FailureKind,
    what: &'static str,
}

impl LoadError for FakeError {
    fn kind(&self) -> FailureKind {
        self.kind
    }

    fn log_kind(&self) -> String {
        self.what.to_owned()
    }

    fn with_retry_after(&self, left: Duration) -> Self {
        match self.kind {
            FailureKind::Throttled(_) => FakeError {
                kind: FailureKind::Throttled(left),
                what: self.what,
            },
            _ => self.clone(),
        }
    }
}

fn key(tenant: &str, resource: &str) -> CacheKey {
    CacheKey::new(
        &crate::config::AppKey::example(),
        &TenantId::try_from(tenant.to_owned()).unwrap(),
        &Resource::parse(resource).unwrap(),
    )
}

fn graph(tenant: &str) -> CacheKey {
    key(tenant, "https://graph.microsoft.com")
}

/// A token source whose answers the test controls, counting every fetch.
struct FakeSource {
    lifetime: Duration,
    refresh_in: Option<Duration>,
    latency: Duration,
    failure: Mutex<Option<FakeError>>,
    fetches: Mutex<HashMap<String, usize>>,
    /// When each fetch started.
    times: Mutex<Vec<Instant>>,
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
            times: Mutex::new(Vec::new()),
            issued: AtomicUsize::new(0),
        })
    }

    fn fail_with(&self, error: Option<FakeError>) {
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
    type Error = FakeError;
    fn fetch(&self, key: &CacheKey, _load: &LoadContext) -> BoxFuture<Result<Fetched, FakeError>> {
        *self
            .fetches
            .lock()
            .unwrap()
            .entry(key.tenant.as_str().to_owned())
            .or_default() += 1;
        self.times.lock().unwrap().push(Instant::now());
        let failure = self.failure.lock().unwrap().clone();
        let n = self.issued.fetch_add(1, Ordering::SeqCst);
        let (lifetime, refresh_in, latency) = (self.lifetime, self.refresh_in, self.latency);
        let tenant = key.tenant.clone();
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            match failure {
                Some(error) => Err(error),
                None => Ok(Fetched {
                    access_token: AccessToken::new(format!("token-{tenant}-{n}")),
                    expires_in: lifetime,
                    refresh_in,
                    age: Duration::ZERO,
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
        load_timeout: Duration::from_secs(20),
        forced_refresh_interval: Duration::from_secs(30),
        refresh_retry: schedule::REFRESH_RETRY,
        failed_retry_max: Duration::from_secs(15 * 60),
    }
}

fn cache_with(source: Arc<FakeSource>, settings: CacheSettings) -> TokenCache<FakeError> {
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

const REFUSED: FakeError = FakeError {
    kind: FailureKind::Refused,
    what: "AADSTS700016",
};

const UNAVAILABLE: FakeError = FakeError {
    kind: FailureKind::Transient,
    what: "connection refused",
};

async fn concurrent_gets(
    cache: &TokenCache<FakeError>,
    key: &CacheKey,
    n: usize,
) -> Vec<Result<Grant, CacheError<FakeError>>> {
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
    let key = graph("contoso.com");
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
    source.fail_with(Some(REFUSED));
    let cache = cache_with(source.clone(), settings());
    let key = graph("Contoso.com");
    let results = concurrent_gets(&cache, &key, 1000).await;
    assert_eq!(source.fetches("contoso.com"), 1);
    for r in &results {
        match r {
            Err(CacheError::Load(e)) => assert_eq!(*e, REFUSED),
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
    source.fail_with(Some(FakeError {
        kind: FailureKind::Throttled(Duration::from_secs(30)),
        what: "429",
    }));
    let cache = cache_with(source.clone(), settings());
    let key = graph("t.com");
    assert!(matches!(
        cache.get(&key).await,
        Err(CacheError::Load(FakeError {
            kind: FailureKind::Throttled(_),
            ..
        }))
    ));
    tokio::time::advance(Duration::from_secs(10)).await;
    match cache.get(&key).await {
        Err(CacheError::Load(FakeError {
            kind: FailureKind::Throttled(retry_after),
            ..
        })) => {
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
    let key = graph("t.com");
    let first = cache.get(&key).await.unwrap().token.access_token.clone();
    source.fail_with(Some(UNAVAILABLE));
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
    tokio::time::sleep(schedule::REFRESH_RETRY.cap + Duration::from_secs(1)).await;
    let grant = cache.get(&key).await.unwrap();
    assert_ne!(grant.token.access_token, first);
    assert_eq!(grant.lookup, Lookup::Hit);
}

#[tokio::test(start_paused = true)]
async fn a_token_near_expiry_is_not_handed_out() {
    let source = FakeSource::new(HOUR);
    let mut settings = settings();
    // No background refresh before the test looks: retries far apart.
    settings.refresh_retry = crate::backoff::Backoff {
        base: 10 * HOUR,
        cap: 10 * HOUR,
    };
    let cache = cache_with(source.clone(), settings);
    let key = graph("t.com");
    let first = cache.get(&key).await.unwrap();
    // The background refresh (≈ 40 min) fails, so the first token stays.
    source.fail_with(Some(UNAVAILABLE));
    // Sleeping (not advancing) lets the refresher's failed load finish.
    tokio::time::sleep(Duration::from_secs(50 * 60)).await;
    let still = cache.get(&key).await.unwrap();
    assert_eq!(still.token.access_token, first.token.access_token);
    // 56 minutes in: under 5 minutes left, so the token is withheld and the
    // caller waits on a fresh request.
    tokio::time::sleep(Duration::from_secs(6 * 60)).await;
    source.fail_with(None);
    let fresh = cache.get(&key).await.unwrap();
    assert_eq!(fresh.lookup, Lookup::Miss);
    assert_ne!(fresh.token.access_token, first.token.access_token);
    // And if that request fails, the caller gets the failure, not the old token.
    source.fail_with(Some(UNAVAILABLE));
    tokio::time::sleep(Duration::from_secs(56 * 60)).await;
    assert!(matches!(
        cache.get(&key).await,
        Err(CacheError::Load(e)) if e == UNAVAILABLE
    ));
}

#[tokio::test(start_paused = true)]
async fn no_caller_waits_past_the_load_timeout_and_the_load_goes_on() {
    let mut source = FakeSource::new(HOUR);
    Arc::get_mut(&mut source).unwrap().latency = Duration::from_secs(30);
    let mut settings = settings();
    settings.load_timeout = Duration::from_secs(20);
    let cache = cache_with(source.clone(), settings);
    let key = graph("slow.com");
    let started = Instant::now();
    match cache.get(&key).await {
        Err(CacheError::Deadline { after, .. }) => assert_eq!(after, Duration::from_secs(20)),
        other => panic!("{other:?}"),
    }
    assert_eq!(started.elapsed(), Duration::from_secs(20));
    // The load was not cancelled: a caller arriving later joins it (no new
    // upstream request) and gets its token when it lands, at 30 s.
    tokio::time::advance(Duration::from_secs(5)).await;
    let grant = cache.get(&key).await.unwrap();
    assert_eq!(grant.lookup, Lookup::Miss);
    assert_eq!(started.elapsed(), Duration::from_secs(30));
    assert_eq!(source.fetches("slow.com"), 1);
    assert_eq!(cache.get(&key).await.unwrap().lookup, Lookup::Hit);
}

#[tokio::test(start_paused = true)]
async fn a_day_of_steady_callers_refreshes_on_schedule_and_never_waits() {
    let lifetime = HOUR;
    let source = FakeSource::new(lifetime);
    let cache = cache_with(source.clone(), settings());
    let tenants = ["a.com", "b.com", "c.com", "d.com"];
    let keys: Vec<CacheKey> = tenants.iter().map(|t| graph(t)).collect();
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
    // Each refresh lands in its token's window, 30 to 45 minutes after it
    // was issued (an hour's token, min_remaining 5 min): 24 h holds 32 to
    // 48 of them, plus the warm-up request.
    for tenant in tenants {
        let n = source.fetches(tenant);
        assert!(
            (33..=49).contains(&n),
            "{tenant}: {n} upstream requests, expected 33 to 49"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn refresh_in_from_entra_is_followed() {
    let mut source = FakeSource::new(HOUR);
    Arc::get_mut(&mut source).unwrap().refresh_in = Some(Duration::from_secs(1800));
    let cache = cache_with(source.clone(), settings());
    let key = graph("a.com");
    cache.get(&key).await.unwrap();
    tokio::time::sleep(Duration::from_secs(12 * 3600)).await;
    // The window opens at refresh_in (30 min) and closes 15 min before
    // expiry: 12 h holds 16 to 24 refreshes, plus the first request.
    let n = source.fetches("a.com");
    assert!((17..=25).contains(&n), "{n}");
}

#[tokio::test(start_paused = true)]
async fn unused_tenants_are_dropped_after_keep_warm() {
    let source = FakeSource::new(HOUR);
    let mut settings = settings();
    settings.keep_warm = Duration::from_secs(3 * 3600);
    let cache = cache_with(source.clone(), settings);
    let idle = graph("idle.com");
    let busy = graph("busy.com");
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
    let graph = graph("a.com");
    let other = key("a.com", "https://outlook.office365.com");
    let g = cache.get(&graph).await.unwrap();
    let o = cache.get(&other).await.unwrap();
    assert_ne!(g.token.access_token, o.token.access_token);
    assert_eq!(source.fetches("a.com"), 2);
    assert_eq!(cache.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_transient_failure_is_answered_locally_for_its_retry_after() {
    let source = FakeSource::new(HOUR);
    source.fail_with(Some(UNAVAILABLE));
    let cache = cache_with(source.clone(), settings());
    let key = graph("down.com");
    // A caller asking once a second while the authority is down.
    for second in 0..5 {
        assert!(matches!(cache.get(&key).await, Err(CacheError::Load(e)) if e == UNAVAILABLE));
        assert_eq!(source.fetches("down.com"), 1, "second {second}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Past the hold, the next caller asks again (and the authority is back).
    source.fail_with(None);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(cache.get(&key).await.is_ok());
    assert_eq!(source.fetches("down.com"), 2);
}

/// No refresh convoys: 2,000 tenants fetched at once with 120 s tokens come
/// back spread over their refresh windows, not as one burst per cycle.
/// (Before the pacer: the busiest 10 s carried 6.4 × the mean, and 157 of
/// 230 s carried nothing.)
#[tokio::test(start_paused = true)]
async fn tokens_fetched_together_are_not_refreshed_together() {
    let source = FakeSource::new(Duration::from_secs(120));
    let mut settings = settings();
    settings.min_remaining = Duration::from_secs(5);
    let cache = cache_with(source.clone(), settings);
    let keys: Vec<CacheKey> = (0..2000).map(|i| graph(&format!("t{i}.com"))).collect();
    let fills: Vec<_> = keys
        .iter()
        .map(|key| {
            let cache = cache.clone();
            let key = key.clone();
            tokio::spawn(async move { cache.get(&key).await.map(|_| ()) })
        })
        .collect();
    for fill in fills {
        fill.await.unwrap().unwrap();
    }
    let start = Instant::now();
    source.times.lock().unwrap().clear();
    tokio::time::sleep(Duration::from_secs(1200)).await;
    let times = source.times.lock().unwrap().clone();
    let mut per_ten = vec![0u32; 120];
    for t in &times {
        let ten = (t.saturating_duration_since(start).as_secs() / 10) as usize;
        if let Some(n) = per_ten.get_mut(ten) {
            *n += 1;
        }
    }
    let ratio = |span: &[u32]| {
        let mean = f64::from(span.iter().sum::<u32>()) / span.len() as f64;
        (f64::from(*span.iter().max().unwrap()) / mean, mean)
    };
    // The first cycle: a slot's first token may refresh from a quarter of
    // its lifetime (30 s) to 90 s, so the 2,000 spread over 60 s instead of
    // the 30 s from half-life; no 160 s span from the first refresh on
    // (none can come sooner than 30 s) has a 10 s busier than 1.5 × its mean.
    let worst = (3..=per_ten.len() - 16)
        .map(|s| ratio(&per_ten[s..s + 16]).0)
        .fold(0.0, f64::max);
    let (first, _) = ratio(&per_ten[3..19]);
    // Later cycles: the pacer evens them out towards the population's mean.
    let (steady, mean) = ratio(&per_ten[60..]);
    eprintln!(
        "refreshes per 10 s: {per_ten:?}\nfirst 160 s: busiest {first:.2} × mean, worst 160 s {worst:.2}; \
         from 600 s: busiest {steady:.2} × mean ({mean:.0} per 10 s)"
    );
    // Every token refreshed every cycle (60 to 90 s; the first from 30 s),
    // none twice.
    let cycles = times.len() as f64 / 2000.0;
    assert!(
        (1200.0 / 90.0 - 1.0..=1200.0 / 60.0 + 1.0).contains(&cycles),
        "{cycles}"
    );
    assert!(
        worst <= 1.5,
        "busiest 10 s at {worst:.2} × the mean of its 160 s (first cycle {first:.2})"
    );
    assert!(
        steady <= 1.3,
        "later cycles: busiest 10 s at {steady:.2} × the mean"
    );
    assert!(
        per_ten[60..].iter().all(|&n| n > 0),
        "a 10 s span with no refresh: {per_ten:?}"
    );
}

/// Tokens far shorter than `min_remaining` expects (a tenant's token
/// lifetime policy) are used and refreshed on a schedule, never refetched
/// at once: at most two fetches per lifetime, none within 30 s of the last,
/// and every token handed out with at least a quarter of its life left.
#[tokio::test(start_paused = true)]
async fn short_lived_tokens_are_refreshed_twice_per_lifetime_at_most() {
    for (lifetime, min_remaining) in [
        (Duration::from_secs(15 * 60), Duration::from_secs(300)),
        (HOUR, Duration::from_secs(20 * 60)),
        (Duration::from_secs(120), Duration::from_secs(300)),
    ] {
        let source = FakeSource::new(lifetime);
        let mut settings = settings();
        settings.min_remaining = min_remaining;
        let cache = cache_with(source.clone(), settings);
        let key = graph("short.example.com");
        let first = cache.get(&key).await.unwrap();
        assert!(first.token.remaining(Instant::now()) >= lifetime / 4);
        // Six hours with no callers.
        let span = 6 * HOUR;
        tokio::time::sleep(span).await;
        let lifetimes = (span.as_secs() / lifetime.as_secs()) as usize;
        let n = source.fetches("short.example.com");
        assert!(
            n <= 2 * lifetimes + 1 && n >= lifetimes,
            "{lifetime:?} with min_remaining {min_remaining:?}: {n} fetches in 6 h"
        );
        let times = source.times.lock().unwrap().clone();
        for pair in times.windows(2) {
            assert!(
                pair[1] - pair[0] >= schedule::MIN_REFRESH_DELAY,
                "{lifetime:?}: fetches {:?} apart",
                pair[1] - pair[0]
            );
        }
        // A caller now gets a token with at least its floor of life left.
        let now = cache.get(&key).await.unwrap();
        assert!(
            now.token.remaining(Instant::now()) >= min_remaining.min(lifetime / 4),
            "{lifetime:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_configured_tenant_that_failed_heals_without_callers() {
    let source = FakeSource::new(HOUR);
    source.fail_with(Some(REFUSED));
    let cache = cache_with(source.clone(), settings());
    cache.set_configured([(
        crate::config::AppKey::example(),
        TenantId::try_from("contoso.com".to_owned()).unwrap(),
    )]);
    let configured = graph("contoso.com");
    let other = graph("other.example");
    assert!(cache.get(&configured).await.is_err());
    assert!(cache.get(&other).await.is_err());
    // Retries come after 1, 2, 4, 8 then every 15 minutes (each within an
    // eighth of its delay, paced), for the configured tenant only.
    let mut seen = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2 * 3600) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let n = source.fetches("contoso.com");
        if n > seen.len() + 1 {
            seen.push(start.elapsed().as_secs());
        }
    }
    assert_eq!(
        source.fetches("other.example"),
        1,
        "unconfigured tenants wait for callers"
    );
    let gaps: Vec<u64> = seen.windows(2).map(|w| w[1] - w[0]).collect();
    assert!((60..=70).contains(&seen[0]), "{seen:?}");
    assert!(
        gaps.iter()
            .take(3)
            .zip([120, 240, 480])
            .all(|(g, d)| (d - d / 8..=d + d / 8).contains(g)),
        "{seen:?}"
    );
    assert!(
        gaps.iter().skip(4).all(|g| (787..=1013).contains(g)),
        "{seen:?}"
    );
    // Consent granted: the next retry brings a token, with no caller.
    source.fail_with(None);
    let before = source.fetches("contoso.com");
    let mut waited = 0;
    while cache.inspect(&configured).unwrap().token.is_none() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        waited += 1;
        assert!(waited <= 1100, "no retry within 1100 s");
    }
    assert_eq!(source.fetches("contoso.com"), before + 1);
    // From there it refreshes on the token's schedule (a first token from
    // a quarter of its hour), not the healing one.
    tokio::time::sleep(Duration::from_secs(14 * 60)).await;
    assert_eq!(source.fetches("contoso.com"), before + 1);
}

#[tokio::test(start_paused = true)]
async fn a_slot_made_late_in_a_cache_is_not_idle_from_the_start() {
    let source = FakeSource::new(HOUR);
    source.fail_with(Some(FakeError {
        kind: FailureKind::Throttled(Duration::from_secs(600)),
        what: "429",
    }));
    let mut tuned = settings();
    tuned.keep_warm = Duration::from_secs(3600);
    let cache = cache_with(source.clone(), tuned);
    // The cache has run longer than keep_warm before this tenant comes.
    tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
    let key = graph("late.example.com");
    assert!(cache.get(&key).await.is_err());
    // An evict keeps the throttle in a fresh slot; a sweep must not take
    // that slot for an idle one (it was made just now).
    cache.evict(&key);
    assert_eq!(cache.len(), 1);
    assert!(cache.get(&key).await.is_err());
    assert_eq!(source.fetches("late.example.com"), 1, "the throttle held");
}
