//! The offline commands, run as an operator runs them: `consent-url`,
//! `secret new`, and the exit codes of docs/contract.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";

fn tokenbroker(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tokenbroker"))
        .args(args)
        .output()
        .expect("run tokenbroker")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

#[test]
fn consent_url_for_each_cloud() {
    let expected = [
        (
            "global",
            "https://login.microsoftonline.com",
            "https%3A%2F%2Fgraph.microsoft.com%2F.default",
        ),
        (
            "usgov",
            "https://login.microsoftonline.us",
            "https%3A%2F%2Fgraph.microsoft.us%2F.default",
        ),
        (
            "usgov-dod",
            "https://login.microsoftonline.us",
            "https%3A%2F%2Fdod-graph.microsoft.us%2F.default",
        ),
        (
            "china",
            "https://login.partner.microsoftonline.cn",
            "https%3A%2F%2Fmicrosoftgraph.chinacloudapi.cn%2F.default",
        ),
    ];
    for (cloud, host, scope) in expected {
        let output = tokenbroker(&[
            "consent-url",
            "--tenant",
            "contoso.onmicrosoft.com",
            "--client-id",
            CLIENT_ID,
            "--cloud",
            cloud,
            "--redirect-uri",
            "https://app.example.com/consent/done",
            "--state",
            "s t&a=te",
        ]);
        assert!(output.status.success(), "{cloud}: {}", stderr(&output));
        assert_eq!(
            stdout(&output).trim_end(),
            format!(
                "{host}/contoso.onmicrosoft.com/v2.0/adminconsent?client_id={CLIENT_ID}&scope={scope}\
                 &redirect_uri=https%3A%2F%2Fapp.example.com%2Fconsent%2Fdone&state=s+t%26a%3Dte"
            ),
            "{cloud}"
        );
    }
}

#[test]
fn consent_url_reads_client_id_and_cloud_from_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tokenbroker.toml");
    std::fs::write(
        &config,
        format!("[app]\nclient_id = \"{CLIENT_ID}\"\ncloud = \"china\"\ncertificate = \"c.pem\"\n"),
    )
    .unwrap();
    let output = tokenbroker(&[
        "consent-url",
        "--tenant",
        "organizations",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output).trim_end(),
        format!(
            "https://login.partner.microsoftonline.cn/organizations/v2.0/adminconsent?client_id={CLIENT_ID}\
             &scope=https%3A%2F%2Fmicrosoftgraph.chinacloudapi.cn%2F.default"
        )
    );
}

#[test]
fn consent_url_rejects_bad_input_with_exit_2() {
    for (args, expect) in [
        (
            vec!["--tenant", "../x", "--client-id", CLIENT_ID],
            "--tenant",
        ),
        (
            vec!["--tenant", "contoso.com", "--client-id", "nope"],
            "--client-id",
        ),
        (
            vec![
                "--tenant",
                "contoso.com",
                "--client-id",
                CLIENT_ID,
                "--cloud",
                "mars",
            ],
            "--cloud",
        ),
        (
            vec!["--tenant", "contoso.com", "--config", "/nonexistent.toml"],
            "/nonexistent.toml",
        ),
    ] {
        let mut full = vec!["consent-url"];
        full.extend(args);
        let output = tokenbroker(&full);
        assert_eq!(output.status.code(), Some(2), "{full:?}");
        assert!(
            stderr(&output).contains(expect),
            "{full:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn secret_new_prints_a_secret_and_its_hash() {
    let output = tokenbroker(&["secret", "new", "--account", "mail-sync"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let secret = stdout(&output).trim_end().to_owned();
    assert!(secret.starts_with("tb_") && secret.len() == 46, "{secret}");
    let hash = hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        secret.as_bytes(),
    ));
    let err = stderr(&output);
    let line = err
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("secret_sha256 = "))
        .unwrap_or_else(|| panic!("no secret_sha256 line in:\n{err}"));
    assert_eq!(line, format!("secret_sha256 = \"{hash}\""));
    // The printed line, pasted into an account, is accepted by the
    // configuration parser, and the secret then authenticates as that account.
    let config = tokenbroker::config::Config::parse(
        &format!(
            "[app]\nclient_id = \"11111111-2222-3333-4444-555555555555\"\ncertificate = \"c.pem\"\n\
             [[accounts]]\nname = \"mail-sync\"\n{line}\ntenants = [\"*\"]\n"
        ),
        std::path::Path::new("pasted.toml"),
    )
    .unwrap();
    let policy = tokenbroker::access::Policy::new(&config);
    let account = policy.authenticate(Some(&secret), None).unwrap();
    assert_eq!(policy.account_name(account).as_str(), "mail-sync");
    // Two runs never give the same secret.
    let again = tokenbroker(&["secret", "new", "--account", "mail-sync"]);
    assert_ne!(stdout(&again), stdout(&output));
    // An account name the configuration would refuse is refused here too.
    let bad = tokenbroker(&["secret", "new", "--account", "has space"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn two_accounts_with_one_secret_spelt_in_two_cases_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tokenbroker.toml");
    let hash = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    std::fs::write(
        &config,
        format!(
            "[app]\nclient_id = \"11111111-2222-3333-4444-555555555555\"\ncertificate = \"c.pem\"\n\
             [[accounts]]\nname = \"mail-sync\"\nsecret_sha256 = \"{hash}\"\ntenants = [\"*\"]\n\
             [[accounts]]\nname = \"reports\"\nsecret_sha256 = \"{}\"\ntenants = [\"*\"]\n",
            hash.to_uppercase()
        ),
    )
    .unwrap();
    let output = tokenbroker(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains("accounts[1].secret_sha256")
            && err.contains("\"mail-sync\"")
            && err.contains("\"reports\""),
        "{err}"
    );
}

#[test]
fn the_library_without_default_features_carries_no_simulator() {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let tree = |features: &[&str]| {
        let output = Command::new(env!("CARGO"))
            .args(["tree", "--offline", "--manifest-path", manifest])
            .args(["-p", "tokenbroker", "-e", "normal", "--prefix", "none"])
            .args(features)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output)
    };
    let without = tree(&["--no-default-features"]);
    assert!(without.starts_with("tokenbroker "), "{without}");
    assert!(!without.contains("entra-sim"), "{without}");
    // The default build (the binary's) has it, for `serve --dev`.
    assert!(tree(&[]).contains("entra-sim"));
}

#[test]
fn usage_errors_and_bad_configuration_exit_2() {
    assert_eq!(tokenbroker(&["no-such-command"]).status.code(), Some(2));
    let output = tokenbroker(&["check", "--config", "/nonexistent/tokenbroker.toml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("/nonexistent/tokenbroker.toml"),
        "{}",
        stderr(&output)
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "[app]\nclient_id = \"x\"\ncertificate = \"c.pem\"\n",
    )
    .unwrap();
    let output = tokenbroker(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(
        err.contains("bad.toml") && err.contains("line 2") && err.contains("is not a GUID"),
        "{err}"
    );
}
