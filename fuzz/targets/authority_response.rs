//! Entra's answers: a success body, an error body at any status, and the
//! classification of the failure.

use tokenbroker::authority::response::{classify, parse_error, parse_retry_after, parse_success};

pub fn run(data: &[u8]) {
    let Some((&status, body)) = data.split_first() else {
        return;
    };
    let _ = parse_success(body);
    let status = 400 + u16::from(status);
    let entra = parse_error(status, body);
    let retry_after = std::str::from_utf8(body).ok().and_then(parse_retry_after);
    let _ = classify(status, &entra.error, &entra.codes, retry_after);
    let _ = entra.to_string();
}
