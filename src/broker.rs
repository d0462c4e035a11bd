//! The broker: configuration, credential, authority client and cache wired
//! together behind one call, "a token for this tenant and resource".
//!
//! It validates the caller's tenant reference and resource before anything
//! uses them (they go into the token URL and the scope), resolves tenant
//! names to ids, and asks the cache. Who may ask for what is the HTTP
//! layer's business.

use crate::authority::response::TokenResponse;
use crate::authority::{
    AcquireError, AuthorityClient, AuthoritySettings, BuildError, UpstreamObserver,
};
use crate::cache::{
    BoxFuture, CacheKey, CacheObserver, CacheSettings, Grant, NoObserver, TokenCache, TokenSource,
};
use crate::clock::SharedClock;
use crate::config::{self, Config, ResolvedTenant};
use crate::credentials::CredentialStore;
use crate::jitter::Jitter;
use std::sync::Arc;

/// A request the broker refuses before any upstream call (HTTP 400).
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestError {
    /// The tenant is neither a configured name nor a tenant GUID or domain.
    #[error(
        "tenant \"{0}\" is neither a configured tenant name nor a tenant GUID or verified domain"
    )]
    Tenant(String),
    /// The resource is not an https URL without query or `/.default`.
    #[error("resource \"{0}\" is not valid: expected an https URL such as https://graph.microsoft.com, without /.default")]
    Resource(String),
}

/// Why the broker could not hand out a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The request itself is bad (400).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// Entra could not or would not issue one.
    #[error(transparent)]
    Acquire(#[from] AcquireError),
}

/// A validated request: tenant resolved, resource normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The tenant.
    pub tenant: ResolvedTenant,
    /// The resource, without a trailing slash.
    pub resource: String,
}

impl Target {
    /// The cache key for this target.
    pub fn key(&self) -> CacheKey {
        CacheKey::new(self.tenant.id.as_str(), &self.resource)
    }
}

/// Longest tenant reference or resource accepted from a caller.
pub const MAX_INPUT_LEN: usize = 256;

/// Validates a caller's tenant reference and resource against `config`.
/// Pure; the values in errors are escaped and shortened for logs.
pub fn resolve(
    config: &Config,
    tenant: &str,
    resource: Option<&str>,
) -> Result<Target, RequestError> {
    let shown = |v: &str| {
        v.chars()
            .take(64)
            .collect::<String>()
            .escape_debug()
            .to_string()
    };
    if tenant.len() > MAX_INPUT_LEN {
        return Err(RequestError::Tenant(shown(tenant)));
    }
    let resolved = config
        .resolve_tenant(tenant)
        .ok_or_else(|| RequestError::Tenant(shown(tenant)))?;
    let resource = match resource {
        None => config.app.cloud.graph_resource().to_owned(),
        Some(r) => {
            let trimmed = r.strip_suffix('/').unwrap_or(r);
            if r.len() > MAX_INPUT_LEN || config::Resource::try_from(trimmed.to_owned()).is_err() {
                return Err(RequestError::Resource(shown(r)));
            }
            trimmed.to_owned()
        }
    };
    Ok(Target {
        tenant: resolved,
        resource,
    })
}

/// Everything the broker reports to (metrics): cache and upstream events.
pub trait Observer: CacheObserver + UpstreamObserver {}
impl<T: CacheObserver + UpstreamObserver> Observer for T {}

impl UpstreamObserver for NoObserver {}

/// Adapts the authority client to the cache's [`TokenSource`].
struct AuthoritySource(Arc<AuthorityClient>);

impl TokenSource for AuthoritySource {
    fn fetch(&self, key: &CacheKey) -> BoxFuture<Result<TokenResponse, AcquireError>> {
        let client = Arc::clone(&self.0);
        let key = key.clone();
        Box::pin(async move { client.acquire(&key.tenant, &key.resource).await })
    }
}

/// The broker.
#[derive(Debug)]
pub struct Broker {
    config: Arc<Config>,
    authority: Arc<AuthorityClient>,
    cache: TokenCache,
}

impl Broker {
    /// A broker for `config`, with settings taken from it.
    pub fn new(
        config: Arc<Config>,
        credentials: Arc<CredentialStore>,
        clock: SharedClock,
        observer: Arc<dyn Observer>,
    ) -> Result<Broker, BuildError> {
        let authority = AuthoritySettings::from_config(&config);
        let cache = CacheSettings::from_config(&config.cache);
        Broker::with_settings(config, authority, cache, credentials, clock, observer)
    }

    /// A broker with explicit settings (tests shorten retries and timeouts).
    pub fn with_settings(
        config: Arc<Config>,
        authority: AuthoritySettings,
        cache: CacheSettings,
        credentials: Arc<CredentialStore>,
        clock: SharedClock,
        observer: Arc<dyn Observer>,
    ) -> Result<Broker, BuildError> {
        let upstream: Arc<dyn UpstreamObserver> = observer.clone();
        let authority = Arc::new(
            AuthorityClient::new(authority, credentials, Arc::clone(&clock))?
                .with_observer(upstream),
        );
        let observer: Arc<dyn CacheObserver> = observer;
        let cache = TokenCache::new(
            Arc::new(AuthoritySource(Arc::clone(&authority))),
            cache,
            clock,
            Jitter::from_entropy(),
            observer,
        );
        Ok(Broker {
            config,
            authority,
            cache,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The cache.
    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }

    /// The authority client (for one-shot requests that bypass the cache).
    pub fn authority(&self) -> &Arc<AuthorityClient> {
        &self.authority
    }

    /// Validates the request and returns a token from the cache.
    pub async fn token(
        &self,
        tenant: &str,
        resource: Option<&str>,
    ) -> Result<(Target, Grant), BrokerError> {
        let target = resolve(&self.config, tenant, resource)?;
        let grant = self.cache.get(&target.key()).await?;
        Ok((target, grant))
    }

    /// Starts fetching a Graph token for every configured tenant, in the
    /// background (upstream concurrency bounded by the authority client).
    pub fn prefetch_configured_tenants(&self) {
        let graph = self.config.app.cloud.graph_resource();
        let keys = self
            .config
            .tenants
            .iter()
            .map(|t| CacheKey::new(t.id.as_str(), graph))
            .collect();
        self.cache.prefetch(keys);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config() -> Config {
        Config::parse(
            "[app]\nclient_id = \"11111111-2222-3333-4444-555555555555\"\ncertificate = \"c.pem\"\n\
             [[tenants]]\nname = \"contoso\"\nid = \"contoso.onmicrosoft.com\"\n",
            Path::new("t.toml"),
        )
        .unwrap()
    }

    #[test]
    fn tenants_resolve_by_name_id_or_domain() {
        let c = config();
        let t = resolve(&c, "contoso", None).unwrap();
        assert_eq!(t.tenant.id.as_str(), "contoso.onmicrosoft.com");
        assert_eq!(t.tenant.name.as_ref().map(|n| n.as_str()), Some("contoso"));
        assert_eq!(t.resource, "https://graph.microsoft.com");
        let t = resolve(&c, "CONTOSO.onmicrosoft.com", None).unwrap();
        assert_eq!(t.tenant.name.as_ref().map(|n| n.as_str()), Some("contoso"));
        let t = resolve(&c, "0a1b2c3d-0000-4000-8000-00000000000f", None).unwrap();
        assert_eq!(t.tenant.name, None);
        assert_eq!(
            t.key(),
            CacheKey::new(
                "0a1b2c3d-0000-4000-8000-00000000000f",
                "https://graph.microsoft.com"
            )
        );
    }

    #[test]
    fn bad_tenants_are_refused_before_any_upstream_call() {
        let c = config();
        for bad in [
            "",
            "fabrikam",
            "../etc",
            "a b.com",
            "contoso.com/x",
            "contoso%2e.com",
            "common",
            "organizations",
            "x.com\n",
            &"a".repeat(300),
        ] {
            assert!(
                matches!(resolve(&c, bad, None), Err(RequestError::Tenant(_))),
                "{bad:?}"
            );
        }
        let message = resolve(&c, "evil\u{1b}[31m\nline", None)
            .unwrap_err()
            .to_string();
        assert!(
            !message.contains('\u{1b}') && !message.contains('\n'),
            "{message}"
        );
    }

    #[test]
    fn resources_are_validated_and_normalised() {
        let c = config();
        assert_eq!(
            resolve(&c, "contoso", Some("https://graph.microsoft.com/"))
                .unwrap()
                .resource,
            "https://graph.microsoft.com"
        );
        for bad in [
            "graph",
            "http://graph.microsoft.com",
            "https://graph.microsoft.com/.default",
            "https://x.com?a=b",
            "https://x.com#f",
            "https://x.com/\n",
            "https://x.com/a\tb",
            "https://x.com/a b",
            "https://gräph.com",
        ] {
            assert!(
                matches!(
                    resolve(&c, "contoso", Some(bad)),
                    Err(RequestError::Resource(_))
                ),
                "{bad}"
            );
        }
    }
}
