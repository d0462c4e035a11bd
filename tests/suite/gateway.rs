//! The Graph gateway end to end: the broker in this process, the simulated
//! Entra issuing real tokens, and the Graph stand-in checking each token's
//! signature, audience, expiry, tenant and roles as Graph does. What a
//! caller sends and gets back goes over real HTTP (reqwest).

use crate::common::*;
use entra_sim::SimulatedGraph;

pub(crate) const MAIL_SYNC_SECRET: &str = "mail-sync-secret";
pub(crate) const NOTIFIER_SECRET: &str = "notifier-secret";
pub(crate) const NO_RULES_SECRET: &str = "no-rules-secret";

/// A broker with `graph_host` on a Graph stand-in, tenant `contoso` with
/// alice, bob and noreply, and three accounts: `mail-sync` (read alice's
/// mail, by UPN), `notifier` (gateway only: send as noreply, read users by
/// object id) and `no-rules`.
pub(crate) struct Gateway {
    pub(crate) f: Fixture,
    pub(crate) graph: SimulatedGraph,
    pub(crate) server: Server,
    pub(crate) tid: String,
    pub(crate) alice_id: String,
    pub(crate) http: reqwest::Client,
}

impl Gateway {
    /// Roles: Mail.ReadWrite, Mail.Send and User.Read.All.
    pub(crate) async fn start(graph_section: &str) -> Gateway {
        Gateway::start_with(
            graph_section,
            &["Mail.ReadWrite", "Mail.Send", "User.Read.All"],
        )
        .await
    }

    pub(crate) async fn start_with(graph_section: &str, roles: &[&str]) -> Gateway {
        let f = Fixture::new("").await;
        f.sim.set_roles(roles);
        let tid = f.sim.consent("contoso.onmicrosoft.com");
        let graph = SimulatedGraph::start(&f.sim).await.unwrap();
        let alice_id = graph.add_user(&tid, "alice@contoso.com");
        graph.add_user(&tid, "bob@contoso.com");
        graph.add_user(&tid, "noreply@contoso.com");
        graph.add_messages(&tid, "alice@contoso.com", 25);
        graph.add_messages(&tid, "bob@contoso.com", 3);
        f.write_config(
            "certificate = \"app.crt\"\nprivate_key = \"app.key\"\n",
            &format!(
                r#"graph_host = "{graph_url}"
{graph_section}
[[tenants]]
name = "contoso"
id = "{tid}"

[[accounts]]
name = "mail-sync"
secret_sha256 = "{mail_sync}"
tenants = ["contoso"]
unix_uids = [{uid}]
[[accounts.graph]]
methods = ["GET"]
paths = ["/users/{{mailbox}}/messages", "/users/{{mailbox}}/messages/**"]
mailboxes = ["alice@contoso.com"]
[[accounts.graph]]
methods = ["POST"]
paths = ["/users/{{mailbox}}/messages"]
mailboxes = ["alice@contoso.com"]

[[accounts]]
name = "notifier"
secret_sha256 = "{notifier}"
tenants = ["contoso"]
graph_only = true
[[accounts.graph]]
methods = ["POST"]
paths = ["/users/{{mailbox}}/sendMail"]
mailboxes = ["noreply@contoso.com"]
[[accounts.graph]]
methods = ["GET"]
paths = ["/users/{{mailbox}}/messages"]
mailboxes = ["{alice_id}"]

[[accounts]]
name = "no-rules"
secret_sha256 = "{no_rules}"
tenants = ["contoso"]
"#,
                graph_url = graph.url(),
                mail_sync = sha256_hex(MAIL_SYNC_SECRET),
                notifier = sha256_hex(NOTIFIER_SECRET),
                no_rules = sha256_hex(NO_RULES_SECRET),
                uid = own_uid(),
            ),
        );
        let server = Server::start(&f, |_, _| {}).await;
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        Gateway {
            f,
            graph,
            server,
            tid,
            alice_id,
            http,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!(
            "http://localhost:{}/graph/contoso/v1.0{path}",
            self.server.addr.port()
        )
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        secret: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(secret)
            .header("Accept-Encoding", "gzip");
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body).unwrap());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap())
    }

    async fn get(&self, path: &str, secret: &str) -> (u16, serde_json::Value) {
        let (status, _, body) = self
            .send(reqwest::Method::GET, &self.url(path), secret, None)
            .await;
        (
            status,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        )
    }
}

/// What Graph saw of a request: the tenant's token (a JWT), and the
/// caller's `secret` in no header.
pub(crate) fn assert_token_not_secret(seen: &entra_sim::SeenRequest, secret: &str) {
    for (name, value) in &seen.headers {
        assert!(
            !value.contains(secret),
            "the secret reached Graph in {name}: {seen:#?}"
        );
    }
    let auth = seen
        .headers
        .iter()
        .find(|(n, _)| n == "authorization")
        .map(|(_, v)| v.as_str());
    assert!(
        auth.is_some_and(|a| a.starts_with("Bearer eyJ")),
        "{auth:?}"
    );
}

fn error_code(body: &serde_json::Value) -> &str {
    body.pointer("/error/code")
        .and_then(|c| c.as_str())
        .unwrap_or("")
}

fn error_message(body: &serde_json::Value) -> &str {
    body.pointer("/error/message")
        .and_then(|c| c.as_str())
        .unwrap_or("")
}

#[tokio::test]
async fn a_caller_pages_through_a_mailbox_and_never_holds_a_token() {
    let g = Gateway::start("").await;
    let mut url = g.url("/users/alice%40contoso.com/messages?$top=10");
    let gateway_prefix = g.url("/");
    let mut seen = 0;
    let mut pages = 0;
    loop {
        let (status, headers, body) = g
            .send(reqwest::Method::GET, &url, MAIL_SYNC_SECRET, None)
            .await;
        assert_eq!(status, 200, "{body}");
        // No token in what the caller gets back.
        assert!(!body.contains("eyJ"), "a token reached the caller: {body}");
        assert!(headers
            .values()
            .all(|v| !v.to_str().unwrap_or("").contains("eyJ")));
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        seen += page["value"].as_array().unwrap().len();
        pages += 1;
        match page["@odata.nextLink"].as_str() {
            Some(next) => {
                assert!(
                    next.starts_with(&gateway_prefix),
                    "{next} does not point at the gateway"
                );
                url = next.to_owned();
            }
            None => break,
        }
    }
    assert_eq!((seen, pages), (25, 3));
    // What reached Graph: the tenant's token, never the caller's secret.
    let requests = g.graph.requests();
    assert_eq!(requests.len(), 3);
    for r in &requests {
        assert_token_not_secret(r, MAIL_SYNC_SECRET);
        // The caller asked for gzip; Graph is asked for identity, so every
        // page's links can be rewritten (the caller still parsed each).
        assert!(
            r.headers.iter().all(|(n, _)| n != "accept-encoding"),
            "{:?}",
            r.headers
        );
        assert_eq!(r.path, "/v1.0/users/alice@contoso.com/messages");
    }
    // One token for all three: from the broker's cache.
    assert_eq!(g.f.sim.requests(&g.tid), 1);
    g.server.stop().await;
}

#[tokio::test]
async fn what_no_rule_allows_is_refused_before_any_request_to_graph() {
    let g = Gateway::start("").await;
    // Allowed spellings of alice's mailbox.
    for path in [
        "/users/alice@contoso.com/messages",
        "/users('alice%40contoso.com')/messages",
        "/USERS/Alice@Contoso.com/MESSAGES",
        // (no such message: Graph answers 404, which is not a refusal)
        "/users/alice%40contoso.com/messages/AAMk1",
    ] {
        let (status, body) = g.get(path, MAIL_SYNC_SECRET).await;
        assert_ne!(status, 403, "{path}: {body}");
        assert_ne!(status, 400, "{path}: {body}");
    }
    let before = g.graph.request_count();
    let refused = [
        // Not a rule's mailbox, method or path.
        ("GET", "/users/bob@contoso.com/messages", 403),
        ("DELETE", "/users/alice@contoso.com/messages/AAMk1", 403),
        ("GET", "/users/alice@contoso.com/mailFolders", 403),
        ("GET", "/users", 403),
        // Spellings that could mean two things.
        (
            "GET",
            "/users/alice@contoso.com/messages/../../bob@contoso.com/messages",
            400,
        ),
        ("GET", "/users/alice@contoso.com/messages/./x", 400),
        ("GET", "/users/alice@contoso.com%2Fmessages", 400),
        ("GET", "/users/alice@contoso.com%5Cmessages", 400),
        ("GET", "/users//alice@contoso.com/messages", 400),
        ("GET", "/me/messages", 400),
        ("GET", "/Me/messages", 400),
        ("GET", "/users/alice%00@contoso.com/messages", 400),
    ];
    let auth = format!("Bearer {MAIL_SYNC_SECRET}");
    for (method, path, expected) in refused {
        // Raw HTTP: an HTTP client would resolve the dot segments itself.
        let stream = tokio::net::TcpStream::connect(g.server.addr).await.unwrap();
        let target = format!("/graph/contoso/v1.0{path}");
        let answer = request(stream, method, &target, &[("Authorization", &auth)]).await;
        let (status, body) = (answer.status, answer.body);
        assert_eq!(status, expected, "{method} {path}: {body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        let code = if expected == 403 {
            "tokenbroker.forbidden"
        } else {
            "tokenbroker.bad_request"
        };
        assert_eq!(error_code(&body), code, "{body}");
        if expected == 403 {
            assert!(error_message(&body).contains("mail-sync"), "{body}");
        }
    }
    let long = format!("/users/alice@contoso.com/messages/{}", "a".repeat(2100));
    assert_eq!(g.get(&long, MAIL_SYNC_SECRET).await.0, 400);
    // An account with no rules may do nothing.
    let (status, body) = g
        .get("/users/alice@contoso.com/messages", NO_RULES_SECRET)
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        error_message(&body).contains("no [[accounts.graph]] rules"),
        "{body}"
    );
    // No secret, a wrong one.
    assert_eq!(
        g.get("/users/alice@contoso.com/messages", "wrong").await.0,
        401
    );
    assert_eq!(
        g.graph.request_count(),
        before,
        "a refused request reached Graph"
    );
    let metrics = g.server.metrics().encode();
    assert!(
        metrics
            .contains(r#"tokenbroker_graph_denied_total{account="mail-sync",reason="no_rule"} 4"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"tokenbroker_graph_requests_total{account="mail-sync",method="GET",status="2xx"} 3"#
        ),
        "{metrics}"
    );
    g.server.stop().await;
}

#[tokio::test]
async fn a_batch_is_refused_whole_when_one_sub_request_is_not_allowed() {
    let g = Gateway::start("").await;
    let batch = |second: &str| {
        serde_json::json!({"requests": [
            {"id": "1", "method": "GET", "url": "/users/alice@contoso.com/messages?$top=5"},
            {"id": "2", "method": "GET", "url": second},
        ]})
    };
    let before = g.graph.request_count();
    let (status, _, body) = g
        .send(
            reqwest::Method::POST,
            &g.url("/$batch"),
            MAIL_SYNC_SECRET,
            Some(batch("/users/bob@contoso.com/messages")),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        error_message(&body).contains("\"2\""),
        "the refusal names the sub-request: {body}"
    );
    assert_eq!(g.graph.request_count(), before);

    let (status, _, body) = g
        .send(
            reqwest::Method::POST,
            &g.url("/$batch"),
            MAIL_SYNC_SECRET,
            Some(batch("/users/alice%40contoso.com/messages/x")),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let first = body["responses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "1")
        .unwrap();
    let next = first["body"]["@odata.nextLink"].as_str().unwrap();
    assert!(next.starts_with(&g.url("/")), "{next}");
    g.server.stop().await;
}

#[tokio::test]
async fn a_gateway_only_account_never_gets_a_raw_token() {
    let g = Gateway::start("").await;
    let answer = g.server.token("contoso", NOTIFIER_SECRET).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    let answer = g
        .server
        .get(
            "/msi/token?resource=https://graph.microsoft.com&api-version=2019-08-01",
            &[("X-IDENTITY-HEADER", NOTIFIER_SECRET)],
        )
        .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    // Through the gateway it sends mail as noreply, and only as noreply.
    let mail = serde_json::json!({"message": {"subject": "hi", "toRecipients": [{"emailAddress": {"address": "x@example.com"}}]}});
    let (status, _, body) = g
        .send(
            reqwest::Method::POST,
            &g.url("/users/noreply%40contoso.com/sendMail"),
            NOTIFIER_SECRET,
            Some(mail.clone()),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(g.graph.sent_mail(&g.tid, "noreply@contoso.com").len(), 1);
    let (status, _, body) = g
        .send(
            reqwest::Method::POST,
            &g.url("/users/alice@contoso.com/sendMail"),
            NOTIFIER_SECRET,
            Some(mail),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(g.graph.sent_mail(&g.tid, "alice@contoso.com").is_empty());
    g.server.stop().await;
}

#[tokio::test]
async fn graphs_own_refusals_come_back_as_graph_sent_them() {
    // The app has no Mail.Send: Graph refuses, and the SDK sees Graph's error.
    let g = Gateway::start_with("", &["Mail.ReadWrite"]).await;
    let mail = serde_json::json!({"message": {"subject": "hi"}});
    let (status, _, body) = g
        .send(
            reqwest::Method::POST,
            &g.url("/users/noreply@contoso.com/sendMail"),
            NOTIFIER_SECRET,
            Some(mail),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("ErrorAccessDenied"), "{body}");
    // 429 and 503 pass back with Retry-After.
    g.graph.push_status(429, Some(7), 1);
    let (status, headers, body) = g
        .send(
            reqwest::Method::GET,
            &g.url("/users/alice@contoso.com/messages"),
            MAIL_SYNC_SECRET,
            None,
        )
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(headers.get("retry-after").unwrap(), "7");
    g.graph.push_status(503, Some(3), 1);
    let (status, headers, _) = g
        .send(
            reqwest::Method::GET,
            &g.url("/users/alice@contoso.com/messages"),
            MAIL_SYNC_SECRET,
            None,
        )
        .await;
    assert_eq!(status, 503);
    assert_eq!(headers.get("retry-after").unwrap(), "3");
    g.server.stop().await;
}

#[tokio::test]
async fn a_token_graph_calls_invalid_is_replaced_and_the_request_sent_once_more() {
    // A token may be replaced once a second (the default is once in 30 s).
    let g = Gateway::start("[cache]\nforced_refresh_interval = \"1s\"").await;
    assert_eq!(
        g.get("/users/alice@contoso.com/messages", MAIL_SYNC_SECRET)
            .await
            .0,
        200
    );
    assert_eq!(g.f.sim.requests(&g.tid), 1);
    // Graph now calls every token issued so far invalid (revoked).
    g.graph.revoke_issued_tokens();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let before = g.graph.request_count();
    let (status, body) = g
        .get("/users/alice@contoso.com/messages", MAIL_SYNC_SECRET)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        g.graph.request_count() - before,
        2,
        "one refused, one retried"
    );
    assert_eq!(g.f.sim.requests(&g.tid), 2, "one fresh token");
    // A POST with a small body is sent again too.
    g.graph.revoke_issued_tokens();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, headers, body) = g
        .send(
            reqwest::Method::POST,
            &g.url("/users/alice@contoso.com/messages"),
            MAIL_SYNC_SECRET,
            Some(serde_json::json!({"subject": "draft"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // Location points back at the gateway.
    let location = headers.get("location").unwrap().to_str().unwrap();
    assert!(location.starts_with(&g.url("/users/")), "{location}");
    assert_eq!(g.f.sim.requests(&g.tid), 3);
    g.server.stop().await;
}

#[tokio::test]
async fn a_mailbox_named_by_object_id_is_looked_up_once() {
    let g = Gateway::start("").await;
    // notifier's GET rule lists alice by object id; ask by UPN.
    let before = g.graph.request_count();
    let (status, body) = g
        .get("/users/alice@contoso.com/messages", NOTIFIER_SECRET)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        g.graph.request_count() - before,
        2,
        "a lookup and the request"
    );
    let lookup = &g.graph.requests()[before];
    assert_eq!(lookup.path, "/v1.0/users/alice@contoso.com");
    let (status, _) = g
        .get("/users/alice@contoso.com/messages", NOTIFIER_SECRET)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        g.graph.request_count() - before,
        3,
        "the answer was remembered"
    );
    // By object id: allowed without a lookup; bob by UPN: looked up, refused.
    assert_eq!(
        g.get(&format!("/users/{}/messages", g.alice_id), NOTIFIER_SECRET)
            .await
            .0,
        200
    );
    let (status, body) = g
        .get("/users/bob@contoso.com/messages", NOTIFIER_SECRET)
        .await;
    assert_eq!(status, 403, "{body}");
    g.server.stop().await;
}

#[tokio::test]
async fn without_a_directory_permission_a_lookup_refusal_says_what_to_grant() {
    let g = Gateway::start_with("", &["Mail.ReadWrite"]).await;
    let (status, body) = g
        .get("/users/alice@contoso.com/messages", NOTIFIER_SECRET)
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(error_message(&body).contains("User.Read.All"), "{body}");
    g.server.stop().await;
}

#[tokio::test]
async fn downloads_stream_and_bodies_are_bounded() {
    let g = Gateway::start("[graph]\nmax_request_bytes = 1000\nmax_rewrite_bytes = 2048").await;
    g.graph.set_value_size(3 * 1024 * 1024 + 17);
    let messages = g.graph.messages(&g.tid, "alice@contoso.com");
    let id = messages[0]["id"].as_str().unwrap().to_owned();
    let response = g
        .http
        .get(g.url(&format!("/users/alice@contoso.com/messages/{id}/$value")))
        .bearer_auth(MAIL_SYNC_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bytes = response.bytes().await.unwrap();
    assert_eq!(bytes.len(), 3 * 1024 * 1024 + 17);
    assert_eq!(
        bytes.as_ref(),
        entra_sim::value_bytes(&id, 3 * 1024 * 1024 + 17).as_slice()
    );
    // A JSON page larger than max_rewrite_bytes passes unchanged, counted.
    let (status, body) = g
        .get(
            "/users/alice@contoso.com/messages?$top=20",
            MAIL_SYNC_SECRET,
        )
        .await;
    assert_eq!(status, 200);
    assert!(body["@odata.nextLink"]
        .as_str()
        .unwrap()
        .starts_with("https://graph.microsoft.com/"));
    assert!(g
        .server
        .metrics()
        .encode()
        .contains("tokenbroker_graph_rewrite_skipped_total 1"));
    // Over max_request_bytes: 413, declared or not.
    let before = g.graph.request_count();
    let big = serde_json::json!({"subject": "x".repeat(2000)});
    let (status, _, body) = g
        .send(
            reqwest::Method::POST,
            &g.url("/users/alice@contoso.com/messages"),
            MAIL_SYNC_SECRET,
            Some(big),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    // Chunked, no Content-Length: the limit holds as the body streams.
    let chunks = futures_util::stream::iter((0..20).map(|_| {
        Ok::<_, std::io::Error>(hyper::body::Frame::data(bytes::Bytes::from(vec![
            b'x';
            100
        ])))
    }));
    let response = g
        .http
        .post(g.url("/users/alice@contoso.com/messages"))
        .bearer_auth(MAIL_SYNC_SECRET)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap(http_body_util::StreamBody::new(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    // The declared one never left; the streamed one was cut off mid-body,
    // so Graph never had a whole request to act on.
    assert_eq!(g.graph.request_count(), before + 1);
    assert_eq!(
        g.graph.messages(&g.tid, "alice@contoso.com").len(),
        messages.len()
    );
    g.server.stop().await;
}

#[tokio::test]
async fn a_unix_socket_peer_uses_the_gateway_by_its_uid() {
    let g = Gateway::start("").await;
    // mail-sync lists this process's uid: no secret on the socket.
    let answer = g
        .server
        .get_unix(
            "/graph/contoso/v1.0/users/alice@contoso.com/messages?$top=2",
            &[],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let next = answer.json()["@odata.nextLink"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        next.starts_with("http://localhost/graph/contoso/v1.0/users/"),
        "{next}"
    );
    // Its rules hold there too.
    let answer = g
        .server
        .get_unix("/graph/contoso/v1.0/users/bob@contoso.com/messages", &[])
        .await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    g.server.stop().await;
}

#[tokio::test]
async fn the_rules_reload_with_the_configuration() {
    let g = Gateway::start("").await;
    let bob = "/users/bob@contoso.com/messages";
    assert_eq!(g.get(bob, MAIL_SYNC_SECRET).await.0, 403);
    let text = std::fs::read_to_string(&g.f.config_path).unwrap();
    let widened = text.replacen(
        "mailboxes = [\"alice@contoso.com\"]",
        "mailboxes = [\"alice@contoso.com\", \"bob@contoso.com\"]",
        1,
    );
    assert_ne!(text, widened);
    std::fs::write(&g.f.config_path, widened).unwrap();
    g.server.app.broker().reload().await.unwrap();
    assert_eq!(g.get(bob, MAIL_SYNC_SECRET).await.0, 200);
    // And back: a rule removed by a reload allows nothing any more.
    std::fs::write(&g.f.config_path, text).unwrap();
    g.server.app.broker().reload().await.unwrap();
    assert_eq!(g.get(bob, MAIL_SYNC_SECRET).await.0, 403);
    assert_eq!(
        g.get("/users/alice@contoso.com/messages", MAIL_SYNC_SECRET)
            .await
            .0,
        200
    );
    g.server.stop().await;
}
