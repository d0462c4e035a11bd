//! Routing: a request's path to the route that serves it (the mail routes
//! are in `mail`, `$batch` in `batch`), the parsing every route shares
//! (path segments, query options, `$select`, JSON bodies), and the user
//! route.

use super::batch::batch;
use super::mail::{create_message, get_message, get_value, list_messages, send_mail};
use super::reply::{error, header, ok, Reply};
use super::store::Folder;
use super::token::{authenticate, now_secs, Token};
use super::Shared;
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};
use std::collections::HashMap;

const USER_READ_ROLES: &[&str] = &[
    "User.Read.All",
    "User.ReadBasic.All",
    "User.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];

const USER_PROPERTIES: &[&str] = &[
    "id",
    "userPrincipalName",
    "displayName",
    "mail",
    "givenName",
    "surname",
    "jobTitle",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "businessPhones",
];

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

pub(super) fn route_http(
    shared: &Shared,
    parts: &hyper::http::request::Parts,
    body: &[u8],
) -> Reply {
    let segments = match segments(parts.uri.path()) {
        Ok(s) => s,
        Err(reply) => return reply,
    };
    let Some((version, rest)) = segments.split_first() else {
        return error(400, "BadRequest", "Invalid version.");
    };
    let version = if version.eq_ignore_ascii_case("v1.0") {
        "v1.0"
    } else if version.eq_ignore_ascii_case("beta") {
        "beta"
    } else {
        return error(400, "BadRequest", format!("Invalid version: {version}"));
    };
    let revoked_at = shared.lock().revoked_at;
    let token = match authenticate(
        &shared.key,
        revoked_at,
        header(&parts.headers, "authorization"),
        now_secs(),
    ) {
        Ok(token) => token,
        Err(message) => return error(401, "InvalidAuthenticationToken", message),
    };
    let call = Call {
        shared,
        version,
        token: &token,
        method: parts.method.as_str(),
        segments: rest,
        query: parts.uri.query(),
        content_type: header(&parts.headers, "content-type"),
        body,
        in_batch: false,
    };
    if let [only] = rest {
        if only.eq_ignore_ascii_case("$batch") {
            return match call.method {
                "POST" => batch(&call),
                _ => not_allowed(call.method, "POST"),
            };
        }
    }
    route(&call)
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

fn unknown_segment(segment: &str) -> Reply {
    error(
        400,
        "BadRequest",
        format!("Resource not found for the segment '{segment}'."),
    )
}

/// `users('alice@contoso.com')` → the key (OData string key, `''` for `'`).
fn odata_user_key(segment: &str) -> Option<String> {
    let prefix = segment.get(..6)?;
    if !prefix.eq_ignore_ascii_case("users(") {
        return None;
    }
    let quoted = segment.get(6..)?.strip_suffix(')')?;
    let inner = quoted.strip_prefix('\'')?.strip_suffix('\'')?;
    Some(inner.replace("''", "'"))
}

fn is(segment: &str, name: &str) -> bool {
    segment.eq_ignore_ascii_case(name)
}

pub(super) fn route(call: &Call<'_>) -> Reply {
    let Some((first, rest)) = call.segments.split_first() else {
        return unknown_segment(call.version);
    };
    let (user, rest) = if is(first, "users") {
        match rest.split_first() {
            Some((user, rest)) if !user.is_empty() => (user.as_str(), rest),
            _ => return unknown_segment(first),
        }
    } else if let Some(key) = odata_user_key(first) {
        return route_user(call, &key, rest);
    } else {
        return unknown_segment(first);
    };
    route_user(call, user, rest)
}

fn route_user(call: &Call<'_>, user: &str, rest: &[String]) -> Reply {
    let method = call.method;
    match rest {
        [] => match method {
            "GET" => get_user(call, user),
            _ => not_allowed(method, "GET"),
        },
        [messages] if is(messages, "messages") => match method {
            "GET" => list_messages(call, user, None),
            "POST" => create_message(call, user, Folder::Drafts),
            _ => not_allowed(method, "GET, POST"),
        },
        [folders, inbox, messages]
            if is(folders, "mailFolders") && is(inbox, "inbox") && is(messages, "messages") =>
        {
            match method {
                "GET" => list_messages(call, user, Some(Folder::Inbox)),
                "POST" => create_message(call, user, Folder::Inbox),
                _ => not_allowed(method, "GET, POST"),
            }
        }
        [folders, _, messages] if is(folders, "mailFolders") && is(messages, "messages") => error(
            404,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        ),
        [messages, id] if is(messages, "messages") => match method {
            "GET" => get_message(call, user, id),
            _ => not_allowed(method, "GET"),
        },
        [messages, id, value] if is(messages, "messages") && is(value, "$value") => match method {
            "GET" => get_value(call, user, id),
            _ => not_allowed(method, "GET"),
        },
        [send] if is(send, "sendMail") => match method {
            "POST" => send_mail(call, user),
            _ => not_allowed(method, "POST"),
        },
        _ => unknown_segment(rest.last().map_or("", String::as_str)),
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

fn get_user(call: &Call<'_>, key: &str) -> Reply {
    if !call.token.has_any(USER_READ_ROLES) {
        return error(
            403,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        );
    }
    let options = match query_options(call.query, &["$select"]) {
        Ok(o) => o,
        Err(reply) => return reply,
    };
    let select = match selection(&options, USER_PROPERTIES, |name| {
        error(
            400,
            "Request_BadRequest",
            format!("Could not find a property named '{name}' on type 'microsoft.graph.user'."),
        )
    }) {
        Ok(s) => s,
        Err(reply) => return reply,
    };
    let state = call.shared.lock();
    let Some(user) = state.user(&call.token.tid, key) else {
        return error(
            404,
            "Request_ResourceNotFound",
            format!("Resource '{key}' does not exist or one of its queried reference-property objects are not present."),
        );
    };
    let context = match &select {
        Some(s) => format!(
            "{}/{}/$metadata#users({})/$entity",
            state.link_base,
            call.version,
            s.join(",")
        ),
        None => format!(
            "{}/{}/$metadata#users/$entity",
            state.link_base, call.version
        ),
    };
    let mut body = project(&user.json(), select.as_deref(), &[]);
    if let Value::Object(map) = &mut body {
        map.insert("@odata.context".into(), Value::String(context));
    }
    ok(200, body)
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
