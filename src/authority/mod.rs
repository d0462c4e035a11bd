//! The authority client: the client-credentials request to a tenant's v2.0
//! token endpoint, with retries, backoff and the two AADSTS remedies.
//!
//! One [`AuthorityClient::acquire`] call is one logical token request: it
//! signs a fresh assertion per attempt, retries transient failures with
//! exponential backoff and jitter (bounded in attempts and total time),
//! stops at once on throttling or a permanent refusal, and re-signs once on
//! AADSTS700024. On AADSTS700027 (this certificate is not registered, or not
//! yet in this tenant) it falls back to the next credential at once and
//! remembers the refusal for that tenant; when every credential was refused
//! it reloads changed credential files once. Caching, single-flight and
//! remembering failures are the cache's job, not this one's.

pub mod aadsts;
mod error;
pub mod response;

pub use error::AcquireError;

use crate::backoff::Backoff;

use crate::clock::SharedClock;
use crate::cloud;
use crate::config::{AppConfig, Config, Resource, SigningAlgorithm, TenantId};
use crate::credentials::{Credential, CredentialSet};
use crate::jitter::Jitter;
use response::{Class, EntraError, TokenResponse};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Reads `app.ca_file`: a PEM bundle of at least one certificate (DER each;
/// the authority's client and the gateway's both trust them).
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, BuildError> {
    let pem = crate::sys::read_bounded(path).map_err(|e| {
        BuildError::CaFile(format!("cannot read app.ca_file {}: {e}", path.display()))
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            BuildError::CaFile(format!(
                "app.ca_file {} is not a PEM certificate bundle: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(BuildError::CaFile(format!(
            "app.ca_file {} holds no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// A token answer larger than this is refused (tokens are a few KiB).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The client assertion type of RFC 7523.
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How hard to try before giving up on one logical request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. Default 4.
    pub max_attempts: u32,
    /// Delays between attempts. Default 250 ms doubling to 4 s.
    pub backoff: Backoff,
    /// No retry starts after this much time has passed. Default 30 s.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            backoff: Backoff {
                base: Duration::from_millis(250),
                cap: Duration::from_secs(4),
            },
            budget: Duration::from_secs(30),
        }
    }
}

/// Everything the client needs to know, taken from one app's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthoritySettings {
    /// The app's name (metric labels).
    pub app: String,
    /// `https://login.microsoftonline.com` or an override.
    pub authority_host: String,
    /// The app's client ID.
    pub client_id: String,
    /// Assertion algorithm.
    pub signing: SigningAlgorithm,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Extra roots.
    pub ca_file: Option<PathBuf>,
    /// Upper bound on requests in flight to the authority, across tenants.
    pub max_concurrent_requests: usize,
    /// Retry policy.
    pub retry: RetryPolicy,
}

impl AuthoritySettings {
    /// The settings of `config`'s first app.
    pub fn from_config(config: &Config) -> AuthoritySettings {
        AuthoritySettings::for_app(config.app())
    }

    /// The settings `app` describes.
    pub fn for_app(app: &AppConfig) -> AuthoritySettings {
        AuthoritySettings {
            app: app.name.as_str().to_owned(),
            authority_host: app.authority_host().trim_end_matches('/').to_owned(),
            client_id: app.client_id.as_str().to_owned(),
            signing: app.signing,
            connect_timeout: app.connect_timeout.0,
            request_timeout: app.request_timeout.0,
            ca_file: app.ca_file.clone(),
            max_concurrent_requests: app.max_concurrent_requests,
            retry: RetryPolicy::default(),
        }
    }
}

/// Failure of one HTTP attempt, before retry decisions.
#[derive(Debug)]
enum AttemptError {
    Entra(EntraError, Class),
    Malformed(String),
    Timeout,
    Transport(String),
    Signing(String),
}

/// How one upstream attempt ended (the `outcome` label of the metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamOutcome {
    /// A token.
    Success,
    /// A failure worth retrying (5xx, 429, transport, malformed body).
    Transient,
    /// A refusal (4xx).
    Permanent,
    /// No answer in time.
    Timeout,
}

impl UpstreamOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamOutcome::Success => "success",
            UpstreamOutcome::Transient => "transient",
            UpstreamOutcome::Permanent => "permanent",
            UpstreamOutcome::Timeout => "timeout",
        }
    }
}

impl UpstreamOutcome {
    /// Every outcome.
    pub const ALL: [UpstreamOutcome; 4] = [
        UpstreamOutcome::Success,
        UpstreamOutcome::Transient,
        UpstreamOutcome::Permanent,
        UpstreamOutcome::Timeout,
    ];
}

/// Hook for metrics on every upstream attempt.
pub trait UpstreamObserver: Send + Sync + std::fmt::Debug + 'static {
    /// An attempt of app `app` (its name) for `tenant` ended.
    fn upstream(
        &self,
        _app: &str,
        _tenant: &TenantId,
        _outcome: UpstreamOutcome,
        _elapsed: Duration,
    ) {
    }
    /// Entra refused the credential with `thumbprint`.
    fn credential_rejected(&self, _thumbprint: &str, _aadsts: Option<&str>) {}
}

/// An observer that records nothing.
#[derive(Debug, Default)]
pub struct NoUpstreamObserver;
impl UpstreamObserver for NoUpstreamObserver {}

/// The client-credentials client for one app registration.
#[derive(Debug)]
pub struct AuthorityClient {
    http: reqwest::Client,
    settings: AuthoritySettings,
    credentials: Arc<CredentialSet>,
    clock: SharedClock,
    jitter: Jitter,
    in_flight: Semaphore,
    observer: Arc<dyn UpstreamObserver>,
    /// Where to ask for changed credential files to be re-read.
    reload: Option<Arc<dyn CredentialReload>>,
}

/// Re-reads credential files that changed; whether new credentials came
/// in. The client asks when Entra refused every credential it has (the
/// files may have been rotated since the last check); the broker's control
/// door answers, so the reload runs under the one reload lock.
pub trait CredentialReload: Send + Sync + std::fmt::Debug + 'static {
    fn reload_changed(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>>;
}

/// The HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// `app.ca_file` is missing or holds no certificate: a configuration error.
    #[error("{0}")]
    CaFile(String),
    /// The TLS or HTTP stack refused to start (not the operator's doing).
    #[error("building the HTTP client: {0}")]
    Client(String),
}

impl BuildError {
    /// An `app.ca_file` failure as the configuration error it is (naming
    /// the file at `config_path` and the key); any other failure as itself.
    pub fn into_config(
        self,
        config_path: &std::path::Path,
    ) -> Result<crate::config::ConfigError, BuildError> {
        match self {
            BuildError::CaFile(message) => Ok(crate::config::ConfigError::Invalid {
                path: config_path.to_owned(),
                key: "app.ca_file".into(),
                message,
            }),
            other => Err(other),
        }
    }
}

impl AuthorityClient {
    /// A client with a pooled HTTP connection set (rustls on aws-lc-rs; the
    /// standard `HTTPS_PROXY`/`NO_PROXY` variables apply).
    pub fn new(
        settings: AuthoritySettings,
        credentials: Arc<CredentialSet>,
        clock: SharedClock,
    ) -> Result<AuthorityClient, BuildError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tokenbroker/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &settings.ca_file {
            let mut certs = Vec::new();
            for der in load_ca_file(path)? {
                certs.push(reqwest::Certificate::from_der(der.as_ref()).map_err(|e| {
                    BuildError::CaFile(format!("app.ca_file {}: {e}", path.display()))
                })?);
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| BuildError::Client(e.to_string()))?;
        let permits = settings.max_concurrent_requests.max(1);
        Ok(AuthorityClient {
            http,
            settings,
            credentials,
            clock,
            jitter: Jitter::from_entropy(),
            in_flight: Semaphore::new(permits),
            observer: Arc::new(NoUpstreamObserver),
            reload: None,
        })
    }

    /// Asks `reload` to re-read changed credential files when Entra refused
    /// every credential (the broker's control door, under its reload lock).
    pub fn with_credential_reload(mut self, reload: Arc<dyn CredentialReload>) -> AuthorityClient {
        self.reload = Some(reload);
        self
    }

    async fn reload_changed_credentials(&self) -> bool {
        match &self.reload {
            Some(reload) => reload.reload_changed().await,
            None => false,
        }
    }

    /// Reports every upstream attempt to `observer` (metrics).
    pub fn with_observer(mut self, observer: Arc<dyn UpstreamObserver>) -> AuthorityClient {
        self.observer = observer;
        self
    }

    pub fn settings(&self) -> &AuthoritySettings {
        &self.settings
    }

    /// The credentials it signs with.
    pub fn credentials(&self) -> &Arc<CredentialSet> {
        &self.credentials
    }

    /// One logical token request for `tenant` and `resource`, with retries.
    pub async fn acquire(
        &self,
        tenant: &TenantId,
        resource: &Resource,
    ) -> Result<TokenResponse, AcquireError> {
        let policy = self.settings.retry;
        let started = Instant::now();
        let mut resigned = false;
        let mut reloaded = false;
        let mut attempt = 1;
        let mut candidates = self.credentials.candidates(tenant);
        let mut next = 0;
        // Thumbprints refused (or unable to sign) in this call: not tried twice.
        let mut tried: Vec<String> = Vec::new();
        loop {
            // `candidates` is never empty: a set holds at least one credential.
            let credential = Arc::clone(&candidates[next.min(candidates.len() - 1)]);
            let error = match self.attempt(tenant, resource, &credential).await {
                Ok(token) => {
                    self.credentials.signed(&credential);
                    return Ok(token);
                }
                Err(e) => e,
            };
            let class = match &error {
                AttemptError::Entra(_, class) => *class,
                AttemptError::Malformed(_) | AttemptError::Timeout | AttemptError::Transport(_) => {
                    Class::Transient
                }
                // A credential that cannot sign here goes the way of one
                // Entra refused: the next one is tried.
                AttemptError::Signing(_) => Class::CredentialRefused,
            };
            let tenant_str = tenant.as_str();
            match class {
                Class::Resign if !resigned => {
                    // Every attempt signs afresh; one more try covers a skewed clock step.
                    resigned = true;
                    tracing::warn!(
                        tenant = tenant_str,
                        "AADSTS700024: assertion time refused; signing a new one"
                    );
                    continue;
                }
                Class::CredentialRefused => {
                    let thumbprint = credential.id().to_owned();
                    match &error {
                        AttemptError::Entra(entra, _) => {
                            self.credentials.reject(
                                tenant,
                                &credential,
                                entra.aadsts(),
                                self.clock.unix_now(),
                            );
                            self.observer
                                .credential_rejected(&thumbprint, entra.aadsts().as_deref());
                        }
                        other => tracing::error!(tenant = tenant_str, credential = %thumbprint,
                            "the credential failed locally: {other:?}"),
                    }
                    tried.push(thumbprint);
                    let untried = |c: &Arc<Credential>| !tried.iter().any(|t| t == c.id());
                    if let Some(i) = candidates.iter().skip(next + 1).position(untried) {
                        next += 1 + i;
                        tracing::warn!(tenant = tenant_str, refused = %tried.last().map_or("", String::as_str),
                            next = %candidates[next].id(),
                            "credential refused for this tenant; trying the next one");
                        continue;
                    }
                    if !reloaded {
                        reloaded = true;
                        if self.reload_changed_credentials().await {
                            candidates = self.credentials.candidates(tenant);
                            if let Some(i) = candidates.iter().position(untried) {
                                tracing::warn!(tenant = tenant_str, "every credential refused; the credential files changed, trying the new ones");
                                next = i;
                                continue;
                            }
                        }
                    }
                }
                Class::Transient if attempt < policy.max_attempts => {
                    let delay = policy.backoff.delay(attempt, self.jitter.unit());
                    if started.elapsed() + delay <= policy.budget {
                        tracing::debug!(
                            tenant = tenant_str,
                            attempt,
                            ?delay,
                            "transient failure; retrying"
                        );
                        tokio::time::sleep(delay).await;
                        attempt += 1;
                        continue;
                    }
                }
                _ => {}
            }
            return Err(self.final_error(tenant_str, error, class));
        }
    }

    fn final_error(&self, tenant: &str, error: AttemptError, class: Class) -> AcquireError {
        let tenant = tenant.to_owned();
        match (error, class) {
            (AttemptError::Entra(entra, _), Class::Throttled(retry_after)) => {
                AcquireError::Throttled {
                    tenant,
                    retry_after,
                    entra: Some(Arc::new(entra)),
                }
            }
            (AttemptError::Entra(entra, Class::Transient), _) => AcquireError::Unavailable {
                tenant,
                reason: entra.to_string(),
                entra: Some(Arc::new(entra)),
            },
            (AttemptError::Entra(entra, _), _) => AcquireError::Refused {
                tenant,
                entra: Arc::new(entra),
            },
            (AttemptError::Timeout, _) => AcquireError::Timeout {
                tenant,
                after: self.settings.request_timeout,
            },
            (AttemptError::Malformed(reason) | AttemptError::Transport(reason), _) => {
                AcquireError::Unavailable {
                    tenant,
                    reason,
                    entra: None,
                }
            }
            (AttemptError::Signing(reason), _) => AcquireError::Credential(reason),
        }
    }

    /// One POST to the token endpoint, reported to the observer.
    async fn attempt(
        &self,
        tenant: &TenantId,
        resource: &Resource,
        credential: &Credential,
    ) -> Result<TokenResponse, AttemptError> {
        let started = Instant::now();
        let result = self
            .post(tenant.as_str(), resource.as_str(), credential)
            .await;
        let outcome = match &result {
            Ok(_) => Some(UpstreamOutcome::Success),
            Err(AttemptError::Entra(_, Class::Transient | Class::Throttled(_))) => {
                Some(UpstreamOutcome::Transient)
            }
            Err(AttemptError::Entra(..)) => Some(UpstreamOutcome::Permanent),
            Err(AttemptError::Malformed(_) | AttemptError::Transport(_)) => {
                Some(UpstreamOutcome::Transient)
            }
            Err(AttemptError::Timeout) => Some(UpstreamOutcome::Timeout),
            Err(AttemptError::Signing(_)) => None, // nothing was sent
        };
        if let Some(outcome) = outcome {
            self.observer
                .upstream(&self.settings.app, tenant, outcome, started.elapsed());
        }
        result
    }

    async fn post(
        &self,
        tenant: &str,
        resource: &str,
        credential: &Credential,
    ) -> Result<TokenResponse, AttemptError> {
        let endpoint = cloud::token_endpoint(&self.settings.authority_host, tenant);
        let client_assertion = credential
            .client_assertion(
                self.settings.signing,
                &self.settings.client_id,
                &endpoint,
                self.clock.unix_now(),
            )
            .await
            .map_err(|e| AttemptError::Signing(e.to_string()))?;
        let scope = format!("{resource}/.default");
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("scope", &scope)
            .append_pair("client_assertion_type", ASSERTION_TYPE)
            .append_pair("client_assertion", client_assertion.expose())
            .append_pair("grant_type", "client_credentials")
            .finish();
        let request_id = uuid::Uuid::new_v4().to_string();

        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| AttemptError::Transport("the client is shutting down".into()))?;
        tracing::debug!(tenant, resource, client_request_id = %request_id, "token request");
        let sent = self
            .http
            .post(&endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .header("client-request-id", &request_id)
            .header("return-client-request-id", "true")
            .body(form)
            .send()
            .await;
        let response = sent.map_err(|e| transport_error(&e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(response::parse_retry_after);
        let body = match crate::fetch::read_body(response, MAX_RESPONSE_BYTES).await {
            Ok(body) => body,
            Err(crate::fetch::BodyError::TooLarge { .. }) => {
                return Err(AttemptError::Malformed(format!(
                    "the authority's answer (HTTP {status}) is larger than {MAX_RESPONSE_BYTES} bytes"
                )))
            }
            Err(crate::fetch::BodyError::Transport(e)) => return Err(transport_error(&e)),
        };
        if status == 200 {
            return response::parse_success(&body).map_err(|e| {
                AttemptError::Malformed(format!(
                    "the authority's token response (HTTP 200) is unusable: {e}"
                ))
            });
        }
        let mut entra = response::parse_error(status, &body);
        if entra.correlation_id.is_none() {
            entra.correlation_id = Some(request_id);
        }
        let class = response::classify(status, &entra.error, &entra.codes, retry_after);
        tracing::debug!(tenant, status, error = %entra.error, aadsts = ?entra.aadsts(),
            correlation_id = ?entra.correlation_id, ?class, "token request refused");
        Err(AttemptError::Entra(entra, class))
    }
}

fn transport_error(e: &reqwest::Error) -> AttemptError {
    if e.is_timeout() {
        return AttemptError::Timeout;
    }
    // The source chain says what happened (refused, reset, closed early);
    // reqwest's errors carry the URL, never the request body.
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        source = s.source();
    }
    reason.push_str(tls_remedy(&reason));
    AttemptError::Transport(reason)
}

/// What to do when the authority's TLS certificate was not trusted (the
/// usual cause: a TLS-inspecting proxy whose root is not in the system's
/// store). Pure.
fn tls_remedy(reason: &str) -> &'static str {
    let untrusted = [
        "invalid peer certificate",
        "UnknownIssuer",
        "certificate verify failed",
    ]
    .iter()
    .any(|sign| reason.contains(sign));
    if untrusted {
        ". What to do: the authority's TLS certificate is not trusted. If a TLS-inspecting \
         proxy sits in between, put its root CA certificate (PEM) in a file and name it in \
         app.ca_file; otherwise check app.authority_host and this host's clock"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{FailureKind, LoadError};

    #[test]
    fn the_same_failure_for_many_tenants_is_one_log_kind() {
        let refused = |tenant: &str, correlation: &str| AcquireError::Refused {
            tenant: tenant.into(),
            entra: Arc::new(EntraError {
                status: 401,
                error: "invalid_client".into(),
                description: format!("AADSTS700027: ... Trace ID: {correlation} Timestamp: now"),
                codes: vec![700_027],
                correlation_id: Some(correlation.into()),
                ..EntraError::default()
            }),
        };
        assert_eq!(
            refused("a.com", "1").log_kind(),
            refused("b.com", "2").log_kind()
        );
        let consent = AcquireError::Refused {
            tenant: "a.com".into(),
            entra: Arc::new(EntraError {
                codes: vec![700_016],
                ..EntraError::default()
            }),
        };
        assert_ne!(consent.log_kind(), refused("a.com", "1").log_kind());
        let down = |tenant: &str| {
            AcquireError::Unavailable {
            tenant: tenant.into(),
            reason: format!("error sending request for url (https://login/{tenant}/oauth2/v2.0/token): connection refused"),
            entra: None,
        }
        };
        assert_eq!(down("a.com").log_kind(), down("b.com").log_kind());
        let throttled = |s| AcquireError::Throttled {
            tenant: "a.com".into(),
            retry_after: Duration::from_secs(s),
            entra: None,
        };
        assert_eq!(throttled(3).log_kind(), throttled(30).log_kind());
    }

    #[test]
    fn an_untrusted_certificate_names_app_ca_file() {
        let reason = "error sending request: client error (Connect): invalid peer certificate: UnknownIssuer";
        assert!(tls_remedy(reason).contains("app.ca_file"));
        assert_eq!(tls_remedy("connection refused"), "");
    }

    #[test]
    fn failure_kinds_for_the_cache() {
        let refused = AcquireError::Refused {
            tenant: "t".into(),
            entra: Arc::new(EntraError::default()),
        };
        assert_eq!(refused.kind(), FailureKind::Refused);
        assert_eq!(
            AcquireError::Credential("x".into()).kind(),
            FailureKind::Refused
        );
        let throttled = AcquireError::Throttled {
            tenant: "t".into(),
            retry_after: Duration::from_secs(30),
            entra: None,
        };
        assert_eq!(
            throttled.kind(),
            FailureKind::Throttled(Duration::from_secs(30))
        );
        match throttled.with_retry_after(Duration::from_secs(12)) {
            AcquireError::Throttled { retry_after, .. } => {
                assert_eq!(retry_after, Duration::from_secs(12))
            }
            other => panic!("{other:?}"),
        }
        let timeout = AcquireError::Timeout {
            tenant: "t".into(),
            after: Duration::from_secs(10),
        };
        assert_eq!(timeout.kind(), FailureKind::Transient);
    }

    #[test]
    fn refusals_say_what_to_do() {
        let e = AcquireError::Refused {
            tenant: "contoso.com".into(),
            entra: Arc::new(EntraError {
                status: 400,
                error: "unauthorized_client".into(),
                description: "AADSTS700016: Application not found".into(),
                codes: vec![700_016],
                correlation_id: Some("c0".into()),
                trace_id: None,
            }),
        };
        let text = e.to_string();
        assert!(text.contains("tenant contoso.com"), "{text}");
        assert!(text.contains("correlation id c0"), "{text}");
        assert!(text.contains("consent-url"), "{text}");
    }
}
