//! `tokenbroker token` and `tokenbroker check --online`, run as processes
//! against the simulated authority.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{claims, Fixture};
use std::process::Output;

async fn tokenbroker(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tokenbroker"))
            .args(&args)
            .output()
            .expect("run tokenbroker")
    })
    .await
    .unwrap()
}

fn args(list: &[&str], f: &Fixture) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
    v.push("--config".into());
    v.push(f.config_path.display().to_string());
    v
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const TENANTS: &str = "[[tenants]]\nname = \"contoso\"\nid = \"contoso.onmicrosoft.com\"\nrequired_permissions = [\"Mail.ReadWrite\"]\n\
[[tenants]]\nname = \"fabrikam\"\nid = \"fabrikam.com\"\n";

#[tokio::test(flavor = "multi_thread")]
async fn token_prints_the_token_alone_on_stdout() {
    let f = Fixture::new(TENANTS).await;
    let tid = f.sim.consent("contoso.onmicrosoft.com");
    let out = tokenbroker(args(&["token", "--tenant", "contoso"], &f)).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let token = stdout.trim_end();
    assert_eq!(stdout.lines().count(), 1, "the token alone: {stdout}");
    assert_eq!(claims(token)["tid"], tid.as_str());
    assert!(
        text(&out.stderr).contains("expires ") && text(&out.stderr).contains("(in 35"),
        "{}",
        text(&out.stderr)
    );

    let out = tokenbroker(args(
        &[
            "token",
            "--tenant",
            "contoso",
            "--json",
            "--resource",
            "https://outlook.office365.com",
        ],
        &f,
    ))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["tenant_id"], "contoso.onmicrosoft.com");
    assert_eq!(body["resource"], "https://outlook.office365.com");
    assert!(body["expires_in"].as_u64().is_some_and(|s| s > 3500));
    assert!(body["expires_on"].as_u64().is_some());
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["aud"],
        "https://outlook.office365.com"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn token_failures_say_what_and_exit_nonzero() {
    let f = Fixture::new(TENANTS).await;
    f.sim.add_unconsented_tenant("contoso.onmicrosoft.com");
    let out = tokenbroker(args(&["token", "--tenant", "contoso"], &f)).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("AADSTS700016")
            && err.contains("correlation id")
            && err.contains("consent-url"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    let out = tokenbroker(args(&["token", "--tenant", "../x"], &f)).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("tenant \"../x\""),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_online_reports_each_tenant() {
    let f = Fixture::new(TENANTS).await;
    f.sim.consent("contoso.onmicrosoft.com");
    f.sim.consent("fabrikam.com");
    let out = tokenbroker(args(&["check", "--online"], &f)).await;
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("tenant contoso (contoso.onmicrosoft.com): ok"),
        "{stdout}"
    );
    assert!(
        stdout.contains("tenant fabrikam (fabrikam.com): ok"),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("ok"));

    // One tenant without consent, one without a required permission.
    let f = Fixture::new(TENANTS).await;
    f.sim.consent("contoso.onmicrosoft.com");
    f.sim.add_unconsented_tenant("fabrikam.com");
    f.sim.set_roles(&["Calendars.Read"]);
    let out = tokenbroker(args(&["check", "--online"], &f)).await;
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("tenant contoso (contoso.onmicrosoft.com): FAILED: missing permission(s) Mail.ReadWrite"), "{stdout}");
    assert!(
        stdout.contains("tenant fabrikam (fabrikam.com): FAILED (AADSTS700016)"),
        "{stdout}"
    );
    assert!(stdout.contains("consent-url"), "{stdout}");
    assert!(
        text(&out.stderr).contains("2 of 2 tenant(s) failed"),
        "{}",
        text(&out.stderr)
    );

    // An unregistered certificate: the remedy names the upload.
    let f = Fixture::new(TENANTS).await;
    f.sim.consent("contoso.onmicrosoft.com");
    f.sim.consent("fabrikam.com");
    f.sim.clear_certificates();
    let out = tokenbroker(args(&["check", "--online"], &f)).await;
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("FAILED (AADSTS700027)") && stdout.contains("upload it"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_standard_proxy_variables_are_honoured() {
    let f = Fixture::new(TENANTS).await;
    f.sim.consent("contoso.onmicrosoft.com");
    // A second authority stands in for the proxy: it counts what reaches it.
    let proxy = entra_sim::SimulatedAuthority::start(common::CLIENT_ID)
        .await
        .unwrap();
    let run = |no_proxy: Option<&'static str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tokenbroker"));
        command
            .args(args(&["token", "--tenant", "contoso"], &f))
            .env("HTTP_PROXY", proxy.url())
            .env("http_proxy", proxy.url())
            .env_remove("NO_PROXY")
            .env_remove("no_proxy");
        if let Some(value) = no_proxy {
            command.env("NO_PROXY", value);
        }
        command
    };
    let mut via_proxy = run(None);
    let out = tokio::task::spawn_blocking(move || via_proxy.output().unwrap())
        .await
        .unwrap();
    assert!(
        proxy.total_requests() >= 1,
        "the request went through the proxy"
    );
    assert!(
        !out.status.success(),
        "the stand-in proxy refuses (wrong audience)"
    );
    let mut direct = run(Some("127.0.0.1"));
    let before = proxy.total_requests();
    let out = tokio::task::spawn_blocking(move || direct.output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        proxy.total_requests(),
        before,
        "NO_PROXY bypasses the proxy"
    );
}
