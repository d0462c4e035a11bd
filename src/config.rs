//! The TOML configuration: its schema, defaults and validation.
//!
//! Validation happens in two steps. Each value is checked as it is parsed
//! (the newtypes below implement `TryFrom<String>`), so the TOML parser's error
//! names the key and its line. Rules that span keys (unique names, account
//! tenants that must exist, loopback-only listening) run afterwards in
//! `Config::validate` and name the key path, e.g. `accounts[1].tenants`.

use crate::cloud::Cloud;
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where `serve`, `token` and `check` look when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "config/tokenbroker.toml";

/// A configuration problem, naming the file and the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The configuration file.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The TOML did not parse, or a value is malformed (the parser names key and line).
    #[error("{path}: {message}")]
    Parse {
        /// The configuration file.
        path: PathBuf,
        /// The parser's message, with line, column and key.
        message: String,
    },
    /// A rule that spans several keys is broken.
    #[error("{path}: {key}: {message}")]
    Invalid {
        /// The configuration file.
        path: PathBuf,
        /// The key path, e.g. `accounts[0].tenants`.
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the daemon listens.
    #[serde(default)]
    pub server: ServerConfig,
    /// The Entra app registration.
    pub app: AppConfig,
    /// How tokens are cached and refreshed.
    #[serde(default)]
    pub cache: CacheConfig,
    /// Known customer tenants.
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    /// Local service accounts allowed to fetch tokens.
    #[serde(default)]
    pub accounts: Vec<AccountConfig>,
}

/// `[server]`: listeners and the Host allow-list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// TCP listen address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Must be `true` for a `listen` address that is not loopback.
    #[serde(default)]
    pub allow_remote: bool,
    /// Optional Unix socket; callers there are authenticated by peer uid.
    #[serde(default)]
    pub unix_socket: Option<PathBuf>,
    /// Host header allow-list (port ignored), the DNS-rebinding defence.
    #[serde(default = "default_allowed_hosts")]
    pub allowed_hosts: Vec<HostName>,
    /// Serve `/metrics` on this address only (instead of on `listen`).
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Connections served at once; more are closed on arrival.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A client must send its whole request head within this time.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: ConfigDuration,
    /// Largest request head (request line and headers) accepted, in bytes.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Longest query string accepted, in bytes.
    #[serde(default = "default_max_query_bytes")]
    pub max_query_bytes: usize,
    /// On SIGTERM, requests in flight get this long to finish.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: ConfigDuration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            allow_remote: false,
            unix_socket: None,
            allowed_hosts: default_allowed_hosts(),
            metrics_listen: None,
            max_connections: default_max_connections(),
            header_read_timeout: default_header_read_timeout(),
            max_header_bytes: default_max_header_bytes(),
            max_query_bytes: default_max_query_bytes(),
            shutdown_timeout: default_shutdown_timeout(),
        }
    }
}

fn default_max_connections() -> usize {
    1024
}
fn default_header_read_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(5))
}
fn default_max_header_bytes() -> usize {
    8192
}
fn default_max_query_bytes() -> usize {
    2048
}
fn default_shutdown_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8765))
}

fn default_allowed_hosts() -> Vec<HostName> {
    ["localhost", "127.0.0.1", "[::1]"]
        .into_iter()
        .map(|h| HostName(h.to_owned()))
        .collect()
}

/// `[app]`: the multi-tenant app registration and its certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// Application (client) ID.
    pub client_id: Guid,
    /// National cloud.
    #[serde(default)]
    pub cloud: Cloud,
    /// Overrides the cloud's authority host (tests, sovereign proxies).
    #[serde(default)]
    pub authority_host: Option<AuthorityHost>,
    /// PEM certificate (leaf first), DER certificate, or a PFX/PKCS#12 holding cert and key.
    pub certificate: PathBuf,
    /// PKCS#8 or PKCS#1 PEM private key; omit it with a PFX or a PEM that holds the key too.
    #[serde(default)]
    pub private_key: Option<PathBuf>,
    /// Name of the environment variable holding the key or PFX password.
    #[serde(default)]
    pub private_key_password_env: Option<EnvVarName>,
    /// Client assertion signature algorithm.
    #[serde(default)]
    pub signing: SigningAlgorithm,
    /// Extra trusted roots for the authority (TLS-inspecting proxies).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// TCP connect timeout towards the authority.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: ConfigDuration,
    /// Timeout for one whole token request towards the authority.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: ConfigDuration,
    /// Upper bound on token requests in flight to the authority, all tenants together.
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
}

fn default_max_concurrent_requests() -> usize {
    16
}

fn default_connect_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(3))
}

fn default_request_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}

impl AppConfig {
    /// The authority host in effect: the override, else the cloud's.
    pub fn authority_host(&self) -> &str {
        match &self.authority_host {
            Some(host) => host.as_str(),
            None => self.cloud.authority_host(),
        }
    }
}

/// `[cache]`: token cache tuning.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// A token is handed out only with at least this much life left.
    #[serde(default = "default_min_remaining")]
    pub min_remaining: ConfigDuration,
    /// A (tenant, resource) nobody asked for this long is dropped and no longer refreshed.
    #[serde(default = "default_keep_warm")]
    pub keep_warm: ConfigDuration,
    /// How long a permanent refusal from Entra is remembered.
    #[serde(default = "default_negative_ttl")]
    pub negative_ttl: ConfigDuration,
    /// Upper bound on cached (tenant, resource) entries.
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            min_remaining: default_min_remaining(),
            keep_warm: default_keep_warm(),
            negative_ttl: default_negative_ttl(),
            max_entries: default_max_entries(),
        }
    }
}

fn default_min_remaining() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(5 * 60))
}
fn default_keep_warm() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(24 * 3600))
}
fn default_negative_ttl() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}
fn default_max_entries() -> u64 {
    100_000
}

/// `[[tenants]]`: a customer tenant known in advance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Alias used by callers, logs and metrics.
    pub name: Name,
    /// Tenant GUID or verified domain.
    pub id: TenantId,
    /// Graph application permissions this tenant must have granted.
    #[serde(default)]
    pub required_permissions: Vec<Permission>,
}

/// `[[accounts]]`: a local service account allowed to fetch tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// Account name, used in logs and metrics.
    pub name: Name,
    /// SHA-256 (hex) of the account's secret.
    pub secret_sha256: Sha256Hex,
    /// Tenants the account may use: configured names, tenant ids, or `*`.
    pub tenants: Vec<String>,
    /// Resources the account may request; default: the cloud's Graph.
    #[serde(default)]
    pub resources: Option<Vec<Resource>>,
    /// Tenant for App Service-style calls that name none.
    #[serde(default)]
    pub default_tenant: Option<String>,
    /// Peer uids that authenticate as this account on the Unix socket.
    #[serde(default)]
    pub unix_uids: Vec<u32>,
}

/// Client assertion algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum SigningAlgorithm {
    /// RSASSA-PSS with SHA-256, header `x5t#S256` (what MSAL sends today).
    #[default]
    PS256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, header `x5t` (the older form).
    RS256,
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates `text`; `path` only names the file in errors and
    /// anchors relative certificate paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                path: path.to_owned(),
                key,
                message,
            })?;
        config.resolve_paths(path.parent().unwrap_or(Path::new("")));
        Ok(config)
    }

    /// Relative file paths are relative to the configuration file, so the
    /// daemon behaves the same whatever its working directory.
    fn resolve_paths(&mut self, base: &Path) {
        let app = &mut self.app;
        for path in [
            Some(&mut app.certificate),
            app.private_key.as_mut(),
            app.ca_file.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    /// The cross-key rules. Returns the key path and the message.
    fn validate(&self) -> Result<(), (String, String)> {
        let server = &self.server;
        if !server.listen.ip().is_loopback() && !server.allow_remote {
            return Err((
                "server.listen".into(),
                format!(
                    "{} is not a loopback address; tokens would be served to other hosts. \
                     Use 127.0.0.1 or [::1], or set server.allow_remote = true if that is intended",
                    server.listen
                ),
            ));
        }
        if let Some(metrics) = server.metrics_listen {
            if !metrics.ip().is_loopback() && !server.allow_remote {
                return Err((
                    "server.metrics_listen".into(),
                    format!(
                        "{metrics} is not a loopback address; set server.allow_remote = true to expose metrics to other hosts"
                    ),
                ));
            }
        }
        if server.max_connections == 0 {
            return Err(("server.max_connections".into(), "must be at least 1".into()));
        }
        if !(1024..=1024 * 1024).contains(&server.max_header_bytes) {
            return Err((
                "server.max_header_bytes".into(),
                "must be between 1024 and 1048576".into(),
            ));
        }
        if server.header_read_timeout.0.is_zero() {
            return Err((
                "server.header_read_timeout".into(),
                "must be more than zero: it is the slow-client defence".into(),
            ));
        }
        if server.allowed_hosts.is_empty() {
            return Err((
                "server.allowed_hosts".into(),
                "must list at least one host name (e.g. \"localhost\")".into(),
            ));
        }
        if self.cache.min_remaining.0 >= Duration::from_secs(3600) {
            return Err((
                "cache.min_remaining".into(),
                "must be under 1h: Entra tokens live 60-90 minutes".into(),
            ));
        }
        if self.app.max_concurrent_requests == 0 || self.app.max_concurrent_requests > 1024 {
            return Err((
                "app.max_concurrent_requests".into(),
                "must be between 1 and 1024".into(),
            ));
        }
        if self.cache.max_entries == 0 {
            return Err(("cache.max_entries".into(), "must be at least 1".into()));
        }

        let mut tenant_names = HashSet::new();
        let mut tenant_ids = HashSet::new();
        for (i, tenant) in self.tenants.iter().enumerate() {
            if !tenant_names.insert(tenant.name.as_str()) {
                return Err((
                    format!("tenants[{i}].name"),
                    format!(
                        "\"{}\" is used by two tenants; names must be unique",
                        tenant.name
                    ),
                ));
            }
            if !tenant_ids.insert(tenant.id.as_str().to_ascii_lowercase()) {
                return Err((
                    format!("tenants[{i}].id"),
                    format!(
                        "\"{}\" is configured twice; list each tenant once",
                        tenant.id
                    ),
                ));
            }
        }

        let mut account_names = HashSet::new();
        let mut secrets = HashSet::new();
        let mut uids = HashSet::new();
        for (i, account) in self.accounts.iter().enumerate() {
            if !account_names.insert(account.name.as_str()) {
                return Err((
                    format!("accounts[{i}].name"),
                    format!(
                        "\"{}\" is used by two accounts; names must be unique",
                        account.name
                    ),
                ));
            }
            if !secrets.insert(account.secret_sha256.as_str()) {
                return Err((
                    format!("accounts[{i}].secret_sha256"),
                    "is the same as another account's; give each account its own secret \
                     (`tokenbroker secret new --account NAME`)"
                        .into(),
                ));
            }
            for uid in &account.unix_uids {
                if !uids.insert(*uid) {
                    return Err((
                        format!("accounts[{i}].unix_uids"),
                        format!("uid {uid} is given to two accounts; a peer uid must map to one"),
                    ));
                }
            }
            if account.tenants.is_empty() {
                return Err((
                    format!("accounts[{i}].tenants"),
                    "is empty; list tenant names or ids, or \"*\" for any tenant".into(),
                ));
            }
            for entry in &account.tenants {
                if entry != "*" && self.resolve_tenant(entry).is_none() {
                    return Err((
                        format!("accounts[{i}].tenants"),
                        format!(
                            "\"{entry}\" is neither a configured tenant name, a tenant GUID or \
                             domain, nor \"*\""
                        ),
                    ));
                }
            }
            if let Some(default) = &account.default_tenant {
                let Some(tenant) = self.resolve_tenant(default) else {
                    return Err((
                        format!("accounts[{i}].default_tenant"),
                        format!(
                            "\"{default}\" is neither a configured tenant name nor a tenant \
                             GUID or domain"
                        ),
                    ));
                };
                if !self.account_may_use(account, &tenant) {
                    return Err((
                        format!("accounts[{i}].default_tenant"),
                        format!("\"{default}\" is not in this account's tenants"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Resolves a caller's or config's tenant reference: a configured name, or
    /// a syntactically valid tenant id (GUID or domain). `None` when it is neither.
    pub fn resolve_tenant(&self, reference: &str) -> Option<ResolvedTenant> {
        if let Some(t) = self.tenants.iter().find(|t| t.name.as_str() == reference) {
            return Some(ResolvedTenant {
                id: t.id.clone(),
                name: Some(t.name.clone()),
            });
        }
        let id = TenantId::try_from(reference.to_owned()).ok()?;
        let name = self
            .tenants
            .iter()
            .find(|t| t.id.as_str().eq_ignore_ascii_case(id.as_str()))
            .map(|t| t.name.clone());
        Some(ResolvedTenant { id, name })
    }

    /// Whether `account` may fetch tokens for `tenant`.
    pub fn account_may_use(&self, account: &AccountConfig, tenant: &ResolvedTenant) -> bool {
        account.tenants.iter().any(|entry| {
            entry == "*"
                || self.resolve_tenant(entry).is_some_and(|allowed| {
                    allowed.id.as_str().eq_ignore_ascii_case(tenant.id.as_str())
                })
        })
    }
}

/// A tenant reference resolved to its id (and configured name, if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTenant {
    /// Tenant GUID or domain, as it goes into the token URL.
    pub id: TenantId,
    /// The configured alias, when the tenant is configured.
    pub name: Option<Name>,
}

/// Defines a string newtype validated on deserialization.
macro_rules! validated_string {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(String);

        impl $name {
            /// The validated value.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(value: String) -> Result<Self, String> {
                let check: fn(&str) -> Result<(), String> = $check;
                check(&value)?;
                Ok($name(value))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

validated_string!(
    /// A GUID such as an application (client) ID.
    Guid,
    |v| {
        if is_guid(v) {
            Ok(())
        } else {
            Err(format!(
                "\"{v}\" is not a GUID; expected the form 00000000-0000-0000-0000-000000000000 \
                 (Entra admin center > App registrations > Application (client) ID)"
            ))
        }
    }
);

validated_string!(
    /// A tenant GUID or verified domain; safe to put in a URL path.
    TenantId,
    |v| check_tenant_id(v)
);

validated_string!(
    /// A tenant or account name: letters, digits, `-` and `_`, at most 64.
    Name,
    |v| {
        let ok = !v.is_empty()
            && v.len() <= 64
            && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(())
        } else {
            Err(format!(
                "\"{v}\" is not a valid name; use 1-64 letters, digits, '-' or '_'"
            ))
        }
    }
);

validated_string!(
    /// A SHA-256 digest as 64 hexadecimal characters.
    Sha256Hex,
    |v| {
        if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(())
        } else {
            Err(format!(
                "expected 64 hexadecimal characters (a SHA-256 digest), got {} characters; \
                 make one with `tokenbroker secret new --account NAME`",
                v.chars().count()
            ))
        }
    }
);

validated_string!(
    /// The name of an environment variable.
    EnvVarName,
    |v| {
        let ok = !v.is_empty()
            && !v.as_bytes()[0].is_ascii_digit()
            && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if ok {
            Ok(())
        } else {
            Err(format!(
                "\"{v}\" is not an environment variable name; use letters, digits and '_'"
            ))
        }
    }
);

validated_string!(
    /// A Graph application permission such as `Mail.ReadWrite`.
    Permission,
    |v| {
        let ok = v.len() <= 128
            && v.split('.').count() >= 2
            && v.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric()));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "\"{v}\" is not a Graph permission name; expected e.g. \"Mail.ReadWrite\""
            ))
        }
    }
);

validated_string!(
    /// A Host header name: `localhost`, a DNS name, an IPv4 address or `[IPv6]`.
    HostName,
    |v| {
        let ok = !v.is_empty()
            && v.len() <= 253
            && (v.starts_with('[') && v.ends_with(']') && v[1..v.len() - 1].parse::<std::net::Ipv6Addr>().is_ok()
                || v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "\"{v}\" is not a host name; expected e.g. \"localhost\", \"127.0.0.1\" or \"[::1]\" (no port)"
            ))
        }
    }
);

validated_string!(
    /// A token audience such as `https://graph.microsoft.com`.
    Resource,
    |v| check_resource(v)
);

validated_string!(
    /// An authority host URL: `https://host[:port]`, or plain http for loopback only.
    AuthorityHost,
    |v| check_authority_host(v)
);

/// Whether `v` is a GUID in the 8-4-4-4-12 form.
pub fn is_guid(v: &str) -> bool {
    let groups: Vec<&str> = v.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Checks a tenant GUID or verified domain. The value goes into the token
/// URL's path, so only DNS characters pass: no `/`, `..`, spaces or `%`.
pub fn check_tenant_id(v: &str) -> Result<(), String> {
    if is_guid(v) {
        return Ok(());
    }
    if ["common", "organizations", "consumers"].contains(&v.to_ascii_lowercase().as_str()) {
        return Err(format!(
            "\"{v}\" is a multi-tenant alias; app-only tokens need the customer's tenant GUID or verified domain"
        ));
    }
    let labels: Vec<&str> = v.split('.').collect();
    let ok = v.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.bytes().any(|b| b.is_ascii_alphabetic()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "\"{}\" is not a tenant GUID or domain name; expected e.g. \
             \"contoso.onmicrosoft.com\" or 00000000-0000-0000-0000-000000000000",
            v.escape_debug()
        ))
    }
}

fn check_resource(v: &str) -> Result<(), String> {
    // The URL parser silently drops tabs and newlines; the value also goes
    // into the scope and log lines, so only visible ASCII passes.
    if v.is_empty() || v.len() > 256 || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "\"{}\" is not a resource URL: use at most 256 visible ASCII characters, e.g. https://graph.microsoft.com",
            v.escape_debug()
        ));
    }
    let url = url::Url::parse(v).map_err(|_| format!("\"{v}\" is not an absolute URL"))?;
    if url.scheme() != "https" || url.host_str().is_none() {
        return Err(format!(
            "\"{v}\" must be an https:// URL such as https://graph.microsoft.com"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() || v.ends_with("/.default") {
        return Err(format!(
            "\"{v}\" must be a bare resource such as https://graph.microsoft.com (no /.default, query or fragment)"
        ));
    }
    Ok(())
}

fn check_authority_host(v: &str) -> Result<(), String> {
    let url = url::Url::parse(v).map_err(|_| format!("\"{v}\" is not an absolute URL"))?;
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" if !host.is_empty() => {}
        "http" if loopback => {}
        "http" => {
            return Err(format!(
                "\"{v}\": plain http is allowed only for loopback hosts (a local test authority); use https"
            ))
        }
        _ => return Err(format!("\"{v}\" must be an https:// URL such as https://login.microsoftonline.com")),
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "\"{v}\" must be scheme and host only, e.g. https://login.microsoftonline.com"
        ));
    }
    Ok(())
}

/// A duration written like `"5m"`, `"30s"`, `"1h 30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ConfigDuration(pub Duration);

impl TryFrom<String> for ConfigDuration {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        humantime::parse_duration(&value)
            .map(ConfigDuration)
            .map_err(|e| {
                format!(
                    "\"{value}\" is not a duration ({e}); write e.g. \"30s\", \"5m\" or \"24h\""
                )
            })
    }
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[app]
client_id = "11111111-2222-3333-4444-555555555555"
certificate = "cert.pem"
private_key = "key.pem"
"#;

    const HASH_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const HASH_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/tokenbroker/tokenbroker.toml"))
    }

    /// Parses `text` expecting failure; returns the message.
    fn error(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    fn with_tenants_and_accounts(tenants: &str, accounts: &str) -> String {
        format!("{MINIMAL}\n{tenants}\n{accounts}")
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:8765".parse().unwrap());
        assert!(!config.server.allow_remote);
        let hosts: Vec<&str> = config
            .server
            .allowed_hosts
            .iter()
            .map(HostName::as_str)
            .collect();
        assert_eq!(hosts, ["localhost", "127.0.0.1", "[::1]"]);
        assert_eq!(config.app.cloud, Cloud::Global);
        assert_eq!(config.app.signing, SigningAlgorithm::PS256);
        assert_eq!(
            config.app.authority_host(),
            "https://login.microsoftonline.com"
        );
        assert_eq!(config.app.connect_timeout.0, Duration::from_secs(3));
        assert_eq!(config.app.request_timeout.0, Duration::from_secs(10));
        assert_eq!(config.cache.min_remaining.0, Duration::from_secs(300));
        assert_eq!(config.cache.keep_warm.0, Duration::from_secs(86_400));
        assert_eq!(config.cache.negative_ttl.0, Duration::from_secs(30));
        assert_eq!(config.cache.max_entries, 100_000);
        // Relative paths are anchored at the configuration file's directory.
        assert_eq!(
            config.app.certificate,
            Path::new("/etc/tokenbroker/cert.pem")
        );
        assert_eq!(
            config.app.private_key.as_deref(),
            Some(Path::new("/etc/tokenbroker/key.pem"))
        );
    }

    #[test]
    fn the_example_configuration_is_valid() {
        let text = include_str!("../config/tokenbroker.example.toml");
        let config = parse(text).unwrap();
        assert!(!config.tenants.is_empty());
        assert!(!config.accounts.is_empty());
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_line() {
        let message = error(&format!("{MINIMAL}\nclient_secret = \"x\"\n"));
        assert!(
            message.contains("unknown field `client_secret`"),
            "{message}"
        );
        assert!(message.contains("line 7"), "{message}");
        let message = error(&format!(
            "[server]\nlisten = \"127.0.0.1:1\"\nport = 3\n{MINIMAL}"
        ));
        assert!(message.contains("unknown field `port`"), "{message}");
        assert!(message.contains("line 3"), "{message}");
    }

    #[test]
    fn missing_required_keys_are_named() {
        let message = error("[app]\ncertificate = \"c.pem\"\n");
        assert!(message.contains("missing field `client_id`"), "{message}");
        let message = error("[server]\n");
        assert!(message.contains("missing field `app`"), "{message}");
    }

    #[test]
    fn client_id_must_be_a_guid() {
        for bad in [
            "contoso",
            "11111111-2222-3333-4444-55555555555",
            "11111111222233334444555555555555",
            "{11111111-2222-3333-4444-555555555555}",
            "g1111111-2222-3333-4444-555555555555",
        ] {
            let message = error(&MINIMAL.replace("11111111-2222-3333-4444-555555555555", bad));
            assert!(message.contains("is not a GUID"), "{bad}: {message}");
            assert!(message.contains("client_id"), "{bad}: {message}");
            assert!(message.contains("line 3"), "{bad}: {message}");
        }
    }

    #[test]
    fn tenant_id_is_a_guid_or_a_domain() {
        for good in [
            "contoso.onmicrosoft.com",
            "fabrikam.com",
            "0a1b2c3d-0000-4000-8000-00000000000f",
            "xn--bcher-kva.example",
        ] {
            let text = with_tenants_and_accounts(
                &format!("[[tenants]]\nname = \"t\"\nid = \"{good}\"\n"),
                "",
            );
            assert!(parse(&text).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("contoso", "not a tenant GUID or domain"),
            ("../etc/passwd", "not a tenant GUID or domain"),
            ("contoso.com/x", "not a tenant GUID or domain"),
            ("contoso .com", "not a tenant GUID or domain"),
            ("contoso%2ecom", "not a tenant GUID or domain"),
            ("-bad.example.com", "not a tenant GUID or domain"),
            ("common", "multi-tenant alias"),
            ("organizations", "multi-tenant alias"),
        ] {
            let text = with_tenants_and_accounts(
                &format!("[[tenants]]\nname = \"t\"\nid = \"{bad}\"\n"),
                "",
            );
            let message = error(&text);
            assert!(message.contains(why), "{bad}: {message}");
            assert!(message.contains("id"), "{bad}: {message}");
        }
        let long = format!("{}.com", "a".repeat(250));
        let message = error(&with_tenants_and_accounts(
            &format!("[[tenants]]\nname = \"t\"\nid = \"{long}\"\n"),
            "",
        ));
        assert!(message.contains("not a tenant GUID or domain"), "{message}");
    }

    #[test]
    fn secret_sha256_must_be_64_hex_characters() {
        for bad in ["abc", &"g".repeat(64), &"a".repeat(65)] {
            let text = with_tenants_and_accounts(
                "",
                &format!(
                    "[[accounts]]\nname = \"a\"\nsecret_sha256 = \"{bad}\"\ntenants = [\"*\"]\n"
                ),
            );
            let message = error(&text);
            assert!(
                message.contains("expected 64 hexadecimal characters"),
                "{bad}: {message}"
            );
            assert!(message.contains("secret_sha256"), "{bad}: {message}");
        }
    }

    #[test]
    fn account_tenants_refer_to_names_ids_or_star() {
        let tenants = "[[tenants]]\nname = \"contoso\"\nid = \"contoso.onmicrosoft.com\"\n";
        let ok = with_tenants_and_accounts(
            tenants,
            &format!("[[accounts]]\nname = \"a\"\nsecret_sha256 = \"{HASH_A}\"\ntenants = [\"contoso\", \"fabrikam.com\", \"0a1b2c3d-0000-4000-8000-00000000000f\"]\n[[accounts]]\nname = \"b\"\nsecret_sha256 = \"{HASH_B}\"\ntenants = [\"*\"]\n"),
        );
        let config = parse(&ok).unwrap();
        let a = &config.accounts[0];
        let contoso = config.resolve_tenant("contoso").unwrap();
        assert_eq!(contoso.id.as_str(), "contoso.onmicrosoft.com");
        assert!(config.account_may_use(a, &contoso));
        assert!(config.account_may_use(
            a,
            &config.resolve_tenant("CONTOSO.onmicrosoft.com").unwrap()
        ));
        assert!(!config.account_may_use(a, &config.resolve_tenant("other.com").unwrap()));
        assert!(config.account_may_use(
            &config.accounts[1],
            &config.resolve_tenant("other.com").unwrap()
        ));

        let message = error(&with_tenants_and_accounts(
            tenants,
            &format!("[[accounts]]\nname = \"a\"\nsecret_sha256 = \"{HASH_A}\"\ntenants = [\"contso\"]\n"),
        ));
        assert!(message.contains("accounts[0].tenants"), "{message}");
        assert!(
            message.contains("\"contso\" is neither a configured tenant name"),
            "{message}"
        );
        let message = error(&with_tenants_and_accounts(
            tenants,
            &format!("[[accounts]]\nname = \"a\"\nsecret_sha256 = \"{HASH_A}\"\ntenants = []\n"),
        ));
        assert!(
            message.contains("accounts[0].tenants: is empty"),
            "{message}"
        );
    }

    #[test]
    fn default_tenant_must_be_one_of_the_accounts_tenants() {
        let tenants = "[[tenants]]\nname = \"contoso\"\nid = \"contoso.onmicrosoft.com\"\n[[tenants]]\nname = \"fabrikam\"\nid = \"fabrikam.com\"\n";
        let account = |default: &str| {
            format!("[[accounts]]\nname = \"a\"\nsecret_sha256 = \"{HASH_A}\"\ntenants = [\"contoso\"]\ndefault_tenant = \"{default}\"\n")
        };
        assert!(parse(&with_tenants_and_accounts(tenants, &account("contoso"))).is_ok());
        assert!(parse(&with_tenants_and_accounts(
            tenants,
            &account("contoso.onmicrosoft.com")
        ))
        .is_ok());
        let message = error(&with_tenants_and_accounts(tenants, &account("fabrikam")));
        assert!(
            message.contains(
                "accounts[0].default_tenant: \"fabrikam\" is not in this account's tenants"
            ),
            "{message}"
        );
        let message = error(&with_tenants_and_accounts(tenants, &account("nope")));
        assert!(message.contains("accounts[0].default_tenant"), "{message}");
    }

    #[test]
    fn names_are_unique() {
        let message = error(&with_tenants_and_accounts(
            "[[tenants]]\nname = \"c\"\nid = \"a.com\"\n[[tenants]]\nname = \"c\"\nid = \"b.com\"\n",
            "",
        ));
        assert!(
            message.contains("tenants[1].name: \"c\" is used by two tenants"),
            "{message}"
        );
        let message = error(&with_tenants_and_accounts(
            "[[tenants]]\nname = \"c\"\nid = \"a.com\"\n[[tenants]]\nname = \"d\"\nid = \"A.com\"\n",
            "",
        ));
        assert!(
            message.contains("tenants[1].id: \"A.com\" is configured twice"),
            "{message}"
        );
        let message = error(&with_tenants_and_accounts(
            "",
            &format!("[[accounts]]\nname = \"a\"\nsecret_sha256 = \"{HASH_A}\"\ntenants = [\"*\"]\n[[accounts]]\nname = \"a\"\nsecret_sha256 = \"{HASH_B}\"\ntenants = [\"*\"]\n"),
        ));
        assert!(
            message.contains("accounts[1].name: \"a\" is used by two accounts"),
            "{message}"
        );
        let message = error(&with_tenants_and_accounts(
            "",
            &format!("[[accounts]]\nname = \"a\"\nsecret_sha256 = \"{HASH_A}\"\ntenants = [\"*\"]\n[[accounts]]\nname = \"b\"\nsecret_sha256 = \"{HASH_A}\"\ntenants = [\"*\"]\n"),
        ));
        assert!(
            message.contains("accounts[1].secret_sha256: is the same as another account's"),
            "{message}"
        );
        let message = error(&with_tenants_and_accounts(
            "",
            &format!("[[accounts]]\nname = \"a\"\nsecret_sha256 = \"{HASH_A}\"\ntenants = [\"*\"]\nunix_uids = [1001]\n[[accounts]]\nname = \"b\"\nsecret_sha256 = \"{HASH_B}\"\ntenants = [\"*\"]\nunix_uids = [1001]\n"),
        ));
        assert!(
            message.contains("accounts[1].unix_uids: uid 1001 is given to two accounts"),
            "{message}"
        );
        let message = error(&with_tenants_and_accounts(
            "[[tenants]]\nname = \"has space\"\nid = \"a.com\"\n",
            "",
        ));
        assert!(
            message.contains("\"has space\" is not a valid name"),
            "{message}"
        );
    }

    #[test]
    fn non_loopback_listen_needs_allow_remote() {
        let message = error(&format!("[server]\nlisten = \"0.0.0.0:8765\"\n{MINIMAL}"));
        assert!(
            message.contains("server.listen: 0.0.0.0:8765 is not a loopback address"),
            "{message}"
        );
        assert!(message.contains("allow_remote = true"), "{message}");
        let config = parse(&format!(
            "[server]\nlisten = \"0.0.0.0:8765\"\nallow_remote = true\n{MINIMAL}"
        ))
        .unwrap();
        assert!(config.server.allow_remote);
        assert!(parse(&format!("[server]\nlisten = \"[::1]:8765\"\n{MINIMAL}")).is_ok());
        let message = error(&format!("[server]\nlisten = \"localhost:8765\"\n{MINIMAL}"));
        assert!(message.contains("listen"), "{message}");
        let message = error(&format!(
            "[server]\nallowed_hosts = [\"evil.com:80\"]\n{MINIMAL}"
        ));
        assert!(message.contains("is not a host name"), "{message}");
        let message = error(&format!("[server]\nallowed_hosts = []\n{MINIMAL}"));
        assert!(
            message.contains("server.allowed_hosts: must list at least one host name"),
            "{message}"
        );
    }

    #[test]
    fn durations_parse() {
        let config = parse(&format!("{MINIMAL}\nconnect_timeout = \"1500ms\"\n[cache]\nmin_remaining = \"10m\"\nkeep_warm = \"1h 30m\"\nnegative_ttl = \"45s\"\n")).unwrap();
        assert_eq!(config.app.connect_timeout.0, Duration::from_millis(1500));
        assert_eq!(config.cache.min_remaining.0, Duration::from_secs(600));
        assert_eq!(config.cache.keep_warm.0, Duration::from_secs(5400));
        assert_eq!(config.cache.negative_ttl.0, Duration::from_secs(45));
        let message = error(&format!("{MINIMAL}\n[cache]\nkeep_warm = \"soon\"\n"));
        assert!(message.contains("\"soon\" is not a duration"), "{message}");
        assert!(message.contains("keep_warm"), "{message}");
        let message = error(&format!("{MINIMAL}\n[cache]\nmin_remaining = 300\n"));
        assert!(message.contains("min_remaining"), "{message}");
        let message = error(&format!("{MINIMAL}\n[cache]\nmin_remaining = \"2h\"\n"));
        assert!(
            message.contains("cache.min_remaining: must be under 1h"),
            "{message}"
        );
    }

    #[test]
    fn cloud_signing_and_authority_host_are_checked() {
        let config = parse(&format!(
            "{MINIMAL}cloud = \"usgov-dod\"\nsigning = \"RS256\"\n"
        ))
        .unwrap();
        assert_eq!(config.app.cloud, Cloud::UsgovDod);
        assert_eq!(config.app.signing, SigningAlgorithm::RS256);
        let message = error(&format!("{MINIMAL}cloud = \"mars\"\n"));
        assert!(message.contains("unknown variant `mars`"), "{message}");
        let message = error(&format!("{MINIMAL}signing = \"HS256\"\n"));
        assert!(message.contains("unknown variant `HS256`"), "{message}");
        let config = parse(&format!(
            "{MINIMAL}authority_host = \"http://127.0.0.1:9000\"\n"
        ))
        .unwrap();
        assert_eq!(config.app.authority_host(), "http://127.0.0.1:9000");
        let message = error(&format!(
            "{MINIMAL}authority_host = \"http://login.example.com\"\n"
        ));
        assert!(
            message.contains("plain http is allowed only for loopback hosts"),
            "{message}"
        );
        let message = error(&format!(
            "{MINIMAL}authority_host = \"https://login.example.com/tenant\"\n"
        ));
        assert!(
            message.contains("must be scheme and host only"),
            "{message}"
        );
        let message = error(&format!("{MINIMAL}private_key_password_env = \"MY-VAR\"\n"));
        assert!(
            message.contains("is not an environment variable name"),
            "{message}"
        );
    }

    #[test]
    fn resources_and_permissions_are_checked() {
        let account = |resources: &str| {
            with_tenants_and_accounts("", &format!("[[accounts]]\nname = \"a\"\nsecret_sha256 = \"{HASH_A}\"\ntenants = [\"*\"]\nresources = [{resources}]\n"))
        };
        assert!(parse(&account("\"https://graph.microsoft.com\"")).is_ok());
        let message = error(&account("\"https://graph.microsoft.com/.default\""));
        assert!(message.contains("must be a bare resource"), "{message}");
        let message = error(&account("\"http://graph.microsoft.com\""));
        assert!(message.contains("must be an https:// URL"), "{message}");
        let message = error(&with_tenants_and_accounts(
            "[[tenants]]\nname = \"t\"\nid = \"a.com\"\nrequired_permissions = [\"Mail Send\"]\n",
            "",
        ));
        assert!(
            message.contains("is not a Graph permission name"),
            "{message}"
        );
    }

    #[test]
    fn unreadable_file_is_named() {
        let message = Config::load(Path::new("/nonexistent/tokenbroker.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("cannot read configuration file /nonexistent/tokenbroker.toml"),
            "{message}"
        );
    }
}
