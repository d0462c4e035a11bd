//! The fleet logic over an in-memory store: several "hosts" (shared caches
//! on one store) and a counting upstream.

use super::store::MemoryStore;
use super::*;
use crate::authority::AcquireError;
use crate::clock::TokioClock;
use crate::config::{Resource, TenantId};
use crate::token::AccessToken;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug, Default)]
struct Counts {
    ops: Mutex<Vec<(Op, OpResult)>>,
}

impl FleetObserver for Counts {
    fn shared_op(&self, op: Op, result: OpResult) {
        if let Ok(mut ops) = self.ops.lock() {
            ops.push((op, result));
        }
    }
}

impl Counts {
    fn count(&self, op: Op, result: OpResult) -> usize {
        self.ops
            .lock()
            .map(|ops| ops.iter().filter(|o| **o == (op, result)).count())
            .unwrap_or(0)
    }
}

const KEY_A: [u8; 32] = [1; 32];

/// Every host's wall clock reads the same at the same (paused) instant.
fn clock() -> SharedClock {
    Arc::new(TokioClock::starting_at(
        std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ))
}

fn host(store: &MemoryStore, keys: seal::Keys) -> (Arc<SharedCache>, Arc<Counts>) {
    let counts = Arc::new(Counts::default());
    let cache = SharedCache::new(
        Arc::new(store.clone()),
        "memory".into(),
        keys,
        FleetSettings {
            prefix: "tb".into(),
            timeout: Duration::from_millis(250),
            lease: Duration::from_secs(15),
            negative_ttl: Duration::from_secs(30),
            min_remaining: Duration::from_secs(300),
        },
        clock(),
        counts.clone(),
    );
    (Arc::new(cache), counts)
}

fn key(tenant: &str) -> CacheKey {
    CacheKey::new(
        &crate::config::AppKey::example(),
        &TenantId::try_from(tenant.to_owned()).unwrap(),
        &Resource::parse("https://graph.microsoft.com").unwrap(),
    )
}

/// An upstream that counts requests and answers after `latency`.
#[derive(Clone)]
struct Upstream {
    calls: Arc<AtomicUsize>,
    latency: Duration,
    answer: Arc<Mutex<Option<AcquireError>>>,
}

impl Upstream {
    fn new(latency: Duration) -> Upstream {
        Upstream {
            calls: Arc::new(AtomicUsize::new(0)),
            latency,
            answer: Arc::new(Mutex::new(None)),
        }
    }

    fn call(&self) -> impl Future<Output = Result<Fetched, AcquireError>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let latency = self.latency;
        let failure = self.answer.lock().unwrap().clone();
        async move {
            tokio::time::sleep(latency).await;
            match failure {
                Some(e) => Err(e),
                None => Ok(Fetched {
                    access_token: AccessToken::new(format!("token-{n}")),
                    expires_in: Duration::from_secs(3600),
                    refresh_in: None,
                    age: Duration::ZERO,
                }),
            }
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[tokio::test(start_paused = true)]
async fn three_hosts_and_many_callers_make_one_upstream_request() {
    let store = MemoryStore::new();
    let hosts: Vec<_> = (0..3)
        .map(|_| host(&store, seal::Keys::from_bytes(&KEY_A, &[]).unwrap()).0)
        .collect();
    let upstream = Upstream::new(Duration::from_millis(300));
    let mut tasks = Vec::new();
    for i in 0..30 {
        let cache = Arc::clone(&hosts[i % 3]);
        let upstream = upstream.clone();
        tasks.push(tokio::spawn(async move {
            cache
                .fetch(&key("contoso.com"), &LoadContext::default(), || {
                    upstream.call()
                })
                .await
                .map(|f| f.access_token.expose().to_owned())
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), "token-0");
    }
    assert_eq!(upstream.calls(), 1);
    // The lease is released: nothing but the token is left.
    assert_eq!(store.keys().len(), 1, "{:?}", store.keys());
}

#[tokio::test(start_paused = true)]
async fn a_refresh_takes_a_newer_shared_token_but_never_the_one_it_replaces() {
    let store = MemoryStore::new();
    let (a, _) = host(&store, seal::Keys::from_bytes(&KEY_A, &[]).unwrap());
    let (b, _) = host(&store, seal::Keys::from_bytes(&KEY_A, &[]).unwrap());
    let upstream = Upstream::new(Duration::from_millis(10));
    let k = key("contoso.com");
    let first = a
        .fetch(&k, &LoadContext::default(), || upstream.call())
        .await
        .unwrap();
    let sha = |f: &Fetched| f.access_token.sha256();
    let held = Some((sha(&first), clock().unix_now() + 3600));
    // B refreshing the token it holds: the shared one is that same token,
    // so B fetches, and writes the newer one through.
    tokio::time::advance(Duration::from_secs(1800)).await;
    let refresh = LoadContext {
        current: held,
        background: true,
        ..LoadContext::default()
    };
    let newer = b.fetch(&k, &refresh, || upstream.call()).await.unwrap();
    assert_eq!(newer.access_token.expose(), "token-1");
    // A's own refresh a moment later takes B's token: no upstream request.
    let from_b = a.fetch(&k, &refresh, || upstream.call()).await.unwrap();
    assert_eq!(from_b.access_token.expose(), "token-1");
    assert_eq!(upstream.calls(), 2);
    // A caller saw token-1 rejected: it is never handed back.
    let rejected = LoadContext {
        rejected: Some(sha(&newer)),
        ..LoadContext::default()
    };
    let replaced = a.fetch(&k, &rejected, || upstream.call()).await.unwrap();
    assert_eq!(replaced.access_token.expose(), "token-2");
    // An operator's refresh skips the shared copy too, and writes through.
    let forced = LoadContext {
        forced: true,
        ..LoadContext::default()
    };
    b.fetch(&k, &forced, || upstream.call()).await.unwrap();
    let now = a
        .fetch(&k, &LoadContext::default(), || upstream.call())
        .await
        .unwrap();
    assert_eq!(now.access_token.expose(), "token-3");
    assert_eq!(upstream.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_shared_token_keeps_its_age() {
    let store = MemoryStore::new();
    let (a, _) = host(&store, seal::Keys::from_bytes(&KEY_A, &[]).unwrap());
    let (b, _) = host(&store, seal::Keys::from_bytes(&KEY_A, &[]).unwrap());
    let upstream = Upstream::new(Duration::ZERO);
    let k = key("contoso.com");
    a.fetch(&k, &LoadContext::default(), || upstream.call())
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(600)).await;
    let shared = b
        .fetch(&k, &LoadContext::default(), || upstream.call())
        .await
        .unwrap();
    assert_eq!(shared.age, Duration::from_secs(600));
    assert_eq!(shared.expires_in, Duration::from_secs(3000));
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn altered_or_moved_values_are_rejected_counted_and_replaced() {
    let store = MemoryStore::new();
    let (a, counts) = host(&store, seal::Keys::from_bytes(&KEY_A, &[]).unwrap());
    let upstream = Upstream::new(Duration::ZERO);
    let (contoso, fabrikam) = (key("contoso.com"), key("fabrikam.com"));
    a.fetch(&contoso, &LoadContext::default(), || upstream.call())
        .await
        .unwrap();
    // Contoso's value copied under fabrikam's key.
    let value = store.raw(&a.token_key(&contoso)).unwrap();
    store.put_raw(&a.token_key(&fabrikam), value.clone());
    let got = a
        .fetch(&fabrikam, &LoadContext::default(), || upstream.call())
        .await
        .unwrap();
    assert_eq!(
        got.access_token.expose(),
        "token-1",
        "fetched, not contoso's"
    );
    // A flipped byte.
    let mut altered = value;
    let last = altered.len() - 1;
    altered[last] ^= 0x40;
    store.put_raw(&a.token_key(&contoso), altered);
    let got = a
        .fetch(&contoso, &LoadContext::default(), || upstream.call())
        .await
        .unwrap();
    assert_eq!(got.access_token.expose(), "token-2");
    assert_eq!(counts.count(Op::Get, OpResult::Rejected), 2);
    // Replaced: the next read is a hit.
    let again = a
        .fetch(&contoso, &LoadContext::default(), || upstream.call())
        .await
        .unwrap();
    assert_eq!(again.access_token.expose(), "token-2");
    assert_eq!(upstream.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_throttle_one_host_saw_is_answered_by_the_others() {
    let store = MemoryStore::new();
    let (a, _) = host(&store, seal::Keys::from_bytes(&KEY_A, &[]).unwrap());
    let (b, _) = host(&store, seal::Keys::from_bytes(&KEY_A, &[]).unwrap());
    let upstream = Upstream::new(Duration::ZERO);
    *upstream.answer.lock().unwrap() = Some(AcquireError::Throttled {
        tenant: "contoso.com".into(),
        retry_after: Duration::from_secs(60),
        entra: None,
    });
    let k = key("contoso.com");
    assert!(a
        .fetch(&k, &LoadContext::default(), || upstream.call())
        .await
        .is_err());
    tokio::time::advance(Duration::from_secs(20)).await;
    match b
        .fetch(&k, &LoadContext::default(), || upstream.call())
        .await
    {
        Err(AcquireError::Throttled { retry_after, .. }) => {
            assert!(
                retry_after <= Duration::from_secs(41) && retry_after >= Duration::from_secs(39),
                "{retry_after:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(upstream.calls(), 1);
    // An operator's refresh honours the throttle too.
    let forced = LoadContext {
        forced: true,
        ..LoadContext::default()
    };
    assert!(b.fetch(&k, &forced, || upstream.call()).await.is_err());
    assert_eq!(upstream.calls(), 1);
    // Evict clears it (and the token): the next fetch goes upstream.
    *upstream.answer.lock().unwrap() = None;
    b.evict(&k).await;
    assert!(b
        .fetch(&k, &LoadContext::default(), || upstream.call())
        .await
        .is_ok());
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_outage_makes_each_host_fetch_alone_and_sharing_resumes_after() {
    let store = MemoryStore::new();
    let (a, counts) = host(&store, seal::Keys::from_bytes(&KEY_A, &[]).unwrap());
    let (b, _) = host(&store, seal::Keys::from_bytes(&KEY_A, &[]).unwrap());
    let upstream = Upstream::new(Duration::ZERO);
    store.set_down(true);
    a.fetch(&key("one.com"), &LoadContext::default(), || upstream.call())
        .await
        .unwrap();
    b.fetch(&key("one.com"), &LoadContext::default(), || upstream.call())
        .await
        .unwrap();
    assert_eq!(upstream.calls(), 2, "no sharing while down, and no failure");
    assert_eq!(a.status().state, "down");
    assert!(counts.count(Op::Get, OpResult::Error) >= 1);
    store.set_down(false);
    // Each host tries Redis again at most once a second while it is down.
    tokio::time::advance(Duration::from_secs(2)).await;
    a.fetch(&key("two.com"), &LoadContext::default(), || upstream.call())
        .await
        .unwrap();
    b.fetch(&key("two.com"), &LoadContext::default(), || upstream.call())
        .await
        .unwrap();
    assert_eq!(upstream.calls(), 3, "shared again");
    assert_eq!(a.status().state, "ok");
}

#[tokio::test(start_paused = true)]
async fn a_host_that_dies_holding_the_lease_delays_the_others_by_the_lease_at_most() {
    let store = MemoryStore::new();
    let (a, counts) = host(&store, seal::Keys::from_bytes(&KEY_A, &[]).unwrap());
    let k = key("contoso.com");
    // A lease taken by a host that never came back.
    store
        .set_if_absent(a.names(&k).lease, b"gone".to_vec(), Duration::from_secs(15))
        .await
        .unwrap();
    let upstream = Upstream::new(Duration::ZERO);
    let started = tokio::time::Instant::now();
    a.fetch(&k, &LoadContext::default(), || upstream.call())
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(15) && waited < Duration::from_secs(16),
        "{waited:?}"
    );
    assert_eq!(counts.count(Op::Lease, OpResult::Busy), 1);
}

#[tokio::test(start_paused = true)]
async fn rotated_keys_read_old_values_and_write_new_ones() {
    let store = MemoryStore::new();
    let (old_host, _) = host(&store, seal::Keys::from_bytes(&KEY_A, &[]).unwrap());
    let upstream = Upstream::new(Duration::ZERO);
    let k = key("contoso.com");
    old_host
        .fetch(&k, &LoadContext::default(), || upstream.call())
        .await
        .unwrap();
    let new_key = [2u8; 32];
    let (rotated, _) = host(&store, seal::Keys::from_bytes(&new_key, &[KEY_A]).unwrap());
    let got = rotated
        .fetch(&k, &LoadContext::default(), || upstream.call())
        .await
        .unwrap();
    assert_eq!(got.access_token.expose(), "token-0", "old value read");
    rotated
        .fetch(&key("fabrikam.com"), &LoadContext::default(), || {
            upstream.call()
        })
        .await
        .unwrap();
    let written = store.raw(&rotated.token_key(&key("fabrikam.com"))).unwrap();
    let new_id = seal::Keys::from_bytes(&new_key, &[]).unwrap().current_id();
    assert_eq!(
        hex::encode(&written[3..11]),
        new_id,
        "new values under the new key"
    );
}

#[tokio::test(start_paused = true)]
async fn when_the_lease_holder_fails_a_waiting_host_takes_over_at_once() {
    let store = MemoryStore::new();
    let (a, _) = host(&store, seal::Keys::from_bytes(&KEY_A, &[]).unwrap());
    let (b, counts) = host(&store, seal::Keys::from_bytes(&KEY_A, &[]).unwrap());
    let failing = Upstream::new(Duration::from_millis(500));
    *failing.answer.lock().unwrap() = Some(AcquireError::Unavailable {
        tenant: "contoso.com".into(),
        reason: "503".into(),
        entra: None,
    });
    let working = Upstream::new(Duration::from_millis(100));
    let k = key("contoso.com");
    let holder = {
        let (a, k, failing) = (Arc::clone(&a), k.clone(), failing.clone());
        tokio::spawn(async move {
            a.fetch(&k, &LoadContext::default(), || failing.call())
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let started = tokio::time::Instant::now();
    let got = b
        .fetch(&k, &LoadContext::default(), || working.call())
        .await
        .unwrap();
    assert!(holder.await.unwrap().is_err());
    assert_eq!(got.access_token.expose(), "token-0");
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(1),
        "took over after {waited:?}, not the 15 s lease"
    );
    assert_eq!(
        counts.count(Op::Lease, OpResult::Busy),
        1,
        "counted once per wait"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reload_of_the_cache_tuning_reaches_the_shared_cache() {
    let store = MemoryStore::new();
    let (a, _) = host(&store, seal::Keys::from_bytes(&KEY_A, &[]).unwrap());
    let (b, _) = host(&store, seal::Keys::from_bytes(&KEY_A, &[]).unwrap());
    let upstream = Upstream::new(Duration::ZERO);
    let k = key("contoso.com");
    a.fetch(&k, &LoadContext::default(), || upstream.call())
        .await
        .unwrap();
    // The shared token has an hour left; b now wants more than that.
    b.set_cache_tuning(Duration::from_secs(3700), Duration::from_secs(30));
    b.fetch(&k, &LoadContext::default(), || upstream.call())
        .await
        .unwrap();
    assert_eq!(
        upstream.calls(),
        2,
        "too short-lived for b's new min_remaining"
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_host_sees_redis_come_back_within_seconds() {
    let store = MemoryStore::new();
    let (a, _) = host(&store, seal::Keys::from_bytes(&KEY_A, &[]).unwrap());
    store.set_down(true);
    a.warm_up();
    // Down through the whole of the start-up attempts (10 s).
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(a.status().state, "down");
    store.set_down(false);
    // No caller, no cache miss: the idle probe alone finds Redis back.
    tokio::time::sleep(IDLE_PROBE + Duration::from_secs(1)).await;
    assert_eq!(a.status().state, "ok");
}
