//! The checks the simulated authority makes on a token request, as Entra
//! makes them. Pure: the request and the registry in, a grant or a refusal out.

use crate::apps::App;
use aws_lc_rs::signature::{self, UnparsedPublicKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
use std::collections::HashMap;

/// What the authority knows: the apps (each with its certificates,
/// federated credentials and consents), the tenants.
pub(super) struct Registry<'a> {
    pub(super) base_url: &'a str,
    /// App registrations by client ID.
    pub(super) apps: &'a HashMap<String, App>,
    /// Tenant (lower-case GUID or domain) → tenant GUID.
    pub(super) tenants: &'a HashMap<String, String>,
}

/// The audience Entra requires of a federated assertion.
pub const FEDERATED_AUDIENCE: &str = "api://AzureADTokenExchange";

/// A request that passed every check.
#[derive(Debug)]
pub(super) struct Grant {
    pub(super) tid: String,
    pub(super) resource: String,
    /// The app the token is for.
    pub(super) client_id: String,
}

/// Why a request was refused, as Entra would say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// OAuth `error`.
    pub error: String,
    /// AADSTS code.
    pub code: u32,
    /// Entra's message (without the code prefix).
    pub message: String,
}

fn refuse(status: u16, error: &str, code: u32, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        error: error.to_owned(),
        code,
        message: message.into(),
    }
}

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Entra tolerates this much clock skew on `nbf`.
const SKEW: u64 = 300;

pub(super) fn check_request(
    registry: &Registry<'_>,
    tenant: &str,
    content_type: &str,
    body: &[u8],
    now: u64,
) -> Result<Grant, Refusal> {
    if !content_type.split(';').next().is_some_and(|t| {
        t.trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    }) {
        return Err(refuse(
            400,
            "invalid_request",
            900_144,
            "The request body must contain the following parameter: 'grant_type'.",
        ));
    }
    let mut form: HashMap<String, String> = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(body) {
        if form.insert(name.to_string(), value.to_string()).is_some() {
            return Err(refuse(400, "invalid_request", 90_015, format!("Requested query string is too long or contains a duplicated parameter '{name}'.")));
        }
    }
    let field = |name: &str| -> Result<&str, Refusal> {
        form.get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                refuse(
                    400,
                    "invalid_request",
                    900_144,
                    format!("The request body must contain the following parameter: '{name}'."),
                )
            })
    };

    let grant_type = field("grant_type")?;
    if grant_type != "client_credentials" {
        return Err(refuse(
            400,
            "unsupported_grant_type",
            70_003,
            format!("The app requested an unsupported grant type '{grant_type}'."),
        ));
    }
    let Some(tid) = registry.tenants.get(&tenant.to_ascii_lowercase()).cloned() else {
        return Err(refuse(400, "invalid_request", 90_002, format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.")));
    };
    let client_id = field("client_id")?;
    // An app unknown to the directory and one its admin did not consent to
    // are refused alike, as Entra refuses them.
    let Some(app) = registry
        .apps
        .get(client_id)
        .filter(|app| app.consented.contains(&tid))
    else {
        return Err(refuse(400, "unauthorized_client", 700_016, format!(
            "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
        )));
    };
    let scope = field("scope")?;
    let Some(resource) = scope
        .strip_suffix("/.default")
        .filter(|r| !r.is_empty() && !r.contains(' '))
    else {
        return Err(refuse(400, "invalid_scope", 1_002_012, format!(
            "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
        )));
    };
    if field("client_assertion_type")? != ASSERTION_TYPE {
        return Err(refuse(400, "invalid_request", 50_027, "Invalid client_assertion_type: expected urn:ietf:params:oauth:client-assertion-type:jwt-bearer."));
    }
    let assertion = field("client_assertion")?;
    check_assertion(registry, app, tenant, client_id, assertion, now)?;
    Ok(Grant {
        tid,
        resource: resource.to_owned(),
        client_id: client_id.to_owned(),
    })
}

fn malformed(why: &str) -> Refusal {
    refuse(
        401,
        "invalid_client",
        50_027,
        format!("JWT token is invalid or malformed: {why}."),
    )
}

fn check_assertion(
    registry: &Registry<'_>,
    app: &App,
    tenant: &str,
    client_id: &str,
    jwt: &str,
    now: u64,
) -> Result<(), Refusal> {
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header_b64, claims_b64, signature_b64] = parts[..] else {
        return Err(malformed("not a compact JWS"));
    };
    let decode_json = |part: &str| -> Result<Value, Refusal> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| malformed("bad base64url"))?;
        serde_json::from_slice(&bytes).map_err(|_| malformed("bad JSON"))
    };
    let header = decode_json(header_b64)?;
    let claims = decode_json(claims_b64)?;
    let signature_bytes = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| malformed("bad signature encoding"))?;

    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let params: &'static signature::RsaParameters = match alg {
        "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
        "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
        other => return Err(malformed(&format!("unsupported alg '{other}'"))),
    };
    let thumbprint = match header.get("x5t#S256").or_else(|| header.get("x5t")) {
        Some(t) => t.as_str().ok_or_else(|| malformed("x5t is not a string"))?,
        // No certificate thumbprint: a federated credential's token.
        None => {
            return check_federated(
                app,
                &claims,
                params,
                header_b64,
                claims_b64,
                &signature_bytes,
                now,
            )
        }
    };
    // Entra accepts the thumbprint with or without base64 padding.
    let thumbprint = thumbprint.trim_end_matches('=');
    let Some(public_key) = app.keys.get(thumbprint) else {
        let hex = hex::encode_upper(URL_SAFE_NO_PAD.decode(thumbprint).unwrap_or_default());
        return Err(refuse(401, "invalid_client", 700_027, format!(
            "Client assertion contains an invalid signature. [Reason - The key was not found., Thumbprint of key used by client: '{hex}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{client_id}'.]"
        )));
    };
    let signing_input = format!("{header_b64}.{claims_b64}");
    UnparsedPublicKey::new(params, public_key)
        .verify(signing_input.as_bytes(), &signature_bytes)
        .map_err(|_| refuse(401, "invalid_client", 700_027, "Client assertion contains an invalid signature. [Reason - The provided signature value did not match the expected signature value.]"))?;

    let expected_aud = crate::token_endpoint(registry.base_url, tenant);
    let aud = claims
        .get("aud")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if aud != expected_aud {
        return Err(refuse(401, "invalid_client", 700_212, format!(
            "No matching federated identity record found for presented assertion audience '{aud}'. The audience must be '{expected_aud}'."
        )));
    }
    for claim in ["iss", "sub"] {
        if claims.get(claim).and_then(Value::as_str) != Some(client_id) {
            return Err(refuse(401, "invalid_client", 700_021, format!(
                "Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at https://docs.microsoft.com/en-us/azure/active-directory/develop/active-directory-certificate-credentials . (claim '{claim}')"
            )));
        }
    }
    if claims
        .get("jti")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(malformed("no jti claim"));
    }
    let number = |name: &str| claims.get(name).and_then(Value::as_u64);
    let exp = number("exp").ok_or_else(|| malformed("no exp claim"))?;
    let start = number("nbf")
        .or_else(|| number("iat"))
        .ok_or_else(|| malformed("no nbf or iat claim"))?;
    let iat = number("iat").unwrap_or(start);
    let out_of_range =
        exp <= now || start > now + SKEW || exp.saturating_sub(start.min(iat)) > 3600;
    if out_of_range {
        return Err(refuse(400, "invalid_client", 700_024, format!(
            "Client assertion is not within its valid time range. Current time: {now}, assertion valid from {start}, expiry time of assertion {exp}."
        )));
    }
    Ok(())
}

/// An assertion from a federated identity credential: a token another
/// issuer (Kubernetes, a managed identity) signed, checked against the
/// (issuer, subject) pairs the app trusts, as Entra checks it.
fn check_federated(
    app: &App,
    claims: &Value,
    params: &'static signature::RsaParameters,
    header_b64: &str,
    claims_b64: &str,
    signature: &[u8],
    now: u64,
) -> Result<(), Refusal> {
    let text = |name: &str| claims.get(name).and_then(Value::as_str).unwrap_or_default();
    // `aud` may be a string or an array (Kubernetes' projected tokens).
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(one)) => vec![one.as_str()],
        _ => Vec::new(),
    };
    let aud = audiences
        .iter()
        .find(|a| **a == FEDERATED_AUDIENCE)
        .or(audiences.first())
        .copied()
        .unwrap_or_default();
    let (iss, sub) = (text("iss"), text("sub"));
    let no_record = || {
        refuse(400, "invalid_client", 70_021, format!(
            "No matching federated identity record found for presented assertion. Assertion Issuer: '{iss}'. Assertion Subject: '{sub}'. Assertion Audience: '{aud}'."
        ))
    };
    let Some((key, subjects)) = app.federated.get(iss) else {
        return Err(no_record());
    };
    let signing_input = format!("{header_b64}.{claims_b64}");
    UnparsedPublicKey::new(params, key)
        .verify(signing_input.as_bytes(), signature)
        .map_err(|_| refuse(401, "invalid_client", 700_211, format!(
            "No matching federated identity record found for presented assertion issuer '{iss}'. [Reason - the signature does not verify with the issuer's keys.]"
        )))?;
    if aud != FEDERATED_AUDIENCE {
        return Err(refuse(
            400,
            "invalid_client",
            700_212,
            format!(
            "No matching federated identity record found for presented assertion audience '{aud}'."
        ),
        ));
    }
    if !subjects.iter().any(|s| s == sub) {
        return Err(no_record());
    }
    let number = |name: &str| claims.get(name).and_then(Value::as_u64);
    let exp = number("exp").ok_or_else(|| malformed("no exp claim"))?;
    let start = number("nbf").or_else(|| number("iat")).unwrap_or(0);
    if exp <= now || start > now + SKEW {
        return Err(refuse(400, "invalid_client", 700_024, format!(
            "Client assertion is not within its valid time range. Current time: {now}, assertion valid from {start}, expiry time of assertion {exp}."
        )));
    }
    Ok(())
}
