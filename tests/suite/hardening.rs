//! What an attacker or a careless configuration tried, each as it was
//! reproduced: `check` passing configurations that `serve` could not run,
//! unbounded credential reads, and keys readable by others. (Host parsing,
//! remembered transient failures and the rest are in the server, cache and
//! acquisition tests.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn tokenbroker(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tokenbroker"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A directory with `app.crt`/`app.key` (the key mode 0600) and a
/// configuration made of `app_extra` (keys of `[app]`) and `extra`.
fn setup(app_extra: &str, extra: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    common::write_credential(dir.path(), "app");
    std::fs::set_permissions(
        dir.path().join("app.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let config = dir.path().join("tokenbroker.toml");
    write_config(&config, app_extra, extra);
    (dir, config)
}

fn write_config(config: &Path, app_extra: &str, extra: &str) {
    std::fs::write(
        config,
        format!(
            "[app]\nclient_id = \"{}\"\ncertificate = \"app.crt\"\nprivate_key = \"app.key\"\n{app_extra}\n{extra}",
            common::CLIENT_ID
        ),
    )
    .unwrap();
}

fn check(config: &Path) -> Output {
    tokenbroker(&["check", "--config", config.to_str().unwrap()])
}

#[test]
fn values_that_made_serve_panic_are_refused_by_check() {
    for (app, extra, key) in [
        (
            "",
            "[server]\nmax_connections = 9223372036854775807",
            "server.max_connections",
        ),
        ("", "[cache]\nkeep_warm = \"2000y\"", "cache.keep_warm"),
        (
            "",
            "[cache]\nnegative_ttl = \"300000000000y\"",
            "cache.negative_ttl",
        ),
        ("request_timeout = \"0s\"", "", "app.request_timeout"),
        ("", "[cache]\nkeep_warm = \"0s\"", "cache.keep_warm"),
        (
            "",
            "[server]\nmax_query_bytes = 0",
            "server.max_query_bytes",
        ),
    ] {
        let (_dir, config) = setup(app, extra);
        let out = check(&config);
        assert_eq!(out.status.code(), Some(2), "{key}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(key) && stderr(&out).contains("out of bounds: use"),
            "{key}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn check_runs_what_serve_runs_before_binding() {
    let (dir, config) = setup("", "");
    let garbage_ca = dir.path().join("ca.pem");
    std::fs::write(&garbage_ca, "not a certificate").unwrap();
    for (app, extra, words) in [
        (
            "ca_file = \"missing.pem\"",
            "",
            vec!["app.ca_file", "missing.pem"],
        ),
        (
            "ca_file = \"app.key\"",
            "",
            vec!["app.ca_file", "holds no certificate"],
        ),
        (
            "ca_file = \"/dev/zero\"",
            "",
            vec!["app.ca_file", "not a regular file"],
        ),
        ("ca_file = \"ca.pem\"", "", vec!["app.ca_file"]),
        (
            "",
            "[server]\nunix_socket = \"no/such/dir/tb.sock\"",
            vec!["server.unix_socket", "does not exist"],
        ),
        (
            "",
            "[server]\nadmin_socket = \"no/such/dir/admin.sock\"",
            vec!["server.admin_socket", "does not exist"],
        ),
    ] {
        write_config(&config, app, extra);
        let out = check(&config);
        assert_eq!(out.status.code(), Some(2), "{app}{extra}: {}", stderr(&out));
        for word in words {
            assert!(stderr(&out).contains(word), "{word}: {}", stderr(&out));
        }
    }
    // serve refuses the same configuration the same way, before binding.
    write_config(
        &config,
        "",
        "[server]\nlisten = \"127.0.0.1:0\"\nunix_socket = \"no/such/dir/tb.sock\"",
    );
    let out = tokenbroker(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("server.unix_socket"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn credential_files_are_read_bounded_and_whole() {
    let (dir, config) = setup("", "");
    // A device: refused at once, not 2 GB of RSS.
    let started = Instant::now();
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("certificate = \"app.crt\"", "certificate = \"/dev/zero\""),
    )
    .unwrap();
    let out = check(&config);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/dev/zero") && stderr(&out).contains("not a regular file"),
        "{}",
        stderr(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // A FIFO with no writer: refused, not a hang.
    let fifo = dir.path().join("cert.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status();
    if common::available("mkfifo (coreutils)", made.is_ok_and(|s| s.success())) {
        write_config(&config, "", "");
        std::fs::write(
            &config,
            std::fs::read_to_string(&config)
                .unwrap()
                .replace("certificate = \"app.crt\"", "certificate = \"cert.fifo\""),
        )
        .unwrap();
        let (status, _) = check_within_10_s(&config);
        assert_eq!(status.code(), Some(2));
        // The configuration file itself as a FIFO, or a device: refused at
        // once, naming the file, never a wait or a read without end.
        let config_fifo = dir.path().join("config.fifo");
        assert!(Command::new("mkfifo")
            .arg(&config_fifo)
            .status()
            .unwrap()
            .success());
        for path in [config_fifo.as_path(), Path::new("/dev/zero")] {
            let (status, said) = check_within_10_s(path);
            assert_eq!(status.code(), Some(2), "{said}");
            assert!(
                said.contains(path.to_str().unwrap()) && said.contains("not a regular file"),
                "{said}"
            );
        }
    }
    // A valid PEM followed by junk: refused, not silently accepted.
    let mut pem = std::fs::read(dir.path().join("app.crt")).unwrap();
    pem.extend_from_slice(b"\nsomething appended\n");
    std::fs::write(dir.path().join("junk.crt"), &pem).unwrap();
    write_config(&config, "", "");
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("certificate = \"app.crt\"", "certificate = \"junk.crt\""),
    )
    .unwrap();
    let out = check(&config);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("after its last PEM block"),
        "{}",
        stderr(&out)
    );
    // Over 1 MiB: refused.
    let mut big = std::fs::read(dir.path().join("app.crt")).unwrap();
    big.resize(1024 * 1024 + 1, b'\n');
    std::fs::write(dir.path().join("big.crt"), &big).unwrap();
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("certificate = \"junk.crt\"", "certificate = \"big.crt\""),
    )
    .unwrap();
    let out = check(&config);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("larger than 1048576 bytes"),
        "{}",
        stderr(&out)
    );
}

/// `tokenbroker check --config CONFIG`, which must end within 10 s (a FIFO
/// or device it reads would hang it): its status and stderr.
fn check_within_10_s(config: &Path) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokenbroker"))
        .args(["check", "--config", config.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let said = std::thread::spawn(move || {
        let mut said = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut said);
        said
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("check hung on {}", config.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, said.join().unwrap_or_default())
}

#[test]
fn a_key_readable_by_others_is_a_warning() {
    let (dir, config) = setup("", "");
    let out = check(&config);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("readable by"), "{}", stderr(&out));
    std::fs::set_permissions(
        dir.path().join("app.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = check(&config);
    assert!(
        out.status.success(),
        "a warning, not an error: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("warning: private key")
            && stderr(&out).contains("readable by every user (mode 0644)")
            && stderr(&out).contains("chmod 600"),
        "{}",
        stderr(&out)
    );
}

const CALLER: &str = "tb_flood-test-caller";

/// One flooding client: holds a keep-alive connection without a secret and
/// sends `GET /healthz` on it every 3 s (under the header timeout);
/// reconnects when the broker closes it. Returns how often it was closed.
async fn flood(
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> usize {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut closed = 0;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        loop {
            if stop.load(Ordering::Relaxed) {
                return closed;
            }
            let sent = stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await;
            let mut buf = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
            if sent.is_err() || !matches!(read, Ok(Ok(n)) if n > 0) {
                closed += 1;
                break;
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_without_secrets_does_not_lock_callers_out() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let f = common::Fixture::new(&format!(
        "[server]\nmax_connections = 40\nmax_socket_connections = 20\n\
         [[tenants]]\nname = \"contoso\"\nid = \"contoso.onmicrosoft.com\"\n\
         [[accounts]]\nname = \"caller\"\nsecret_sha256 = \"{}\"\ntenants = [\"contoso\"]\nunix_uids = [{}]\n",
        common::sha256_hex(CALLER),
        common::own_uid()
    ))
    .await;
    f.sim.consent("contoso.onmicrosoft.com");
    let server = common::Server::start(&f, |_, _| {}).await;
    assert_eq!(server.token("contoso", CALLER).await.status, 200);

    // 70 connections against a cap of 40, none with a secret.
    let stop = Arc::new(AtomicBool::new(false));
    let flooders: Vec<_> = (0..70)
        .map(|_| tokio::spawn(flood(server.addr, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (mut tcp_ok, mut unix_ok, mut health_ok) = (0, 0, 0);
    let rounds = 60;
    for _ in 0..rounds {
        if server.token("contoso", CALLER).await.status == 200 {
            tcp_ok += 1;
        }
        if server
            .get_unix("/v1/token?tenant=contoso", &[])
            .await
            .status
            == 200
        {
            unix_ok += 1;
        }
        if server.get("/healthz", &[]).await.status == 200 {
            health_ok += 1;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut displaced = 0;
    for flooder in flooders {
        displaced += flooder.await.unwrap();
    }
    eprintln!(
        "TCP callers {tcp_ok}/{rounds}, Unix-socket callers {unix_ok}/{rounds}, /healthz {health_ok}/{rounds}; flood connections closed {displaced} times"
    );
    assert!(
        tcp_ok * 100 >= rounds * 99,
        "TCP callers served {tcp_ok}/{rounds}"
    );
    assert_eq!(unix_ok, rounds, "Unix-socket callers all served");
    assert_eq!(health_ok, rounds, "/healthz answers throughout");
    assert!(displaced > 0, "the flood was displaced, not the callers");
    let metrics = server.metrics().encode();
    assert!(
        metrics.contains(
            "tokenbroker_connections_rejected_total{listener=\"tcp\",reason=\"displaced\"}"
        ),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_keep_alive_connections_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = common::Fixture::new("[server]\nidle_timeout = \"1s\"\n").await;
    let server = common::Server::start(&f, |_, _| {}).await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    assert!(stream.read(&mut buf).await.unwrap() > 0);
    // Then nothing: the broker closes the connection after idle_timeout.
    let started = Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0))), "{read:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(server
        .metrics()
        .encode()
        .contains("tokenbroker_connections_rejected_total{listener=\"tcp\",reason=\"idle\"} 1"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unconfigured_tenants_cannot_evict_configured_ones_or_flood_entra() {
    let f = common::Fixture::new(&format!(
        "[cache]\nmax_entries = 20\n\
         [[tenants]]\nname = \"fabrikam\"\nid = \"fabrikam.com\"\n\
         [[accounts]]\nname = \"wide\"\nsecret_sha256 = \"{}\"\ntenants = [\"*\"]\nmax_new_tenants_per_minute = 1000\n\
         [[accounts]]\nname = \"slow\"\nsecret_sha256 = \"{}\"\ntenants = [\"*\"]\nmax_new_tenants_per_minute = 5\n",
        common::sha256_hex("wide-secret"),
        common::sha256_hex("slow-secret"),
    ))
    .await;
    f.sim.consent("fabrikam.com");
    for i in 0..200 {
        f.sim.consent(&format!("t{i}.example.com"));
    }
    let server = common::Server::start(&f, |_, _| {}).await;
    assert_eq!(server.token("fabrikam", "wide-secret").await.status, 200);
    assert!(
        common::eventually(Duration::from_secs(5), || f.sim.requests("fabrikam.com")
            >= 1)
        .await
    );
    let fabrikam = f.sim.requests("fabrikam.com");
    // 200 unconfigured tenants through a cache bound of 20.
    for i in 0..200 {
        let answer = server
            .token(&format!("t{i}.example.com"), "wide-secret")
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    // The configured tenant idle all along is still cached: no new fetch.
    let answer = server.token("fabrikam", "wide-secret").await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        f.sim.requests("fabrikam.com"),
        fabrikam,
        "fabrikam was not evicted"
    );

    // An account limited to 5 new tenants a minute: the 6th is refused
    // locally (429 with Retry-After), nothing goes upstream for it.
    let before = f.sim.total_requests();
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for i in 0..8 {
        let answer = server
            .token(&format!("new{i}.example.com"), "slow-secret")
            .await;
        if answer.status == 429 {
            retry_after = answer.header("retry-after").map(str::to_owned);
            assert_eq!(answer.json()["error"], "too_many_new_tenants");
        }
        statuses.push(answer.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(f.sim.total_requests() - before, 5, "only 5 fetches started");
    let retry_after: u64 = retry_after.unwrap().parse().unwrap();
    assert!((1..=12).contains(&retry_after), "{retry_after}");
    // A configured tenant is never limited.
    assert_eq!(server.token("fabrikam", "slow-secret").await.status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_new_tenant_budget_charges_fetches_and_never_known_tenants() {
    let f = common::Fixture::new(&format!(
        "[cache]\nnegative_ttl = \"1s\"\n\
         [[accounts]]\nname = \"one\"\nsecret_sha256 = \"{}\"\ntenants = [\"*\"]\nmax_new_tenants_per_minute = 1\n\
         [[accounts]]\nname = \"two\"\nsecret_sha256 = \"{}\"\ntenants = [\"*\"]\nmax_new_tenants_per_minute = 2\n",
        common::sha256_hex("one-secret"),
        common::sha256_hex("two-secret"),
    ))
    .await;
    f.sim.add_unconsented_tenant("refused.example.com");
    f.sim.consent("known.example.com");
    f.sim.consent("fresh.example.com");
    let server = common::Server::start(&f, |_, _| {}).await;

    // A tenant a token was issued for stays known after its token goes:
    // asking again is not charged (the budget of one is spent).
    assert_eq!(
        server.token("known.example.com", "one-secret").await.status,
        200
    );
    server
        .app
        .broker()
        .evict("known.example.com", None, None)
        .await
        .unwrap();
    let again = server.token("known.example.com", "one-secret").await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(f.sim.requests("known.example.com"), 2);
    assert_eq!(
        server.token("fresh.example.com", "one-secret").await.status,
        429
    );

    // A refusal is answered from memory while negative_ttl runs: no
    // upstream request, nothing charged.
    for _ in 0..5 {
        let answer = server.token("refused.example.com", "two-secret").await;
        assert_eq!(answer.json()["aadsts"], "AADSTS700016", "{}", answer.body);
    }
    assert_eq!(f.sim.requests("refused.example.com"), 1);
    // Once it runs out, asking again is a fetch, and is charged.
    let deadline = Instant::now() + Duration::from_secs(5);
    while f.sim.requests("refused.example.com") < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_ne!(
            server
                .token("refused.example.com", "two-secret")
                .await
                .status,
            200
        );
    }
    assert_eq!(f.sim.requests("refused.example.com"), 2);
    // Both fetches spent: another new tenant waits, nothing goes upstream.
    let answer = server.token("fresh.example.com", "two-secret").await;
    assert_eq!(answer.status, 429, "{}", answer.body);
    assert_eq!(answer.json()["error"], "too_many_new_tenants");
    assert_eq!(f.sim.requests("fresh.example.com"), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_account_holding_every_connection_cannot_starve_another() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = common::Fixture::new(&format!(
        "[server]\nmax_connections = 20\n\
         [[tenants]]\nname = \"contoso\"\nid = \"contoso.onmicrosoft.com\"\n\
         [[accounts]]\nname = \"greedy\"\nsecret_sha256 = \"{}\"\ntenants = [\"contoso\"]\n\
         [[accounts]]\nname = \"other\"\nsecret_sha256 = \"{}\"\ntenants = [\"contoso\"]\n",
        common::sha256_hex("greedy-secret"),
        common::sha256_hex("other-secret"),
    ))
    .await;
    f.sim.consent("contoso.onmicrosoft.com");
    let server = common::Server::start(&f, |_, _| {}).await;
    // The greedy account opens 30 keep-alive connections, each with one
    // authenticated request answered, and keeps them all open.
    let mut held = Vec::new();
    for _ in 0..30 {
        let Ok(mut stream) = tokio::net::TcpStream::connect(server.addr).await else {
            continue;
        };
        let request = "GET /v1/token?tenant=contoso HTTP/1.1\r\nHost: localhost\r\n\
                       Authorization: Bearer greedy-secret\r\n\r\n";
        if stream.write_all(request.as_bytes()).await.is_err() {
            continue;
        }
        let mut buf = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
        held.push(stream);
    }
    // Its share is half of max_connections: its own oldest idle ones were
    // closed as it went past 10.
    let mut open = 0;
    for stream in &mut held {
        let mut buf = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            _ => open += 1,
        }
    }
    assert!(
        open <= 10,
        "{open} of the greedy account's connections still open"
    );
    // Another account's new connections are all served.
    for _ in 0..20 {
        assert_eq!(server.token("contoso", "other-secret").await.status, 200);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_accounts_new_tenants_leave_upstream_slots_for_another_account() {
    let f = common::Fixture::new(&format!(
        "max_concurrent_requests = 4\n\
         [[tenants]]\nname = \"contoso\"\nid = \"contoso.onmicrosoft.com\"\n\
         [[accounts]]\nname = \"wide\"\nsecret_sha256 = \"{}\"\ntenants = [\"*\"]\nmax_new_tenants_per_minute = 1000\n\
         [[accounts]]\nname = \"mine\"\nsecret_sha256 = \"{}\"\ntenants = [\"contoso\"]\n",
        common::sha256_hex("wide-secret"),
        common::sha256_hex("mine-secret"),
    ))
    .await;
    f.sim.consent("contoso.onmicrosoft.com");
    for i in 0..40 {
        f.sim.consent(&format!("slow{i}.example.com"));
    }
    let server = std::sync::Arc::new(common::Server::start(&f, |_, _| {}).await);
    // Contoso's token must be fetched while the flood is on.
    assert_eq!(server.token("contoso", "mine-secret").await.status, 200);
    server
        .app
        .broker()
        .evict("contoso", None, None)
        .await
        .unwrap();
    // A slow Entra, and one account asking for 40 new tenants at once.
    f.sim.set_latency(Duration::from_secs(1));
    let flood: Vec<_> = (0..40)
        .map(|i| {
            let server = std::sync::Arc::clone(&server);
            tokio::spawn(async move {
                server
                    .token(&format!("slow{i}.example.com"), "wide-secret")
                    .await
                    .status
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The other account's configured tenant finds a slot free: one round
    // trip (1 s), not a place behind the whole flood (10 s: 40 fetches, 4
    // at a time).
    let started = std::time::Instant::now();
    let answer = server.token("contoso", "mine-secret").await;
    let waited = started.elapsed();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        waited < Duration::from_secs(4),
        "waited {waited:?} behind another account's new tenants"
    );
    for task in flood {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert!(f.sim.peak_concurrency() <= 4);
    match std::sync::Arc::try_unwrap(server) {
        Ok(server) => server.stop().await,
        Err(_) => panic!("the server is still shared"),
    }
}

/// A gateway-only account never gets a raw token, on either route; the
/// refusal is counted and says where to send its requests.
#[tokio::test(flavor = "multi_thread")]
async fn a_graph_only_account_gets_no_raw_token() {
    let f = common::Fixture::new(&format!(
        "[[tenants]]\nname = \"contoso\"\nid = \"contoso.onmicrosoft.com\"\n\
         [[accounts]]\nname = \"gateway\"\nsecret_sha256 = \"{}\"\ntenants = [\"contoso\"]\n\
         default_tenant = \"contoso\"\ngraph_only = true\n\
         [[accounts.graph]]\nmethods = [\"GET\"]\npaths = [\"/users/{{mailbox}}/messages\"]\nmailboxes = [\"*\"]\n",
        common::sha256_hex("gateway-secret"),
    ))
    .await;
    f.sim.consent("contoso.onmicrosoft.com");
    let server = common::Server::start(&f, |_, _| {}).await;
    // Other accounts are served as before (and the tenant is cached).
    assert_eq!(
        server.token("contoso", common::TESTER_SECRET).await.status,
        200
    );
    let before = f.sim.total_requests();
    let refused = server.token("contoso", "gateway-secret").await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.body.contains("graph_only") && refused.body.contains("gateway"),
        "{}",
        refused.body
    );
    let msi = server
        .get(
            "/msi/token?api-version=2019-08-01&resource=https://graph.microsoft.com",
            &[("X-IDENTITY-HEADER", "gateway-secret")],
        )
        .await;
    // The App Service protocol answers every refusal 400 (an SDK retries a
    // 404 and reads a 403 as "no managed identity here"), with the reason.
    assert_eq!(msi.status, 400, "{}", msi.body);
    assert!(msi.body.contains("graph_only"), "{}", msi.body);
    assert_eq!(
        f.sim.total_requests(),
        before,
        "the refusals cost Entra nothing"
    );
    assert!(server
        .metrics()
        .encode()
        .contains("tokenbroker_auth_failures_total{reason=\"graph_only\"} 2"));
}
