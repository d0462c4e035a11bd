//! Routing: a request's path to the route that serves it (the mail routes
//! are in `mail`, `$batch` in `batch`), the parsing every route shares
//! (path segments, query options, `$select`, JSON bodies), and the user
//! route.

use super::batch::batch;
use super::mail::{create_message, get_message, get_value, list_messages, send_mail};
use super::reply::{error, header, ok, Reply};
use super::request::{not_allowed, project, query_options, segments, selection, Call};
use super::store::Folder;
use super::token::{authenticate, now_secs};
use super::Shared;
use serde_json::Value;

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
                "POST" => batch(&call, route),
                _ => not_allowed(call.method, "POST"),
            };
        }
    }
    route(&call)
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
