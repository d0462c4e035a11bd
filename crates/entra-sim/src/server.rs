//! The token endpoint's server: the accept loop, and for each request the
//! counting, latency and injected faults, the checks of `verify.rs`, and
//! answers and refusals in Entra's shape.

use crate::answer::{json, raw, Answer};
use crate::token::issue_token;
use crate::{verify, Fault, Refusal, Shared, State};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::http::request::Parts;
use hyper::Request;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Decrements the in-flight gauge however the request ends.
struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The error a service returns to make hyper drop the connection.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by fault injection")]
pub(crate) struct Dropped;

pub(crate) async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Answer, Dropped> {
    let now_in_flight = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.peak.fetch_max(now_in_flight, Ordering::SeqCst);
    let _guard = InFlight(&shared);

    let (req, body) = req.into_parts();
    let tenant = token_path_tenant(req.uri.path());
    // A token request's body is read before any fault, so that it counts
    // for the app its `client_id` names whatever the answer.
    let mut form = None;
    if let Some(tenant) = &tenant {
        shared.total.fetch_add(1, Ordering::SeqCst);
        let tenant = tenant.to_ascii_lowercase();
        *shared.lock().requests.entry(tenant.clone()).or_default() += 1;
        let read = Limited::new(body, 64 * 1024)
            .collect()
            .await
            .map(|collected| collected.to_bytes());
        if let Some(client_id) = read.as_ref().ok().and_then(|b| form_client_id(b)) {
            *shared
                .lock()
                .app_requests
                .entry((client_id, tenant))
                .or_default() += 1;
        }
        form = Some(read);
    }
    let (latency, fault) = {
        let mut state = shared.lock();
        let fault = state
            .faults
            .pop_front()
            .or_else(|| state.persistent_fault.clone());
        (state.latency, fault)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault {
        Some(Fault::Slow(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::Drop) => return Err(Dropped),
        Some(Fault::Garbage) => {
            return Ok(raw(
                200,
                "text/html",
                "<html><body>Service Unavailable</body></html>",
            ))
        }
        Some(Fault::Truncated) => {
            return Ok(raw(
                200,
                "application/json",
                "{\"token_type\":\"Bearer\",\"expires_in\":35",
            ))
        }
        Some(Fault::Throttle(seconds)) => {
            let mut answer = entra_error(429, "temporarily_unavailable", 50196, "The server is temporarily unable to service your request due to throttling. Please retry later.", &req);
            if let Ok(value) = hyper::header::HeaderValue::from_str(&seconds.to_string()) {
                answer.headers_mut().insert("retry-after", value);
            }
            return Ok(answer);
        }
        Some(Fault::Status(status)) => {
            let error = if status == 503 {
                "temporarily_unavailable"
            } else {
                "server_error"
            };
            return Ok(entra_error(
                status,
                error,
                90033,
                "A transient error has occurred. Please try again.",
                &req,
            ));
        }
        Some(Fault::Aadsts {
            status,
            error,
            code,
        }) => {
            return Ok(entra_error(status, &error, code, "Injected refusal.", &req));
        }
        None => {}
    }

    let Some(tenant) = tenant else {
        return Ok(raw(404, "application/json", "{\"error\":\"not_found\"}"));
    };
    if req.method != hyper::Method::POST {
        return Ok(entra_error(
            400,
            "invalid_request",
            900_561,
            "The endpoint only accepts POST requests.",
            &req,
        ));
    }
    let content_type = req
        .headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let correlation = correlation_id(&req.headers);
    let Some(Ok(body)) = form else {
        return Err(Dropped);
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let checked = {
        let state = shared.lock();
        verify::check_request(&state_view(&state), &tenant, &content_type, &body, now)
    };
    match checked {
        Ok(grant) => Ok(issue_token(&shared, &grant, now)),
        Err(refusal) => {
            let answer = refusal_answer(&refusal, &correlation);
            shared.lock().refusals.push(refusal);
            Ok(answer)
        }
    }
}

fn state_view(state: &State) -> verify::Registry<'_> {
    verify::Registry {
        base_url: &state.base_url,
        apps: &state.apps,
        tenants: &state.tenants,
    }
}

/// The first `client_id` field of a form body.
fn form_client_id(body: &[u8]) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(name, _)| name == "client_id")
        .map(|(_, value)| value.into_owned())
}

/// `/{tenant}/oauth2/v2.0/token` → the tenant.
fn token_path_tenant(path: &str) -> Option<String> {
    let mut parts = path.strip_prefix('/')?.split('/');
    let tenant = parts.next()?;
    let rest: Vec<&str> = parts.collect();
    (rest == ["oauth2", "v2.0", "token"] && !tenant.is_empty()).then(|| tenant.to_owned())
}

fn correlation_id(headers: &HeaderMap) -> String {
    headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| uuid::Uuid::parse_str(v).is_ok())
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

fn entra_error(status: u16, error: &str, code: u32, text: &str, req: &Parts) -> Answer {
    let refusal = Refusal {
        status,
        error: error.to_owned(),
        code,
        message: text.to_owned(),
    };
    refusal_answer(&refusal, &correlation_id(&req.headers))
}

/// Entra's error body: the description carries the code, trace and
/// correlation ids and a timestamp; the ids are also separate fields.
fn refusal_answer(refusal: &Refusal, correlation: &str) -> Answer {
    let trace = uuid::Uuid::new_v4().to_string();
    let timestamp = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace('T', " ");
    let description = format!(
        "AADSTS{}: {}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {timestamp}",
        refusal.code, refusal.message
    );
    json(
        refusal.status,
        &serde_json::json!({
            "error": refusal.error,
            "error_description": description,
            "error_codes": [refusal.code],
            "timestamp": timestamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", refusal.code),
        }),
    )
}
