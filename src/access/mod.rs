//! Access policy: who a caller is, which tenant and resource a request
//! names, and whether that caller may have it. Pure: built from the
//! configuration, asked by the broker, no I/O.
//!
//! - [`Policy::authenticate`]: a presented secret (hashed, compared in
//!   constant time against every account) or a Unix-socket peer uid → an
//!   account;
//! - [`Policy::resolve`]: a caller's tenant reference and resource →
//!   a validated [`Target`] (before anything goes into a URL);
//! - [`Policy::authorize`]: may this account have that target.

pub mod secret;

use crate::config::{
    AppKey, Config, Name, ResolvedTenant, Resource, TenantId, TenantKey, TenantRef,
};
use crate::gateway::rules::Rule;
use std::collections::HashMap;
use std::sync::Arc;

/// Why a caller was refused before any lookup (the `reason` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credential presented.
    Missing,
    /// A secret that matches no account.
    UnknownSecret,
    /// A socket peer whose uid maps to no account (and no secret).
    UnknownUid,
}

impl AuthFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::UnknownSecret => "unknown_secret",
            AuthFailure::UnknownUid => "unknown_uid",
        }
    }
}

/// A request refused before any upstream call (HTTP 400).
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestError {
    #[error(
        "tenant \"{0}\" is neither a configured tenant name nor a tenant GUID or verified domain"
    )]
    Tenant(String),
    #[error("resource \"{0}\" is not valid: expected an https URL such as https://graph.microsoft.com, without /.default")]
    Resource(String),
    /// An App Service-style call named no tenant and the account has no default.
    #[error("no tenant: pass client_id=<tenant> or set default_tenant for account \"{0}\"")]
    NoTenant(Name),
    #[error("app \"{0}\" is not configured; name one of the [[apps]] (or leave app out for the account's first)")]
    App(String),
}

/// A request this account may not make (HTTP 403).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Forbidden {
    #[error("account \"{account}\" may not use tenant {tenant}; add it to the account's tenants")]
    Tenant { account: Name, tenant: TenantId },
    #[error("account \"{account}\" may not request resource {resource}; add it to the account's resources")]
    Resource { account: Name, resource: Resource },
    #[error("account \"{account}\" may not use app \"{app}\"; add it to the account's apps")]
    App { account: Name, app: Name },
    #[error("account \"{account}\" is for the Graph gateway only (graph_only = true): it gets no raw token; it reaches Graph only through the gateway, within its [[accounts.graph]] rules")]
    GraphOnly { account: Name },
    #[error("account \"{account}\" has no [[accounts.graph]] rules, so the Graph gateway allows it nothing; add rules naming the methods, paths and mailboxes it needs")]
    NoGraphRules { account: Name },
}

impl Forbidden {
    /// The `reason` label of the auth-failures metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Forbidden::Tenant { .. } => "forbidden_tenant",
            Forbidden::Resource { .. } => "forbidden_resource",
            Forbidden::App { .. } => "forbidden_app",
            Forbidden::GraphOnly { .. } => "graph_only",
            Forbidden::NoGraphRules { .. } => "no_graph_rules",
        }
    }
}

/// A validated request: the app chosen, tenant resolved, resource normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub app: AppKey,
    pub tenant: ResolvedTenant,
    pub resource: Resource,
}

impl Target {
    /// The configured name when there is one, else the id (for logs).
    pub fn tenant_label(&self) -> &str {
        match &self.tenant.name {
            Some(name) => name.as_str(),
            None => self.tenant.id.as_str(),
        }
    }
}

/// Longest tenant reference or resource accepted from a caller.
pub const MAX_INPUT_LEN: usize = 256;

/// Which tenants an account may use.
#[derive(Debug)]
enum Tenants {
    Any,
    /// Lower-case ids.
    Listed(Vec<TenantKey>),
}

#[derive(Debug)]
struct Account {
    name: Name,
    /// One, or two while the secret rotates.
    secrets: Vec<[u8; 32]>,
    tenants: Tenants,
    resources: Option<Vec<Resource>>,
    default_tenant: Option<ResolvedTenant>,
    max_new_tenants_per_minute: u32,
    /// Gateway only: never a raw token.
    graph_only: bool,
    /// What it may do through the Graph gateway (none: nothing).
    graph: Arc<[Rule]>,
    /// The apps it may use (indices into the policy's apps), its default
    /// first; never empty.
    apps: Vec<usize>,
}

/// An app registration as the policy knows it.
#[derive(Debug)]
struct App {
    key: AppKey,
    /// Its cloud's Graph: the default resource, and the gateway's.
    graph: Resource,
}

/// An authenticated account (an index into the policy it came from).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountId(usize);

/// The access rules of one configuration, indexed for lookups.
#[derive(Debug)]
pub struct Policy {
    accounts: Vec<Account>,
    by_uid: HashMap<u32, usize>,
    /// Configured tenants by name, and names by lower-case id.
    by_name: HashMap<String, ResolvedTenant>,
    by_id: HashMap<TenantKey, Name>,
    /// In file order: the first is the default.
    apps: Vec<App>,
}

impl Policy {
    /// Indexes `config`'s tenants and accounts. The configuration has been
    /// validated, so every tenant name an account uses is configured.
    pub fn new(config: &Config) -> Policy {
        let by_name = config
            .tenants
            .iter()
            .map(|t| {
                let tenant = ResolvedTenant {
                    id: t.id.clone(),
                    name: Some(t.name.clone()),
                };
                (t.name.as_str().to_owned(), tenant)
            })
            .collect();
        let by_id = config
            .tenants
            .iter()
            .map(|t| (t.id.key(), t.name.clone()))
            .collect();
        let mut policy = Policy {
            accounts: Vec::with_capacity(config.accounts.len()),
            by_uid: HashMap::new(),
            by_name,
            by_id,
            apps: config
                .apps
                .iter()
                .map(|a| App {
                    key: a.app_key(),
                    graph: a.graph(),
                })
                .collect(),
        };
        for (i, a) in config.accounts.iter().enumerate() {
            let tenants = if a.tenants.contains(&TenantRef::Any) {
                Tenants::Any
            } else {
                Tenants::Listed(
                    a.tenants
                        .iter()
                        .filter_map(|t| policy.configured(t))
                        .map(|t| t.id.key())
                        .collect(),
                )
            };
            let default_tenant = a.default_tenant.as_ref().and_then(|t| policy.configured(t));
            // Validated: every name is a configured app.
            let mut apps: Vec<usize> = a
                .apps
                .iter()
                .filter_map(|name| policy.app_index(name.as_str()))
                .collect();
            if apps.is_empty() {
                apps.push(0);
            }
            policy.accounts.push(Account {
                name: a.name.clone(),
                secrets: a.secret_sha256.0.iter().map(|h| h.0).collect(),
                tenants,
                resources: a.resources.clone(),
                default_tenant,
                max_new_tenants_per_minute: a.max_new_tenants_per_minute,
                graph_only: a.graph_only,
                // Validated with the configuration, so every rule compiles.
                graph: a
                    .graph
                    .iter()
                    .filter_map(|r| Rule::new(&r.methods, &r.paths, &r.mailboxes).ok())
                    .collect(),
                apps,
            });
            policy
                .by_uid
                .extend(a.unix_uids.iter().map(|uid| (*uid, i)));
        }
        policy
    }

    /// A configuration reference resolved; `None` for `"*"` (or an unknown
    /// name, which validation rules out).
    fn configured(&self, reference: &TenantRef) -> Option<ResolvedTenant> {
        match reference {
            TenantRef::Any => None,
            TenantRef::Id(id) => Some(self.with_name(id.clone())),
            TenantRef::Name(name) => self.by_name.get(name.as_str()).cloned(),
        }
    }

    fn with_name(&self, id: TenantId) -> ResolvedTenant {
        let name = self.by_id.get(&id.key()).cloned();
        ResolvedTenant { id, name }
    }

    /// Authenticates a caller from its presented secret and (on the Unix
    /// socket) its peer uid. A presented secret decides (a wrong one is
    /// refused, never excused by the uid); without one, a mapped uid suffices.
    pub fn authenticate(
        &self,
        secret: Option<&str>,
        peer_uid: Option<u32>,
    ) -> Result<AccountId, AuthFailure> {
        match secret {
            Some(secret) if !secret.is_empty() => {
                self.by_secret(secret).ok_or(AuthFailure::UnknownSecret)
            }
            _ => match peer_uid {
                Some(uid) => self
                    .by_uid
                    .get(&uid)
                    .map(|i| AccountId(*i))
                    .ok_or(AuthFailure::UnknownUid),
                None => Err(AuthFailure::Missing),
            },
        }
    }

    /// Every configured hash is compared, each in constant time, so timing
    /// says nothing about which account (or how much of a hash) matched.
    fn by_secret(&self, secret: &str) -> Option<AccountId> {
        let digest = secret::digest(secret);
        let mut found = None;
        for (i, account) in self.accounts.iter().enumerate() {
            for secret in &account.secrets {
                let equal =
                    aws_lc_rs::constant_time::verify_slices_are_equal(&digest, secret).is_ok();
                if equal && found.is_none() {
                    found = Some(AccountId(i));
                }
            }
        }
        found
    }

    /// Ids come only from this policy's `authenticate`, and the broker keeps
    /// each with the policy that made it, so the index is in range.
    fn account(&self, id: AccountId) -> &Account {
        &self.accounts[id.0]
    }

    /// The account's name (for logs).
    pub fn account_name(&self, id: AccountId) -> &Name {
        &self.account(id).name
    }

    /// Validates a caller's tenant reference (a configured name, a GUID or a
    /// domain; the account's default when `None`) and resource (the cloud's
    /// Graph when `None`). The values in errors are escaped and shortened.
    pub fn resolve(
        &self,
        account: AccountId,
        tenant: Option<&str>,
        resource: Option<&str>,
        app: Option<&str>,
    ) -> Result<Target, RequestError> {
        let app = self.app_for(account, app)?;
        let tenant = match tenant {
            Some(reference) => self.resolve_tenant(reference)?,
            None => {
                let account = self.account(account);
                account
                    .default_tenant
                    .clone()
                    .ok_or_else(|| RequestError::NoTenant(account.name.clone()))?
            }
        };
        Ok(Target {
            tenant,
            resource: self.resource(app, resource)?,
            app: app.key.clone(),
        })
    }

    /// The target `tenant`, `resource` and `app` (the first app when
    /// `None`) name, for no account in particular (token files).
    pub fn target(
        &self,
        tenant: &str,
        resource: Option<&str>,
        app: Option<&str>,
    ) -> Result<Target, RequestError> {
        let app = match app {
            Some(name) => self.named_app(name)?,
            None => self.default_app(),
        };
        Ok(Target {
            tenant: self.resolve_tenant(tenant)?,
            resource: self.resource(app, resource)?,
            app: app.key.clone(),
        })
    }

    /// The index of the app called `name`.
    fn app_index(&self, name: &str) -> Option<usize> {
        self.apps.iter().position(|a| a.key.name.as_str() == name)
    }

    fn named_app(&self, name: &str) -> Result<&App, RequestError> {
        self.app_index(name)
            .and_then(|i| self.apps.get(i))
            .ok_or_else(|| RequestError::App(shown(name)))
    }

    /// The first app: a valid configuration has one.
    fn default_app(&self) -> &App {
        &self.apps[0]
    }

    /// The app a request of `account` names (its first when `None`). Whether
    /// the account may use it is [`Policy::authorize`]'s question.
    fn app_for(&self, account: AccountId, name: Option<&str>) -> Result<&App, RequestError> {
        match name {
            Some(name) => self.named_app(name),
            None => {
                let first = self.account(account).apps.first().copied().unwrap_or(0);
                Ok(self.apps.get(first).unwrap_or_else(|| self.default_app()))
            }
        }
    }

    /// The name of the app whose client ID is `client_id` (the App Service
    /// protocol's `client_id` selector may name an app).
    pub fn app_by_client_id(&self, client_id: &str) -> Option<&str> {
        self.apps
            .iter()
            .find(|a| a.key.client_id.as_str().eq_ignore_ascii_case(client_id))
            .map(|a| a.key.name.as_str())
    }

    /// The configured apps, the default first.
    pub fn apps(&self) -> impl Iterator<Item = &AppKey> {
        self.apps.iter().map(|a| &a.key)
    }

    fn resource(&self, app: &App, resource: Option<&str>) -> Result<Resource, RequestError> {
        Ok(match resource {
            None => app.graph.clone(),
            Some(r) if r.len() > MAX_INPUT_LEN => return Err(RequestError::Resource(shown(r))),
            Some(r) => Resource::parse(r).map_err(|_| RequestError::Resource(shown(r)))?,
        })
    }

    /// A caller's tenant reference: a configured name, else a tenant GUID or
    /// domain (which goes into the token URL, so only DNS characters pass).
    pub fn resolve_tenant(&self, reference: &str) -> Result<ResolvedTenant, RequestError> {
        if reference.len() > MAX_INPUT_LEN {
            return Err(RequestError::Tenant(shown(reference)));
        }
        if let Some(tenant) = self.by_name.get(reference) {
            return Ok(tenant.clone());
        }
        TenantId::try_from(reference.to_owned())
            .map(|id| self.with_name(id))
            .map_err(|_| RequestError::Tenant(shown(reference)))
    }

    /// Whether `account` may have a token for `target`.
    pub fn authorize(&self, account: AccountId, target: &Target) -> Result<(), Forbidden> {
        let a = self.account(account);
        if a.graph_only {
            return Err(Forbidden::GraphOnly {
                account: a.name.clone(),
            });
        }
        self.authorize_app(a, &target.app)?;
        if !a.may_use(&target.tenant.id) {
            return Err(Forbidden::Tenant {
                account: a.name.clone(),
                tenant: target.tenant.id.clone(),
            });
        }
        if !a.may_request(&target.resource, self.graph_of(&target.app)) {
            return Err(Forbidden::Resource {
                account: a.name.clone(),
                resource: target.resource.clone(),
            });
        }
        Ok(())
    }

    /// Whether `account` may send Graph requests for `tenant` through the
    /// gateway (the rules then judge each request). `graph_only` accounts
    /// may; the token is the cloud's Graph token and never leaves the broker.
    pub fn authorize_gateway(
        &self,
        account: AccountId,
        tenant: &ResolvedTenant,
        app: &AppKey,
    ) -> Result<(), Forbidden> {
        let a = self.account(account);
        if a.graph.is_empty() {
            return Err(Forbidden::NoGraphRules {
                account: a.name.clone(),
            });
        }
        self.authorize_app(a, app)?;
        if !a.may_use(&tenant.id) {
            return Err(Forbidden::Tenant {
                account: a.name.clone(),
                tenant: tenant.id.clone(),
            });
        }
        Ok(())
    }

    /// The account's Graph rules.
    pub fn graph_rules(&self, account: AccountId) -> &Arc<[Rule]> {
        &self.account(account).graph
    }

    /// Whether `account` may use `app`.
    fn authorize_app(&self, account: &Account, app: &AppKey) -> Result<(), Forbidden> {
        let allowed = account
            .apps
            .iter()
            .any(|i| self.apps.get(*i).is_some_and(|a| a.key == *app));
        if allowed {
            Ok(())
        } else {
            Err(Forbidden::App {
                account: account.name.clone(),
                app: app.name.clone(),
            })
        }
    }

    /// The gateway's app for `account`: the one `name` names (the
    /// `X-Tokenbroker-App` header), else its first.
    pub fn gateway_app(
        &self,
        account: AccountId,
        name: Option<&str>,
    ) -> Result<AppKey, RequestError> {
        self.app_for(account, name).map(|a| a.key.clone())
    }

    /// `app`'s cloud's Graph resource (the gateway's tokens are for it);
    /// the first app's for an app no longer configured.
    pub fn graph_of(&self, app: &AppKey) -> &Resource {
        let app = self
            .apps
            .iter()
            .find(|a| a.key == *app)
            .unwrap_or_else(|| self.default_app());
        &app.graph
    }

    /// For an account with `"*"`, how many fetches a minute it may start for
    /// tenants not yet cached; `None` for accounts with a list.
    pub fn new_tenant_limit(&self, account: AccountId) -> Option<u32> {
        let a = self.account(account);
        matches!(a.tenants, Tenants::Any).then_some(a.max_new_tenants_per_minute)
    }

    /// Whether some account may have a token of `app` for `tenant` and
    /// `resource` (a reload drops cached tokens nobody may have any more).
    pub fn anyone_may_have(&self, app: &AppKey, tenant: &TenantId, resource: &Resource) -> bool {
        let Some(index) = self.apps.iter().position(|a| a.key == *app) else {
            return false;
        };
        let graph = &self.apps[index].graph;
        self.accounts
            .iter()
            .any(|a| a.apps.contains(&index) && a.may_use(tenant) && a.may_request(resource, graph))
    }
}

impl Account {
    fn may_use(&self, tenant: &TenantId) -> bool {
        match &self.tenants {
            Tenants::Any => true,
            Tenants::Listed(ids) => ids.iter().any(|id| id.same_as(tenant)),
        }
    }

    /// Its `resources`, else the cloud's Graph (`graph`).
    fn may_request(&self, resource: &Resource, graph: &Resource) -> bool {
        match &self.resources {
            Some(list) => list.contains(resource),
            None => resource == graph,
        }
    }
}

/// A caller's value made safe for an error message: at most 64 characters,
/// control characters escaped.
fn shown(v: &str) -> String {
    v.chars()
        .take(64)
        .collect::<String>()
        .escape_debug()
        .to_string()
}

#[cfg(test)]
mod tests;
