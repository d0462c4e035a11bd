//! Bearer-token verification as Graph does it: signature (the authority's
//! key), audience, issuer, lifetime, revocation; what a valid token grants.

use aws_lc_rs::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
use std::time::{SystemTime, UNIX_EPOCH};

/// Graph's own application id, which v2.0 tokens carry as `aud`.
const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
pub(super) const GRAPH_AUDIENCE: &str = "https://graph.microsoft.com";

pub(super) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// What a valid token grants.
pub(super) struct Token {
    pub(super) tid: String,
    pub(super) roles: Vec<String>,
}

impl Token {
    pub(super) fn has_any(&self, roles: &[&str]) -> bool {
        self.roles.iter().any(|r| roles.contains(&r.as_str()))
    }
}

const VALIDATION_FAILURE: &str = "Access token validation failure.";

/// Checks the bearer token as Graph does; the refusal is the 401 message.
pub(super) fn authenticate(
    key: &[u8],
    revoked_at: Option<u64>,
    authorization: Option<&str>,
    now: u64,
) -> Result<Token, &'static str> {
    const EMPTY: &str = "Access token is empty.";
    let (scheme, jwt) = authorization
        .and_then(|v| v.trim().split_once(' '))
        .ok_or(EMPTY)?;
    let jwt = jwt.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || jwt.is_empty() {
        return Err(EMPTY);
    }
    let mut parts = jwt.split('.');
    let (Some(head), Some(body), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VALIDATION_FAILURE);
    };
    let decode = |part: &str| -> Option<Value> {
        let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
        serde_json::from_slice::<Value>(&bytes)
            .ok()
            .filter(Value::is_object)
    };
    let header = decode(head).ok_or(VALIDATION_FAILURE)?;
    if header["alg"] != "RS256" {
        return Err(VALIDATION_FAILURE);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| VALIDATION_FAILURE)?;
    // Signed input is the two first parts as sent.
    let signed_len = head.len() + 1 + body.len();
    let signed = jwt.get(..signed_len).ok_or(VALIDATION_FAILURE)?;
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| VALIDATION_FAILURE)?;
    // Only now are the claims the authority's.
    let claims = decode(body).ok_or(VALIDATION_FAILURE)?;
    let aud = claims["aud"].as_str().unwrap_or_default();
    if aud != GRAPH_AUDIENCE && aud != GRAPH_APP_ID {
        return Err("Access token validation failure. Invalid audience.");
    }
    let tid = claims["tid"]
        .as_str()
        .filter(|t| uuid::Uuid::try_parse(t).is_ok())
        .ok_or(VALIDATION_FAILURE)?;
    let iss = claims["iss"].as_str().unwrap_or_default();
    if iss != format!("https://sts.windows.net/{tid}/")
        && iss != format!("https://login.microsoftonline.com/{tid}/v2.0")
    {
        return Err("Access token validation failure. Invalid issuer.");
    }
    let exp = claims["exp"].as_u64().ok_or(VALIDATION_FAILURE)?;
    if exp <= now {
        return Err("Lifetime validation failed, the token is expired.");
    }
    if claims["nbf"].as_u64().is_some_and(|nbf| nbf > now) {
        return Err("Lifetime validation failed, the token is not yet valid.");
    }
    let iat = claims["iat"].as_u64().unwrap_or(0);
    if revoked_at.is_some_and(|at| iat <= at) {
        return Err("Continuous access evaluation resulted in challenge with result: InteractionRequired and code: TokenIssuedBeforeRevocationTimestamp");
    }
    let roles = claims["roles"]
        .as_array()
        .map(|roles| {
            roles
                .iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Ok(Token {
        tid: tid.to_ascii_lowercase(),
        roles,
    })
}
