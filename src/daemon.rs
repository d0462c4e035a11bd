//! Start-up and live operations: from a configuration and its credentials
//! to a running app ([`start`]), one path for `tokenbroker serve`,
//! `serve --dev`, the tests and the benches; then [`reload`] (SIGHUP, the
//! admin API, a changed file) and the file watch ([`spawn_watch`]).

use crate::authority::{AuthoritySettings, BuildError};
use crate::broker::{Applied, Broker};
use crate::cache::CacheSettings;
use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, ConfigError};
use crate::credentials::{
    file_sha256, Credential, CredentialError, CredentialSet, CredentialSource, Fingerprint,
};
use crate::metrics::Metrics;
use crate::server::App;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

/// How the broker runs, beyond the configuration (tests tune these).
#[derive(Debug, Clone)]
pub struct Options {
    pub authority: AuthoritySettings,
    pub cache: CacheSettings,
    pub clock: SharedClock,
    /// `serve --listen`: kept across reloads of the file.
    pub listen_override: Option<std::net::SocketAddr>,
}

impl Options {
    /// What the configuration says, on the system clock.
    pub fn from_config(config: &Config) -> Options {
        Options {
            authority: AuthoritySettings::from_config(config),
            cache: CacheSettings::from_config(&config.cache),
            clock: Arc::new(SystemClock),
            listen_override: None,
        }
    }
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration names something unusable (an unreadable `ca_file`).
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Client(BuildError),
}

impl StartError {
    /// A client build failure, as a configuration error where the operator
    /// can fix it (`app.ca_file` of the file at `config_path`).
    pub fn from_build(config_path: &Path, e: BuildError) -> StartError {
        match e {
            BuildError::CaFile(message) => StartError::Config(ConfigError::Invalid {
                path: config_path.to_owned(),
                key: "app.ca_file".into(),
                message,
            }),
            other => StartError::Client(other),
        }
    }
}

/// Every check `serve` makes before binding, beyond parsing: the
/// `ca_file` loads, and the directories of the sockets exist. (`check`
/// runs it too, so `check` passing means `serve` starts.)
pub fn preflight(config: &Config, config_path: &Path) -> Result<(), ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        path: config_path.to_owned(),
        key: key.to_owned(),
        message,
    };
    if let Some(path) = &config.app.ca_file {
        crate::authority::load_ca_file(path).map_err(|e| invalid("app.ca_file", e.to_string()))?;
    }
    // The shared cache's keys, secrets and CA file (connecting is `check --online`'s).
    crate::fleet::prepare(config).map_err(|(key, message)| invalid(&key, message))?;
    for (key, socket) in [
        ("server.unix_socket", &config.server.unix_socket),
        ("server.admin_socket", &config.server.admin_socket),
    ] {
        let Some(dir) = socket.as_deref().and_then(Path::parent) else {
            continue;
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if !dir.is_dir() {
            return Err(invalid(
                key,
                format!(
                    "the directory {} does not exist; create it (deploy/systemd's tokenbroker.tmpfiles does, \
                     or RuntimeDirectory= in the unit)",
                    dir.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Loads every credential `config` names, as of now. Returns the set and
/// the warnings an operator should see (expiring, skipped).
/// `config_path` names the file in errors, with the key that named the
/// credential file at fault.
pub fn load_credentials(
    config: &Config,
    config_path: &Path,
) -> Result<(CredentialSet, Vec<String>), CredentialError> {
    let ((credentials, sources, fingerprint), warnings) = read_credentials(config, config_path)?;
    let set = CredentialSet::new(
        credentials,
        sources,
        Some(fingerprint),
        config.app.credential_rejection_memory.0,
    );
    Ok((set, warnings))
}

/// The credentials `config` names, read from their files: the credentials,
/// their sources, and the fingerprint of the files taken *before* they were
/// read (a change that lands meanwhile is picked up by the next check).
type ReadCredentials = (Vec<Credential>, Vec<CredentialSource>, Fingerprint);

fn read_credentials(
    config: &Config,
    config_path: &Path,
) -> Result<(ReadCredentials, Vec<String>), CredentialError> {
    let sources = CredentialSource::all_from_config(&config.app);
    let fingerprint = Fingerprint::of(&sources);
    let (credentials, warnings) = CredentialSet::load(&sources, SystemTime::now())
        .map_err(|e| e.in_config(config_path, &sources))?;
    Ok(((credentials, sources, fingerprint), warnings))
}

/// Builds the broker and the app for `config`, and starts fetching a token
/// for every configured tenant in the background. Call it inside the
/// runtime that will serve. `config_path` is the file reloads re-read
/// (`None`: an in-memory configuration, as in dev mode).
pub async fn start(
    config: Arc<Config>,
    config_path: Option<&Path>,
    credentials: CredentialSet,
    options: Options,
) -> Result<Arc<App>, StartError> {
    log_startup(
        &config,
        config_path,
        &credentials,
        &options.authority.authority_host,
    );
    let metrics = Arc::new(Metrics::new(&config));
    let named = config_path.unwrap_or(Path::new("<configuration>"));
    let mut broker = Broker::with_settings(
        config,
        options.authority,
        options.cache,
        Arc::new(credentials),
        options.clock.clone(),
        metrics.clone(),
    )
    .map_err(|e| StartError::from_build(named, e))?
    .with_listen_override(options.listen_override);
    let fleet_observer: Arc<dyn crate::fleet::FleetObserver> = metrics.clone();
    let fleet = crate::fleet::connect(&broker.config(), options.clock.clone(), fleet_observer)
        .map_err(|(key, message)| {
            StartError::Config(ConfigError::Invalid {
                path: named.to_owned(),
                key,
                message,
            })
        })?;
    if let Some(shared) = &fleet {
        tracing::info!(
            shared_cache = %shared.status().target,
            key_id = %shared.status().key_id,
            "shared cache: connecting in the background; until it answers this host fetches alone"
        );
    }
    broker = broker.with_fleet(fleet);
    if let Some(path) = config_path {
        broker = broker.with_config_path(path);
    }
    metrics.config_loaded(options.clock.unix_now());
    broker.prefetch_configured_tenants();
    Ok(Arc::new(App::new(broker, metrics)))
}

/// What the daemon starts with, one structured line per fact (the
/// listeners follow from `server::run`), so an operator reading the first
/// lines of a log, or a machine reading them as JSON, knows what runs.
/// Counts and times are numbers; what is not configured is absent.
fn log_startup(
    config: &Config,
    config_path: Option<&Path>,
    credentials: &CredentialSet,
    authority_host: &str,
) {
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "tokenbroker starting");
    match config_path {
        Some(path) => tracing::info!(config_file = %path.display(), "configuration"),
        None => tracing::info!(config_file = "<built in: serve --dev>", "configuration"),
    }
    tracing::info!(client_id = config.app.client_id.as_str(), signing = ?config.app.signing, "app registration");
    tracing::info!(
        cloud = config.app.cloud.name(),
        authority = authority_host,
        "authority"
    );
    tracing::info!(
        tenants = config.tenants.len() as u64,
        accounts = config.accounts.len() as u64,
        "tenants and accounts"
    );
    for credential in credentials.all().iter() {
        let not_after = credential.not_after();
        tracing::info!(
            credential = credential.source().key.as_str(),
            kind = credential.kind(),
            // The certificate's thumbprint, or `federated:<issuer>`.
            thumbprint = credential.id(),
            not_after = not_after.map(crate::clock::unix_seconds),
            expires = not_after.map(crate::credentials::rfc3339),
            certificate_file = credential
                .source()
                .certificate
                .as_deref()
                .map(|p| p.display().to_string()),
            "credential"
        );
    }
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("nothing to reload: this daemon runs on an in-memory configuration (dev mode)")]
    NoFile,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error("{0}")]
    Client(String),
}

impl ReloadError {
    /// Whether the new configuration (or a credential it names) is at fault.
    pub fn is_configuration(&self) -> bool {
        !matches!(self, ReloadError::NoFile)
    }
}

/// Re-reads the configuration file and every credential file, checks it
/// all, then puts it in force at once. A reload that fails changes nothing
/// (the daemon keeps serving on the old state), is logged and counted, and
/// says why.
pub async fn reload(app: &App) -> Result<Applied, ReloadError> {
    let _one_at_a_time = app.reload_lock().await;
    let broker = app.broker();
    let Some(path) = broker.config_path().map(Path::to_owned) else {
        return Err(ReloadError::NoFile);
    };
    let loaded = tokio::task::spawn_blocking(move || -> Result<_, ReloadError> {
        let config = Config::load(&path)?;
        let (credentials, warnings) = read_credentials(&config, &path)?;
        Ok((config, credentials, warnings, path))
    })
    .await
    .map_err(|e| ReloadError::Client(format!("the reload task failed: {e}")))
    .and_then(|r| r);
    let outcome = loaded.and_then(|(config, credentials, warnings, path)| {
        warnings.iter().for_each(|w| tracing::warn!("{w}"));
        broker.apply(config, Some(credentials)).map_err(|e| {
            match StartError::from_build(&path, e) {
                StartError::Config(e) => ReloadError::Config(e),
                StartError::Client(e) => ReloadError::Client(e.to_string()),
            }
        })
    });
    match &outcome {
        Ok(applied) => tracing::info!(
            restart_needed = ?applied.restart_needed,
            dropped = applied.dropped,
            cleared = applied.cleared,
            "configuration reloaded"
        ),
        Err(e) => {
            broker.reload_failed();
            tracing::error!("reload failed, nothing changed: {e}");
        }
    }
    outcome
}

/// Every `app.credential_check_interval`: reloads credentials whose files
/// changed (a file rewritten in place, a Kubernetes secret's `..data`
/// swap; a half-written or invalid file is ignored with a warning and the
/// old credentials keep signing), and with `server.watch_config` reloads
/// the configuration when its file changed (a Kubernetes ConfigMap).
pub fn spawn_watch(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let path = app.broker().config_path().map(Path::to_owned);
        let digest = |path: &Path| file_sha256(path).ok();
        let mut seen = path.as_deref().and_then(digest);
        loop {
            let config = app.broker().config();
            tokio::time::sleep(config.app.credential_check_interval.0).await;
            if let (true, Some(path)) = (config.server.watch_config, path.as_deref()) {
                let now = digest(path);
                if now.is_some() && now != seen {
                    seen = now;
                    tracing::info!(file = %path.display(), "configuration file changed; reloading");
                    // The outcome is logged and counted by `reload`.
                    let _ = reload(&app).await;
                    continue;
                }
            }
            // Under the reload lock, so it cannot interleave with a reload;
            // off the runtime, since it reads files and parses keys.
            let _one_at_a_time = app.reload_lock().await;
            let credentials = Arc::clone(app.broker().credentials());
            let reloaded = tokio::task::spawn_blocking(move || {
                credentials.reload_if_changed(SystemTime::now())
            })
            .await;
            match reloaded {
                Ok(Ok(Some(warnings))) => {
                    warnings.iter().for_each(|w| tracing::warn!("{w}"));
                    tracing::info!(
                        in_use = %app.broker().credentials().in_use(),
                        "credential files changed; reloaded them"
                    );
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => tracing::warn!(
                    "credential files changed but do not load; the old credentials keep signing until they do: {e}"
                ),
                Err(e) => tracing::error!("the credential check failed: {e}"),
            }
        }
    })
}

/// SIGHUP, caught from the moment this is called: until then the signal's
/// default action ends the process, so `serve` calls it first of all.
pub fn catch_sighup() -> std::io::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
}

/// Reloads on every SIGHUP (caught by [`catch_sighup`]).
pub fn spawn_sighup(
    app: Arc<App>,
    mut hangup: tokio::signal::unix::Signal,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP received; reloading");
            let _ = reload(&app).await;
        }
    })
}
