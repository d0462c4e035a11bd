//! Client assertions: the signed JWT that proves the app holds its
//! certificate's private key (RFC 7523, Entra's "certificate credential",
//! docs/entra.md "Client assertion").
//!
//! A fresh assertion is signed for every token request: reusing one is what
//! got MSAL Java AADSTS700024 ("not within its valid time range"). The JWT is
//! put together here (jsonwebtoken's header type, serde_json, base64url) and
//! signed by aws-lc-rs with the key the credential hands over, parsed once
//! when the credential was loaded.

use crate::config::SigningAlgorithm;
use aws_lc_rs::signature::{RsaEncoding, RsaKeyPair, RSA_PKCS1_SHA256, RSA_PSS_SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::fmt;

/// How long an assertion is valid (MSAL uses 10 minutes; Entra allows up to an hour).
pub const ASSERTION_LIFETIME_SECS: u64 = 600;

/// The claims Entra checks in a client assertion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssertionClaims {
    /// The exact token endpoint the assertion is sent to.
    pub aud: String,
    /// The client ID.
    pub iss: String,
    /// The client ID.
    pub sub: String,
    /// A fresh GUID, so Entra can reject replays.
    pub jti: String,
    pub nbf: u64,
    pub iat: u64,
    pub exp: u64,
}

/// What signs an assertion: a parsed RSA key and its certificate's
/// thumbprints (base64url SHA-1 and SHA-256 of the DER).
#[derive(Clone, Copy)]
pub struct Signer<'a> {
    pub key: &'a RsaKeyPair,
    pub x5t: &'a str,
    pub x5t_s256: &'a str,
}

impl fmt::Debug for Signer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("x5t_s256", &self.x5t_s256)
            .field("key", &"[redacted]")
            .finish()
    }
}

/// A signed assertion. Its `Debug` never shows the JWT.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientAssertion(String);

impl ClientAssertion {
    /// A token from another issuer, presented as it is (federation).
    pub fn federated(token: String) -> ClientAssertion {
        ClientAssertion(token)
    }

    /// The compact JWT, for the `client_assertion` form field only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientAssertion([redacted])")
    }
}

/// Signing failed (the key was checked at load, so this is unexpected).
#[derive(Debug, thiserror::Error)]
#[error("making the client assertion failed: {0}")]
pub struct AssertionError(String);

impl AssertionError {
    pub fn new(why: impl Into<String>) -> AssertionError {
        AssertionError(why.into())
    }
}

/// Signs a client assertion for `client_id` towards `token_endpoint`, at
/// `now_unix` (seconds). PS256 carries `x5t#S256`, RS256 carries `x5t`.
pub fn sign(
    signer: &Signer<'_>,
    algorithm: SigningAlgorithm,
    client_id: &str,
    token_endpoint: &str,
    now_unix: u64,
) -> Result<ClientAssertion, AssertionError> {
    let jwt = signing_input(
        algorithm,
        signer.x5t,
        signer.x5t_s256,
        client_id,
        token_endpoint,
        now_unix,
    )?;
    let signature = rsa_sign(signer.key, encoding(algorithm), jwt.as_bytes())?;
    Ok(finish(jwt, &signature))
}

/// The header and claims of an assertion, `header.claims`: what the key
/// signs (here, or in an HSM).
pub fn signing_input(
    algorithm: SigningAlgorithm,
    x5t: &str,
    x5t_s256: &str,
    client_id: &str,
    token_endpoint: &str,
    now_unix: u64,
) -> Result<String, AssertionError> {
    let mut header = match algorithm {
        SigningAlgorithm::PS256 => {
            let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::PS256);
            h.x5t_s256 = Some(x5t_s256.to_owned());
            h
        }
        SigningAlgorithm::RS256 => {
            let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
            h.x5t = Some(x5t.to_owned());
            h
        }
    };
    header.typ = Some("JWT".to_owned());
    let claims = AssertionClaims {
        aud: token_endpoint.to_owned(),
        iss: client_id.to_owned(),
        sub: client_id.to_owned(),
        jti: uuid::Uuid::new_v4().to_string(),
        nbf: now_unix,
        iat: now_unix,
        exp: now_unix + ASSERTION_LIFETIME_SECS,
    };
    let mut jwt = part(&header)?;
    jwt.push('.');
    jwt.push_str(&part(&claims)?);
    Ok(jwt)
}

/// The assertion: the signing input and its signature.
pub fn finish(mut signing_input: String, signature: &[u8]) -> ClientAssertion {
    signing_input.push('.');
    signing_input.push_str(&URL_SAFE_NO_PAD.encode(signature));
    ClientAssertion(signing_input)
}

fn encoding(algorithm: SigningAlgorithm) -> &'static dyn RsaEncoding {
    match algorithm {
        SigningAlgorithm::PS256 => &RSA_PSS_SHA256,
        SigningAlgorithm::RS256 => &RSA_PKCS1_SHA256,
    }
}

fn rsa_sign(
    key: &RsaKeyPair,
    encoding: &'static dyn RsaEncoding,
    message: &[u8],
) -> Result<Vec<u8>, AssertionError> {
    let mut signature = vec![0; key.public_modulus_len()];
    key.sign(
        encoding,
        &aws_lc_rs::rand::SystemRandom::new(),
        message,
        &mut signature,
    )
    .map_err(|e| AssertionError(e.to_string()))?;
    Ok(signature)
}

/// Signs a fixed message with both schemes: a key that cannot sign is
/// found when it is loaded, not at the first token request.
pub fn self_test(key: &RsaKeyPair) -> Result<(), AssertionError> {
    for algorithm in [SigningAlgorithm::PS256, SigningAlgorithm::RS256] {
        rsa_sign(key, encoding(algorithm), b"tokenbroker key check")?;
    }
    Ok(())
}

/// One base64url-encoded JSON part of the JWT.
fn part(value: &impl Serialize) -> Result<String, AssertionError> {
    let json = serde_json::to_vec(value).map_err(|e| AssertionError(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(json))
}
