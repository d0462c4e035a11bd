//! What every API request passes before its route answers (the Host
//! allow-list, then who is calling), and the access line that records it.
//! Shared by the token routes (`handle`) and the Graph gateway (`graph`).

use super::budget::Conn;
use super::respond::Failure;
use super::{auth, App, Peer};
use crate::access::AuthFailure;
use crate::broker::Caller;
use crate::cache::Lookup;
use hyper::header::{AUTHORIZATION, HOST};
use hyper::Request;

/// What the access log line says about a request. The tenant is recorded
/// only when the line will be written (it costs an allocation).
#[derive(Debug, Default)]
pub(super) struct Access {
    pub(super) enabled: bool,
    pub(super) account: Option<String>,
    pub(super) tenant: Option<String>,
    pub(super) cache: Option<Lookup>,
    /// Why a caller was refused (the `auth_failures_total` label).
    pub(super) reason: Option<&'static str>,
    /// The peer's uid, on the Unix sockets.
    pub(super) uid: Option<u32>,
    /// Gateway requests: the method, the normalised Graph path (mailbox
    /// included, never the query) and the answer's bytes when known.
    pub(super) method: Option<String>,
    pub(super) path: Option<String>,
    pub(super) bytes: Option<u64>,
}

impl Access {
    /// Counts a refusal and keeps its reason for the access line.
    pub(super) fn refused(&mut self, app: &App, reason: &'static str) {
        app.metrics.auth_failure(reason);
        self.reason = Some(reason);
    }
}

/// The Host checks every API request passes (one Host, in
/// `server.allowed_hosts`); `Ok` carries `server.max_query_bytes`.
pub(super) fn hosts_allowed<B>(app: &App, req: &Request<B>, peer: Peer) -> Result<usize, Failure> {
    let mut hosts = req.headers().get_all(HOST).iter();
    let host = hosts.next().and_then(|h| h.to_str().ok());
    if hosts.next().is_some() {
        // RFC 9112: a request with more than one Host is answered 400.
        return Err(Failure::new(
            400,
            "invalid_request",
            "more than one Host header",
        ));
    }
    // An absolute-form target (`GET http://host/…`) names its host too.
    let target_host = req.uri().authority().map(|a| a.as_str());
    let (hosts_ok, max_query) = app.broker.with_config(|config| {
        let allowed = |h: Option<&str>| auth::host_allowed(h, &config.server.allowed_hosts);
        let ok = allowed(host) && target_host.is_none_or(|t| allowed(Some(t)));
        (ok, config.server.max_query_bytes)
    });
    // The metrics listener serves no token and takes no secret, and is
    // scraped and probed by address (a pod IP), so the DNS-rebinding
    // defence does not apply there.
    if !hosts_ok && peer != Peer::Metrics {
        return Err(Failure::new(421, "host_not_allowed", "the Host header is not in server.allowed_hosts (DNS-rebinding defence); call the broker as localhost or 127.0.0.1"));
    }
    Ok(max_query)
}

/// Who is calling: the secret (`Authorization: Bearer`, or
/// `X-IDENTITY-HEADER` on `/msi/token`), else the Unix peer uid. A caller
/// with a valid credential keeps its connection at the cap.
pub(super) fn authenticate<B>(
    app: &App,
    peer: Peer,
    conn: &Conn,
    req: &Request<B>,
    is_msi: bool,
    access: &mut Access,
) -> Result<Caller, Failure> {
    let secret = if is_msi {
        req.headers()
            .get("x-identity-header")
            .and_then(|h| h.to_str().ok())
    } else {
        auth::bearer(
            req.headers()
                .get(AUTHORIZATION)
                .and_then(|h| h.to_str().ok()),
        )
    };
    let uid = match peer {
        Peer::Unix(uid) => uid,
        Peer::Tcp | Peer::Metrics | Peer::Admin(_) => None,
    };
    let caller = app.broker.authenticate(secret, uid).map_err(|failure| {
        access.refused(app, failure.as_str());
        let what = match failure {
            AuthFailure::Missing if is_msi => {
                "missing X-IDENTITY-HEADER (set IDENTITY_HEADER to the account secret)"
            }
            AuthFailure::Missing => "missing Authorization: Bearer <account secret>",
            AuthFailure::UnknownSecret => "the secret matches no configured account",
            AuthFailure::UnknownUid => {
                "this peer uid is in no account's unix_uids, and no secret was given"
            }
        };
        Failure::new(401, "unauthorized", what)
    })?;
    // A caller with a valid credential keeps its connection at the cap,
    // within its account's share.
    conn.authenticated_as(caller.account_name());
    if access.enabled {
        access.account = Some(caller.account_name().to_owned());
    }
    Ok(caller)
}
