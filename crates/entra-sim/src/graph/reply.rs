//! Answers in Graph's shape: the error body and its ids, the headers every
//! answer carries, gzip when the caller allows it, and the body that streams
//! `$value`.

use super::store::ValuePattern;
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

/// What Graph sends with a JSON answer that succeeded (errors are plain
/// `application/json`).
pub(super) const ODATA_JSON: &str =
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";
pub(super) const WWW_AUTHENTICATE: &str = "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"";

const VALUE_CHUNK: usize = 64 * 1024;

/// An answer body: whole (with its length) or `$value` made chunk by chunk
/// as the connection takes them (no length: chunked).
pub(super) enum GraphBody {
    Full(Option<Bytes>),
    Value {
        pattern: ValuePattern,
        offset: usize,
        size: usize,
    },
}

impl hyper::body::Body for GraphBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            GraphBody::Full(bytes) => Poll::Ready(
                bytes
                    .take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            GraphBody::Value {
                pattern,
                offset,
                size,
            } => {
                if *offset >= *size {
                    return Poll::Ready(None);
                }
                let len = (*size - *offset).min(VALUE_CHUNK);
                let chunk = pattern.fill(*offset, len);
                *offset += len;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GraphBody::Full(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            GraphBody::Value { offset, size, .. } => offset >= size,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GraphBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            GraphBody::Value { .. } => SizeHint::default(),
        }
    }
}

/// An answer before rendering: a batch renders it as a JSON step, HTTP as
/// a response.
pub(super) enum Reply {
    Json {
        status: u16,
        body: Value,
        headers: Vec<(&'static str, String)>,
    },
    Error {
        status: u16,
        code: &'static str,
        message: String,
        headers: Vec<(&'static str, String)>,
    },
    Empty {
        status: u16,
    },
    Value {
        message_id: String,
        size: usize,
    },
}

pub(super) fn error(status: u16, code: &'static str, message: impl Into<String>) -> Reply {
    Reply::Error {
        status,
        code,
        message: message.into(),
        headers: Vec::new(),
    }
}

pub(super) fn ok(status: u16, body: Value) -> Reply {
    Reply::Json {
        status,
        body,
        headers: Vec::new(),
    }
}

/// The ids an answer carries: its own and the caller's.
pub(super) struct Ids {
    pub(super) request: String,
    client: Option<String>,
}

impl Ids {
    pub(super) fn new(client: Option<String>) -> Ids {
        Ids {
            request: uuid::Uuid::new_v4().to_string(),
            client,
        }
    }

    /// Graph answers the caller's id, or its own when none was sent.
    pub(super) fn client(&self) -> &str {
        self.client.as_deref().unwrap_or(&self.request)
    }
}

pub(super) fn error_body(code: &str, message: &str, ids: &Ids) -> Value {
    json!({"error": {
        "code": code,
        "message": message,
        "innerError": {
            "date": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            "request-id": ids.request,
            "client-request-id": ids.client(),
        },
    }})
}

pub(super) fn fault_reply(status: u16, retry_after: Option<u64>) -> Reply {
    let (code, message) = match status {
        429 => (
            "TooManyRequests",
            "Too many requests. Retry after the time in the Retry-After header.",
        ),
        503 => (
            "ServiceUnavailable",
            "The service is temporarily unavailable. Please retry later.",
        ),
        502 => ("BadGateway", "Bad gateway."),
        504 => ("GatewayTimeout", "The gateway timed out."),
        500 => ("InternalServerError", "An internal server error occurred."),
        _ => ("UnknownError", "An error occurred."),
    };
    Reply::Error {
        status,
        code,
        message: message.to_owned(),
        headers: retry_after
            .map(|s| vec![("Retry-After", s.to_string())])
            .unwrap_or_default(),
    }
}

pub(super) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(super) fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(hyper::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

fn gzip(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).ok()?;
    encoder.finish().ok()
}

pub(super) fn render(reply: Reply, ids: &Ids, gzip_ok: bool) -> Response<GraphBody> {
    let (status, content_type, body, extra): (u16, Option<&str>, GraphBody, _) = match reply {
        Reply::Json {
            status,
            body,
            headers,
        } => (
            status,
            Some(ODATA_JSON),
            GraphBody::Full(Some(Bytes::from(body.to_string()))),
            headers,
        ),
        Reply::Error {
            status,
            code,
            message,
            headers,
        } => (
            status,
            Some("application/json"),
            GraphBody::Full(Some(Bytes::from(
                error_body(code, &message, ids).to_string(),
            ))),
            headers,
        ),
        Reply::Empty { status } => (status, None, GraphBody::Full(None), Vec::new()),
        Reply::Value { message_id, size } => (
            200,
            Some("text/plain"),
            GraphBody::Value {
                pattern: ValuePattern::new(&message_id),
                offset: 0,
                size,
            },
            Vec::new(),
        ),
    };
    let is_json = content_type.is_some_and(|t| t.starts_with("application/json"));
    let (body, compressed) = match body {
        GraphBody::Full(Some(bytes)) if is_json && gzip_ok => match gzip(&bytes) {
            Some(packed) => (GraphBody::Full(Some(Bytes::from(packed))), true),
            None => (GraphBody::Full(Some(bytes)), false),
        },
        other => (other, false),
    };
    let mut answer = Response::new(body);
    *answer.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = answer.headers_mut();
    let mut set = |name: &str, value: &str| {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::from_str(value)) {
            headers.insert(name, value);
        }
    };
    if let Some(content_type) = content_type {
        set("content-type", content_type);
    }
    if is_json {
        set("vary", "Accept-Encoding");
    }
    if compressed {
        set("content-encoding", "gzip");
    }
    set("request-id", &ids.request);
    set("client-request-id", ids.client());
    for (name, value) in &extra {
        set(name, value);
    }
    if status == 401 {
        set("www-authenticate", WWW_AUTHENTICATE);
    }
    answer
}
