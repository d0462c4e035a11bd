//! Keys that never leave a token: SoftHSM2 (a real PKCS#11 module) in a
//! temporary directory, `tokenbroker cert new --pkcs11-…` making the key
//! inside it, `pkcs11-tool` (OpenSC) inspecting and deleting it, and real
//! `tokenbroker` processes getting tokens through the simulated authority.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{Daemon, Fixture, CLIENT_ID, TESTER_SECRET};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "1234";

fn softhsm_available() -> bool {
    common::available(
        "SoftHSM2 and OpenSC's pkcs11-tool (Debian packages softhsm2 and opensc)",
        Path::new(MODULE).exists()
            && common::has_program("softhsm2-util")
            && common::has_program("pkcs11-tool"),
    )
}

/// A SoftHSM2 configuration and an initialised token, in `dir`.
struct Token {
    conf: PathBuf,
}

impl Token {
    fn init(dir: &Path, label: &str) -> Token {
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let token = Token { conf };
        let out = token
            .command("softhsm2-util")
            .args([
                "--init-token",
                "--free",
                "--label",
                label,
                "--pin",
                PIN,
                "--so-pin",
                "5678",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        token
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .env("SOFTHSM2_CONF", &self.conf)
            .env("TB_TEST_PIN", PIN);
        command
    }

    fn tool(&self, args: &[&str]) -> Output {
        self.command("pkcs11-tool")
            .args(["--module", MODULE, "--login", "--pin", PIN])
            .args(args)
            .output()
            .unwrap()
    }

    /// `tokenbroker cert new` with the key made in the token.
    fn cert_new(&self, out: &Path, label: &str) -> Output {
        self.command(env!("CARGO_BIN_EXE_tokenbroker"))
            .args([
                "cert",
                "new",
                "--subject",
                "CN=tokenbroker-hsm,O=Test",
                "--out",
            ])
            .arg(out)
            .args([
                "--pkcs11-module",
                MODULE,
                "--token",
                "tokenbroker",
                "--key-label",
                label,
            ])
            .args(["--pin-env", "TB_TEST_PIN"])
            .output()
            .unwrap()
    }
}

fn hsm_credential(cert: &Path, label: &str) -> String {
    format!(
        "[[app.credentials]]\ncertificate = \"{}\"\n\
         pkcs11 = {{ module = \"{MODULE}\", token = \"tokenbroker\", key_label = \"{label}\", pin_env = \"TB_TEST_PIN\" }}\n",
        cert.display()
    )
}

fn daemon_config(f: &Fixture, name: &str, credentials: &str, signing: &str) -> PathBuf {
    let path = f.dir.path().join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\
             [app]\nclient_id = \"{CLIENT_ID}\"\nauthority_host = \"{}\"\nsigning = \"{signing}\"\n\
             {credentials}\n\
             [[accounts]]\nname = \"tester\"\nsecret_sha256 = \"{}\"\ntenants = [\"*\"]\n",
            f.sim.url(),
            common::sha256_hex(TESTER_SECRET),
        ),
    )
    .unwrap();
    path
}

async fn get_token(daemon: &Daemon, tenant: &str) -> common::HttpAnswer {
    daemon
        .get(
            &format!("/v1/token?tenant={tenant}"),
            &[("Authorization", &format!("Bearer {TESTER_SECRET}"))],
        )
        .await
}

fn der_of(pem: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(pem).unwrap();
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_made_in_the_token_signs_ps256_and_rs256_and_never_leaves_it() {
    if !softhsm_available() {
        return;
    }
    let f = Fixture::new("").await;
    let token = Token::init(f.dir.path(), "tokenbroker");
    let out_dir = f.dir.path().join("hsm");
    let made = token.cert_new(&out_dir, "tb-2027");
    let said = String::from_utf8_lossy(&made.stdout);
    assert!(
        made.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&made.stderr)
    );
    assert!(said.contains("no key file written"), "{said}");
    assert!(out_dir.join("cert.pem").exists());
    assert!(!out_dir.join("key.pem").exists(), "no key file");
    // OpenSC sees a sensitive, never-extractable private key.
    let listed = token.tool(&["--list-objects", "--type", "privkey"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("label:      tb-2027"), "{listed}");
    let access = listed
        .lines()
        .find(|l| l.trim_start().starts_with("Access:"))
        .unwrap_or_default();
    assert!(
        access.contains("always sensitive") && access.contains("never extractable"),
        "{listed}"
    );
    // It signs and does nothing else.
    let usage = listed
        .lines()
        .find(|l| l.trim_start().starts_with("Usage:"))
        .unwrap_or_default();
    assert_eq!(usage.trim(), "Usage:      sign", "{listed}");
    // A second key with the same label is refused.
    let again = token.cert_new(&f.dir.path().join("again"), "tb-2027");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a key labelled"));

    // Only the token's certificate is registered: nothing else can sign.
    f.sim.clear_certificates();
    f.sim
        .register_certificate(&der_of(&out_dir.join("cert.pem")))
        .unwrap();
    let tid = f.sim.consent("contoso.onmicrosoft.com");
    let credentials = hsm_credential(&out_dir.join("cert.pem"), "tb-2027");
    for signing in ["PS256", "RS256"] {
        let config = daemon_config(&f, signing, &credentials, signing);
        let daemon = Daemon::spawn_with_env(
            &config,
            &[
                ("SOFTHSM2_CONF", token.conf.to_str().unwrap()),
                ("TB_TEST_PIN", PIN),
            ],
        )
        .await;
        let answer = get_token(&daemon, "contoso.onmicrosoft.com").await;
        assert_eq!(answer.status, 200, "{signing}: {}", answer.body);
        let access = answer.json()["access_token"].as_str().unwrap().to_owned();
        assert_eq!(common::claims(&access)["tid"], tid.as_str());
    }
    // check verifies the token's key against the certificate.
    let check = token
        .command(env!("CARGO_BIN_EXE_tokenbroker"))
        .args(["check", "--config"])
        .arg(daemon_config(&f, "check", &credentials, "PS256"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // So does `cert inspect`.
    let inspect = |cert: &Path| {
        token
            .command(env!("CARGO_BIN_EXE_tokenbroker"))
            .args(["cert", "inspect"])
            .arg(cert)
            .args([
                "--pkcs11-module",
                MODULE,
                "--token",
                "tokenbroker",
                "--key-label",
                "tb-2027",
            ])
            .args(["--pin-env", "TB_TEST_PIN"])
            .output()
            .unwrap()
    };
    let inspected = inspect(&out_dir.join("cert.pem"));
    let text = String::from_utf8_lossy(&inspected.stdout);
    assert!(
        inspected.status.success() && text.contains("key matches:    yes"),
        "{text}"
    );
    assert!(
        text.contains("subject:        CN=tokenbroker-hsm, O=Test"),
        "{text}"
    );
    let inspected = inspect(&f.dir.path().join("app.crt"));
    assert_eq!(inspected.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&inspected.stdout).contains("key matches:    NO"));
    // ... and refuses a certificate that is not the token key's.
    let mismatched = hsm_credential(&f.dir.path().join("app.crt"), "tb-2027");
    let check = token
        .command(env!("CARGO_BIN_EXE_tokenbroker"))
        .args(["check", "--config"])
        .arg(daemon_config(&f, "mismatch", &mismatched, "PS256"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(2), "{said}");
    assert!(
        said.contains("does not match") && said.contains("tb-2027"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_deleted_from_the_token_falls_back_to_the_file_certificate() {
    if !softhsm_available() {
        return;
    }
    let f = Fixture::new("").await;
    let token = Token::init(f.dir.path(), "tokenbroker");
    let out_dir = f.dir.path().join("hsm");
    assert!(token.cert_new(&out_dir, "tb-2027").status.success());
    // Only the token's certificate is registered at first: the first token
    // can only have been signed in the token.
    f.sim.clear_certificates();
    f.sim
        .register_certificate(&der_of(&out_dir.join("cert.pem")))
        .unwrap();
    f.sim.consent("contoso.onmicrosoft.com");
    f.sim.consent("fabrikam.com");
    let credentials = format!(
        "{}[[app.credentials]]\ncertificate = \"app.crt\"\nprivate_key = \"app.key\"\n",
        hsm_credential(&out_dir.join("cert.pem"), "tb-2027")
    );
    let config = daemon_config(&f, "both", &credentials, "PS256");
    let mut daemon = Daemon::spawn_with_env(
        &config,
        &[
            ("SOFTHSM2_CONF", token.conf.to_str().unwrap()),
            ("TB_TEST_PIN", PIN),
        ],
    )
    .await;
    assert_eq!(
        get_token(&daemon, "contoso.onmicrosoft.com").await.status,
        200
    );
    assert_eq!(f.sim.refusals().len(), 0);
    f.sim.register_certificate(&f.cert_der).unwrap();
    // Another process deletes the key from the token.
    let deleted = token.tool(&["--delete-object", "--type", "privkey", "--label", "tb-2027"]);
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    let answer = get_token(&daemon, "fabrikam.com").await;
    assert_eq!(
        answer.status, 200,
        "fell back to the file certificate: {}",
        answer.body
    );
    // The failure is reported, naming the key.
    let line = daemon
        .wait_for(std::time::Duration::from_secs(5), |l| {
            l.to_string().contains("tb-2027") && l["level"] != "INFO"
        })
        .await;
    assert!(
        line.is_some(),
        "no error naming the key:\n{}",
        daemon.log.join("\n")
    );
}
