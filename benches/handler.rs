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
