//! Token acquisition against the simulated authority, over real sockets:
//! the authority client, retries and throttling, and the cache on top.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{claims, token, Fixture, CLIENT_ID, GRAPH};
use entra_sim::Fault;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokenbroker::access::RequestError;
use tokenbroker::authority::AcquireError;
use tokenbroker::broker::{Issued, TokenError};
use tokenbroker::cache::CacheError;
use tokenbroker::cache::Lookup;
use tokenbroker::config::{Resource, TenantId};

const CONTOSO: &str = "[[tenants]]\nname = \"contoso\"\nid = \"contoso.onmicrosoft.com\"\n";

fn acquire_error(result: Result<impl std::fmt::Debug, TokenError>) -> AcquireError {
    match result {
        Err(TokenError::Unavailable(CacheError::Load(e))) => e,
        other => panic!("expected an acquisition error, got {other:?}"),
    }
}

#[tokio::test]
async fn consented_tenant_by_name_and_by_id() {
    let f = Fixture::new(CONTOSO).await;
    let tid = f.sim.consent("contoso.onmicrosoft.com");
    let broker = f.broker();

    let Issued { target, grant } = token(&broker, "contoso", None).await.unwrap();
    assert_eq!(target.tenant.id.as_str(), "contoso.onmicrosoft.com");
    assert_eq!(grant.lookup, Lookup::Miss);
    let c = claims(grant.token.access_token.expose());
    assert_eq!(c["tid"], tid.as_str());
    assert_eq!(c["aud"], GRAPH);
    assert_eq!(c["idtyp"], "app");
    assert_eq!(c["appid"], CLIENT_ID);
    assert!(c["roles"].as_array().is_some_and(|r| !r.is_empty()));
    let lifetime = grant.token.expires_on - grant.token.obtained_on;
    assert!((3590..=3600).contains(&lifetime), "{lifetime}");

    // By tenant GUID, and by domain in another case (same cache slot as the name).
    let Issued { grant: by_id, .. } = token(&broker, &tid, None).await.unwrap();
    assert_eq!(
        claims(by_id.token.access_token.expose())["tid"],
        tid.as_str()
    );
    let Issued {
        grant: by_domain, ..
    } = token(&broker, "CONTOSO.onmicrosoft.com", None)
        .await
        .unwrap();
    assert_eq!(by_domain.lookup, Lookup::Hit);
    assert_eq!(by_domain.token.access_token, grant.token.access_token);
    assert_eq!(f.sim.total_requests(), 2);
    assert!(f.sim.refusals().is_empty(), "{:?}", f.sim.refusals());
}

#[tokio::test]
async fn both_signing_algorithms_are_accepted() {
    for signing in ["PS256", "RS256"] {
        let f = Fixture::new(&format!("signing = \"{signing}\"\n")).await;
        f.sim.consent("fabrikam.com");
        let broker = f.broker();
        token(&broker, "fabrikam.com", None).await.unwrap();
        assert!(
            f.sim.refusals().is_empty(),
            "{signing}: {:?}",
            f.sim.refusals()
        );
    }
}

#[tokio::test]
async fn unconsented_tenant_gets_aadsts700016_with_correlation_id() {
    let f = Fixture::new(CONTOSO).await;
    f.sim.add_unconsented_tenant("contoso.onmicrosoft.com");
    let broker = f.broker();
    let error = acquire_error(token(&broker, "contoso", None).await);
    let AcquireError::Refused { entra, .. } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(entra.aadsts().as_deref(), Some("AADSTS700016"));
    assert_eq!(entra.error, "unauthorized_client");
    assert!(entra
        .correlation_id
        .as_ref()
        .is_some_and(|c| uuid::Uuid::parse_str(c).is_ok()));
    assert!(entra.trace_id.is_some());
    let message = error.to_string();
    assert!(
        message.contains("AADSTS700016") && message.contains("consent-url"),
        "{message}"
    );
    assert_eq!(
        f.sim.requests("contoso.onmicrosoft.com"),
        1,
        "permanent: not retried"
    );
}

#[tokio::test]
async fn unregistered_certificate_gets_aadsts700027_without_a_pointless_retry() {
    let f = Fixture::new("").await;
    f.sim.consent("fabrikam.com");
    f.sim.clear_certificates();
    let broker = f.broker();
    let error = acquire_error(token(&broker, "fabrikam.com", None).await);
    let entra = error.entra().expect("Entra's answer");
    assert_eq!(entra.aadsts().as_deref(), Some("AADSTS700027"));
    assert!(entra.correlation_id.is_some());
    assert!(error.to_string().contains("upload it"), "{error}");
    // The credential files did not change, so there is nothing else to try.
    assert_eq!(f.sim.requests("fabrikam.com"), 1);
}

#[tokio::test]
async fn aadsts700027_reloads_a_rotated_certificate_from_disk() {
    let f = Fixture::new("").await;
    f.sim.consent("fabrikam.com");
    let broker = f.broker();
    // The operator rotates: new files on disk, only the new certificate registered.
    let new_der = common::write_credential(f.dir.path(), "app");
    f.sim.clear_certificates();
    f.sim.register_certificate(&new_der).unwrap();
    token(&broker, "fabrikam.com", None).await.unwrap();
    assert_eq!(
        f.sim.requests("fabrikam.com"),
        2,
        "one refusal, then success with the reloaded key"
    );
    // The store now holds the new certificate (which the expiry gauge reads).
    assert_eq!(broker.certificate_der(), new_der);
}

#[tokio::test]
async fn two_server_errors_then_success() {
    let f = Fixture::new("").await;
    f.sim.consent("fabrikam.com");
    f.sim.push_fault(Fault::Status(500), 2);
    let broker = f.broker();
    let Issued { grant, .. } = token(&broker, "fabrikam.com", None).await.unwrap();
    assert!(!grant.token.access_token.is_empty());
    assert_eq!(f.sim.requests("fabrikam.com"), 3);
}

#[tokio::test]
async fn dropped_connections_and_truncated_answers_are_retried() {
    let f = Fixture::new("").await;
    f.sim.consent("fabrikam.com");
    f.sim.push_fault(Fault::Drop, 1);
    f.sim.push_fault(Fault::Truncated, 1);
    let broker = f.broker();
    token(&broker, "fabrikam.com", None).await.unwrap();
    assert_eq!(f.sim.requests("fabrikam.com"), 3);
}

#[tokio::test]
async fn throttling_is_obeyed_locally_for_retry_after() {
    let f = Fixture::new("").await;
    f.sim.consent("fabrikam.com");
    f.sim.push_fault(Fault::Throttle(30), 1);
    let broker = f.broker();
    let error = acquire_error(token(&broker, "fabrikam.com", None).await);
    let AcquireError::Throttled { retry_after, .. } = error else {
        panic!("{error:?}")
    };
    assert_eq!(retry_after, Duration::from_secs(30));
    // Inside the window: fast local answers with the time left, nothing upstream.
    for _ in 0..50 {
        let error = acquire_error(token(&broker, "fabrikam.com", None).await);
        let AcquireError::Throttled { retry_after, .. } = error else {
            panic!("{error:?}")
        };
        assert!(
            retry_after <= Duration::from_secs(30) && retry_after >= Duration::from_secs(28),
            "{retry_after:?}"
        );
    }
    assert_eq!(f.sim.requests("fabrikam.com"), 1);
    // Another resource of the same tenant is not throttled by it.
    token(
        &broker,
        "fabrikam.com",
        Some("https://outlook.office365.com"),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn garbage_bodies_give_a_clear_error() {
    let f = Fixture::new("").await;
    f.sim.consent("fabrikam.com");
    f.sim.set_persistent_fault(Some(Fault::Garbage));
    let broker = f.broker();
    let error = acquire_error(token(&broker, "fabrikam.com", None).await);
    assert!(
        matches!(error, AcquireError::Unavailable { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("fabrikam.com") && message.contains("not JSON"),
        "{message}"
    );
    assert_eq!(
        f.sim.requests("fabrikam.com"),
        4,
        "retried up to max_attempts"
    );
}

#[tokio::test]
async fn a_slow_authority_times_out_with_a_clear_error() {
    let f = Fixture::new("").await;
    f.sim.consent("fabrikam.com");
    f.sim
        .set_persistent_fault(Some(Fault::Slow(Duration::from_secs(5))));
    let broker = f.broker_with(|authority, _| {
        authority.request_timeout = Duration::from_millis(200);
        authority.retry.max_attempts = 2;
    });
    let started = std::time::Instant::now();
    let error = acquire_error(token(&broker, "fabrikam.com", None).await);
    assert!(matches!(error, AcquireError::Timeout { .. }), "{error:?}");
    assert!(
        error.to_string().contains("did not answer within 200 ms"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn an_unreachable_authority_is_unavailable() {
    let f = Fixture::new("").await;
    let url = f.sim.url();
    let broker = f.broker();
    drop(f.sim);
    // Wait for the listener to close.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let error = acquire_error(token(&broker, "fabrikam.com", None).await);
    assert!(
        matches!(error, AcquireError::Unavailable { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(&url[7..]),
        "names the authority: {error}"
    );
}

/// `n` callers asking `broker` for `tenant` at once.
async fn concurrent_requests(
    broker: tokenbroker::broker::Broker,
    tenant: &'static str,
    n: usize,
) -> Vec<Result<Issued, TokenError>> {
    let broker = Arc::new(broker);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let broker = Arc::clone(&broker);
        tasks.spawn(async move { token(&broker, tenant, None).await });
    }
    let mut results = Vec::with_capacity(n);
    while let Some(result) = tasks.join_next().await {
        results.push(result.unwrap());
    }
    results
}

#[tokio::test]
async fn a_thousand_cold_requests_make_one_upstream_request() {
    let f = Fixture::new(CONTOSO).await;
    f.sim.consent("contoso.onmicrosoft.com");
    f.sim.set_latency(Duration::from_millis(200));
    let mut tokens = HashSet::new();
    for result in concurrent_requests(f.broker(), "contoso", 1000).await {
        let Issued { grant, .. } = result.unwrap();
        tokens.insert(grant.token.access_token.expose().to_owned());
    }
    assert_eq!(f.sim.requests("contoso.onmicrosoft.com"), 1);
    assert_eq!(tokens.len(), 1);
}

#[tokio::test]
async fn a_thousand_cold_requests_share_one_error() {
    let f = Fixture::new(CONTOSO).await;
    f.sim.add_unconsented_tenant("contoso.onmicrosoft.com");
    f.sim.set_latency(Duration::from_millis(200));
    let mut errors = 0;
    for result in concurrent_requests(f.broker(), "contoso", 1000).await {
        let error = acquire_error(result);
        assert_eq!(
            error.entra().and_then(|e| e.aadsts()).as_deref(),
            Some("AADSTS700016")
        );
        errors += 1;
    }
    assert_eq!(errors, 1000);
    assert_eq!(f.sim.requests("contoso.onmicrosoft.com"), 1);
}

#[tokio::test]
async fn an_outage_keeps_the_cached_token_and_refresh_recovers() {
    let f = Fixture::new(CONTOSO).await;
    f.sim.consent("contoso.onmicrosoft.com");
    // Short-lived tokens so the refresh point comes within the test:
    // lifetime 16 s, handed out while ≥ 2 s remain (until 14 s). A refresh
    // never comes sooner than 30 s unless the token is too short for that,
    // and then at the last useful moment: 16 - 2 - 5 % = 13.2 s.
    f.sim.set_token_lifetime(Duration::from_secs(16));
    let broker = f.broker_with(|_, cache| {
        cache.min_remaining = Duration::from_secs(2);
        cache.refresh_retry = tokenbroker::backoff::Backoff {
            base: Duration::from_millis(50),
            cap: Duration::from_millis(100),
        };
    });
    let Issued { grant: first, .. } = token(&broker, "contoso", None).await.unwrap();
    let obtained = tokio::time::Instant::now();
    f.sim.set_persistent_fault(Some(Fault::Status(503)));
    // Until 13.5 s: the refresh is due and failing; callers still get the
    // first token, without waiting.
    while obtained.elapsed() < Duration::from_millis(13_500) {
        let Issued { grant, .. } = token(&broker, "contoso", None).await.unwrap();
        assert_eq!(grant.token.access_token, first.token.access_token);
        assert_ne!(grant.lookup, Lookup::Miss);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let during_outage = f.sim.requests("contoso.onmicrosoft.com");
    assert!(
        during_outage >= 2,
        "the refresh was attempted: {during_outage}"
    );
    // The authority comes back; a background retry (every ≤ 0.1 s) gets a
    // new token before the first one stops being handed out at 14 s.
    f.sim.set_persistent_fault(None);
    let mut renewed = None;
    while obtained.elapsed() < Duration::from_millis(13_950) {
        let Issued { grant, .. } = token(&broker, "contoso", None).await.unwrap();
        assert_ne!(grant.lookup, Lookup::Miss, "no caller waits on Entra");
        if grant.token.access_token != first.token.access_token {
            renewed = Some(grant);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let renewed = renewed.expect("the background refresh recovered while the old token was valid");
    assert_eq!(renewed.lookup, Lookup::Hit);
}

#[tokio::test]
async fn bad_requests_never_reach_the_authority() {
    let f = Fixture::new(CONTOSO).await;
    let broker = f.broker();
    for tenant in ["../../etc", "a b", "contoso.com/oauth2", "common", "%2e%2e"] {
        match token(&broker, tenant, None).await {
            Err(TokenError::BadRequest(RequestError::Tenant(_))) => {}
            other => panic!("{tenant}: {other:?}"),
        }
    }
    match token(
        &broker,
        "contoso",
        Some("https://graph.microsoft.com/.default"),
    )
    .await
    {
        Err(TokenError::BadRequest(RequestError::Resource(_))) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(f.sim.total_requests(), 0);
}

#[tokio::test]
async fn configured_tenants_are_prefetched_in_the_background() {
    let tenants: String = (0..20)
        .map(|i| format!("[[tenants]]\nname = \"t{i}\"\nid = \"t{i}.example.com\"\n"))
        .collect();
    let f = Fixture::new(&format!("max_concurrent_requests = 4\n{tenants}")).await;
    for i in 0..20 {
        f.sim.consent(&format!("t{i}.example.com"));
    }
    f.sim.set_latency(Duration::from_millis(50));
    let broker = f.broker();
    broker.prefetch_configured_tenants(); // returns at once
    for _ in 0..100 {
        if f.sim.total_requests() == 20 && broker.cache_entries() == 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(f.sim.total_requests(), 20);
    assert!(
        f.sim.peak_concurrency() <= 4,
        "peak {}",
        f.sim.peak_concurrency()
    );
    let Issued { grant, .. } = token(&broker, "t7", None).await.unwrap();
    assert_eq!(grant.lookup, Lookup::Hit);
}

#[tokio::test]
async fn aadsts700024_is_retried_once_with_a_fresh_assertion() {
    let f = Fixture::new("").await;
    f.sim.consent("fabrikam.com");
    let fault = Fault::Aadsts {
        status: 400,
        error: "invalid_client".into(),
        code: 700_024,
    };
    f.sim.push_fault(fault.clone(), 1);
    let broker = f.broker();
    token(&broker, "fabrikam.com", None).await.unwrap();
    assert_eq!(f.sim.requests("fabrikam.com"), 2);
    // Twice in a row: the clock is suspect; the refusal is surfaced.
    f.sim.push_fault(fault, 2);
    let error = acquire_error(
        token(
            &broker,
            "fabrikam.com",
            Some("https://outlook.office365.com"),
        )
        .await,
    );
    assert!(error.to_string().contains("clock"), "{error}");
    assert_eq!(f.sim.requests("fabrikam.com"), 4);
}

#[tokio::test]
async fn ca_file_is_checked_when_the_client_is_built() {
    let f = Fixture::new("").await;
    let garbage = f.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let missing = f.dir.path().join("missing.pem");
    let good = f.dir.path().join("app.crt");
    for (path, ok) in [(&garbage, false), (&missing, false), (&good, true)] {
        let config = f.config();
        let mut settings = tokenbroker::authority::AuthoritySettings::from_config(&config);
        settings.ca_file = Some(path.clone());
        let result = tokenbroker::authority::AuthorityClient::new(
            settings,
            f.credentials(&config).remove(0),
            Arc::new(tokenbroker::clock::SystemClock),
        );
        match (result, ok) {
            (Ok(_), true) => {}
            (Err(e), false) => assert!(e.to_string().contains("app.ca_file"), "{e}"),
            (result, _) => panic!("{}: {result:?}", path.display()),
        }
    }
}

#[tokio::test]
async fn issued_tokens_are_signed_jwts_and_refresh_in_is_read() {
    use base64::Engine;
    let f = Fixture::new(CONTOSO).await;
    f.sim.consent("contoso.onmicrosoft.com");
    f.sim.set_refresh_in(Some(Duration::from_secs(1800)));
    let tenant = TenantId::try_from("contoso.onmicrosoft.com".to_owned()).unwrap();
    let response = f
        .authority()
        .acquire(&tenant, &Resource::parse(GRAPH).unwrap())
        .await
        .unwrap();
    assert_eq!(response.refresh_in, Some(Duration::from_secs(1800)));
    assert_eq!(response.expires_in, Duration::from_secs(3599));
    // The access token verifies with the authority's signing key.
    let token = response.access_token.expose();
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .unwrap();
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        f.sim.token_signing_key(),
    )
    .verify(signed.as_bytes(), &signature)
    .expect("the simulated authority signs its tokens");
}

/// The real process with 120 s tokens (a tenant's token-lifetime policy, a
/// dev authority) and the default `min_remaining` (5 min, more than the
/// whole token): no caller for over two lifetimes, and the refresh keeps
/// its pace. (It once refetched such tokens at once, forever: 686 requests
/// in 15 s for 2 tenants.) Named to start first: it waits 200 s.
#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_with_120_s_tokens_and_no_callers_refreshes_twice_per_lifetime() {
    let tenants: Vec<String> = (0..4).map(|i| format!("short{i}.example.com")).collect();
    let configured: String = tenants
        .iter()
        .enumerate()
        .map(|(i, t)| format!("[[tenants]]\nname = \"short{i}\"\nid = \"{t}\"\n"))
        .collect();
    let f = Fixture::new(&format!("[server]\nlisten = \"127.0.0.1:0\"\n{configured}")).await;
    f.sim.set_token_lifetime(Duration::from_secs(120));
    for t in &tenants {
        f.sim.consent(t);
    }
    let daemon = common::Daemon::spawn(&f.config_path).await;
    // Samples every second: when each tenant's count went up.
    let mut seen: Vec<Vec<u64>> = vec![Vec::new(); tenants.len()];
    let mut counts = vec![0usize; tenants.len()];
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_secs(200) {
        for (i, t) in tenants.iter().enumerate() {
            let n = f.sim.requests(t);
            for _ in counts[i]..n {
                seen[i].push(started.elapsed().as_secs());
            }
            counts[i] = n;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for (t, fetches) in tenants.iter().zip(&seen) {
        // The fill, one early refresh at most (from a quarter of the first
        // lifetime, so a mass fill does not come back as one burst), then
        // one per half-lifetime: 3 or 4 in 200 s; hundreds in the hot loop.
        assert!(
            (3..=4).contains(&fetches.len()),
            "{t}: {} fetches at {fetches:?} s",
            fetches.len()
        );
        // Never two within 30 s (1 s of sampling slack).
        assert!(
            fetches.windows(2).all(|w| w[1] - w[0] >= 29),
            "{t}: fetches at {fetches:?} s"
        );
        // From the second lifetime on, at most two per lifetime.
        let later: Vec<u64> = fetches.iter().copied().filter(|s| *s >= 120).collect();
        assert!(later.len() <= 2, "{t}: fetches at {fetches:?} s");
    }
    // A caller now gets a token with at least a quarter of its life left.
    let answer = daemon
        .get(
            "/v1/token?tenant=short0",
            &[(
                "Authorization",
                &format!("Bearer {}", common::TESTER_SECRET),
            )],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer.json()["expires_in"].as_u64().unwrap() >= 30,
        "{}",
        answer.body
    );
}
