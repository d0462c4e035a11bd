//! `tokenbroker serve`, the real binary: SIGTERM while a request is in
//! flight lets that request finish (200), refuses new connections, and the
//! process exits 0 within a bound.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{claims, sha256_hex, Fixture};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const SECRET: &str = "tb_shutdown-test-secret-0123456789";

async fn refused(addr: SocketAddr) -> bool {
    match tokio::net::TcpStream::connect(addr).await {
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        Ok(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_the_request_in_flight_and_exits_0() {
    let f = Fixture::new("").await;
    f.sim.consent("contoso.onmicrosoft.com");
    let fabrikam = f.sim.consent("fabrikam.com");
    // A cold token request takes 2 s upstream.
    f.sim.set_latency(Duration::from_secs(2));
    // Our own configuration (the fixture's sets request_timeout = 2 s, which
    // this latency would exceed), beside the fixture's certificate and key.
    let config_path = f.dir.path().join("shutdown.toml");
    std::fs::write(
        &config_path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"10s\"\n\
             [app]\nclient_id = \"{}\"\nauthority_host = \"{}\"\n\
             certificate = \"app.crt\"\nprivate_key = \"app.key\"\nrequest_timeout = \"10s\"\n\
             [[tenants]]\nname = \"contoso\"\nid = \"contoso.onmicrosoft.com\"\n\
             [[accounts]]\nname = \"svc\"\nsecret_sha256 = \"{}\"\ntenants = [\"*\"]\n",
            common::CLIENT_ID,
            f.sim.url(),
            sha256_hex(SECRET)
        ),
    )
    .unwrap();

    let mut broker = common::Daemon::spawn(&config_path).await;
    let addr = broker.addr;
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");

    // A request for a tenant nobody prefetched: it waits 2 s on the authority.
    let request = tokio::spawn(async move {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let authorization = format!("Bearer {SECRET}");
        let answer = common::request(
            stream,
            "GET",
            "/v1/token?tenant=fabrikam.com",
            &[("Authorization", authorization.as_str())],
        )
        .await;
        (answer, Instant::now())
    });
    // ~300 ms, or until the broker's token request has reached the authority
    // (slow machines).
    let sent = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    while f.sim.requests("fabrikam.com") == 0 && sent.elapsed() < Duration::from_millis(1500) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        f.sim.requests("fabrikam.com"),
        1,
        "the request reached the authority"
    );
    assert!(!request.is_finished(), "the request is still in flight");

    let sigterm = Instant::now();
    broker.signal("-TERM");

    // While it drains, new connections are refused.
    let mut refused_while_draining = false;
    while sigterm.elapsed() < Duration::from_millis(1500) {
        if refused(addr).await {
            refused_while_draining = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (answer, answered) = tokio::time::timeout(Duration::from_secs(10), request)
        .await
        .expect("the request in flight got no answer within 10 s of SIGTERM")
        .expect("the request task panicked");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let body = answer.json();
    let token = body["access_token"].as_str().expect("an access_token");
    assert_eq!(claims(token)["tid"], fabrikam.as_str());
    assert!(
        answered > sigterm,
        "the answer came after SIGTERM: it was in flight"
    );
    assert!(
        refused_while_draining,
        "a new connection was still accepted 1.5 s after SIGTERM, while draining"
    );

    // The process exits 0, promptly.
    let status = loop {
        if let Some(status) = broker.child.try_wait().expect("wait for tokenbroker") {
            break status;
        }
        assert!(
            sigterm.elapsed() < Duration::from_secs(10),
            "tokenbroker still running 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let exited_after = sigterm.elapsed();
    assert!(refused(addr).await, "connections are refused after exit");

    let messages = broker.drain().await;
    let log_text = broker.log.join("\n");
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}; log:\n{log_text}"
    );
    eprintln!("exited {exited_after:?} after SIGTERM");
    let has = |what: &str| {
        messages
            .iter()
            .any(|m| m["message"].as_str().is_some_and(|s| s.contains(what)))
    };
    assert!(has("SIGTERM received"), "{log_text}");
    assert!(has("shutting down"), "{log_text}");
    assert!(
        messages
            .iter()
            .any(|m| m["message"] == "request" && m["route"] == "/v1/token" && m["status"] == 200),
        "an access-log line for the request in flight: {log_text}"
    );
    assert!(
        !log_text.contains(SECRET) && !log_text.contains(token),
        "no secret or token in the log"
    );
}
