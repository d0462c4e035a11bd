//! Putting a new configuration in force (a reload's last step, or a test's):
//! what changes at once, what keeps its old value until a restart, which
//! apps come and go, and which cached tokens stay.

use super::apps::{app_client, configured_keys, configured_pairs, key_of, settings_for, Apps};
use super::{Broker, State};
use crate::access::Policy;
use crate::authority::{AuthorityClient, AuthoritySettings, BuildError};
use crate::cache::{CacheKey, CacheSettings};
use crate::config::{AppKey, Config};
use crate::credentials::{CredentialSet, ReadSet};
use std::sync::Arc;

/// What a successful reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Keys whose new value needs a restart; their old value stays.
    pub restart_needed: Vec<&'static str>,
    /// Cached (app, tenant, resource) entries dropped: their app, tenant or
    /// resource left.
    pub dropped: usize,
    /// Every token was dropped: no app stayed the same.
    pub cleared: bool,
}

impl Broker {
    /// Puts a new configuration (already validated) and, when given, new
    /// credentials (each app's, in file order) in force, all at once. What
    /// needs a restart keeps its old value and is reported. Apps may come
    /// and go. Tokens stay cached unless their app, tenant or resource left
    /// (or their app's cloud or authority changed: then that app's go);
    /// tokens fetched with a credential that left stay and refresh on
    /// schedule.
    pub fn apply(
        &self,
        mut config: Config,
        credentials: Option<Vec<ReadSet>>,
    ) -> Result<Applied, BuildError> {
        let old = self.config();
        if let Some(listen) = self.listen_override {
            config.server.listen = listen;
        }
        let restart_needed = keep_restart_only(&old, &mut config);
        let config = Arc::new(config);
        let current = self.apps.load_full();
        // Tests and tools may tune retries; a reload keeps the policy.
        let retry = current
            .0
            .first()
            .map(|(_, c)| c.settings().retry)
            .unwrap_or_default();
        let mut read = credentials.map(Vec::into_iter);

        // Built before anything changes: a client that cannot be built (an
        // unreadable ca_file, an app without credentials) fails the reload
        // and leaves all as it was.
        let mut clients = Vec::with_capacity(config.apps.len());
        let mut replacements = Vec::new();
        let mut moved: Vec<AppKey> = Vec::new();
        for app in &config.apps {
            let key = app.app_key();
            let new_credentials = read.as_mut().and_then(Iterator::next);
            let settings = settings_for(app, retry);
            let client = match current.client(&key) {
                Some(client) => {
                    let was = old.apps.iter().find(|a| a.app_key() == key);
                    if was.is_some_and(|was| {
                        was.cloud != app.cloud || was.authority_host() != app.authority_host()
                    }) {
                        moved.push(key.clone());
                    }
                    let set = Arc::clone(client.credentials());
                    replacements.push((
                        Arc::clone(&set),
                        new_credentials,
                        app.credential_rejection_memory.0,
                    ));
                    // A ca_file may have been rewritten in place: always re-read it.
                    if *client.settings() != settings || settings.ca_file.is_some() {
                        Arc::new(self.client(settings, set)?)
                    } else {
                        Arc::clone(client)
                    }
                }
                None => {
                    let Some((list, sources, fingerprint)) = new_credentials else {
                        return Err(BuildError::Client(format!(
                            "app \"{}\" was added without its credentials being read",
                            app.name
                        )));
                    };
                    let set = Arc::new(CredentialSet::new(
                        list,
                        sources,
                        Some(fingerprint),
                        app.credential_rejection_memory.0,
                    ));
                    Arc::new(self.client(settings, set)?)
                }
            };
            clients.push((key, client));
        }

        // Nothing below fails: the apps that stay take their new
        // credentials and settings now.
        for (set, credentials, memory) in replacements {
            if let Some((list, sources, fingerprint)) = credentials {
                set.replace(list, sources, Some(fingerprint));
            }
            set.set_rejection_memory(memory);
        }
        // Refusals were for the app's old authority.
        for key in &moved {
            if let Some((_, client)) = clients.iter().find(|(k, _)| k == key) {
                client.credentials().forget_rejections();
            }
        }
        let kept_any = clients
            .iter()
            .any(|(key, _)| current.client(key).is_some() && !moved.contains(key));
        self.apps.store(Arc::new(Apps(clients)));
        let mut cache_settings = CacheSettings::from_config(&config.cache);
        cache_settings.refresh_retry = self.cache.settings().refresh_retry;
        self.cache.set_settings(cache_settings);
        if let Some(fleet) = self.fleet() {
            fleet.set_cache_tuning(config.cache.min_remaining.0, config.cache.negative_ttl.0);
        }
        let policy = Policy::new(&config);
        self.cache.set_configured(configured_pairs(&config));
        let mut applied = Applied {
            restart_needed,
            ..Applied::default()
        };
        if !kept_any {
            // No app is the same one: every token was another app's.
            self.cache.clear();
            self.book.clear();
            applied.cleared = true;
        } else {
            // Token files' tokens stay too (no account needs to cover them),
            // and configured tenants' Graph tokens, which would be
            // prefetched again at once.
            let kept: std::collections::HashSet<CacheKey> = config
                .token_files
                .iter()
                .filter_map(|f| {
                    let resource = f.resource.as_ref().map(|r| r.as_str());
                    let app = f.app.as_ref().map(|a| a.as_str());
                    let target = policy.target(&f.tenant.to_string(), resource, app).ok()?;
                    Some(key_of(&target))
                })
                .chain(configured_keys(&config))
                .collect();
            applied.dropped = self.cache.retain(|key| {
                !moved.contains(&key.app)
                    && (policy.anyone_may_have(&key.app, &key.tenant, &key.resource)
                        || kept.contains(key))
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

    fn client(
        &self,
        settings: AuthoritySettings,
        credentials: Arc<CredentialSet>,
    ) -> Result<AuthorityClient, BuildError> {
        app_client(
            settings,
            credentials,
            &self.clock,
            &self.observer,
            &self.control,
        )
    }

    /// Reports a reload that failed before anything changed.
    pub fn reload_failed(&self) {
        self.observer.reloaded(None, self.clock.unix_now());
    }
}

/// Keys a reload cannot change without a restart: listeners, connection
/// limits, the cache bound. Copies their old values into `new`; returns
/// the names of those that differed.
pub(super) fn keep_restart_only(old: &Config, new: &mut Config) -> Vec<&'static str> {
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
