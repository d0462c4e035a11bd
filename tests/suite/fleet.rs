//! The fleet cache with the real thing: `redis-server` (and a 3-master Redis
//! Cluster made with `redis-cli --cluster create`) started on free ports,
//! several real `tokenbroker serve` processes, one simulated authority that
//! counts every request.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{Daemon, Fixture, CLIENT_ID, GRAPH, TESTER_SECRET};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokenbroker::cache::CacheKey;
use tokenbroker::config::{Resource, TenantId};

fn redis_available() -> bool {
    common::available(
        "redis-server and redis-cli (Debian package redis-server)",
        common::has_program("redis-server") && common::has_program("redis-cli"),
    )
}

/// A `redis-server` of its own, stopped on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    cluster: bool,
}

impl Redis {
    /// A server on a free port. A cluster node also needs its bus port
    /// (port + 10,000) free and below 65,536; a port another process took
    /// first is given up for another (at most three tries).
    fn start(dir: &Path, cluster: bool) -> Redis {
        let mut redis = Redis {
            child: None,
            port: 0,
            dir: dir.to_owned(),
            cluster,
        };
        for _ in 0..3 {
            redis.port = loop {
                let port = common::free_port();
                let bus_free = || std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok();
                if !cluster || (port < 55_536 && bus_free()) {
                    break port;
                }
            };
            if redis.try_spawn() {
                return redis;
            }
            redis.stop();
        }
        panic!("redis-server did not start on three free ports");
    }

    /// Starts (or restarts, on the same port) and waits until it answers.
    fn spawn(&mut self) {
        assert!(
            self.try_spawn(),
            "redis-server on port {} did not answer",
            self.port
        );
    }

    fn try_spawn(&mut self) -> bool {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.cluster {
            command.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &format!("nodes-{}.conf", self.port),
            ]);
        }
        self.child = Some(command.spawn().expect("start redis-server"));
        // Up to 15 s: the suite runs tests side by side on few cores.
        for _ in 0..300 {
            if self.cli(&["PING"]).trim() == "PONG" {
                return true;
            }
            // Exited: its port (or bus port) was taken meanwhile.
            if let Some(child) = self.child.as_mut() {
                if child.try_wait().ok().flatten().is_some() {
                    return false;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Three masters, all slots assigned.
fn cluster(dir: &Path) -> Vec<Redis> {
    let nodes: Vec<Redis> = (0..3).map(|_| Redis::start(dir, true)).collect();
    let mut create = Command::new("redis-cli");
    create.arg("--cluster").arg("create");
    for node in &nodes {
        create.arg(format!("127.0.0.1:{}", node.port));
    }
    let out = create
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "redis-cli --cluster create: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for _ in 0..100 {
        if nodes
            .iter()
            .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        {
            return nodes;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the cluster did not reach cluster_state:ok");
}

fn tenant(i: usize) -> String {
    format!("tenant{i}.example.com")
}

/// A cache key file, from the real command.
fn key_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let out = Command::new(env!("CARGO_BIN_EXE_tokenbroker"))
        .args(["cache-key", "new", "--out"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// A broker configuration sharing `shared` (the `[shared_cache]` body).
fn broker_config(f: &Fixture, name: &str, shared: &str, extra: &str) -> PathBuf {
    let path = f.dir.path().join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_socket = \"{name}-admin.sock\"\n\
             [app]\nclient_id = \"{CLIENT_ID}\"\nauthority_host = \"{}\"\n\
             certificate = \"app.crt\"\nprivate_key = \"app.key\"\nrequest_timeout = \"5s\"\n\
             max_concurrent_requests = 64\n\
             {extra}\n\
             [shared_cache]\n{shared}\n\
             [[accounts]]\nname = \"tester\"\nsecret_sha256 = \"{}\"\ntenants = [\"*\"]\n\
             max_new_tenants_per_minute = 1000\n",
            f.sim.url(),
            common::sha256_hex(TESTER_SECRET),
        ),
    )
    .unwrap();
    path
}

async fn fixture(tenants: usize) -> Fixture {
    let f = Fixture::new("").await;
    for i in 0..tenants {
        f.sim.consent(&tenant(i));
    }
    f
}

async fn token(broker: &Daemon, tenant: &str) -> common::HttpAnswer {
    broker
        .get(
            &format!("/v1/token?tenant={tenant}"),
            &[("Authorization", &format!("Bearer {TESTER_SECRET}"))],
        )
        .await
}

/// `callers` concurrent callers spread over `brokers`, `tenants` tenants
/// round-robin; every one must get a token.
async fn storm(brokers: &[Daemon], tenants: usize, callers: usize) {
    let mut tasks = Vec::new();
    for i in 0..callers {
        let addr = brokers[i % brokers.len()].addr;
        let tenant = tenant(i % tenants);
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            common::request(
                stream,
                "GET",
                &format!("/v1/token?tenant={tenant}"),
                &[("Authorization", &format!("Bearer {TESTER_SECRET}"))],
            )
            .await
        }));
    }
    for task in tasks {
        let answer = task.await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
}

/// `/metrics` of a broker.
async fn metrics(broker: &Daemon) -> String {
    broker.get("/metrics", &[]).await.body
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A timeout a loaded 2-core machine meets (CI builds while tests run).
const SHARED: &str = "timeout = \"5s\"\nlease = \"15s\"\n";

/// Waits until `broker` reaches the shared cache (it connects in the
/// background at start).
async fn until_shared(broker: &Daemon) {
    for _ in 0..200 {
        if metric(&metrics(broker).await, "tokenbroker_shared_cache_up") == 1.0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the broker did not reach the shared cache");
}

#[tokio::test(flavor = "multi_thread")]
async fn three_brokers_and_300_cold_callers_cost_entra_one_request_per_tenant() {
    if !redis_available() {
        return;
    }
    let f = fixture(50).await;
    f.sim.set_latency(Duration::from_millis(200));
    let redis = Redis::start(f.dir.path(), false);
    let key = key_file(f.dir.path(), "shared.key");
    let shared = format!(
        "url = \"{}\"\nkey_file = \"{}\"\n{SHARED}",
        redis.url(),
        key.display()
    );
    let mut brokers = Vec::new();
    for name in ["a", "b", "c"] {
        brokers.push(Daemon::spawn(&broker_config(&f, name, &shared, "")).await);
    }
    for broker in &brokers {
        until_shared(broker).await;
    }
    storm(&brokers, 50, 300).await;
    assert_eq!(
        f.sim.total_requests(),
        50,
        "one upstream request per tenant, fleet-wide"
    );
    let text = metrics(&brokers[0]).await;
    assert!(text.contains("tokenbroker_shared_cache_operations_total{op=\"lease\",result=\"ok\"}"));
    assert_eq!(metric(&text, "tokenbroker_shared_cache_up"), 1.0);
    // Tokens are in Redis, sealed: no token text, 50 values.
    let keys = redis.cli(&["--scan", "--pattern", "tokenbroker:token:*"]);
    assert_eq!(keys.lines().count(), 50, "{keys}");
    let answer = token(&brokers[1], &tenant(7)).await;
    let access = answer.json()["access_token"].as_str().unwrap().to_owned();
    let raw = redis.cli(&["GET", keys.lines().next().unwrap()]);
    assert!(
        !raw.contains(&access[..40]) && !raw.contains("eyJ"),
        "sealed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_cluster_shares_as_one_server_does() {
    if !redis_available() {
        return;
    }
    let f = fixture(30).await;
    f.sim.set_latency(Duration::from_millis(200));
    let nodes = cluster(f.dir.path());
    let key = key_file(f.dir.path(), "shared.key");
    let urls: Vec<String> = nodes
        .iter()
        .map(|n| format!("\"{}\"", n.url().trim_end_matches("/0")))
        .collect();
    let shared = format!(
        "urls = [{}]\nkey_file = \"{}\"\n{SHARED}",
        urls.join(", "),
        key.display()
    );
    let mut brokers = Vec::new();
    for name in ["a", "b", "c"] {
        brokers.push(Daemon::spawn(&broker_config(&f, name, &shared, "")).await);
    }
    // The cluster connection comes up in the background.
    for broker in &brokers {
        until_shared(broker).await;
    }
    storm(&brokers, 30, 180).await;
    assert_eq!(
        f.sim.total_requests(),
        30,
        "one upstream request per tenant, fleet-wide"
    );
    // The values are spread over the masters.
    let per_node: Vec<usize> = nodes
        .iter()
        .map(|n| {
            n.cli(&["--scan", "--pattern", "tokenbroker:token:*"])
                .lines()
                .count()
        })
        .collect();
    assert_eq!(per_node.iter().sum::<usize>(), 30, "{per_node:?}");
    assert!(
        per_node.iter().filter(|&&n| n > 0).count() >= 2,
        "{per_node:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn background_refresh_happens_once_per_token_per_cycle_for_the_fleet() {
    if !redis_available() {
        return;
    }
    let f = fixture(5).await;
    // 20 s tokens: refreshed at 20 − 3 × min_remaining = 14 s.
    f.sim.set_token_lifetime(Duration::from_secs(20));
    let redis = Redis::start(f.dir.path(), false);
    let key = key_file(f.dir.path(), "shared.key");
    let shared = format!(
        "url = \"{}\"\nkey_file = \"{}\"\n{SHARED}",
        redis.url(),
        key.display()
    );
    let cache = "[cache]\nmin_remaining = \"2s\"\n";
    let mut brokers = Vec::new();
    for name in ["a", "b", "c"] {
        brokers.push(Daemon::spawn(&broker_config(&f, name, &shared, cache)).await);
    }
    // Every broker holds every tenant's token.
    for broker in &brokers {
        for i in 0..5 {
            assert_eq!(token(broker, &tenant(i)).await.status, 200);
        }
    }
    assert_eq!(f.sim.total_requests(), 5);
    // Three cycles of about 14 s.
    tokio::time::sleep(Duration::from_secs(45)).await;
    for i in 0..5 {
        let n = f.sim.requests(&tenant(i));
        // The first fetch and one refresh per cycle (3, or 4 at a boundary), not three.
        assert!(
            (3..=5).contains(&n),
            "{}: {n} requests over 3 cycles",
            tenant(i)
        );
    }
    // Every broker still serves a fresh token without asking Entra.
    let before = f.sim.total_requests();
    for broker in &brokers {
        for i in 0..5 {
            assert_eq!(token(broker, &tenant(i)).await.status, 200);
        }
    }
    assert_eq!(f.sim.total_requests(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_redis_callers_never_fail_and_sharing_resumes_when_it_is_back() {
    if !redis_available() {
        return;
    }
    let f = fixture(40).await;
    let mut redis = Redis::start(f.dir.path(), false);
    let key = key_file(f.dir.path(), "shared.key");
    let shared = format!(
        "url = \"{}\"\nkey_file = \"{}\"\ntimeout = \"250ms\"\n",
        redis.url(),
        key.display()
    );
    let a = Daemon::spawn(&broker_config(&f, "a", &shared, "")).await;
    let b = Daemon::spawn(&broker_config(&f, "b", &shared, "")).await;
    // Shared: tenant 0 costs one request for both.
    assert_eq!(token(&a, &tenant(0)).await.status, 200);
    assert_eq!(token(&b, &tenant(0)).await.status, 200);
    assert_eq!(f.sim.requests(&tenant(0)), 1);

    redis.stop();
    // Callers loop through the outage: cached tenants and new ones alike.
    for i in 0..20 {
        for broker in [&a, &b] {
            let answer = token(broker, &tenant(i)).await;
            assert_eq!(answer.status, 200, "during the outage: {}", answer.body);
        }
    }
    // New tenants were fetched directly, by each broker.
    assert_eq!(f.sim.requests(&tenant(10)), 2);
    let text = metrics(&a).await;
    assert_eq!(metric(&text, "tokenbroker_shared_cache_up"), 0.0);
    // Failed at once (refused) or past shared_cache.timeout (a reconnect
    // that gets nowhere): counted either way.
    let failed = ["error", "timeout"]
        .iter()
        .map(|result| {
            metric(
                &text,
                &format!(
                    "tokenbroker_shared_cache_operations_total{{op=\"get\",result=\"{result}\"}}"
                ),
            )
        })
        .sum::<f64>();
    assert!(failed >= 1.0, "{text}");

    redis.spawn();
    // Sharing resumes: a new tenant costs one request again.
    let mut resumed = false;
    for i in 20..40 {
        assert_eq!(token(&a, &tenant(i)).await.status, 200);
        assert_eq!(token(&b, &tenant(i)).await.status, 200);
        if f.sim.requests(&tenant(i)) == 1 {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(resumed, "sharing did not resume after Redis came back");
    assert_eq!(
        metric(&metrics(&a).await, "tokenbroker_shared_cache_up"),
        1.0
    );
}

fn graph_key(tenant: &str) -> CacheKey {
    CacheKey::new(
        &tokenbroker::config::AppKey {
            name: tokenbroker::config::Name::default_app(),
            client_id: tokenbroker::config::Guid::try_from(CLIENT_ID.to_owned()).unwrap(),
        },
        &TenantId::try_from(tenant.to_owned()).unwrap(),
        &Resource::parse(GRAPH).unwrap(),
    )
}

async fn raw_get(redis: &Redis, key: &str) -> Vec<u8> {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap()
}

async fn raw_set(redis: &Redis, key: &str, value: &[u8]) {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .arg("EX")
        .arg(3000)
        .query_async(&mut c)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn altered_or_moved_values_are_rejected_counted_and_refetched() {
    if !redis_available() {
        return;
    }
    let f = fixture(3).await;
    let redis = Redis::start(f.dir.path(), false);
    let key = key_file(f.dir.path(), "shared.key");
    let shared = format!(
        "url = \"{}\"\nkey_file = \"{}\"\n{SHARED}",
        redis.url(),
        key.display()
    );
    let a = Daemon::spawn(&broker_config(&f, "a", &shared, "")).await;
    let b = Daemon::spawn(&broker_config(&f, "b", &shared, "")).await;
    let name =
        |i: usize| tokenbroker::fleet::redis_key("tokenbroker", &graph_key(&tenant(i)), "token");
    let from_a = token(&a, &tenant(0)).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Tenant 0's value copied under tenant 1's key.
    let value = raw_get(&redis, &name(0)).await;
    raw_set(&redis, &name(1), &value).await;
    let answer = token(&b, &tenant(1)).await;
    assert_eq!(answer.status, 200);
    let got = answer.json()["access_token"].as_str().unwrap().to_owned();
    assert_ne!(got, from_a, "never another tenant's token");
    assert_eq!(common::claims(&got)["tid"], f.sim.consent(&tenant(1)));
    // A flipped byte in tenant 2's value.
    assert_eq!(token(&a, &tenant(2)).await.status, 200);
    let mut altered = raw_get(&redis, &name(2)).await;
    let middle = altered.len() / 2;
    altered[middle] ^= 0x01;
    raw_set(&redis, &name(2), &altered).await;
    assert_eq!(token(&b, &tenant(2)).await.status, 200);
    assert_eq!(f.sim.requests(&tenant(1)), 1, "refetched");
    assert_eq!(f.sim.requests(&tenant(2)), 2, "refetched");
    let text = metrics(&b).await;
    assert_eq!(
        metric(
            &text,
            "tokenbroker_shared_cache_operations_total{op=\"get\",result=\"rejected\"}"
        ),
        2.0,
        "{text}"
    );
    // Replaced: a third broker reads the new value, no request.
    let c = Daemon::spawn(&broker_config(&f, "c", &shared, "")).await;
    assert_eq!(token(&c, &tenant(2)).await.status, 200);
    assert_eq!(f.sim.requests(&tenant(2)), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_key_reads_old_values_and_writes_new_ones() {
    if !redis_available() {
        return;
    }
    let f = fixture(2).await;
    let redis = Redis::start(f.dir.path(), false);
    let old = key_file(f.dir.path(), "old.key");
    let new = key_file(f.dir.path(), "new.key");
    let before = format!(
        "url = \"{}\"\nkey_file = \"{}\"\n{SHARED}",
        redis.url(),
        old.display()
    );
    let a = Daemon::spawn(&broker_config(&f, "a", &before, "")).await;
    assert_eq!(token(&a, &tenant(0)).await.status, 200);
    let after = format!(
        "url = \"{}\"\nkey_file = \"{}\"\nold_key_files = [\"{}\"]\n{SHARED}",
        redis.url(),
        new.display(),
        old.display()
    );
    let b = Daemon::spawn(&broker_config(&f, "b", &after, "")).await;
    assert_eq!(token(&b, &tenant(0)).await.status, 200);
    assert_eq!(f.sim.requests(&tenant(0)), 1, "the old value was read");
    assert_eq!(token(&b, &tenant(1)).await.status, 200);
    let written = raw_get(
        &redis,
        &tokenbroker::fleet::redis_key("tokenbroker", &graph_key(&tenant(1)), "token"),
    )
    .await;
    let new_id = tokenbroker::seal::Keys::load(&new, &[])
        .unwrap()
        .current_id();
    assert_eq!(hex(&written[3..11]), new_id, "written under the new key");
    // A broker with only the old key cannot read it, counts it, and fetches.
    assert_eq!(token(&a, &tenant(1)).await.status, 200);
    assert_eq!(f.sim.requests(&tenant(1)), 2);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_brokers_429_keeps_the_fleet_from_asking() {
    if !redis_available() {
        return;
    }
    let f = fixture(1).await;
    let redis = Redis::start(f.dir.path(), false);
    let key = key_file(f.dir.path(), "shared.key");
    let shared = format!(
        "url = \"{}\"\nkey_file = \"{}\"\n{SHARED}",
        redis.url(),
        key.display()
    );
    let brokers = [
        Daemon::spawn(&broker_config(&f, "a", &shared, "")).await,
        Daemon::spawn(&broker_config(&f, "b", &shared, "")).await,
        Daemon::spawn(&broker_config(&f, "c", &shared, "")).await,
    ];
    f.sim.push_fault(entra_sim::Fault::Throttle(60), 1);
    let first = token(&brokers[0], &tenant(0)).await;
    assert_eq!(first.status, 503, "{}", first.body);
    assert_eq!(f.sim.total_requests(), 1);
    for broker in &brokers[1..] {
        let answer = token(broker, &tenant(0)).await;
        assert_eq!(answer.status, 503, "{}", answer.body);
        let retry: u64 = answer.header("retry-after").unwrap().parse().unwrap();
        assert!((50..=60).contains(&retry), "{retry}");
    }
    assert_eq!(f.sim.total_requests(), 1, "no other broker asked Entra");
}

#[tokio::test(flavor = "multi_thread")]
async fn evict_and_rejected_hashes_write_through() {
    if !redis_available() {
        return;
    }
    let f = fixture(1).await;
    let redis = Redis::start(f.dir.path(), false);
    let key = key_file(f.dir.path(), "shared.key");
    let shared = format!(
        "url = \"{}\"\nkey_file = \"{}\"\n{SHARED}",
        redis.url(),
        key.display()
    );
    let a = Daemon::spawn(&broker_config(&f, "a", &shared, "")).await;
    let b = Daemon::spawn(&broker_config(&f, "b", &shared, "")).await;
    let first = token(&a, &tenant(0)).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // A caller of b saw it rejected: b fetches anew and replaces the shared value.
    let hash = common::sha256_hex(&first);
    let answer = b
        .get(
            &format!(
                "/v1/token?tenant={}&token_sha256_to_refresh={hash}",
                tenant(0)
            ),
            &[("Authorization", &format!("Bearer {TESTER_SECRET}"))],
        )
        .await;
    let second = answer.json()["access_token"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert_eq!(f.sim.total_requests(), 2);
    let c = Daemon::spawn(&broker_config(&f, "c", &shared, "")).await;
    let seen_by_c = token(&c, &tenant(0)).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        seen_by_c, second,
        "the replaced value, not the rejected one"
    );
    // Evict on a deletes the shared value: a fresh broker fetches again.
    let evicted = common::admin(
        &f.dir.path().join("a-admin.sock"),
        "POST",
        &format!("/admin/tenants/{}/evict", tenant(0)),
    )
    .await;
    assert_eq!(evicted.status, 200, "{}", evicted.body);
    assert!(redis
        .cli(&["--scan", "--pattern", "tokenbroker:token:*"])
        .trim()
        .is_empty());
    let d = Daemon::spawn(&broker_config(&f, "d", &shared, "")).await;
    assert_eq!(token(&d, &tenant(0)).await.status, 200);
    assert_eq!(f.sim.total_requests(), 3);
    // The admin status shows the shared cache.
    let status = common::admin(&f.dir.path().join("d-admin.sock"), "GET", "/admin/status").await;
    let shared_status = &status.json()["shared_cache"];
    assert_eq!(shared_status["state"], "ok", "{shared_status}");
    assert!(shared_status["target"]
        .as_str()
        .unwrap()
        .contains("127.0.0.1"));
    // ... and `tokenbroker status` prints it.
    let out = Command::new(env!("CARGO_BIN_EXE_tokenbroker"))
        .args(["status", "--admin-socket"])
        .arg(f.dir.path().join("d-admin.sock"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("shared cache redis://127.0.0.1:") && l.contains(" ok ")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_online_round_trips_a_sealed_value_and_names_what_fails() {
    if !redis_available() {
        return;
    }
    let f = fixture(1).await;
    let redis = Redis::start(f.dir.path(), false);
    let key = key_file(f.dir.path(), "shared.key");
    let shared = format!(
        "url = \"{}\"\nkey_file = \"{}\"\n{SHARED}",
        redis.url(),
        key.display()
    );
    let config = broker_config(
        &f,
        "a",
        &shared,
        "[[tenants]]\nname = \"t0\"\nid = \"tenant0.example.com\"\n",
    );
    let check = |config: &Path| {
        Command::new(env!("CARGO_BIN_EXE_tokenbroker"))
            .args(["check", "--online", "--config"])
            .arg(config)
            .output()
            .unwrap()
    };
    let out = check(&config);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("shared cache redis://127.0.0.1:") && text.contains(": ok"),
        "{text}"
    );
    // A Redis that is not there: the check fails and says what to look at.
    let gone = format!(
        "url = \"redis://127.0.0.1:{}/0\"\nkey_file = \"{}\"\ntimeout = \"200ms\"\n",
        common::free_port(),
        key.display()
    );
    let config = broker_config(&f, "b", &gone, "");
    let out = check(&config);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("shared cache") && said.contains("FAILED"),
        "{said}"
    );
    // A key file that is not a key: exit 2, naming the key.
    std::fs::write(f.dir.path().join("bad.key"), "not a key\n").unwrap();
    let bad = format!("url = \"{}\"\nkey_file = \"bad.key\"\n", redis.url());
    let config = broker_config(&f, "c", &bad, "");
    let out = check(&config);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("shared_cache.key_file") && said.contains("bad.key"),
        "{said}"
    );
}

/// A writer to Redis cannot make a broker read a huge value whole: the
/// store reads at most one byte past 64 KiB (and the fleet refuses that).
#[tokio::test(flavor = "multi_thread")]
async fn a_huge_shared_value_is_never_read_whole() {
    use tokenbroker::fleet::store::{RedisStore, RedisTarget, Store, MAX_VALUE_BYTES};
    if !redis_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path(), false);
    let store = RedisStore::connect(RedisTarget {
        seeds: vec![redis.url()],
        cluster: false,
        username: None,
        password: None,
        ca_pem: None,
        timeout: Duration::from_secs(2),
    })
    .unwrap();
    store
        .set("huge".into(), vec![7u8; 4 << 20], Duration::from_secs(60))
        .await
        .unwrap();
    let value = store.get("huge".into()).await.unwrap().unwrap();
    assert_eq!(value.len(), MAX_VALUE_BYTES + 1);
    store
        .set("small".into(), b"sealed".to_vec(), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        store.get("small".into()).await.unwrap().as_deref(),
        Some(&b"sealed"[..])
    );
    assert_eq!(store.get("missing".into()).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_shared_operation_after_a_redis_restart_succeeds() {
    if !redis_available() {
        return;
    }
    let f = fixture(3).await;
    let mut redis = Redis::start(f.dir.path(), false);
    let key = key_file(f.dir.path(), "shared.key");
    let shared = format!(
        "url = \"{}\"\nkey_file = \"{}\"\n{SHARED}",
        redis.url(),
        key.display()
    );
    let a = Daemon::spawn(&broker_config(&f, "a", &shared, "")).await;
    until_shared(&a).await;
    assert_eq!(token(&a, &tenant(0)).await.status, 200);
    let errors = |text: &str| {
        ["get", "set", "lease"]
            .iter()
            .map(|op| {
                metric(
                    text,
                    &format!(
                        "tokenbroker_shared_cache_operations_total{{op=\"{op}\",result=\"error\"}}"
                    ),
                )
            })
            .sum::<f64>()
    };
    let before = errors(&metrics(&a).await);
    // Redis restarts while this host is idle: its connection is dead.
    redis.stop();
    redis.spawn();
    // The next fetch's shared operations meet the dead connection first
    // and are retried once on a fresh one: none fails.
    assert_eq!(token(&a, &tenant(1)).await.status, 200);
    assert_eq!(errors(&metrics(&a).await), before);
    let keys = redis.cli(&["--scan", "--pattern", "tokenbroker:token:*"]);
    assert_eq!(
        keys.lines().count(),
        1,
        "tenant 1's token is shared: {keys}"
    );
}
