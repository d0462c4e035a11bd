//! The token endpoint's HTTP answers: a whole body with its content type
//! (what the server and the token issuer both answer with).

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

pub(crate) type Answer = Response<Full<Bytes>>;

pub(crate) fn raw(status: u16, content_type: &str, body: &'static str) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *answer.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        answer
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    answer
}

pub(crate) fn json(status: u16, body: &serde_json::Value) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from(body.to_string())));
    *answer.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    answer.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    answer.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store, no-cache"),
    );
    answer
}
