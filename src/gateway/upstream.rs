//! The connection pool to Microsoft Graph (the I/O edge of the gateway):
//! rustls on aws-lc-rs, `app.ca_file` trusted as for the authority, no
//! redirects followed (a redirect goes back to the caller, as Graph sent it).

use crate::authority::load_ca_file;
use hyper::header::HeaderMap;
use hyper::Method;
use std::path::Path;
use std::time::Duration;

/// A pooled HTTP client for Graph.
#[derive(Debug, Clone)]
pub struct GraphClient {
    /// `None` when no client could be built (see [`GraphClient::unusable`]).
    http: Option<reqwest::Client>,
}

/// Why Graph was not reached, or its answer broke off.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("Microsoft Graph did not answer within graph.timeout ({0:?})")]
    Timeout(Duration),
    #[error("the request body is larger than graph.max_request_bytes")]
    BodyTooLarge,
    #[error("Microsoft Graph could not be reached: {0}")]
    Unreachable(String),
}

impl GraphClient {
    /// A client trusting the system roots and, when given, `ca_file`.
    pub fn new(ca_file: Option<&Path>) -> Result<GraphClient, String> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tokenbroker/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            builder = builder.tls_certs_merge(load_ca_file(path).map_err(|e| e.to_string())?);
        }
        Ok(GraphClient {
            http: Some(builder.build().map_err(|e| e.to_string())?),
        })
    }

    /// A client that answers every request 502 (the TLS stack could not
    /// start; the daemon still serves tokens).
    pub fn unusable() -> GraphClient {
        GraphClient { http: None }
    }

    /// Sends one request; the answer's body streams.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: reqwest::Body,
        timeout: Duration,
    ) -> Result<hyper::Response<reqwest::Body>, UpstreamError> {
        let Some(http) = &self.http else {
            return Err(UpstreamError::Unreachable(
                "the gateway's HTTP client could not be built at start-up (see the log)".into(),
            ));
        };
        let sent = http
            .request(method, url)
            .headers(headers)
            .body(body)
            .timeout(timeout)
            .send()
            .await;
        match sent {
            Ok(response) => Ok(response.into()),
            Err(e) if e.is_timeout() => Err(UpstreamError::Timeout(timeout)),
            Err(e) if is_too_large(&e) => Err(UpstreamError::BodyTooLarge),
            Err(e) => Err(UpstreamError::Unreachable(without_url(&e))),
        }
    }
}

/// Whether sending failed because the caller's body went over its limit.
fn is_too_large(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// The error's chain without the URL (its query may hold what the caller
/// asked for; the access line never records queries either).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = String::from(if e.is_connect() {
        "connecting failed"
    } else {
        "the request failed"
    });
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
