//! The HTTP server: listeners, connection limits, routes, access log,
//! graceful shutdown.
//!
//! [`run`] is handed its listeners and a shutdown future (as in
//! mini-redis), so tests bind `127.0.0.1:0` and a socket in a temp dir and
//! stop it at will. Routes (docs/contract.md, "HTTP API"): `/v1/token`,
//! `/msi/token`, `/healthz`, `/readyz`, `/metrics`. Every request is checked
//! in this order: route and method (404, 405), Host allow-list (421), caller
//! (401), query (400); then the broker answers the one question "a token for
//! this caller, tenant and resource" (400, 403, 200, 502, 503, 504).

pub mod admin;
pub mod auth;
pub mod budget;
pub mod query;
pub mod respond;

use crate::access::AuthFailure;
use crate::broker::{Broker, Caller, Issued, TokenError};
use crate::cache::Lookup;
use crate::config::ServerConfig;
use crate::metrics::Metrics;
pub use crate::route::Route;
use budget::{Budget, Conn};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, HOST, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use respond::{api_error, json, msi_error, Answer, Failure, TokenBody};
use serde_json::json;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener};
use tokio::time::Instant;

/// The App Service protocol version the SDKs send.
pub const MSI_API_VERSION: &str = "2019-08-01";

/// The route `path` names for a client of `peer`. A separate metrics
/// listener serves `/metrics` and `/healthz` only; with one, the API
/// listeners do not serve `/metrics`.
fn route_of(path: &str, peer: Peer, separate_metrics: bool) -> Route {
    match (path, peer) {
        (_, Peer::Admin(_)) => Route::Admin,
        ("/metrics", Peer::Metrics) => Route::Metrics,
        ("/healthz", _) => Route::Healthz,
        // Probes (kubelet) reach a pod on this listener, not on loopback.
        ("/readyz", Peer::Metrics) => Route::Readyz,
        (_, Peer::Metrics) => Route::Other,
        ("/metrics", _) if !separate_metrics => Route::Metrics,
        ("/v1/token", _) => Route::Token,
        ("/msi/token", _) => Route::Msi,
        ("/readyz", _) => Route::Readyz,
        _ => Route::Other,
    }
}

/// Everything a request handler needs.
#[derive(Debug)]
pub struct App {
    broker: Broker,
    metrics: Arc<Metrics>,
    ready: AtomicBool,
    /// Fixed at start (listeners need a restart to change).
    separate_metrics: bool,
    own_uid: Option<u32>,
}

impl App {
    /// The application state for `broker`.
    pub fn new(broker: Broker, metrics: Arc<Metrics>) -> App {
        App {
            separate_metrics: broker.config().server.metrics_listen.is_some(),
            broker,
            metrics,
            ready: AtomicBool::new(false),
            own_uid: Some(crate::sys::own_uid()),
        }
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// The listeners `run` serves.
#[derive(Debug)]
pub struct Listeners {
    /// The API on TCP (`server.listen`).
    pub tcp: TcpListener,
    /// The API on a Unix socket (`server.unix_socket`), with its path.
    pub unix: Option<(UnixListener, PathBuf)>,
    /// `/metrics` alone (`server.metrics_listen`).
    pub metrics: Option<TcpListener>,
    /// The admin API (`server.admin_socket`), with its path.
    pub admin: Option<(UnixListener, PathBuf)>,
}

/// A listener could not be opened; names the key and the address.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address} ({key}): {source}")]
pub struct BindError {
    pub key: &'static str,
    pub address: String,
    pub source: io::Error,
}

impl Listeners {
    /// Opens every listener `server` names.
    pub async fn bind(server: &ServerConfig) -> Result<Listeners, BindError> {
        let tcp = TcpListener::bind(server.listen)
            .await
            .map_err(|source| BindError {
                key: "server.listen",
                address: server.listen.to_string(),
                source,
            })?;
        let unix = match &server.unix_socket {
            Some(path) => Some((
                bind_unix_socket(path).await.map_err(|source| BindError {
                    key: "server.unix_socket",
                    address: path.display().to_string(),
                    source,
                })?,
                path.clone(),
            )),
            None => None,
        };
        let metrics = match server.metrics_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| BindError {
                key: "server.metrics_listen",
                address: addr.to_string(),
                source,
            })?),
            None => None,
        };
        let admin = match &server.admin_socket {
            Some(path) => {
                let error = |source| BindError {
                    key: "server.admin_socket",
                    address: path.display().to_string(),
                    source,
                };
                let listener = bind_unix_socket(path).await.map_err(error)?;
                if let Some(group) = &server.admin_group {
                    let gid = group_id(group.as_str()).map_err(error)?;
                    std::os::unix::fs::chown(path, None, Some(gid)).map_err(error)?;
                }
                Some((listener, path.clone()))
            }
            None => None,
        };
        Ok(Listeners {
            tcp,
            unix,
            metrics,
            admin,
        })
    }

    /// The TCP API address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.tcp.local_addr()
    }
}

/// The gid of group `name` (`server.admin_group`), through the name service.
fn group_id(name: &str) -> io::Result<u32> {
    crate::sys::group_id(name).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "group \"{name}\" (server.admin_group) does not exist; create it or fix the name"
            ),
        )
    })
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    /// A TCP client of the API.
    Tcp,
    /// A Unix-socket client and its uid (if the kernel told us).
    Unix(Option<u32>),
    /// A client of the separate metrics listener.
    Metrics,
    /// A client of the admin socket and its uid.
    Admin(Option<u32>),
}

impl Peer {
    /// The `listener` label of the connection metrics.
    fn listener(self) -> &'static str {
        match self {
            Peer::Tcp => "tcp",
            Peer::Unix(_) => "unix",
            Peer::Metrics => "metrics",
            Peer::Admin(_) => "admin",
        }
    }
}

/// Binds the Unix socket at `path`, replacing a stale socket file left by a
/// crash but never a live one (or anything that is not a socket), then
/// restricts it to owner and group (0660).
pub async fn bind_unix_socket(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match tokio::net::UnixStream::connect(path).await {
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!(
                            "{} is in use by a running process (another tokenbroker?)",
                            path.display()
                        ),
                    ))
                }
                Err(_) => std::fs::remove_file(path)?,
            }
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; refusing to replace it",
                    path.display()
                ),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// One start-up line per listener (`listener` = tcp, unix, metrics,
/// admin), then `serving` once all accept.
fn log_listeners(
    tcp: &TcpListener,
    socket: Option<&Path>,
    metrics: Option<&TcpListener>,
    admin: Option<&Path>,
) {
    let address = |l: &TcpListener| l.local_addr().map(|a| a.to_string()).ok();
    tracing::info!(listener = "tcp", address = address(tcp), "listening");
    if let Some(path) = socket {
        tracing::info!(listener = "unix", path = %path.display(), "listening");
    }
    if let Some(l) = metrics {
        tracing::info!(listener = "metrics", address = address(l), "listening");
    }
    if let Some(path) = admin {
        tracing::info!(listener = "admin", path = %path.display(), "listening");
    }
    tracing::info!("serving");
}

/// Serves until `shutdown` resolves, then stops accepting, lets requests in
/// flight finish (at most `server.shutdown_timeout`), and returns.
pub async fn run(app: Arc<App>, listeners: Listeners, shutdown: impl Future<Output = ()>) {
    // Listener settings are fixed for the life of the process.
    let config = app.broker.config();
    let server = &config.server;
    // One budget per listener: a flood on one cannot lock out another.
    let budgets = Budgets {
        tcp: Budget::new(server.max_connections),
        unix: Budget::new(server.max_socket_connections),
        metrics: Budget::new(OWN_LISTENER_CONNECTIONS),
        admin: Budget::new(OWN_LISTENER_CONNECTIONS),
    };
    let idle_timeout = server.idle_timeout.0;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout.0)
        .max_buf_size(server.max_header_bytes.max(8192))
        .max_header_size(server.max_header_bytes);
    let http = Arc::new(http);

    let Listeners {
        tcp,
        unix,
        metrics,
        admin,
    } = listeners;
    let socket_path = unix.as_ref().map(|(_, path)| path.clone());
    let admin_path = admin.as_ref().map(|(_, path)| path.clone());
    app.ready.store(true, Ordering::SeqCst);
    log_listeners(
        &tcp,
        socket_path.as_deref(),
        metrics.as_ref(),
        admin_path.as_deref(),
    );
    tokio::pin!(shutdown);
    loop {
        let (stream, peer): (Stream, Peer) = tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok((s, _)) => (Stream::Tcp(s), Peer::Tcp),
                Err(e) => { accept_failed(e).await; continue }
            },
            accepted = accept_unix(unix.as_ref().map(|(l, _)| l)) => match accepted {
                Ok(s) => {
                    let uid = s.peer_cred().ok().map(|c| c.uid());
                    (Stream::Unix(s), Peer::Unix(uid))
                }
                Err(e) => { accept_failed(e).await; continue }
            },
            accepted = accept_tcp(metrics.as_ref()) => match accepted {
                Ok(s) => (Stream::Tcp(s), Peer::Metrics),
                Err(e) => { accept_failed(e).await; continue }
            },
            accepted = accept_unix(admin.as_ref().map(|(l, _)| l)) => match accepted {
                Ok(s) => {
                    let uid = s.peer_cred().ok().map(|c| c.uid());
                    (Stream::Unix(s), Peer::Admin(uid))
                }
                Err(e) => { accept_failed(e).await; continue }
            },
            () = &mut shutdown => break,
        };
        let listener = peer.listener();
        let (ticket, outcome) = budgets.of(peer).admit();
        match outcome {
            budget::Outcome::Admitted => {}
            budget::Outcome::Displaced => app.metrics.connection_rejected(listener, "displaced"),
            budget::Outcome::Full => {
                app.metrics.connection_rejected(listener, "cap");
                tracing::warn!(
                    listener,
                    "connection budget full of authenticated callers; closing a new connection"
                );
            }
        }
        let Some(ticket) = ticket else {
            drop(stream);
            continue;
        };
        let conn = Arc::clone(&ticket.conn);
        let app_for_requests = Arc::clone(&app);
        let service = hyper::service::service_fn(move |req| {
            let app = Arc::clone(&app_for_requests);
            let conn = Arc::clone(&conn);
            async move {
                conn.request_started();
                let answer = handle(&app, peer, &conn, req).await;
                conn.request_ended();
                Ok::<_, std::convert::Infallible>(answer)
            }
        });
        let ending = Ending {
            app: Arc::clone(&app),
            listener,
            ticket,
            idle_timeout,
        };
        match stream {
            Stream::Tcp(s) => spawn_connection(&graceful, &http, TokioIo::new(s), service, ending),
            Stream::Unix(s) => spawn_connection(&graceful, &http, TokioIo::new(s), service, ending),
        }
    }

    // Stop accepting: the listeners close here.
    app.ready.store(false, Ordering::SeqCst);
    drop(tcp);
    drop(unix);
    drop(metrics);
    drop(admin);
    for path in [socket_path, admin_path].into_iter().flatten() {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("shutting down: finishing requests in flight");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(server.shutdown_timeout.0) => {
            tracing::warn!(timeout = ?server.shutdown_timeout.0, "requests still in flight at the shutdown timeout; closing them");
        }
    }
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// Connections the metrics and admin listeners serve at once each.
const OWN_LISTENER_CONNECTIONS: usize = 64;

struct Budgets {
    tcp: Arc<Budget>,
    unix: Arc<Budget>,
    metrics: Arc<Budget>,
    admin: Arc<Budget>,
}

impl Budgets {
    fn of(&self, peer: Peer) -> &Arc<Budget> {
        match peer {
            Peer::Tcp => &self.tcp,
            Peer::Unix(_) => &self.unix,
            Peer::Metrics => &self.metrics,
            Peer::Admin(_) => &self.admin,
        }
    }
}

/// How a connection may end besides the client closing it: displaced,
/// idle, or cut off by the header timeout (counted per listener).
struct Ending {
    app: Arc<App>,
    listener: &'static str,
    ticket: budget::Ticket,
    idle_timeout: Duration,
}

fn spawn_connection<I, S>(
    graceful: &hyper_util::server::graceful::GracefulShutdown,
    http: &Arc<hyper::server::conn::http1::Builder>,
    io: I,
    service: S,
    ending: Ending,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Answer,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let connection = graceful.watch(http.serve_connection(io, service));
    tokio::spawn(async move {
        let Ending {
            app,
            listener,
            ticket,
            idle_timeout,
        } = ending;
        let conn = &ticket.conn;
        tokio::select! {
            // Slow or oversized request heads end here (hyper answers 431 or closes).
            ended = connection => if let Err(e) = ended {
                if e.is_timeout() {
                    app.metrics.connection_rejected(listener, "header_timeout");
                }
                tracing::debug!("connection ended: {e}");
            },
            // Displaced (counted when the new connection was admitted).
            () = conn.close.notified() => tracing::debug!(listener, "connection displaced"),
            () = conn.idle_for(idle_timeout) => {
                app.metrics.connection_rejected(listener, "idle");
                tracing::debug!(listener, "idle connection closed");
            }
        }
        // Dropping the connection closes it; dropping the ticket frees its place.
        drop(ticket);
    });
}

async fn accept_unix(listener: Option<&UnixListener>) -> io::Result<tokio::net::UnixStream> {
    match listener {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

async fn accept_tcp(listener: Option<&TcpListener>) -> io::Result<tokio::net::TcpStream> {
    match listener {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

/// Accept errors (out of file descriptors, …) are logged and slowed down,
/// never fatal.
async fn accept_failed(e: io::Error) {
    tracing::warn!("accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// What the access log line says about a request. The tenant is recorded
/// only when the line will be written (it costs an allocation).
#[derive(Debug, Default)]
struct Access {
    enabled: bool,
    account: Option<String>,
    tenant: Option<String>,
    cache: Option<Lookup>,
}

async fn handle<B>(app: &App, peer: Peer, conn: &Conn, req: Request<B>) -> Answer {
    let started = Instant::now();
    let mut access = Access {
        enabled: tracing::enabled!(target: "tokenbroker::access", tracing::Level::INFO),
        ..Access::default()
    };
    let route = route_of(req.uri().path(), peer, app.separate_metrics);
    let answer = answer(app, route, peer, conn, &req, &mut access).await;
    let status = answer.status().as_u16();
    let elapsed = started.elapsed();
    app.metrics.http_request(route, status, elapsed);
    if access.enabled {
        tracing::info!(
            target: "tokenbroker::access",
            route = route.label(),
            status,
            latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            // Absent (not "-") when the request named none.
            account = access.account.as_deref(),
            tenant = access.tenant.as_deref(),
            cache = access.cache.map(Lookup::as_str),
            "request"
        );
    }
    answer
}

/// Answers one request as the TCP listener would (benchmarks drive the
/// whole handler in-process with this). The body is never read.
pub async fn handle_request<B>(app: &App, req: Request<B>) -> Answer {
    handle(app, Peer::Tcp, &Conn::default(), req).await
}

async fn answer<B>(
    app: &App,
    route: Route,
    peer: Peer,
    conn: &Conn,
    req: &Request<B>,
    access: &mut Access,
) -> Answer {
    let is_msi = route == Route::Msi;
    let fail = |failure: Failure| {
        if is_msi {
            msi_error(&failure)
        } else {
            api_error(&failure)
        }
    };
    if route == Route::Admin {
        let uid = match peer {
            Peer::Admin(uid) => uid,
            _ => None,
        };
        return admin::answer(app, uid, conn, req).await;
    }
    if route == Route::Other {
        return fail(Failure::new(
            404,
            "not_found",
            "no such route; see /v1/token, /msi/token, /healthz, /readyz, /metrics",
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut answer = fail(Failure::new(405, "method_not_allowed", "use GET"));
        answer
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return answer;
    }
    let mut hosts = req.headers().get_all(HOST).iter();
    let host = hosts.next().and_then(|h| h.to_str().ok());
    if hosts.next().is_some() {
        // RFC 9112: a request with more than one Host is answered 400.
        return fail(Failure::new(
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
        app.metrics.auth_failure("bad_host");
        return fail(Failure::new(421, "host_not_allowed", "the Host header is not in server.allowed_hosts (DNS-rebinding defence); call the broker as localhost or 127.0.0.1"));
    }
    match route {
        Route::Healthz => json(200, &json!({"status": "ok"})),
        Route::Readyz if app.is_ready() => json(200, &json!({"status": "ready"})),
        Route::Readyz => fail(Failure::new(
            503,
            "not_ready",
            "credentials or listeners are not up yet",
        )),
        Route::Metrics => metrics(app),
        Route::Token | Route::Msi | Route::Admin | Route::Other => {
            match token_request(app, peer, conn, req, is_msi, max_query, access).await {
                Ok(answer) => answer,
                Err(failure) => {
                    let mut answer = fail(failure);
                    if answer.status() == 401 {
                        let challenge = if is_msi {
                            "Identity"
                        } else {
                            "Bearer realm=\"tokenbroker\""
                        };
                        answer
                            .headers_mut()
                            .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
                    }
                    answer
                }
            }
        }
    }
}

fn metrics(app: &App) -> Answer {
    // Gauges read at scrape time, so they follow a reloaded certificate.
    app.metrics
        .set_cached_tokens(app.broker.cached_token_count());
    app.metrics.set_certificates(&app.broker.certificates());
    let mut answer = Response::new(Full::new(Bytes::from(app.metrics.encode())));
    answer.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    answer.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    answer
}

async fn token_request<B>(
    app: &App,
    peer: Peer,
    conn: &Conn,
    req: &Request<B>,
    is_msi: bool,
    max_query_bytes: usize,
    access: &mut Access,
) -> Result<Answer, Failure> {
    // 1. Who is calling.
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
        app.metrics.auth_failure(failure.as_str());
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
    // A caller with a valid credential keeps its connection at the cap.
    conn.authenticated.store(true, Ordering::Release);
    if access.enabled {
        access.account = Some(caller.account_name().to_owned());
    }

    // 2. What is asked.
    let asked = query::token_query(
        req.uri().query().unwrap_or_default(),
        is_msi,
        max_query_bytes,
    )?;

    // 3. The broker's answer.
    let issued = app
        .broker
        .token(
            &caller,
            asked.tenant.as_deref(),
            asked.resource.as_deref(),
            asked.rejected.as_ref(),
        )
        .await
        .map_err(|e| {
            if let TokenError::Forbidden(forbidden) = &e {
                app.metrics.auth_failure(forbidden.reason());
            }
            Failure::from(&e)
        })?;
    if access.enabled {
        access.tenant = Some(issued.target.tenant_label().to_owned());
    }
    access.cache = Some(issued.grant.lookup);
    Ok(if is_msi {
        msi_success(&caller, &issued)
    } else {
        api_success(&issued)
    })
}

fn expires_in(issued: &Issued) -> u64 {
    issued.grant.token.remaining(Instant::now()).as_secs()
}

fn api_success(issued: &Issued) -> Answer {
    let token = &issued.grant.token;
    TokenBody::new(&token.access_token)
        .string("token_type", "Bearer")
        .number("expires_on", token.expires_on)
        .number("expires_in", expires_in(issued))
        .string("tenant_id", issued.target.tenant.id.as_str())
        .string("resource", issued.target.resource.as_str())
        .answer()
}

/// The App Service body: every value a string (the Rust SDK requires it).
fn msi_success(caller: &Caller, issued: &Issued) -> Answer {
    let token = &issued.grant.token;
    TokenBody::new(&token.access_token)
        .string("expires_on", &token.expires_on.to_string())
        .string("expires_in", &expires_in(issued).to_string())
        .string("not_before", &token.obtained_on.to_string())
        .string("resource", issued.target.resource.as_str())
        .string("token_type", "Bearer")
        .string("client_id", caller.client_id())
        .answer()
}
