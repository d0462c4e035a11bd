//! A strict stand-in for the mail routes of Microsoft Graph: it trusts the
//! access tokens of one [`SimulatedAuthority`] and checks every request the
//! way Graph does (token, audience, lifetime, revocation, app roles, the
//! tenant of the token), so a client that passes here is unlikely to be
//! surprised by the real service. Errors have Graph's shape and wording.

use crate::{SimError, SimulatedAuthority};
use aws_lc_rs::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Graph's own application id, which v2.0 tokens carry as `aud`.
const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
const GRAPH_AUDIENCE: &str = "https://graph.microsoft.com";
const MAX_BODY: usize = 4 * 1024 * 1024;
const DEFAULT_TOP: usize = 10;
const MAX_TOP: usize = 1000;
const MAX_BATCH: usize = 20;
const VALUE_CHUNK: usize = 64 * 1024;
/// What Graph sends with a JSON answer that succeeded (errors are plain
/// `application/json`).
const ODATA_JSON: &str =
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";
const WWW_AUTHENTICATE: &str = "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"";
/// Encodes everything but RFC 3986 unreserved characters (`@` → `%40`), as
/// Graph's links do.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

const USER_READ_ROLES: &[&str] = &[
    "User.Read.All",
    "User.ReadBasic.All",
    "User.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
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

/// One request as the stand-in received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// The raw path as received, still percent-encoded.
    pub path: String,
    /// The raw query, without `?`.
    pub query: Option<String>,
    /// Every header, names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Folder {
    Inbox,
    Drafts,
}

#[derive(Debug)]
struct Message {
    folder: Folder,
    json: Value,
}

#[derive(Debug)]
struct User {
    /// Lower-case tenant GUID.
    tenant: String,
    id: String,
    upn: String,
    messages: Vec<Message>,
    sent: Vec<Value>,
}

impl User {
    fn json(&self) -> Value {
        let local = self.upn.split('@').next().unwrap_or_default();
        let mut name: Vec<char> = local.chars().collect();
        if let Some(first) = name.first_mut() {
            *first = first.to_ascii_uppercase();
        }
        let name: String = name.into_iter().collect();
        json!({
            "id": self.id,
            "userPrincipalName": self.upn,
            "displayName": name,
            "mail": self.upn,
            "givenName": name,
            "surname": null,
            "jobTitle": null,
            "mobilePhone": null,
            "officeLocation": null,
            "preferredLanguage": null,
            "businessPhones": [],
        })
    }
}

#[derive(Debug)]
struct State {
    users: Vec<User>,
    value_size: usize,
    revoked_at: Option<u64>,
    faults: VecDeque<(u16, Option<u64>)>,
    requests: Vec<SeenRequest>,
    link_base: String,
}

impl State {
    /// A user of `tenant` by object id or UPN, in any case.
    fn user(&self, tenant: &str, key: &str) -> Option<&User> {
        self.users.iter().find(|u| matches(u, tenant, key))
    }

    fn user_mut(&mut self, tenant: &str, key: &str) -> Option<&mut User> {
        self.users.iter_mut().find(|u| matches(u, tenant, key))
    }
}

fn matches(user: &User, tenant: &str, key: &str) -> bool {
    user.tenant.eq_ignore_ascii_case(tenant)
        && (user.id.eq_ignore_ascii_case(key) || user.upn.eq_ignore_ascii_case(key))
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// The authority's token signing key (PKCS#1 DER).
    key: Vec<u8>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running Microsoft Graph stand-in. Stops when dropped.
#[derive(Debug)]
pub struct SimulatedGraph {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl SimulatedGraph {
    /// Starts on `127.0.0.1:0`, trusting the tokens `authority` signs.
    pub async fn start(authority: &SimulatedAuthority) -> Result<SimulatedGraph, SimError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| SimError(format!("binding 127.0.0.1:0: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| SimError(format!("listener address: {e}")))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                users: Vec::new(),
                value_size: 4096,
                revoked_at: None,
                faults: VecDeque::new(),
                requests: Vec::new(),
                link_base: GRAPH_AUDIENCE.to_owned(),
            }),
            key: authority.token_signing_key(),
        });
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(serve(listener, Arc::clone(&shared), stopped));
        Ok(SimulatedGraph { shared, addr, stop })
    }

    /// `http://127.0.0.1:PORT`: what a client configures as its Graph host.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The host of absolute links in answers (`@odata.nextLink`,
    /// `Location`, `@odata.context`); default `https://graph.microsoft.com`,
    /// as the real service writes them whatever host it was reached by.
    pub fn set_link_base(&self, base: &str) {
        self.shared.lock().link_base = base.trim_end_matches('/').to_owned();
    }

    /// Adds a user to `tenant_id` (the tenant GUID, as `consent` returns
    /// it); returns the user's object id. A UPN already there keeps its id.
    pub fn add_user(&self, tenant_id: &str, upn: &str) -> String {
        let mut state = self.shared.lock();
        if let Some(user) = state.user(tenant_id, upn) {
            return user.id.clone();
        }
        let id = uuid::Uuid::new_v4().to_string();
        state.users.push(User {
            tenant: tenant_id.to_ascii_lowercase(),
            id: id.clone(),
            upn: upn.to_owned(),
            messages: Vec::new(),
            sent: Vec::new(),
        });
        id
    }

    /// Adds `count` messages to the inbox of `upn` (added first if absent),
    /// with subjects "Message N" numbered on from those already there.
    pub fn add_messages(&self, tenant_id: &str, upn: &str, count: usize) {
        self.add_user(tenant_id, upn);
        let mut state = self.shared.lock();
        let Some(user) = state.user_mut(tenant_id, upn) else {
            return;
        };
        let first = user.messages.len() + 1;
        for n in first..first + count {
            let json = inbox_message(n, &user.upn);
            user.messages.push(Message {
                folder: Folder::Inbox,
                json,
            });
        }
    }

    /// The size in bytes of each message's `$value` download (default 4096).
    pub fn set_value_size(&self, bytes: usize) {
        self.shared.lock().value_size = bytes;
    }

    /// The MIME content `$value` serves for `message_id` at the current size.
    pub fn expected_value(&self, message_id: &str) -> Vec<u8> {
        value_bytes(message_id, self.shared.lock().value_size)
    }

    /// From now on every token issued at or before this second is answered
    /// 401, as after a continuous-access-evaluation revocation. A token
    /// issued later in the same second is refused too (`iat` has seconds).
    pub fn revoke_issued_tokens(&self) {
        self.shared.lock().revoked_at = Some(now_secs());
    }

    /// The next `times` requests get `status` (429, 503, …) in Graph's
    /// error shape, with `Retry-After` when given, before any other check.
    pub fn push_status(&self, status: u16, retry_after_secs: Option<u64>, times: usize) {
        let mut state = self.shared.lock();
        for _ in 0..times {
            state.faults.push_back((status, retry_after_secs));
        }
    }

    /// Every request received, in order (a `$batch` counts once).
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.shared.lock().requests.clone()
    }

    /// How many requests were received.
    pub fn request_count(&self) -> usize {
        self.shared.lock().requests.len()
    }

    /// The `message` objects of the `sendMail` requests `upn` made.
    pub fn sent_mail(&self, tenant_id: &str, upn: &str) -> Vec<Value> {
        self.shared
            .lock()
            .user(tenant_id, upn)
            .map(|u| u.sent.clone())
            .unwrap_or_default()
    }

    /// The messages in `upn`'s mailbox now, those created by requests too.
    pub fn messages(&self, tenant_id: &str, upn: &str) -> Vec<Value> {
        self.shared
            .lock()
            .user(tenant_id, upn)
            .map(|u| u.messages.iter().map(|m| m.json.clone()).collect())
            .unwrap_or_default()
    }
}

impl Drop for SimulatedGraph {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The `$value` (MIME) content of `message_id` cut to `size` bytes: a
/// header naming the message, then one line repeated. What a download
/// must equal, byte for byte.
pub fn value_bytes(message_id: &str, size: usize) -> Vec<u8> {
    ValuePattern::new(message_id).fill(0, size)
}

struct ValuePattern {
    head: Vec<u8>,
    line: Vec<u8>,
}

impl ValuePattern {
    fn new(message_id: &str) -> ValuePattern {
        ValuePattern {
            head: format!(
                "Message-ID: <{message_id}@entra-sim.invalid>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
            )
            .into_bytes(),
            line: format!("Body of message {message_id}, one line repeated to size.\r\n")
                .into_bytes(),
        }
    }

    /// Bytes `offset..offset + len` of the endless content.
    fn fill(&self, offset: usize, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut at = offset;
        while out.len() < len {
            let want = len - out.len();
            let piece = if at < self.head.len() {
                &self.head[at..]
            } else {
                &self.line[(at - self.head.len()) % self.line.len()..]
            };
            let take = piece.len().min(want);
            out.extend_from_slice(&piece[..take]);
            at += take;
        }
        out
    }
}

/// An answer body: whole (with its length) or `$value` made chunk by chunk
/// as the connection takes them (no length: chunked).
enum GraphBody {
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

async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => return,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let shared = Arc::clone(&shared);
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(Arc::clone(&shared), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = stopped.changed() => {}
            }
        });
    }
}

/// An answer before rendering: a batch renders it as a JSON step, HTTP as
/// a response.
enum Reply {
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

fn error(status: u16, code: &'static str, message: impl Into<String>) -> Reply {
    Reply::Error {
        status,
        code,
        message: message.into(),
        headers: Vec::new(),
    }
}

fn ok(status: u16, body: Value) -> Reply {
    Reply::Json {
        status,
        body,
        headers: Vec::new(),
    }
}

/// The ids an answer carries: its own and the caller's.
struct Ids {
    request: String,
    client: Option<String>,
}

impl Ids {
    fn new(client: Option<String>) -> Ids {
        Ids {
            request: uuid::Uuid::new_v4().to_string(),
            client,
        }
    }

    /// Graph answers the caller's id, or its own when none was sent.
    fn client(&self) -> &str {
        self.client.as_deref().unwrap_or(&self.request)
    }
}

fn error_body(code: &str, message: &str, ids: &Ids) -> Value {
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

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<GraphBody>, Infallible> {
    let ids = Ids::new(header(req.headers(), "client-request-id").map(str::to_owned));
    let gzip = accepts_gzip(req.headers());
    let seen = SeenRequest {
        method: req.method().as_str().to_owned(),
        path: req.uri().path().to_owned(),
        query: req.uri().query().map(str::to_owned),
        headers: req
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    let fault = {
        let mut state = shared.lock();
        state.requests.push(seen);
        state.faults.pop_front()
    };
    let reply = match fault {
        Some((status, retry_after)) => fault_reply(status, retry_after),
        None => {
            let (parts, body) = req.into_parts();
            match Limited::new(body, MAX_BODY).collect().await {
                Ok(collected) => route_http(&shared, &parts, &collected.to_bytes()),
                Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => error(
                    413,
                    "RequestEntityTooLarge",
                    format!("The request body exceeds the limit of {MAX_BODY} bytes."),
                ),
                Err(_) => error(400, "BadRequest", "The request body could not be read."),
            }
        }
    };
    Ok(render(reply, &ids, gzip))
}

fn fault_reply(status: u16, retry_after: Option<u64>) -> Reply {
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

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
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

fn render(reply: Reply, ids: &Ids, gzip_ok: bool) -> Response<GraphBody> {
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

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// What a valid token grants.
struct Token {
    tid: String,
    roles: Vec<String>,
}

impl Token {
    fn has_any(&self, roles: &[&str]) -> bool {
        self.roles.iter().any(|r| roles.contains(&r.as_str()))
    }
}

const VALIDATION_FAILURE: &str = "Access token validation failure.";

/// Checks the bearer token as Graph does; the refusal is the 401 message.
fn authenticate(
    key: &[u8],
    revoked_at: Option<u64>,
    authorization: Option<&str>,
    now: u64,
) -> Result<Token, &'static str> {
    const EMPTY: &str = "Access token is empty.";
    let (scheme, jwt) = authorization
        .and_then(|v| v.trim().split_once(' '))
        .ok_or(EMPTY)?;
    let jwt = jwt.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || jwt.is_empty() {
        return Err(EMPTY);
    }
    let mut parts = jwt.split('.');
    let (Some(head), Some(body), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VALIDATION_FAILURE);
    };
    let decode = |part: &str| -> Option<Value> {
        let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
        serde_json::from_slice::<Value>(&bytes)
            .ok()
            .filter(Value::is_object)
    };
    let header = decode(head).ok_or(VALIDATION_FAILURE)?;
    if header["alg"] != "RS256" {
        return Err(VALIDATION_FAILURE);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| VALIDATION_FAILURE)?;
    // Signed input is the two first parts as sent.
    let signed_len = head.len() + 1 + body.len();
    let signed = jwt.get(..signed_len).ok_or(VALIDATION_FAILURE)?;
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| VALIDATION_FAILURE)?;
    // Only now are the claims the authority's.
    let claims = decode(body).ok_or(VALIDATION_FAILURE)?;
    let aud = claims["aud"].as_str().unwrap_or_default();
    if aud != GRAPH_AUDIENCE && aud != GRAPH_APP_ID {
        return Err("Access token validation failure. Invalid audience.");
    }
    let tid = claims["tid"]
        .as_str()
        .filter(|t| uuid::Uuid::try_parse(t).is_ok())
        .ok_or(VALIDATION_FAILURE)?;
    let iss = claims["iss"].as_str().unwrap_or_default();
    if iss != format!("https://sts.windows.net/{tid}/")
        && iss != format!("https://login.microsoftonline.com/{tid}/v2.0")
    {
        return Err("Access token validation failure. Invalid issuer.");
    }
    let exp = claims["exp"].as_u64().ok_or(VALIDATION_FAILURE)?;
    if exp <= now {
        return Err("Lifetime validation failed, the token is expired.");
    }
    if claims["nbf"].as_u64().is_some_and(|nbf| nbf > now) {
        return Err("Lifetime validation failed, the token is not yet valid.");
    }
    let iat = claims["iat"].as_u64().unwrap_or(0);
    if revoked_at.is_some_and(|at| iat <= at) {
        return Err("Continuous access evaluation resulted in challenge with result: InteractionRequired and code: TokenIssuedBeforeRevocationTimestamp");
    }
    let roles = claims["roles"]
        .as_array()
        .map(|roles| {
            roles
                .iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Ok(Token {
        tid: tid.to_ascii_lowercase(),
        roles,
    })
}

/// Percent-decoded path segments (a single trailing `/` ignored).
fn segments(path: &str) -> Result<Vec<String>, Reply> {
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

fn route_http(shared: &Shared, parts: &hyper::http::request::Parts, body: &[u8]) -> Reply {
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
struct Call<'a> {
    shared: &'a Shared,
    version: &'a str,
    token: &'a Token,
    method: &'a str,
    /// After the version, percent-decoded.
    segments: &'a [String],
    query: Option<&'a str>,
    content_type: Option<&'a str>,
    body: &'a [u8],
    in_batch: bool,
}

fn not_allowed(method: &str, allow: &'static str) -> Reply {
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

fn route(call: &Call<'_>) -> Reply {
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

/// The query's options, percent-decoded; names starting with `$` are
/// matched case-insensitively against `allowed` and kept lower-case.
fn query_options(query: Option<&str>, allowed: &[&str]) -> Result<HashMap<String, String>, Reply> {
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
fn selection(
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

fn project(object: &Value, select: Option<&[&str]>, always: &[&str]) -> Value {
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

fn odata_quote(key: &str) -> String {
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

fn list_messages(call: &Call<'_>, key: &str, folder: Option<Folder>) -> Reply {
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

fn get_message(call: &Call<'_>, key: &str, id: &str) -> Reply {
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

fn get_value(call: &Call<'_>, key: &str, id: &str) -> Reply {
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

/// The JSON object of a POST body, refused as Graph refuses a bad one.
fn json_body(call: &Call<'_>) -> Result<Map<String, Value>, Reply> {
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

fn create_message(call: &Call<'_>, key: &str, folder: Folder) -> Reply {
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

fn send_mail(call: &Call<'_>, key: &str) -> Reply {
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

fn folder_id(folder: Folder) -> String {
    let name = match folder {
        Folder::Inbox => "inbox",
        Folder::Drafts => "drafts",
    };
    format!("AAMkAG{}", URL_SAFE_NO_PAD.encode(name))
}

/// An id like Exchange's: URL-safe base64 that may end in `=`.
fn message_id() -> String {
    let mut bytes = uuid::Uuid::new_v4().as_bytes().to_vec();
    bytes.push(0x46);
    format!("AAMkAG{}", URL_SAFE.encode(bytes))
}

/// Message N of a mailbox, received N minutes into 2024.
fn inbox_message(n: usize, upn: &str) -> Value {
    let received = SystemTime::UNIX_EPOCH
        + Duration::from_secs(1_704_067_200 + 60 * u64::try_from(n).unwrap_or(0));
    let received = humantime::format_rfc3339_seconds(received).to_string();
    let id = message_id();
    let text = format!("Body of message {n}.");
    json!({
        "@odata.etag": format!("W/\"{}\"", uuid::Uuid::new_v4().simple()),
        "id": id,
        "createdDateTime": received,
        "lastModifiedDateTime": received,
        "changeKey": uuid::Uuid::new_v4().simple().to_string(),
        "categories": [],
        "receivedDateTime": received,
        "sentDateTime": received,
        "hasAttachments": false,
        "internetMessageId": format!("<message-{n}.{}@fabrikam.example>", uuid::Uuid::new_v4().simple()),
        "subject": format!("Message {n}"),
        "bodyPreview": text,
        "importance": "normal",
        "parentFolderId": folder_id(Folder::Inbox),
        "conversationId": uuid::Uuid::new_v4().simple().to_string(),
        "isDeliveryReceiptRequested": false,
        "isReadReceiptRequested": false,
        "isRead": false,
        "isDraft": false,
        "webLink": format!("https://outlook.office365.com/owa/?ItemID={id}"),
        "inferenceClassification": "focused",
        "body": {"contentType": "text", "content": text},
        "sender": {"emailAddress": {"name": "Sender", "address": "sender@fabrikam.example"}},
        "from": {"emailAddress": {"name": "Sender", "address": "sender@fabrikam.example"}},
        "toRecipients": [{"emailAddress": {"name": upn, "address": upn}}],
        "ccRecipients": [],
        "bccRecipients": [],
        "replyTo": [],
        "flag": {"flagStatus": "notFlagged"},
    })
}

/// `POST /{version}/$batch`: each step runs through [`route`] with the
/// batch's token, in order; `dependsOn` a failed step gives 424.
fn batch(call: &Call<'_>) -> Reply {
    let input = match json_body(call) {
        Ok(map) => map,
        Err(reply) => return reply,
    };
    let Some(Value::Array(steps)) = input.get("requests") else {
        return error(
            400,
            "BadRequest",
            "Invalid batch payload format: a 'requests' array is expected.",
        );
    };
    if steps.is_empty() {
        return error(
            400,
            "BadRequest",
            "Invalid batch payload format: no requests.",
        );
    }
    if steps.len() > MAX_BATCH {
        return error(
            400,
            "BadRequest",
            format!("Number of batch request steps exceeds the maximum of {MAX_BATCH}."),
        );
    }
    let mut parsed = Vec::with_capacity(steps.len());
    for step in steps {
        match parse_step(step, &parsed) {
            Ok(step) => parsed.push(step),
            Err(reply) => return reply,
        }
    }
    let mut statuses: HashMap<String, u16> = HashMap::new();
    let mut responses = Vec::with_capacity(parsed.len());
    for step in &parsed {
        let ids = Ids::new(step.client_request_id.clone());
        let reply = if step
            .depends_on
            .iter()
            .any(|d| statuses.get(d).is_some_and(|s| *s >= 400))
        {
            error(
                424,
                "FailedDependency",
                "A request this request depends on failed.",
            )
        } else {
            run_step(call, step)
        };
        let (status, rendered) = step_response(&step.id, reply, &ids);
        statuses.insert(step.id.clone(), status);
        responses.push(rendered);
    }
    ok(200, json!({"responses": responses}))
}

struct Step {
    id: String,
    method: String,
    url: String,
    client_request_id: Option<String>,
    content_type: Option<String>,
    body: Vec<u8>,
    depends_on: Vec<String>,
}

fn parse_step(step: &Value, earlier: &[Step]) -> Result<Step, Reply> {
    let bad = |message: String| error(400, "BadRequest", message);
    let Some(id) = step["id"].as_str().filter(|id| !id.is_empty()) else {
        return Err(bad(
            "Every batch request needs a non-empty string 'id'.".into()
        ));
    };
    if earlier.iter().any(|s| s.id == id) {
        return Err(bad(format!(
            "Batch request ids must be unique: '{id}' appears more than once."
        )));
    }
    let Some(method) = step["method"].as_str().filter(|m| !m.is_empty()) else {
        return Err(bad(format!("Batch request '{id}' has no 'method'.")));
    };
    let Some(url) = step["url"].as_str().filter(|u| !u.is_empty()) else {
        return Err(bad(format!("Batch request '{id}' has no 'url'.")));
    };
    if url.contains("://") {
        return Err(bad(format!(
            "Batch request '{id}' has an absolute url; a url relative to the version is expected."
        )));
    }
    let headers = match &step["headers"] {
        Value::Null => Map::new(),
        Value::Object(map) => map.clone(),
        _ => {
            return Err(bad(format!(
                "The headers of batch request '{id}' are not an object."
            )))
        }
    };
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_str())
            .map(str::to_owned)
    };
    let content_type = header("content-type");
    let body = match &step["body"] {
        Value::Null => Vec::new(),
        body => {
            if content_type.is_none() {
                return Err(bad(format!(
                    "Write request id : {id} does not contain Content-Type header or body."
                )));
            }
            body.to_string().into_bytes()
        }
    };
    let depends_on = match &step["dependsOn"] {
        Value::Null => Vec::new(),
        Value::Array(ids) => {
            let mut out = Vec::new();
            for dep in ids {
                match dep.as_str() {
                    Some(dep) if earlier.iter().any(|s| s.id == dep) => out.push(dep.to_owned()),
                    _ => {
                        return Err(bad(format!(
                        "Batch request '{id}' depends on {dep}, which is not an earlier request."
                    )))
                    }
                }
            }
            out
        }
        _ => {
            return Err(bad(format!(
                "The dependsOn of batch request '{id}' is not an array."
            )))
        }
    };
    Ok(Step {
        id: id.to_owned(),
        method: method.to_ascii_uppercase(),
        url: url.to_owned(),
        client_request_id: header("client-request-id"),
        content_type,
        body,
        depends_on,
    })
}

fn run_step(call: &Call<'_>, step: &Step) -> Reply {
    let (path, query) = match step.url.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (step.url.as_str(), None),
    };
    let segments = match segments(path) {
        Ok(s) => s,
        Err(reply) => return reply,
    };
    route(&Call {
        shared: call.shared,
        version: call.version,
        token: call.token,
        method: &step.method,
        segments: &segments,
        query,
        content_type: step.content_type.as_deref(),
        body: &step.body,
        in_batch: true,
    })
}

/// A step's answer as a batch carries it (header names as Graph writes them).
fn step_response(id: &str, reply: Reply, ids: &Ids) -> (u16, Value) {
    let mut headers = Map::new();
    let (status, body) = match reply {
        Reply::Json {
            status,
            body,
            headers: extra,
        } => {
            headers.insert("Content-Type".into(), ODATA_JSON.into());
            for (name, value) in extra {
                headers.insert(name.into(), value.into());
            }
            (status, Some(body))
        }
        Reply::Error {
            status,
            code,
            message,
            headers: extra,
        } => {
            headers.insert("Content-Type".into(), "application/json".into());
            for (name, value) in extra {
                headers.insert(name.into(), value.into());
            }
            if status == 401 {
                headers.insert("WWW-Authenticate".into(), WWW_AUTHENTICATE.into());
            }
            (status, Some(error_body(code, &message, ids)))
        }
        Reply::Empty { status } => (status, None),
        // Refused in a batch before it gets here.
        Reply::Value { .. } => (500, None),
    };
    headers.insert("request-id".into(), ids.request.clone().into());
    headers.insert("client-request-id".into(), ids.client().into());
    let mut out = json!({"id": id, "status": status, "headers": headers});
    if let Some(body) = body {
        out["body"] = body;
    }
    (status, out)
}
