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

mod access;
pub mod admin;
pub mod auth;
pub mod budget;
mod graph;
mod handle;
mod listen;
pub mod query;
pub mod respond;

pub use handle::handle_request;
pub use listen::{bind_unix_socket, run, BindError, Listeners};

use crate::broker::Broker;
use crate::metrics::Metrics;
pub use crate::route::Route;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The App Service protocol version the SDKs send.
pub const MSI_API_VERSION: &str = "2019-08-01";

/// Everything a request handler needs.
#[derive(Debug)]
pub struct App {
    broker: Broker,
    metrics: Arc<Metrics>,
    ready: AtomicBool,
    /// Fixed at start (listeners need a restart to change).
    separate_metrics: bool,
    own_uid: Option<u32>,
    /// The Graph gateway's connection pool and directory.
    graph: crate::gateway::upstream::GraphClients,
    directory: crate::gateway::directory::DirectoryCache,
}

impl App {
    /// The application state for `broker`.
    pub fn new(broker: Broker, metrics: Arc<Metrics>) -> App {
        App {
            separate_metrics: broker.config().server.metrics_listen.is_some(),
            graph: graph_client(&broker),
            broker,
            metrics,
            ready: AtomicBool::new(false),
            own_uid: Some(crate::sys::own_uid()),
            directory: Default::default(),
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

/// The Graph gateway's clients, each app's trusting its `ca_file` as its
/// authority client does.
fn graph_client(broker: &Broker) -> crate::gateway::upstream::GraphClients {
    let config = broker.config();
    crate::gateway::upstream::GraphClients::new(
        config.apps.iter().filter_map(|a| a.ca_file.as_deref()),
    )
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
