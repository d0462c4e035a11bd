//! The metrics as Prometheus sees them: `promtool check metrics` on a live
//! `/metrics`, the alerting rules through `promtool check rules` and
//! `promtool test rules`, and a real `prometheus` server scraping a broker
//! and evaluating every rule's expression.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Fixture, Server, TESTER_SECRET};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn rules_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus"))
}

fn promtool() -> bool {
    common::available(
        "promtool (Debian package prometheus)",
        common::has_program("promtool"),
    )
}

/// A broker that has served a token and refused a caller, so most series exist.
async fn busy_broker() -> (Fixture, Server) {
    let f = Fixture::new(
        "[[tenants]]\nname = \"contoso\"\nid = \"contoso.onmicrosoft.com\"\n\
         [[tenants]]\nname = \"fabrikam\"\nid = \"fabrikam.com\"\n",
    )
    .await;
    f.sim.consent("contoso.onmicrosoft.com");
    f.sim.add_unconsented_tenant("fabrikam.com");
    let server = Server::start(&f, |_, _| {}).await;
    assert_eq!(server.token("contoso", TESTER_SECRET).await.status, 200);
    assert_eq!(server.token("contoso", "wrong").await.status, 401);
    assert!(common::eventually(Duration::from_secs(5), || f.sim.total_requests() >= 2).await);
    (f, server)
}

#[tokio::test(flavor = "multi_thread")]
async fn promtool_accepts_the_metrics_without_a_word() {
    if !promtool() {
        return;
    }
    let (_f, server) = busy_broker().await;
    let body = server.get("/metrics", &[]).await.body;
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{said}");
    assert_eq!(said, "", "promtool check metrics has complaints");
    server.stop().await;
}

#[test]
fn the_alerting_rules_check_and_pass_their_tests() {
    if !promtool() {
        return;
    }
    for args in [
        ["check", "rules", "tokenbroker.rules.yml"],
        ["test", "rules", "tokenbroker.rules.test.yml"],
    ] {
        let output = Command::new("promtool")
            .args(args)
            .current_dir(rules_dir())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Every `expr:` of the rules file (block scalars joined into one line).
fn rule_expressions() -> Vec<String> {
    let text = std::fs::read_to_string(rules_dir().join("tokenbroker.rules.yml")).unwrap();
    let mut exprs = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if rest == "|" {
            let mut block = Vec::new();
            while let Some(next) = lines.peek() {
                if next.trim_start().starts_with("for:") || next.trim().is_empty() {
                    break;
                }
                block.push(next.trim().to_owned());
                lines.next();
            }
            exprs.push(block.join(" "));
        } else {
            exprs.push(rest.to_owned());
        }
    }
    exprs
}

/// A GET to Prometheus's HTTP API on `port`; the JSON answer.
async fn prometheus_api(port: u16, path_and_query: &str) -> serde_json::Value {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let answer = common::request(stream, "GET", path_and_query, &[]).await;
    // Prometheus may answer chunked; the JSON is the body's one object.
    let body = answer.body;
    let start = body.find('{').unwrap_or(0);
    let end = body.rfind('}').map_or(body.len(), |e| e + 1);
    serde_json::from_str(&body[start..end]).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_prometheus_scrapes_the_broker_and_evaluates_every_rule() {
    if !common::available(
        "the prometheus server (Debian package prometheus)",
        common::has_program("prometheus"),
    ) {
        return;
    }
    let (f, server) = busy_broker().await;
    let port = free_port();
    let config = f.dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: tokenbroker\n    static_configs:\n      - targets: ['{}']\n",
            rules_dir().join("tokenbroker.rules.yml").display(),
            server.addr
        ),
    )
    .unwrap();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            f.dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(&mut prometheus);

    // The target is up within 30 s.
    let mut up = None;
    for _ in 0..150 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            continue;
        }
        let answer =
            prometheus_api(port, "/api/v1/query?query=up%7Bjob%3D%22tokenbroker%22%7D").await;
        if let Some(value) = answer["data"]["result"][0]["value"][1].as_str() {
            up = Some(value.to_owned());
            if value == "1" {
                break;
            }
        }
    }
    assert_eq!(up.as_deref(), Some("1"), "the broker target is up");
    // The broker's own series arrived.
    let answer = prometheus_api(
        port,
        "/api/v1/query?query=tokenbroker_http_requests_total%7Broute%3D%22%2Fv1%2Ftoken%22%7D",
    )
    .await;
    assert!(
        !answer["data"]["result"].as_array().unwrap().is_empty(),
        "{answer}"
    );
    // Every rule expression evaluates without an error.
    for expr in rule_expressions() {
        let query: String = url::form_urlencoded::byte_serialize(expr.as_bytes()).collect();
        let answer = prometheus_api(port, &format!("/api/v1/query?query={query}")).await;
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
    }
    server.stop().await;
}
