//! Rules that span keys, run once the file has parsed. Each broken rule
//! comes back as the key path at fault (`accounts[1].tenants`) and what to do.

use super::schema::{AppConfig, Config};
use super::types::{ConfigDuration, Name, TenantId, TenantKey, TenantRef};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

mod graph;
mod token_files;

use graph::graph_rules;
use token_files::token_files;

/// A broken rule: the key path and the message.
pub(super) type Broken = (String, String);

/// Checks every cross-key rule of `config`.
pub(super) fn validate(config: &Config) -> Result<(), Broken> {
    server(config)?;
    apps(config)?;
    limits(config)?;
    credentials(config)?;
    shared_cache(config)?;
    state_file(config)?;
    let tenants = tenants(config)?;
    accounts(config, &tenants)?;
    token_files(config, &tenants)
}

pub(super) fn broken(key: impl Into<String>, message: impl Into<String>) -> Broken {
    (key.into(), message.into())
}

fn server(config: &Config) -> Result<(), Broken> {
    let server = &config.server;
    if !server.listen.ip().is_loopback() && !server.allow_remote {
        return Err(broken(
            "server.listen",
            format!(
                "{} is not a loopback address; tokens would be served to other hosts. \
                 Use 127.0.0.1 or [::1], or set server.allow_remote = true if that is intended",
                server.listen
            ),
        ));
    }
    if let Some(metrics) = server.metrics_listen {
        if !metrics.ip().is_loopback() && !server.allow_remote {
            return Err(broken(
                "server.metrics_listen",
                format!(
                    "{metrics} is not a loopback address; set server.allow_remote = true to expose metrics to other hosts"
                ),
            ));
        }
    }
    if server.admin_socket.is_some() && server.admin_socket == server.unix_socket {
        return Err(broken(
            "server.admin_socket",
            "is the same path as server.unix_socket; give the admin API a socket of its own",
        ));
    }
    if server.allowed_hosts.is_empty() {
        return Err(broken(
            "server.allowed_hosts",
            "must list at least one host name (e.g. \"localhost\")",
        ));
    }
    Ok(())
}

/// The bounds of every duration key: `(key, value, low, high)`, the app's
/// keys those of the default app. Past the high ends, deadlines computed
/// from them would not fit a clock, or the daemon would not do its job (a
/// zero timeout answers every request 504).
pub(crate) fn duration_bounds(config: &Config) -> Vec<DurationBound> {
    let (s, c) = (&config.server, &config.cache);
    let ms = Duration::from_millis;
    let secs = Duration::from_secs;
    let mut bounds = vec![
        (
            "server.header_read_timeout",
            s.header_read_timeout,
            ms(100),
            secs(60),
        ),
        (
            "server.shutdown_timeout",
            s.shutdown_timeout,
            secs(0),
            secs(600),
        ),
        ("server.idle_timeout", s.idle_timeout, secs(1), secs(3600)),
    ];
    bounds.extend(app_duration_bounds(config.app()));
    bounds.extend([
        // Entra's tokens live 60 to 90 minutes.
        (
            "cache.min_remaining",
            c.min_remaining,
            secs(0),
            secs(59 * 60),
        ),
        ("cache.keep_warm", c.keep_warm, secs(60), secs(30 * 86_400)),
        ("cache.negative_ttl", c.negative_ttl, secs(1), secs(86_400)),
        ("cache.load_timeout", c.load_timeout, secs(1), secs(300)),
        (
            "cache.forced_refresh_interval",
            c.forced_refresh_interval,
            secs(1),
            secs(3600),
        ),
        (
            "cache.failed_retry_max",
            c.failed_retry_max,
            secs(60),
            secs(86_400),
        ),
        (
            "cache.state_interval",
            c.state_interval,
            secs(1),
            secs(3600),
        ),
        ("graph.timeout", config.graph.timeout, secs(1), secs(600)),
        (
            "graph.directory_ttl",
            config.graph.directory_ttl,
            secs(1),
            secs(7 * 86_400),
        ),
    ]);
    bounds
}

/// `(key, value, low, high)` of a bounded key.
pub(crate) type Bound<V, B> = (&'static str, V, B, B);

/// `(key, value, low, high)` of a duration key.
pub(crate) type DurationBound = Bound<ConfigDuration, Duration>;

/// The bounds of one app's duration keys (named `app.…`).
fn app_duration_bounds(app: &AppConfig) -> [DurationBound; 4] {
    let ms = Duration::from_millis;
    let secs = Duration::from_secs;
    [
        (
            "app.connect_timeout",
            app.connect_timeout,
            ms(100),
            secs(60),
        ),
        (
            "app.request_timeout",
            app.request_timeout,
            ms(500),
            secs(300),
        ),
        (
            "app.credential_check_interval",
            app.credential_check_interval,
            secs(1),
            secs(3600),
        ),
        (
            "app.credential_rejection_memory",
            app.credential_rejection_memory,
            secs(1),
            secs(86_400),
        ),
    ]
}

/// The bounds of every number key: `(key, value, low, high)`, the app's
/// keys those of the default app.
pub(crate) fn number_bounds(config: &Config) -> Vec<(&'static str, u64, u64, u64)> {
    let (s, c) = (&config.server, &config.cache);
    let mut bounds = vec![
        ("server.max_connections", n(s.max_connections), 1, 65_536),
        (
            "server.max_socket_connections",
            n(s.max_socket_connections),
            1,
            65_536,
        ),
        (
            "server.max_header_bytes",
            n(s.max_header_bytes),
            1024,
            1024 * 1024,
        ),
        ("server.max_query_bytes", n(s.max_query_bytes), 256, 65_536),
        (
            "server.max_connections_per_account",
            n(s.connections_per_account()),
            1,
            n(s.max_connections),
        ),
    ];
    bounds.extend(app_number_bounds(config.app()));
    bounds.extend([
        ("cache.max_entries", c.max_entries, 1, 10_000_000),
        (
            "graph.max_request_bytes",
            config.graph.max_request_bytes,
            0,
            1 << 30,
        ),
        (
            "graph.max_rewrite_bytes",
            config.graph.max_rewrite_bytes,
            0,
            256 << 20,
        ),
    ]);
    bounds
}

fn n(v: usize) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// The bounds of one app's number keys (named `app.…`).
fn app_number_bounds(app: &AppConfig) -> [(&'static str, u64, u64, u64); 1] {
    [(
        "app.max_concurrent_requests",
        n(app.max_concurrent_requests),
        1,
        1024,
    )]
}

/// The key `key` (`app.connect_timeout`) names in `app`'s table
/// (`apps[1].connect_timeout`).
fn app_key(app: &AppConfig, key: &str) -> String {
    format!("{}.{}", app.key, key.trim_start_matches("app."))
}

/// Every bounded key to check: the configuration's own from `all`, then
/// each app's (named by its table: `apps[1].request_timeout`).
fn keyed<V, B, const N: usize>(
    all: Vec<Bound<V, B>>,
    apps: &[AppConfig],
    of_app: fn(&AppConfig) -> [Bound<V, B>; N],
) -> Vec<(String, V, B, B)> {
    let per_app = apps.iter().flat_map(|app| {
        of_app(app)
            .into_iter()
            .map(move |(key, v, low, high)| (app_key(app, key), v, low, high))
    });
    all.into_iter()
        .filter(|(key, ..)| !key.starts_with("app."))
        .map(|(key, v, low, high)| (key.to_owned(), v, low, high))
        .chain(per_app)
        .collect()
}

fn limits(config: &Config) -> Result<(), Broken> {
    let out_of_bounds = |key: String, value: String, low: String, high: String| {
        Err(broken(
            key,
            format!("{value} is out of bounds: use {low} to {high}"),
        ))
    };
    for (key, value, low, high) in keyed(number_bounds(config), &config.apps, app_number_bounds) {
        if !(low..=high).contains(&value) {
            return out_of_bounds(key, value.to_string(), low.to_string(), high.to_string());
        }
    }
    for (key, value, low, high) in keyed(duration_bounds(config), &config.apps, app_duration_bounds)
    {
        if !(low..=high).contains(&value.0) {
            return out_of_bounds(
                key,
                value.to_string(),
                ConfigDuration(low).to_string(),
                ConfigDuration(high).to_string(),
            );
        }
    }
    Ok(())
}

/// Each app has a name and a client ID of its own.
fn apps(config: &Config) -> Result<(), Broken> {
    let mut names = HashSet::new();
    let mut client_ids = HashSet::new();
    for app in &config.apps {
        if !names.insert(app.name.as_str()) {
            return Err(broken(
                format!("{}.name", app.key),
                format!(
                    "\"{}\" names two apps; give each [[apps]] a name of its own",
                    app.name
                ),
            ));
        }
        if !client_ids.insert(app.client_id.as_str().to_ascii_lowercase()) {
            return Err(broken(
                format!("{}.client_id", app.key),
                format!(
                    "{} is the client ID of an earlier app too; one app registration is one [[apps]] entry",
                    app.client_id
                ),
            ));
        }
    }
    Ok(())
}

/// The apps `key` lists (`accounts[0].apps`) are configured, once each.
pub(super) fn app_names(config: &Config, key: &str, names: &[Name]) -> Result<(), Broken> {
    let mut seen = HashSet::new();
    for name in names {
        if config.app_named(name.as_str()).is_none() {
            let known: Vec<&str> = config.apps.iter().map(|a| a.name.as_str()).collect();
            return Err(broken(
                key,
                format!(
                    "names app \"{name}\", which is not configured; the apps are: {}",
                    known.join(", ")
                ),
            ));
        }
        if !seen.insert(name.as_str()) {
            return Err(broken(key, format!("names app \"{name}\" twice")));
        }
    }
    Ok(())
}

/// Exactly one way of naming each app's credentials, and one password
/// source each.
fn credentials(config: &Config) -> Result<(), Broken> {
    config.apps.iter().try_for_each(app_credentials)
}

fn app_credentials(app: &AppConfig) -> Result<(), Broken> {
    let at = |k: &str| format!("{}.{k}", app.key);
    let single = app.certificate.is_some()
        || app.private_key.is_some()
        || app.private_key_password_env.is_some()
        || app.private_key_password_file.is_some();
    if single && !app.credentials.is_empty() {
        return Err(broken(
            at("credentials"),
            "is given together with certificate/private_key; list every certificate as \
             a credentials entry (certificate, private_key, password_env or password_file) instead",
        ));
    }
    if app.certificate.is_none() && app.credentials.is_empty() {
        return Err(broken(
            at("certificate"),
            "is missing: name the certificate file (with private_key), or list \
             credentials entries; make one with `tokenbroker cert new`",
        ));
    }
    if app.private_key_password_env.is_some() && app.private_key_password_file.is_some() {
        return Err(broken(
            at("private_key_password_file"),
            "is given together with private_key_password_env; keep one",
        ));
    }
    for (i, credential) in app.credentials.iter().enumerate() {
        let key = |k: &str| format!("{}.credentials[{i}].{k}", app.key);
        if credential.password_env.is_some() && credential.password_file.is_some() {
            return Err(broken(
                key("password_file"),
                "is given together with password_env; keep one",
            ));
        }
        let federated = credential.federated_token_file.is_some()
            || credential.federated_managed_identity.is_some();
        if credential.federated_token_file.is_some()
            && credential.federated_managed_identity.is_some()
        {
            return Err(broken(
                key("federated_managed_identity"),
                "is given together with federated_token_file; one credential is one of them (list each as its own [[app.credentials]])",
            ));
        }
        let key_material = credential.certificate.is_some()
            || credential.private_key.is_some()
            || credential.password_env.is_some()
            || credential.password_file.is_some()
            || credential.pkcs11.is_some();
        if federated && key_material {
            return Err(broken(
                key(if credential.federated_token_file.is_some() { "federated_token_file" } else { "federated_managed_identity" }),
                "a federated credential has no certificate or key: list the certificate as its own [[app.credentials]]",
            ));
        }
        if !federated && credential.certificate.is_none() {
            return Err(broken(
                key("certificate"),
                "is missing: give certificate (with private_key, or pkcs11 for a key in an HSM), \
                 or federated_token_file, or federated_managed_identity",
            ));
        }
        if let Some(pkcs11) = &credential.pkcs11 {
            if credential.private_key.is_some()
                || credential.password_env.is_some()
                || credential.password_file.is_some()
            {
                return Err(broken(
                    key("pkcs11"),
                    "the key is in the token: drop private_key and the password keys (the PIN comes from pin_env)",
                ));
            }
            if pkcs11.token.is_empty() || pkcs11.key_label.is_empty() {
                return Err(broken(
                    key("pkcs11"),
                    "token and key_label must not be empty",
                ));
            }
        }
        if let Some(mi) = &credential.federated_managed_identity {
            use super::schema::ManagedIdentityProtocol;
            if let Some(endpoint) = &mi.endpoint {
                let ok = url::Url::parse(endpoint).is_ok_and(|u| {
                    matches!(u.scheme(), "http" | "https") && u.host_str().is_some()
                });
                if !ok {
                    return Err(broken(
                        key("federated_managed_identity.endpoint"),
                        format!("\"{endpoint}\" is not an http(s) URL"),
                    ));
                }
            }
            match mi.protocol {
                ManagedIdentityProtocol::AppService
                    if mi.endpoint.is_none() || mi.header_env.is_none() =>
                {
                    return Err(broken(
                        key("federated_managed_identity"),
                        "protocol = \"app-service\" needs endpoint (the full token URL) and header_env (the variable holding the X-IDENTITY-HEADER secret)",
                    ));
                }
                ManagedIdentityProtocol::Imds if mi.header_env.is_some() => {
                    return Err(broken(
                        key("federated_managed_identity.header_env"),
                        "is for protocol = \"app-service\"; IMDS takes no secret",
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// `cache.state_file` and `cache.state_key_file` come together.
fn state_file(config: &Config) -> Result<(), Broken> {
    match (&config.cache.state_file, &config.cache.state_key_file) {
        (Some(_), None) => Err(broken(
            "cache.state_key_file",
            "is missing: cache.state_file is sealed with it; make one with `tokenbroker cache-key new --out FILE`",
        )),
        (None, Some(_)) => Err(broken(
            "cache.state_file",
            "is missing: cache.state_key_file is set, but no file to keep the cache in",
        )),
        _ => Ok(()),
    }
}

/// `[shared_cache]`: one way to reach Redis, URLs it can use, a key prefix
/// fit for a Redis key, bounded durations, one source per secret.
fn shared_cache(config: &Config) -> Result<(), Broken> {
    let Some(shared) = &config.shared_cache else {
        return Ok(());
    };
    let urls: Vec<(String, &String)> = match (&shared.url, shared.urls.is_empty()) {
        (Some(_), false) => {
            return Err(broken(
                "shared_cache.urls",
                "is given together with shared_cache.url; use url for one server, urls for a Redis Cluster's seeds",
            ))
        }
        (None, true) => {
            return Err(broken(
                "shared_cache.url",
                "is missing: give url = \"redis://host:6379/0\" (or urls = [...] for a Redis Cluster)",
            ))
        }
        (Some(url), true) => vec![("shared_cache.url".to_owned(), url)],
        (None, false) => shared
            .urls
            .iter()
            .enumerate()
            .map(|(i, u)| (format!("shared_cache.urls[{i}]"), u))
            .collect(),
    };
    for (key, url) in urls {
        let parsed = url::Url::parse(url).map_err(|e| {
            broken(
                &key,
                format!("is not a URL ({e}); write redis://host:6379/0 or rediss://…"),
            )
        })?;
        if !matches!(parsed.scheme(), "redis" | "rediss") || parsed.host_str().is_none() {
            return Err(broken(
                &key,
                "must be redis://host[:port][/db] or rediss://host[:port][/db]",
            ));
        }
        if parsed.password().is_some() {
            return Err(broken(
                &key,
                "holds a password: put it in password_env or password_file instead, so the configuration holds no secret",
            ));
        }
    }
    let prefix_ok = !shared.prefix.is_empty()
        && shared.prefix.len() <= 64
        && shared
            .prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if !prefix_ok {
        return Err(broken(
            "shared_cache.prefix",
            "must be 1 to 64 of A-Z a-z 0-9 - _ . :",
        ));
    }
    for (key, value, low, high) in [
        (
            "shared_cache.timeout",
            shared.timeout.0,
            Duration::from_millis(10),
            Duration::from_secs(10),
        ),
        (
            "shared_cache.lease",
            shared.lease.0,
            Duration::from_secs(1),
            Duration::from_secs(300),
        ),
    ] {
        if !(low..=high).contains(&value) {
            return Err(broken(
                key,
                format!(
                    "{} is out of bounds: use {} to {}",
                    humantime::format_duration(value),
                    humantime::format_duration(low),
                    humantime::format_duration(high)
                ),
            ));
        }
    }
    if shared.username_env.is_some() && shared.username_file.is_some() {
        return Err(broken(
            "shared_cache.username_file",
            "is given together with username_env; keep one",
        ));
    }
    if shared.password_env.is_some() && shared.password_file.is_some() {
        return Err(broken(
            "shared_cache.password_file",
            "is given together with password_env; keep one",
        ));
    }
    Ok(())
}

/// Checks names and ids are unique; returns configured tenant ids by name.
fn tenants(config: &Config) -> Result<HashMap<&Name, &TenantId>, Broken> {
    let mut by_name = HashMap::new();
    let mut ids = HashSet::new();
    for (i, tenant) in config.tenants.iter().enumerate() {
        if by_name.insert(&tenant.name, &tenant.id).is_some() {
            return Err(broken(
                format!("tenants[{i}].name"),
                format!(
                    "\"{}\" is used by two tenants; names must be unique",
                    tenant.name
                ),
            ));
        }
        if !ids.insert(tenant.id.key()) {
            return Err(broken(
                format!("tenants[{i}].id"),
                format!(
                    "\"{}\" is configured twice; list each tenant once",
                    tenant.id
                ),
            ));
        }
        app_names(config, &format!("tenants[{i}].apps"), &tenant.apps)?;
    }
    Ok(by_name)
}

fn accounts(config: &Config, tenants: &HashMap<&Name, &TenantId>) -> Result<(), Broken> {
    let mut names = HashSet::new();
    // Compared as bytes: two hex spellings of one digest are one secret.
    let mut secrets = HashMap::new();
    let mut uids = HashSet::new();
    // The tenant id a reference stands for; None for "*".
    let id_of = |key: String, reference: &TenantRef| -> Result<Option<TenantKey>, Broken> {
        match reference {
            TenantRef::Any => Ok(None),
            TenantRef::Id(id) => Ok(Some(id.key())),
            TenantRef::Name(name) => match tenants.get(name) {
                Some(id) => Ok(Some(id.key())),
                None => Err(broken(
                    key,
                    format!(
                        "\"{name}\" is neither a configured tenant name, a tenant GUID or \
                         domain, nor \"*\""
                    ),
                )),
            },
        }
    };
    for (i, account) in config.accounts.iter().enumerate() {
        if !names.insert(&account.name) {
            return Err(broken(
                format!("accounts[{i}].name"),
                format!(
                    "\"{}\" is used by two accounts; names must be unique",
                    account.name
                ),
            ));
        }
        for hash in &account.secret_sha256.0 {
            if let Some(other) = secrets.insert(*hash, &account.name) {
                let message = if *other == account.name {
                    "lists the same hash twice; during a rotation list the old and the new \
                     secret's hashes"
                        .to_owned()
                } else {
                    format!(
                        "is the same as another account's: accounts \"{other}\" and \"{}\" \
                         would share one secret; give each account its own secret \
                         (`tokenbroker secret new --account NAME`)",
                        account.name
                    )
                };
                return Err(broken(format!("accounts[{i}].secret_sha256"), message));
            }
        }
        for uid in &account.unix_uids {
            if !uids.insert(*uid) {
                return Err(broken(
                    format!("accounts[{i}].unix_uids"),
                    format!("uid {uid} is given to two accounts; a peer uid must map to one"),
                ));
            }
        }
        if !(1..=10_000).contains(&account.max_new_tenants_per_minute) {
            return Err(broken(
                format!("accounts[{i}].max_new_tenants_per_minute"),
                format!(
                    "{} is out of bounds: use 1 to 10000",
                    account.max_new_tenants_per_minute
                ),
            ));
        }
        if account.tenants.is_empty() {
            return Err(broken(
                format!("accounts[{i}].tenants"),
                "is empty; list tenant names or ids, or \"*\" for any tenant",
            ));
        }
        let mut allowed = Vec::with_capacity(account.tenants.len());
        for entry in &account.tenants {
            allowed.push(id_of(format!("accounts[{i}].tenants"), entry)?);
        }
        graph_rules(i, account)?;
        app_names(config, &format!("accounts[{i}].apps"), &account.apps)?;
        if let Some(default) = &account.default_tenant {
            let key = format!("accounts[{i}].default_tenant");
            let Some(id) = id_of(key.clone(), default)? else {
                return Err(broken(
                    key,
                    "\"*\" is not a tenant; name one tenant (a configured name, GUID or domain)",
                ));
            };
            if !allowed.iter().any(|a| a.as_ref().is_none_or(|a| *a == id)) {
                return Err(broken(
                    key,
                    format!("\"{default}\" is not in this account's tenants"),
                ));
            }
        }
    }
    Ok(())
}
