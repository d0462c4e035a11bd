//! The baseline for `benches/load.sh`: a bare hyper 1 server answering
//! "hello", built like tokenbroker's (hyper-util, http1, multi-thread tokio),
//! so the load run can tell the broker's cost from the stack's.
//!
//! `cargo bench --bench hello -- 127.0.0.1:PORT` serves until killed.
//! `HELLO_BYTES=N` makes the body N bytes (to see what the size of a token
//! answer costs by itself).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;

fn main() {
    // cargo passes `--bench`; the address is the other argument.
    let addr = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_else(|| "127.0.0.1:8766".to_owned());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let size: usize = std::env::var("HELLO_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let body = Bytes::from(if size == 5 {
        b"hello".to_vec()
    } else {
        vec![b'x'; size]
    });
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
        println!(
            "hello server on http://{}",
            listener.local_addr().expect("addr")
        );
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let body = body.clone();
                    async move { Ok::<_, Infallible>(hyper::Response::new(Full::new(body))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
