//! `tokenbroker serve --dev`, the README's first command: it prints a URL,
//! a working curl line and the IDENTITY_ENDPOINT/IDENTITY_HEADER pair, and
//! both work.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn dev_mode_prints_working_instructions() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokenbroker"))
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let banner = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.starts_with("Metrics:");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    });
    let banner = tokio::time::timeout(Duration::from_secs(30), banner)
        .await
        .expect("banner printed")
        .unwrap();
    let find = |prefix: &str| -> String {
        banner
            .iter()
            .find_map(|l| l.trim().strip_prefix(prefix).map(str::to_owned))
            .unwrap_or_else(|| panic!("no {prefix:?} line in {banner:#?}"))
    };
    let endpoint = find("export IDENTITY_ENDPOINT=");
    let secret = find("export IDENTITY_HEADER=");
    let curl = find("curl ");
    let base = find("Broker: ");
    assert!(
        curl.contains(&secret) && curl.contains(&format!("{base}/v1/token?tenant=contoso")),
        "{curl}"
    );
    assert_eq!(endpoint, format!("{base}/msi/token"));
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse().unwrap();

    // The curl line's request.
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = format!("Bearer {secret}");
    let answer = common::request(
        stream,
        "GET",
        "/v1/token?tenant=contoso",
        &[("Authorization", &auth)],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let token = answer.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(common::claims(&token)["idtyp"], "app");
    // The SDK's request.
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let answer = common::request(
        stream,
        "GET",
        "/msi/token?api-version=2019-08-01&resource=https%3A%2F%2Fgraph.microsoft.com",
        &[("X-IDENTITY-HEADER", &secret), ("Metadata", "true")],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["access_token"], token.as_str());
    // The gateway line: Graph through the broker, no token for the caller.
    let gateway = banner
        .iter()
        .find(|l| l.contains("/graph/"))
        .unwrap_or_else(|| panic!("no gateway line in {banner:#?}"));
    let target = gateway
        .split(&base)
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap();
    assert!(gateway.contains(&secret), "{gateway}");
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let answer = common::request(stream, "GET", target, &[("Authorization", &auth)]).await;
    assert_eq!(answer.status, 200, "{target}: {}", answer.body);
    let page = answer.json();
    assert_eq!(page["value"].as_array().unwrap().len(), 2);
    let next = page["@odata.nextLink"].as_str().unwrap();
    assert!(
        next.starts_with("http://localhost/graph/contoso/v1.0/"),
        "{next}"
    );
    assert!(!answer.body.contains(&token));
    // The README's selector example: the second dev tenant, by name.
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let answer = common::request(
        stream,
        "GET",
        "/msi/token?api-version=2019-08-01&resource=https%3A%2F%2Fgraph.microsoft.com&client_id=fabrikam",
        &[("X-IDENTITY-HEADER", &secret), ("Metadata", "true")],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let fabrikam = answer.json()["access_token"].as_str().unwrap().to_owned();
    assert_ne!(
        common::claims(&fabrikam)["tid"],
        common::claims(&token)["tid"]
    );

    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_loopback_listen_override_is_refused() {
    let f = common::Fixture::new("").await;
    let config = f.config_path.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tokenbroker"))
            .args(["serve", "--listen", "0.0.0.0:0", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("allow_remote"),
        "{stderr}"
    );
}
