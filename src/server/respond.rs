//! HTTP answers: JSON bodies, `Cache-Control: no-store`, and the mapping
//! from failures to status codes (docs/contract.md, "HTTP API"). Pure: no I/O.

use crate::broker::{Refusal, TokenError};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{Either, Full};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde_json::json;
use std::time::Duration;

/// The response type of every route.
pub type Answer = Response<Body>;

/// A response body: whole (every answer the broker makes itself) or
/// streamed (what the Graph gateway passes through as Graph sends it).
/// An enum rather than a box, so the token path allocates no body box.
pub type Body = Either<Full<Bytes>, BoxBody<Bytes, BoxError>>;

/// A streamed body's error (the upstream connection failed mid-body).
pub use crate::gateway::upstream::BoxError;

/// A whole body.
pub fn whole(bytes: impl Into<Bytes>) -> Body {
    Either::Left(Full::new(bytes.into()))
}

/// After a transient failure, callers are told to come back in this long:
/// the time the cache answers it locally.
pub const UNAVAILABLE_RETRY_AFTER: Duration = crate::cache::schedule::TRANSIENT_HOLD;

/// A failure on its way to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// HTTP status.
    pub status: u16,
    /// Short machine code (`invalid_request`, `entra_refused`, …).
    pub code: &'static str,
    /// What and why, for people.
    pub message: String,
    /// `Retry-After` seconds, for 503.
    pub retry_after: Option<u64>,
    /// Entra's ids, for upstream failures.
    pub entra: Option<Box<EntraIds>>,
}

/// What Entra said that helps its support find the request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EntraIds {
    /// `AADSTSnnnn`.
    pub aadsts: Option<String>,
    /// `correlation_id`.
    pub correlation_id: Option<String>,
    /// `trace_id`.
    pub trace_id: Option<String>,
}

impl Failure {
    /// A failure without Entra details.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            status,
            code,
            message: message.into(),
            retry_after: None,
            entra: None,
        }
    }
}

impl From<&TokenError> for Failure {
    fn from(error: &TokenError) -> Failure {
        // Round up: "retry after 0 s" would invite an immediate retry.
        let seconds = |d: Duration| (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1);
        let (status, retry_after) = match error.refusal() {
            Refusal::BadRequest => (400, None),
            Refusal::Forbidden => (403, None),
            Refusal::TooManyNewTenants { retry_after } => (429, Some(retry_after.as_secs().max(1))),
            Refusal::EntraRefused => (502, None),
            Refusal::Throttled { retry_after } | Refusal::Unavailable { retry_after } => {
                (503, Some(seconds(retry_after)))
            }
            Refusal::Timeout => (504, None),
            Refusal::Credential => (500, None),
        };
        Failure {
            status,
            code: error.code(),
            message: error.to_string(),
            retry_after,
            entra: error.entra().map(|e| {
                Box::new(EntraIds {
                    aadsts: e.aadsts(),
                    correlation_id: e.correlation_id.clone(),
                    trace_id: e.trace_id.clone(),
                })
            }),
        }
    }
}

/// A JSON answer with `Cache-Control: no-store`.
pub fn json(status: u16, body: &impl serde::Serialize) -> Answer {
    // Serialising a typed value straight to bytes: the token path's bodies
    // are structs, not `Value` maps (no tree, no formatter on the hot path).
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut answer = Response::new(whole(bytes));
    *answer.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = answer.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    answer
}

/// Builds a JSON object by hand for the token answers, the hot path: the
/// token is copied in without an escaping pass when it is known to need none
/// (serde_json's escaping scan of a ~1.5 KiB token was a fifth of a cached
/// `/v1/token` request). Every other value goes through serde_json.
#[derive(Debug)]
pub struct TokenBody {
    buf: Vec<u8>,
}

impl TokenBody {
    /// Starts `{"access_token":"…"`.
    pub fn new(token: &crate::token::AccessToken) -> TokenBody {
        let mut buf = Vec::with_capacity(token.len() + 256);
        buf.extend_from_slice(b"{\"access_token\":");
        if token.is_json_safe() {
            buf.push(b'"');
            buf.extend_from_slice(token.expose().as_bytes());
            buf.push(b'"');
        } else {
            // Writing a str into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut buf, token.expose());
        }
        TokenBody { buf }
    }

    /// Adds `,"key":"value"` (escaped).
    pub fn string(mut self, key: &'static str, value: &str) -> TokenBody {
        self.key(key);
        if crate::token::json_safe(value) {
            self.buf.push(b'"');
            self.buf.extend_from_slice(value.as_bytes());
            self.buf.push(b'"');
        } else {
            let _ = serde_json::to_writer(&mut self.buf, value);
        }
        self
    }

    /// Adds `,"key":n`.
    pub fn number(mut self, key: &'static str, value: u64) -> TokenBody {
        self.key(key);
        let _ = serde_json::to_writer(&mut self.buf, &value);
        self
    }

    fn key(&mut self, key: &'static str) {
        debug_assert!(crate::token::json_safe(key), "{key}");
        self.buf.push(b',');
        self.buf.push(b'"');
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }

    /// The 200 answer.
    pub fn answer(mut self) -> Answer {
        self.buf.push(b'}');
        let mut answer = Response::new(whole(self.buf));
        let headers = answer.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        answer
    }
}

fn with_retry_after(mut answer: Answer, retry_after: Option<u64>) -> Answer {
    if let Some(secs) = retry_after {
        answer
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    answer
}

/// The tokenbroker API's error body: `{"error","message"}` plus Entra's ids.
pub fn api_error(failure: &Failure) -> Answer {
    let mut body = json!({"error": failure.code, "message": failure.message});
    add_entra_ids(&mut body, failure);
    with_retry_after(json(failure.status, &body), failure.retry_after)
}

/// Entra's ids of the failure (`aadsts`, `correlation_id`, `trace_id`),
/// those it gave, as keys of `object`.
fn add_entra_ids(object: &mut serde_json::Value, failure: &Failure) {
    let Some(entra) = &failure.entra else {
        return;
    };
    for (key, value) in [
        ("aadsts", &entra.aadsts),
        ("correlation_id", &entra.correlation_id),
        ("trace_id", &entra.trace_id),
    ] {
        if let Some(value) = value {
            object[key] = json!(value);
        }
    }
}

/// The Graph gateway's error body, in Microsoft Graph's own shape so Graph
/// SDKs raise it with its message: `{"error": {"code": "tokenbroker.…",
/// "message": …, "innerError": {…}}}`. 400 is `tokenbroker.bad_request` and
/// 403 `tokenbroker.forbidden`; others name the broker's code.
pub fn graph_error(failure: &Failure) -> Answer {
    let code = match failure.status {
        400 => "tokenbroker.bad_request".to_owned(),
        403 => "tokenbroker.forbidden".to_owned(),
        _ => format!("tokenbroker.{}", failure.code),
    };
    let mut inner = json!({
        "date": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    });
    add_entra_ids(&mut inner, failure);
    let body = json!({"error": {"code": code, "message": failure.message, "innerError": inner}});
    with_retry_after(json(failure.status, &body), failure.retry_after)
}

/// The App Service managed-identity error body. SDKs retry 404, so a
/// request the caller must fix is always 400, never 404 or 403.
pub fn msi_error(failure: &Failure) -> Answer {
    let status = match failure.status {
        403 | 404 => 400,
        other => other,
    };
    let mut body = json!({
        "statusCode": status,
        "message": failure.message,
        "error": failure.code,
        "error_description": failure.message,
    });
    if let Some(id) = failure
        .entra
        .as_ref()
        .and_then(|e| e.correlation_id.as_ref())
    {
        body["correlation_id"] = json!(id);
    }
    with_retry_after(json(status, &body), failure.retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::response::EntraError;
    use crate::authority::AcquireError;
    use crate::cache::CacheError;

    /// The failure for an upstream error, as the broker reports it.
    fn upstream(error: AcquireError) -> Failure {
        Failure::from(&TokenError::Unavailable(CacheError::Load(error)))
    }
    use serde_json::Value;
    use std::sync::Arc;

    fn entra(code: u32) -> Arc<EntraError> {
        Arc::new(EntraError {
            status: 400,
            error: "unauthorized_client".into(),
            description: format!("AADSTS{code}: no"),
            codes: vec![code],
            correlation_id: Some("corr".into()),
            trace_id: Some("trace".into()),
        })
    }

    #[test]
    fn upstream_failures_map_to_the_spec_statuses() {
        let refused = upstream(AcquireError::Refused {
            tenant: "t".into(),
            entra: entra(700_016),
        });
        assert_eq!((refused.status, refused.code), (502, "entra_refused"));
        let ids = refused.entra.as_deref().unwrap();
        assert_eq!(ids.aadsts.as_deref(), Some("AADSTS700016"));
        assert_eq!(ids.correlation_id.as_deref(), Some("corr"));
        assert_eq!(ids.trace_id.as_deref(), Some("trace"));
        let throttled = upstream(AcquireError::Throttled {
            tenant: "t".into(),
            retry_after: Duration::from_millis(29_100),
            entra: None,
        });
        assert_eq!((throttled.status, throttled.retry_after), (503, Some(30)));
        let zero = upstream(AcquireError::Throttled {
            tenant: "t".into(),
            retry_after: Duration::ZERO,
            entra: None,
        });
        assert_eq!(zero.retry_after, Some(1));
        let down = upstream(AcquireError::Unavailable {
            tenant: "t".into(),
            reason: "x".into(),
            entra: None,
        });
        assert_eq!((down.status, down.retry_after), (503, Some(5)));
        let slow = upstream(AcquireError::Timeout {
            tenant: "t".into(),
            after: Duration::from_secs(1),
        });
        assert_eq!(slow.status, 504);
        let bad = Failure::from(&TokenError::BadRequest(
            crate::access::RequestError::Tenant("x y".into()),
        ));
        assert_eq!((bad.status, bad.code), (400, "invalid_request"));
        let late = Failure::from(&TokenError::Unavailable(CacheError::Deadline {
            tenant: crate::config::TenantId::try_from("t.com".to_owned()).unwrap(),
            after: Duration::from_secs(20),
        }));
        assert_eq!((late.status, late.code), (504, "entra_timeout"));
        assert!(
            late.message.contains("cache.load_timeout"),
            "{}",
            late.message
        );
    }

    #[test]
    fn token_bodies_are_valid_json_with_or_without_escaping() {
        use crate::token::AccessToken;
        use http_body_util::BodyExt;
        for token in ["eyJ0.eyJ1.sig", "odd\"token\\with\nescapes"] {
            let answer = TokenBody::new(&AccessToken::new(token.into()))
                .string("token_type", "Bearer")
                .number("expires_in", 3599)
                .string("resource", "https://x.com/\"q\"")
                .answer();
            assert_eq!(answer.headers()[CACHE_CONTROL], "no-store");
            let body = futures_util::FutureExt::now_or_never(answer.into_body().collect())
                .unwrap()
                .unwrap()
                .to_bytes();
            let value: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(value["access_token"], token);
            assert_eq!(value["expires_in"], 3599);
            assert_eq!(value["resource"], "https://x.com/\"q\"");
            assert_eq!(value.as_object().unwrap().len(), 4);
        }
    }

    #[test]
    fn bodies_and_headers() {
        let failure = upstream(AcquireError::Throttled {
            tenant: "t".into(),
            retry_after: Duration::from_secs(7),
            entra: Some(entra(50_196)),
        });
        let answer = api_error(&failure);
        assert_eq!(answer.status(), 503);
        assert_eq!(answer.headers()[RETRY_AFTER], "7");
        assert_eq!(answer.headers()[CACHE_CONTROL], "no-store");
        assert_eq!(answer.headers()[CONTENT_TYPE], "application/json");
        let msi = msi_error(&Failure::new(403, "forbidden", "not for you"));
        assert_eq!(msi.status(), 400);
        let msi = msi_error(&Failure::new(404, "not_found", "no"));
        assert_eq!(msi.status(), 400);
    }
}
