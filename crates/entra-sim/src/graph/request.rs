//! What every route reads of a request: the call itself (from HTTP or a
//! `$batch` step), its path segments, query options, `$select` and JSON
//! body, and the answers shared by all routes.

use super::reply::{error, Reply};
use super::token::Token;
use super::Shared;
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Percent-decoded path segments (a single trailing `/` ignored).
pub(super) fn segments(path: &str) -> Result<Vec<String>, Reply> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    path.split('/')
        .map(|s| {
            percent_decode_str(s)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| error(400, "BadRequest", "The request URL is not valid UTF-8."))
        })
        .collect()
}

/// One request to route: from HTTP or a step of a batch.
pub(super) struct Call<'a> {
    pub(super) shared: &'a Shared,
    pub(super) version: &'a str,
    pub(super) token: &'a Token,
    pub(super) method: &'a str,
    /// After the version, percent-decoded.
    pub(super) segments: &'a [String],
    pub(super) query: Option<&'a str>,
    pub(super) content_type: Option<&'a str>,
    pub(super) body: &'a [u8],
    pub(super) in_batch: bool,
}

pub(super) fn not_allowed(method: &str, allow: &'static str) -> Reply {
    Reply::Error {
        status: 405,
        code: "BadRequest",
        message: format!("The HTTP method '{method}' is not allowed for this resource."),
        headers: vec![("Allow", allow.to_owned())],
    }
}

/// The query's options, percent-decoded; names starting with `$` are
/// matched case-insensitively against `allowed` and kept lower-case.
pub(super) fn query_options(
    query: Option<&str>,
    allowed: &[&str],
) -> Result<HashMap<String, String>, Reply> {
    let mut options = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if !name.starts_with('$') {
            continue;
        }
        let name = name.to_ascii_lowercase();
        if !allowed.contains(&name.as_str()) {
            return Err(error(
                400,
                "BadRequest",
                format!("The query option '{name}' is not supported on this resource."),
            ));
        }
        if options.insert(name.clone(), value.into_owned()).is_some() {
            return Err(error(
                400,
                "BadRequest",
                format!("Query option '{name}' was specified more than once, but it must be specified at most once."),
            ));
        }
    }
    Ok(options)
}

/// `$select` names, canonical, checked against `known`.
pub(super) fn selection(
    options: &HashMap<String, String>,
    known: &[&'static str],
    unknown: impl Fn(&str) -> Reply,
) -> Result<Option<Vec<&'static str>>, Reply> {
    let Some(select) = options.get("$select") else {
        return Ok(None);
    };
    let mut picked = Vec::new();
    for name in select.split(',').map(str::trim) {
        match known.iter().find(|k| k.eq_ignore_ascii_case(name)) {
            Some(k) => picked.push(*k),
            None => return Err(unknown(name)),
        }
    }
    Ok(Some(picked))
}

pub(super) fn project(object: &Value, select: Option<&[&str]>, always: &[&str]) -> Value {
    let Some(select) = select else {
        return object.clone();
    };
    let mut out = Map::new();
    for name in always.iter().chain(select) {
        if let Some(value) = object.get(*name) {
            out.insert((*name).to_owned(), value.clone());
        }
    }
    Value::Object(out)
}

pub(super) fn odata_quote(key: &str) -> String {
    key.replace('\'', "''")
}

/// The JSON object of a POST body, refused as Graph refuses a bad one.
pub(super) fn json_body(call: &Call<'_>) -> Result<Map<String, Value>, Reply> {
    const UNREADABLE: &str = "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.";
    let is_json = call.content_type.is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    if call.body.iter().all(u8::is_ascii_whitespace) {
        return Err(error(
            400,
            "BadRequest",
            "Empty Payload. JSON content expected.",
        ));
    }
    if !is_json {
        return Err(error(400, "BadRequest", UNREADABLE));
    }
    match serde_json::from_slice::<Value>(call.body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(error(400, "BadRequest", UNREADABLE)),
    }
}
