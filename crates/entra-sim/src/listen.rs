//! The accept loop every simulated endpoint runs: each connection served
//! with HTTP/1.1 by `handle`, until the endpoint's owner drops it (the stop
//! channel then ends the loop and every open connection).

use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A listener on `127.0.0.1:0`, and the address it got.
pub(crate) async fn bind_loopback() -> Result<(TcpListener, std::net::SocketAddr), crate::SimError>
{
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| crate::SimError(format!("binding 127.0.0.1:0: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| crate::SimError(format!("listener address: {e}")))?;
    Ok((listener, addr))
}

pub(crate) async fn serve<H, F, B, E>(
    listener: TcpListener,
    mut stopped: watch::Receiver<bool>,
    handle: H,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Result<Response<B>, E>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => return,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let handle = handle.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(handle));
            tokio::select! {
                _ = conn => {}
                _ = stopped.changed() => {}
            }
        });
    }
}
