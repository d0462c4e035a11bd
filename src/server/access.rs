//! What every API request passes before its route answers (the Host
//! allow-list, then who is calling), and the access line that records it.
//! Shared by the token routes (`handle`) and the Graph gateway (`graph`).

use super::budget::Conn;
use super::respond::Failure;
use super::{auth, App, Peer};
use crate::access::AuthFailure;
use crate::broker::Caller;
use crate::cache::Lookup;
use crate::route::Route;
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

/// A request's access line, written as it is dropped: once its answer is
/// on its way (see `Conn::answered`).
#[derive(Debug)]
pub(super) struct AccessLine {
    pub(super) route: Route,
    pub(super) status: u16,
    /// Until the answer's head was ready.
    pub(super) latency_us: u64,
    pub(super) access: Access,
}

impl Drop for AccessLine {
    fn drop(&mut self) {
        let access = &self.access;
        tracing::info!(
            target: "tokenbroker::access",
            route = self.route.label(),
            status = self.status,
            latency_us = self.latency_us,
            // Absent (not "-") when the request named none.
            account = access.account.as_deref(),
            tenant = access.tenant.as_deref(),
            cache = access.cache.map(Lookup::as_str),
            reason = access.reason,
            uid = access.uid,
            method = access.method.as_deref(),
            path = access.path.as_deref(),
            bytes = access.bytes,
            "request"
        );
    }
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

#[cfg(test)]
mod tests {
    use super::super::budget::Conn;
    use super::*;
    use crate::log_writer::Sink;

    fn lines_of(written: &Sink) -> Vec<String> {
        written.text().lines().map(str::to_owned).collect()
    }

    fn line(status: u16) -> AccessLine {
        AccessLine {
            route: Route::Graph,
            status,
            latency_us: 42,
            access: Access {
                account: Some("svc".into()),
                ..Access::default()
            },
        }
    }

    #[test]
    fn a_line_waits_for_the_connection_and_none_is_lost_when_it_goes() {
        let written = Sink::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(written.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let conn = Conn::default();
            conn.answered(line(200));
            conn.answered(line(403));
            assert!(lines_of(&written).is_empty(), "written before the answer");
            conn.write_access_lines();
            let lines = lines_of(&written);
            assert_eq!(lines.len(), 2, "{lines:?}");
            assert!(lines[0].contains("status=200") && lines[1].contains("status=403"));
            assert!(lines[0].contains("account=\"svc\"") && lines[0].contains("latency_us=42"));
            conn.write_access_lines();
            assert_eq!(lines_of(&written).len(), 2, "each line once");
            // A connection that goes with lines unwritten writes them.
            conn.answered(line(502));
            drop(conn);
            let lines = lines_of(&written);
            assert_eq!(lines.len(), 3, "{lines:?}");
            assert!(lines[2].contains("status=502"));
        });
    }
}
