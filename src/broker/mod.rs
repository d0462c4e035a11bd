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
mod apply;
mod apps;
mod control;
mod error;
pub mod known;
mod limit;
pub mod status;
mod warm;

use crate::access::{AccountId, AuthFailure, Policy, Target};
use crate::authority::{AcquireError, AuthoritySettings, BuildError, UpstreamObserver};
use crate::cache::{CacheKey, CacheObserver, CacheSettings, Grant, NoObserver, TokenCache};
use crate::clock::SharedClock;
use crate::config::{AppKey, Config, ResolvedTenant};
use crate::credentials::CredentialSet;
use crate::fleet::{SharedCache, SharedSource};
use crate::jitter::Jitter;
pub use apply::Applied;
use apps::{
    app_client, configured_keys, configured_pairs, key_of, settings_for, Apps, AuthoritySource,
};
use arc_swap::{ArcSwap, ArcSwapOption};
pub use control::{Control, ReloadError};
pub use error::{Refusal, TokenError};
use status::{Consent, StatusBook};
use std::path::{Path, PathBuf};
use std::sync::Arc;
pub use warm::RestoreReport;

/// A token handed out, with what it was for.
#[derive(Debug, Clone)]
pub struct Issued {
    pub target: Target,
    pub grant: Grant,
}

/// Where a gateway request goes: the tenant, and the app whose token it
/// carries.
#[derive(Debug, Clone)]
pub struct GatewayTarget {
    pub tenant: ResolvedTenant,
    pub app: AppKey,
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

    /// Reads the configuration the caller was authenticated against (the
    /// snapshot its app and tenant were chosen from).
    pub fn with_config<R>(&self, read: impl FnOnce(&Config) -> R) -> R {
        read(&self.state.config)
    }

    /// The name of the app whose client ID is `client_id` (the App Service
    /// protocol's `client_id` selector may name an app instead of a tenant).
    pub fn app_by_client_id(&self, client_id: &str) -> Option<&str> {
        self.state.policy.app_by_client_id(client_id)
    }
}

/// Everything the broker reports to (metrics).
pub trait Observer: CacheObserver + UpstreamObserver {
    /// A configured tenant's consent to `key`'s app changed.
    fn consent(&self, _key: &CacheKey, _consent: Consent) {}
    /// An operator forced a refresh.
    fn forced_by_admin(&self) {}
    /// A reload succeeded (with the configuration now in force) or failed.
    fn reloaded(&self, _config: Option<&Config>, _at_unix: u64) {}
    /// A token file was written, or could not be.
    fn token_file_written(&self, _ok: bool) {}
}

impl UpstreamObserver for NoObserver {}
impl Observer for NoObserver {}

/// The broker's token source: the authority, shared with the fleet.
type Source = status::Recorded<SharedSource<AuthoritySource>>;

/// The broker.
#[derive(Debug)]
pub struct Broker {
    state: ArcSwap<State>,
    config_path: Option<PathBuf>,
    /// `serve --listen`, which outlives reloads of the file.
    listen_override: Option<std::net::SocketAddr>,
    /// Reloads, and their lock.
    control: Arc<Control>,
    apps: Arc<ArcSwap<Apps>>,
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
    /// A broker for `config`, with settings taken from it; `credentials`
    /// are each app's, in file order.
    pub fn new(
        config: Arc<Config>,
        credentials: Vec<Arc<CredentialSet>>,
        clock: SharedClock,
        observer: Arc<dyn Observer>,
    ) -> Result<Broker, BuildError> {
        let authority = AuthoritySettings::from_config(&config);
        let cache = CacheSettings::from_config(&config.cache);
        Broker::with_settings(config, authority, cache, credentials, clock, observer)
    }

    /// A broker with explicit settings (tests shorten retries and timeouts):
    /// `authority` is the first app's (the others take theirs from the
    /// configuration, with its retry policy); `credentials` are each app's,
    /// in file order.
    pub fn with_settings(
        config: Arc<Config>,
        authority: AuthoritySettings,
        cache: CacheSettings,
        credentials: Vec<Arc<CredentialSet>>,
        clock: SharedClock,
        observer: Arc<dyn Observer>,
    ) -> Result<Broker, BuildError> {
        if credentials.len() != config.apps.len() {
            return Err(BuildError::Client(format!(
                "credentials for {} apps, but {} are configured",
                credentials.len(),
                config.apps.len()
            )));
        }
        let apps = Arc::new(ArcSwap::from_pointee(Apps::default()));
        let control = Arc::new(Control::new(Arc::clone(&apps), Arc::clone(&clock)));
        let mut clients = Vec::with_capacity(config.apps.len());
        for (i, (app, credentials)) in config.apps.iter().zip(credentials).enumerate() {
            let settings = if i == 0 {
                authority.clone()
            } else {
                settings_for(app, authority.retry)
            };
            let client = app_client(settings, credentials, &clock, &observer, &control)?;
            clients.push((app.app_key(), Arc::new(client)));
        }
        apps.store(Arc::new(Apps(clients)));
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
                    apps: Arc::clone(&apps),
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
        cache.set_configured(configured_pairs(&config));
        Ok(Broker {
            state: ArcSwap::from_pointee(State {
                config,
                policy,
                loaded_at: now,
            }),
            config_path: None,
            listen_override: None,
            control,
            apps,
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

    /// Each app's credentials in force, in file order.
    pub fn credentials(&self) -> Vec<(AppKey, Arc<CredentialSet>)> {
        self.apps
            .load()
            .credentials()
            .map(|(key, set)| (key.clone(), Arc::clone(set)))
            .collect()
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
    /// app's cloud's Graph when `None`), `app` an app's name (the account's
    /// first when `None`). Validated, then authorised, then served from the
    /// cache. With `rejected` (the SHA-256 of a token the caller saw
    /// refused), a cached token with that hash is replaced first.
    pub async fn token(
        &self,
        caller: &Caller,
        tenant: Option<&str>,
        resource: Option<&str>,
        app: Option<&str>,
        rejected: Option<&[u8; 32]>,
    ) -> Result<Issued, TokenError> {
        let policy = &caller.state.policy;
        let target = policy.resolve(caller.account, tenant, resource, app)?;
        policy.authorize(caller.account, &target)?;
        self.issue(caller, target, rejected).await
    }

    /// The tenant and app a gateway request names (`tenant` and `app` as
    /// in [`Broker::token`]), when `caller` may send Graph requests there:
    /// it has Graph rules, and the tenant and app are among its own.
    /// Gateway-only accounts may.
    pub fn gateway_target(
        &self,
        caller: &Caller,
        tenant: &str,
        app: Option<&str>,
    ) -> Result<GatewayTarget, TokenError> {
        let policy = &caller.state.policy;
        let tenant = policy.resolve_tenant(tenant)?;
        let app = policy.gateway_app(caller.account, app)?;
        policy.authorize_gateway(caller.account, &tenant, &app)?;
        Ok(GatewayTarget { tenant, app })
    }

    /// The Graph token the gateway forwards `caller`'s request with, for a
    /// tenant and app [`Broker::gateway_target`] allowed. Served from the
    /// same cache, single flight and budget as `/v1/token`; the token never
    /// reaches the caller. With `rejected`, a cached token with that hash
    /// (one Graph refused) is replaced first.
    pub async fn graph_token(
        &self,
        caller: &Caller,
        GatewayTarget { tenant, app }: GatewayTarget,
        rejected: Option<&[u8; 32]>,
    ) -> Result<Issued, TokenError> {
        let target = Target {
            resource: caller.state.policy.graph_of(&app).clone(),
            tenant,
            app,
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
        let key = key_of(&target);
        // An account with "*" spends a bounded budget on fetches for tenants
        // nobody configured and this broker does not know: per minute, and
        // half the upstream slots at once (held while its caller waits).
        let mut _share = None;
        if let Some(per_minute) = policy.new_tenant_limit(caller.account) {
            if target.tenant.name.is_none()
                && !self.known.contains(&key.app, &key.tenant)
                && self.cache.would_fetch(&key)
            {
                let account = caller.account_name();
                self.new_tenants
                    .take(account, per_minute, tokio::time::Instant::now())
                    .map_err(|retry_after| TokenError::NewTenantsLimited {
                        account: account.to_owned(),
                        retry_after,
                    })?;
                let slots = self
                    .apps
                    .load()
                    .client(&target.app)
                    .map_or(1, |c| c.settings().max_concurrent_requests);
                let wait = self.with_config(|c| c.cache.load_timeout.0);
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
    /// name, GUID or domain), `resource` (the app's cloud's Graph when
    /// `None`) and `app` (the first when `None`) resolved as for any caller,
    /// served from the same cache and single flight. No account: the
    /// operator who configured the file is the authority, so no account's
    /// budget of new tenants is charged.
    pub async fn token_for_file(
        &self,
        tenant: &str,
        resource: Option<&str>,
        app: Option<&str>,
    ) -> Result<Issued, TokenError> {
        let target = self.state.load().policy.target(tenant, resource, app)?;
        let key = key_of(&target);
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
    /// none, for each app it consented to, in the background (upstream
    /// concurrency bounded by each app's client).
    pub fn prefetch_configured_tenants(&self) {
        self.cache.prefetch(configured_keys(&self.config()));
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
    /// Every app's, once per thumbprint (apps may share a certificate; it
    /// is in use when some app signs with it).
    pub fn certificates(&self) -> Vec<(String, u64, bool)> {
        let mut certificates: Vec<(String, u64, bool)> = Vec::new();
        for (_, credentials) in self.apps.load().credentials() {
            let in_use = credentials.in_use();
            for c in credentials.all().iter() {
                let Some(info) = c.certificate() else {
                    continue;
                };
                let used = c.id() == in_use;
                match certificates
                    .iter_mut()
                    .find(|(t, ..)| *t == info.thumbprint_sha1)
                {
                    Some(seen) => seen.2 |= used,
                    None => certificates.push((
                        info.thumbprint_sha1.clone(),
                        crate::clock::unix_seconds(info.not_after),
                        used,
                    )),
                }
            }
        }
        certificates
    }

    /// The certificate the first app tries first, DER (tests check
    /// rotation by it).
    pub fn certificate_der(&self) -> Vec<u8> {
        self.apps
            .load()
            .credentials()
            .next()
            .and_then(|(_, set)| set.current().certificate().map(|c| c.der.clone()))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
