//! Every log line of a full flow — successes and failures, at the most
//! verbose level, of this crate and of hyper and reqwest — holds no secret,
//! token, assertion or key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{sha256_hex, Fixture, Server};
use entra_sim::Fault;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const SECRET: &str = "tb_logging-test-account-secret";

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_token_or_assertion_reaches_the_log() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let f = Fixture::new("").await;
    // The Graph gateway too: its access lines name account, tenant, method
    // and path (never the query), and its tokens stay out of the log.
    let graph = entra_sim::SimulatedGraph::start(&f.sim).await.unwrap();
    f.write_config(
        "certificate = \"app.crt\"\nprivate_key = \"app.key\"\n",
        &format!(
            "graph_host = \"{}\"\n\
             [[tenants]]\nname = \"contoso\"\nid = \"contoso.onmicrosoft.com\"\n\
             [[accounts]]\nname = \"svc\"\nsecret_sha256 = \"{}\"\ntenants = [\"*\"]\ndefault_tenant = \"contoso\"\n\
             [[accounts.graph]]\nmethods = [\"GET\"]\npaths = [\"/users/{{mailbox}}/messages\"]\nmailboxes = [\"alice@contoso.com\"]\n",
            graph.url(),
            sha256_hex(SECRET)
        ),
    );
    let tid = f.sim.consent("contoso.onmicrosoft.com");
    graph.add_messages(&tid, "alice@contoso.com", 3);
    graph.add_user(&tid, "bob@contoso.com");
    f.sim.consent("fabrikam.com");
    f.sim.add_unconsented_tenant("unconsented.example.com");
    let server = Server::start(&f, |authority, _| {
        authority.request_timeout = Duration::from_millis(300);
    })
    .await;
    let auth = format!("Bearer {SECRET}");
    let mut tokens = Vec::new();

    // A uid no account names, on the callers' socket: refused, and the
    // access line carries the uid.
    assert_eq!(
        server
            .get_unix("/v1/token?tenant=contoso", &[])
            .await
            .status,
        401
    );

    // Successes on both routes.
    let answer = server
        .get("/v1/token?tenant=contoso", &[("Authorization", &auth)])
        .await;
    assert_eq!(answer.status, 200);
    tokens.push(answer.json()["access_token"].as_str().unwrap().to_owned());
    let answer = server
        .get("/msi/token?api-version=2019-08-01&resource=https%3A%2F%2Fgraph.microsoft.com&client_id=fabrikam.com", &[("X-IDENTITY-HEADER", SECRET)])
        .await;
    assert_eq!(answer.status, 200);
    tokens.push(answer.json()["access_token"].as_str().unwrap().to_owned());
    // Through the gateway: one allowed, one denied.
    let answer = server
        .get(
            "/graph/contoso/v1.0/users/alice%40contoso.com/messages?$top=2",
            &[("Authorization", &auth)],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answer = server
        .get(
            "/graph/contoso/v1.0/users/bob@contoso.com/messages?$top=2",
            &[("Authorization", &auth)],
        )
        .await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    for seen in graph.requests() {
        if let Some((_, bearer)) = seen.headers.iter().find(|(n, _)| n == "authorization") {
            tokens.push(bearer.trim_start_matches("Bearer ").to_owned());
        }
    }
    // Failures: wrong secrets, bad input, refusals, throttling, garbage, drops, timeouts.
    assert_eq!(
        server
            .get(
                "/v1/token?tenant=contoso",
                &[("Authorization", "Bearer tb_wrong-secret-value")]
            )
            .await
            .status,
        401
    );
    assert_eq!(
        server
            .get(
                "/msi/token?api-version=2019-08-01&resource=x",
                &[("X-IDENTITY-HEADER", "tb_wrong-secret-value")]
            )
            .await
            .status,
        401
    );
    assert_eq!(
        server
            .get("/v1/token?tenant=..%2Fsecret", &[("Authorization", &auth)])
            .await
            .status,
        400
    );
    assert_eq!(
        server
            .get(
                "/v1/token?tenant=unconsented.example.com",
                &[("Authorization", &auth)]
            )
            .await
            .status,
        502
    );
    f.sim.push_fault(Fault::Throttle(10), 1);
    assert_eq!(
        server
            .get(
                "/v1/token?tenant=t1.example.com",
                &[("Authorization", &auth)]
            )
            .await
            .status,
        503
    );
    f.sim.push_fault(Fault::Garbage, 4);
    assert_eq!(
        server
            .get(
                "/v1/token?tenant=t2.example.com",
                &[("Authorization", &auth)]
            )
            .await
            .status,
        503
    );
    f.sim.push_fault(Fault::Drop, 1);
    f.sim.consent("t3.example.com");
    assert_eq!(
        server
            .get(
                "/v1/token?tenant=t3.example.com",
                &[("Authorization", &auth)]
            )
            .await
            .status,
        200
    );
    f.sim
        .set_persistent_fault(Some(Fault::Slow(Duration::from_secs(2))));
    assert_eq!(
        server
            .get(
                "/v1/token?tenant=t4.example.com",
                &[("Authorization", &auth)]
            )
            .await
            .status,
        504
    );
    f.sim.set_persistent_fault(None);
    // A certificate the authority does not know: the reload path logs too.
    f.sim.consent("t5.example.com");
    f.sim.clear_certificates();
    assert_eq!(
        server
            .get(
                "/v1/token?tenant=t5.example.com",
                &[("Authorization", &auth)]
            )
            .await
            .status,
        502
    );
    // On a connection kept open, a request's access line is written once
    // its answer is, not when the connection closes.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let healthz_lines = || {
            let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
            log.lines()
                .filter(|l| l.contains("tokenbroker::access") && l.contains("route=\"/healthz\""))
                .count()
        };
        assert_eq!(healthz_lines(), 0);
        let mut kept = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut buf = [0u8; 1024];
            let n = kept.read(&mut buf).await.unwrap();
            assert!(n > 0, "the connection closed");
            head.extend_from_slice(&buf[..n]);
        }
        assert!(
            common::eventually(Duration::from_secs(5), || healthz_lines() > 0).await,
            "no access line while the connection stays open"
        );
        drop(kept);
    }
    server.stop().await;

    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(log.lines().count() > 20, "the flow was logged:\n{log}");
    assert!(
        log.contains("tokenbroker::access"),
        "access lines are there"
    );
    assert!(
        log.contains("AADSTS700016") && log.contains("AADSTS700027"),
        "failures are logged with their codes:\n{log}"
    );
    // A gateway request's access line: who touched which mailbox.
    let gateway: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("tokenbroker::access") && l.contains("route=\"/graph\""))
        .collect();
    assert_eq!(gateway.len(), 2, "{log}");
    for (line, (mailbox, status)) in gateway.iter().zip([("alice", 200), ("bob", 403)]) {
        for part in [
            "account=\"svc\"".to_owned(),
            "tenant=\"contoso\"".to_owned(),
            "method=\"GET\"".to_owned(),
            format!("path=\"/users/{mailbox}@contoso.com/messages\""),
            format!("status={status}"),
            "bytes=".to_owned(),
        ] {
            assert!(line.contains(&part), "{part} missing: {line}");
        }
        assert!(
            !line.contains("top=2"),
            "the query reached the access line: {line}"
        );
    }
    // A refused caller's access line says why, in the metric's words.
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("tokenbroker::access") && l.contains("status=401"))
        .collect();
    assert_eq!(refused.len(), 3, "{log}");
    let own_uid = common::own_uid();
    assert!(
        refused[0].contains("reason=\"unknown_uid\"")
            && refused[0].contains(&format!("uid={own_uid}")),
        "{}",
        refused[0]
    );
    for line in &refused[1..] {
        assert!(
            line.contains("reason=\"unknown_secret\"") && !line.contains("uid="),
            "{line}"
        );
    }
    assert!(
        !log.lines()
            .any(|l| l.contains("status=200") && l.contains("reason=")),
        "an answered request has no reason:\n{log}"
    );
    for line in log.lines() {
        for forbidden in [
            SECRET,
            "tb_wrong-secret-value",
            "eyJ",
            "client_assertion=",
            "PRIVATE KEY",
            "Bearer tb_",
        ] {
            assert!(
                !line.contains(forbidden),
                "{forbidden:?} leaked into the log: {line}"
            );
        }
        for token in &tokens {
            assert!(!line.contains(token.as_str()));
        }
    }
    // Nothing secret in the key's Debug either (it is never logged, but check the guard).
    let config = f.config();
    let store = f.credentials(&config);
    let debug = format!("{:?}", store[0].current());
    assert!(
        debug.contains("[redacted]") && !debug.contains("PRIVATE"),
        "{debug}"
    );
}
