//! Reading Entra's token endpoint answers, and deciding what a failure means.
//! Pure: bytes and status in, typed values out; no I/O.

use super::aadsts;
use crate::token::AccessToken;
use serde::Deserialize;
use serde_json::Value;
use std::fmt;
use std::time::Duration;

/// A successful client-credentials response.
#[derive(Debug, Clone)]
pub struct TokenResponse {
    /// The access token (opaque to us).
    pub access_token: AccessToken,
    /// Lifetime from the moment Entra issued it.
    pub expires_in: Duration,
    /// When Entra suggests refreshing, if it said.
    pub refresh_in: Option<Duration>,
}

/// Entra's error body, as far as it parsed. (Serialized as the fleet cache
/// shares a refusal.)
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EntraError {
    /// HTTP status.
    pub status: u16,
    /// OAuth `error`, e.g. `unauthorized_client`.
    pub error: String,
    /// The first line of `error_description` (without trace and correlation ids).
    pub description: String,
    /// AADSTS codes from `error_codes`, or parsed from the description.
    pub codes: Vec<u32>,
    /// `correlation_id`.
    pub correlation_id: Option<String>,
    /// `trace_id`.
    pub trace_id: Option<String>,
}

impl EntraError {
    /// The first AADSTS code, formatted `AADSTSnnnn`.
    pub fn aadsts(&self) -> Option<String> {
        self.codes.first().map(|c| format!("AADSTS{c}"))
    }
}

impl fmt::Display for EntraError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {} {}", self.status, self.error)?;
        if !self.description.is_empty() {
            write!(f, ": {}", self.description)?;
        }
        if let Some(id) = &self.correlation_id {
            write!(f, " (correlation id {id})")?;
        }
        Ok(())
    }
}

/// What a failed answer means for the next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Retry with backoff (5xx, 408, `temporarily_unavailable`).
    Transient,
    /// Stop and wait this long; no request upstream meanwhile (429, Retry-After).
    Throttled(Duration),
    /// Retrying will not help until someone acts (consent, tenant, certificate).
    Permanent,
    /// AADSTS700024: assertion outside its valid time; sign afresh and retry once.
    Resign,
    /// AADSTS700027: this certificate is not registered on the app (or not
    /// yet in this tenant); try the next credential at once.
    CredentialRefused,
}

/// What Entra sends on 429 when it says nothing else (docs/entra.md, "AADSTS codes").
pub const DEFAULT_THROTTLE: Duration = Duration::from_secs(60);
/// A Retry-After longer than this is capped: a broken header must not park a tenant for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Classifies a failed answer from its status, `error` and AADSTS codes (and
/// `Retry-After`, already parsed). Microsoft says to decide on status and
/// `error`; the two AADSTS codes that have a mechanical remedy come first.
pub fn classify(status: u16, error: &str, codes: &[u32], retry_after: Option<Duration>) -> Class {
    if aadsts::assertion_time(codes) {
        return Class::Resign;
    }
    // The certificate is not registered, or a federated credential matches
    // no federated identity record: another credential may be accepted.
    if aadsts::credential_refused(codes) {
        return Class::CredentialRefused;
    }
    if status == 429 {
        return Class::Throttled(retry_after.unwrap_or(DEFAULT_THROTTLE).min(MAX_RETRY_AFTER));
    }
    if let Some(wait) = retry_after.filter(|_| status >= 500) {
        return Class::Throttled(wait.min(MAX_RETRY_AFTER));
    }
    if status == 408 || status >= 500 || error == "temporarily_unavailable" {
        return Class::Transient;
    }
    Class::Permanent
}

/// Parses a `Retry-After` header value given in seconds. (Entra sends
/// seconds; an HTTP date is treated as absent and the default applies.)
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Why a 200 answer could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedResponse {
    /// The body is not JSON (truncated, HTML from a proxy, …).
    #[error("the body is not JSON ({0})")]
    NotJson(String),
    /// A required field is missing or has the wrong type.
    #[error("field `{0}` is missing or not of the expected type")]
    Field(&'static str),
    /// `token_type` is not Bearer.
    #[error("token_type is \"{0}\", expected \"Bearer\"")]
    TokenType(String),
}

/// Parses a 200 body. Numbers may arrive as numbers or numeric strings.
/// Error messages never quote the body: it may hold a token.
pub fn parse_success(body: &[u8]) -> Result<TokenResponse, MalformedResponse> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| MalformedResponse::NotJson(json_error_summary(&e)))?;
    let access_token = value
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or(MalformedResponse::Field("access_token"))?;
    if let Some(kind) = value.get("token_type") {
        let kind = kind
            .as_str()
            .ok_or(MalformedResponse::Field("token_type"))?;
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(MalformedResponse::TokenType(
                kind.chars().take(32).collect(),
            ));
        }
    }
    let expires_in = seconds(value.get("expires_in"))
        .filter(|s| *s > 0)
        .ok_or(MalformedResponse::Field("expires_in"))?;
    let refresh_in = match value.get("refresh_in") {
        None | Some(Value::Null) => None,
        some => Some(seconds(some).ok_or(MalformedResponse::Field("refresh_in"))?),
    };
    // Entra's tokens live 60-90 minutes; a lifetime past a day is not
    // believed (and would overflow deadlines computed from it).
    let max = MAX_LIFETIME.as_secs();
    Ok(TokenResponse {
        access_token: AccessToken::new(access_token.to_owned()),
        expires_in: Duration::from_secs(expires_in.min(max)),
        refresh_in: refresh_in.map(|r| Duration::from_secs(r.min(max))),
    })
}

/// The longest token lifetime taken from an answer.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The kind of JSON error and where, without echoing input.
fn json_error_summary(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Eof => "truncated",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected shape",
        serde_json::error::Category::Io => "read error",
    };
    format!("{kind} at line {} column {}", e.line(), e.column())
}

fn seconds(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
    #[serde(default)]
    error_codes: Option<Vec<u32>>,
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(default)]
    trace_id: Option<String>,
}

/// Parses a non-200 body. Anything unparseable still gives an error with the
/// status, so a proxy's HTML page becomes "HTTP 502 (not an Entra error body)".
pub fn parse_error(status: u16, body: &[u8]) -> EntraError {
    let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) else {
        return EntraError {
            status,
            error: "invalid_response".into(),
            description: format!("not an Entra error body ({} bytes)", body.len()),
            ..EntraError::default()
        };
    };
    let full = parsed.error_description.unwrap_or_default();
    // Entra appends "\r\nTrace ID: …\r\nCorrelation ID: …\r\nTimestamp: …";
    // those are reported separately.
    let description = full.lines().next().unwrap_or_default().trim().to_owned();
    let codes = match parsed.error_codes {
        Some(codes) if !codes.is_empty() => codes,
        _ => aadsts_in(&description).into_iter().collect(),
    };
    EntraError {
        status,
        error: parsed.error.unwrap_or_else(|| "unknown_error".into()),
        description: clean(&description),
        codes,
        correlation_id: parsed.correlation_id.map(|s| clean(&s)),
        trace_id: parsed.trace_id.map(|s| clean(&s)),
    }
}

/// `AADSTSnnnn` at the start of a description.
fn aadsts_in(description: &str) -> Option<u32> {
    let digits: String = description
        .strip_prefix("AADSTS")?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Keeps text from upstream printable and bounded before it reaches a log
/// line or a caller.
fn clean(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(512).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_with_numbers_or_strings() {
        let r = parse_success(br#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0"}"#).unwrap();
        assert_eq!(r.access_token.expose(), "eyJ0");
        assert_eq!(r.expires_in, Duration::from_secs(3599));
        assert_eq!(r.refresh_in, None);
        let r = parse_success(br#"{"token_type":"Bearer","expires_in":"3599","refresh_in":"1799","access_token":"x"}"#).unwrap();
        assert_eq!(r.expires_in, Duration::from_secs(3599));
        assert_eq!(r.refresh_in, Some(Duration::from_secs(1799)));
    }

    #[test]
    fn an_unbelievable_lifetime_is_capped_at_a_day() {
        let r = parse_success(
            br#"{"token_type":"Bearer","expires_in":18446744073709551615,"refresh_in":18446744073709551615,"access_token":"x"}"#,
        )
        .unwrap();
        assert_eq!(r.expires_in, MAX_LIFETIME);
        assert_eq!(r.refresh_in, Some(MAX_LIFETIME));
    }

    #[test]
    fn malformed_success_bodies_are_errors_not_panics() {
        for (body, expect) in [
            (&b""[..], "truncated"),
            (b"{\"access_token\":\"abc", "truncated"),
            (b"<html>502 Bad Gateway</html>", "syntax error"),
            (b"[]", "access_token"),
            (
                b"{\"access_token\":\"\",\"expires_in\":3600}",
                "access_token",
            ),
            (b"{\"access_token\":\"a\"}", "expires_in"),
            (b"{\"access_token\":\"a\",\"expires_in\":-5}", "expires_in"),
            (
                b"{\"access_token\":\"a\",\"expires_in\":\"soon\"}",
                "expires_in",
            ),
            (b"{\"access_token\":\"a\",\"expires_in\":0}", "expires_in"),
            (
                b"{\"access_token\":\"a\",\"expires_in\":60,\"refresh_in\":{}}",
                "refresh_in",
            ),
            (
                b"{\"access_token\":\"a\",\"expires_in\":60,\"token_type\":\"pop\"}",
                "token_type",
            ),
        ] {
            let err = parse_success(body).unwrap_err().to_string();
            assert!(
                err.contains(expect),
                "{:?}: {err}",
                String::from_utf8_lossy(body)
            );
        }
        // The message never quotes the body.
        let err = parse_success(b"{\"access_token\":\"SECRET\",\"expires_in\":\"x\"}").unwrap_err();
        assert!(!err.to_string().contains("SECRET"));
    }

    #[test]
    fn entra_error_body_is_parsed() {
        let body = br#"{"error":"unauthorized_client","error_description":"AADSTS700016: Application with identifier '1111' was not found in the directory 'contoso'.\r\nTrace ID: abc\r\nCorrelation ID: def\r\nTimestamp: 2026-01-01 00:00:00Z","error_codes":[700016],"timestamp":"2026-01-01 00:00:00Z","trace_id":"abc","correlation_id":"def","error_uri":"https://login.microsoftonline.com/error?code=700016"}"#;
        let e = parse_error(400, body);
        assert_eq!(e.error, "unauthorized_client");
        assert_eq!(e.codes, vec![700_016]);
        assert_eq!(e.aadsts().as_deref(), Some("AADSTS700016"));
        assert_eq!(e.correlation_id.as_deref(), Some("def"));
        assert_eq!(e.trace_id.as_deref(), Some("abc"));
        assert_eq!(
            e.description,
            "AADSTS700016: Application with identifier '1111' was not found in the directory 'contoso'."
        );
    }

    #[test]
    fn codes_fall_back_to_the_description_and_garbage_is_survivable() {
        let e = parse_error(401, br#"{"error":"invalid_client","error_description":"AADSTS700027: Client assertion contains an invalid signature."}"#);
        assert_eq!(e.codes, vec![700_027]);
        let e = parse_error(502, b"<html>bad gateway</html>");
        assert_eq!(e.status, 502);
        assert_eq!(e.error, "invalid_response");
        assert!(e.codes.is_empty());
        let e = parse_error(
            400,
            br#"{"error":"x\u0007y","error_description":"line\u001b[31m"}"#,
        );
        assert!(!e.description.contains('\u{1b}'));
    }

    #[test]
    fn classification_follows_status_and_error() {
        let s = Duration::from_secs;
        assert_eq!(classify(500, "", &[], None), Class::Transient);
        assert_eq!(classify(503, "", &[], None), Class::Transient);
        assert_eq!(classify(408, "", &[], None), Class::Transient);
        assert_eq!(
            classify(400, "temporarily_unavailable", &[], None),
            Class::Transient
        );
        assert_eq!(classify(429, "", &[], Some(s(30))), Class::Throttled(s(30)));
        assert_eq!(
            classify(429, "", &[], None),
            Class::Throttled(DEFAULT_THROTTLE)
        );
        assert_eq!(
            classify(429, "", &[], Some(s(999_999))),
            Class::Throttled(MAX_RETRY_AFTER)
        );
        assert_eq!(classify(503, "", &[], Some(s(5))), Class::Throttled(s(5)));
        // Retry-After on a 4xx refusal does not make it transient.
        assert_eq!(
            classify(400, "invalid_request", &[90002], Some(s(5))),
            Class::Permanent
        );
        // An invalid certificate (7000274) or one of another app (700021)
        // moves on to the next credential, as an unregistered one does.
        for code in [7_000_274, 700_021, 700_027] {
            assert_eq!(
                classify(400, "invalid_client", &[code], None),
                Class::CredentialRefused,
                "{code}"
            );
        }
        for code in [
            700_016, 65_001, 90_002, 90_038, 7_000_112, 1_000_502, 7_000_214, 7_000_277, 53_003,
        ] {
            assert_eq!(
                classify(400, "invalid_request", &[code], None),
                Class::Permanent,
                "{code}"
            );
        }
        assert_eq!(
            classify(401, "invalid_client", &[700_027], None),
            Class::CredentialRefused
        );
        assert_eq!(
            classify(400, "invalid_client", &[700_024], None),
            Class::Resign
        );
        assert_eq!(
            classify(400, "invalid_request", &[], None),
            Class::Permanent
        );
    }

    #[test]
    fn retry_after_in_seconds() {
        assert_eq!(parse_retry_after("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}
