//! Several app registrations in one broker (`[[apps]]`): each app has its
//! own client ID, certificate and consents at the simulated authority; the
//! cache, the status and reloads keep them apart; callers pick one with
//! `?app=`, the App Service `client_id` selector, or `X-Tokenbroker-App`.

use crate::common::{self, claims, sha256_hex, write_credential, Fixture, Server, CLIENT_ID};
use std::sync::Arc;

/// The second app registration's client ID.
pub const NOTIFY_ID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
/// Secrets of the accounts [`config`] writes.
pub const BOTH: &str = "tb_apps-both-secret-0123456789";
const MAIL_ONLY: &str = "tb_apps-mail-only-secret-01234567";
const NOTIFY_ONLY: &str = "tb_apps-notify-only-secret-012345";

/// The configuration: apps "mail" (the fixture's client ID and `app.crt`)
/// and, with `notify`, "notify" (`NOTIFY_ID`, `notify.crt`); tenant contoso;
/// accounts "both" (both apps, default tenant contoso), "mail-only" and,
/// with `notify`, "notify-only".
fn config(f: &Fixture, first: &str, notify: bool) -> String {
    let app = |name: &str, id: &str, cert: &str| {
        format!(
            "[[apps]]\nname = \"{name}\"\nclient_id = \"{id}\"\nauthority_host = \"{}\"\n\
             certificate = \"{cert}.crt\"\nprivate_key = \"{cert}.key\"\nrequest_timeout = \"2s\"\n",
            f.sim.url()
        )
    };
    let mut text = app(first, CLIENT_ID, "app");
    let mut apps = format!("\"{first}\"");
    if notify {
        text.push_str(&app("notify", NOTIFY_ID, "notify"));
        apps.push_str(", \"notify\"");
    }
    text.push_str(&format!(
        "[[tenants]]\nname = \"contoso\"\nid = \"contoso.onmicrosoft.com\"\n\
         [[accounts]]\nname = \"both\"\nsecret_sha256 = \"{}\"\ntenants = [\"contoso\"]\n\
         default_tenant = \"contoso\"\napps = [{apps}]\n\
         [[accounts]]\nname = \"mail-only\"\nsecret_sha256 = \"{}\"\ntenants = [\"contoso\"]\n",
        sha256_hex(BOTH),
        sha256_hex(MAIL_ONLY),
    ));
    if notify {
        text.push_str(&format!(
            "[[accounts]]\nname = \"notify-only\"\nsecret_sha256 = \"{}\"\ntenants = [\"contoso\"]\n\
             apps = [\"notify\"]\n",
            sha256_hex(NOTIFY_ONLY)
        ));
    }
    text
}

/// A broker serving two apps over contoso, which consented to both; each
/// app's token carries its own roles.
pub async fn two_app_broker() -> (Fixture, Server) {
    let f = Fixture::new("").await;
    let notify_der = write_credential(f.dir.path(), "notify");
    f.sim.add_app(NOTIFY_ID);
    f.sim
        .register_certificate_for(NOTIFY_ID, &notify_der)
        .unwrap();
    f.sim.set_roles_for(NOTIFY_ID, &["Mail.Send"]);
    f.sim.consent("contoso.onmicrosoft.com");
    f.sim.consent_for(NOTIFY_ID, "contoso.onmicrosoft.com");
    std::fs::write(&f.config_path, config(&f, "mail", true)).unwrap();
    let server = Server::start(&f, |_, _| {}).await;
    (f, server)
}

fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

/// The `appid` of the token `/v1/token?{query}` hands `secret`'s account.
async fn app_of(server: &Server, query: &str, secret: &str) -> (u16, Option<String>) {
    let answer = server
        .get(
            &format!("/v1/token?{query}"),
            &[("Authorization", &bearer(secret))],
        )
        .await;
    let appid = (answer.status == 200).then(|| {
        claims(answer.json()["access_token"].as_str().unwrap())["appid"]
            .as_str()
            .unwrap()
            .to_owned()
    });
    (answer.status, appid)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_apps_over_one_tenant_each_get_their_own_token() {
    let (f, server) = two_app_broker().await;
    let tenant = "contoso.onmicrosoft.com";
    // The account's first app by default; ?app= picks another it may use.
    let (status, appid) = app_of(&server, "tenant=contoso", BOTH).await;
    assert_eq!((status, appid.as_deref()), (200, Some(CLIENT_ID)));
    let (status, appid) = app_of(&server, "tenant=contoso&app=notify", BOTH).await;
    assert_eq!((status, appid.as_deref()), (200, Some(NOTIFY_ID)));
    // Each app's token is cached apart: asked again, nothing goes upstream.
    let upstream = (
        f.sim.requests_for(CLIENT_ID, tenant),
        f.sim.requests_for(NOTIFY_ID, tenant),
    );
    assert_eq!(upstream, (1, 1), "one request per app (prefetch included)");
    app_of(&server, "tenant=contoso&app=notify", BOTH).await;
    app_of(&server, "tenant=contoso&app=mail", BOTH).await;
    assert_eq!(
        (
            f.sim.requests_for(CLIENT_ID, tenant),
            f.sim.requests_for(NOTIFY_ID, tenant)
        ),
        upstream
    );
    // An account limited to one app gets that one, and no other.
    let (status, appid) = app_of(&server, "tenant=contoso", NOTIFY_ONLY).await;
    assert_eq!((status, appid.as_deref()), (200, Some(NOTIFY_ID)));
    let refused = server
        .get(
            "/v1/token?tenant=contoso&app=notify",
            &[("Authorization", &bearer(MAIL_ONLY))],
        )
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.body.contains("may not use app \\\"notify\\\""),
        "{}",
        refused.body
    );
    let unknown = server
        .get(
            "/v1/token?tenant=contoso&app=gov",
            &[("Authorization", &bearer(BOTH))],
        )
        .await;
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    assert!(unknown.body.contains("app \\\"gov\\\" is not configured"));
    // The status has a row per app, each with its own roles.
    let rows = server
        .app
        .broker()
        .tenants(Some("contoso"))
        .unwrap()
        .tenants;
    let apps: Vec<(&str, Option<Vec<String>>)> = rows
        .iter()
        .map(|r| {
            (
                r.app.as_str(),
                r.token.as_ref().and_then(|t| t.roles.clone()),
            )
        })
        .collect();
    assert_eq!(apps.len(), 2, "{apps:?}");
    assert_eq!(apps[1], ("notify", Some(vec!["Mail.Send".to_owned()])));
    assert_eq!(apps[0].0, "mail");
    // A token file names its app the same way (`[[token_files]]` `app`).
    let for_file = server
        .app
        .broker()
        .token_for_file("contoso", None, Some("notify"))
        .await
        .unwrap();
    assert_eq!(
        claims(for_file.grant.token.access_token.expose())["appid"],
        NOTIFY_ID
    );
    // Per-tenant metrics carry the app.
    let metrics = server.metrics().encode();
    for app in ["mail", "notify"] {
        let series = format!(
            "tokenbroker_tenant_token_expiry_timestamp_seconds{{app=\"{app}\",tenant=\"contoso\"}}"
        );
        assert!(metrics.contains(&series), "{series}: {metrics}");
        let consent = format!(
            "tokenbroker_tenant_consent{{app=\"{app}\",state=\"granted\",tenant=\"contoso\"}} 1"
        );
        assert!(metrics.contains(&consent), "{consent}: {metrics}");
    }
    // And each credential is listed under its app.
    let status = server.app.broker().status();
    let owners: Vec<&str> = status.credentials.iter().map(|c| c.app.as_str()).collect();
    assert_eq!(owners, ["mail", "notify"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn msi_client_id_selects_the_app_or_the_tenant() {
    let (_f, server) = two_app_broker().await;
    let msi = |selector: &str| {
        format!("/msi/token?api-version=2019-08-01&resource=https://graph.microsoft.com{selector}")
    };
    for (selector, app) in [
        ("", CLIENT_ID),
        ("&client_id=contoso", CLIENT_ID),
        (&*format!("&client_id={NOTIFY_ID}"), NOTIFY_ID),
        (
            &*format!("&client_id={}", NOTIFY_ID.to_uppercase()),
            NOTIFY_ID,
        ),
    ] {
        let answer = server
            .get(&msi(selector), &[("X-IDENTITY-HEADER", BOTH)])
            .await;
        assert_eq!(answer.status, 200, "{selector}: {}", answer.body);
        let body = answer.json();
        assert_eq!(body["client_id"], app, "{selector}");
        let token = claims(body["access_token"].as_str().unwrap());
        assert_eq!(token["appid"], app, "{selector}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_legacy_app_file_and_reloads_that_add_and_remove_an_app() {
    // The fixture's file has a lone [app]: the app named "default".
    let f =
        Fixture::new("[[tenants]]\nname = \"contoso\"\nid = \"contoso.onmicrosoft.com\"\n").await;
    let notify_der = write_credential(f.dir.path(), "notify");
    f.sim.add_app(NOTIFY_ID);
    f.sim
        .register_certificate_for(NOTIFY_ID, &notify_der)
        .unwrap();
    f.sim.consent("contoso.onmicrosoft.com");
    f.sim.consent_for(NOTIFY_ID, "contoso.onmicrosoft.com");
    let broker = f.broker();
    let issued = common::token(&broker, "contoso", None).await.unwrap();
    assert_eq!(issued.target.app.name.as_str(), "default");
    assert_eq!(
        claims(issued.grant.token.access_token.expose())["appid"],
        CLIENT_ID
    );
    let tenant = "contoso.onmicrosoft.com";
    assert_eq!(f.sim.requests_for(CLIENT_ID, tenant), 1);

    // Reload: the same app (named "default" in [[apps]]) and a new one.
    let with_notify = Arc::new(
        tokenbroker::config::Config::parse(&config(&f, "default", true), &f.config_path).unwrap(),
    );
    let (read, _) =
        tokenbroker::credentials::CredentialSet::read(&with_notify, &f.config_path).unwrap();
    let applied = broker.apply((*with_notify).clone(), Some(read)).unwrap();
    assert!(!applied.cleared, "{applied:?}");
    let caller = broker.authenticate(Some(BOTH), None).unwrap();
    let kept = broker
        .token(&caller, Some("contoso"), None, None, None)
        .await
        .unwrap();
    assert_eq!(kept.grant.token.sha256, issued.grant.token.sha256, "kept");
    let notify = broker
        .token(&caller, Some("contoso"), None, Some("notify"), None)
        .await
        .unwrap();
    assert_eq!(
        claims(notify.grant.token.access_token.expose())["appid"],
        NOTIFY_ID
    );
    assert_eq!(
        (
            f.sim.requests_for(CLIENT_ID, tenant),
            f.sim.requests_for(NOTIFY_ID, tenant)
        ),
        (1, 1),
        "the kept app asked nothing more upstream"
    );
    let before = broker.cache_entries();

    // Reload without "notify": its token goes, the other stays.
    let without =
        tokenbroker::config::Config::parse(&config(&f, "default", false), &f.config_path).unwrap();
    let (read, _) =
        tokenbroker::credentials::CredentialSet::read(&without, &f.config_path).unwrap();
    let applied = broker.apply(without, Some(read)).unwrap();
    assert_eq!(applied.dropped, 1, "{applied:?}");
    assert_eq!(broker.cache_entries(), before - 1);
    let caller = broker.authenticate(Some(BOTH), None).unwrap();
    let refused = broker
        .token(&caller, Some("contoso"), None, Some("notify"), None)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("not configured"), "{refused}");
    let kept = broker
        .token(&caller, Some("contoso"), None, None, None)
        .await
        .unwrap();
    assert_eq!(kept.grant.token.sha256, issued.grant.token.sha256);
    assert_eq!(f.sim.requests_for(CLIENT_ID, tenant), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_are_validated_by_name() {
    let f = Fixture::new("").await;
    let parse = |text: &str| {
        tokenbroker::config::Config::parse(text, &f.config_path)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let good = config(&f, "mail", true);
    assert_eq!(parse(&good), Ok(()));
    let twice = good.replace("name = \"notify\"", "name = \"mail\"");
    let message = parse(&twice).unwrap_err();
    assert!(
        message.contains("apps[1].name: \"mail\" names two apps"),
        "{message}"
    );
    let same_id = good.replace(NOTIFY_ID, CLIENT_ID);
    let message = parse(&same_id).unwrap_err();
    assert!(message.contains("apps[1].client_id"), "{message}");
    let unknown = good.replace("apps = [\"notify\"]", "apps = [\"gov\"]");
    let message = parse(&unknown).unwrap_err();
    assert!(
        message.contains("accounts[2].apps: names app \"gov\", which is not configured; the apps are: mail, notify"),
        "{message}"
    );
    let both = format!(
        "[app]\nclient_id = \"{CLIENT_ID}\"\ncertificate = \"c\"\nprivate_key = \"k\"\n{good}"
    );
    let message = parse(&both).unwrap_err();
    assert!(
        message.contains("apps: is given together with [app]"),
        "{message}"
    );
    let bad_timeout = good.replacen("request_timeout = \"2s\"", "request_timeout = \"0s\"", 2);
    let message = parse(&bad_timeout).unwrap_err();
    assert!(message.contains("apps[0].request_timeout"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_carries_the_token_of_the_app_the_header_names() {
    let f = Fixture::new("").await;
    let notify_der = write_credential(f.dir.path(), "notify");
    f.sim.set_roles(&["Mail.ReadWrite"]);
    f.sim.add_app(NOTIFY_ID);
    f.sim
        .register_certificate_for(NOTIFY_ID, &notify_der)
        .unwrap();
    f.sim.set_roles_for(NOTIFY_ID, &["Mail.Send"]);
    let tid = f.sim.consent("contoso.onmicrosoft.com");
    f.sim.consent_for(NOTIFY_ID, "contoso.onmicrosoft.com");
    let graph = entra_sim::SimulatedGraph::start(&f.sim).await.unwrap();
    graph.add_user(&tid, "alice@contoso.com");
    graph.add_messages(&tid, "alice@contoso.com", 2);
    // Both apps send Graph requests to the stand-in; both accounts may
    // read alice's mail through the gateway.
    let rule = "[[accounts.graph]]\nmethods = [\"GET\"]\npaths = [\"/users/{mailbox}/messages\"]\n\
                mailboxes = [\"alice@contoso.com\"]\n";
    let text = config(&f, "mail", true)
        .replace(
            "request_timeout = \"2s\"\n",
            &format!(
                "request_timeout = \"2s\"\ngraph_host = \"{}\"\n",
                graph.url()
            ),
        )
        .replace(
            "[[accounts]]\nname = \"mail-only\"",
            &format!("{rule}[[accounts]]\nname = \"mail-only\""),
        )
        .replace(
            "[[accounts]]\nname = \"notify-only\"",
            &format!("{rule}[[accounts]]\nname = \"notify-only\""),
        );
    std::fs::write(&f.config_path, format!("{text}{rule}")).unwrap();
    let server = Server::start(&f, |_, _| {}).await;
    let url = format!(
        "http://{}/graph/contoso/v1.0/users/alice@contoso.com/messages",
        server.addr
    );
    let http = reqwest::Client::new();
    let get = |secret: &'static str, app: Option<&'static str>| {
        let mut request = http.get(&url).bearer_auth(secret);
        if let Some(app) = app {
            request = request.header("X-Tokenbroker-App", app);
        }
        request.send()
    };
    // The account's first app: mail, whose token may read mail.
    let answer = get(BOTH, None).await.unwrap();
    assert_eq!(answer.status(), 200);
    // notify's token may only send: Graph itself refuses it.
    let answer = get(BOTH, Some("notify")).await.unwrap();
    assert_eq!(answer.status(), 403);
    let seen = graph.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let appid = |i: usize| {
        let auth = &seen[i]
            .headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .unwrap()
            .1;
        claims(auth.trim_start_matches("Bearer "))["appid"].clone()
    };
    assert_eq!((appid(0), appid(1)), (CLIENT_ID.into(), NOTIFY_ID.into()));
    assert!(
        seen.iter()
            .all(|r| r.headers.iter().all(|(n, _)| n != "x-tokenbroker-app")),
        "the header stays with the broker"
    );
    // An app the account may not use, and one that does not exist: refused
    // before anything goes upstream.
    let answer = get(MAIL_ONLY, Some("notify")).await.unwrap();
    assert_eq!(answer.status(), 403);
    let body = answer.text().await.unwrap();
    assert!(body.contains("may not use app"), "{body}");
    let answer = get(BOTH, Some("gov")).await.unwrap();
    assert_eq!(answer.status(), 400);
    assert_eq!(graph.request_count(), 2);
    let metrics = server.metrics().encode();
    assert!(
        metrics.contains(
            "tokenbroker_graph_denied_total{account=\"mail-only\",reason=\"forbidden_app\"} 1"
        ),
        "{metrics}"
    );
    server.stop().await;
}
