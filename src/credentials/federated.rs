//! Federated credentials (Entra workload identity federation): no key at
//! all. The app registration trusts tokens from another issuer about one
//! subject, for the audience `api://AzureADTokenExchange`, and the broker
//! presents such a token as its client assertion (jwt-bearer), to every
//! customer tenant's token endpoint alike.
//!
//! - A token file: Kubernetes projects the pod's service-account token
//!   (`AZURE_FEDERATED_TOKEN_FILE`) and rotates it; it is read anew for
//!   every assertion.
//! - The host's managed identity: a token for `api://AzureADTokenExchange`
//!   from IMDS (an Azure VM) or the App Service endpoint, cached until 5
//!   minutes before it expires. `IDENTITY_ENDPOINT` is never read: operators
//!   point that variable at the broker itself.

use super::{CredentialError, CredentialSource, FederatedSource};
use crate::config::{ManagedIdentityConfig, ManagedIdentityProtocol};
use crate::sys::read_bounded;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use zeroize::Zeroizing;

/// The audience Entra requires of a federated assertion.
pub const AUDIENCE: &str = "api://AzureADTokenExchange";
/// IMDS, where an Azure VM's identities answer.
pub const IMDS: &str = "http://169.254.169.254";
/// A managed-identity token is used until this long before it expires.
const MI_REFRESH_MARGIN: u64 = 300;
/// A token with less than this left is not presented (Entra would refuse it).
const MIN_LEFT: u64 = 60;

/// A federated credential.
pub(super) struct Federated {
    kind: Kind,
}

enum Kind {
    TokenFile(PathBuf),
    ManagedIdentity(ManagedIdentity),
}

/// What a JWT says about itself (unverified: Entra verifies it).
struct Claims {
    iss: String,
    exp: u64,
}

/// Why a federated credential gave no token to present.
#[derive(Debug, thiserror::Error)]
pub enum FederatedError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not text")]
    NotText { path: PathBuf },
    #[error("{path} {why}")]
    NotAToken { path: PathBuf, why: ClaimsIssue },
    #[error(
        "the token in {path} expired at {at} (or expires within {MIN_LEFT} s): the file is not being renewed; \
         check the projected service-account token volume (kubelet rotates it) or whatever writes the file"
    )]
    Expired { path: PathBuf, at: String },
    #[error("reading the federated token file failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("{endpoint}: {source}")]
    Request {
        endpoint: String,
        source: reqwest::Error,
    },
    #[error("{endpoint}: the answer is larger than 64 KiB")]
    TooLarge { endpoint: String },
    #[error("{endpoint}: reading the answer: {source}")]
    Body {
        endpoint: String,
        source: reqwest::Error,
    },
    #[error("{endpoint} answered HTTP {status} with a body that is not JSON")]
    NotJson { endpoint: String, status: u16 },
    #[error("{endpoint} answered HTTP {status}: {detail}")]
    Refused {
        endpoint: String,
        status: u16,
        detail: String,
    },
    #[error("{endpoint} sent no access_token")]
    NoToken { endpoint: String },
    #[error("{endpoint} sent no expires_on")]
    NoExpiry { endpoint: String },
}

/// Why a token's claims do not make a federated token.
#[derive(Debug, thiserror::Error)]
pub enum ClaimsIssue {
    #[error(transparent)]
    Unreadable(#[from] crate::token::ClaimsError),
    #[error("holds a JWT without an exp claim")]
    NoExpiry,
}

fn claims(token: &str) -> Result<Claims, ClaimsIssue> {
    let value = crate::token::peek_claims(token)?;
    Ok(Claims {
        iss: value["iss"].as_str().unwrap_or_default().to_owned(),
        exp: value["exp"].as_u64().ok_or(ClaimsIssue::NoExpiry)?,
    })
}

fn expired_at(exp: u64) -> String {
    crate::sys::rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(exp))
}

/// Reads the token file now: the token, and what it says.
fn read_token_file(path: &Path, now: u64) -> Result<(Zeroizing<String>, Claims), FederatedError> {
    let bytes = read_bounded(path).map_err(|source| FederatedError::Read {
        path: path.to_owned(),
        source,
    })?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| FederatedError::NotText {
            path: path.to_owned(),
        })?
        .trim();
    let token = Zeroizing::new(text.to_owned());
    let claims = claims(&token).map_err(|why| FederatedError::NotAToken {
        path: path.to_owned(),
        why,
    })?;
    if claims.exp <= now + MIN_LEFT {
        return Err(FederatedError::Expired {
            path: path.to_owned(),
            at: expired_at(claims.exp),
        });
    }
    Ok((token, claims))
}

impl Federated {
    /// Loads the federated credential `source` names; returns it, its id
    /// (`federated:<issuer>`) and warnings.
    pub(super) fn load(
        source: &CredentialSource,
        federated: &FederatedSource,
        now: SystemTime,
    ) -> Result<(Federated, String, Vec<String>), CredentialError> {
        let now = crate::clock::unix_seconds(now);
        match federated {
            FederatedSource::TokenFile(path) => {
                let (_, claims) =
                    read_token_file(path, now).map_err(|e| CredentialError::Format {
                        path: path.clone(),
                        message: format!("(federated_token_file): {e}"),
                    })?;
                Ok((
                    Federated {
                        kind: Kind::TokenFile(path.clone()),
                    },
                    format!("federated:{}", claims.iss),
                    Vec::new(),
                ))
            }
            FederatedSource::ManagedIdentity(config) => {
                let identity = ManagedIdentity::new(config, &source.key)?;
                let id = format!("federated:{}", identity.label);
                Ok((
                    Federated {
                        kind: Kind::ManagedIdentity(identity),
                    },
                    id,
                    Vec::new(),
                ))
            }
        }
    }

    pub(super) fn kind(&self) -> &'static str {
        match self.kind {
            Kind::TokenFile(_) => "federated_token_file",
            Kind::ManagedIdentity(_) => "federated_managed_identity",
        }
    }

    /// The token to present now.
    pub(super) async fn assertion(&self, now: u64) -> Result<String, FederatedError> {
        match &self.kind {
            Kind::TokenFile(path) => {
                let path = path.clone();
                let (token, _) =
                    tokio::task::spawn_blocking(move || read_token_file(&path, now)).await??;
                Ok(token.to_string())
            }
            Kind::ManagedIdentity(identity) => identity.token(now).await,
        }
    }
}

/// The host's managed identity, asked for tokens for [`AUDIENCE`].
struct ManagedIdentity {
    /// The token URL, with its query.
    url: String,
    /// `Metadata: true` (IMDS) or `X-IDENTITY-HEADER` (App Service).
    header: (&'static str, Zeroizing<String>),
    http: reqwest::Client,
    /// `managed-identity:<client id>` or `managed-identity:system-assigned`.
    label: String,
    /// The current token and its expiry; the lock makes one fetch at a time.
    cached: tokio::sync::Mutex<Option<(Zeroizing<String>, u64)>>,
    /// After a failed fetch, no other before this (unix s): callers get the
    /// cached token meanwhile instead of queueing on a dead endpoint.
    retry_at: std::sync::atomic::AtomicU64,
}

/// A failed managed-identity fetch is not retried sooner than this.
const MI_RETRY: u64 = 10;

impl ManagedIdentity {
    fn new(config: &ManagedIdentityConfig, key: &str) -> Result<ManagedIdentity, CredentialError> {
        let invalid = |message: String| CredentialError::Format {
            path: PathBuf::from(format!("{key}.federated_managed_identity")),
            message,
        };
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        let (url, header) = match config.protocol {
            ManagedIdentityProtocol::Imds => {
                let base = config
                    .endpoint
                    .as_deref()
                    .unwrap_or(IMDS)
                    .trim_end_matches('/');
                query.append_pair("api-version", "2018-02-01");
                (
                    format!("{base}/metadata/identity/oauth2/token"),
                    ("metadata", Zeroizing::new("true".to_owned())),
                )
            }
            ManagedIdentityProtocol::AppService => {
                let endpoint = config.endpoint.clone().ok_or_else(|| {
                    invalid("protocol = \"app-service\" needs endpoint, the full token URL".into())
                })?;
                let name = config.header_env.as_ref().ok_or_else(|| {
                    invalid("protocol = \"app-service\" needs header_env, the variable holding the X-IDENTITY-HEADER secret".into())
                })?;
                let secret = crate::sys::SecretSource::Env(name.as_str().to_owned())
                    .read()
                    .map_err(|_| {
                    invalid(format!(
                        "header_env names {}, which is not set; set it to the App Service X-IDENTITY-HEADER secret",
                        name.as_str()
                    ))
                })?;
                query.append_pair("api-version", "2019-08-01");
                (endpoint, ("x-identity-header", secret))
            }
        };
        query.append_pair("resource", AUDIENCE);
        if let Some(client_id) = &config.client_id {
            query.append_pair("client_id", client_id.as_str());
        }
        let url = format!("{url}?{}", query.finish());
        url::Url::parse(&url).map_err(|e| invalid(format!("endpoint makes no URL: {e}")))?;
        let http = reqwest::Client::builder()
            // The endpoint is link-local or loopback: never through a proxy.
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| invalid(format!("building the HTTP client: {e}")))?;
        Ok(ManagedIdentity {
            url,
            header,
            http,
            label: match &config.client_id {
                Some(id) => format!("managed-identity:{}", id.as_str()),
                None => "managed-identity:system-assigned".into(),
            },
            cached: tokio::sync::Mutex::new(None),
            retry_at: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The cached token while it has 5 minutes left, else a new one; when the
    /// endpoint fails, the cached one while it is still valid.
    async fn token(&self, now: u64) -> Result<String, FederatedError> {
        use std::sync::atomic::Ordering;
        let mut cached = self.cached.lock().await;
        if let Some((token, exp)) = cached.as_ref() {
            let backing_off = now < self.retry_at.load(Ordering::Relaxed);
            if *exp > now + MI_REFRESH_MARGIN || (backing_off && *exp > now + MIN_LEFT) {
                return Ok(token.to_string());
            }
        }
        match self.fetch().await {
            Ok((token, exp)) => {
                let out = token.to_string();
                *cached = Some((token, exp));
                Ok(out)
            }
            Err(why) => match cached.as_ref() {
                Some((token, exp)) if *exp > now + MIN_LEFT => {
                    self.retry_at.store(now + MI_RETRY, Ordering::Relaxed);
                    tracing::warn!(identity = %self.label, "the managed-identity endpoint failed ({why}); presenting the cached token, valid until {}", expired_at(*exp));
                    Ok(token.to_string())
                }
                _ => Err(why),
            },
        }
    }

    async fn fetch(&self) -> Result<(Zeroizing<String>, u64), FederatedError> {
        let endpoint = || format!("the managed-identity endpoint ({})", self.label);
        let response = self
            .http
            .get(&self.url)
            .header(self.header.0, self.header.1.as_str())
            .send()
            .await
            .map_err(|source| FederatedError::Request {
                endpoint: endpoint(),
                source,
            })?;
        let status = response.status().as_u16();
        let body = crate::fetch::read_body(response, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| match e {
                crate::fetch::BodyError::TooLarge { .. } => FederatedError::TooLarge {
                    endpoint: endpoint(),
                },
                crate::fetch::BodyError::Transport(source) => FederatedError::Body {
                    endpoint: endpoint(),
                    source,
                },
            })?;
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| FederatedError::NotJson {
                endpoint: endpoint(),
                status,
            })?;
        if status != 200 {
            let text = |k: &str| {
                value[k]
                    .as_str()
                    .map(|s| s.chars().take(200).collect::<String>())
            };
            let detail = text("error_description")
                .or_else(|| text("message"))
                .or_else(|| text("error"))
                .unwrap_or_default();
            return Err(FederatedError::Refused {
                endpoint: endpoint(),
                status,
                detail,
            });
        }
        let token = value["access_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| FederatedError::NoToken {
                endpoint: endpoint(),
            })?;
        let exp = match &value["expires_on"] {
            serde_json::Value::String(s) => s.parse::<u64>().ok(),
            serde_json::Value::Number(n) => n.as_u64(),
            _ => None,
        }
        .or_else(|| claims(token).ok().map(|c| c.exp))
        .ok_or_else(|| FederatedError::NoExpiry {
            endpoint: endpoint(),
        })?;
        Ok((Zeroizing::new(token.to_owned()), exp))
    }
}

/// A managed-identity answer is a small JSON object; no more is read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    fn jwt(claims: serde_json::Value) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(b"{\"alg\":\"RS256\"}"),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    #[test]
    fn a_token_file_is_read_whole_and_its_expiry_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(
            &path,
            format!(
                "{}\n",
                jwt(serde_json::json!({"iss": "https://k8s", "exp": 2000}))
            ),
        )
        .unwrap();
        let (token, claims) = read_token_file(&path, 1000).unwrap();
        assert!(!token.ends_with('\n'));
        assert_eq!((claims.iss.as_str(), claims.exp), ("https://k8s", 2000));
        let e = read_token_file(&path, 1950)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains("expired") && e.contains("token"), "{e}");
        std::fs::write(&path, "not a jwt").unwrap();
        let e = read_token_file(&path, 0)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains("token") && e.contains("JWT"), "{e}");
        let e = read_token_file(&dir.path().join("missing"), 0)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing") && e.contains("cannot read"), "{e}");
    }
}
