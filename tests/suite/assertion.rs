//! Client assertions, decoded and verified independently of the code that
//! signed them: the signature with the certificate's public key (aws-lc-rs
//! directly), every header field and every claim.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
use std::path::Path;
use std::time::SystemTime;
use tokenbroker::assertion;
use tokenbroker::config::SigningAlgorithm;
use tokenbroker::credentials::{Credential, CredentialSource};
use x509_cert::der::Decode;

const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
const AUD: &str = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token";
const NOW: u64 = 1_790_000_000;

/// Makes a fresh self-signed RSA-2048 certificate and key in `dir`; returns
/// the credential and the certificate DER.
fn make_credential(dir: &Path, name: &str) -> (Credential, Vec<u8>) {
    let cert_der = common::write_credential(dir, name);
    let source = CredentialSource::files(
        &dir.join(format!("{name}.crt")),
        Some(&dir.join(format!("{name}.key"))),
    );
    let loaded = Credential::load(&source, SystemTime::now()).unwrap();
    (loaded.credential, cert_der)
}

/// The certificate's RSA public key as PKCS#1 DER, straight from the X.509.
fn public_key_of(cert_der: &[u8]) -> Vec<u8> {
    let cert = x509_cert::Certificate::from_der(cert_der).unwrap();
    cert.tbs_certificate()
        .subject_public_key_info()
        .subject_public_key
        .raw_bytes()
        .to_vec()
}

struct Decoded {
    header: Value,
    claims: Value,
    signing_input: String,
    signature: Vec<u8>,
}

fn decode(jwt: &str) -> Decoded {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "a compact JWS has three parts");
    let json = |part: &str| -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    };
    Decoded {
        header: json(parts[0]),
        claims: json(parts[1]),
        signing_input: format!("{}.{}", parts[0], parts[1]),
        signature: URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
    }
}

fn digest_b64(alg: &'static aws_lc_rs::digest::Algorithm, der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(alg, der).as_ref())
}

fn check_claims(claims: &Value) {
    assert_eq!(claims["aud"], AUD);
    assert_eq!(claims["iss"], CLIENT_ID);
    assert_eq!(claims["sub"], CLIENT_ID);
    assert_eq!(claims["nbf"], NOW);
    assert_eq!(claims["iat"], NOW);
    assert_eq!(claims["exp"], NOW + 600);
    let jti = claims["jti"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(jti).is_ok(), "jti {jti} is a GUID");
    assert_eq!(
        claims.as_object().unwrap().len(),
        7,
        "no unexpected claims: {claims}"
    );
}

#[test]
fn ps256_assertion_has_x5t_s256_and_verifies_with_the_certificate_key() {
    let dir = tempfile::tempdir().unwrap();
    let (credential, cert_der) = make_credential(dir.path(), "app");
    let jwt = assertion::sign(
        &credential.signer().unwrap(),
        SigningAlgorithm::PS256,
        CLIENT_ID,
        AUD,
        NOW,
    )
    .unwrap();
    let d = decode(jwt.expose());

    assert_eq!(d.header["alg"], "PS256");
    assert_eq!(d.header["typ"], "JWT");
    assert_eq!(
        d.header["x5t#S256"],
        digest_b64(&aws_lc_rs::digest::SHA256, &cert_der)
    );
    assert!(
        d.header.get("x5t").is_none(),
        "PS256 carries x5t#S256 only: {}",
        d.header
    );
    assert!(
        d.header.get("x5c").is_none(),
        "x5c is for Microsoft-internal SN/I auth only"
    );
    assert_eq!(d.header.as_object().unwrap().len(), 3, "{}", d.header);
    check_claims(&d.claims);

    let key = UnparsedPublicKey::new(
        &signature::RSA_PSS_2048_8192_SHA256,
        public_key_of(&cert_der),
    );
    key.verify(d.signing_input.as_bytes(), &d.signature)
        .expect("PS256 signature verifies with the certificate's public key");
    // It is PSS, not PKCS#1 v1.5.
    let wrong_scheme = UnparsedPublicKey::new(
        &signature::RSA_PKCS1_2048_8192_SHA256,
        public_key_of(&cert_der),
    );
    assert!(wrong_scheme
        .verify(d.signing_input.as_bytes(), &d.signature)
        .is_err());
}

#[test]
fn rs256_assertion_has_x5t_and_verifies_with_the_certificate_key() {
    let dir = tempfile::tempdir().unwrap();
    let (credential, cert_der) = make_credential(dir.path(), "app");
    let jwt = assertion::sign(
        &credential.signer().unwrap(),
        SigningAlgorithm::RS256,
        CLIENT_ID,
        AUD,
        NOW,
    )
    .unwrap();
    let d = decode(jwt.expose());

    assert_eq!(d.header["alg"], "RS256");
    assert_eq!(d.header["typ"], "JWT");
    assert_eq!(
        d.header["x5t"],
        digest_b64(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &cert_der)
    );
    assert!(d.header.get("x5t#S256").is_none(), "{}", d.header);
    assert_eq!(d.header.as_object().unwrap().len(), 3, "{}", d.header);
    check_claims(&d.claims);

    let key = UnparsedPublicKey::new(
        &signature::RSA_PKCS1_2048_8192_SHA256,
        public_key_of(&cert_der),
    );
    key.verify(d.signing_input.as_bytes(), &d.signature)
        .expect("RS256 signature verifies with the certificate's public key");
}

#[test]
fn a_different_key_fails_verification() {
    let dir = tempfile::tempdir().unwrap();
    let (credential, _) = make_credential(dir.path(), "app");
    let (_, other_cert) = make_credential(dir.path(), "other");
    for (alg, params) in [
        (
            SigningAlgorithm::PS256,
            &signature::RSA_PSS_2048_8192_SHA256,
        ),
        (
            SigningAlgorithm::RS256,
            &signature::RSA_PKCS1_2048_8192_SHA256,
        ),
    ] {
        let jwt = assertion::sign(&credential.signer().unwrap(), alg, CLIENT_ID, AUD, NOW).unwrap();
        let d = decode(jwt.expose());
        let key = UnparsedPublicKey::new(params, public_key_of(&other_cert));
        assert!(
            key.verify(d.signing_input.as_bytes(), &d.signature)
                .is_err(),
            "{alg:?}"
        );
    }
}

#[test]
fn every_assertion_is_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let (credential, _) = make_credential(dir.path(), "app");
    let a = assertion::sign(
        &credential.signer().unwrap(),
        SigningAlgorithm::PS256,
        CLIENT_ID,
        AUD,
        NOW,
    )
    .unwrap();
    let b = assertion::sign(
        &credential.signer().unwrap(),
        SigningAlgorithm::PS256,
        CLIENT_ID,
        AUD,
        NOW,
    )
    .unwrap();
    assert_ne!(
        decode(a.expose()).claims["jti"],
        decode(b.expose()).claims["jti"]
    );
    // Neither the assertion nor the key shows in Debug output.
    assert_eq!(format!("{a:?}"), "ClientAssertion([redacted])");
    let debug = format!("{credential:?}");
    assert!(
        debug.contains("[redacted]") && !debug.contains("BEGIN"),
        "{debug}"
    );
}
