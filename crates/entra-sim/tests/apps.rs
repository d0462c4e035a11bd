//! Several app registrations on one simulated authority: the request's
//! `client_id` (and its assertion's `iss`/`sub`) select the app; each app
//! has its own certificates, consents, roles and counts, as in Entra.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_lc_rs::signature::RsaKeyPair;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use entra_sim::{SimulatedAuthority, SimulatedGraph};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;

use common::{assertion, credential, request};

const APP_A: &str = "11111111-2222-3333-4444-555555555555";
const APP_B: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
const GRAPH: &str = "https://graph.microsoft.com";

/// Raw HTTP/1.1 on its own connection; returns status and body.
async fn exchange(base: &str, head: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let addr = base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = head.replace("{addr}", &addr);
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status_line = String::from_utf8(raw[..split].to_vec()).unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    (status, raw[split + 4..].to_vec())
}

/// A token of `client_id` for `tenant`, its assertion signed with `key`.
async fn token(
    sim: &SimulatedAuthority,
    client_id: &str,
    (key, cert): &(RsaKeyPair, Vec<u8>),
    tenant: &str,
) -> String {
    let jwt = assertion(client_id, key, cert, &sim.token_url(tenant));
    let (status, body) = request(sim, client_id, tenant, &jwt).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

fn claims(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn refusal(answer: &(u16, Value)) -> (u16, &str, Option<u64>) {
    (
        answer.0,
        answer.1["error"].as_str().unwrap(),
        answer.1["error_codes"][0].as_u64(),
    )
}

/// Two apps, each with its own certificate, consented in `contoso.com`.
async fn two_apps() -> (
    SimulatedAuthority,
    (RsaKeyPair, Vec<u8>),
    (RsaKeyPair, Vec<u8>),
    String,
) {
    let sim = SimulatedAuthority::start(APP_A).await.unwrap();
    sim.add_app(APP_B);
    let a = credential();
    let b = credential();
    sim.register_certificate(&a.1).unwrap();
    sim.register_certificate_for(APP_B, &b.1).unwrap();
    let tid = sim.consent("contoso.com");
    assert_eq!(sim.consent_for(APP_B, "contoso.com"), tid);
    (sim, a, b, tid)
}

#[tokio::test]
async fn two_apps_over_one_tenant_get_tokens_with_their_own_appid_and_roles() {
    let (sim, a, b, tid) = two_apps().await;
    sim.set_roles(&["Mail.ReadWrite"]);
    sim.set_roles_for(APP_B, &["Mail.Read", "User.Read.All"]);

    let token_a = claims(&token(&sim, APP_A, &a, "contoso.com").await);
    let token_b = claims(&token(&sim, APP_B, &b, &tid).await);
    assert_eq!(
        (&token_a["appid"], &token_a["azp"], &token_a["roles"]),
        (&json!(APP_A), &json!(APP_A), &json!(["Mail.ReadWrite"]))
    );
    assert_eq!(
        (&token_b["appid"], &token_b["azp"], &token_b["roles"]),
        (
            &json!(APP_B),
            &json!(APP_B),
            &json!(["Mail.Read", "User.Read.All"])
        )
    );
    assert_eq!(token_a["tid"], tid.as_str());
    assert_eq!(token_b["tid"], tid.as_str());
    // The single-app API is the first app's: set_roles did not touch B.
    sim.set_roles(&["Mail.Send"]);
    let again_b = claims(&token(&sim, APP_B, &b, "contoso.com").await);
    assert_eq!(again_b["roles"], json!(["Mail.Read", "User.Read.All"]));
}

#[tokio::test]
async fn app_b_presenting_app_a_certificate_is_refused_700027() {
    let (sim, a, b, _) = two_apps().await;
    let url = sim.token_url("contoso.com");
    // B's own claims, signed with the certificate registered on A.
    let jwt = assertion(APP_B, &a.0, &a.1, &url);
    let answer = request(&sim, APP_B, "contoso.com", &jwt).await;
    assert_eq!(
        refusal(&answer),
        (401, "invalid_client", Some(700_027)),
        "{}",
        answer.1
    );
    let text = answer.1["error_description"].as_str().unwrap();
    assert!(
        text.contains(&format!("configured keys for app Id '{APP_B}'")),
        "{text}"
    );
    // Signed with B's certificate but naming A in `iss`/`sub`: refused, the
    // assertion must be of the app the `client_id` names.
    let jwt = assertion(APP_A, &b.0, &b.1, &url);
    let answer = request(&sim, APP_B, "contoso.com", &jwt).await;
    assert_eq!(refusal(&answer), (401, "invalid_client", Some(700_021)));
    // A itself still gets its token with that certificate.
    token(&sim, APP_A, &a, "contoso.com").await;
}

#[tokio::test]
async fn a_tenant_consented_for_a_only_refuses_b_with_700016() {
    let (sim, a, b, _) = two_apps().await;
    let fabrikam = sim.consent("fabrikam.com");
    token(&sim, APP_A, &a, "fabrikam.com").await;
    let jwt = assertion(APP_B, &b.0, &b.1, &sim.token_url("fabrikam.com"));
    let answer = request(&sim, APP_B, "fabrikam.com", &jwt).await;
    assert_eq!(
        refusal(&answer),
        (400, "unauthorized_client", Some(700_016))
    );
    let text = answer.1["error_description"].as_str().unwrap();
    assert!(
        text.starts_with(&format!(
            "AADSTS700016: Application with identifier '{APP_B}' was not found in the directory 'fabrikam.com'."
        )),
        "{text}"
    );
    // Consent for B in the same tenant: the same tenant GUID, then a token.
    assert_eq!(sim.consent_for(APP_B, "fabrikam.com"), fabrikam);
    token(&sim, APP_B, &b, "fabrikam.com").await;
}

#[tokio::test]
async fn an_unknown_client_id_is_refused_700016_as_entra_words_it() {
    let (sim, a, _, _) = two_apps().await;
    let stranger = "99999999-8888-7777-6666-555555555555";
    let jwt = assertion(stranger, &a.0, &a.1, &sim.token_url("contoso.com"));
    let answer = request(&sim, stranger, "contoso.com", &jwt).await;
    assert_eq!(
        refusal(&answer),
        (400, "unauthorized_client", Some(700_016))
    );
    let text = answer.1["error_description"].as_str().unwrap();
    assert!(
        text.starts_with(&format!(
            "AADSTS700016: Application with identifier '{stranger}' was not found in the directory 'contoso.com'."
        )),
        "{text}"
    );
    assert_eq!(sim.refusals().last().unwrap().code, 700_016);
}

#[tokio::test]
async fn requests_are_counted_per_app() {
    let (sim, a, b, tid) = two_apps().await;
    token(&sim, APP_A, &a, "contoso.com").await;
    token(&sim, APP_B, &b, "contoso.com").await;
    token(&sim, APP_B, &b, "CONTOSO.com").await;
    token(&sim, APP_B, &b, &tid).await;
    // A refused request counts for the app it named.
    let jwt = assertion(APP_B, &a.0, &a.1, &sim.token_url("contoso.com"));
    assert_eq!(request(&sim, APP_B, "contoso.com", &jwt).await.0, 401);

    assert_eq!(sim.requests_for(APP_A, "contoso.com"), 1);
    assert_eq!(sim.requests_for(APP_B, "contoso.com"), 3);
    assert_eq!(sim.requests_for(APP_B, &tid), 1);
    assert_eq!(sim.requests_for(APP_B, "fabrikam.com"), 0);
    assert_eq!(sim.requests_for("no-such-app", "contoso.com"), 0);
    // `requests(tenant)` counts every request for the tenant, as before.
    assert_eq!(sim.requests("contoso.com"), 4);
    assert_eq!(sim.total_requests(), 5);
}

/// A Graph request with `token`; returns status and the error code, if any.
async fn graph_get(graph: &SimulatedGraph, method: &str, path: &str, token: &str) -> (u16, String) {
    let body = if method == "POST" {
        json!({"message": {"subject": "Hi", "toRecipients": [
            {"emailAddress": {"address": "bob@contoso.com"}}]}})
        .to_string()
    } else {
        String::new()
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {{addr}}\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    let (status, answer) = exchange(&graph.url(), &head, body.as_bytes()).await;
    let code = serde_json::from_slice::<Value>(&answer)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, code)
}

#[tokio::test]
async fn the_graph_stand_in_accepts_app_b_token_with_b_roles_and_refuses_a_route_b_lacks() {
    let (sim, a, b, tid) = two_apps().await;
    sim.set_roles(&["Mail.Send"]);
    sim.set_roles_for(APP_B, &["Mail.Read"]);
    let graph = SimulatedGraph::start(&sim).await.unwrap();
    graph.add_messages(&tid, "alice@contoso.com", 3);
    let token_a = token(&sim, APP_A, &a, "contoso.com").await;
    let token_b = token(&sim, APP_B, &b, "contoso.com").await;
    assert_eq!(claims(&token_b)["aud"], GRAPH);

    let messages = "/v1.0/users/alice%40contoso.com/messages";
    let send = "/v1.0/users/alice%40contoso.com/sendMail";
    // B may read mail but not send it.
    assert_eq!(
        graph_get(&graph, "GET", messages, &token_b).await,
        (200, String::new())
    );
    assert_eq!(
        graph_get(&graph, "POST", send, &token_b).await,
        (403, "ErrorAccessDenied".to_owned())
    );
    // A, the other way round.
    assert_eq!(
        graph_get(&graph, "GET", messages, &token_a).await,
        (403, "ErrorAccessDenied".to_owned())
    );
    assert_eq!(
        graph_get(&graph, "POST", send, &token_a).await,
        (202, String::new())
    );
    assert_eq!(graph.sent_mail(&tid, "alice@contoso.com").len(), 1);
}
