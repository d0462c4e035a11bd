//! The mail routes: listing messages (pages, `$select`, `$skiptoken`), one
//! message, its `$value`, creating a message, `sendMail`; what each app role
//! lets a token see and do.

use super::reply::{error, ok, Reply};
use super::request::{json_body, odata_quote, project, query_options, selection, Call};
use super::store::{folder_id, message_id, Folder, Message};
use super::token::Token;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::time::SystemTime;

const DEFAULT_TOP: usize = 10;
const MAX_TOP: usize = 1000;

/// Encodes everything but RFC 3986 unreserved characters (`@` → `%40`), as
/// Graph's links do.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

const MAIL_READ_ROLES: &[&str] = &[
    "Mail.Read",
    "Mail.ReadWrite",
    "Mail.ReadBasic",
    "Mail.ReadBasic.All",
];
/// Mail.ReadBasic(.All) leave out the body: `$value` needs one of these.
const MAIL_CONTENT_ROLES: &[&str] = &["Mail.Read", "Mail.ReadWrite"];
const MAIL_WRITE_ROLES: &[&str] = &["Mail.ReadWrite"];
const MAIL_SEND_ROLES: &[&str] = &["Mail.Send"];

/// The properties of `microsoft.graph.message` a request may name (in
/// `$select` or a body); anything else is refused as Graph refuses it.
const MESSAGE_PROPERTIES: &[&str] = &[
    "id",
    "createdDateTime",
    "lastModifiedDateTime",
    "changeKey",
    "categories",
    "receivedDateTime",
    "sentDateTime",
    "hasAttachments",
    "internetMessageId",
    "subject",
    "bodyPreview",
    "importance",
    "parentFolderId",
    "conversationId",
    "isDeliveryReceiptRequested",
    "isReadReceiptRequested",
    "isRead",
    "isDraft",
    "webLink",
    "inferenceClassification",
    "body",
    "sender",
    "from",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "flag",
];
/// Writable in a body besides [`MESSAGE_PROPERTIES`].
const MESSAGE_NAVIGATIONS: &[&str] = &[
    "attachments",
    "internetMessageHeaders",
    "singleValueExtendedProperties",
    "multiValueExtendedProperties",
    "uniqueBody",
];

fn forbidden_mail() -> Reply {
    error(
        403,
        "ErrorAccessDenied",
        "Access is denied. Check credentials and try again.",
    )
}

fn invalid_user(user: &str) -> Reply {
    error(
        404,
        "ErrorInvalidUser",
        format!("The requested user '{user}' is invalid."),
    )
}

fn item_not_found() -> Reply {
    error(
        404,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    )
}

/// The opaque `$skiptoken` for resuming at `offset`.
fn skiptoken(offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("entra-sim:{offset}"))
}

fn skip_offset(token: &str) -> Option<usize> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    String::from_utf8(bytes)
        .ok()?
        .strip_prefix("entra-sim:")?
        .parse()
        .ok()
}

/// A message as a token with only Mail.ReadBasic(.All) may see it.
fn visible(message: &Value, token: &Token, select: Option<&[&str]>) -> Value {
    let mut out = project(message, select, &["@odata.etag", "id"]);
    if !token.has_any(MAIL_CONTENT_ROLES) {
        if let Value::Object(map) = &mut out {
            map.remove("body");
            map.remove("bodyPreview");
            map.remove("uniqueBody");
        }
    }
    out
}

fn message_select(options: &HashMap<String, String>) -> Result<Option<Vec<&'static str>>, Reply> {
    selection(options, MESSAGE_PROPERTIES, |name| {
        error(
            400,
            "RequestBroker--ParseUri",
            format!("Could not find a property named '{name}' on type 'microsoft.graph.message'."),
        )
    })
}

pub(super) fn list_messages(call: &Call<'_>, key: &str, folder: Option<Folder>) -> Reply {
    if !call.token.has_any(MAIL_READ_ROLES) {
        return forbidden_mail();
    }
    let options = match query_options(call.query, &["$top", "$skiptoken", "$select"]) {
        Ok(o) => o,
        Err(reply) => return reply,
    };
    let top = match options.get("$top") {
        None => DEFAULT_TOP,
        Some(v) => match v.parse::<usize>() {
            Ok(top) if top <= MAX_TOP => top,
            Ok(_) => {
                return error(
                    400,
                    "BadRequest",
                    format!("The value '{v}' of the query option '$top' exceeds the maximum of {MAX_TOP}."),
                )
            }
            Err(_) => {
                return error(
                    400,
                    "BadRequest",
                    format!("Invalid value '{v}' for $top query option found. The $top query option requires a non-negative integer value."),
                )
            }
        },
    };
    let offset = match options.get("$skiptoken") {
        None => 0,
        Some(t) => match skip_offset(t) {
            Some(offset) => offset,
            None => return error(400, "BadRequest", "The $skiptoken is not valid."),
        },
    };
    let select = match message_select(&options) {
        Ok(s) => s,
        Err(reply) => return reply,
    };
    let state = call.shared.lock();
    let Some(user) = state.user(&call.token.tid, key) else {
        return invalid_user(key);
    };
    let all: Vec<&Message> = user
        .messages
        .iter()
        .filter(|m| folder.is_none_or(|f| m.folder == f))
        .collect();
    let page: Vec<Value> = all
        .iter()
        .skip(offset)
        .take(top)
        .map(|m| visible(&m.json, call.token, select.as_deref()))
        .collect();
    let (suffix, context_suffix) = match folder {
        Some(_) => (
            "mailFolders/inbox/messages",
            "mailFolders('inbox')/messages",
        ),
        None => ("messages", "messages"),
    };
    let selected = select.as_ref().map(|s| s.join(","));
    let context = format!(
        "{}/{}/$metadata#users('{}')/{}{}",
        state.link_base,
        call.version,
        odata_quote(key),
        context_suffix,
        selected
            .as_ref()
            .map(|s| format!("({s})"))
            .unwrap_or_default()
    );
    let mut body = json!({"@odata.context": context, "value": page});
    let next = offset.saturating_add(top);
    if top > 0 && next < all.len() {
        let select_part = selected
            .as_ref()
            .map(|s| format!("&%24select={}", utf8_percent_encode(s, SEGMENT)))
            .unwrap_or_default();
        body["@odata.nextLink"] = Value::String(format!(
            "{}/{}/users/{}/{}?%24top={top}{select_part}&%24skiptoken={}",
            state.link_base,
            call.version,
            utf8_percent_encode(key, SEGMENT),
            suffix,
            skiptoken(next)
        ));
    }
    ok(200, body)
}

pub(super) fn get_message(call: &Call<'_>, key: &str, id: &str) -> Reply {
    if !call.token.has_any(MAIL_READ_ROLES) {
        return forbidden_mail();
    }
    let options = match query_options(call.query, &["$select"]) {
        Ok(o) => o,
        Err(reply) => return reply,
    };
    let select = match message_select(&options) {
        Ok(s) => s,
        Err(reply) => return reply,
    };
    let state = call.shared.lock();
    let Some(user) = state.user(&call.token.tid, key) else {
        return invalid_user(key);
    };
    let Some(message) = user.messages.iter().find(|m| m.json["id"] == id) else {
        return item_not_found();
    };
    let mut body = visible(&message.json, call.token, select.as_deref());
    if let Value::Object(map) = &mut body {
        map.insert(
            "@odata.context".into(),
            Value::String(format!(
                "{}/{}/$metadata#users('{}')/messages/$entity",
                state.link_base,
                call.version,
                odata_quote(key)
            )),
        );
    }
    ok(200, body)
}

pub(super) fn get_value(call: &Call<'_>, key: &str, id: &str) -> Reply {
    if !call.token.has_any(MAIL_CONTENT_ROLES) {
        return forbidden_mail();
    }
    if call.in_batch {
        return error(
            400,
            "BadRequest",
            "$value is not served inside a batch by this simulator; request it on its own.",
        );
    }
    let state = call.shared.lock();
    let Some(user) = state.user(&call.token.tid, key) else {
        return invalid_user(key);
    };
    if !user.messages.iter().any(|m| m.json["id"] == id) {
        return item_not_found();
    }
    Reply::Value {
        message_id: id.to_owned(),
        size: state.value_size,
    }
}

/// Refuses properties `microsoft.graph.message` does not have.
fn check_message_properties(message: &Map<String, Value>) -> Result<(), Reply> {
    for name in message.keys() {
        let annotation = name.contains('@');
        if !annotation
            && !MESSAGE_PROPERTIES.contains(&name.as_str())
            && !MESSAGE_NAVIGATIONS.contains(&name.as_str())
        {
            return Err(error(
                400,
                "RequestBodyRead",
                format!("The property '{name}' does not exist on type 'microsoft.graph.message'. Make sure to only use property names that are defined by the type or mark the type as open type."),
            ));
        }
    }
    for list in ["toRecipients", "ccRecipients", "bccRecipients", "replyTo"] {
        match message.get(list) {
            None | Some(Value::Null) => {}
            Some(Value::Array(items))
                if items
                    .iter()
                    .all(|r| r["emailAddress"]["address"].is_string()) => {}
            Some(_) => {
                return Err(error(
                    400,
                    "RequestBodyRead",
                    format!("Cannot read the value of '{list}': a collection of recipients with 'emailAddress.address' is expected."),
                ))
            }
        }
    }
    Ok(())
}

pub(super) fn create_message(call: &Call<'_>, key: &str, folder: Folder) -> Reply {
    if !call.token.has_any(MAIL_WRITE_ROLES) {
        return forbidden_mail();
    }
    if call.shared.lock().user(&call.token.tid, key).is_none() {
        return invalid_user(key);
    }
    let input = match json_body(call) {
        Ok(map) => map,
        Err(reply) => return reply,
    };
    if let Err(reply) = check_message_properties(&input) {
        return reply;
    }
    let mut state = call.shared.lock();
    let link_base = state.link_base.clone();
    let Some(user) = state.user_mut(&call.token.tid, key) else {
        return invalid_user(key);
    };
    let id = message_id();
    let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let content = input
        .get("body")
        .and_then(|b| b["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    let mut message = json!({
        "@odata.etag": format!("W/\"{}\"", uuid::Uuid::new_v4().simple()),
        "id": id,
        "createdDateTime": now,
        "lastModifiedDateTime": now,
        "changeKey": uuid::Uuid::new_v4().simple().to_string(),
        "categories": [],
        "receivedDateTime": now,
        "sentDateTime": now,
        "hasAttachments": false,
        "internetMessageId": format!("<{}@entra-sim.invalid>", uuid::Uuid::new_v4().simple()),
        "subject": "",
        "bodyPreview": content.chars().take(255).collect::<String>(),
        "importance": "normal",
        "parentFolderId": folder_id(folder),
        "conversationId": uuid::Uuid::new_v4().simple().to_string(),
        "isDeliveryReceiptRequested": false,
        "isReadReceiptRequested": false,
        "isRead": true,
        "isDraft": true,
        "webLink": format!("https://outlook.office365.com/owa/?ItemID={id}"),
        "inferenceClassification": "focused",
        "body": {"contentType": "text", "content": ""},
        "sender": null,
        "from": null,
        "toRecipients": [],
        "ccRecipients": [],
        "bccRecipients": [],
        "replyTo": [],
        "flag": {"flagStatus": "notFlagged"},
    });
    for (name, value) in input {
        // Server-set properties keep the server's value.
        if !matches!(
            name.as_str(),
            "id" | "createdDateTime"
                | "lastModifiedDateTime"
                | "changeKey"
                | "isDraft"
                | "parentFolderId"
                | "bodyPreview"
                | "webLink"
        ) && !name.contains('@')
        {
            message[name.as_str()] = value;
        }
    }
    let location = format!(
        "{link_base}/{}/users/{}/messages/{id}",
        call.version, user.id
    );
    let mut body = message.clone();
    body["@odata.context"] = Value::String(format!(
        "{link_base}/{}/$metadata#users('{}')/messages/$entity",
        call.version,
        odata_quote(key)
    ));
    user.messages.push(Message {
        folder,
        json: message,
    });
    Reply::Json {
        status: 201,
        body,
        headers: vec![("Location", location)],
    }
}

pub(super) fn send_mail(call: &Call<'_>, key: &str) -> Reply {
    if !call.token.has_any(MAIL_SEND_ROLES) {
        return forbidden_mail();
    }
    if call.shared.lock().user(&call.token.tid, key).is_none() {
        return invalid_user(key);
    }
    // Graph reads action parameter names case-insensitively: the SDKs send
    // the metadata's `Message` and `SaveToSentItems`, the docs `message`
    // and `saveToSentItems`.
    let input: Map<String, Value> = match json_body(call) {
        Ok(map) => map
            .into_iter()
            .map(|(name, value)| {
                let canonical = ["message", "saveToSentItems"]
                    .into_iter()
                    .find(|p| p.eq_ignore_ascii_case(&name));
                (canonical.map_or(name, str::to_owned), value)
            })
            .collect(),
        Err(reply) => return reply,
    };
    for name in input.keys() {
        if name != "message" && name != "saveToSentItems" {
            return error(
                400,
                "RequestBodyRead",
                format!("The parameter '{name}' in the request payload is not a valid parameter for the operation 'sendMail'."),
            );
        }
    }
    let Some(Value::Object(message)) = input.get("message") else {
        return error(
            400,
            "ErrorInvalidParameter",
            "The value of the parameter 'Message' is empty.",
        );
    };
    if let Err(reply) = check_message_properties(message) {
        return reply;
    }
    if !matches!(
        input.get("saveToSentItems"),
        None | Some(Value::Bool(_)) | Some(Value::Null)
    ) {
        return error(
            400,
            "RequestBodyRead",
            "Cannot convert the literal to the expected type 'Edm.Boolean' for 'saveToSentItems'.",
        );
    }
    let recipients: usize = ["toRecipients", "ccRecipients", "bccRecipients"]
        .iter()
        .map(|l| {
            message
                .get(*l)
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
        })
        .sum();
    if recipients == 0 {
        return error(
            400,
            "ErrorInvalidRecipients",
            "At least one recipient isn't valid., A message can't be sent because it contains no recipients.",
        );
    }
    let mut state = call.shared.lock();
    let Some(user) = state.user_mut(&call.token.tid, key) else {
        return invalid_user(key);
    };
    user.sent.push(Value::Object(message.clone()));
    Reply::Empty { status: 202 }
}
