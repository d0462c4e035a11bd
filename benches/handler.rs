//! The hot path in-process: a cache hit, and one whole `/v1/token` request
//! through the handler (Host check, authentication, validation, cache,
//! JSON), with no sockets.
//!
//! `cargo bench --bench handler`

use criterion::{criterion_group, criterion_main, Criterion};
use std::sync::Arc;
use tokenbroker::broker::Broker;
use tokenbroker::cache::CacheKey;
use tokenbroker::clock::SystemClock;
use tokenbroker::credentials::CredentialStore;
use tokenbroker::metrics::Metrics;
use tokenbroker::server::App;

fn hot_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (app, secret, _authority) = rt.block_on(async {
        let setup = tokenbroker::dev::setup("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("dev setup");
        let config = Arc::new(setup.config.clone());
        let metrics = Arc::new(Metrics::new(&config));
        let broker = Broker::new(
            Arc::clone(&config),
            Arc::new(CredentialStore::new(setup.credential)),
            Arc::new(SystemClock),
            metrics.clone(),
        )
        .expect("broker");
        // Warm the one tenant.
        broker.token("contoso", None).await.expect("warm-up token");
        (App::new(broker, metrics), setup.secret, setup.authority)
    });

    let key = CacheKey::new("contoso.onmicrosoft.com", "https://graph.microsoft.com");
    c.bench_function("cache/hit", |b| {
        b.iter(|| rt.block_on(app.broker().cache().get(&key)).expect("hit"))
    });

    // The same hot key from two threads at once, as two worker threads
    // serving one busy tenant do: per-lookup time should stay near the
    // single-thread figure (no lock, no shared writes on a hit).
    c.bench_function("cache/hit_2_threads", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..2 {
                    scope.spawn(|| {
                        let _guard = rt.enter();
                        for _ in 0..iters / 2 {
                            let grant = futures_util::FutureExt::now_or_never(
                                app.broker().cache().get(&key),
                            );
                            assert!(matches!(grant, Some(Ok(_))));
                        }
                    });
                }
            });
            // Two threads share the work: time per lookup is wall time
            // over lookups, doubled to compare CPU cost with one thread.
            start.elapsed() * 2
        })
    });

    let accounts = tokenbroker::server::auth::Accounts::new(app.broker().config());
    c.bench_function("auth/by_secret", |b| {
        b.iter(|| accounts.by_secret(secret.as_str()).expect("account"))
    });
    c.bench_function("request/resolve", |b| {
        b.iter(|| {
            tokenbroker::broker::resolve(app.broker().config(), "contoso", None).expect("target")
        })
    });

    c.bench_function("handler/healthz", |b| {
        b.iter(|| {
            let req = hyper::Request::get("/healthz")
                .header("host", "127.0.0.1:8765")
                .body(())
                .expect("request");
            let answer = rt.block_on(tokenbroker::server::handle_request(&app, req));
            assert_eq!(answer.status(), 200);
            answer
        })
    });

    let auth = format!("Bearer {}", secret.as_str());
    c.bench_function("handler/v1_token_cached", |b| {
        b.iter(|| {
            let req = hyper::Request::get("/v1/token?tenant=contoso")
                .header("host", "127.0.0.1:8765")
                .header("authorization", &auth)
                .body(())
                .expect("request");
            let answer = rt.block_on(tokenbroker::server::handle_request(&app, req));
            assert_eq!(answer.status(), 200);
            answer
        })
    });
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
