//! A simulated Entra ID authority: the v2.0 token endpoint, checking each
//! request the way Entra does, issuing JWT access tokens, counting, and
//! injecting faults on command.
//!
//! Used by the tests and by `tokenbroker serve --dev`. It listens on
//! loopback only. Checks (see `verify.rs`): form content type and fields,
//! `grant_type`, `scope` ending in `/.default`, the assertion type, `alg`
//! PS256 or RS256, `x5t`/`x5t#S256` (padded or not) naming a registered
//! certificate, the signature, `aud` equal to this authority's token URL for
//! the tenant, `iss` = `sub` = client ID, `exp` in the future and at most an
//! hour after `nbf`/`iat`. Unconsented tenants get AADSTS700016 and unknown
//! certificates AADSTS700027, worded as Entra words them.
//!
//! [`SimulatedGraph`] is a strict stand-in for Microsoft Graph's mail routes
//! that trusts this authority's tokens (`graph.rs`).

mod graph;
mod identity;
mod verify;

pub use graph::{value_bytes, SeenRequest, SimulatedGraph};
pub use identity::{IdentityProtocol, ManagedIdentityEndpoint};

/// The v2.0 token endpoint of `tenant` under `base` (`http://127.0.0.1:PORT`).
pub fn token_endpoint(base: &str, tenant: &str) -> String {
    format!(
        "{}/{}/oauth2/v2.0/token",
        base.trim_end_matches('/'),
        tenant
    )
}

/// Whether `v` is a GUID in the 8-4-4-4-12 form (Entra's tenant ids).
fn is_guid(v: &str) -> bool {
    v.len() == 36 && uuid::Uuid::try_parse(v).is_ok()
}

use aws_lc_rs::signature::{KeyPair, RsaKeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::watch;
pub use verify::{Refusal, FEDERATED_AUDIENCE};

/// An issuer of tokens that an app may trust as federated credentials (a
/// Kubernetes cluster's service-account issuer, a managed identity's
/// tenant): it signs RS256 JWTs with a key of its own.
#[derive(Debug)]
pub struct FederatedIssuer {
    pub issuer: String,
    key: RsaKeyPair,
}

impl FederatedIssuer {
    /// A new issuer named `issuer` (a URL, as Entra matches it).
    pub fn new(issuer: &str) -> Result<FederatedIssuer, SimError> {
        Ok(FederatedIssuer {
            issuer: issuer.to_owned(),
            key: RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|_| SimError("generating an issuer key failed".into()))?,
        })
    }

    /// Its public key (PKCS#1 DER).
    pub fn public_key(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }

    /// A token about `subject` for `audience`, valid from `issued_at` (unix
    /// seconds) for `lifetime`.
    pub fn issue(
        &self,
        subject: &str,
        audience: &str,
        issued_at: u64,
        lifetime: Duration,
    ) -> String {
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "sim-issuer"});
        let claims = serde_json::json!({
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + lifetime.as_secs(),
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        let mut jwt = URL_SAFE_NO_PAD.encode(header.to_string());
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut signature = vec![0; self.key.public_modulus_len()];
        // Signing into a buffer of the modulus size cannot fail.
        let _ = self.key.sign(
            &aws_lc_rs::signature::RSA_PKCS1_SHA256,
            &aws_lc_rs::rand::SystemRandom::new(),
            jwt.as_bytes(),
            &mut signature,
        );
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(signature));
        jwt
    }
}

/// A fault to inject into the next answer(s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this HTTP status and an Entra-style `temporarily_unavailable`/`server_error` body.
    Status(u16),
    /// 429 with `Retry-After: n` seconds.
    Throttle(u64),
    /// Wait this long, then answer normally.
    Slow(Duration),
    /// 200 with a body that is not JSON.
    Garbage,
    /// 200 with JSON cut short.
    Truncated,
    /// Close the connection without answering.
    Drop,
    /// Refuse with this AADSTS code, HTTP status and OAuth `error`.
    Aadsts {
        /// HTTP status.
        status: u16,
        /// OAuth `error`.
        error: String,
        /// AADSTS code.
        code: u32,
    },
}

#[derive(Debug)]
struct State {
    client_id: String,
    base_url: String,
    /// Registered certificates: base64url thumbprint (SHA-1 and SHA-256) → PKCS#1 public key.
    keys: HashMap<String, Vec<u8>>,
    /// Tenants by lower-case GUID or domain: (tenant GUID, consented).
    tenants: HashMap<String, (String, bool)>,
    /// Federated identity credentials: issuer → (key, trusted subjects).
    federated: HashMap<String, (Vec<u8>, Vec<String>)>,
    lifetime: Duration,
    refresh_in: Option<Duration>,
    roles: Vec<String>,
    latency: Duration,
    faults: VecDeque<Fault>,
    persistent_fault: Option<Fault>,
    requests: HashMap<String, usize>,
    refusals: Vec<Refusal>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    signer: RsaKeyPair,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    total: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running simulated authority. Stops when dropped.
#[derive(Debug)]
pub struct SimulatedAuthority {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
}

/// The simulated authority could not start.
#[derive(Debug, thiserror::Error)]
#[error("simulated authority: {0}")]
pub struct SimError(String);

impl SimulatedAuthority {
    /// Starts on `127.0.0.1:0` for the app `client_id`.
    pub async fn start(client_id: &str) -> Result<SimulatedAuthority, SimError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| SimError(format!("binding 127.0.0.1:0: {e}")))?;
        SimulatedAuthority::start_on(listener, client_id)
    }

    /// Starts on a listener the caller bound.
    pub fn start_on(
        listener: TcpListener,
        client_id: &str,
    ) -> Result<SimulatedAuthority, SimError> {
        let addr = listener
            .local_addr()
            .map_err(|e| SimError(format!("listener address: {e}")))?;
        let signer = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .map_err(|_| SimError("generating the token signing key failed".into()))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                client_id: client_id.to_owned(),
                base_url: format!("http://{addr}"),
                keys: HashMap::new(),
                tenants: HashMap::new(),
                federated: HashMap::new(),
                lifetime: Duration::from_secs(3599),
                refresh_in: None,
                roles: vec![
                    "Mail.ReadWrite".into(),
                    "Calendars.ReadWrite".into(),
                    "Contacts.ReadWrite".into(),
                ],
                latency: Duration::ZERO,
                faults: VecDeque::new(),
                persistent_fault: None,
                requests: HashMap::new(),
                refusals: Vec::new(),
            }),
            signer,
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            total: AtomicUsize::new(0),
        });
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(serve(listener, Arc::clone(&shared), stopped));
        Ok(SimulatedAuthority { shared, addr, stop })
    }

    /// `http://127.0.0.1:PORT`: the `authority_host` to configure.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The token endpoint for `tenant`.
    pub fn token_url(&self, tenant: &str) -> String {
        token_endpoint(&self.url(), tenant)
    }

    /// Registers a certificate (DER) on the app, as an upload in the portal does.
    pub fn register_certificate(&self, cert_der: &[u8]) -> Result<(), SimError> {
        let public = verify::rsa_public_key(cert_der).map_err(SimError)?;
        let sha1 =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, cert_der);
        let sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert_der);
        let mut state = self.shared.lock();
        state
            .keys
            .insert(URL_SAFE_NO_PAD.encode(sha1.as_ref()), public.clone());
        state
            .keys
            .insert(URL_SAFE_NO_PAD.encode(sha256.as_ref()), public);
        Ok(())
    }

    /// Makes the app trust tokens from `issuer` about `subject` (audience
    /// `api://AzureADTokenExchange`), as a federated identity credential on
    /// the app registration does.
    pub fn trust_federated(&self, issuer: &FederatedIssuer, subject: &str) {
        let mut state = self.shared.lock();
        let entry = state
            .federated
            .entry(issuer.issuer.clone())
            .or_insert_with(|| (issuer.public_key(), Vec::new()));
        entry.1.push(subject.to_owned());
    }

    /// Removes every registered certificate.
    pub fn clear_certificates(&self) {
        self.shared.lock().keys.clear();
    }

    /// Adds `tenant` (GUID or domain) with admin consent granted; returns its tenant GUID.
    pub fn consent(&self, tenant: &str) -> String {
        self.add_tenant(tenant, true)
    }

    /// Adds `tenant` as existing but without consent (AADSTS700016); returns its GUID.
    pub fn add_unconsented_tenant(&self, tenant: &str) -> String {
        self.add_tenant(tenant, false)
    }

    fn add_tenant(&self, tenant: &str, consented: bool) -> String {
        let mut state = self.shared.lock();
        let key = tenant.to_ascii_lowercase();
        let tid = match state.tenants.get(&key) {
            Some((tid, _)) => tid.clone(),
            None if is_guid(tenant) => key.clone(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        state.tenants.insert(key, (tid.clone(), consented));
        state.tenants.insert(tid.clone(), (tid.clone(), consented));
        tid
    }

    /// Sets the lifetime of issued tokens (default 3599 s).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.shared.lock().lifetime = lifetime;
    }

    /// Sends `refresh_in` with every token (default: not sent).
    pub fn set_refresh_in(&self, refresh_in: Option<Duration>) {
        self.shared.lock().refresh_in = refresh_in;
    }

    /// The `roles` claim of issued tokens.
    pub fn set_roles(&self, roles: &[&str]) {
        self.shared.lock().roles = roles.iter().map(|r| (*r).to_owned()).collect();
    }

    /// A delay before every answer (to make concurrent callers overlap).
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// Queues `fault` for the next `times` requests (any tenant).
    pub fn push_fault(&self, fault: Fault, times: usize) {
        let mut state = self.shared.lock();
        for _ in 0..times {
            state.faults.push_back(fault.clone());
        }
    }

    /// Applies `fault` to every request until cleared with `None`.
    pub fn set_persistent_fault(&self, fault: Option<Fault>) {
        self.shared.lock().persistent_fault = fault;
    }

    /// Token requests received for `tenant` (as written in the URL, any case).
    pub fn requests(&self, tenant: &str) -> usize {
        self.shared
            .lock()
            .requests
            .get(&tenant.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }

    /// Token requests received in all.
    pub fn total_requests(&self) -> usize {
        self.shared.total.load(Ordering::SeqCst)
    }

    /// The most requests ever in progress at once.
    pub fn peak_concurrency(&self) -> usize {
        self.shared.peak.load(Ordering::SeqCst)
    }

    /// Every refusal so far (what was wrong with each refused request).
    pub fn refusals(&self) -> Vec<Refusal> {
        self.shared.lock().refusals.clone()
    }

    /// The public key that verifies issued access tokens (PKCS#1 DER).
    pub fn token_signing_key(&self) -> Vec<u8> {
        self.shared.signer.public_key().as_ref().to_vec()
    }

    /// An access token for `resource` in `tenant_id` with `roles`, signed
    /// and shaped as the token endpoint issues them (current lifetime), but
    /// without a client assertion: for tests of resource servers such as
    /// [`SimulatedGraph`]. Not counted in `requests`.
    pub fn issue_token_for_tests(&self, tenant_id: &str, resource: &str, roles: &[&str]) -> String {
        let (lifetime, client_id) = {
            let state = self.shared.lock();
            (state.lifetime, state.client_id.clone())
        };
        let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        // Signing into a buffer of the modulus size cannot fail.
        sign_access_token(
            &self.shared.signer,
            tenant_id,
            resource,
            &roles,
            &client_id,
            now,
            lifetime,
        )
        .unwrap_or_default()
    }
}

impl Drop for SimulatedAuthority {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
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

/// Decrements the in-flight gauge however the request ends.
struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

type Answer = Response<Full<Bytes>>;

/// The error a service returns to make hyper drop the connection.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by fault injection")]
struct Dropped;

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Answer, Dropped> {
    let now_in_flight = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.peak.fetch_max(now_in_flight, Ordering::SeqCst);
    let _guard = InFlight(&shared);

    let tenant = token_path_tenant(req.uri().path());
    if let Some(tenant) = &tenant {
        shared.total.fetch_add(1, Ordering::SeqCst);
        *shared
            .lock()
            .requests
            .entry(tenant.to_ascii_lowercase())
            .or_default() += 1;
    }
    let (latency, fault) = {
        let mut state = shared.lock();
        let fault = state
            .faults
            .pop_front()
            .or_else(|| state.persistent_fault.clone());
        (state.latency, fault)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault {
        Some(Fault::Slow(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::Drop) => return Err(Dropped),
        Some(Fault::Garbage) => {
            return Ok(raw(
                200,
                "text/html",
                "<html><body>Service Unavailable</body></html>",
            ))
        }
        Some(Fault::Truncated) => {
            return Ok(raw(
                200,
                "application/json",
                "{\"token_type\":\"Bearer\",\"expires_in\":35",
            ))
        }
        Some(Fault::Throttle(seconds)) => {
            let mut answer = entra_error(429, "temporarily_unavailable", 50196, "The server is temporarily unable to service your request due to throttling. Please retry later.", &req);
            if let Ok(value) = hyper::header::HeaderValue::from_str(&seconds.to_string()) {
                answer.headers_mut().insert("retry-after", value);
            }
            return Ok(answer);
        }
        Some(Fault::Status(status)) => {
            let error = if status == 503 {
                "temporarily_unavailable"
            } else {
                "server_error"
            };
            return Ok(entra_error(
                status,
                error,
                90033,
                "A transient error has occurred. Please try again.",
                &req,
            ));
        }
        Some(Fault::Aadsts {
            status,
            error,
            code,
        }) => {
            return Ok(entra_error(status, &error, code, "Injected refusal.", &req));
        }
        None => {}
    }

    let Some(tenant) = tenant else {
        return Ok(raw(404, "application/json", "{\"error\":\"not_found\"}"));
    };
    if req.method() != hyper::Method::POST {
        return Ok(entra_error(
            400,
            "invalid_request",
            900_561,
            "The endpoint only accepts POST requests.",
            &req,
        ));
    }
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let correlation = correlation_id(&req);
    let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Err(Dropped),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let checked = {
        let state = shared.lock();
        verify::check_request(&state_view(&state), &tenant, &content_type, &body, now)
    };
    match checked {
        Ok(grant) => Ok(issue_token(&shared, &grant, now)),
        Err(refusal) => {
            let answer = refusal_answer(&refusal, &correlation);
            shared.lock().refusals.push(refusal);
            Ok(answer)
        }
    }
}

fn state_view(state: &State) -> verify::Registry<'_> {
    verify::Registry {
        client_id: &state.client_id,
        base_url: &state.base_url,
        keys: &state.keys,
        tenants: &state.tenants,
        federated: &state.federated,
    }
}

/// `/{tenant}/oauth2/v2.0/token` → the tenant.
fn token_path_tenant(path: &str) -> Option<String> {
    let mut parts = path.strip_prefix('/')?.split('/');
    let tenant = parts.next()?;
    let rest: Vec<&str> = parts.collect();
    (rest == ["oauth2", "v2.0", "token"] && !tenant.is_empty()).then(|| tenant.to_owned())
}

fn correlation_id(req: &Request<Incoming>) -> String {
    req.headers()
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| uuid::Uuid::parse_str(v).is_ok())
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

fn raw(status: u16, content_type: &str, body: &'static str) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *answer.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        answer
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    answer
}

fn json(status: u16, body: &serde_json::Value) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from(body.to_string())));
    *answer.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    answer.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    answer.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store, no-cache"),
    );
    answer
}

fn entra_error(status: u16, error: &str, code: u32, text: &str, req: &Request<Incoming>) -> Answer {
    let refusal = Refusal {
        status,
        error: error.to_owned(),
        code,
        message: text.to_owned(),
    };
    refusal_answer(&refusal, &correlation_id(req))
}

/// Entra's error body: the description carries the code, trace and
/// correlation ids and a timestamp; the ids are also separate fields.
fn refusal_answer(refusal: &Refusal, correlation: &str) -> Answer {
    let trace = uuid::Uuid::new_v4().to_string();
    let timestamp = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace('T', " ");
    let description = format!(
        "AADSTS{}: {}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {timestamp}",
        refusal.code, refusal.message
    );
    json(
        refusal.status,
        &serde_json::json!({
            "error": refusal.error,
            "error_description": description,
            "error_codes": [refusal.code],
            "timestamp": timestamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", refusal.code),
        }),
    )
}

/// Issues an RS256 JWT access token for the checked request.
fn issue_token(shared: &Shared, grant: &verify::Grant, now: u64) -> Answer {
    let (lifetime, refresh_in, roles, client_id) = {
        let state = shared.lock();
        (
            state.lifetime,
            state.refresh_in,
            state.roles.clone(),
            state.client_id.clone(),
        )
    };
    let Some(token) = sign_access_token(
        &shared.signer,
        &grant.tid,
        &grant.resource,
        &roles,
        &client_id,
        now,
        lifetime,
    ) else {
        return raw(500, "application/json", "{\"error\":\"server_error\"}");
    };
    let mut body = serde_json::json!({
        "token_type": "Bearer",
        "expires_in": lifetime.as_secs(),
        "ext_expires_in": lifetime.as_secs(),
        "access_token": token,
    });
    if let Some(refresh_in) = refresh_in {
        body["refresh_in"] = serde_json::json!(refresh_in.as_secs());
    }
    json(200, &body)
}

/// An RS256 access token with the claims Entra puts in app-only tokens.
fn sign_access_token(
    signer: &RsaKeyPair,
    tid: &str,
    resource: &str,
    roles: &[String],
    client_id: &str,
    now: u64,
    lifetime: Duration,
) -> Option<String> {
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "kid": "sim"});
    let claims = serde_json::json!({
        "aud": resource,
        "iss": format!("https://sts.windows.net/{tid}/"),
        "iat": now,
        "nbf": now,
        "exp": now + lifetime.as_secs(),
        "tid": tid,
        "roles": roles,
        "idtyp": "app",
        "appid": client_id,
        "azp": client_id,
        "oid": uuid::Uuid::new_v4().to_string(),
        "sub": uuid::Uuid::new_v4().to_string(),
        "ver": "1.0",
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signature = vec![0; signer.public_modulus_len()];
    let rng = aws_lc_rs::rand::SystemRandom::new();
    signer
        .sign(
            &aws_lc_rs::signature::RSA_PKCS1_SHA256,
            &rng,
            signing_input.as_bytes(),
            &mut signature,
        )
        .ok()?;
    Some(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(&signature)
    ))
}
