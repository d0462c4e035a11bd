//! Listening and accepting: the listeners (TCP, the callers' Unix socket,
//! the metrics and admin listeners), the connection budgets that bound
//! them, one task per connection with its timeouts, and the graceful
//! shutdown that lets requests in flight finish. Each connection's
//! requests go to [`super::handle`].

use super::budget::Budget;
use super::respond::Answer;
use super::{budget, App, Peer};
use crate::config::ServerConfig;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener};

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
pub(super) fn group_id(name: &str) -> io::Result<u32> {
    crate::sys::group_id(name).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "group \"{name}\" (server.admin_group) does not exist; create it or fix the name"
            ),
        )
    })
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
pub(super) fn log_listeners(
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
        tcp: Budget::new(server.max_connections, server.connections_per_account()),
        unix: Budget::new(
            server.max_socket_connections,
            server.max_socket_connections.div_ceil(2),
        ),
        metrics: Budget::new(OWN_LISTENER_CONNECTIONS, OWN_LISTENER_CONNECTIONS),
        admin: Budget::new(OWN_LISTENER_CONNECTIONS, OWN_LISTENER_CONNECTIONS),
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
            accepted = accept_tcp(Some(&tcp)) => match accepted {
                Ok(s) => (Stream::Tcp(s), Peer::Tcp),
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
                let answer = super::handle::handle(&app, peer, &conn, req).await;
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

pub(super) enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// Connections the metrics and admin listeners serve at once each.
const OWN_LISTENER_CONNECTIONS: usize = 64;

pub(super) struct Budgets {
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
pub(super) struct Ending {
    app: Arc<App>,
    listener: &'static str,
    ticket: budget::Ticket,
    idle_timeout: Duration,
}

pub(super) fn spawn_connection<I, S>(
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
        // The connection is dropped (closed) before its place is freed.
        {
            // After each poll of hyper's (it reads requests, answers them and
            // flushes the answers), the access lines of the answers it queued.
            let mut connection = std::pin::pin!(connection);
            let connection = std::future::poll_fn(|cx| {
                let polled = connection.as_mut().poll(cx);
                conn.write_access_lines();
                polled
            });
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
        }
        // Dropping the connection closed it; dropping the ticket frees its place.
        drop(ticket);
    });
}

pub(super) async fn accept_unix(
    listener: Option<&UnixListener>,
) -> io::Result<tokio::net::UnixStream> {
    match listener {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

/// The next connection on a TCP listener (`None`: never), set to send
/// each write at once. hyper writes a held answer in one write, but a
/// streamed one (a download, a page too big to rewrite) ends with a small
/// piece, the last chunk or the chunked terminator, which Nagle's algorithm
/// would hold until the caller ACKs the piece before, and a delayed ACK puts
/// that off by up to 40 ms. nginx turns it off too (`tcp_nodelay on`), as
/// the gateway's client to Graph does.
pub(super) async fn accept_tcp(
    listener: Option<&TcpListener>,
) -> io::Result<tokio::net::TcpStream> {
    let s = match listener {
        Some(l) => l.accept().await.map(|(s, _)| s)?,
        None => std::future::pending().await,
    };
    if let Err(e) = s.set_nodelay(true) {
        // The connection still works, only answers may end later.
        tracing::debug!("TCP_NODELAY on an accepted connection: {e}");
    }
    Ok(s)
}

/// Accept errors (out of file descriptors, …) are logged once a minute
/// per kind, slowed down, and never fatal.
pub(super) async fn accept_failed(e: io::Error) {
    let text = e.to_string();
    if let Some(held_back) = crate::log_limit::admit(&format!("accept: {text}")) {
        tracing::warn!(held_back, "accept failed: {text}{}", accept_remedy(&e));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// What to do about an accept error, when the error says.
fn accept_remedy(e: &io::Error) -> &'static str {
    // EMFILE and ENFILE: out of file descriptors.
    match e.raw_os_error() {
        Some(24 | 23) => {
            "; the process is out of file descriptors: raise LimitNOFILE in the unit (or ulimit -n) \
             above server.max_connections + server.max_socket_connections + 256, or lower those"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::accept_tcp;

    #[tokio::test]
    async fn accepted_tcp_connections_send_each_write_at_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(
            tokio::net::TcpStream::connect(addr),
            accept_tcp(Some(&listener))
        );
        // The kernel's default (the client's side), which the broker's
        // side of the connection must not keep.
        assert!(!client.expect("connect").nodelay().expect("nodelay"));
        assert!(accepted.expect("accept").nodelay().expect("nodelay"));
    }
}
