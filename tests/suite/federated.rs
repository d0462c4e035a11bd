//! Federated credentials against the simulated authority, which verifies a
//! federated assertion as Entra does (the issuer's signature, `iss`, `sub`,
//! `aud` = `api://AzureADTokenExchange`, time range; an unknown subject is
//! AADSTS70021): a Kubernetes-style token file, and a managed identity's
//! token from a simulated IMDS and App Service endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{Daemon, Fixture, Server, TESTER_SECRET};
use entra_sim::{FederatedIssuer, IdentityProtocol, ManagedIdentityEndpoint, FEDERATED_AUDIENCE};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const K8S: &str = "https://oidc.prod-aks.azure.com/cluster-1/";
const SUBJECT: &str = "system:serviceaccount:mail:tokenbroker";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn write_token(path: &Path, issuer: &FederatedIssuer, subject: &str, issued_at: u64) {
    let token = issuer.issue(
        subject,
        FEDERATED_AUDIENCE,
        issued_at,
        Duration::from_secs(3600),
    );
    // As kubelet does: a new file swapped in.
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, token).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn tid(answer: &common::HttpAnswer) -> String {
    let token = answer.json()["access_token"].as_str().unwrap().to_owned();
    common::claims(&token)["tid"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_file_is_read_for_every_assertion() {
    let issuer = FederatedIssuer::new(K8S).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("azure-identity-token");
    write_token(&token_file, &issuer, SUBJECT, now());
    let f = Fixture::with_credentials(
        &format!(
            "[[app.credentials]]\nfederated_token_file = \"{}\"\n",
            token_file.display()
        ),
        "",
    )
    .await;
    f.sim.clear_certificates();
    f.sim.trust_federated(&issuer, SUBJECT);
    let tenants: Vec<String> = (0..3)
        .map(|i| f.sim.consent(&format!("t{i}.example.com")))
        .collect();
    let server = Server::start(&f, |_, _| {}).await;

    let answer = server.token("t0.example.com", TESTER_SECRET).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(tid(&answer), tenants[0]);

    // Rotated to a token about a subject the app does not trust: the very
    // next request presents it (and Entra's refusal names it).
    write_token(
        &token_file,
        &issuer,
        "system:serviceaccount:other:intruder",
        now(),
    );
    let answer = server.token("t1.example.com", TESTER_SECRET).await;
    assert_eq!(answer.status, 502, "{}", answer.body);
    assert_eq!(answer.json()["aadsts"], "AADSTS70021", "{}", answer.body);
    assert!(answer.body.contains("intruder"), "{}", answer.body);

    // Rotated back: the next request works again.
    write_token(&token_file, &issuer, SUBJECT, now());
    let answer = server.token("t2.example.com", TESTER_SECRET).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(tid(&answer), tenants[2]);

    // An expired token in the file: a clear error naming the file, and
    // nothing sent to Entra.
    let before = f.sim.total_requests();
    write_token(&token_file, &issuer, SUBJECT, now() - 7200);
    f.sim.consent("t3.example.com");
    let answer = server.token("t3.example.com", TESTER_SECRET).await;
    assert_ne!(answer.status, 200);
    let message = answer.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains(&token_file.display().to_string()) && message.contains("expired"),
        "{message}"
    );
    assert_eq!(f.sim.total_requests(), before);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn check_names_an_expired_token_file() {
    let issuer = FederatedIssuer::new(K8S).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    write_token(&token_file, &issuer, SUBJECT, now() - 7200);
    let config = dir.path().join("tokenbroker.toml");
    std::fs::write(
        &config,
        format!(
            "[app]\nclient_id = \"{}\"\n[[app.credentials]]\nfederated_token_file = \"token\"\n",
            common::CLIENT_ID
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenbroker"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("app.credentials[0].federated_token_file")
            && said.contains(&token_file.display().to_string())
            && said.contains("expired"),
        "{said}"
    );
}

/// The managed identity's token serves every tenant: one fetch for two
/// tenants; an endpoint outage while it is valid costs callers nothing.
/// Run as a real process: the App Service secret comes from its environment.
async fn managed_identity_as_a_federated_credential(protocol: IdentityProtocol) {
    let issuer = Arc::new(
        FederatedIssuer::new("https://login.microsoftonline.com/vendor-tenant/v2.0").unwrap(),
    );
    let endpoint = ManagedIdentityEndpoint::start(Arc::clone(&issuer), protocol.clone())
        .await
        .unwrap();
    let mi_client_id = "6a7b8c9d-0000-4000-8000-000000000001";
    let mi_object_id = "0f0f0f0f-1111-4222-8333-444455556666";
    endpoint.assign(mi_client_id, mi_object_id);
    // The broker renews a managed-identity token 5 minutes before it
    // expires: with 310 s of life, it is due for renewal 10 s after issue.
    endpoint.set_token_lifetime(Duration::from_secs(310));
    let (extra_keys, env) = match &protocol {
        IdentityProtocol::Imds => (String::new(), Vec::new()),
        IdentityProtocol::AppService { secret } => (
            ", protocol = \"app-service\", header_env = \"TB_TEST_MI_HEADER\"".to_owned(),
            vec![("TB_TEST_MI_HEADER", secret.clone())],
        ),
    };
    let f = Fixture::new("").await;
    f.sim.clear_certificates();
    f.sim.trust_federated(&issuer, mi_object_id);
    let a = f.sim.consent("contoso.onmicrosoft.com");
    let b = f.sim.consent("fabrikam.com");
    f.sim.consent("tailspin.com");
    let config = f.dir.path().join("mi.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_socket = \"admin.sock\"\n\
             [app]\nclient_id = \"{}\"\nauthority_host = \"{}\"\n\
             [[app.credentials]]\nfederated_managed_identity = {{ client_id = \"{mi_client_id}\", endpoint = \"{}\"{extra_keys} }}\n\
             [[accounts]]\nname = \"tester\"\nsecret_sha256 = \"{}\"\ntenants = [\"*\"]\n",
            common::CLIENT_ID,
            f.sim.url(),
            endpoint.url(),
            common::sha256_hex(TESTER_SECRET),
        ),
    )
    .unwrap();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let daemon = Daemon::spawn_with_env(&config, &env).await;
    let get = |tenant: &'static str| {
        let daemon = &daemon;
        async move {
            daemon
                .get(
                    &format!("/v1/token?tenant={tenant}"),
                    &[("Authorization", &format!("Bearer {TESTER_SECRET}"))],
                )
                .await
        }
    };
    for (tenant, expected) in [("contoso.onmicrosoft.com", &a), ("fabrikam.com", &b)] {
        let answer = get(tenant).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(&tid(&answer), expected);
    }
    assert_eq!(
        endpoint.requests(),
        1,
        "one managed-identity token for both tenants"
    );

    // Past the renewal point, the endpoint down: the renewal fails, and the
    // still-valid token serves the caller.
    // (Whole seconds on both sides: 12 s is past the renewal point however
    // the issue time falls within its second.)
    tokio::time::sleep(Duration::from_secs(12)).await;
    endpoint.set_down(true);
    let answer = get("tailspin.com").await;
    assert_eq!(
        answer.status, 200,
        "outage, but the MI token is valid: {}",
        answer.body
    );
    assert_eq!(
        endpoint.requests(),
        2,
        "the renewal was tried, and the cached token used"
    );

    // The status names the credential by kind.
    let status = common::admin(&f.dir.path().join("admin.sock"), "GET", "/admin/status").await;
    let credential = &status.json()["credentials"][0];
    assert_eq!(credential["kind"], "federated_managed_identity");
    assert_eq!(
        credential["thumbprint"],
        format!("federated:managed-identity:{mi_client_id}")
    );
    assert!(credential["not_after"].is_null(), "{credential}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_managed_identity_from_imds() {
    managed_identity_as_a_federated_credential(IdentityProtocol::Imds).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_managed_identity_from_app_service() {
    managed_identity_as_a_federated_credential(IdentityProtocol::AppService {
        secret: "mi-header-secret".into(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_federated_credential_falls_back_to_the_next() {
    let issuer = FederatedIssuer::new(K8S).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    // A subject the app does not trust: AADSTS70021.
    write_token(
        &token_file,
        &issuer,
        "system:serviceaccount:other:sa",
        now(),
    );
    let mi_issuer =
        Arc::new(FederatedIssuer::new("https://login.microsoftonline.com/v/v2.0").unwrap());
    let endpoint = ManagedIdentityEndpoint::start(Arc::clone(&mi_issuer), IdentityProtocol::Imds)
        .await
        .unwrap();
    endpoint.assign_system("system-assigned-object-id");
    let f = Fixture::with_credentials(
        &format!(
            "[[app.credentials]]\nfederated_token_file = \"{}\"\n\
             [[app.credentials]]\nfederated_managed_identity = {{ endpoint = \"{}\" }}\n",
            token_file.display(),
            endpoint.url()
        ),
        "",
    )
    .await;
    f.sim.trust_federated(&issuer, SUBJECT);
    f.sim
        .trust_federated(&mi_issuer, "system-assigned-object-id");
    f.sim.consent("contoso.onmicrosoft.com");
    let server = Server::start(&f, |_, _| {}).await;
    let answer = server.token("contoso.onmicrosoft.com", TESTER_SECRET).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        f.sim.total_requests(),
        2,
        "refused once, then the managed identity"
    );
    let refusals = f.sim.refusals();
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].code, 70_021);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_token_files_from_one_issuer_keep_apart() {
    let issuer = FederatedIssuer::new(K8S).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    write_token(&one, &issuer, "system:serviceaccount:other:sa", now());
    write_token(&two, &issuer, SUBJECT, now());
    let f = Fixture::with_credentials(
        &format!(
            "[[app.credentials]]\nfederated_token_file = \"{}\"\n\
             [[app.credentials]]\nfederated_token_file = \"{}\"\n",
            one.display(),
            two.display()
        ),
        "",
    )
    .await;
    f.sim.clear_certificates();
    f.sim.trust_federated(&issuer, SUBJECT);
    f.sim.consent("contoso.onmicrosoft.com");
    let server = Server::start(&f, |_, _| {}).await;
    // The first is refused (70021) and remembered; the second, with the
    // same issuer, is still tried and works.
    let answer = server.token("contoso.onmicrosoft.com", TESTER_SECRET).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let status = server.app.broker().status();
    let ids: Vec<&str> = status
        .credentials
        .iter()
        .map(|c| c.thumbprint.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            format!("federated:{K8S}"),
            format!("federated:{K8S} (app.credentials[1])")
        ]
    );
    assert!(status.credentials[0].last_rejection.is_some());
    assert!(status.credentials[1].in_use);
    server.stop().await;
}
