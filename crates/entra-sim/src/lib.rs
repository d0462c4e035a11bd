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
//! It holds one app registration or several (`apps.rs`): the request's
//! `client_id` selects the app; certificates, consents and roles are per
//! app, tenants shared.
//!
//! [`SimulatedGraph`] is a strict stand-in for Microsoft Graph's mail routes
//! that trusts this authority's tokens (`graph/`).
//!
//! Here: the authority's state and its API for tests; `server.rs` answers
//! requests (faults included), `token.rs` issues access tokens.

mod answer;
mod apps;
mod graph;
mod identity;
mod listen;
mod server;
mod token;
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

use apps::App;
use aws_lc_rs::signature::{KeyPair, RsaKeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
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
    /// The app `start` made: the one the single-app API addresses.
    client_id: String,
    base_url: String,
    /// App registrations by client ID (`client_id`'s among them).
    apps: HashMap<String, App>,
    /// Tenants by lower-case GUID or domain → tenant GUID.
    tenants: HashMap<String, String>,
    lifetime: Duration,
    refresh_in: Option<Duration>,
    latency: Duration,
    faults: VecDeque<Fault>,
    persistent_fault: Option<Fault>,
    /// Token requests by tenant as written in the URL (lower case).
    requests: HashMap<String, usize>,
    /// Token requests by (`client_id` field, tenant as in `requests`).
    app_requests: HashMap<(String, String), usize>,
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
        let (listener, _) = listen::bind_loopback().await?;
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
                apps: HashMap::from([(client_id.to_owned(), App::new())]),
                tenants: HashMap::new(),
                lifetime: Duration::from_secs(3599),
                refresh_in: None,
                latency: Duration::ZERO,
                faults: VecDeque::new(),
                persistent_fault: None,
                requests: HashMap::new(),
                app_requests: HashMap::new(),
                refusals: Vec::new(),
            }),
            signer,
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            total: AtomicUsize::new(0),
        });
        let (stop, stopped) = watch::channel(false);
        let serving = Arc::clone(&shared);
        tokio::spawn(listen::serve(listener, stopped, move |req| {
            server::handle(Arc::clone(&serving), req)
        }));
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
        self.register_certificate_for(&self.first_app(), cert_der)
    }

    /// Makes the app trust tokens from `issuer` about `subject` (audience
    /// `api://AzureADTokenExchange`), as a federated identity credential on
    /// the app registration does.
    pub fn trust_federated(&self, issuer: &FederatedIssuer, subject: &str) {
        self.trust_federated_for(&self.first_app(), issuer, subject);
    }

    /// Removes every certificate registered on the app.
    pub fn clear_certificates(&self) {
        let mut state = self.shared.lock();
        let first = state.client_id.clone();
        state.app_mut(&first).keys.clear();
    }

    /// Adds `tenant` (GUID or domain) with admin consent granted; returns its tenant GUID.
    pub fn consent(&self, tenant: &str) -> String {
        self.consent_for(&self.first_app(), tenant)
    }

    /// Adds `tenant` as existing but without consent for the app
    /// (AADSTS700016); returns its GUID.
    pub fn add_unconsented_tenant(&self, tenant: &str) -> String {
        let mut state = self.shared.lock();
        let tid = state.tenant_id(tenant);
        let first = state.client_id.clone();
        state.app_mut(&first).consented.remove(&tid);
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

    /// The `roles` claim of the tokens issued to the app.
    pub fn set_roles(&self, roles: &[&str]) {
        self.set_roles_for(&self.first_app(), roles);
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

    /// Token requests received for `tenant` (as written in the URL, any
    /// case), whichever app asked; per app: [`Self::requests_for`].
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
        token::sign_access_token(
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
