//! Client assertions signed inside a PKCS#11 token (SoftHSM2) against the
//! same assertion signed with a key in memory, in the same run.
//!
//! `cargo bench --bench hsm` (needs Debian's softhsm2; skipped, saying so,
//! without it). The token is made in a temporary directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use std::path::Path;
use std::time::SystemTime;
use tokenbroker::assertion;
use tokenbroker::config::{EnvVarName, Pkcs11Config, SigningAlgorithm};
use tokenbroker::credentials::pkcs11::{generate, HsmKey};
use tokenbroker::credentials::{Credential, CredentialSource};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
const AUD: &str = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token";

fn in_memory(dir: &Path) -> Credential {
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    let cert = rcgen::CertificateParams::new(vec!["bench".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let source = CredentialSource::files(&dir.join("cert.pem"), Some(&dir.join("key.pem")));
    Credential::load(&source, SystemTime::now())
        .unwrap()
        .credential
}

/// A SoftHSM2 token in `dir` holding a fresh RSA-2048 key.
fn token(dir: &Path) -> HsmKey {
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
    // Before the module is loaded, while this is the only thread.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    std::env::set_var("TB_BENCH_PIN", "1234");
    let status = std::process::Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            "bench",
            "--pin",
            "1234",
            "--so-pin",
            "5678",
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let config = Pkcs11Config {
        module: MODULE.into(),
        token: "bench".into(),
        key_label: "bench".into(),
        pin_env: EnvVarName::try_from("TB_BENCH_PIN".to_owned()).unwrap(),
    };
    generate(&config, 2048).unwrap();
    HsmKey::open(&config).unwrap()
}

fn hsm(c: &mut Criterion) {
    if !Path::new(MODULE).exists() {
        eprintln!("SKIPPED benches/hsm.rs: needs SoftHSM2 (Debian package softhsm2)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = token(dir.path());
    let credential = in_memory(dir.path());
    let signer = credential.signer().unwrap();
    for (name, alg) in [
        ("PS256", SigningAlgorithm::PS256),
        ("RS256", SigningAlgorithm::RS256),
    ] {
        c.bench_function(&format!("assertion/{name}/in-memory"), |b| {
            b.iter(|| assertion::sign(&signer, alg, CLIENT_ID, AUD, 1_800_000_000).unwrap())
        });
        c.bench_function(&format!("assertion/{name}/softhsm2"), |b| {
            b.iter(|| {
                let input =
                    assertion::signing_input(alg, "x5t", "x5t#S256", CLIENT_ID, AUD, 1_800_000_000)
                        .unwrap();
                let signature = key.sign(alg, input.as_bytes()).unwrap();
                assertion::finish(input, &signature)
            })
        });
    }
}

criterion_group!(benches, hsm);
criterion_main!(benches);
