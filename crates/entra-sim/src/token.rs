//! Issuing access tokens: the answer to a granted request and the RS256 JWT
//! with the claims Entra puts in app-only tokens.

use crate::answer::{json, raw, Answer};
use crate::{verify, Shared};
use aws_lc_rs::signature::RsaKeyPair;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::time::Duration;

/// Issues an RS256 JWT access token for the checked request.
pub(crate) fn issue_token(shared: &Shared, grant: &verify::Grant, now: u64) -> Answer {
    let client_id = &grant.client_id;
    let (lifetime, refresh_in, roles) = {
        let state = shared.lock();
        let roles = state
            .apps
            .get(client_id)
            .map(|app| app.roles.clone())
            .unwrap_or_default();
        (state.lifetime, state.refresh_in, roles)
    };
    let Some(token) = sign_access_token(
        &shared.signer,
        &grant.tid,
        &grant.resource,
        &roles,
        client_id,
        now,
        lifetime,
    ) else {
        return raw(500, "application/json", "{\"error\":\"server_error\"}");
    };
    let mut body = serde_json::json!({
        "token_type": "Bearer",
        "expires_in": lifetime.as_secs(),
        "ext_expires_in": lifetime.as_secs(),
        "access_token": token,
    });
    if let Some(refresh_in) = refresh_in {
        body["refresh_in"] = serde_json::json!(refresh_in.as_secs());
    }
    json(200, &body)
}

/// An RS256 access token with the claims Entra puts in app-only tokens.
pub(crate) fn sign_access_token(
    signer: &RsaKeyPair,
    tid: &str,
    resource: &str,
    roles: &[String],
    client_id: &str,
    now: u64,
    lifetime: Duration,
) -> Option<String> {
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "kid": "sim"});
    let claims = serde_json::json!({
        "aud": resource,
        "iss": format!("https://sts.windows.net/{tid}/"),
        "iat": now,
        "nbf": now,
        "exp": now + lifetime.as_secs(),
        "tid": tid,
        "roles": roles,
        "idtyp": "app",
        "appid": client_id,
        "azp": client_id,
        "oid": uuid::Uuid::new_v4().to_string(),
        "sub": uuid::Uuid::new_v4().to_string(),
        "ver": "1.0",
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signature = vec![0; signer.public_modulus_len()];
    let rng = aws_lc_rs::rand::SystemRandom::new();
    signer
        .sign(
            &aws_lc_rs::signature::RSA_PKCS1_SHA256,
            &rng,
            signing_input.as_bytes(),
            &mut signature,
        )
        .ok()?;
    Some(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(&signature)
    ))
}
