//! The metrics as Prometheus sees them: `promtool check metrics` on a live
//! `/metrics`, the alerting rules through `promtool check rules` and
//! `promtool test rules`, the Grafana dashboard's shape, and a real
//! `prometheus` server scraping a broker and evaluating every rule's and
//! every dashboard panel's expression.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{Fixture, Server, TESTER_SECRET};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn rules_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus"))
}

fn promtool() -> bool {
    common::available(
        "promtool (Debian package prometheus)",
        common::has_program("promtool"),
    )
}

/// A broker that has served a token, refused a caller, had Entra refuse a
/// newer certificate not uploaded yet (a rotation under way) and displaced
/// a Unix-socket connection, so every series exists.
async fn busy_broker() -> (Fixture, Server) {
    let credential = |name: &str| {
        format!("[[app.credentials]]\ncertificate = \"{name}.crt\"\nprivate_key = \"{name}.key\"\n")
    };
    let f = Fixture::with_credentials(
        &format!("{}{}", credential("standby"), credential("app")),
        "[server]\nmax_socket_connections = 1\n\
         [[tenants]]\nname = \"contoso\"\nid = \"contoso.onmicrosoft.com\"\n\
         [[tenants]]\nname = \"fabrikam\"\nid = \"fabrikam.com\"\n",
    )
    .await;
    // Newer than app.crt, so tried first, and unknown to Entra.
    common::write_credential_from(f.dir.path(), "standby", 0);
    f.sim.consent("contoso.onmicrosoft.com");
    f.sim.add_unconsented_tenant("fabrikam.com");
    let server = Server::start(&f, |_, _| {}).await;
    assert_eq!(server.token("contoso", TESTER_SECRET).await.status, 200);
    assert_eq!(server.token("contoso", "wrong").await.status, 401);
    // One Unix-socket connection slot: a second connection displaces the
    // first, which never sent a request.
    let first = tokio::net::UnixStream::connect(&server.socket)
        .await
        .unwrap();
    let second = tokio::net::UnixStream::connect(&server.socket)
        .await
        .unwrap();
    let metrics = server.metrics();
    assert!(
        common::eventually(Duration::from_secs(5), || {
            let text = metrics.encode();
            text.contains("tokenbroker_connections_rejected_total{listener=\"unix\"")
                && text.contains("tokenbroker_credential_rejections_total{")
        })
        .await,
        "{}",
        metrics.encode()
    );
    drop((first, second));
    assert!(common::eventually(Duration::from_secs(5), || f.sim.total_requests() >= 3).await);
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

/// The alerts the rules file defines, in order.
fn alert_names() -> Vec<String> {
    let text = std::fs::read_to_string(rules_dir().join("tokenbroker.rules.yml")).unwrap();
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix("- alert:"))
        .map(|name| name.trim().to_owned())
        .collect()
}

/// Each alert has a `promtool test rules` case in which it fires and one in
/// which it stays quiet (an `alert_rule_test` entry with `exp_alerts: []`),
/// and the alerts SPEC asks for are there. Needs no promtool: the file's
/// own structure, which the test above runs.
#[test]
fn every_alert_has_a_rule_test_that_fires_and_one_that_stays_quiet() {
    let names = alert_names();
    for wanted in [
        "TokenbrokerDown",
        "TokenbrokerCallerErrors",
        "TokenbrokerCredentialRejected",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "no {wanted} in {names:?}"
        );
    }
    let tests = std::fs::read_to_string(rules_dir().join("tokenbroker.rules.test.yml")).unwrap();
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    let (mut fires, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = line.strip_prefix("alertname:") else {
            continue;
        };
        match lines.get(i + 1).copied() {
            Some("exp_alerts: []") => quiet.insert(name.trim()),
            Some("exp_alerts:") => fires.insert(name.trim()),
            other => panic!("alertname {name} is followed by {other:?}, not exp_alerts"),
        };
    }
    for name in &names {
        assert!(
            fires.contains(name.as_str()),
            "no rule test in which {name} fires"
        );
        assert!(
            quiet.contains(name.as_str()),
            "no rule test in which {name} stays quiet"
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
            // The block is the lines indented deeper than `expr:` itself.
            let indent = |l: &str| l.len() - l.trim_start().len();
            let key_indent = indent(line);
            let mut block = Vec::new();
            while let Some(next) = lines.peek() {
                if next.trim().is_empty() || indent(next) <= key_indent {
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

fn dashboard_path() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/tokenbroker.json"
    ))
}

/// The Grafana dashboard: its text and its JSON.
fn dashboard() -> (String, Value) {
    let text = std::fs::read_to_string(dashboard_path()).unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("the dashboard: {e}"));
    (text, json)
}

/// Every panel of `dashboard`, the panels of collapsed rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// (panel title, expression) of every panel's every target.
fn panel_expressions(dashboard: &Value) -> Vec<(String, String)> {
    let mut exprs = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push((
                panel["title"].as_str().unwrap_or_default().to_owned(),
                target["expr"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    exprs
}

/// The expressions of the annotations that query Prometheus.
fn annotation_expressions(dashboard: &Value) -> Vec<String> {
    dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["expr"].as_str().map(str::to_owned))
        .collect()
}

/// `expr` with Grafana's variables set as for this file's scrape job
/// (`tokenbroker`) and `instance`: a 15 s rate window holds enough 1 s
/// scrapes, and the time range is a minute. An unknown variable is a failure.
fn with_variables(expr: &str, instance: &str) -> String {
    let mut out = expr.to_owned();
    for (name, value) in [
        ("__rate_interval", "15s"),
        ("__interval", "5s"),
        ("__range", "1m"),
        ("job", "tokenbroker"),
        ("instance", instance),
    ] {
        out = out
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    assert!(!out.contains('$'), "an unknown variable in {expr}");
    out
}

/// The `tokenbroker_*` metric names `text` mentions.
fn metric_names(text: &str) -> BTreeSet<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("tokenbroker_") {
        let standalone = !rest[..at].ends_with(ident);
        let tail = &rest[at..];
        let end = tail.find(|c| !ident(c)).unwrap_or(tail.len());
        if standalone {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// Every selector of `expr` picks the dashboard's job and instance, and
/// every metric has a selector.
fn assert_filtered(title: &str, expr: &str) {
    for selector in expr.split('{').skip(1) {
        let selector = selector.split('}').next().unwrap_or_default();
        assert!(
            selector.contains("job=~\"$job\"") && selector.contains("instance=~\"$instance\""),
            "{title}: {{{selector}}} does not filter by job and instance: {expr}"
        );
    }
    for name in metric_names(expr) {
        for (at, _) in expr.match_indices(&name) {
            let next = expr[at + name.len()..].chars().next();
            assert!(
                next == Some('{') || next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{title}: {name} has no selector: {expr}"
            );
        }
    }
}

#[test]
fn the_grafana_dashboard_is_well_formed() {
    let (_, d) = dashboard();
    let variable = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});
    assert_eq!(d["uid"], "tokenbroker");
    assert_eq!(d["title"], "tokenbroker");
    assert!(
        (36..=41).contains(&d["schemaVersion"].as_u64().unwrap()),
        "{}",
        d["schemaVersion"]
    );
    // Importable: the Prometheus data source is asked for on import.
    let inputs = d["__inputs"].as_array().unwrap();
    assert!(
        inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS"
            && i["type"] == "datasource"
            && i["pluginId"] == "prometheus"),
        "{inputs:?}"
    );
    // Variables: the data source, then job and instance from it.
    let variables: BTreeMap<&str, &Value> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    assert_eq!(variables["datasource"]["type"], "datasource");
    assert_eq!(variables["datasource"]["query"], "prometheus");
    for name in ["job", "instance"] {
        let v = variables[name];
        assert_eq!(v["type"], "query", "{name}");
        assert_eq!(v["datasource"], variable, "{name}");
        assert_eq!(v["includeAll"], true, "{name}");
        assert!(
            v["query"].as_str().unwrap().starts_with("label_values("),
            "{name}"
        );
    }
    // Panels: titled, unique ids, on the 24-column grid without overlaps;
    // the rest of each panel reads the data source variable, with a unit.
    let all = panels(&d);
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(&str, [u64; 4])> = Vec::new();
    for panel in &all {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(!title.trim().is_empty(), "a panel without a title: {panel}");
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "{title}: id taken"
        );
        let g = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| {
            g[k].as_u64()
                .unwrap_or_else(|| panic!("{title}: gridPos.{k}"))
        });
        assert!(w > 0 && h > 0 && x + w <= 24, "{title}: {g}");
        for (other, [ox, oy, ow, oh]) in &boxes {
            let apart = x + w <= *ox || ox + ow <= x || y + h <= *oy || oy + oh <= y;
            assert!(apart, "{title} overlaps {other}");
        }
        boxes.push((title, [x, y, w, h]));
        if panel["type"] == "row" {
            let nested = panel["panels"].as_array().map_or(0, Vec::len);
            assert_eq!(panel["collapsed"] == true, nested > 0, "{title}");
            continue;
        }
        assert_eq!(panel["datasource"], variable, "{title}");
        let unit = panel["fieldConfig"]["defaults"]["unit"].as_str();
        assert!(unit.is_some_and(|u| !u.is_empty()), "{title}: no unit");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        let mut refs = BTreeSet::new();
        for target in targets {
            assert!(refs.insert(target["refId"].as_str().unwrap()), "{title}");
            assert_eq!(target["datasource"], variable, "{title}");
        }
    }
    // Every expression filters by the variables, which are all known.
    let mut exprs = panel_expressions(&d);
    for expr in annotation_expressions(&d) {
        exprs.push(("an annotation".into(), expr));
    }
    for (title, expr) in &exprs {
        assert!(!expr.trim().is_empty(), "{title}: an empty query");
        assert!(expr.contains('{'), "{title}: no selector: {expr}");
        assert_filtered(title, expr);
        with_variables(expr, "127.0.0.1:9765");
    }
    for annotation in d["annotations"]["list"].as_array().unwrap() {
        if annotation.get("expr").is_some() {
            assert_eq!(annotation["datasource"], variable);
        }
    }
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

#[tokio::test(flavor = "multi_thread")]
async fn a_real_prometheus_scrapes_the_broker_and_evaluates_every_rule_and_panel() {
    if !common::available(
        "the prometheus server (Debian package prometheus)",
        common::has_program("prometheus"),
    ) {
        return;
    }
    let (f, server) = busy_broker().await;
    let port = common::free_port();
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
        // Prometheus answers 503 until it has started: wait for ready.
        let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
            continue;
        };
        if common::request(stream, "GET", "/-/ready", &[]).await.status != 200 {
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
        let answer = prometheus_query(port, &expr).await;
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
    }
    evaluate_the_dashboard(port, &server).await;
    server.stop().await;
}

/// An instant query of `expr` through Prometheus's HTTP API on `port`.
async fn prometheus_query(port: u16, expr: &str) -> Value {
    let query: String = url::form_urlencoded::byte_serialize(expr.as_bytes()).collect();
    prometheus_api(port, &format!("/api/v1/query?query={query}")).await
}

/// The dashboard against the Prometheus on `port`, which scrapes `server`
/// as job `tokenbroker`: its metric names are the broker's, its variables
/// list the job and the instance, and every panel's every expression
/// evaluates without an error and, once the rate windows hold a few
/// scrapes, has data.
async fn evaluate_the_dashboard(port: u16, server: &Server) {
    let started = Instant::now();
    let (text, d) = dashboard();
    let instance = server.addr.to_string();

    // Each metric the dashboard names is a family the broker exposes, or a
    // histogram's series.
    let exposed = server.get("/metrics", &[]).await.body;
    let families: BTreeMap<&str, &str> = exposed
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split_once(' '))
        .collect();
    let names = metric_names(&text);
    for name in &names {
        let histogram_series = ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|family| families.get(family) == Some(&"histogram"))
        });
        assert!(
            families.contains_key(name.as_str()) || histogram_series,
            "the dashboard names {name}, which the broker does not expose:\n{exposed}"
        );
    }

    // The variables' label_values() list this job and this instance.
    for (name, expected) in [("job", "tokenbroker"), ("instance", instance.as_str())] {
        let variable = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap();
        let query = variable["query"].as_str().unwrap();
        let (selector, label) = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(','))
            .unwrap_or_else(|| panic!("{name}: {query}"));
        let selector = with_variables(selector.trim(), &instance);
        let matcher: String = url::form_urlencoded::byte_serialize(selector.as_bytes()).collect();
        let answer = prometheus_api(
            port,
            &format!("/api/v1/label/{}/values?match[]={matcher}", label.trim()),
        )
        .await;
        assert_eq!(answer["status"], "success", "{query}: {answer}");
        assert!(
            answer["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v == expected),
            "{query} lists {}, not {expected}",
            answer["data"]
        );
    }

    // Every expression evaluates; every panel's shows data within 30 s
    // (a scrape a second; the callers keep coming meanwhile).
    let exprs = panel_expressions(&d);
    let annotations = annotation_expressions(&d);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut rounds = 0;
    let no_data = loop {
        rounds += 1;
        assert_eq!(server.token("contoso", TESTER_SECRET).await.status, 200);
        assert_eq!(server.token("contoso", "wrong").await.status, 401);
        let mut no_data = Vec::new();
        for (title, expr) in &exprs {
            let expr = with_variables(expr, &instance);
            let answer = prometheus_query(port, &expr).await;
            assert_eq!(answer["status"], "success", "{title}: {expr}: {answer}");
            if answer["data"]["result"]
                .as_array()
                .is_none_or(Vec::is_empty)
            {
                no_data.push(format!("{title}: {expr}"));
            }
        }
        for expr in &annotations {
            let expr = with_variables(expr, &instance);
            let answer = prometheus_query(port, &expr).await;
            assert_eq!(answer["status"], "success", "{expr}: {answer}");
        }
        if no_data.is_empty() || Instant::now() > deadline {
            break no_data;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        no_data.is_empty(),
        "panels without data:\n{}",
        no_data.join("\n")
    );
    // The request, cache and upstream panels are among them.
    for metric in [
        "tokenbroker_http_requests_total",
        "tokenbroker_http_request_duration_seconds_bucket",
        "tokenbroker_cache_lookups_total",
        "tokenbroker_upstream_requests_total",
        "tokenbroker_upstream_request_duration_seconds_bucket",
    ] {
        assert!(
            exprs.iter().any(|(_, e)| metric_names(e).contains(metric)),
            "no panel reads {metric}"
        );
    }
    eprintln!(
        "the dashboard: {} panel expressions evaluated, each with data, and {} annotations; \
         {} metric names checked, {rounds} rounds, {:?}",
        exprs.len(),
        annotations.len(),
        names.len(),
        started.elapsed()
    );
}
