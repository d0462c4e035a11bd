//! Scale run: N consented tenants (10,000 by default), each requested once
//! through a real `tokenbroker serve` process (cold fill, upstream
//! concurrency bounded by `app.max_concurrent_requests`), then all served
//! again from cache; then the process is stopped (SIGTERM writes
//! `cache.state_file`) and started again, and every tenant is asked once
//! more: a warm restart must serve them all with no upstream request.
//! Reports the broker's resident memory (from /proc) and what of it is the
//! broker's own per tenant (beside the token text), the fill time, the
//! upstream request count and peak concurrency seen by the simulated
//! authority, and the restart's time to serve every tenant.
//!
//! `cargo bench --bench scale` (options: `-- --tenants N --clients N --bound N`)

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "process/mod.rs"]
mod process;
use entra_sim::SimulatedAuthority;
use process::{memory_kib, Broker};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
const SECRET: &str = "tb_scale-bench-secret";
/// Service accounts with `"*"`, each with its own new-tenant budget (at
/// most 10,000 a minute); tenant `i` is asked for by account `i % ACCOUNTS`.
const ACCOUNTS: usize = 4;

fn secret(i: usize) -> String {
    format!("{SECRET}-{}", i % ACCOUNTS)
}

struct Options {
    tenants: usize,
    clients: usize,
    bound: usize,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str, default: usize| process::number_arg(&args, name, default);
    Options {
        tenants: value("--tenants", 10_000),
        clients: value("--clients", 64),
        bound: value("--bound", 16),
    }
}

/// Requests `/v1/token` for every tenant with `clients` concurrent callers;
/// returns (elapsed, errors).
async fn pass(
    http: &reqwest::Client,
    base: &str,
    tenants: usize,
    clients: usize,
) -> (Duration, usize) {
    let started = Instant::now();
    let limit = Arc::new(tokio::sync::Semaphore::new(clients));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..tenants {
        let permit = Arc::clone(&limit).acquire_owned().await.expect("semaphore");
        let http = http.clone();
        let url = format!("{base}/v1/token?tenant=t{i}.example.com");
        tasks.spawn(async move {
            let ok = match http.get(&url).bearer_auth(secret(i)).send().await {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            drop(permit);
            ok
        });
    }
    let mut errors = 0;
    while let Some(result) = tasks.join_next().await {
        if !matches!(result, Ok(true)) {
            errors += 1;
        }
    }
    (started.elapsed(), errors)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

fn main() {
    let opts = options();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).expect("key");
        let cert = rcgen::CertificateParams::new(vec!["scale".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).expect("write");
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).expect("write");
        let made = Command::new(env!("CARGO_BIN_EXE_tokenbroker"))
            .args(["cache-key", "new", "--out"])
            .arg(dir.path().join("state.key"))
            .output()
            .expect("cache-key new");
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));

        let sim = SimulatedAuthority::start(CLIENT_ID).await.expect("authority");
        sim.register_certificate(cert.der()).expect("register");
        // Entra answers in tens of milliseconds; so does the simulator here.
        sim.set_latency(Duration::from_millis(20));
        for i in 0..opts.tenants {
            sim.consent(&format!("t{i}.example.com"));
        }
        let config = dir.path().join("tokenbroker.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nmax_connections = 4096\n\
                 [app]\nclient_id = \"{CLIENT_ID}\"\nauthority_host = \"{}\"\ncertificate = \"cert.pem\"\nprivate_key = \"key.pem\"\nmax_concurrent_requests = {}\n\
                 [cache]\nstate_file = \"cache.sealed\"\nstate_key_file = \"state.key\"\nstate_interval = \"1s\"\n\
                 {}",
                sim.url(),
                opts.bound,
                (0..ACCOUNTS)
                    .map(|i| format!(
                        "[[accounts]]\nname = \"scale{i}\"\nsecret_sha256 = \"{}\"\ntenants = [\"*\"]\nmax_new_tenants_per_minute = 10000\n",
                        tokenbroker::access::secret::sha256_hex(&secret(i))
                    ))
                    .collect::<String>()
            ),
        )
        .expect("config");

        let broker = Broker::start(&config, "info,tokenbroker::access=warn");
        let pid = broker.pid();
        let base = broker.base.clone();
        let (idle_rss, _) = memory_kib(pid);

        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(opts.clients)
            .no_proxy()
            .build()
            .expect("client");
        let (cold, cold_errors) = pass(&http, &base, opts.tenants, opts.clients).await;
        let upstream_after_fill = sim.total_requests();
        let peak = sim.peak_concurrency();
        // Let background work settle before reading memory.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (rss, hwm) = memory_kib(pid);
        let (warm, warm_errors) = pass(&http, &base, opts.tenants, opts.clients).await;
        let upstream_after_warm = sim.total_requests();
        let metrics = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body");
        // The state file is written every second here (60 s by default):
        // memory is read after a write, which must not copy the cache.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let (rss_end, hwm_end) = memory_kib(pid);
        // One token's length: what the cache holds of Entra's per tenant.
        let token_len = http
            .get(format!("{base}/v1/token?tenant=t0.example.com"))
            .bearer_auth(secret(0))
            .send()
            .await
            .expect("token")
            .bytes()
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["access_token"].as_str().map(str::len))
            .unwrap_or(0);
        broker.stop();
        let state_bytes = std::fs::metadata(dir.path().join("cache.sealed")).map_or(0, |m| m.len());

        // The restart: from the state file, every tenant served with no
        // request to Entra, timed from the start of the process.
        let restarted_at = Instant::now();
        let broker = Broker::start(&config, "info,tokenbroker::access=warn");
        let ready = restarted_at.elapsed();
        let base = broker.base.clone();
        let before_restart_pass = sim.total_requests();
        let (_, restart_errors) = pass(&http, &base, opts.tenants, opts.clients).await;
        let all_served = restarted_at.elapsed();
        let restart_upstream = sim.total_requests() - before_restart_pass;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (rss_restart, hwm_restart) = memory_kib(broker.pid());
        broker.stop();

        let mib = |kib: u64| kib as f64 / 1024.0;
        let n = opts.tenants;
        let filled = rss_end.max(rss);
        let ours_per_tenant = (filled.saturating_sub(idle_rss) as f64 * 1024.0 / n as f64) - token_len as f64;
        println!("scale run: {n} tenants, {} concurrent callers, upstream bound {}", opts.clients, opts.bound);
        println!("  broker RSS idle           {:8.1} MiB", mib(idle_rss));
        println!("  cold fill                 {:8.2} s  ({:.0} tenants/s), {cold_errors} caller errors", cold.as_secs_f64(), n as f64 / cold.as_secs_f64());
        println!("  upstream requests (fill)  {upstream_after_fill:8}  (peak concurrency {peak})");
        println!("  broker RSS after fill     {:8.1} MiB (peak {:.1} MiB)", mib(rss), mib(hwm));
        println!("  served again from cache   {:8.2} s  ({:.0} req/s), {warm_errors} caller errors, {} new upstream requests", warm.as_secs_f64(), n as f64 / warm.as_secs_f64(), upstream_after_warm - upstream_after_fill);
        println!("  cache hits (metrics)      {:8}", metric(&metrics, "tokenbroker_cache_lookups_total{result=\"hit\"}"));
        println!("  cached tokens (metrics)   {:8}", metric(&metrics, "tokenbroker_cached_tokens"));
        println!("  broker RSS at the end     {:8.1} MiB (peak {:.1} MiB)", mib(rss_end), mib(hwm_end));
        println!("  per tenant: token {token_len} B, the broker's own {ours_per_tenant:.0} B");
        println!("  state file                {:8.1} MiB", state_bytes as f64 / 1048576.0);
        println!("  restart: serving after    {:8.2} s; every tenant served {:.2} s after start, {restart_errors} caller errors, {restart_upstream} upstream requests", ready.as_secs_f64(), all_served.as_secs_f64());
        println!("  broker RSS after restart  {:8.1} MiB (peak {:.1} MiB)", mib(rss_restart), mib(hwm_restart));
        // 12 MiB of the process, and 2.05 KiB per tenant (about 1 KiB of
        // token, at most 1 KiB of ours): 72 MiB at 30,000.
        let budget_mib = 12.0 + n as f64 * 2.05 / 1024.0;
        let checks = [
            (format!("RSS with all tenants cached <= {budget_mib:.0} MiB (72 MiB at 30,000)"), mib(filled.max(rss_restart)) <= budget_mib),
            ("the broker's own memory per tenant <= 1 KiB".to_owned(), ours_per_tenant <= 1024.0),
            ("cold fill: at most one upstream request per tenant".to_owned(), upstream_after_fill <= n),
            ("cold fill: no caller error".to_owned(), cold_errors == 0),
            ("upstream concurrency within the bound".to_owned(), peak <= opts.bound),
            ("second pass: all from cache, no upstream request".to_owned(), upstream_after_warm == upstream_after_fill && warm_errors == 0),
            ("restart: every tenant served within 10 s of start, 0 upstream requests".to_owned(), all_served <= Duration::from_secs(10) && restart_upstream == 0 && restart_errors == 0),
        ];
        let mut all = true;
        for (what, ok) in checks {
            println!("  [{}] {what}", if ok { "ok" } else { "MISSED" });
            all &= ok;
        }
        if !all {
            std::process::exit(1);
        }
    });
}
