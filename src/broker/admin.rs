//! The admin operations and their JSON (docs/contract.md, "Admin API"):
//! the daemon's status, each tenant's state, refresh and evict.

use super::status::{missing_permissions, Consent, LastError, Upstream};
use super::{Broker, TokenError};
use crate::access::RequestError;
use crate::cache::CacheKey;
use crate::config::{AppKey, Resource, TenantConfig, TenantId, TenantKey};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use tokio::time::Instant;

/// `GET /admin/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub version: &'static str,
    pub started_at: u64,
    pub config_file: Option<String>,
    pub config_loaded_at: u64,
    pub credentials: Vec<CredentialView>,
    /// Null without `[shared_cache]`.
    pub shared_cache: Option<crate::fleet::FleetStatus>,
    /// Configured tenants.
    pub tenants: usize,
    /// Each `[[token_files]]` entry and its last write.
    pub token_files: Vec<crate::token_files::FileView>,
}

/// One credential in the status.
#[derive(Debug, Clone, Serialize)]
pub struct CredentialView {
    /// The app whose credential it is (its `name`).
    pub app: String,
    /// `certificate`, `federated_token_file`, `federated_managed_identity`.
    pub kind: &'static str,
    /// The certificate's thumbprint, or `federated:<issuer>`.
    pub thumbprint: String,
    /// Null for a credential without an expiry of its own (federated).
    pub not_after: Option<u64>,
    pub in_use: bool,
    /// Replaced by a reload, still kept as the last fallback (for
    /// `app.credential_rejection_memory`) in case Entra refuses the new one.
    pub retired: bool,
    pub last_rejection: Option<RejectionView>,
}

/// When and where Entra last refused a credential.
#[derive(Debug, Clone, Serialize)]
pub struct RejectionView {
    pub at: u64,
    pub tenant: String,
    pub aadsts: Option<String>,
}

/// One (app, tenant, resource) in `GET /admin/tenants`.
#[derive(Debug, Clone, Serialize)]
pub struct TenantRow {
    /// The app's `name`.
    pub app: String,
    /// Null for an unconfigured tenant.
    pub name: Option<String>,
    pub id: String,
    pub resource: String,
    pub configured: bool,
    pub consent: Consent,
    pub token: Option<TokenView>,
    /// `required_permissions` minus the token's roles; null when the roles
    /// cannot be read (or there is no token).
    pub missing_permissions: Option<Vec<String>>,
    pub last_error: Option<LastError>,
    pub upstream: Upstream,
}

/// The cached token of a row (unix seconds).
#[derive(Debug, Clone, Serialize)]
pub struct TokenView {
    pub acquired_at: u64,
    pub expires_on: u64,
    pub refresh_at: Option<u64>,
    pub roles: Option<Vec<String>>,
}

/// `{"tenants": [...]}`.
#[derive(Debug, Clone, Serialize)]
pub struct Tenants {
    pub tenants: Vec<TenantRow>,
}

impl Broker {
    /// The daemon's status.
    pub fn status(&self) -> Status {
        let state = self.state.load();
        let mut credentials = Vec::new();
        for (app, set) in self.credentials() {
            let in_use = set.in_use();
            let loaded = set.all();
            let retired = set.retired();
            credentials.extend(
                loaded
                    .iter()
                    .map(|c| (c, false))
                    .chain(retired.iter().map(|c| (c, true)))
                    .map(|(c, retired)| CredentialView {
                        app: app.name.to_string(),
                        kind: c.kind(),
                        thumbprint: c.id().to_owned(),
                        not_after: c.not_after().map(crate::clock::unix_seconds),
                        in_use: c.id() == in_use,
                        retired,
                        last_rejection: set.last_rejection(c.id()).map(|r| RejectionView {
                            at: r.at,
                            tenant: r.tenant,
                            aadsts: r.aadsts,
                        }),
                    }),
            );
        }
        Status {
            version: env!("CARGO_PKG_VERSION"),
            started_at: self.started_at,
            config_file: self.config_path.as_ref().map(|p| p.display().to_string()),
            config_loaded_at: state.loaded_at,
            credentials,
            shared_cache: self.fleet().map(|f| f.status()),
            tenants: state.config.tenants.len(),
            token_files: self.token_files.views(&state.config),
        }
    }

    /// Every configured tenant (even one never fetched) and every cached
    /// (tenant, resource); only `tenant`'s when one is named.
    pub fn tenants(&self, tenant: Option<&str>) -> Result<Tenants, RequestError> {
        let filter = match tenant {
            Some(reference) => Some(self.state.load().policy.resolve_tenant(reference)?.id),
            None => None,
        };
        Ok(Tenants {
            tenants: self.rows(filter.as_ref()),
        })
    }

    fn rows(&self, only: Option<&TenantId>) -> Vec<TenantRow> {
        let state = self.state.load();
        let config = &state.config;
        let wanted = |tenant: &TenantId| only.is_none_or(|t| t.same_as(tenant));
        // Configured tenants by lower-case id: one look-up per row, however
        // many tenants and cached entries there are.
        let configured: HashMap<TenantKey, &TenantConfig> =
            config.tenants.iter().map(|t| (t.id.key(), t)).collect();
        let mut keys: Vec<CacheKey> = super::configured_keys(config)
            .into_iter()
            .filter(|k| wanted(&k.tenant))
            .collect();
        let listed: HashSet<CacheKey> = keys.iter().cloned().collect();
        let mut cached: Vec<CacheKey> = self
            .cache
            .keys()
            .into_iter()
            .filter(|k| wanted(&k.tenant) && !listed.contains(k))
            .collect();
        cached.sort_by(|a, b| {
            (a.tenant.as_str(), a.app.name.as_str(), a.resource.as_str()).cmp(&(
                b.tenant.as_str(),
                b.app.name.as_str(),
                b.resource.as_str(),
            ))
        });
        keys.extend(cached);
        keys.iter()
            .map(|key| {
                let graph = state.policy.graph_of(&key.app);
                self.row(configured.get(&key.tenant).copied(), graph, key)
            })
            .collect()
    }

    /// The row of `key`; `configured` is its `[[tenants]]` entry, if any.
    fn row(
        &self,
        configured: Option<&TenantConfig>,
        graph: &Resource,
        key: &CacheKey,
    ) -> TenantRow {
        let record = self.book.record(key);
        let view = self.cache.inspect(key);
        let now_unix = self.clock.unix_now();
        let now = Instant::now();
        let token = view.as_ref().and_then(|v| {
            let token = v.token.as_ref().filter(|t| t.expires_at > now)?;
            Some(TokenView {
                acquired_at: token.obtained_on,
                expires_on: token.expires_on,
                refresh_at: v
                    .next_refresh
                    .map(|at| now_unix + at.saturating_duration_since(now).as_secs()),
                roles: super::status::token_roles(token.access_token.expose()),
            })
        });
        // What Entra last said of consent for this key; else a token says
        // granted; else what the tenant's Graph key says (consent is the
        // tenant's).
        let consent = record
            .as_ref()
            .and_then(|r| r.consent)
            .or(token.as_ref().map(|_| Consent::Granted))
            .or_else(|| {
                (key.resource != *graph)
                    .then(|| {
                        self.book
                            .record(&CacheKey::new(&key.app, &key.tenant, graph))
                    })
                    .flatten()
                    .and_then(|r| r.consent)
            })
            .unwrap_or(Consent::Unknown);
        let required = configured
            .filter(|_| key.resource == *graph)
            .map_or(&[][..], |t| &t.required_permissions[..]);
        TenantRow {
            app: key.app.name.to_string(),
            name: configured.map(|t| t.name.as_str().to_owned()),
            id: configured.map_or_else(|| key.tenant.to_string(), |t| t.id.to_string()),
            resource: key.resource.to_string(),
            configured: configured.is_some(),
            consent,
            missing_permissions: token
                .as_ref()
                .and_then(|t| missing_permissions(required, t.roles.as_deref())),
            token,
            last_error: record.and_then(|r| r.last_error).map(|e| *e),
            upstream: Upstream {
                success: view.as_ref().map_or(0, |v| u64::from(v.fetched.0)),
                failure: view.as_ref().map_or(0, |v| u64::from(v.fetched.1)),
            },
        }
    }

    /// Acquires now, past the cached token and remembered refusals (a
    /// throttle is honoured), for `resource` or the cloud's Graph, as `app`
    /// (the first when `None`).
    pub async fn refresh(
        &self,
        tenant: &str,
        resource: Option<&str>,
        app: Option<&str>,
    ) -> Result<Tenants, TokenError> {
        let target = self.state.load().policy.target(tenant, resource, app)?;
        self.observer.forced_by_admin();
        self.cache.refresh(&super::key_of(&target)).await?;
        Ok(Tenants {
            tenants: self.rows(Some(&target.tenant.id)),
        })
    }

    /// Drops the cached token(s) and remembered refusals of `tenant` (every
    /// resource when none is named, of `app` or of every app when none is);
    /// throttling stays; nothing is prefetched. With a shared cache, its
    /// values go too (write-through): no host takes back a token an
    /// operator just evicted.
    pub async fn evict(
        &self,
        tenant: &str,
        resource: Option<&str>,
        app: Option<&str>,
    ) -> Result<Tenants, RequestError> {
        let state = self.state.load();
        let target = state.policy.target(tenant, resource, app)?;
        let id = target.tenant.id;
        let of_app = |key: &AppKey| app.is_none() || *key == target.app;
        let keys = match resource {
            // That resource, of the app named or of every app.
            Some(_) => state
                .policy
                .apps()
                .filter(|a| of_app(a))
                .map(|a| CacheKey::new(a, &id, &target.resource))
                .collect(),
            // Every resource cached for the tenant, and each app's Graph
            // entry (whose last error the status may still show).
            None => {
                let graphs: Vec<CacheKey> = state
                    .policy
                    .apps()
                    .filter(|a| of_app(a))
                    .map(|a| CacheKey::new(a, &id, state.policy.graph_of(a)))
                    .collect();
                let mut keys: Vec<CacheKey> = self
                    .cache
                    .keys()
                    .into_iter()
                    .filter(|k| k.tenant.same_as(&id) && of_app(&k.app) && !graphs.contains(k))
                    .collect();
                keys.extend(graphs);
                keys
            }
        };
        for key in &keys {
            self.cache.evict(key);
            self.book.forget_error(key);
        }
        if let Some(fleet) = self.fleet() {
            for key in &keys {
                fleet.evict(key).await;
            }
        }
        Ok(Tenants {
            tenants: self.rows(Some(&id)),
        })
    }
}
