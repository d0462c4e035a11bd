//! Shared test fixtures: a credential on disk, a simulated authority that
//! knows it, a configuration pointing at it, a broker and a server started
//! the way `tokenbroker serve` starts them, and the rule for tests that need
//! something beyond the toolchain.
#![allow(dead_code)] // each test crate uses a different subset
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod sdk;

use entra_sim::SimulatedAuthority;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokenbroker::authority::{AuthoritySettings, RetryPolicy};
use tokenbroker::backoff::Backoff;
use tokenbroker::broker::{Broker, Issued, TokenError};
use tokenbroker::cache::{CacheSettings, NoObserver};
use tokenbroker::clock::SystemClock;
use tokenbroker::config::Config;
use tokenbroker::credentials::{Credential, CredentialSet, CredentialSource};
use tokenbroker::daemon::Options;

pub const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
pub const GRAPH: &str = "https://graph.microsoft.com";
/// The secret of the `tester` account every fixture configures: any tenant,
/// Graph and Outlook.
pub const TESTER_SECRET: &str = "tester-secret";

/// Whether a test that needs `what` can run here. When it cannot, the test
/// says so on stderr (past libtest's capture, so it shows in `cargo test`'s
/// output) and skips itself — unless `TOKENBROKER_TEST_ALL=1` (CI), where a
/// missing requirement fails the test.
pub fn available(what: &str, ok: bool) -> bool {
    if ok {
        return true;
    }
    if std::env::var("TOKENBROKER_TEST_ALL").as_deref() == Ok("1") {
        panic!("TOKENBROKER_TEST_ALL=1, but this test cannot run: it needs {what}");
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {}: needs {what} (TOKENBROKER_TEST_ALL=1 makes this a failure)",
        std::thread::current().name().unwrap_or("a test")
    );
    false
}

/// Whether `program` runs here (`program --version` or `-version` exits at all).
pub fn has_program(program: &str) -> bool {
    ["--version", "version", "-h"].iter().any(|arg| {
        std::process::Command::new(program)
            .arg(arg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok()
    })
}

/// A TCP port free on loopback now (for a server the test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether this process runs as root (it may then act as another uid).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|uids| uids.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false)
}

/// A fresh RSA-2048 certificate and key written to `dir/{name}.crt|.key`;
/// returns the certificate DER.
pub fn write_credential(dir: &Path, name: &str) -> Vec<u8> {
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    let cert = rcgen::CertificateParams::new(vec!["tokenbroker.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    cert.der().to_vec()
}

/// Everything a test needs: a temp dir with `app.crt`/`app.key`, a running
/// simulated authority with that certificate registered, and a config file.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub sim: SimulatedAuthority,
    pub cert_der: Vec<u8>,
    pub config_path: PathBuf,
}

impl Fixture {
    /// `extra` is appended to the configuration (tenants, accounts, cache…),
    /// and after it the `tester` account.
    pub async fn new(extra: &str) -> Fixture {
        Fixture::with_credentials(
            "certificate = \"app.crt\"\nprivate_key = \"app.key\"\n",
            extra,
        )
        .await
    }

    /// As [`new`](Self::new), with `credentials` (keys of `[app]`, or
    /// `[[app.credentials]]` tables after `extra`'s `[app]` keys) in place
    /// of the `certificate`/`private_key` pair. `app.crt`/`app.key` are
    /// written and registered either way.
    pub async fn with_credentials(credentials: &str, extra: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let cert_der = write_credential(dir.path(), "app");
        let sim = SimulatedAuthority::start(CLIENT_ID).await.unwrap();
        sim.register_certificate(&cert_der).unwrap();
        let config_path = dir.path().join("tokenbroker.toml");
        let fixture = Fixture {
            dir,
            sim,
            cert_der,
            config_path,
        };
        fixture.write_config(credentials, extra);
        fixture
    }

    /// Rewrites the configuration file (the same shape as `with_credentials`).
    pub fn write_config(&self, credentials: &str, extra: &str) {
        let (app_keys, tables) = match credentials.find("[[app.credentials]]") {
            Some(at) => credentials.split_at(at),
            None => (credentials, ""),
        };
        std::fs::write(
            &self.config_path,
            format!(
                "[app]\nclient_id = \"{CLIENT_ID}\"\nauthority_host = \"{}\"\n{app_keys}request_timeout = \"2s\"\n{extra}\n{tables}\n\
                 [[accounts]]\nname = \"tester\"\nsecret_sha256 = \"{}\"\ntenants = [\"*\"]\n\
                 resources = [\"{GRAPH}\", \"https://outlook.office365.com\"]\n",
                self.sim.url(),
                sha256_hex(TESTER_SECRET),
            ),
        )
        .unwrap();
    }

    pub fn config(&self) -> Arc<Config> {
        Arc::new(Config::load(&self.config_path).unwrap())
    }

    /// The configuration's first credential.
    pub fn credential(&self, config: &Config) -> Credential {
        Credential::load(
            &CredentialSource::all_from_config(config.app())[0],
            SystemTime::now(),
        )
        .unwrap()
        .credential
    }

    /// Every credential of every app the configuration names, as `serve`
    /// loads them.
    pub fn credentials(&self, config: &Config) -> Vec<Arc<CredentialSet>> {
        tokenbroker::daemon::load_credentials(config, &self.config_path)
            .unwrap()
            .0
            .into_iter()
            .map(Arc::new)
            .collect()
    }

    /// The configuration's options with quick retries (so tests of backoff
    /// take milliseconds), then `adjust`.
    pub fn options(
        &self,
        config: &Config,
        adjust: impl FnOnce(&mut AuthoritySettings, &mut CacheSettings),
    ) -> Options {
        let mut options = Options::from_config(config);
        options.authority.retry = RetryPolicy {
            max_attempts: 4,
            backoff: Backoff {
                base: Duration::from_millis(20),
                cap: Duration::from_millis(100),
            },
            budget: Duration::from_secs(10),
        };
        adjust(&mut options.authority, &mut options.cache);
        options
    }

    /// A broker with quick retries.
    pub fn broker(&self) -> Broker {
        self.broker_with(|_, _| {})
    }

    pub fn broker_with(
        &self,
        adjust: impl FnOnce(&mut AuthoritySettings, &mut CacheSettings),
    ) -> Broker {
        let config = self.config();
        let options = self.options(&config, adjust);
        let credentials = self.credentials(&config);
        Broker::with_settings(
            config,
            options.authority,
            options.cache,
            credentials,
            Arc::new(SystemClock),
            Arc::new(NoObserver),
        )
        .unwrap()
    }

    /// An authority client alone (requests that bypass the cache).
    pub fn authority(&self) -> tokenbroker::authority::AuthorityClient {
        let config = self.config();
        let options = self.options(&config, |_, _| {});
        tokenbroker::authority::AuthorityClient::new(
            options.authority,
            self.credentials(&config).remove(0),
            Arc::new(SystemClock),
        )
        .unwrap()
    }
}

/// A token from `broker` for the `tester` account.
pub async fn token(
    broker: &Broker,
    tenant: &str,
    resource: Option<&str>,
) -> Result<Issued, TokenError> {
    let caller = broker.authenticate(Some(TESTER_SECRET), None).unwrap();
    broker
        .token(&caller, Some(tenant), resource, None, None)
        .await
}

/// The claims of a JWT, unverified (for checking what the simulator issued).
pub fn claims(jwt: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// SHA-256 hex of a secret, for `secret_sha256` lines.
pub fn sha256_hex(secret: &str) -> String {
    tokenbroker::access::secret::sha256_hex(secret)
}

/// A broker server running in this process, started as `tokenbroker serve`
/// starts one: on 127.0.0.1:0 and a Unix socket in the fixture's directory
/// (and a metrics listener if the configuration names one).
pub struct Server {
    pub addr: std::net::SocketAddr,
    pub socket: PathBuf,
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub app: Arc<tokenbroker::server::App>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Starts the server for `f`'s configuration; `adjust` tunes the broker.
    pub async fn start(
        f: &Fixture,
        adjust: impl FnOnce(&mut AuthoritySettings, &mut CacheSettings),
    ) -> Server {
        let config = f.config();
        let options = f.options(&config, adjust);
        let socket = f.dir.path().join("tokenbroker.sock");
        let mut server_config = config.server.clone();
        server_config.listen = "127.0.0.1:0".parse().unwrap();
        server_config.unix_socket = Some(socket.clone());
        let listeners = tokenbroker::server::Listeners::bind(&server_config)
            .await
            .unwrap();
        let addr = listeners.local_addr().unwrap();
        let metrics_addr = listeners.metrics.as_ref().map(|l| l.local_addr().unwrap());
        let (credentials, _) =
            tokenbroker::daemon::load_credentials(&config, &f.config_path).unwrap();
        let app = tokenbroker::daemon::start(config, Some(&f.config_path), credentials, options)
            .await
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(tokenbroker::server::run(
            Arc::clone(&app),
            listeners,
            async {
                let _ = stopped.await;
            },
        ));
        Server {
            addr,
            socket,
            metrics_addr,
            app,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    pub fn metrics(&self) -> &Arc<tokenbroker::metrics::Metrics> {
        self.app.metrics()
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.unwrap();
        }
    }

    /// GET `target` over TCP with `headers` (Host: localhost unless given).
    pub async fn get(&self, target: &str, headers: &[(&str, &str)]) -> HttpAnswer {
        let stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        request(stream, "GET", target, headers).await
    }

    /// `GET /v1/token?tenant=…` as the account with `secret`.
    pub async fn token(&self, tenant: &str, secret: &str) -> HttpAnswer {
        let auth = format!("Bearer {secret}");
        self.get(
            &format!("/v1/token?tenant={tenant}"),
            &[("Authorization", &auth)],
        )
        .await
    }

    /// GET `target` over the Unix socket.
    pub async fn get_unix(&self, target: &str, headers: &[(&str, &str)]) -> HttpAnswer {
        let stream = tokio::net::UnixStream::connect(&self.socket).await.unwrap();
        request(stream, "GET", target, headers).await
    }
}

/// A parsed HTTP/1.1 answer.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends one request with `Connection: close` and reads the whole answer.
pub async fn request<S>(
    mut stream: S,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> HttpAnswer
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut text = format!("{method} {target} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        text.push_str("Host: localhost\r\n");
    }
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    parse_answer(&raw)
}

pub fn parse_answer(raw: &[u8]) -> HttpAnswer {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    HttpAnswer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// A real `tokenbroker serve` process with JSON logs, killed if the test
/// ends early. Its stderr lines arrive on `lines` (and stay in `log`).
pub struct Daemon {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
    pub log: Vec<String>,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Daemon {
    /// Starts `tokenbroker serve --config config` (which should listen on
    /// `127.0.0.1:0`) and waits for its `serving` line.
    pub async fn spawn(config: &Path) -> Daemon {
        Daemon::spawn_with_env(config, &[]).await
    }

    /// As [`spawn`](Self::spawn), with `env` added to the environment.
    pub async fn spawn_with_env(config: &Path, env: &[(&str, &str)]) -> Daemon {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tokenbroker"))
            .envs(env.iter().copied())
            .arg("serve")
            .arg("--config")
            .arg(config)
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start tokenbroker serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut daemon = Daemon {
            child,
            addr: "127.0.0.1:0".parse().unwrap(),
            log: Vec::new(),
            lines,
            reader: Some(reader),
        };
        let found = daemon
            .wait_for(Duration::from_secs(30), |line| {
                line["message"] == "listening" && line["listener"] == "tcp"
            })
            .await
            .unwrap_or_else(|| panic!("no tcp `listening` line:\n{}", daemon.log.join("\n")));
        daemon.addr = found["address"].as_str().unwrap().parse().unwrap();
        daemon
            .wait_for(Duration::from_secs(30), |line| line["message"] == "serving")
            .await
            .unwrap_or_else(|| panic!("no `serving` line:\n{}", daemon.log.join("\n")));
        daemon
    }

    /// The first log line (JSON) that `matches`, among those read already
    /// (start-up lines come before `serving`) or arriving within `limit`.
    pub async fn logged(
        &mut self,
        limit: Duration,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let seen = self
            .log
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| matches(l));
        match seen {
            Some(line) => Some(line),
            None => self.wait_for(limit, matches).await,
        }
    }

    /// The first log line (JSON) within `limit` that `matches`.
    pub async fn wait_for(
        &mut self,
        limit: Duration,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .ok()??;
            self.log.push(line.clone());
            let parsed: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
            if matches(&parsed) {
                return Some(parsed);
            }
        }
    }

    /// Sends `signal` (`-TERM`, `-HUP`) with `kill`.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal}: {status}");
    }

    /// Every log line until the process ends (after it was told to stop).
    pub async fn drain(&mut self) -> Vec<serde_json::Value> {
        while let Some(line) = self.lines.recv().await {
            self.log.push(line);
        }
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        self.log
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// GET `target` with `headers`.
    pub async fn get(&self, target: &str, headers: &[(&str, &str)]) -> HttpAnswer {
        let stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        request(stream, "GET", target, headers).await
    }
}

/// One request to an admin socket.
pub async fn admin(socket: &Path, method: &str, target: &str) -> HttpAnswer {
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    request(stream, method, target, &[]).await
}

/// A certificate and key valid from `days_ago` days ago, written to
/// `dir/{name}.crt|.key`; returns the certificate DER. (Newer `notBefore`
/// wins the signing order.)
pub fn write_credential_from(dir: &Path, name: &str, days_ago: i64) -> Vec<u8> {
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    let mut params = rcgen::CertificateParams::new(vec![format!("{name}.test")]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(days_ago);
    params.not_after = now + time::Duration::days(365);
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    cert.der().to_vec()
}

/// The thumbprint the portal shows for a DER certificate.
pub fn thumbprint(der: &[u8]) -> String {
    tokenbroker::credentials::CertificateInfo::from_der(der)
        .unwrap()
        .thumbprint_sha1
}

/// Polls `condition` every 50 ms for at most `limit`.
pub async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    condition()
}

/// Starts the file watch of `tokenbroker serve` for an in-process server.
pub fn daemon_watch(server: &Server) -> tokio::task::JoinHandle<()> {
    tokenbroker::daemon::spawn_watch(Arc::clone(&server.app))
}

/// This process's uid.
pub fn own_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}

/// Sends `request_line` (`GET /path`) over the Unix socket at `socket` as
/// `uid` (a python3 child dropped to that uid; needs root), and parses the
/// answer.
pub async fn request_as_uid(socket: &Path, uid: u32, request_line: &str) -> HttpAnswer {
    use std::os::unix::process::CommandExt;
    let socket = socket.to_owned();
    let request =
        format!("{request_line} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg("-c")
            .arg(
                "import socket,sys\n\
                 s=socket.socket(socket.AF_UNIX)\n\
                 s.connect(sys.argv[1])\n\
                 s.sendall(sys.argv[2].encode())\n\
                 d=b''\n\
                 while True:\n\
                 \x20   c=s.recv(65536)\n\
                 \x20   if not c: break\n\
                 \x20   d+=c\n\
                 sys.stdout.write(d.decode())\n",
            )
            .arg(socket)
            .arg(request)
            .uid(uid)
            .gid(uid)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse_answer(&output.stdout)
}

/// The repository's root.
pub fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a set-up step (an install, a build), returning its stdout trimmed,
/// or an error with its output.
pub fn run(command: &mut std::process::Command) -> Result<String, String> {
    let out = command
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "{command:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
