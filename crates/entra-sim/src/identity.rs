//! A simulated managed-identity endpoint: what an Azure VM (IMDS) or App
//! Service offers a process so it can get tokens as the host's identity.
//! The broker asks it for a token for `api://AzureADTokenExchange` and
//! presents that as a federated client assertion. Checked as the real
//! endpoints check: IMDS wants `Metadata: true` and `api-version`; App
//! Service wants `X-IDENTITY-HEADER` and `api-version=2019-08-01`.

use crate::{FederatedIssuer, SimError};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Which protocol the endpoint speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityProtocol {
    /// Azure VM Instance Metadata Service.
    Imds,
    /// App Service / Functions, with this `X-IDENTITY-HEADER` secret.
    AppService { secret: String },
}

#[derive(Debug)]
struct Inner {
    issuer: Arc<FederatedIssuer>,
    protocol: IdentityProtocol,
    /// User-assigned identities: client id → subject (object id).
    user_assigned: Mutex<HashMap<String, String>>,
    /// The system-assigned identity's subject, if the host has one.
    system_assigned: Mutex<Option<String>>,
    lifetime: Mutex<Duration>,
    requests: AtomicUsize,
    down: AtomicBool,
}

/// A running managed-identity endpoint. Stops when dropped.
#[derive(Debug)]
pub struct ManagedIdentityEndpoint {
    inner: Arc<Inner>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl ManagedIdentityEndpoint {
    /// Starts on `127.0.0.1:0`, issuing tokens signed by `issuer`.
    pub async fn start(
        issuer: Arc<FederatedIssuer>,
        protocol: IdentityProtocol,
    ) -> Result<ManagedIdentityEndpoint, SimError> {
        let (listener, addr) = crate::listen::bind_loopback().await?;
        let inner = Arc::new(Inner {
            issuer,
            protocol,
            user_assigned: Mutex::new(HashMap::new()),
            system_assigned: Mutex::new(None),
            lifetime: Mutex::new(Duration::from_secs(86_399)),
            requests: AtomicUsize::new(0),
            down: AtomicBool::new(false),
        });
        let (stop, stopped) = watch::channel(false);
        let serving = Arc::clone(&inner);
        tokio::spawn(crate::listen::serve(
            listener,
            stopped,
            move |req: Request<Incoming>| {
                let inner = Arc::clone(&serving);
                async move { Ok::<_, std::convert::Infallible>(answer(&inner, &req)) }
            },
        ));
        Ok(ManagedIdentityEndpoint { inner, addr, stop })
    }

    /// `http://127.0.0.1:PORT` (IMDS's base), or the App Service token URL.
    pub fn url(&self) -> String {
        match self.inner.protocol {
            IdentityProtocol::Imds => format!("http://{}", self.addr),
            IdentityProtocol::AppService { .. } => format!("http://{}/msi/token", self.addr),
        }
    }

    /// Assigns a user-assigned identity with `client_id`, known to Entra as `subject`.
    pub fn assign(&self, client_id: &str, subject: &str) {
        if let Ok(mut map) = self.inner.user_assigned.lock() {
            map.insert(client_id.to_owned(), subject.to_owned());
        }
    }

    /// Gives the host a system-assigned identity known as `subject`.
    pub fn assign_system(&self, subject: &str) {
        if let Ok(mut system) = self.inner.system_assigned.lock() {
            *system = Some(subject.to_owned());
        }
    }

    /// The lifetime of issued tokens (default a day, as Azure's).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        if let Ok(mut l) = self.inner.lifetime.lock() {
            *l = lifetime;
        }
    }

    /// An outage: every request gets 503 until `false`.
    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, Ordering::SeqCst);
    }

    /// Token requests received.
    pub fn requests(&self) -> usize {
        self.inner.requests.load(Ordering::SeqCst)
    }
}

impl Drop for ManagedIdentityEndpoint {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn answer(inner: &Inner, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    inner.requests.fetch_add(1, Ordering::SeqCst);
    if inner.down.load(Ordering::SeqCst) {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"error": "service_unavailable", "error_description": "simulated outage"}),
        );
    }
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let bad = |why: &str| {
        json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "invalid_request", "error_description": why}),
        )
    };
    match &inner.protocol {
        IdentityProtocol::Imds => {
            if req.uri().path() != "/metadata/identity/oauth2/token" {
                return bad("unknown path");
            }
            if header("metadata") != Some("true") {
                return bad("Required metadata header not specified");
            }
            if !query.contains_key("api-version") {
                return bad("Required query variable 'api-version' is missing");
            }
        }
        IdentityProtocol::AppService { secret } => {
            if req.uri().path() != "/msi/token" {
                return bad("unknown path");
            }
            if header("x-identity-header") != Some(secret.as_str()) {
                return json(
                    StatusCode::UNAUTHORIZED,
                    serde_json::json!({"statusCode": 401, "message": "the X-IDENTITY-HEADER does not match"}),
                );
            }
            if query.get("api-version").map(String::as_str) != Some("2019-08-01") {
                return bad("api-version must be 2019-08-01");
            }
        }
    }
    let Some(resource) = query.get("resource") else {
        return bad("Required query variable 'resource' is missing");
    };
    let subject = match query.get("client_id") {
        Some(id) => inner
            .user_assigned
            .lock()
            .ok()
            .and_then(|m| m.get(id).cloned()),
        None => inner.system_assigned.lock().ok().and_then(|s| s.clone()),
    };
    let Some(subject) = subject else {
        return bad("Identity not found");
    };
    let lifetime = inner
        .lifetime
        .lock()
        .map(|l| *l)
        .unwrap_or(Duration::from_secs(86_399));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let token = inner.issuer.issue(&subject, resource, now, lifetime);
    json(
        StatusCode::OK,
        serde_json::json!({
            "access_token": token,
            "expires_in": lifetime.as_secs().to_string(),
            "expires_on": (now + lifetime.as_secs()).to_string(),
            "not_before": now.to_string(),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": query.get("client_id").cloned().unwrap_or_default(),
        }),
    )
}
