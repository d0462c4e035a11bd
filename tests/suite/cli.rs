//! The offline commands, run as an operator runs them: `consent-url`,
//! `secret new`, and the exit codes of docs/contract.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";

fn tokenbroker(args: &[&str]) -> Output {
    // A command may read /etc/tokenbroker/tokenbroker.toml (consent-url
    // does, also with --client-id), which the package test installs for a
    // few seconds: not meanwhile.
    let _host = crate::package::HOST
        .read()
        .unwrap_or_else(|e| e.into_inner());
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
fn consent_url_names_the_app_the_flag_picks() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tokenbroker.toml");
    let gov_id = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
    std::fs::write(
        &config,
        format!(
            "[[apps]]\nname = \"mail\"\nclient_id = \"{CLIENT_ID}\"\ncertificate = \"c.pem\"\n\
             [[apps]]\nname = \"gov\"\nclient_id = \"{gov_id}\"\ncloud = \"usgov\"\ncertificate = \"g.pem\"\n"
        ),
    )
    .unwrap();
    let run = |app: Option<&str>| {
        let mut args = vec![
            "consent-url",
            "--tenant",
            "organizations",
            "--config",
            config.to_str().unwrap(),
        ];
        if let Some(app) = app {
            args.extend(["--app", app]);
        }
        tokenbroker(&args)
    };
    let first = run(None);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(stdout(&first).starts_with(&format!(
        "https://login.microsoftonline.com/organizations/v2.0/adminconsent?client_id={CLIENT_ID}&"
    )));
    let gov = run(Some("gov"));
    assert!(gov.status.success(), "{}", stderr(&gov));
    assert!(
        stdout(&gov).starts_with(&format!(
            "https://login.microsoftonline.us/organizations/v2.0/adminconsent?client_id={gov_id}&"
        )),
        "{}",
        stdout(&gov)
    );
    let unknown = run(Some("nope"));
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        stderr(&unknown)
            .contains("--app \"nope\" is not a configured app; the apps are: mail, gov"),
        "{}",
        stderr(&unknown)
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

/// Runs `tokenbroker ARGS` with `TOKENBROKER_CONFIG` set to `env` (or unset).
fn with_config_env(args: &[&str], env: Option<&std::path::Path>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tokenbroker"));
    command.args(args);
    match env {
        Some(path) => command.env("TOKENBROKER_CONFIG", path),
        None => command.env_remove("TOKENBROKER_CONFIG"),
    };
    // Unset, the command reads /etc/tokenbroker/tokenbroker.toml, which the
    // package test installs for a few seconds: not meanwhile.
    let _host = crate::package::HOST
        .read()
        .unwrap_or_else(|e| e.into_inner());
    command.output().expect("run tokenbroker")
}

#[test]
fn every_command_finds_its_configuration_by_flag_then_environment_then_etc() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("from-env.toml");
    std::fs::write(
        &config,
        format!(
            "[app]\nclient_id = \"{CLIENT_ID}\"\ncertificate = \"c.pem\"\nprivate_key = \"k.pem\"\n\
             [server]\nadmin_socket = \"admin.sock\"\n\
             [[tenants]]\nname = \"northwind\"\nid = \"northwind.onmicrosoft.com\"\n\
             [[accounts]]\nname = \"svc\"\nsecret_sha256 = \"{}\"\ntenants = [\"northwind\"]\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    // No flag, no variable: the packaged path, and the error names all three
    // (not on a host where that file exists: `serve` would start on it).
    let host = crate::package::HOST
        .read()
        .unwrap_or_else(|e| e.into_inner());
    let installed = std::path::Path::new("/etc/tokenbroker/tokenbroker.toml").exists();
    for args in [
        &["status"][..],
        &["check"],
        &["token", "--tenant", "northwind"],
        &["reload"],
        &["serve"],
    ]
    .into_iter()
    .filter(|_| !installed)
    {
        let output = Command::new(env!("CARGO_BIN_EXE_tokenbroker"))
            .args(args)
            .env_remove("TOKENBROKER_CONFIG")
            .output()
            .unwrap();
        let said = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {said}");
        assert!(
            said.contains("/etc/tokenbroker/tokenbroker.toml")
                && said.contains("--config")
                && said.contains("TOKENBROKER_CONFIG"),
            "{args:?}: {said}"
        );
    }
    drop(host);
    // The variable is read by every command: consent-url takes the client
    // ID and the tenant's name from that file.
    let output = with_config_env(&["consent-url", "--tenant", "northwind"], Some(&config));
    assert!(output.status.success(), "{}", stderr(&output));
    let url = stdout(&output);
    assert!(
        url.starts_with(
            "https://login.microsoftonline.com/northwind.onmicrosoft.com/v2.0/adminconsent"
        ) && url.contains(CLIENT_ID),
        "{url}"
    );
    // An admin command finds the socket there (no daemon listens: exit 1).
    let output = with_config_env(&["status"], Some(&config));
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&dir.path().join("admin.sock").display().to_string()),
        "{said}"
    );
    // --config wins over the variable.
    let output = with_config_env(
        &["check", "--config", "/nonexistent/flag.toml"],
        Some(&config),
    );
    let said = stderr(&output);
    assert!(
        said.contains("/nonexistent/flag.toml") && said.contains("given with --config"),
        "{said}"
    );
    // An unknown name is a usage error that lists the configured ones.
    let output = with_config_env(&["consent-url", "--tenant", "southwind"], Some(&config));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("configured tenants: northwind"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn check_json_is_one_document_also_when_it_fails() {
    let output = with_config_env(
        &[
            "check",
            "--json",
            "--config",
            "/nonexistent/tokenbroker.toml",
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["config_file"], "/nonexistent/tokenbroker.toml");
    let finding = &report["findings"][0];
    assert_eq!(finding["check"], "configuration");
    assert_eq!(finding["ok"], false);
    assert!(
        finding["message"]
            .as_str()
            .unwrap()
            .contains("cannot read configuration file"),
        "{report}"
    );
}

#[test]
fn serve_exits_1_only_for_an_address_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = tokenbroker(&[
        "cert",
        "new",
        "--subject",
        "CN=t",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(made.status.success(), "{}", stderr(&made));
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = |listen: &str| {
        let path = dir.path().join("t.toml");
        std::fs::write(
            &path,
            format!(
                "[app]\nclient_id = \"{CLIENT_ID}\"\ncertificate = \"{}\"\nprivate_key = \"{}\"\n\
                 [server]\nlisten = \"{listen}\"\n\
                 [[accounts]]\nname = \"svc\"\nsecret_sha256 = \"{}\"\ntenants = [\"*\"]\n",
                cert.display(),
                key.display(),
                "0".repeat(64)
            ),
        )
        .unwrap();
        path
    };
    // In use: may pass once the old process is gone, so the unit restarts it.
    let path = config(&busy.local_addr().unwrap().to_string());
    let output = tokenbroker(&["serve", "--config", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("server.listen"),
        "{}",
        stderr(&output)
    );
    // A socket directory that does not exist will not appear by itself: exit 2.
    let path = config("127.0.0.1:0");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[server]\n",
        "[server]\nunix_socket = \"/nonexistent-dir/tb.sock\"\n",
    );
    std::fs::write(&path, text).unwrap();
    let output = tokenbroker(&["serve", "--config", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("server.unix_socket"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn version_names_the_commit() {
    let output = tokenbroker(&["--version"]);
    assert!(output.status.success());
    let said = stdout(&output);
    let commit = said
        .trim()
        .strip_prefix(&format!(
            "tokenbroker {} (commit ",
            env!("CARGO_PKG_VERSION")
        ))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{said}"));
    assert_eq!(commit, tokenbroker::COMMIT);
    // Built from a checkout: the commit's hash, not "unknown".
    if std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".git")
        .exists()
    {
        assert!(
            commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit()),
            "{said}"
        );
    }
}

#[test]
fn an_untrusted_authority_certificate_names_app_ca_file() {
    use crate::common;
    if !common::available(
        "openssl (Debian package openssl)",
        common::has_program("openssl"),
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let made = tokenbroker(&[
        "cert",
        "new",
        "--subject",
        "CN=app",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(made.status.success(), "{}", stderr(&made));
    // A TLS server whose certificate no trusted root signed, as a
    // TLS-inspecting proxy presents one.
    let (server_cert, server_key) = (dir.path().join("srv.pem"), dir.path().join("srv.key"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&server_key)
        .arg("-out")
        .arg(&server_cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let port = common::free_port();
    let proxy = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(port.to_string())
        .arg("-cert")
        .arg(&server_cert)
        .arg("-key")
        .arg(&server_key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _proxy = Stop(proxy);
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let config = dir.path().join("t.toml");
    std::fs::write(
        &config,
        format!(
            "[app]\nclient_id = \"{CLIENT_ID}\"\ncertificate = \"cert.pem\"\nprivate_key = \"key.pem\"\n\
             authority_host = \"https://127.0.0.1:{port}\"\nrequest_timeout = \"3s\"\n\
             [[tenants]]\nname = \"contoso\"\nid = \"contoso.onmicrosoft.com\"\n\
             [[accounts]]\nname = \"svc\"\nsecret_sha256 = \"{}\"\ntenants = [\"contoso\"]\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    let output = tokenbroker(&[
        "token",
        "--tenant",
        "contoso",
        "--config",
        config.to_str().unwrap(),
    ]);
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(
        said.contains("not trusted") && said.contains("app.ca_file"),
        "{said}"
    );
}

#[test]
fn cert_inspect_and_the_admin_commands_speak_json_also_when_they_fail() {
    let dir = tempfile::tempdir().unwrap();
    let made = tokenbroker(&[
        "cert",
        "new",
        "--subject",
        "CN=json",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(made.status.success(), "{}", stderr(&made));
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let output = tokenbroker(&[
        "cert",
        "inspect",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let inspection: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(inspection["subject"], "CN=json");
    assert_eq!(inspection["status"], "valid");
    assert_eq!(inspection["key_matches"], true);
    assert_eq!(inspection["key_bits"], 2048);
    let people = stdout(&tokenbroker(&["cert", "inspect", cert.to_str().unwrap()]));
    let thumbprint = inspection["thumbprint_sha1"].as_str().unwrap();
    assert!(
        people.contains(thumbprint) && people.contains("x5t#S256:"),
        "{people}"
    );
    // A file that is not there: still one document, and exit 2.
    let output = tokenbroker(&["cert", "inspect", "/nonexistent/cert.pem", "--json"]);
    assert_eq!(output.status.code(), Some(2));
    let failed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(failed["exit_code"], 2);
    assert!(failed["error"]
        .as_str()
        .unwrap()
        .contains("/nonexistent/cert.pem"));
    // An admin command with no daemon behind the socket: exit 1, as JSON.
    for command in [
        &["status", "--json"][..],
        &["reload", "--json"],
        &["evict", "--tenant", "t", "--json"],
    ] {
        let mut args = command.to_vec();
        let socket = dir.path().join("admin.sock");
        args.extend(["--admin-socket", socket.to_str().unwrap()]);
        let output = tokenbroker(&args);
        assert_eq!(output.status.code(), Some(1), "{command:?}");
        let failed: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{command:?}: {e}: {}", stdout(&output)));
        assert!(
            failed["error"]
                .as_str()
                .unwrap()
                .contains("no daemon is listening"),
            "{failed}"
        );
    }
}

#[test]
fn cert_inspect_json_is_one_document_when_the_key_does_not_match() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["a", "b"] {
        let out = dir.path().join(sub);
        std::fs::create_dir(&out).unwrap();
        let made = tokenbroker(&[
            "cert",
            "new",
            "--subject",
            "CN=x",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(made.status.success(), "{}", stderr(&made));
    }
    let cert = dir.path().join("a/cert.pem");
    let other = dir.path().join("b/key.pem");
    let output = tokenbroker(&[
        "cert",
        "inspect",
        cert.to_str().unwrap(),
        "--key",
        other.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let inspection: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", stdout(&output)));
    assert_eq!(inspection["key_matches"], false);
}
