//! Client assertions: the signed JWT that proves the app holds its
//! certificate's private key (RFC 7523, Entra's "certificate credential").
//!
//! A fresh assertion is signed for every token request: reusing one is what
//! got MSAL Java AADSTS700024 ("not within its valid time range").

mod provider;

pub(crate) use provider::prepare as prepare_key;

use crate::config::SigningAlgorithm;
use crate::credentials::Credential;
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
    /// Not before (unix seconds).
    pub nbf: u64,
    /// Issued at (unix seconds).
    pub iat: u64,
    /// Expiry (unix seconds).
    pub exp: u64,
}

/// A signed assertion. Its `Debug` never shows the JWT.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientAssertion(String);

impl ClientAssertion {
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
#[error("signing the client assertion failed: {0}")]
pub struct AssertionError(String);

/// Signs a client assertion for `client_id` towards `token_endpoint`, at
/// `now_unix` (seconds). PS256 carries `x5t#S256`, RS256 carries `x5t`.
pub fn sign(
    credential: &Credential,
    algorithm: SigningAlgorithm,
    client_id: &str,
    token_endpoint: &str,
    now_unix: u64,
) -> Result<ClientAssertion, AssertionError> {
    provider::install();
    let cert = credential.certificate();
    let mut header = match algorithm {
        SigningAlgorithm::PS256 => {
            let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::PS256);
            h.x5t_s256 = Some(cert.x5t_s256.clone());
            h
        }
        SigningAlgorithm::RS256 => {
            let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
            h.x5t = Some(cert.x5t.clone());
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
    jsonwebtoken::encode(&header, &claims, credential.signing_key())
        .map(ClientAssertion)
        .map_err(|e| AssertionError(e.to_string()))
}
