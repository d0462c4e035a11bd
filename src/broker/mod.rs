//! The broker: the one door a token request goes through, and the owner of
//! the state a request is judged against.
//!
//! The HTTP layer authenticates the caller ([`Broker::authenticate`]) and
//! asks one question ([`Broker::token`]): "a token for this caller, this
//! tenant, this resource". The broker resolves and validates the request,
//! applies the access policy, and asks its cache, which loads through the
//! authority client. The configuration and the access policy built from it
//! are one snapshot, swapped whole by a reload ([`Broker::apply`]), so a
//! request never sees half of one state and half of another. The admin
//! operations (status, refresh, evict) are here too ([`admin`]).

pub mod admin;
mod control;
mod error;
pub mod known;
mod limit;
pub mod status;
mod warm;

use crate::access::{AccountId, AuthFailure, Policy, Target};
use crate::authority::response::TokenResponse;
use crate::authority::{
    AcquireError, AuthorityClient, AuthoritySettings, BuildError, UpstreamObserver,
};
use crate::cache::{
    BoxFuture, CacheKey, CacheObserver, CacheSettings, Fetched, Grant, LoadContext, NoObserver,
    TokenCache, TokenSource,
};
use crate::clock::SharedClock;
use crate::config::{Config, ResolvedTenant, TenantId};
use crate::credentials::{CredentialSet, ReadSet};
use crate::fleet::{SharedCache, SharedSource};
use crate::jitter::Jitter;
use arc_swap::{ArcSwap, ArcSwapOption};
pub use control::{Control, ReloadError};
pub use error::{Refusal, TokenError};
use status::{Consent, StatusBook};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
pub use warm::RestoreReport;

/// A token handed out, with what it was for.
#[derive(Debug, Clone)]
pub struct Issued {
    pub target: Target,
    pub grant: Grant,
}

/// The configuration and what is built from it: what a request is judged
/// against.
#[derive(Debug)]
struct State {
    config: Arc<Config>,
    policy: Policy,
    /// Unix seconds.
    loaded_at: u64,
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

    /// The account's Graph gateway rules.
    pub fn graph_rules(&self) -> &std::sync::Arc<[crate::gateway::rules::Rule]> {
        self.state.policy.graph_rules(self.account)
    }

    /// The app's client ID (the App Service answer carries it).
    pub fn client_id(&self) -> &str {
        self.state.config.app.client_id.as_str()
    }
}

/// Everything the broker reports to (metrics).
pub trait Observer: CacheObserver + UpstreamObserver {
    /// A configured tenant's consent state changed.
    fn consent(&self, _tenant: &TenantId, _consent: Consent) {}
    /// An operator forced a refresh.
    fn forced_by_admin(&self) {}
    /// A reload succeeded (with the configuration now in force) or failed.
    fn reloaded(&self, _config: Option<&Config>, _at_unix: u64) {}
    /// A token file was written, or could not be.
    fn token_file_written(&self, _ok: bool) {}
}

impl UpstreamObserver for NoObserver {}
impl Observer for NoObserver {}

/// The authority client as the cache's [`TokenSource`]: one logical
/// client-credentials request per fetch, with whatever client is in force
/// (a reload may swap it).
struct AuthoritySource {
    client: Arc<ArcSwap<AuthorityClient>>,
}

impl TokenSource for AuthoritySource {
    type Error = AcquireError;
    fn fetch(
        &self,
        key: &CacheKey,
        _load: &LoadContext,
    ) -> BoxFuture<Result<Fetched, AcquireError>> {
        let client = self.client.load_full();
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
                age: Duration::ZERO,
            })
        })
    }
}

/// The broker's token source: the authority, shared with the fleet.
type Source = status::Recorded<SharedSource<AuthoritySource>>;

/// What a successful reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Keys whose new value needs a restart; their old value stays.
    pub restart_needed: Vec<&'static str>,
    /// Cached (tenant, resource) entries dropped: their tenant or resource left.
    pub dropped: usize,
    /// Every token was dropped: the app's identity changed.
    pub cleared: bool,
}

/// The broker.
#[derive(Debug)]
pub struct Broker {
    state: ArcSwap<State>,
    config_path: Option<PathBuf>,
    /// `serve --listen`, which outlives reloads of the file.
    listen_override: Option<std::net::SocketAddr>,
    credentials: Arc<CredentialSet>,
    /// Reloads, and their lock.
    control: Arc<Control>,
    authority: Arc<ArcSwap<AuthorityClient>>,
    cache: TokenCache<AcquireError>,
    book: Arc<StatusBook>,
    /// The fleet's shared cache (`[shared_cache]`), when configured.
    fleet: Arc<ArcSwapOption<SharedCache>>,
    new_tenants: limit::NewTenantLimit,
    new_tenant_fetches: limit::FetchShares,
    /// Tenants a token was issued for: never charged as new.
    known: Arc<known::KnownTenants>,
    /// `cache.state_file`, when configured ([`warm`]).
    state_file: Option<Arc<crate::state_file::StateFile>>,
    /// The cache's changes as of the last write of the state file.
    saved_changes: std::sync::atomic::AtomicU64,
    observer: Arc<dyn Observer>,
    clock: SharedClock,
    started_at: u64,
    /// What happened to each token file (the status).
    token_files: crate::token_files::Book,
    /// Marked changed by every reload (token files follow at once).
    reloads: tokio::sync::watch::Sender<()>,
}

impl Broker {
    /// A broker for `config`, with settings taken from it.
    pub fn new(
        config: Arc<Config>,
        credentials: Arc<CredentialSet>,
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
        credentials: Arc<CredentialSet>,
        clock: SharedClock,
        observer: Arc<dyn Observer>,
    ) -> Result<Broker, BuildError> {
        let upstream: Arc<dyn UpstreamObserver> = observer.clone();
        let control = Arc::new(Control::new(Arc::clone(&credentials), Arc::clone(&clock)));
        let client = AuthorityClient::new(authority, Arc::clone(&credentials), Arc::clone(&clock))?
            .with_observer(upstream)
            .with_credential_reload(control.clone());
        let authority = Arc::new(ArcSwap::from_pointee(client));
        let book = Arc::new(StatusBook::new());
        let fleet = Arc::new(ArcSwapOption::empty());
        // Known tenants are bounded like the cache's two maps together.
        let known = Arc::new(known::KnownTenants::new(
            usize::try_from(cache.max_entries.saturating_mul(2)).unwrap_or(usize::MAX),
        ));
        // The book forgets what the cache drops.
        let cache_observer: Arc<dyn CacheObserver> = Arc::new(status::BookKeeping {
            inner: observer.clone(),
            book: Arc::clone(&book),
        });
        let source: Source = status::Recorded::new(
            SharedSource::new(
                AuthoritySource {
                    client: Arc::clone(&authority),
                },
                Arc::clone(&fleet),
            ),
            Arc::clone(&book),
            Arc::clone(&known),
            Arc::clone(&clock),
            Arc::clone(&observer),
        );
        let cache = TokenCache::new(
            Arc::new(source),
            cache,
            Arc::clone(&clock),
            Jitter::from_entropy(),
            cache_observer,
        );
        let now = clock.unix_now();
        let policy = Policy::new(&config);
        cache.set_configured(config.tenants.iter().map(|t| t.id.clone()));
        Ok(Broker {
            state: ArcSwap::from_pointee(State {
                config,
                policy,
                loaded_at: now,
            }),
            config_path: None,
            listen_override: None,
            credentials,
            control,
            authority,
            cache,
            book,
            fleet,
            new_tenants: limit::NewTenantLimit::default(),
            new_tenant_fetches: limit::FetchShares::default(),
            known,
            state_file: None,
            saved_changes: std::sync::atomic::AtomicU64::new(0),
            observer,
            clock,
            started_at: now,
            token_files: crate::token_files::Book::default(),
            reloads: tokio::sync::watch::Sender::new(()),
        })
    }

    /// Shares tokens with the fleet through `shared` (`[shared_cache]`).
    pub fn with_fleet(self, shared: Option<SharedCache>) -> Broker {
        let shared = shared.map(Arc::new);
        if let Some(shared) = &shared {
            shared.warm_up();
        }
        self.fleet.store(shared);
        self
    }

    /// The fleet's shared cache, when configured.
    pub fn fleet(&self) -> Option<Arc<SharedCache>> {
        self.fleet.load_full()
    }

    /// Names the file the configuration came from (status, reload).
    pub fn with_config_path(mut self, path: &Path) -> Broker {
        self.config_path = Some(path.to_owned());
        self
    }

    /// Keeps `serve --listen`'s address across reloads of the file.
    pub fn with_listen_override(mut self, listen: Option<std::net::SocketAddr>) -> Broker {
        self.listen_override = listen;
        self
    }

    /// The file the configuration came from (`None` in dev mode).
    pub fn config_path(&self) -> Option<&Path> {
        self.config_path.as_deref()
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.state.load().config)
    }

    /// Reads the configuration in force without taking a reference to it
    /// (no shared counter touched: the per-request path uses this).
    pub fn with_config<R>(&self, read: impl FnOnce(&Config) -> R) -> R {
        read(&self.state.load().config)
    }

    /// The credentials in force.
    pub fn credentials(&self) -> &Arc<CredentialSet> {
        &self.credentials
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
    /// from the cache. With `rejected` (the SHA-256 of a token the caller
    /// saw refused), a cached token with that hash is replaced first.
    pub async fn token(
        &self,
        caller: &Caller,
        tenant: Option<&str>,
        resource: Option<&str>,
        rejected: Option<&[u8; 32]>,
    ) -> Result<Issued, TokenError> {
        let policy = &caller.state.policy;
        let target = policy.resolve(caller.account, tenant, resource)?;
        policy.authorize(caller.account, &target)?;
        self.issue(caller, target, rejected).await
    }

    /// The tenant a gateway request names (`tenant` as in [`Broker::token`]),
    /// when `caller` may send Graph requests there: it has Graph rules and
    /// the tenant is one of its tenants. Gateway-only accounts may.
    pub fn gateway_tenant(
        &self,
        caller: &Caller,
        tenant: &str,
    ) -> Result<ResolvedTenant, TokenError> {
        let policy = &caller.state.policy;
        let tenant = policy.resolve_tenant(tenant)?;
        policy.authorize_gateway(caller.account, &tenant)?;
        Ok(tenant)
    }

    /// The Graph token the gateway forwards `caller`'s request with, for a
    /// tenant [`Broker::gateway_tenant`] allowed. Served from the same
    /// cache, single flight and budget as `/v1/token`; the token never
    /// reaches the caller. With `rejected`, a cached token with that hash
    /// (one Graph refused) is replaced first.
    pub async fn graph_token(
        &self,
        caller: &Caller,
        tenant: ResolvedTenant,
        rejected: Option<&[u8; 32]>,
    ) -> Result<Issued, TokenError> {
        let target = Target {
            tenant,
            resource: caller.state.policy.graph().clone(),
        };
        self.issue(caller, target, rejected).await
    }

    /// Serves an authorised `target` from the cache (charging the new-tenant
    /// budget when it would go upstream for a tenant nobody configured).
    async fn issue(
        &self,
        caller: &Caller,
        target: Target,
        rejected: Option<&[u8; 32]>,
    ) -> Result<Issued, TokenError> {
        let policy = &caller.state.policy;
        let key = CacheKey::new(&target.tenant.id, &target.resource);
        // An account with "*" spends a bounded budget on fetches for tenants
        // nobody configured and this broker does not know: per minute, and
        // half the upstream slots at once (held while its caller waits).
        let mut _share = None;
        if let Some(per_minute) = policy.new_tenant_limit(caller.account) {
            if target.tenant.name.is_none()
                && !self.known.contains(&key.tenant)
                && self.cache.would_fetch(&key)
            {
                let account = caller.account_name();
                self.new_tenants
                    .take(account, per_minute, tokio::time::Instant::now())
                    .map_err(|retry_after| TokenError::NewTenantsLimited {
                        account: account.to_owned(),
                        retry_after,
                    })?;
                let (slots, wait) =
                    self.with_config(|c| (c.app.max_concurrent_requests, c.cache.load_timeout.0));
                _share = Some(
                    self.new_tenant_fetches
                        .acquire(account, slots, wait)
                        .await
                        .ok_or_else(|| TokenError::NewTenantsBusy {
                            account: account.to_owned(),
                        })?,
                );
            }
        }
        self.serve(target, key, rejected).await
    }

    /// Serves a resolved `target` from the cache, as every door does once
    /// the caller (if any) may have it.
    async fn serve(
        &self,
        target: Target,
        key: CacheKey,
        rejected: Option<&[u8; 32]>,
    ) -> Result<Issued, TokenError> {
        let grant = match rejected {
            Some(hash) => self.cache.get_replacing(&key, hash).await?,
            None => self.cache.get(&key).await?,
        };
        Ok(Issued { target, grant })
    }

    /// The token a `[[token_files]]` entry holds: `tenant` (a configured
    /// name, GUID or domain) and `resource` (the cloud's Graph when `None`)
    /// resolved as for any caller, served from the same cache and single
    /// flight. No account: the operator who configured the file is the
    /// authority, so no account's budget of new tenants is charged.
    pub async fn token_for_file(
        &self,
        tenant: &str,
        resource: Option<&str>,
    ) -> Result<Issued, TokenError> {
        let target = self.state.load().policy.target(tenant, resource)?;
        let key = CacheKey::new(&target.tenant.id, &target.resource);
        self.serve(target, key, None).await
    }

    /// Records a token file's write (`Ok(expires_on)`) or why it failed:
    /// the status and the metric.
    pub fn token_file_written(&self, path: &Path, outcome: Result<u64, String>) {
        self.observer.token_file_written(outcome.is_ok());
        self.token_files
            .record(path, outcome, self.clock.unix_now());
    }

    /// Marked changed by every successful reload.
    pub fn watch_reloads(&self) -> tokio::sync::watch::Receiver<()> {
        self.reloads.subscribe()
    }

    /// Marked changed whenever the cache stores or drops a token.
    pub fn watch_cache_changes(&self) -> tokio::sync::watch::Receiver<()> {
        self.cache.watch_changes()
    }

    /// Starts fetching a Graph token for every configured tenant that has
    /// none, in the background (upstream concurrency bounded by the client).
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

    /// Each loaded certificate: thumbprint, notAfter (unix seconds), in use.
    /// (Federated credentials have no certificate, and no expiry series.)
    pub fn certificates(&self) -> Vec<(String, u64, bool)> {
        let in_use = self.credentials.in_use();
        self.credentials
            .all()
            .iter()
            .filter_map(|c| {
                let info = c.certificate()?;
                Some((
                    info.thumbprint_sha1.clone(),
                    crate::clock::unix_seconds(info.not_after),
                    c.id() == in_use,
                ))
            })
            .collect()
    }

    /// The certificate tried first, DER (tests check rotation by it).
    pub fn certificate_der(&self) -> Vec<u8> {
        self.credentials
            .current()
            .certificate()
            .map(|c| c.der.clone())
            .unwrap_or_default()
    }

    /// Puts a new configuration (already validated) and, when given, new
    /// credentials in force, all at once. What needs a restart keeps its
    /// old value and is reported. Tokens stay cached unless their tenant or
    /// resource left (or the app's identity changed: then all go); tokens
    /// fetched with a credential that left stay and refresh on schedule.
    pub fn apply(
        &self,
        mut config: Config,
        credentials: Option<ReadSet>,
    ) -> Result<Applied, BuildError> {
        let old = self.config();
        if let Some(listen) = self.listen_override {
            config.server.listen = listen;
        }
        let restart_needed = keep_restart_only(&old, &mut config);
        let config = Arc::new(config);
        let identity_changed = old.app.client_id != config.app.client_id
            || old.app.cloud != config.app.cloud
            || old.app.authority_host() != config.app.authority_host();
        // Built before anything changes: a client that cannot be built
        // (an unreadable ca_file) fails the reload and leaves all as it was.
        let client = {
            let current = self.authority.load();
            let mut settings = AuthoritySettings::from_config(&config);
            // Tests and tools may tune retries; a reload keeps the policy.
            settings.retry = current.settings().retry;
            // A ca_file may have been rewritten in place: always re-read it.
            (*current.settings() != settings || settings.ca_file.is_some()).then(|| {
                AuthorityClient::new(
                    settings,
                    Arc::clone(&self.credentials),
                    Arc::clone(&self.clock),
                )
                .map(|c| {
                    c.with_observer(self.observer.clone() as Arc<dyn UpstreamObserver>)
                        .with_credential_reload(self.control.clone())
                })
            })
        };
        let client = client.transpose()?;

        if let Some((credentials, sources, fingerprint)) = credentials {
            self.credentials
                .replace(credentials, sources, Some(fingerprint));
        }
        self.credentials
            .set_rejection_memory(config.app.credential_rejection_memory.0);
        if let Some(client) = client {
            self.authority.store(Arc::new(client));
        }
        let mut cache_settings = CacheSettings::from_config(&config.cache);
        cache_settings.refresh_retry = self.cache.settings().refresh_retry;
        self.cache.set_settings(cache_settings);
        if let Some(fleet) = self.fleet() {
            fleet.set_cache_tuning(config.cache.min_remaining.0, config.cache.negative_ttl.0);
        }
        let policy = Policy::new(&config);
        self.cache
            .set_configured(config.tenants.iter().map(|t| t.id.clone()));
        let mut applied = Applied {
            restart_needed,
            ..Applied::default()
        };
        if identity_changed {
            self.cache.clear();
            self.book.clear();
            // Refusals were the other app's.
            self.credentials.forget_rejections();
            applied.cleared = true;
        } else {
            // Token files' tokens stay too: no account needs to cover them.
            let files: Vec<CacheKey> = config
                .token_files
                .iter()
                .filter_map(|f| {
                    let resource = f.resource.as_ref().map(|r| r.as_str());
                    let target = policy.target(&f.tenant.to_string(), resource).ok()?;
                    Some(CacheKey::new(&target.tenant.id, &target.resource))
                })
                .collect();
            applied.dropped = self.cache.retain(|key| {
                policy.anyone_may_have(&key.tenant, &key.resource) || files.contains(key)
            });
        }
        self.state.store(Arc::new(State {
            config: Arc::clone(&config),
            policy,
            loaded_at: self.clock.unix_now(),
        }));
        self.observer.reloaded(Some(&config), self.clock.unix_now());
        self.prefetch_configured_tenants();
        self.reloads.send_replace(());
        Ok(applied)
    }

    /// Reports a reload that failed before anything changed.
    pub fn reload_failed(&self) {
        self.observer.reloaded(None, self.clock.unix_now());
    }
}

/// Keys a reload cannot change without a restart: listeners, connection
/// limits, the cache bound. Copies their old values into `new`; returns
/// the names of those that differed.
fn keep_restart_only(old: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! keep {
        ($($section:ident . $key:ident),* $(,)?) => {$(
            if old.$section.$key != new.$section.$key {
                changed.push(concat!(stringify!($section), ".", stringify!($key)));
                new.$section.$key = old.$section.$key.clone();
            }
        )*};
    }
    keep!(
        server.listen,
        server.allow_remote,
        server.unix_socket,
        server.metrics_listen,
        server.admin_socket,
        server.admin_group,
        server.max_connections,
        server.max_socket_connections,
        server.max_connections_per_account,
        server.idle_timeout,
        server.header_read_timeout,
        server.max_header_bytes,
        server.shutdown_timeout,
        cache.max_entries,
        cache.state_file,
        cache.state_key_file,
    );
    // The shared cache's connection and keys are set up once, at start.
    if old.shared_cache != new.shared_cache {
        changed.push("shared_cache");
        new.shared_cache = old.shared_cache.clone();
    }
    changed
}

#[cfg(test)]
mod tests;
