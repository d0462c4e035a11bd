//! The connection pool to Microsoft Graph (the I/O edge of the gateway):
//! hyper-util's pooled client, rustls on aws-lc-rs trusting the platform's
//! roots and `app.ca_file` as the authority's client does, HTTP/2 when
//! Graph offers it (ALPN), HTTP/1.1 otherwise. No redirect is followed (a
//! redirect goes back to the caller, as Graph sent it).
//!
//! `graph.timeout` bounds the wait for Graph's answer to begin and each wait
//! for the next piece of its body, so a download of any size may take as
//! long as it streams, and a stalled one is cut.
//!
//! `HTTPS_PROXY` (or `ALL_PROXY`) and `NO_PROXY` apply as they do to the
//! authority's client: Graph over https is reached through the proxy's
//! CONNECT tunnel (with its `user:password@` as Basic credentials). An http
//! `graph_host` (a local stand-in) is reached directly.

use crate::authority::load_ca_file;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{HeaderMap, HeaderValue, USER_AGENT};
use hyper::{Method, Request, Response, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Any error a body may end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body to Graph: held bytes or the caller's body, streaming.
pub type UpstreamBody = BoxBody<Bytes, BoxError>;

/// Set when a request body went over its limit: over HTTP/2 hyper resets
/// the stream and the send error no longer says why, so the body says it.
#[derive(Debug, Clone, Default)]
pub struct Overflow(Arc<AtomicBool>);

impl Overflow {
    /// Whether the body went over its limit.
    pub fn happened(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The caller's body, streamed, cut at `limit` bytes; the [`Overflow`]
/// says afterwards whether it was.
pub fn bounded<B>(body: B, limit: usize) -> (UpstreamBody, Overflow)
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    let overflow = Overflow::default();
    let flag = Arc::clone(&overflow.0);
    let body = http_body_util::Limited::new(body, limit)
        .map_err(move |e: BoxError| {
            if e.is::<http_body_util::LengthLimitError>() {
                flag.store(true, Ordering::Release);
            }
            e
        })
        .boxed();
    (body, overflow)
}

/// A request body of `bytes`, held so it can be sent again.
pub fn held(bytes: Bytes) -> UpstreamBody {
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed()
}

/// The longest wait for a TCP connection to Graph.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// TCP keepalive probes (as reqwest set them), and how long sent data may
/// stay unacknowledged: a connection that died silently leaves the pool
/// within about a minute instead of the kernel's quarter of an hour. With
/// HTTP/2 every request to Graph shares one connection, so this matters.
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);
const TCP_KEEPALIVE_RETRIES: u32 = 3;
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// HTTP/2 PINGs on an idle connection, and how long an answer may take.
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// How long an idle connection stays in the pool.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A pooled HTTP client for Graph.
#[derive(Clone)]
pub struct GraphClient {
    /// `None` when no client could be built (see [`GraphClient::unusable`]).
    http: Option<Client<HttpsConnector<Egress>, UpstreamBody>>,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient")
            .field("usable", &self.http.is_some())
            .finish()
    }
}

/// One [`GraphClient`] per distinct `ca_file` of the apps (apps behind
/// different TLS-inspecting proxies trust different roots), fixed at start.
#[derive(Debug, Clone)]
pub struct GraphClients {
    /// For apps without a `ca_file`: the system roots alone.
    plain: GraphClient,
    with_ca_file: Vec<(std::path::PathBuf, GraphClient)>,
}

impl GraphClients {
    /// A client for no `ca_file` and one for each of `ca_files`. A file that
    /// fails now (it was read at start already) is logged, and its apps use
    /// the system roots alone.
    pub fn new<'a>(ca_files: impl IntoIterator<Item = &'a Path>) -> GraphClients {
        GraphClients::built_by(ca_files, GraphClient::new)
    }

    /// As [`GraphClients::new`], each client built by `build`.
    fn built_by<'a>(
        ca_files: impl IntoIterator<Item = &'a Path>,
        build: impl Fn(Option<&Path>) -> Result<GraphClient, String>,
    ) -> GraphClients {
        let plain = build(None).unwrap_or_else(|e| {
            tracing::error!("the Graph gateway's HTTP client could not be built: {e}");
            GraphClient::unusable()
        });
        let mut with_ca_file: Vec<(std::path::PathBuf, GraphClient)> = Vec::new();
        for path in ca_files {
            if with_ca_file.iter().any(|(p, _)| p == path) {
                continue;
            }
            match build(Some(path)) {
                Ok(client) => with_ca_file.push((path.to_owned(), client)),
                Err(e) => tracing::error!(
                    "the Graph gateway trusts only the system roots for apps with ca_file {}: {e}",
                    path.display()
                ),
            }
        }
        GraphClients {
            plain,
            with_ca_file,
        }
    }

    /// The client for an app's `ca_file`; one the broker did not start with
    /// (a reload added it) trusts the system roots until a restart.
    pub fn for_ca_file(&self, ca_file: Option<&Path>) -> &GraphClient {
        ca_file
            .and_then(|path| self.with_ca_file.iter().find(|(p, _)| p == path))
            .map_or(&self.plain, |(_, client)| client)
    }
}

/// Why Graph was not reached, or its answer broke off.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("Microsoft Graph did not answer within graph.timeout ({0:?})")]
    Timeout(Duration),
    #[error("Microsoft Graph could not be reached: {0}")]
    Unreachable(String),
}

impl GraphClient {
    /// A client trusting the platform's roots and, when given, `ca_file`;
    /// through the proxy the environment names, if any.
    pub fn new(ca_file: Option<&Path>) -> Result<GraphClient, String> {
        GraphClient::with_proxies(ca_file, Matcher::from_env())
    }

    /// As [`GraphClient::new`], with the proxies `proxies` names.
    pub fn with_proxies(ca_file: Option<&Path>, proxies: Matcher) -> Result<GraphClient, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let extra = match ca_file {
            Some(path) => load_ca_file(path).map_err(|e| e.to_string())?,
            None => Vec::new(),
        };
        let verifier =
            rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
                .map_err(|e| {
                    format!("the certificate roots (the system's and app.ca_file): {e}")
                })?;
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        tcp.set_keepalive(Some(TCP_KEEPALIVE));
        tcp.set_keepalive_interval(Some(TCP_KEEPALIVE));
        tcp.set_keepalive_retries(Some(TCP_KEEPALIVE_RETRIES));
        tcp.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(Egress {
                tcp,
                proxies: Arc::new(proxies),
            });
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_keep_alive_interval(Some(H2_KEEPALIVE_INTERVAL))
            .http2_keep_alive_timeout(H2_KEEPALIVE_TIMEOUT)
            .http2_keep_alive_while_idle(true)
            .build(https);
        Ok(GraphClient { http: Some(http) })
    }

    /// A client that answers every request 502 (the TLS stack could not
    /// start; the daemon still serves tokens).
    pub fn unusable() -> GraphClient {
        GraphClient { http: None }
    }

    /// Sends one request; the answer's body streams, each wait for a piece
    /// of it bounded by `timeout` as the wait for the answer is.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        mut headers: HeaderMap,
        body: UpstreamBody,
        timeout: Duration,
    ) -> Result<Response<BoxBody<Bytes, BoxError>>, UpstreamError> {
        let Some(http) = &self.http else {
            return Err(UpstreamError::Unreachable(
                "the gateway's HTTP client could not be built at start-up (see the log)".into(),
            ));
        };
        // The URL is the gateway's own (a configured base and a path it
        // normalised), so it parses; say so without echoing it if not.
        let uri: Uri = url
            .parse()
            .map_err(|_| UpstreamError::Unreachable("the upstream URL is not valid".into()))?;
        // The caller's (an SDK's) User-Agent passes; ours when it sent none.
        headers
            .entry(USER_AGENT)
            .or_insert(HeaderValue::from_static(concat!(
                "tokenbroker/",
                env!("CARGO_PKG_VERSION")
            )));
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        match tokio::time::timeout(timeout, http.request(request)).await {
            Err(_) => Err(UpstreamError::Timeout(timeout)),
            Ok(Err(e)) => Err(UpstreamError::Unreachable(describe(&e))),
            Ok(Ok(response)) => Ok(response.map(|body| IdleTimeout::new(body, timeout).boxed())),
        }
    }
}

/// The TCP connection to Graph: straight, or for https through a proxy's
/// CONNECT tunnel when the proxy settings say so (TLS then runs inside it).
#[derive(Clone)]
pub struct Egress {
    tcp: HttpConnector,
    proxies: Arc<Matcher>,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The proxy settings may hold its credentials.
        f.write_str("Egress")
    }
}

impl tower_service::Service<Uri> for Egress {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let proxy = self
            .proxies
            .intercept(&dst)
            .filter(|_| dst.scheme_str() == Some("https"));
        match proxy {
            // A CONNECT tunnel is opened in the clear: an https:// or
            // socks5:// proxy would need another handshake first.
            Some(proxy) if proxy.uri().scheme_str() != Some("http") => Box::pin(async {
                Err("the proxy in HTTPS_PROXY/ALL_PROXY must be an http:// proxy (a CONNECT tunnel)".into())
            }),
            Some(proxy) => {
                let mut tunnel = Tunnel::new(proxy.uri().clone(), self.tcp.clone());
                if let Some(auth) = proxy.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                Box::pin(async move {
                    tunnel
                        .call(dst)
                        .await
                        .map_err(|e| format!("through the proxy: {e}").into())
                })
            }
            None => {
                let connecting = self.tcp.call(dst);
                Box::pin(async move { connecting.await.map_err(Into::into) })
            }
        }
    }
}

/// Graph's answer body, cut when a piece of it takes longer than `timeout`.
struct IdleTimeout<B> {
    body: B,
    timeout: Duration,
    /// One timer for the whole body, set again at each wait.
    sleep: Pin<Box<Sleep>>,
    /// Whether `sleep` times the current wait.
    armed: bool,
}

impl<B> IdleTimeout<B> {
    fn new(body: B, timeout: Duration) -> IdleTimeout<B> {
        IdleTimeout {
            body,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            armed: false,
        }
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            this.armed = false;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if !this.armed {
            this.sleep.as_mut().reset(Instant::now() + this.timeout);
            this.armed = true;
        }
        match this.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(UpstreamError::Timeout(this.timeout).into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The error's chain (hyper-util's errors never hold the URL, whose query
/// may hold what the caller asked for).
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let mut text = String::from(if e.is_connect() {
        "connecting failed"
    } else {
        "the request failed"
    });
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[tokio::test(start_paused = true)]
    async fn a_body_is_cut_when_a_piece_is_later_than_the_timeout_not_when_it_is_long() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|frame| (frame, rx))
        });
        let mut body = IdleTimeout::new(
            http_body_util::StreamBody::new(Box::pin(stream)),
            Duration::from_secs(30),
        );
        let started = Instant::now();
        let sender = tokio::spawn(async move {
            // Four pieces 20 s apart: 80 s in all, each wait under 30 s.
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"x")))).await;
            }
            // Then silence, the sender still there.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        for _ in 0..4 {
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), "x");
        }
        assert_eq!(started.elapsed(), Duration::from_secs(80));
        let error = body.frame().await.unwrap().unwrap_err();
        assert!(error.to_string().contains("graph.timeout"), "{error}");
        assert_eq!(started.elapsed(), Duration::from_secs(110));
        sender.abort();
    }

    /// A client that uses no proxy, whatever this machine's environment says.
    fn direct(ca_file: Option<&Path>) -> GraphClient {
        GraphClient::with_proxies(ca_file, Matcher::builder().build()).unwrap()
    }

    /// `GET url` with no headers.
    async fn get(
        client: &GraphClient,
        url: &str,
        timeout: Duration,
    ) -> Result<Response<BoxBody<Bytes, BoxError>>, UpstreamError> {
        let (method, headers) = (Method::GET, HeaderMap::new());
        client
            .send(method, url, headers, held(Bytes::new()), timeout)
            .await
    }

    /// A server that reads a request and never answers; says when it read.
    fn silent_server() -> (u16, std::sync::mpsc::Receiver<()>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (read, was_read) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let _ = read.send(());
            let _ = conn.read(&mut buf);
        });
        (port, was_read)
    }

    #[tokio::test]
    async fn an_answer_that_does_not_begin_within_the_timeout_is_a_timeout() {
        let (port, was_read) = silent_server();
        let url = format!("http://127.0.0.1:{port}/v1.0/users");
        let result = get(&direct(None), &url, Duration::from_millis(300)).await;
        assert!(
            matches!(result, Err(UpstreamError::Timeout(_))),
            "{result:?}"
        );
        assert!(
            was_read.recv_timeout(Duration::from_secs(5)).is_ok(),
            "the request reached the server"
        );
    }

    #[tokio::test]
    async fn an_unreachable_graph_is_named_without_the_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/v1.0/users?$filter=secret");
        let result = get(&direct(None), &url, Duration::from_secs(5)).await;
        let Err(UpstreamError::Unreachable(why)) = result else {
            panic!("{result:?}");
        };
        assert!(why.starts_with("connecting failed"), "{why}");
        assert!(!why.contains("secret"), "{why}");
    }

    /// A throw-away CA and a certificate for `localhost` it signed.
    fn test_pki() -> (
        String,
        rustls::pki_types::CertificateDer<'static>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "tokenbroker test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        (ca_cert.pem(), cert.der().clone(), key_der)
    }

    /// An HTTPS server offering h2 and http/1.1 that answers each request
    /// with the HTTP version it arrived in.
    async fn tls_server(
        cert: rustls::pki_types::CertificateDer<'static>,
        key: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> u16 {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let io = hyper_util::rt::TokioIo::new(tls);
                let service =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                            Bytes::from(format!("{:?}", req.version())),
                        )))
                    });
                tokio::spawn(async move {
                    if h2 {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, service)
                            .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .await;
                    }
                });
            }
        });
        port
    }

    /// A CONNECT proxy on loopback that tunnels where it is asked; keeps
    /// each CONNECT request's head.
    async fn connect_proxy() -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if client.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let target = head.split_whitespace().nth(1).unwrap_or_default();
                    let port: u16 = target.rsplit(':').next().unwrap().parse().unwrap();
                    record.lock().unwrap().push(head.clone());
                    let mut server = tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .unwrap();
                    client
                        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                        .await
                        .unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        (port, seen)
    }

    #[tokio::test]
    async fn graph_over_tls_is_trusted_through_ca_file_and_spoken_to_in_http2() {
        let dir = tempfile::tempdir().unwrap();
        let (ca_pem, cert, key) = test_pki();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();
        let port = tls_server(cert, key).await;
        let url = format!("https://localhost:{port}/v1.0/users");
        let send = |client: GraphClient, url: String| async move {
            get(&client, &url, Duration::from_secs(10)).await
        };

        let trusting = direct(Some(&ca_file));
        for _ in 0..2 {
            let response = send(trusting.clone(), url.clone()).await.unwrap();
            assert_eq!(response.status(), 200);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "HTTP/2.0");
        }

        // Through a CONNECT proxy (HTTPS_PROXY), with its credentials; not
        // for a host NO_PROXY names.
        let (proxy, seen) = connect_proxy().await;
        let proxied = |no: &str| {
            let proxies = Matcher::builder()
                .https(format!("http://user:pw@127.0.0.1:{proxy}"))
                .no(no.to_owned())
                .build();
            GraphClient::with_proxies(Some(&ca_file), proxies).unwrap()
        };
        let response = send(proxied(""), url.clone()).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "HTTP/2.0");
        {
            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), 1, "{seen:?}");
            assert!(
                seen[0].starts_with(&format!("CONNECT localhost:{port} ")),
                "{seen:?}"
            );
            // user:pw
            assert!(seen[0].contains("dXNlcjpwdw=="), "{seen:?}");
        }
        send(proxied("localhost"), url.clone()).await.unwrap();
        assert_eq!(seen.lock().unwrap().len(), 1);

        // A streamed body over its limit: over HTTP/2 the send error does
        // not say why, the overflow does.
        // 8 KiB and 2 KiB against a limit of 4 KiB.
        for (kib, over) in [(8, true), (2, false)] {
            let chunks = futures_util::stream::iter(
                (0..kib).map(|_| Ok::<_, BoxError>(Frame::data(Bytes::from(vec![b'x'; 1024])))),
            );
            let (body, overflow) = bounded(http_body_util::StreamBody::new(chunks), 4096);
            let (method, headers) = (Method::POST, HeaderMap::new());
            let sent = trusting
                .send(method, &url, headers, body, Duration::from_secs(10))
                .await;
            assert_eq!(overflow.happened(), over, "{sent:?}");
            if !over {
                assert_eq!(sent.unwrap().status(), 200);
            }
        }

        // Each app's client trusts its own ca_file; an app without one, or
        // with one the broker did not start with, the system roots alone.
        let clients = GraphClients::built_by([ca_file.as_path()], |ca| Ok(direct(ca)));
        let own = clients.for_ca_file(Some(&ca_file)).clone();
        assert_eq!(send(own, url.clone()).await.unwrap().status(), 200);
        for other in [None, Some(dir.path().join("added-by-reload.pem"))] {
            let client = clients.for_ca_file(other.as_deref()).clone();
            assert!(send(client, url.clone()).await.is_err(), "{other:?}");
        }

        // Without the CA file the certificate is not trusted.
        let result = send(direct(None), url).await;
        let Err(UpstreamError::Unreachable(why)) = result else {
            panic!("{result:?}");
        };
        assert!(why.contains("certificate"), "{why}");
    }
}
