//! The HTTP API end to end: the real server on 127.0.0.1:0 and a Unix
//! socket, the simulated authority behind it, every status code of the contract
//! through its real cause.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{claims, sha256_hex, Fixture, Server, GRAPH};
use entra_sim::Fault;
use std::time::Duration;

const MAIL_SECRET: &str = "tb_mail-sync-secret";
const OPS_SECRET: &str = "tb_ops-secret";

fn extra() -> String {
    format!(
        "[[tenants]]\nname = \"contoso\"\nid = \"contoso.onmicrosoft.com\"\n\
         [[tenants]]\nname = \"fabrikam\"\nid = \"fabrikam.com\"\n\
         [[accounts]]\nname = \"mail-sync\"\nsecret_sha256 = \"{}\"\ntenants = [\"contoso\"]\ndefault_tenant = \"contoso\"\nunix_uids = [{}]\n\
         [[accounts]]\nname = \"ops\"\nsecret_sha256 = \"{}\"\ntenants = [\"*\"]\nresources = [\"https://graph.microsoft.com\", \"https://outlook.office365.com\"]\n",
        sha256_hex(MAIL_SECRET),
        own_uid(),
        sha256_hex(OPS_SECRET),
    )
}

fn own_uid() -> u32 {
    // The uid of files this process creates is its own uid.
    use std::os::unix::fs::MetadataExt;
    let probe = tempfile::NamedTempFile::new().unwrap();
    probe.as_file().metadata().unwrap().uid()
}

fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

async fn setup() -> (Fixture, Server) {
    let f = Fixture::new(&extra()).await;
    f.sim.consent("contoso.onmicrosoft.com");
    f.sim.consent("fabrikam.com");
    let server = Server::start(&f, |_, _| {}).await;
    (f, server)
}

#[tokio::test]
async fn v1_token_by_name_and_id() {
    let (f, server) = setup().await;
    let auth = bearer(MAIL_SECRET);
    let answer = server
        .get("/v1/token?tenant=contoso", &[("Authorization", &auth)])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let body = answer.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["tenant_id"], "contoso.onmicrosoft.com");
    assert_eq!(body["resource"], GRAPH);
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!((3500..=3600).contains(&expires_in), "{expires_in}");
    let now = tokenbroker::clock::unix_seconds(std::time::SystemTime::now());
    assert!(
        body["expires_on"]
            .as_u64()
            .unwrap()
            .abs_diff(now + expires_in)
            <= 2
    );
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(claims(token)["aud"], GRAPH);

    // By domain and by the account with "*".
    let ops = bearer(OPS_SECRET);
    let answer = server
        .get(
            "/v1/token?tenant=fabrikam.com&resource=https%3A%2F%2Foutlook.office365.com",
            &[("Authorization", &ops)],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        claims(answer.json()["access_token"].as_str().unwrap())["aud"],
        "https://outlook.office365.com"
    );
    assert!(f.sim.refusals().is_empty());
    server.stop().await;
}

/// Request target, headers, expected status and error code.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, &'a str);

#[tokio::test]
async fn every_client_error_status_through_its_real_cause() {
    let (f, server) = setup().await;
    let mail = bearer(MAIL_SECRET);
    let cases: Vec<Case<'_>> = vec![
        // 400: tenant syntax, missing tenant, bad resource, duplicated parameter, over-long query.
        (
            "/v1/token?tenant=..%2F..%2Fetc",
            vec![("Authorization", &mail)],
            400,
            "invalid_request",
        ),
        (
            "/v1/token?tenant=a%20b.com",
            vec![("Authorization", &mail)],
            400,
            "invalid_request",
        ),
        (
            "/v1/token",
            vec![("Authorization", &mail)],
            400,
            "invalid_request",
        ),
        (
            "/v1/token?tenant=contoso&resource=graph",
            vec![("Authorization", &mail)],
            400,
            "invalid_request",
        ),
        (
            "/v1/token?tenant=contoso&tenant=fabrikam",
            vec![("Authorization", &mail)],
            400,
            "invalid_request",
        ),
        // 401: no secret, wrong secret.
        ("/v1/token?tenant=contoso", vec![], 401, "unauthorized"),
        (
            "/v1/token?tenant=contoso",
            vec![("Authorization", "Bearer wrong")],
            401,
            "unauthorized",
        ),
        (
            "/v1/token?tenant=contoso",
            vec![("Authorization", "Basic bWFpbA==")],
            401,
            "unauthorized",
        ),
        // 403: tenant or resource not allowed for the account.
        (
            "/v1/token?tenant=fabrikam",
            vec![("Authorization", &mail)],
            403,
            "forbidden",
        ),
        (
            "/v1/token?tenant=contoso&resource=https%3A%2F%2Foutlook.office365.com",
            vec![("Authorization", &mail)],
            403,
            "forbidden",
        ),
        // 421: Host not in the allow-list (DNS rebinding).
        (
            "/v1/token?tenant=contoso",
            vec![("Authorization", &mail), ("Host", "evil.example.com:8765")],
            421,
            "host_not_allowed",
        ),
        // 404: no such route.
        ("/v2/token", vec![], 404, "not_found"),
        ("/v1/token/../../etc/passwd", vec![], 404, "not_found"),
    ];
    for (target, headers, status, code) in cases {
        let answer = server.get(target, &headers).await;
        assert_eq!(answer.status, status, "{target}: {}", answer.body);
        let body = answer.json();
        assert_eq!(body["error"], code, "{target}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{target}"
        );
        assert_eq!(answer.header("cache-control"), Some("no-store"), "{target}");
        if status == 401 {
            assert_eq!(
                answer.header("www-authenticate"),
                Some("Bearer realm=\"tokenbroker\"")
            );
        }
        assert!(
            !answer.body.contains(MAIL_SECRET),
            "{target}: the secret is never echoed"
        );
    }
    let long = format!("/v1/token?tenant=contoso&pad={}", "x".repeat(3000));
    let answer = server.get(&long, &[("Authorization", &mail)]).await;
    assert_eq!(answer.status, 400);
    assert!(answer.json()["message"]
        .as_str()
        .unwrap()
        .contains("longer than 2048"));
    // 405: other methods.
    let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let answer = common::request(
        stream,
        "POST",
        "/v1/token?tenant=contoso",
        &[("Authorization", &mail), ("Content-Length", "0")],
    )
    .await;
    assert_eq!(answer.status, 405);
    assert_eq!(answer.header("allow"), Some("GET, HEAD"));
    assert_eq!(answer.json()["error"], "method_not_allowed");
    assert_eq!(
        f.sim.total_requests(),
        2,
        "only the prefetch of the two configured tenants went upstream"
    );
    server.stop().await;
}

#[tokio::test]
async fn upstream_failures_become_502_503_504() {
    let f = Fixture::new(&extra()).await;
    f.sim.consent("contoso.onmicrosoft.com");
    f.sim.add_unconsented_tenant("unconsented.example.com");
    f.sim.consent("throttled.example.com");
    f.sim.consent("slow.example.com");
    let server = Server::start(&f, |authority, _| {
        authority.request_timeout = Duration::from_millis(300);
        authority.retry.max_attempts = 1;
    })
    .await;
    let ops = bearer(OPS_SECRET);

    // 502: the tenant has not consented; Entra's code and ids come through.
    let answer = server
        .get(
            "/v1/token?tenant=unconsented.example.com",
            &[("Authorization", &ops)],
        )
        .await;
    assert_eq!(answer.status, 502, "{}", answer.body);
    let body = answer.json();
    assert_eq!(body["error"], "entra_refused");
    assert_eq!(body["aadsts"], "AADSTS700016");
    assert!(body["correlation_id"]
        .as_str()
        .is_some_and(|c| uuid::Uuid::parse_str(c).is_ok()));
    assert!(body["trace_id"].as_str().is_some());
    assert!(body["message"].as_str().unwrap().contains("consent-url"));

    // 503 with Retry-After: Entra throttles.
    f.sim.push_fault(Fault::Throttle(30), 1);
    let answer = server
        .get(
            "/v1/token?tenant=throttled.example.com",
            &[("Authorization", &ops)],
        )
        .await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.json()["error"], "throttled");
    assert_eq!(answer.header("retry-after"), Some("30"));
    let again = server
        .get(
            "/v1/token?tenant=throttled.example.com",
            &[("Authorization", &ops)],
        )
        .await;
    assert_eq!(again.status, 503);
    let left: u64 = again.header("retry-after").unwrap().parse().unwrap();
    assert!((28..=30).contains(&left), "{left}");

    // 504: Entra does not answer in time.
    f.sim.push_fault(Fault::Slow(Duration::from_secs(3)), 1);
    let answer = server
        .get(
            "/v1/token?tenant=slow.example.com",
            &[("Authorization", &ops)],
        )
        .await;
    assert_eq!(answer.status, 504, "{}", answer.body);
    assert_eq!(answer.json()["error"], "entra_timeout");

    // 503: Entra unreachable or failing.
    f.sim.set_persistent_fault(Some(Fault::Status(500)));
    let answer = server
        .get(
            "/v1/token?tenant=other.example.com",
            &[("Authorization", &ops)],
        )
        .await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.json()["error"], "entra_unavailable");
    assert_eq!(answer.header("retry-after"), Some("5"));
    server.stop().await;
}

#[tokio::test]
async fn app_service_managed_identity_protocol() {
    let (f, server) = setup().await;
    let fabrikam_tid = f.sim.consent("fabrikam.com");
    let msi = |query: &str| {
        format!(
            "/msi/token?api-version=2019-08-01&resource=https%3A%2F%2Fgraph.microsoft.com{query}"
        )
    };

    // The account's default tenant.
    let answer = server
        .get(
            &msi(""),
            &[("X-IDENTITY-HEADER", MAIL_SECRET), ("Metadata", "true")],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer.header("retry-after").is_none(),
        "no Retry-After on a 200"
    );
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    let body = answer.json();
    for key in [
        "access_token",
        "expires_on",
        "expires_in",
        "not_before",
        "resource",
        "token_type",
        "client_id",
    ] {
        assert!(body[key].is_string(), "{key} must be a string: {body}");
    }
    assert!(body["expires_on"].as_str().unwrap().parse::<u64>().is_ok());
    assert!(body["expires_in"].as_str().unwrap().parse::<u64>().is_ok());
    assert!(body["not_before"].as_str().unwrap().parse::<u64>().is_ok());
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["resource"], GRAPH);
    assert_eq!(body["client_id"], common::CLIENT_ID);

    // A selector names the tenant: client_id, mi_res_id, principal_id, object_id.
    for selector in ["client_id", "mi_res_id", "principal_id", "object_id"] {
        let answer = server
            .get(
                &msi(&format!("&{selector}=fabrikam.com")),
                &[("X-IDENTITY-HEADER", OPS_SECRET)],
            )
            .await;
        assert_eq!(answer.status, 200, "{selector}: {}", answer.body);
        assert_eq!(
            claims(answer.json()["access_token"].as_str().unwrap())["tid"],
            fabrikam_tid.as_str()
        );
    }
    // The scope form is accepted too.
    let answer = server.get("/msi/token?api-version=2019-08-01&resource=https%3A%2F%2Fgraph.microsoft.com%2F.default", &[("X-IDENTITY-HEADER", MAIL_SECRET)]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    // Errors: SDK format, 400 rather than 404 or 403.
    let cases: Vec<(String, &str, u16)> = vec![
        (msi("&client_id=fabrikam"), MAIL_SECRET, 400),
        (
            "/msi/token?resource=https%3A%2F%2Fgraph.microsoft.com".to_owned(),
            MAIL_SECRET,
            400,
        ),
        (
            "/msi/token?api-version=2019-08-01".to_owned(),
            MAIL_SECRET,
            400,
        ),
        (msi(""), OPS_SECRET, 400), // no default tenant for this account
        (msi(""), "wrong", 401),
        ("/msi/nope".to_owned(), MAIL_SECRET, 404),
    ];
    for (target, secret, status) in cases {
        let answer = server.get(&target, &[("X-IDENTITY-HEADER", secret)]).await;
        let body = answer.json();
        if target == "/msi/nope" {
            assert_eq!(answer.status, 404);
            continue;
        }
        assert_eq!(answer.status, status, "{target}: {}", answer.body);
        assert_eq!(body["statusCode"], status, "{target}");
        for key in ["message", "error", "error_description"] {
            assert!(
                body[key].as_str().is_some_and(|m| !m.is_empty()),
                "{target}: {key}"
            );
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn unix_socket_callers_are_known_by_their_uid() {
    let (f, server) = setup().await;
    // This process's uid is mapped to account "mail-sync": no secret needed.
    let answer = server.get_unix("/v1/token?tenant=contoso", &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // ...and it is that account: fabrikam is not allowed for it.
    let answer = server.get_unix("/v1/token?tenant=fabrikam", &[]).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    // A secret still works on the socket for accounts without uids.
    let answer = server
        .get_unix(
            "/v1/token?tenant=fabrikam",
            &[("Authorization", &bearer(OPS_SECRET))],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    // The socket is 0660.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&server.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660);

    // Another uid (nobody, 65534) is refused. Open the socket to it for the
    // test, so the refusal is the broker's and not the file system's.
    if common::available(
        "root (to connect as uid 65534) and python3",
        own_uid() == 0 && common::has_program("python3"),
    ) {
        std::fs::set_permissions(&server.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        std::fs::set_permissions(f.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let answer =
            common::request_as_uid(&server.socket, 65534, "GET /v1/token?tenant=contoso").await;
        assert_eq!(answer.status, 401, "{}", answer.body);
        assert!(answer.body.contains("peer uid"), "{}", answer.body);
    }
    server.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let (f, server) = setup().await;
    assert_eq!(server.get("/healthz", &[]).await.status, 200);
    let ready = server.get("/readyz", &[]).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["status"], "ready");

    let mail = bearer(MAIL_SECRET);
    // Let the prefetch land so the next lookups are hits.
    for _ in 0..50 {
        if server.app.broker().cached_token_count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = parse_metrics(&server.get("/metrics", &[]).await.body);
    // Which build runs, and the process as any exporter shows one.
    let build = format!(
        "tokenbroker_build_info{{commit=\"{}\",version=\"{}\"}}",
        tokenbroker::COMMIT,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(before.get(&build), Some(&1.0), "{build}");
    assert_ne!(tokenbroker::COMMIT, "", "build.rs records the commit");
    for series in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(before.get(series).is_some_and(|v| *v > 0.0), "{series}");
    }
    // Whole seconds: a young process may show 0.
    assert!(before.contains_key("process_cpu_seconds_total"));
    for _ in 0..3 {
        assert_eq!(
            server
                .get("/v1/token?tenant=contoso", &[("Authorization", &mail)])
                .await
                .status,
            200
        );
    }
    assert_eq!(
        server
            .get(
                "/v1/token?tenant=contoso",
                &[("Authorization", "Bearer nope")]
            )
            .await
            .status,
        401
    );
    assert_eq!(
        server.get("/v1/token?tenant=contoso", &[]).await.status,
        401
    );
    f.sim.add_unconsented_tenant("unconsented.example.com");
    let ops = bearer(OPS_SECRET);
    assert_eq!(
        server
            .get(
                "/v1/token?tenant=unconsented.example.com",
                &[("Authorization", &ops)]
            )
            .await
            .status,
        502
    );
    assert_eq!(
        server
            .get(
                "/v1/token?tenant=new.example.com",
                &[("Authorization", &ops)]
            )
            .await
            .status,
        502
    );
    f.sim.consent("new2.example.com");
    assert_eq!(
        server
            .get(
                "/v1/token?tenant=new2.example.com",
                &[("Authorization", &ops)]
            )
            .await
            .status,
        200
    );

    let answer = server.get("/metrics", &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("content-type").unwrap(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let after = parse_metrics(&answer.body);
    let delta = |name: &str| {
        after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
    };
    assert_eq!(
        delta("tokenbroker_cache_lookups_total{result=\"hit\"}"),
        3.0
    );
    assert_eq!(
        delta("tokenbroker_cache_lookups_total{result=\"miss\"}"),
        3.0
    );
    assert_eq!(
        delta("tokenbroker_auth_failures_total{reason=\"unknown_secret\"}"),
        1.0
    );
    assert_eq!(
        delta("tokenbroker_auth_failures_total{reason=\"missing\"}"),
        1.0
    );
    assert_eq!(
        delta("tokenbroker_upstream_requests_total{outcome=\"permanent\"}"),
        2.0
    );
    assert_eq!(
        delta("tokenbroker_upstream_requests_total{outcome=\"success\"}"),
        1.0
    );
    assert_eq!(
        delta("tokenbroker_token_refreshes_total{trigger=\"demand\"}"),
        3.0
    );
    assert_eq!(
        delta("tokenbroker_http_requests_total{route=\"/v1/token\",status=\"200\"}"),
        4.0
    );
    assert_eq!(
        delta("tokenbroker_http_requests_total{route=\"/v1/token\",status=\"401\"}"),
        2.0
    );
    assert_eq!(
        delta("tokenbroker_http_requests_total{route=\"/v1/token\",status=\"502\"}"),
        2.0
    );
    assert_eq!(after["tokenbroker_cached_tokens"], 3.0);
    let info = tokenbroker::credentials::CertificateInfo::from_der(&f.cert_der).unwrap();
    // One series per loaded certificate, named by thumbprint, the signing one in use.
    let series: Vec<(&String, &f64)> = after
        .iter()
        .filter(|(k, _)| k.starts_with("tokenbroker_certificate_expiry_timestamp_seconds{"))
        .collect();
    assert_eq!(series.len(), 1, "{series:?}");
    assert_eq!(
        series[0].0,
        &format!(
            "tokenbroker_certificate_expiry_timestamp_seconds{{in_use=\"true\",thumbprint=\"{}\"}}",
            info.thumbprint_sha1
        )
    );
    assert_eq!(
        *series[0].1,
        tokenbroker::clock::unix_seconds(info.not_after) as f64
    );
    assert!(after["tokenbroker_upstream_request_duration_seconds_count"] >= 3.0);
    assert!(
        after.contains_key("tokenbroker_http_request_duration_seconds_count{route=\"/v1/token\"}")
    );
    // Per-tenant series only for configured tenants, labelled by name.
    assert!(after["tokenbroker_tenant_token_expiry_timestamp_seconds{app=\"default\",tenant=\"contoso\"}"] > 1.7e9);
    assert!(after.contains_key(
        "tokenbroker_tenant_token_expiry_timestamp_seconds{app=\"default\",tenant=\"fabrikam\"}"
    ));
    assert!(
        !answer.body.contains("new2.example.com"),
        "unconfigured tenants never become labels"
    );
    assert!(!answer.body.contains("eyJ") && !answer.body.contains(MAIL_SECRET));
    server.stop().await;
}

/// Parses the Prometheus text format 0.0.4: every sample line must be
/// `name{labels} value`, every `# TYPE` must name a known type, and every
/// metric has its `# HELP`.
fn parse_metrics(text: &str) -> std::collections::HashMap<String, f64> {
    let mut samples = std::collections::HashMap::new();
    let mut helped = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.insert(rest.split(' ').next().unwrap().to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let kind = rest.split(' ').nth(1).unwrap();
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            let metric = rest.split(' ').next().unwrap();
            assert!(helped.contains(metric), "no HELP before: {line}");
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment: {line}");
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample: {line}"));
        let metric = name.split('{').next().unwrap();
        // The broker's own series, and the standard process ones.
        assert!(
            metric.starts_with("tokenbroker_") || metric.starts_with("process_"),
            "{line}"
        );
        assert!(
            metric
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "{line}"
        );
        if name.contains('{') {
            assert!(name.ends_with('}'), "{line}");
        }
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        samples.insert(name.to_owned(), value);
    }
    samples
}

#[tokio::test]
async fn slow_and_oversized_clients_are_cut_off_while_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = Fixture::new(&format!(
        "[server]\nheader_read_timeout = \"1s\"\nmax_header_bytes = 4096\n{}",
        extra()
    ))
    .await;
    f.sim.consent("contoso.onmicrosoft.com");
    let server = Server::start(&f, |_, _| {}).await;
    let mail = bearer(MAIL_SECRET);

    // A slowloris: half a request head, then nothing.
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /v1/token?tenant=contoso HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    // Meanwhile a well-behaved client keeps getting tokens.
    let mut served = 0;
    while started.elapsed() < Duration::from_millis(800) {
        assert_eq!(
            server
                .get("/v1/token?tenant=contoso", &[("Authorization", &mail)])
                .await
                .status,
            200
        );
        served += 1;
    }
    assert!(served > 10, "{served}");
    // The slow client is cut off after header_read_timeout.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the slow connection was closed");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );

    // An oversized head: refused with 431, others unaffected.
    let big = "x".repeat(8000);
    let answer = server
        .get(
            "/v1/token?tenant=contoso",
            &[("Authorization", &mail), ("X-Padding", &big)],
        )
        .await;
    assert_eq!(answer.status, 431);
    assert_eq!(
        server
            .get("/v1/token?tenant=contoso", &[("Authorization", &mail)])
            .await
            .status,
        200
    );
    server.stop().await;
}

/// Sends one keep-alive request on `stream` and reads its whole answer.
async fn keep_alive_request(stream: &mut tokio::net::TcpStream, target: &str, secret: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let head = format!(
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {secret}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before an answer");
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= length {
                return common::parse_answer(&raw).status;
            }
        }
    }
}

/// Whether the broker closes `stream` (within 2 s) without answering.
async fn closed(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn at_the_cap_unauthenticated_connections_give_way_and_callers_do_not() {
    let f = Fixture::new(&format!("[server]\nmax_connections = 2\n{}", extra())).await;
    f.sim.consent("contoso.onmicrosoft.com");
    let server = Server::start(&f, |_, _| {}).await;
    let token = "/v1/token?tenant=contoso";
    // Two connections that never present a secret fill the cap…
    let mut idle_a = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let _idle_b = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // …and a caller still gets in: the oldest of them gives way.
    let mut caller = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(
        keep_alive_request(&mut caller, token, MAIL_SECRET).await,
        200
    );
    assert!(
        closed(&mut idle_a).await,
        "the oldest unauthenticated connection was displaced"
    );
    // Two accounts' authenticated keep-alive callers hold the cap: a new
    // connection still gets in (no account can lock another out), in place
    // of the busiest account's oldest idle connection (here they tie).
    let mut other = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(keep_alive_request(&mut other, token, OPS_SECRET).await, 200);
    let mut newcomer = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(
        keep_alive_request(&mut newcomer, token, MAIL_SECRET).await,
        200
    );
    assert!(
        closed(&mut caller).await || closed(&mut other).await,
        "an idle keep-alive connection gave way"
    );
    let metrics = server.metrics().encode();
    assert!(
        metrics.contains(
            "tokenbroker_connections_rejected_total{listener=\"tcp\",reason=\"displaced\"} 3"
        ),
        "{metrics}"
    );
    // A caller leaving frees its place.
    drop(newcomer);
    drop(other);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answer = server
        .get(token, &[("Authorization", &bearer(MAIL_SECRET))])
        .await;
    assert_eq!(answer.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn a_stale_socket_is_replaced_and_a_live_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tb.sock");
    // Stale: a socket file whose listener is gone (as after a crash).
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let live = tokenbroker::server::bind_unix_socket(&path)
        .await
        .expect("stale socket replaced");
    // Live: refused.
    let error = tokenbroker::server::bind_unix_socket(&path)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
    assert!(error.to_string().contains("in use"), "{error}");
    drop(live);
    // Not a socket: never deleted.
    let file = dir.path().join("file");
    std::fs::write(&file, "keep me").unwrap();
    assert!(tokenbroker::server::bind_unix_socket(&file).await.is_err());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[tokio::test]
async fn a_separate_metrics_listener_takes_metrics_off_the_api() {
    let f = Fixture::new(&format!(
        "[server]\nmetrics_listen = \"127.0.0.1:0\"\n{}",
        extra()
    ))
    .await;
    let server = Server::start(&f, |_, _| {}).await;
    let (api, scrape) = (server.addr, server.metrics_addr.unwrap());
    let get = |addr, target: &'static str| async move {
        common::request(
            tokio::net::TcpStream::connect(addr).await.unwrap(),
            "GET",
            target,
            &[],
        )
        .await
    };
    assert_eq!(get(scrape, "/metrics").await.status, 200);
    assert_eq!(get(api, "/metrics").await.status, 404);
    assert_eq!(get(scrape, "/v1/token?tenant=contoso").await.status, 404);
    assert_eq!(get(api, "/healthz").await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn a_slow_load_answers_504_at_the_load_timeout_and_serves_the_next_caller() {
    let f = Fixture::new(&format!("{}\n[cache]\nload_timeout = \"1s\"\n", extra())).await;
    f.sim.consent("contoso.onmicrosoft.com");
    // Slower than the deadline, within the upstream request timeout (2 s).
    f.sim.set_latency(Duration::from_millis(1600));
    let server = Server::start(&f, |_, _| {}).await;
    // Prefetch started a load at start-up; the first caller joins it.
    let started = std::time::Instant::now();
    let auth = bearer(OPS_SECRET);
    let answer = server
        .get("/v1/token?tenant=contoso", &[("Authorization", &auth)])
        .await;
    let waited = started.elapsed();
    assert_eq!(answer.status, 504, "{}", answer.body);
    assert_eq!(answer.json()["error"], "entra_timeout");
    let message = answer.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("cache.load_timeout"), "{message}");
    assert!(
        waited >= Duration::from_millis(950) && waited < Duration::from_millis(1500),
        "answered after {waited:?}, not at the 1 s deadline"
    );
    // The load went on: the next caller gets its token, and Entra was asked once.
    let answer = server
        .get("/v1/token?tenant=contoso", &[("Authorization", &auth)])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(f.sim.requests("contoso.onmicrosoft.com"), 1);
    server.stop().await;
}

#[tokio::test]
async fn host_headers_are_parsed_and_absolute_targets_checked() {
    let (_f, server) = setup().await;
    let auth = bearer(OPS_SECRET);
    for host in [
        "[::1]evil.com",
        "[::1].evil.com",
        "localhost:80:80",
        "localhost@evil.com",
    ] {
        let answer = server
            .get(
                "/v1/token?tenant=contoso",
                &[("Host", host), ("Authorization", &auth)],
            )
            .await;
        assert_eq!(answer.status, 421, "{host}: {}", answer.body);
    }
    // Two Host headers: 400 (RFC 9112), whatever they say.
    let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let answer = common::request(
        stream,
        "GET",
        "/healthz",
        &[("Host", "localhost"), ("Host", "localhost")],
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    // An absolute-form target names its host: it must be allowed too.
    let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let answer = common::request(
        stream,
        "GET",
        "http://evil.example/v1/token?tenant=contoso",
        &[("Host", "127.0.0.1"), ("Authorization", &auth)],
    )
    .await;
    assert_eq!(answer.status, 421, "{}", answer.body);
    let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let answer = common::request(
        stream,
        "GET",
        "http://localhost:8765/v1/token?tenant=contoso",
        &[("Host", "localhost"), ("Authorization", &auth)],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    server.stop().await;
}
