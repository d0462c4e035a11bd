//! The broker: the one door a token request goes through.
//!
//! The HTTP layer authenticates the caller ([`Broker::authenticate`]) and
//! asks one question ([`Broker::token`]): "a token for this caller, this
//! tenant, this resource". The broker resolves and validates the request,
//! applies the access policy, and asks its cache, which loads through the
//! authority client. It owns the state a request is judged against — the
//! configuration and the access policy built from it — as one snapshot, so
//! a request never sees half of one state and half of another.

use crate::access::{AccountId, AuthFailure, Forbidden, Policy, RequestError, Target};
use crate::authority::response::TokenResponse;
use crate::authority::{
    AcquireError, AuthorityClient, AuthoritySettings, BuildError, UpstreamObserver,
};
use crate::cache::{
    BoxFuture, CacheError, CacheKey, CacheObserver, CacheSettings, Fetched, Grant, NoObserver,
    TokenCache, TokenSource,
};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::credentials::CredentialStore;
use crate::jitter::Jitter;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::SystemTime;

/// Why the broker would not hand out a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// The request itself is bad (400).
    #[error(transparent)]
    BadRequest(#[from] RequestError),
    /// This caller may not have it (403).
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    /// No token could be had (from Entra, or within the load deadline).
    #[error(transparent)]
    Unavailable(#[from] CacheError<AcquireError>),
}

/// A token handed out, with what it was for.
#[derive(Debug, Clone)]
pub struct Issued {
    pub target: Target,
    pub grant: Grant,
}

/// The configuration and the access policy built from it: what a request
/// is judged against.
#[derive(Debug)]
struct State {
    config: Arc<Config>,
    policy: Policy,
}

/// An authenticated caller, bound to the state that authenticated it.
#[derive(Debug, Clone)]
pub struct Caller {
    state: Arc<State>,
    account: AccountId,
}

impl Caller {
    /// The account's name (for the access log).
    pub fn account_name(&self) -> &str {
        self.state.policy.account_name(self.account).as_str()
    }

    /// The app's client ID (the App Service answer carries it).
    pub fn client_id(&self) -> &str {
        self.state.config.app.client_id.as_str()
    }
}

/// Everything the broker reports to (metrics): cache and upstream events.
pub trait Observer: CacheObserver + UpstreamObserver {}
impl<T: CacheObserver + UpstreamObserver> Observer for T {}

impl UpstreamObserver for NoObserver {}

/// Adapts the authority client to the cache's [`TokenSource`].
struct AuthoritySource(Arc<AuthorityClient>);

impl TokenSource for AuthoritySource {
    type Error = AcquireError;
    fn fetch(&self, key: &CacheKey) -> BoxFuture<Result<Fetched, AcquireError>> {
        let client = Arc::clone(&self.0);
        let key = key.clone();
        Box::pin(async move {
            let TokenResponse {
                access_token,
                expires_in,
                refresh_in,
            } = client.acquire(&key.tenant, &key.resource).await?;
            Ok(Fetched {
                access_token,
                expires_in,
                refresh_in,
            })
        })
    }
}

#[derive(Debug)]
pub struct Broker {
    state: ArcSwap<State>,
    authority: Arc<AuthorityClient>,
    cache: TokenCache<AcquireError>,
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
        let policy = Policy::new(&config);
        Ok(Broker {
            state: ArcSwap::from_pointee(State { config, policy }),
            authority,
            cache,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.state.load().config)
    }

    /// Who is calling: a presented secret, else the Unix-socket peer uid.
    pub fn authenticate(
        &self,
        secret: Option<&str>,
        peer_uid: Option<u32>,
    ) -> Result<Caller, AuthFailure> {
        let state = self.state.load_full();
        let account = state.policy.authenticate(secret, peer_uid)?;
        Ok(Caller { state, account })
    }

    /// A token for `caller`: `tenant` is a configured name, GUID or domain
    /// (the account's default when `None`), `resource` the audience (the
    /// cloud's Graph when `None`). Validated, then authorised, then served
    /// from the cache.
    pub async fn token(
        &self,
        caller: &Caller,
        tenant: Option<&str>,
        resource: Option<&str>,
    ) -> Result<Issued, TokenError> {
        let policy = &caller.state.policy;
        let target = policy.resolve(caller.account, tenant, resource)?;
        policy.authorize(caller.account, &target)?;
        let key = CacheKey::new(&target.tenant.id, &target.resource);
        let grant = self.cache.get(&key).await?;
        Ok(Issued { target, grant })
    }

    /// Starts fetching a Graph token for every configured tenant, in the
    /// background (upstream concurrency bounded by the authority client).
    pub fn prefetch_configured_tenants(&self) {
        let config = self.config();
        let graph = config.app.graph();
        let keys = config
            .tenants
            .iter()
            .map(|t| CacheKey::new(&t.id, &graph))
            .collect();
        self.cache.prefetch(keys);
    }

    /// Cached tokens still valid (the `tokenbroker_cached_tokens` gauge).
    pub fn cached_token_count(&self) -> usize {
        self.cache.token_count()
    }

    /// (tenant, resource) slots in the cache.
    pub fn cache_entries(&self) -> u64 {
        self.cache.len()
    }

    /// The notAfter of the certificate signing now (the expiry gauge).
    pub fn certificate_not_after(&self) -> SystemTime {
        self.authority
            .credentials()
            .current()
            .certificate()
            .not_after
    }

    /// The certificate signing now, DER (tests check rotation by it).
    pub fn certificate_der(&self) -> Vec<u8> {
        self.authority
            .credentials()
            .current()
            .certificate()
            .der
            .clone()
    }
}
