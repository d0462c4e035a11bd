//! The Graph gateway's cost: a real `tokenbroker serve` process in front of
//! the Graph stand-in (`entra_sim::SimulatedGraph`), both against the
//! simulated Entra, all on this machine.
//!
//! 1. Added latency of a small GET (`/users/{upn}/messages?$top=1`, a JSON
//!    page whose `@odata.nextLink` the gateway rewrites): interleaved
//!    rounds of N sequential requests on one keep-alive connection, straight
//!    to the stand-in (with a token from `issue_token_for_tests`) and through
//!    the gateway, the order alternating between rounds. Reported: p50 and
//!    p99 of each (median over the rounds), the added latency (gateway −
//!    direct, per round, then the median), and the broker's own CPU time per
//!    gateway request (from `/proc/PID/stat`), steadier than wall time on a
//!    shared VM. Target: at most 150 µs added at p50.
//!
//!    The same for a streamed small GET, a message's 4 KiB `$value`, which
//!    the gateway passes on chunked as it arrives (`--streamed` requests a
//!    round, 1,000 by default; 0 skips it). A streamed answer ends with a
//!    small write (the chunked terminator) that Nagle's algorithm held for
//!    the caller's delayed ACK, 40 ms, until accepted connections set
//!    `TCP_NODELAY`. Target: 150 µs, as above.
//! 2. A 100 MiB `$value` download through the gateway, read and discarded as
//!    it arrives: the broker's peak RSS is reset (`/proc/PID/clear_refs`)
//!    before, and its growth is VmHWM after − VmRSS before. Target: at most
//!    16 MiB. Also timed (MiB/s), direct and through the gateway.
//!
//! 3. Throughput of the same small GET with many connections at once: wrk
//!    (one thread, `--connections` connections, `--seconds` each) straight to
//!    the stand-in, through the gateway and through nginx, interleaved over
//!    three rounds; reported as req/s and the ratio to the direct client.
//!    The gateway keeps a pool of connections to Graph (HTTP/2 where Graph
//!    offers it; the stand-in speaks HTTP/1.1, so here a pool of those).
//!
//! `cargo bench --bench gateway` (options: `-- --requests N --rounds R
//! --streamed N --downloads D --connections C --seconds S --no-access-log`,
//! `--seconds 0` skips the throughput; by default the broker logs as
//! shipped, `info` with an access line per request).
//! nginx (`nginx-light`) and wrk are used when installed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "process/mod.rs"]
mod process;
use entra_sim::{SimulatedAuthority, SimulatedGraph};
use process::{memory_kib, Broker};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
const SECRET: &str = "tb_gateway-bench-secret";
const MAILBOX: &str = "alice@contoso.com";
const GRAPH: &str = "https://graph.microsoft.com";
const ROLES: &[&str] = &["Mail.ReadWrite"];
const DOWNLOAD_BYTES: usize = 100 * 1024 * 1024;
/// The streamed small GET: a 4 KiB message as MIME.
const SMALL_VALUE_BYTES: usize = 4096;
const TARGET_ADDED_P50_US: f64 = 150.0;
const TARGET_RSS_GROWTH_MIB: f64 = 16.0;

struct Options {
    requests: usize,
    rounds: usize,
    downloads: usize,
    connections: usize,
    seconds: usize,
    /// Requests per round of the streamed GET (0: not measured).
    streamed: usize,
    access_log: bool,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str, default: usize| process::number_arg(&args, name, default);
    Options {
        requests: value("--requests", 2_000).max(1),
        rounds: value("--rounds", 7).max(1),
        downloads: value("--downloads", 3).max(1),
        connections: value("--connections", 16).max(1),
        seconds: value("--seconds", 3),
        streamed: value("--streamed", 1_000),
        access_log: !args.iter().any(|a| a == "--no-access-log"),
    }
}

/// Resets the peak RSS (VmHWM) of `pid` to its current RSS.
fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 if that fails).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User and system CPU time of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces: fields count from after its ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after ')'.
    let at = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (at(11), at(12))
}

/// nginx (one worker) as a plain reverse proxy to the stand-in: the cost
/// of one more hop through a lean proxy on this machine, the baseline the
/// gateway's added latency is read against. `None` without nginx.
struct Nginx {
    child: std::process::Child,
    base: String,
    worker: Option<u32>,
}

impl Nginx {
    fn start(dir: &std::path::Path, upstream: &str) -> Option<Nginx> {
        let binary = std::path::Path::new("/usr/sbin/nginx");
        if !binary.exists() {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .ok()?;
        let upstream = upstream.trim_start_matches("http://");
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "worker_processes 1;\ndaemon off;\npid {dir}/nginx.pid;\nerror_log {dir}/nginx.err;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{\n  access_log off;\n  upstream graph {{ server {upstream}; keepalive 8; }}\n\
                 \x20 server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://graph;\n\
                 \x20     proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_buffering off;\n    }}\n  }}\n}}\n",
                dir = dir.display(),
            ),
        )
        .ok()?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("nginx.err"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let master = child.id().to_string();
        let worker = Command::new("pgrep")
            .args(["-P", &master])
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()?
                    .trim()
                    .parse()
                    .ok()
            });
        Some(Nginx {
            child,
            base,
            worker,
        })
    }
}

impl Drop for Nginx {
    /// SIGTERM, so the master stops its worker too: a SIGKILLed master
    /// leaves the worker running, one more per bench run.
    fn drop(&mut self) {
        let stopped = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// One target of the latency rounds.
struct Target {
    name: &'static str,
    url: String,
    bearer: String,
    /// The body's length every answer must have, when known.
    length: Option<usize>,
}

/// `n` sequential GETs of `target`, each timed to its last body byte;
/// the latencies in µs, sorted.
async fn run(http: &reqwest::Client, target: &Target, n: usize) -> Vec<f64> {
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let response = http
            .get(&target.url)
            .bearer_auth(&target.bearer)
            .send()
            .await
            .expect("request");
        let status = response.status();
        let body = response.bytes().await.expect("body");
        latencies.push(started.elapsed().as_secs_f64() * 1e6);
        assert!(
            status.is_success(),
            "{}: {status} {}",
            target.name,
            String::from_utf8_lossy(&body)
        );
        // A streamed answer cut short would otherwise count as a fast one.
        if let Some(length) = target.length {
            assert_eq!(body.len(), length, "{}: the body's length", target.name);
        }
    }
    latencies.sort_by(f64::total_cmp);
    latencies
}

/// Requests per second of wrk against `target` (`None` without wrk).
fn throughput(target: &Target, connections: usize, seconds: usize) -> Option<f64> {
    let wrk = std::path::Path::new("/usr/bin/wrk");
    if !wrk.exists() {
        return None;
    }
    let out = Command::new(wrk)
        .args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s")])
        .arg("-H")
        .arg(format!("Authorization: Bearer {}", target.bearer))
        .arg(&target.url)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // Any failed answer or socket error makes the figure meaningless.
    assert!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "{}: wrk saw failed requests:\n{text}",
        target.name
    );
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The `q` quantile of sorted `values` (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Downloads `url`, reading and discarding each chunk as it comes; checks
/// every byte against `expected`. Returns (bytes, seconds).
async fn download(
    http: &reqwest::Client,
    url: &str,
    bearer: &str,
    expected: &[u8],
) -> (usize, f64) {
    let started = Instant::now();
    let mut response = http
        .get(url)
        .bearer_auth(bearer)
        .send()
        .await
        .expect("download");
    assert!(
        response.status().is_success(),
        "download: {}",
        response.status()
    );
    let mut received = 0usize;
    let mut same = true;
    while let Some(chunk) = response.chunk().await.expect("chunk") {
        let end = received + chunk.len();
        same &= expected.get(received..end) == Some(&chunk[..]);
        received = end;
    }
    let seconds = started.elapsed().as_secs_f64();
    assert!(same, "the download differs from the message's $value");
    (received, seconds)
}

fn main() {
    let opts = options();
    // The authority and the stand-in run on their own runtime; the client
    // on this thread's.
    let sims = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let dir = tempfile::tempdir().expect("tempdir");
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .expect("key");
    let cert = rcgen::CertificateParams::new(vec!["gateway".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    std::fs::write(dir.path().join("cert.pem"), cert.pem()).expect("write");
    std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).expect("write");

    let (sim, graph, tid) = sims.block_on(async {
        let sim = SimulatedAuthority::start(CLIENT_ID)
            .await
            .expect("authority");
        sim.register_certificate(cert.der()).expect("register");
        sim.set_roles(ROLES);
        let tid = sim.consent("contoso.onmicrosoft.com");
        let graph = SimulatedGraph::start(&sim).await.expect("graph");
        graph.add_user(&tid, MAILBOX);
        graph.add_messages(&tid, MAILBOX, 25);
        (sim, graph, tid)
    });

    let config = dir.path().join("tokenbroker.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
listen = "127.0.0.1:0"

[app]
client_id = "{CLIENT_ID}"
authority_host = "{authority}"
certificate = "cert.pem"
private_key = "key.pem"
graph_host = "{graph}"

[[tenants]]
name = "contoso"
id = "{tid}"

[[accounts]]
name = "bench"
secret_sha256 = "{secret}"
tenants = ["contoso"]
[[accounts.graph]]
methods = ["GET"]
paths = ["/users/{{mailbox}}/messages", "/users/{{mailbox}}/messages/**"]
mailboxes = ["{MAILBOX}"]
"#,
            authority = sim.url(),
            graph = graph.url(),
            secret = tokenbroker::access::secret::sha256_hex(SECRET),
        ),
    )
    .expect("config");

    let broker = Broker::start(
        &config,
        if opts.access_log {
            "info"
        } else {
            "info,tokenbroker::access=warn"
        },
    );
    let pid = broker.pid();
    let base = broker.base.clone();
    let direct = Target {
        name: "direct",
        url: format!("{}/v1.0/users/{MAILBOX}/messages?$top=1", graph.url()),
        bearer: sim.issue_token_for_tests(&tid, GRAPH, ROLES),
        length: None,
    };
    let gateway = Target {
        name: "gateway",
        url: format!("{base}/graph/contoso/v1.0/users/{MAILBOX}/messages?$top=1"),
        bearer: SECRET.to_owned(),
        length: None,
    };
    let nginx = Nginx::start(dir.path(), &graph.url());
    let proxied = nginx.as_ref().map(|n| Target {
        name: "nginx",
        url: format!("{}/v1.0/users/{MAILBOX}/messages?$top=1", n.base),
        bearer: direct.bearer.clone(),
        length: None,
    });
    let tick = 1.0 / clock_ticks();

    let all_met = client_rt.block_on(async {
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(1)
            .build()
            .expect("client");

        // Warm-up: the gateway's first request fetches the token.
        for target in [Some(&direct), Some(&gateway), proxied.as_ref()].into_iter().flatten() {
            run(&http, target, 200.min(opts.requests)).await;
        }
        let token_requests = sim.total_requests();
        let (idle_rss, _) = memory_kib(pid);

        // Latency rounds, the order alternating.
        println!(
            "gateway bench: {} rounds of {} sequential GETs per target ({} access log)",
            opts.rounds,
            opts.requests,
            if opts.access_log { "with" } else { "no" }
        );
        // Targets: 0 direct, 1 gateway, 2 nginx as a plain proxy (if any).
        let targets: Vec<&Target> = [Some(&direct), Some(&gateway), proxied.as_ref()]
            .into_iter()
            .flatten()
            .collect();
        let mut p50 = vec![Vec::new(); targets.len()];
        let mut p99 = vec![Vec::new(); targets.len()];
        let mut added50 = Vec::new();
        let mut added99 = Vec::new();
        let mut nginx_added50 = Vec::new();
        let mut cpu_per_request = Vec::new();
        let mut nginx_cpu = Vec::new();
        // The user-space part of each (the rest is the kernel's).
        let mut cpu_user = Vec::new();
        let mut nginx_user = Vec::new();
        for round in 0..opts.rounds {
            // Rotate the order, so no target always runs first.
            let mut order: Vec<usize> = (0..targets.len()).collect();
            order.rotate_left(round % targets.len());
            let mut round50 = vec![0.0; targets.len()];
            let mut round99 = vec![0.0; targets.len()];
            let mut cpu = 0.0;
            for i in order {
                let cpu_of = match i {
                    1 => Some(pid),
                    2 => nginx.as_ref().and_then(|n| n.worker),
                    _ => None,
                };
                let before = cpu_of.map(cpu_ticks);
                let latencies = run(&http, targets[i], opts.requests).await;
                if let (Some(of), Some(before)) = (cpu_of, before) {
                    let after = cpu_ticks(of);
                    let per_request = |ticks: u64| ticks as f64 * tick * 1e6 / opts.requests as f64;
                    let user = per_request(after.0.saturating_sub(before.0));
                    let used = user + per_request(after.1.saturating_sub(before.1));
                    if i == 1 {
                        cpu = used;
                        cpu_user.push(user);
                    } else {
                        nginx_cpu.push(used);
                        nginx_user.push(user);
                    }
                }
                round50[i] = quantile(&latencies, 0.50);
                round99[i] = quantile(&latencies, 0.99);
                p50[i].push(round50[i]);
                p99[i].push(round99[i]);
            }
            added50.push(round50[1] - round50[0]);
            added99.push(round99[1] - round99[0]);
            if targets.len() > 2 {
                nginx_added50.push(round50[2] - round50[0]);
            }
            cpu_per_request.push(cpu);
            println!(
                "  round {}: direct p50 {:6.1} µs p99 {:6.1} µs | gateway p50 {:6.1} µs p99 {:6.1} µs | added p50 {:6.1} µs p99 {:6.1} µs | broker CPU {:5.1} µs/req{}",
                round + 1,
                round50[0],
                round99[0],
                round50[1],
                round99[1],
                round50[1] - round50[0],
                round99[1] - round99[0],
                cpu,
                if targets.len() > 2 {
                    format!(" | nginx proxy p50 {:6.1} µs (added {:6.1} µs)", round50[2], round50[2] - round50[0])
                } else {
                    String::new()
                }
            );
        }

        // A streamed small GET: a message's `$value`, which the gateway passes
        // on as it comes (chunked), where the page above is held and rewritten.
        graph.set_value_size(SMALL_VALUE_BYTES);
        let id = graph.messages(&tid, MAILBOX)[0]["id"]
            .as_str()
            .expect("message id")
            .to_owned();
        let value = |base: &str| format!("{base}/users/{MAILBOX}/messages/{id}/$value");
        let streamed = [
            Target {
                name: "direct $value",
                url: value(&format!("{}/v1.0", graph.url())),
                bearer: direct.bearer.clone(),
                length: Some(SMALL_VALUE_BYTES),
            },
            Target {
                name: "gateway $value",
                url: value(&format!("{base}/graph/contoso/v1.0")),
                bearer: SECRET.to_owned(),
                length: Some(SMALL_VALUE_BYTES),
            },
        ];
        let mut streamed50 = [Vec::new(), Vec::new()];
        let mut streamed_added50 = Vec::new();
        let mut streamed_added99 = Vec::new();
        let streamed_rounds = if opts.streamed == 0 { 0 } else { opts.rounds };
        for round in 0..streamed_rounds {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            let mut round50 = [0.0; 2];
            let mut round99 = [0.0; 2];
            for i in order {
                let latencies = run(&http, &streamed[i], opts.streamed).await;
                round50[i] = quantile(&latencies, 0.50);
                round99[i] = quantile(&latencies, 0.99);
                streamed50[i].push(round50[i]);
            }
            streamed_added50.push(round50[1] - round50[0]);
            streamed_added99.push(round99[1] - round99[0]);
            println!(
                "  streamed round {}: direct $value p50 {:6.1} µs | gateway $value p50 {:6.1} µs p99 {:6.1} µs | added p50 {:6.1} µs p99 {:6.1} µs",
                round + 1,
                round50[0],
                round50[1],
                round99[1],
                round50[1] - round50[0],
                round99[1] - round99[0],
            );
        }
        let token_requests_after = sim.total_requests();

        // Throughput, many connections at once, three interleaved rounds.
        let mut rates = vec![Vec::new(); targets.len()];
        let throughput_rounds = if opts.seconds == 0 { 0 } else { 3 };
        for round in 0..throughput_rounds {
            let mut order: Vec<usize> = (0..targets.len()).collect();
            order.rotate_left(round % targets.len());
            for i in order {
                if let Some(rate) = throughput(targets[i], opts.connections, opts.seconds) {
                    rates[i].push(rate);
                }
            }
        }
        let rate = |i: usize| median(&rates[i]);
        if !rates[0].is_empty() {
            println!(
                "  throughput ({} connections, wrk -t1): direct {:.0} req/s, gateway {:.0} req/s{}",
                opts.connections,
                rate(0),
                rate(1),
                if targets.len() > 2 {
                    format!(", nginx {:.0} req/s", rate(2))
                } else {
                    String::new()
                }
            );
        }

        // The download.
        graph.set_value_size(DOWNLOAD_BYTES);
        let expected = entra_sim::value_bytes(&id, DOWNLOAD_BYTES);
        let direct_value = value(&format!("{}/v1.0", graph.url()));
        let gateway_value = value(&format!("{base}/graph/contoso/v1.0"));
        let mut growth_kib = Vec::new();
        let mut speed = [Vec::new(), Vec::new()];
        let mut all_bytes_ok = true;
        let mut peak_reset = true;
        for round in 0..opts.downloads {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                if i == 0 {
                    let (bytes, secs) =
                        download(&http, &direct_value, &direct.bearer, &expected).await;
                    all_bytes_ok &= bytes == DOWNLOAD_BYTES;
                    speed[0].push(bytes as f64 / 1048576.0 / secs);
                } else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    peak_reset &= reset_peak(pid);
                    let (rss_before, _) = memory_kib(pid);
                    let (bytes, secs) =
                        download(&http, &gateway_value, SECRET, &expected).await;
                    let (_, hwm_after) = memory_kib(pid);
                    all_bytes_ok &= bytes == DOWNLOAD_BYTES;
                    speed[1].push(bytes as f64 / 1048576.0 / secs);
                    growth_kib.push(hwm_after.saturating_sub(rss_before) as f64);
                    println!(
                        "  download {}: {bytes} B through the gateway, RSS before {:.1} MiB, peak after {:.1} MiB (+{:.2} MiB), {:.0} MiB/s",
                        round + 1,
                        rss_before as f64 / 1024.0,
                        hwm_after as f64 / 1024.0,
                        hwm_after.saturating_sub(rss_before) as f64 / 1024.0,
                        bytes as f64 / 1048576.0 / secs
                    );
                }
            }
        }
        let (rss_end, _) = memory_kib(pid);
        broker.stop();

        let added_p50 = median(&added50);
        let added_p99 = median(&added99);
        let streamed_added_p50 = median(&streamed_added50);
        let worst_growth = growth_kib.iter().copied().fold(0.0, f64::max) / 1024.0;
        println!();
        println!("summary (medians over {} rounds of {} requests)", opts.rounds, opts.requests);
        println!("  direct   p50 {:7.1} µs   p99 {:7.1} µs", median(&p50[0]), median(&p99[0]));
        println!("  gateway  p50 {:7.1} µs   p99 {:7.1} µs", median(&p50[1]), median(&p99[1]));
        println!("  added    p50 {added_p50:7.1} µs   p99 {added_p99:7.1} µs   (per-round gateway − direct)");
        if !streamed_added50.is_empty() {
            println!(
                "  a streamed small GET ({SMALL_VALUE_BYTES} B $value, chunked): direct p50 {:7.1} µs, gateway p50 {:7.1} µs, added p50 {streamed_added_p50:7.1} µs p99 {:7.1} µs",
                median(&streamed50[0]),
                median(&streamed50[1]),
                median(&streamed_added99)
            );
        }
        println!(
            "  broker CPU per gateway request {:6.1} µs ({:.1} µs in user space)",
            median(&cpu_per_request),
            median(&cpu_user)
        );
        if !nginx_added50.is_empty() {
            let nginx_added = median(&nginx_added50);
            println!(
                "  nginx as a plain proxy: p50 {:7.1} µs, added p50 {nginx_added:7.1} µs, worker CPU {:6.1} µs/req ({:.1} µs in user space); the gateway adds {:.2}x what one more hop through nginx adds",
                median(&p50[2]),
                median(&nginx_cpu),
                median(&nginx_user),
                added_p50 / nginx_added
            );
        } else {
            println!("  (no /usr/sbin/nginx: no plain-proxy baseline; apt-get install nginx-light)");
        }
        if rates[0].is_empty() {
            println!("  (no throughput figures: --seconds 0, or no /usr/bin/wrk: apt-get install wrk)");
        } else {
            println!(
                "  throughput, {} connections: gateway / direct {:.2}{} (medians of 3 rounds of {} s)",
                opts.connections,
                rate(1) / rate(0),
                if targets.len() > 2 {
                    format!(", nginx / direct {:.2}", rate(2) / rate(0))
                } else {
                    String::new()
                },
                opts.seconds
            );
        }
        println!("  token requests to the authority: {token_requests} after warm-up, {} after the rounds", token_requests_after);
        println!("  broker RSS idle {:.1} MiB, at the end {:.1} MiB", idle_rss as f64 / 1024.0, rss_end as f64 / 1024.0);
        println!(
            "  100 MiB download: direct {:.0} MiB/s, gateway {:.0} MiB/s (medians of {}); broker RSS growth, worst {:.2} MiB",
            median(&speed[0]),
            median(&speed[1]),
            opts.downloads,
            worst_growth
        );
        let mut checks = vec![(
            format!("added latency at p50 <= {TARGET_ADDED_P50_US} µs ({added_p50:.1} µs)"),
            added_p50 <= TARGET_ADDED_P50_US,
        )];
        // Not measured (`--streamed 0`): no line, rather than an "ok".
        if !streamed_added50.is_empty() {
            checks.push((
                format!("a streamed small GET adds at p50 <= {TARGET_ADDED_P50_US} µs ({streamed_added_p50:.1} µs)"),
                streamed_added_p50 <= TARGET_ADDED_P50_US,
            ));
        }
        checks.extend([
            (
                format!("100 MiB download grows the broker's RSS by <= {TARGET_RSS_GROWTH_MIB} MiB ({worst_growth:.2} MiB)"),
                worst_growth <= TARGET_RSS_GROWTH_MIB && peak_reset,
            ),
            ("every download exactly 100 MiB, byte for byte".to_owned(), all_bytes_ok),
            ("one token request for the whole run".to_owned(), token_requests_after == token_requests && token_requests == 1),
        ]);
        let mut all = true;
        for (what, ok) in checks {
            println!("  [{}] {what}", if ok { "ok" } else { "MISSED" });
            all &= ok;
        }
        if !peak_reset {
            println!("  (could not write /proc/{pid}/clear_refs: the peak is the process's lifetime peak)");
        }
        all
    });
    // Stopped before any exit: `process::exit` runs no destructor, and an
    // nginx left running skews every later run on this machine.
    drop(nginx);
    drop(graph);
    drop(sim);
    if !all_met {
        std::process::exit(1);
    }
}
