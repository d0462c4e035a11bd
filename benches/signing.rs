//! Client assertion signing: PS256 and RS256 with an RSA-2048 key.
//!
//! `cargo bench --bench signing`. Compare with `openssl speed rsa2048` on the
//! same machine in the same run (BENCHMARKS.md).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use std::time::SystemTime;
use tokenbroker::assertion;
use tokenbroker::config::SigningAlgorithm;
use tokenbroker::credentials::{Credential, CredentialSource};

fn credential() -> (tempfile::TempDir, Credential) {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .expect("key");
    let cert = rcgen::CertificateParams::new(vec!["bench".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    std::fs::write(dir.path().join("cert.pem"), cert.pem()).expect("write cert");
    std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).expect("write key");
    let source = CredentialSource::files(
        &dir.path().join("cert.pem"),
        Some(&dir.path().join("key.pem")),
    );
    let loaded = Credential::load(&source, SystemTime::now()).expect("load");
    (dir, loaded.credential)
}

fn signing(c: &mut Criterion) {
    let (_dir, credential) = credential();
    let signer = credential.signer().expect("a key credential");
    let aud = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token";
    let client_id = "11111111-2222-3333-4444-555555555555";
    for (name, alg) in [
        ("PS256", SigningAlgorithm::PS256),
        ("RS256", SigningAlgorithm::RS256),
    ] {
        c.bench_function(&format!("assertion/{name}"), |b| {
            b.iter(|| assertion::sign(&signer, alg, client_id, aud, 1_800_000_000).expect("sign"))
        });
    }
}

criterion_group!(benches, signing);
criterion_main!(benches);
