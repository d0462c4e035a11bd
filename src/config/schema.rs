//! The configuration file's shape: one struct per table, with the
//! documented defaults (`config/tokenbroker.example.toml` lists them all).
//! Tables whose every key has a default take them from their `Default`
//! impl (container-level `#[serde(default)]`), so each default is written once.

use super::types::{
    AppKey, AuthorityHost, ConfigDuration, EnvVarName, Guid, HostName, Name, Permission, Resource,
    SecretHashes, TenantId, TenantRef,
};
use crate::cloud::Cloud;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    /// A lone `[app]`: gathered into `apps` as the app named "default"
    /// when the file is parsed, so nothing reads it after.
    #[serde(default, rename = "app")]
    pub(super) single_app: Option<AppConfig>,
    /// The Entra app registrations (`[[apps]]`, or the lone `[app]`), in
    /// file order; the first is the default. Never empty once parsed.
    #[serde(default)]
    pub apps: Vec<AppConfig>,
    #[serde(default)]
    pub cache: CacheConfig,
    /// Customer tenants known in advance (aliases, prefetch, permissions).
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    /// Local service accounts allowed to fetch tokens.
    #[serde(default)]
    pub accounts: Vec<AccountConfig>,
    /// The fleet's shared token cache on Redis; without it each host caches alone.
    #[serde(default)]
    pub shared_cache: Option<SharedCacheConfig>,
    /// The Graph gateway's limits.
    #[serde(default)]
    pub graph: GraphConfig,
    /// Files the daemon keeps a current token in, for callers that can only read a file.
    #[serde(default)]
    pub token_files: Vec<TokenFileConfig>,
}

/// `[[token_files]]`: a file kept holding a current token of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFileConfig {
    /// The file, replaced whole (rename) whenever the token changes.
    pub path: PathBuf,
    /// A configured tenant name, or a tenant GUID or domain.
    pub tenant: TenantRef,
    /// The app whose token the file holds (default: the first app).
    #[serde(default)]
    pub app: Option<Name>,
    /// The audience; default: the cloud's Graph.
    #[serde(default)]
    pub resource: Option<Resource>,
    #[serde(default)]
    pub format: TokenFileFormat,
    /// Octal, as a string (`"0640"`); checked by validation, which names the key.
    #[serde(default = "TokenFileConfig::default_mode")]
    pub mode: String,
    /// The file's group, through the name service (the owner stays the daemon's user).
    #[serde(default)]
    pub group: Option<String>,
}

impl TokenFileConfig {
    fn default_mode() -> String {
        "0600".into()
    }

    /// The permission bits of `mode` (validated at load).
    pub fn mode_bits(&self) -> Result<u32, String> {
        super::types::parse_file_mode(&self.mode)
    }
}

/// What a token file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenFileFormat {
    /// The access token alone, no newline.
    #[default]
    Token,
    /// `{"access_token", "expires_on", "tenant_id", "resource"}`.
    Json,
}

impl TokenFileFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenFileFormat::Token => "token",
            TokenFileFormat::Json => "json",
        }
    }
}

/// `[graph]`: the Graph gateway's limits (`/graph/{tenant}/{version}/…`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphConfig {
    /// Largest request body forwarded (bigger: 413).
    pub max_request_bytes: u64,
    /// Largest JSON answer whose links are rewritten to the gateway (bigger
    /// ones pass unchanged, counted).
    pub max_rewrite_bytes: u64,
    /// The longest wait for Graph's answer to begin, and for each next
    /// piece of its body (a download may take as long as it streams).
    pub timeout: ConfigDuration,
    /// How long a mailbox looked up in the directory is remembered.
    pub directory_ttl: ConfigDuration,
}

impl Default for GraphConfig {
    fn default() -> Self {
        GraphConfig {
            max_request_bytes: 32 * 1024 * 1024,
            max_rewrite_bytes: 16 * 1024 * 1024,
            timeout: ConfigDuration(Duration::from_secs(100)),
            directory_ttl: ConfigDuration(Duration::from_secs(3600)),
        }
    }
}

/// `[shared_cache]`: hosts share one encrypted token cache on Redis.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedCacheConfig {
    /// `redis://` or `rediss://` URL of a standalone server (or a proxy).
    #[serde(default)]
    pub url: Option<String>,
    /// Seed URLs of a Redis Cluster (instead of `url`).
    #[serde(default)]
    pub urls: Vec<String>,
    /// The AES-256 key values are sealed with (`tokenbroker cache-key new`).
    pub key_file: PathBuf,
    /// Keys still read (never written) during a key rotation.
    #[serde(default)]
    pub old_key_files: Vec<PathBuf>,
    /// Redis ACL user name, from this environment variable or file.
    #[serde(default)]
    pub username_env: Option<EnvVarName>,
    #[serde(default)]
    pub username_file: Option<PathBuf>,
    /// Redis password, from this environment variable or file.
    #[serde(default)]
    pub password_env: Option<EnvVarName>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The roots `rediss://` trusts, in place of the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Prefix of every key this app writes.
    #[serde(default = "SharedCacheConfig::default_prefix")]
    pub prefix: String,
    /// Per Redis operation: past it the host goes on alone.
    #[serde(default = "SharedCacheConfig::default_timeout")]
    pub timeout: ConfigDuration,
    /// Cross-host single flight: how long one host may hold a fetch.
    #[serde(default = "SharedCacheConfig::default_lease")]
    pub lease: ConfigDuration,
}

impl SharedCacheConfig {
    fn default_prefix() -> String {
        "tokenbroker".into()
    }

    fn default_timeout() -> ConfigDuration {
        ConfigDuration(Duration::from_millis(250))
    }

    fn default_lease() -> ConfigDuration {
        ConfigDuration(Duration::from_secs(15))
    }

    /// The URLs to connect to: the one `url`, or the cluster's seeds.
    pub fn seeds(&self) -> Vec<&str> {
        match &self.url {
            Some(url) => vec![url.as_str()],
            None => self.urls.iter().map(String::as_str).collect(),
        }
    }

    /// Whether `urls` names a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.url.is_none()
    }
}

/// `[server]`: listeners, limits and the Host allow-list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// TCP listen address; loopback unless `allow_remote`.
    pub listen: SocketAddr,
    pub allow_remote: bool,
    /// Callers here are also known by their peer uid.
    pub unix_socket: Option<PathBuf>,
    /// Host header allow-list (port ignored): the DNS-rebinding defence.
    pub allowed_hosts: Vec<HostName>,
    /// Serve `/metrics` only here instead of on `listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// TCP connections served at once; at the cap a new one displaces the
    /// oldest that has not presented a valid credential.
    pub max_connections: usize,
    /// The same for the Unix socket, which has a budget of its own.
    pub max_socket_connections: usize,
    /// Most TCP connections one account holds (default: half of
    /// `max_connections`); past it its own oldest idle one is closed.
    pub max_connections_per_account: Option<usize>,
    /// A keep-alive connection with no request for this long is closed.
    pub idle_timeout: ConfigDuration,
    /// A client must send its whole request head within this time.
    pub header_read_timeout: ConfigDuration,
    /// Largest request head accepted, in bytes.
    pub max_header_bytes: usize,
    pub max_query_bytes: usize,
    /// On SIGTERM, requests in flight get this long to finish.
    pub shutdown_timeout: ConfigDuration,
    /// The admin API's Unix socket (off unless set).
    pub admin_socket: Option<PathBuf>,
    /// Group that owns the admin socket (mode 0660), so its members may use it.
    pub admin_group: Option<Name>,
    /// Uids allowed on the admin socket besides root and the daemon's own.
    pub admin_uids: Vec<u32>,
    /// Reload when the configuration file's content changes (checked every
    /// `app.credential_check_interval`), as if SIGHUP had been sent.
    pub watch_config: bool,
}

impl ServerConfig {
    /// `max_connections_per_account`, or half of `max_connections`.
    pub fn connections_per_account(&self) -> usize {
        self.max_connections_per_account
            .unwrap_or(self.max_connections.div_ceil(2))
            .max(1)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8765)),
            allow_remote: false,
            unix_socket: None,
            allowed_hosts: HostName::defaults(),
            metrics_listen: None,
            max_connections: 1024,
            max_socket_connections: 256,
            max_connections_per_account: None,
            idle_timeout: ConfigDuration(Duration::from_secs(60)),
            header_read_timeout: ConfigDuration(Duration::from_secs(5)),
            max_header_bytes: 8192,
            max_query_bytes: 2048,
            shutdown_timeout: ConfigDuration(Duration::from_secs(10)),
            admin_socket: None,
            admin_group: None,
            admin_uids: Vec::new(),
            watch_config: false,
        }
    }
}

/// `[app]`: the multi-tenant app registration and its certificates.
///
/// `client_id` has no default, so this table cannot take its defaults from
/// a `Default` impl: its tuning keys name theirs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// What accounts, tenants, token files, `?app=` and labels call the app
    /// (a lone `[app]` is "default").
    #[serde(default = "AppConfig::default_name")]
    pub name: Name,
    /// Where the app's keys are in the file (`app` or `apps[N]`): errors
    /// name keys by it. Set when the file is parsed.
    #[serde(skip)]
    pub key: String,
    /// Application (client) ID.
    pub client_id: Guid,
    #[serde(default)]
    pub cloud: Cloud,
    /// Overrides the cloud's authority host (tests, sovereign proxies).
    #[serde(default)]
    pub authority_host: Option<AuthorityHost>,
    /// Overrides where Graph requests go (tests; http only for loopback);
    /// the token's resource stays the cloud's Graph.
    #[serde(default)]
    pub graph_host: Option<AuthorityHost>,
    /// PEM certificate (leaf first), DER certificate, or a PFX holding cert
    /// and key: the one credential, when `credentials` is not used.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    /// PKCS#8 or PKCS#1 PEM key; omitted with a PFX or a PEM holding the key too.
    #[serde(default)]
    pub private_key: Option<PathBuf>,
    /// The environment variable holding the key or PFX password.
    #[serde(default)]
    pub private_key_password_env: Option<EnvVarName>,
    /// A file holding the key or PFX password (systemd `LoadCredential=`).
    #[serde(default)]
    pub private_key_password_file: Option<PathBuf>,
    /// Several credentials, for rotation (instead of `certificate`).
    #[serde(default)]
    pub credentials: Vec<CredentialConfig>,
    /// Credential files (and, with `server.watch_config`, the configuration)
    /// whose content changed are picked up within this.
    #[serde(default = "AppConfig::default_credential_check_interval")]
    pub credential_check_interval: ConfigDuration,
    /// How long a credential Entra refused for a tenant (AADSTS700027) is
    /// passed over for that tenant.
    #[serde(default = "AppConfig::default_credential_rejection_memory")]
    pub credential_rejection_memory: ConfigDuration,
    #[serde(default)]
    pub signing: SigningAlgorithm,
    /// Extra trusted roots for the authority (TLS-inspecting proxies).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "AppConfig::default_connect_timeout")]
    pub connect_timeout: ConfigDuration,
    /// Timeout for one whole token request towards the authority.
    #[serde(default = "AppConfig::default_request_timeout")]
    pub request_timeout: ConfigDuration,
    /// Token requests in flight to the authority, all tenants together.
    #[serde(default = "AppConfig::default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
}

impl AppConfig {
    fn default_name() -> Name {
        Name::default_app()
    }

    fn default_connect_timeout() -> ConfigDuration {
        ConfigDuration(Duration::from_secs(3))
    }

    fn default_request_timeout() -> ConfigDuration {
        ConfigDuration(Duration::from_secs(10))
    }

    fn default_max_concurrent_requests() -> usize {
        16
    }

    fn default_credential_check_interval() -> ConfigDuration {
        ConfigDuration(Duration::from_secs(60))
    }

    fn default_credential_rejection_memory() -> ConfigDuration {
        ConfigDuration(Duration::from_secs(600))
    }

    /// The credentials in file order: `credentials`, or the one that
    /// `certificate` and its companion keys name.
    pub fn credential_configs(&self) -> Vec<CredentialConfig> {
        match &self.certificate {
            Some(certificate) if self.credentials.is_empty() => vec![CredentialConfig {
                certificate: Some(certificate.clone()),
                private_key: self.private_key.clone(),
                password_env: self.private_key_password_env.clone(),
                password_file: self.private_key_password_file.clone(),
                pkcs11: None,
                federated_token_file: None,
                federated_managed_identity: None,
            }],
            _ => self.credentials.clone(),
        }
    }

    /// What its tokens are cached under.
    pub fn app_key(&self) -> AppKey {
        AppKey {
            name: self.name.clone(),
            client_id: self.client_id.clone(),
        }
    }

    /// The authority host in effect: the override, else the cloud's.
    pub fn authority_host(&self) -> &str {
        match &self.authority_host {
            Some(host) => host.as_str(),
            None => self.cloud.authority_host(),
        }
    }

    /// The cloud's Microsoft Graph resource: the default audience.
    pub fn graph(&self) -> Resource {
        Resource::graph(self.cloud)
    }
}

/// `[[app.credentials]]`: one credential: a certificate and key (files, or
/// the key in a PKCS#11 token), or a federated one (a token file, or the
/// host's managed identity).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    /// PEM certificate (leaf first), DER certificate, or a PFX holding cert and key.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    #[serde(default)]
    pub private_key: Option<PathBuf>,
    /// The environment variable holding the key or PFX password.
    #[serde(default)]
    pub password_env: Option<EnvVarName>,
    /// A file holding the key or PFX password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The key is in a PKCS#11 token (HSM); `certificate` is its certificate.
    #[serde(default)]
    pub pkcs11: Option<Pkcs11Config>,
    /// Workload identity federation: a token file (Kubernetes' projected
    /// service-account token), re-read for every assertion.
    #[serde(default)]
    pub federated_token_file: Option<PathBuf>,
    /// The host's managed identity as a federated credential.
    #[serde(default)]
    pub federated_managed_identity: Option<ManagedIdentityConfig>,
}

/// `pkcs11 = { module, token, key_label, pin_env }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// The PKCS#11 library (`/usr/lib/softhsm/libsofthsm2.so`, an HSM vendor's).
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// The private key's label (`CKA_LABEL`).
    pub key_label: String,
    /// The environment variable holding the user PIN.
    pub pin_env: EnvVarName,
}

/// `federated_managed_identity = { client_id, endpoint, protocol, header_env }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagedIdentityConfig {
    /// A user-assigned identity's client ID; none for the system-assigned one.
    #[serde(default)]
    pub client_id: Option<Guid>,
    /// IMDS's base URL (default `http://169.254.169.254`), or with
    /// `protocol = "app-service"` the full token URL.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub protocol: ManagedIdentityProtocol,
    /// With `app-service`: the variable holding the `X-IDENTITY-HEADER` secret.
    #[serde(default)]
    pub header_env: Option<EnvVarName>,
}

/// How the managed-identity endpoint is spoken to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ManagedIdentityProtocol {
    /// Azure VM Instance Metadata Service (`Metadata: true`).
    #[default]
    Imds,
    /// App Service / Functions (`X-IDENTITY-HEADER`).
    AppService,
}

/// `[cache]`: token cache tuning.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// A token is handed out only with at least this much life left.
    pub min_remaining: ConfigDuration,
    /// A (tenant, resource) nobody asked for this long is dropped.
    pub keep_warm: ConfigDuration,
    /// How long a refusal from Entra is remembered.
    pub negative_ttl: ConfigDuration,
    /// Upper bound on cached (tenant, resource) entries.
    pub max_entries: u64,
    /// No caller waits longer than this for a token load (it goes on for
    /// later callers; this one gets 504).
    pub load_timeout: ConfigDuration,
    /// At most one refresh forced by `token_sha256_to_refresh` per
    /// (tenant, resource) in this time.
    pub forced_refresh_interval: ConfigDuration,
    /// A configured tenant whose last fetch failed is retried in the
    /// background after 1 minute, doubling to at most this.
    pub failed_retry_max: ConfigDuration,
    /// Where cached tokens and known tenants are kept across restarts
    /// (sealed); unset: each start begins empty.
    pub state_file: Option<PathBuf>,
    /// The 32-byte key sealing `state_file` (`tokenbroker cache-key new`).
    pub state_key_file: Option<PathBuf>,
    /// How often `state_file` is rewritten when something changed.
    pub state_interval: ConfigDuration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            min_remaining: ConfigDuration(Duration::from_secs(5 * 60)),
            keep_warm: ConfigDuration(Duration::from_secs(24 * 3600)),
            negative_ttl: ConfigDuration(Duration::from_secs(30)),
            max_entries: 100_000,
            load_timeout: ConfigDuration(Duration::from_secs(20)),
            forced_refresh_interval: ConfigDuration(Duration::from_secs(30)),
            failed_retry_max: ConfigDuration(Duration::from_secs(15 * 60)),
            state_file: None,
            state_key_file: None,
            state_interval: ConfigDuration(Duration::from_secs(60)),
        }
    }
}

/// `[[tenants]]`: a customer tenant known in advance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Alias used by callers, logs and metrics.
    pub name: Name,
    pub id: TenantId,
    /// Graph application permissions this tenant must have granted.
    #[serde(default)]
    pub required_permissions: Vec<Permission>,
    /// The apps this tenant consented to: prefetch, healing, status rows
    /// and `required_permissions` apply to them (default: every app). It
    /// restricts no caller: accounts do.
    #[serde(default)]
    pub apps: Vec<Name>,
}

impl TenantConfig {
    /// Whether the tenant consented to the app named `app` (`apps`, or
    /// every app when it names none).
    pub fn consented_to(&self, app: &Name) -> bool {
        self.apps.is_empty() || self.apps.contains(app)
    }
}

/// `[[accounts]]`: a local service account allowed to fetch tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// Used in logs and metrics.
    pub name: Name,
    /// SHA-256 of the account's secret: one, or two while a secret rotates.
    pub secret_sha256: SecretHashes,
    /// Tenants the account may use.
    pub tenants: Vec<TenantRef>,
    /// The apps the account may use; the first is its default (default:
    /// the first app).
    #[serde(default)]
    pub apps: Vec<Name>,
    /// Resources the account may request; default: the cloud's Graph.
    #[serde(default)]
    pub resources: Option<Vec<Resource>>,
    /// Tenant for App Service-style calls that name none.
    #[serde(default)]
    pub default_tenant: Option<TenantRef>,
    /// Peer uids that authenticate as this account on the Unix socket.
    #[serde(default)]
    pub unix_uids: Vec<u32>,
    /// With `"*"`: at most this many fetches a minute for tenants not yet
    /// cached (a bucket refilled evenly over the minute).
    #[serde(default = "AccountConfig::default_max_new_tenants_per_minute")]
    pub max_new_tenants_per_minute: u32,
    /// What the account may do through the Graph gateway (none: nothing).
    #[serde(default)]
    pub graph: Vec<GraphRuleConfig>,
    /// Gateway only: `/v1/token` and `/msi/token` refuse the account, so it
    /// never holds a raw token.
    #[serde(default)]
    pub graph_only: bool,
}

/// `[[accounts.graph]]`: methods on path patterns, for listed mailboxes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphRuleConfig {
    /// HTTP methods, e.g. `["GET"]`.
    pub methods: Vec<String>,
    /// Patterns: literal segments, `*`, `**` (last), `{mailbox}`.
    pub paths: Vec<String>,
    /// What `{mailbox}` may name: user principal names, object ids, or `"*"`.
    #[serde(default)]
    pub mailboxes: Vec<String>,
}

impl AccountConfig {
    fn default_max_new_tenants_per_minute() -> u32 {
        60
    }
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
