//! The hot path in-process: a cache hit, and one whole `/v1/token` request
//! through the handler (Host check, authentication, validation, cache,
//! JSON), with no sockets.
//!
//! `cargo bench --bench handler`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use tokenbroker::daemon;

fn hot_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (app, secret, _running) = rt.block_on(async {
        let setup = tokenbroker::dev::setup("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("dev setup");
        let (config, credential, running) = setup.into_parts();
        let options = daemon::Options::from_config(&config);
        let app = daemon::start(
            std::sync::Arc::new(config),
            None,
            vec![tokenbroker::credentials::CredentialSet::single(credential)],
            options,
        )
        .await
        .expect("start");
        (app, running.secret().to_owned(), running)
    });
    let caller = app
        .broker()
        .authenticate(Some(&secret), None)
        .expect("account");
    // Warm the one tenant.
    rt.block_on(
        app.broker()
            .token(&caller, Some("contoso"), None, None, None),
    )
    .expect("warm-up token");

    // A cached token through the broker's one door: resolve the tenant,
    // authorise the account, hit the cache.
    c.bench_function("broker/hit", |b| {
        b.iter(|| {
            rt.block_on(
                app.broker()
                    .token(&caller, Some("contoso"), None, None, None),
            )
            .expect("hit")
        })
    });

    // The same hot key from two threads at once, as two worker threads
    // serving one busy tenant do: per-lookup time should stay near the
    // single-thread figure (no lock, no shared writes on a hit).
    c.bench_function("broker/hit_2_threads", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..2 {
                    scope.spawn(|| {
                        let _guard = rt.enter();
                        for _ in 0..iters / 2 {
                            let grant = futures_util::FutureExt::now_or_never(app.broker().token(
                                &caller,
                                Some("contoso"),
                                None,
                                None,
                                None,
                            ));
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

    c.bench_function("broker/authenticate", |b| {
        b.iter(|| {
            app.broker()
                .authenticate(Some(&secret), None)
                .expect("account")
        })
    });
    c.bench_function("handler/healthz", |b| {
        b.iter(|| {
            let req = hyper::Request::get("/healthz")
                .header("host", "127.0.0.1:8765")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
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
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .expect("request");
            let answer = rt.block_on(tokenbroker::server::handle_request(&app, req));
            assert_eq!(answer.status(), 200);
            answer
        })
    });
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
