//! The Graph stand-in as a client meets it: raw HTTP/1.1 over TCP, tokens
//! signed by the simulated authority.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use entra_sim::{value_bytes, SimulatedAuthority, SimulatedGraph};
use serde_json::{json, Value};
use std::io::Read;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
const GRAPH: &str = "https://graph.microsoft.com";

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Sizes of the chunks when the body came chunked.
    chunks: Option<Vec<usize>>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap().to_owned()
    }

    fn message(&self) -> String {
        self.json()["error"]["message"].as_str().unwrap().to_owned()
    }
}

/// One request on its own connection; `target` is the path and query.
async fn send(
    graph: &SimulatedGraph,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let addr = graph.url().trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut rest = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let mut chunks = None;
    if chunked {
        let mut body = Vec::new();
        let mut sizes = Vec::new();
        loop {
            let end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..end]).unwrap().trim(), 16)
                .unwrap();
            rest.drain(..end + 2);
            if size == 0 {
                break;
            }
            sizes.push(size);
            body.extend_from_slice(&rest[..size]);
            rest.drain(..size + 2);
        }
        rest = body;
        chunks = Some(sizes);
    }
    Answer {
        status,
        headers,
        body: rest,
        chunks,
    }
}

async fn get(graph: &SimulatedGraph, target: &str, token: &str) -> Answer {
    let auth = format!("Bearer {token}");
    send(graph, "GET", target, &[("Authorization", &auth)], b"").await
}

async fn post_json(graph: &SimulatedGraph, target: &str, token: &str, body: &Value) -> Answer {
    let auth = format!("Bearer {token}");
    send(
        graph,
        "POST",
        target,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
    .await
}

/// An authority with contoso consented, a Graph trusting it, alice in
/// contoso with `messages` messages.
async fn setup(messages: usize) -> (SimulatedAuthority, SimulatedGraph, String) {
    let authority = SimulatedAuthority::start(CLIENT_ID).await.unwrap();
    let tid = authority.consent("contoso.onmicrosoft.com");
    let graph = SimulatedGraph::start(&authority).await.unwrap();
    graph.add_user(&tid, "alice@contoso.com");
    graph.add_messages(&tid, "alice@contoso.com", messages);
    (authority, graph, tid)
}

/// `@odata.nextLink` on the real host, rebased onto the stand-in.
fn rebase(link: &str) -> String {
    link.strip_prefix(GRAPH).unwrap().to_owned()
}

#[tokio::test]
async fn a_valid_token_pages_through_a_mailbox_by_next_links() {
    let (authority, graph, tid) = setup(25).await;
    let token = authority.issue_token_for_tests(&tid, GRAPH, &["Mail.Read"]);
    let auth = format!("Bearer {token}");
    let first = send(
        &graph,
        "GET",
        "/v1.0/users/alice%40contoso.com/messages?%24top=10",
        &[
            ("Authorization", &auth),
            ("client-request-id", "5b2f3c1e-0000-4000-8000-000000000001"),
        ],
        b"",
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.json());
    assert_eq!(
        first.header("client-request-id"),
        Some("5b2f3c1e-0000-4000-8000-000000000001")
    );
    assert!(uuid::Uuid::parse_str(first.header("request-id").unwrap()).is_ok());
    assert!(first
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let body = first.json();
    assert_eq!(
        body["@odata.context"],
        "https://graph.microsoft.com/v1.0/$metadata#users('alice@contoso.com')/messages"
    );
    let mut subjects: Vec<String> = Vec::new();
    let mut page = body;
    let mut pages = 1;
    loop {
        for m in page["value"].as_array().unwrap() {
            assert!(m["id"].is_string() && m["receivedDateTime"].is_string());
            subjects.push(m["subject"].as_str().unwrap().to_owned());
        }
        let Some(link) = page["@odata.nextLink"].as_str() else {
            break;
        };
        assert!(
            link.starts_with(
                "https://graph.microsoft.com/v1.0/users/alice%40contoso.com/messages?%24top=10&%24skiptoken="
            ),
            "{link}"
        );
        let next = get(&graph, &rebase(link), &token).await;
        assert_eq!(next.status, 200);
        page = next.json();
        pages += 1;
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (1..=25).map(|n| format!("Message {n}")).collect();
    assert_eq!(subjects, expected);
    // Default page size 10, at most 1000.
    let default = get(&graph, "/beta/users/alice@contoso.com/messages", &token).await;
    assert_eq!(default.json()["value"].as_array().unwrap().len(), 10);
    let over = get(
        &graph,
        "/v1.0/users/alice@contoso.com/messages?$top=1001",
        &token,
    )
    .await;
    assert_eq!((over.status, over.code()), (400, "BadRequest".into()));
    // The link host is configurable.
    graph.set_link_base(&graph.url());
    let page = get(
        &graph,
        "/v1.0/users/alice@contoso.com/messages?$top=20",
        &token,
    )
    .await;
    let link = page.json()["@odata.nextLink"].as_str().unwrap().to_owned();
    assert!(link.starts_with(&graph.url()), "{link}");
    assert_eq!(graph.request_count(), 6);
}

#[tokio::test]
async fn bad_tokens_are_refused_with_invalid_authentication_token() {
    let (authority, graph, tid) = setup(1).await;
    let path = "/v1.0/users/alice@contoso.com/messages";
    let check = |answer: Answer, message: &str| {
        assert_eq!(answer.status, 401);
        assert_eq!(answer.code(), "InvalidAuthenticationToken");
        assert_eq!(answer.message(), message);
        assert!(answer
            .header("www-authenticate")
            .unwrap()
            .contains("client_id=\"00000003-0000-0000-c000-000000000000\""));
        assert_eq!(answer.header("content-type"), Some("application/json"));
        let inner = &answer.json()["error"]["innerError"];
        assert!(inner["date"].is_string() && inner["request-id"].is_string());
    };
    check(
        send(&graph, "GET", path, &[], b"").await,
        "Access token is empty.",
    );
    check(
        get(&graph, path, "not-a-jwt").await,
        "Access token validation failure.",
    );
    // Another audience (an ARM token).
    let arm = authority.issue_token_for_tests(&tid, "https://management.azure.com", &["Mail.Read"]);
    check(
        get(&graph, path, &arm).await,
        "Access token validation failure. Invalid audience.",
    );
    // Graph's app id as audience is Graph too.
    let v2 = authority.issue_token_for_tests(
        &tid,
        "00000003-0000-0000-c000-000000000000",
        &["Mail.Read"],
    );
    assert_eq!(get(&graph, path, &v2).await.status, 200);
    // A signature that does not verify, and alg none.
    let good = authority.issue_token_for_tests(&tid, GRAPH, &["Mail.Read"]);
    let (signed, _) = good.rsplit_once('.').unwrap();
    check(
        get(&graph, path, &format!("{signed}.AAAA")).await,
        "Access token validation failure.",
    );
    let (_, claims) = signed.split_once('.').unwrap();
    check(
        get(&graph, path, &format!("eyJhbGciOiJub25lIn0.{claims}.")).await,
        "Access token validation failure.",
    );
    // Signed by another authority.
    let other = SimulatedAuthority::start(CLIENT_ID).await.unwrap();
    let foreign = other.issue_token_for_tests(&tid, GRAPH, &["Mail.Read"]);
    check(
        get(&graph, path, &foreign).await,
        "Access token validation failure.",
    );
    // Expired: a zero lifetime makes exp = iat.
    authority.set_token_lifetime(Duration::ZERO);
    let expired = authority.issue_token_for_tests(&tid, GRAPH, &["Mail.Read"]);
    authority.set_token_lifetime(Duration::from_secs(3599));
    check(
        get(&graph, path, &expired).await,
        "Lifetime validation failed, the token is expired.",
    );
    // Revoked: tokens issued before are refused, later ones served.
    assert_eq!(get(&graph, path, &good).await.status, 200);
    graph.revoke_issued_tokens();
    let revoked = get(&graph, path, &good).await;
    assert_eq!(revoked.status, 401);
    assert_eq!(revoked.code(), "InvalidAuthenticationToken");
    assert!(revoked
        .message()
        .contains("TokenIssuedBeforeRevocationTimestamp"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh = authority.issue_token_for_tests(&tid, GRAPH, &["Mail.Read"]);
    assert_eq!(get(&graph, path, &fresh).await.status, 200);
    // Every request was recorded, refused ones too, with their headers.
    let seen = graph.requests();
    assert_eq!(seen.len(), graph.request_count());
    assert!(seen[0].headers.iter().all(|(n, _)| n != "authorization"));
    assert!(seen[1]
        .headers
        .iter()
        .any(|(n, v)| n == "authorization" && v == "Bearer not-a-jwt"));
}

#[tokio::test]
async fn roles_are_checked_per_route() {
    let (authority, graph, tid) = setup(3).await;
    let calendars = authority.issue_token_for_tests(&tid, GRAPH, &["Calendars.ReadWrite"]);
    let answer = get(&graph, "/v1.0/users/alice@contoso.com/messages", &calendars).await;
    assert_eq!(
        (answer.status, answer.code(), answer.message()),
        (
            403,
            "ErrorAccessDenied".into(),
            "Access is denied. Check credentials and try again.".into()
        )
    );
    let answer = get(&graph, "/v1.0/users/alice@contoso.com", &calendars).await;
    assert_eq!(
        (answer.status, answer.code()),
        (403, "Authorization_RequestDenied".into())
    );
    let directory = authority.issue_token_for_tests(&tid, GRAPH, &["User.Read.All"]);
    let answer = get(
        &graph,
        "/v1.0/users/alice@contoso.com?$select=id,userPrincipalName",
        &directory,
    )
    .await;
    assert_eq!(answer.status, 200);
    let user = answer.json();
    let mut keys: Vec<&str> = user
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["@odata.context", "id", "userPrincipalName"]);
    // Mail.ReadBasic lists messages without their bodies, and no $value.
    let basic = authority.issue_token_for_tests(&tid, GRAPH, &["Mail.ReadBasic.All"]);
    let list = get(&graph, "/v1.0/users/alice@contoso.com/messages", &basic).await;
    let first = &list.json()["value"][0];
    assert!(first["subject"].is_string() && first.get("body").is_none());
    let id = first["id"].as_str().unwrap().to_owned();
    let value = get(
        &graph,
        &format!("/v1.0/users/alice@contoso.com/messages/{id}/$value"),
        &basic,
    )
    .await;
    assert_eq!(value.status, 403);
}

#[tokio::test]
async fn a_token_sees_only_its_own_tenant() {
    let (authority, graph, tid) = setup(1).await;
    let fabrikam = authority.consent("fabrikam.com");
    graph.add_user(&fabrikam, "bob@fabrikam.com");
    graph.add_messages(&fabrikam, "bob@fabrikam.com", 2);
    let token = authority.issue_token_for_tests(&tid, GRAPH, &["Mail.Read", "User.Read.All"]);
    let answer = get(&graph, "/v1.0/users/bob@fabrikam.com/messages", &token).await;
    assert_eq!(
        (answer.status, answer.code(), answer.message()),
        (
            404,
            "ErrorInvalidUser".into(),
            "The requested user 'bob@fabrikam.com' is invalid.".into()
        )
    );
    let answer = get(&graph, "/v1.0/users/bob%40fabrikam.com", &token).await;
    assert_eq!(
        (answer.status, answer.code()),
        (404, "Request_ResourceNotFound".into())
    );
    let theirs = authority.issue_token_for_tests(&fabrikam, GRAPH, &["Mail.Read"]);
    let answer = get(&graph, "/v1.0/users/bob@fabrikam.com/messages", &theirs).await;
    assert_eq!(answer.json()["value"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn users_are_addressed_by_upn_id_and_odata_key_in_any_case() {
    let (authority, graph, tid) = setup(2).await;
    let id = graph.add_user(&tid, "alice@contoso.com");
    let token = authority.issue_token_for_tests(&tid, GRAPH, &["Mail.Read"]);
    for target in [
        "/v1.0/users/alice%40contoso.com/messages".to_owned(),
        "/v1.0/users/ALICE@Contoso.com/messages".to_owned(),
        "/v1.0/users('alice@contoso.com')/messages".to_owned(),
        "/v1.0/users(%27alice%40contoso.com%27)/messages".to_owned(),
        format!("/v1.0/users/{id}/messages"),
        "/V1.0/Users/alice@contoso.com/Messages?%24top=5".to_owned(),
        "/v1.0/users/alice@contoso.com/mailFolders/Inbox/messages".to_owned(),
    ] {
        let answer = get(&graph, &target, &token).await;
        assert_eq!(answer.status, 200, "{target}: {}", answer.json());
        assert_eq!(
            answer.json()["value"].as_array().unwrap().len(),
            2,
            "{target}"
        );
    }
    // One message by id, percent-encoded or not; an unknown one.
    let id = graph.messages(&tid, "alice@contoso.com")[1]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let encoded = id.replace('=', "%3D");
    let answer = get(
        &graph,
        &format!("/v1.0/users/alice@contoso.com/messages/{encoded}"),
        &token,
    )
    .await;
    assert_eq!(answer.json()["subject"], "Message 2");
    let answer = get(
        &graph,
        "/v1.0/users/alice@contoso.com/messages/AAMkAGnope=",
        &token,
    )
    .await;
    assert_eq!(
        (answer.status, answer.code()),
        (404, "ErrorItemNotFound".into())
    );
    // Versions and segments Graph does not have.
    let answer = get(&graph, "/v2.0/users/alice@contoso.com/messages", &token).await;
    assert_eq!(answer.status, 400);
    assert!(answer.message().starts_with("Invalid version"));
    let answer = get(&graph, "/v1.0/users/alice@contoso.com/calendarz", &token).await;
    assert_eq!(
        (answer.status, answer.message()),
        (
            400,
            "Resource not found for the segment 'calendarz'.".into()
        )
    );
    let answer = send(
        &graph,
        "DELETE",
        "/v1.0/users/alice@contoso.com/messages",
        &[("Authorization", &format!("Bearer {token}"))],
        b"",
    )
    .await;
    assert_eq!(answer.status, 405);
}

#[tokio::test]
async fn batch_runs_each_step_with_the_batch_token() {
    let (authority, graph, tid) = setup(5).await;
    let token = authority.issue_token_for_tests(&tid, GRAPH, &["Mail.Read"]);
    let body = json!({"requests": [
        {"id": "1", "method": "GET", "url": "/users/alice@contoso.com/messages?$top=2", "headers": {}},
        {"id": "2", "method": "GET", "url": "users/alice%40contoso.com"},
    ]});
    let answer = post_json(&graph, "/v1.0/$batch", &token, &body).await;
    assert_eq!(answer.status, 200, "{}", answer.json());
    let responses = answer.json()["responses"].as_array().unwrap().clone();
    assert_eq!(responses.len(), 2);
    assert_eq!(
        (responses[0]["id"].clone(), responses[0]["status"].clone()),
        (json!("1"), json!(200))
    );
    assert_eq!(responses[0]["body"]["value"].as_array().unwrap().len(), 2);
    let link = responses[0]["body"]["@odata.nextLink"].as_str().unwrap();
    assert!(link.starts_with("https://graph.microsoft.com/v1.0/users/alice%40contoso.com/messages?%24top=2&%24skiptoken="));
    // The batch token has no directory role.
    assert_eq!(responses[1]["status"], 403);
    assert_eq!(
        responses[1]["body"]["error"]["code"],
        "Authorization_RequestDenied"
    );
    // The link from inside a batch works outside it.
    let next = get(&graph, &rebase(link), &token).await;
    assert_eq!(next.json()["value"][0]["subject"], "Message 3");
    // A batch counts as one request.
    assert_eq!(graph.request_count(), 2);

    let steps: Vec<Value> = (1..=21)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/users/alice@contoso.com/messages"}))
        .collect();
    let answer = post_json(&graph, "/v1.0/$batch", &token, &json!({"requests": steps})).await;
    assert_eq!(
        (answer.status, answer.code(), answer.message()),
        (
            400,
            "BadRequest".into(),
            "Number of batch request steps exceeds the maximum of 20.".into()
        )
    );
    let twice = json!({"requests": [
        {"id": "1", "method": "GET", "url": "/users/alice@contoso.com/messages"},
        {"id": "1", "method": "GET", "url": "/users/alice@contoso.com/messages"},
    ]});
    assert_eq!(
        post_json(&graph, "/v1.0/$batch", &token, &twice)
            .await
            .status,
        400
    );
    // The batch itself needs a token.
    let answer = send(
        &graph,
        "POST",
        "/v1.0/$batch",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(answer.status, 401);
}

#[tokio::test]
async fn value_streams_chunked_mime_of_the_set_size() {
    let (authority, graph, tid) = setup(1).await;
    graph.set_value_size(200_000);
    let token = authority.issue_token_for_tests(&tid, GRAPH, &["Mail.Read"]);
    let id = graph.messages(&tid, "alice@contoso.com")[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let auth = format!("Bearer {token}");
    let answer = send(
        &graph,
        "GET",
        &format!("/v1.0/users/alice@contoso.com/messages/{id}/$value"),
        // Never compressed.
        &[("Authorization", &auth), ("Accept-Encoding", "gzip")],
        b"",
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("text/plain"));
    assert_eq!(answer.header("content-length"), None);
    assert_eq!(answer.header("content-encoding"), None);
    let chunks = answer.chunks.as_ref().expect("chunked transfer encoding");
    assert!(chunks.iter().all(|c| *c <= 64 * 1024), "{chunks:?}");
    assert!(chunks.len() >= 4);
    assert_eq!(answer.body.len(), 200_000);
    assert_eq!(answer.body, value_bytes(&id, 200_000));
    assert_eq!(answer.body, graph.expected_value(&id));
    assert!(answer
        .body
        .starts_with(format!("Message-ID: <{id}@").as_bytes()));
}

#[tokio::test]
async fn creating_a_message_answers_201_with_its_location() {
    let (authority, graph, tid) = setup(0).await;
    let user_id = graph.add_user(&tid, "alice@contoso.com");
    let token = authority.issue_token_for_tests(&tid, GRAPH, &["Mail.ReadWrite"]);
    let draft = json!({
        "subject": "Quarterly numbers",
        "body": {"contentType": "text", "content": "See attached."},
        "toRecipients": [{"emailAddress": {"address": "bob@fabrikam.com"}}],
    });
    let answer = post_json(
        &graph,
        "/v1.0/users/alice%40contoso.com/messages",
        &token,
        &draft,
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.json());
    let created = answer.json();
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["subject"], "Quarterly numbers");
    assert_eq!(created["isDraft"], true);
    assert_eq!(
        answer.header("location").unwrap(),
        format!("https://graph.microsoft.com/v1.0/users/{user_id}/messages/{id}")
    );
    let stored = graph.messages(&tid, "alice@contoso.com");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["id"], id);
    // Drafts are in /messages but not in the inbox.
    let inbox = get(
        &graph,
        "/v1.0/users/alice@contoso.com/mailFolders/inbox/messages",
        &token,
    )
    .await;
    assert!(inbox.json()["value"].as_array().unwrap().is_empty());
    // Strict bodies, and the write role.
    let answer = post_json(
        &graph,
        "/v1.0/users/alice@contoso.com/messages",
        &token,
        &json!({"subjekt": "x"}),
    )
    .await;
    assert_eq!(
        (answer.status, answer.code()),
        (400, "RequestBodyRead".into())
    );
    let read_only = authority.issue_token_for_tests(&tid, GRAPH, &["Mail.Read"]);
    let answer = post_json(
        &graph,
        "/v1.0/users/alice@contoso.com/messages",
        &read_only,
        &draft,
    )
    .await;
    assert_eq!(answer.status, 403);
}

#[tokio::test]
async fn send_mail_answers_202_and_is_recorded() {
    let (authority, graph, tid) = setup(0).await;
    let token = authority.issue_token_for_tests(&tid, GRAPH, &["Mail.Send"]);
    let mail = json!({
        "message": {
            "subject": "Hello",
            "body": {"contentType": "text", "content": "Hi Bob"},
            "toRecipients": [{"emailAddress": {"address": "bob@fabrikam.com"}}],
        },
        "saveToSentItems": false,
    });
    let answer = post_json(
        &graph,
        "/v1.0/users/alice@contoso.com/sendMail",
        &token,
        &mail,
    )
    .await;
    assert_eq!(answer.status, 202);
    assert!(answer.body.is_empty());
    let sent = graph.sent_mail(&tid, "alice@contoso.com");
    assert_eq!(sent, vec![mail["message"].clone()]);
    // Without a JSON content type, no recipients, no Mail.Send.
    let auth = format!("Bearer {token}");
    let answer = send(
        &graph,
        "POST",
        "/v1.0/users/alice@contoso.com/sendMail",
        &[("Authorization", &auth), ("Content-Type", "text/plain")],
        mail.to_string().as_bytes(),
    )
    .await;
    assert_eq!((answer.status, answer.code()), (400, "BadRequest".into()));
    let nobody = json!({"message": {"subject": "Hello"}});
    let answer = post_json(
        &graph,
        "/v1.0/users/alice@contoso.com/sendMail",
        &token,
        &nobody,
    )
    .await;
    assert_eq!(
        (answer.status, answer.code()),
        (400, "ErrorInvalidRecipients".into())
    );
    let reader = authority.issue_token_for_tests(&tid, GRAPH, &["Mail.ReadWrite"]);
    let answer = post_json(
        &graph,
        "/v1.0/users/alice@contoso.com/sendMail",
        &reader,
        &mail,
    )
    .await;
    assert_eq!(
        (answer.status, answer.code()),
        (403, "ErrorAccessDenied".into())
    );
    assert_eq!(graph.sent_mail(&tid, "alice@contoso.com").len(), 1);
}

#[tokio::test]
async fn json_is_gzipped_when_asked() {
    let (authority, graph, tid) = setup(3).await;
    let token = authority.issue_token_for_tests(&tid, GRAPH, &["Mail.Read"]);
    let auth = format!("Bearer {token}");
    let answer = send(
        &graph,
        "GET",
        "/v1.0/users/alice@contoso.com/messages",
        &[
            ("Authorization", &auth),
            ("Accept-Encoding", "deflate, gzip;q=0.8"),
        ],
        b"",
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-encoding"), Some("gzip"));
    let mut text = String::new();
    flate2::read::GzDecoder::new(answer.body.as_slice())
        .read_to_string(&mut text)
        .unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["value"].as_array().unwrap().len(), 3);
    // Errors too; not without asking.
    let answer = send(
        &graph,
        "GET",
        "/v1.0/users/x/messages",
        &[("Accept-Encoding", "gzip")],
        b"",
    )
    .await;
    assert_eq!(
        (answer.status, answer.header("content-encoding")),
        (401, Some("gzip"))
    );
    let plain = get(&graph, "/v1.0/users/alice@contoso.com/messages", &token).await;
    assert_eq!(plain.header("content-encoding"), None);
}

#[tokio::test]
async fn pushed_statuses_come_first_with_retry_after() {
    let (authority, graph, tid) = setup(1).await;
    let token = authority.issue_token_for_tests(&tid, GRAPH, &["Mail.Read"]);
    graph.push_status(429, Some(7), 1);
    graph.push_status(503, None, 1);
    let path = "/v1.0/users/alice@contoso.com/messages";
    let throttled = get(&graph, path, &token).await;
    assert_eq!(
        (throttled.status, throttled.code()),
        (429, "TooManyRequests".into())
    );
    assert_eq!(throttled.header("retry-after"), Some("7"));
    // Before authentication: no token needed to be throttled.
    let unavailable = send(&graph, "GET", path, &[], b"").await;
    assert_eq!(
        (unavailable.status, unavailable.code()),
        (503, "ServiceUnavailable".into())
    );
    assert_eq!(unavailable.header("retry-after"), None);
    assert_eq!(get(&graph, path, &token).await.status, 200);
    assert_eq!(graph.request_count(), 3);
    let seen = graph.requests();
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path, path);
    assert_eq!(seen[0].query, None);
}

#[tokio::test]
async fn bodies_over_4_mib_are_refused() {
    let (authority, graph, tid) = setup(0).await;
    let token = authority.issue_token_for_tests(&tid, GRAPH, &["Mail.ReadWrite"]);
    let auth = format!("Bearer {token}");
    let big = vec![b' '; 4 * 1024 * 1024 + 1];
    let answer = send(
        &graph,
        "POST",
        "/v1.0/users/alice@contoso.com/messages",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &big,
    )
    .await;
    assert_eq!(answer.status, 413);
}
