//! A strict stand-in for the mail routes of Microsoft Graph: it trusts the
//! access tokens of one [`SimulatedAuthority`] and checks every request the
//! way Graph does (token, audience, lifetime, revocation, app roles, the
//! tenant of the token), so a client that passes here is unlikely to be
//! surprised by the real service. Errors have Graph's shape and wording.

//!
//! One concern per file: this one holds [`SimulatedGraph`], its API for
//! tests and the server loop; `token` verifies bearer tokens, `store` holds
//! the tenants' users and mailboxes, `routes` dispatches a request (and
//! serves the user route), `mail` the mail routes, `batch` `$batch`, and
//! `reply` renders answers in Graph's shape.

mod batch;
mod mail;
mod reply;
mod request;
mod routes;
mod store;
mod token;

pub use store::value_bytes;

use crate::{SimError, SimulatedAuthority};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use reply::{accepts_gzip, error, fault_reply, header, render, GraphBody, Ids};
use routes::route_http;
use serde_json::Value;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use store::{inbox_message, Folder, Message, State, User};
use token::{now_secs, GRAPH_AUDIENCE};
use tokio::sync::watch;

const MAX_BODY: usize = 4 * 1024 * 1024;

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
        let (listener, addr) = crate::listen::bind_loopback().await?;
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
        let serving = Arc::clone(&shared);
        tokio::spawn(crate::listen::serve(listener, stopped, move |req| {
            handle(Arc::clone(&serving), req)
        }));
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
