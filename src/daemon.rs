//! Start-up and live operations: from a configuration and its credentials
//! to a running app ([`start`]), one path for `tokenbroker serve`,
//! `serve --dev`, the tests and the benches; then the triggers of a reload (SIGHUP, [`spawn_sighup`]; a changed
//! file, [`spawn_watch`]), which the broker carries out; and the state file
//! of a warm restart, read at start and written while running and at exit.

use crate::authority::{AuthoritySettings, BuildError};
use crate::broker::Broker;
use crate::cache::CacheSettings;
use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, ConfigError};
use crate::credentials::{CredentialError, CredentialSet};
use crate::metrics::Metrics;
use crate::server::App;
use crate::state_file::{StateError, StateFile};
use crate::sys::file_sha256;
use std::path::Path;
use std::sync::Arc;

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
        match e.into_config(config_path) {
            Ok(config) => StartError::Config(config),
            Err(other) => StartError::Client(other),
        }
    }
}

/// Every check `serve` makes before binding, beyond parsing: the
/// `ca_file` loads, and the directories of the sockets exist. (`check`
/// runs it too, so `check` passing means `serve` starts.)
pub fn preflight(config: &Config, config_path: &Path, sockets: bool) -> Result<(), ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        path: config_path.to_owned(),
        key: key.to_owned(),
        message,
    };
    for app in &config.apps {
        if let Some(path) = &app.ca_file {
            crate::authority::load_ca_file(path)
                .map_err(|e| invalid(&format!("{}.ca_file", app.key), e.to_string()))?;
        }
    }
    // The shared cache's keys, secrets and CA file (connecting is `check --online`'s).
    crate::fleet::prepare(config).map_err(|e| e.in_config(config_path))?;
    state_file(config, config_path).map_err(|e| match e {
        StartError::Config(e) => e,
        other => invalid("cache.state_key_file", other.to_string()),
    })?;
    // Only a command that listens needs the socket directories.
    let listens = [
        ("server.unix_socket", &config.server.unix_socket),
        ("server.admin_socket", &config.server.admin_socket),
    ];
    for (key, socket) in listens.into_iter().filter(|_| sockets) {
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
        crate::sys::writable(dir).map_err(|e| {
            invalid(
                key,
                format!(
                    "cannot create the socket in {} as user {}: {e}; make the directory writable \
                     by that user (deploy/systemd's tokenbroker.tmpfiles makes /run/tokenbroker for it)",
                    dir.display(),
                    crate::sys::process_user()
                ),
            )
        })?;
    }
    Ok(())
}

/// Loads every credential of every app `config` names, as of now. Returns
/// each app's set, in file order, and the warnings an operator should see
/// (expiring, skipped). `config_path` names the file in errors, with the
/// key that named the credential file at fault.
pub fn load_credentials(
    config: &Config,
    config_path: &Path,
) -> Result<(Vec<CredentialSet>, Vec<String>), CredentialError> {
    let (read, warnings) = CredentialSet::read(config, config_path)?;
    let sets = config
        .apps
        .iter()
        .zip(read)
        .map(|(app, (credentials, sources, fingerprint))| {
            CredentialSet::new(
                credentials,
                sources,
                Some(fingerprint),
                app.credential_rejection_memory.0,
            )
        })
        .collect();
    Ok((sets, warnings))
}

/// Builds the broker and the app for `config`, and starts fetching a token
/// for every configured tenant in the background. Call it inside the
/// runtime that will serve. `config_path` is the file reloads re-read
/// (`None`: an in-memory configuration, as in dev mode).
pub async fn start(
    config: Arc<Config>,
    config_path: Option<&Path>,
    credentials: Vec<CredentialSet>,
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
        credentials.into_iter().map(Arc::new).collect(),
        options.clock.clone(),
        metrics.clone(),
    )
    .map_err(|e| StartError::from_build(named, e))?
    .with_listen_override(options.listen_override);
    let fleet_observer: Arc<dyn crate::fleet::FleetObserver> = metrics.clone();
    let fleet = crate::fleet::connect(&broker.config(), options.clock.clone(), fleet_observer)
        .map_err(|e| StartError::Config(e.in_config(named)))?;
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
    let state = state_file(&broker.config(), named)?;
    broker = broker.with_state_file(state);
    restore_state(&broker);
    metrics.config_loaded(options.clock.unix_now());
    broker.prefetch_configured_tenants();
    Ok(Arc::new(App::new(broker, metrics)))
}

/// `cache.state_file` with its key, when configured. A key file that
/// cannot be read is a configuration error (exit 2); the state file itself
/// is only read later, and never fails a start.
fn state_file(config: &Config, named: &Path) -> Result<Option<StateFile>, StartError> {
    let (Some(path), Some(key_file)) = (&config.cache.state_file, &config.cache.state_key_file)
    else {
        return Ok(None);
    };
    let keys = crate::seal::Keys::load(key_file, &[]).map_err(|e| ConfigError::Invalid {
        path: named.to_owned(),
        key: "cache.state_key_file".into(),
        message: format!(
            "{e}; it must be the daemon's user's to read (mode 0600); make one with `tokenbroker cache-key new --out {}`",
            key_file.display()
        ),
    })?;
    Ok(Some(StateFile::new(
        path,
        keys,
        config.apps.iter().map(|a| a.app_key()).collect(),
        config.app().cloud.name(),
    )))
}

/// Takes back the tokens and known tenants of the state file, before the
/// listeners answer; a file that cannot be used is a WARN.
fn restore_state(broker: &Broker) {
    let Some(file) = broker.state_file() else {
        return;
    };
    let path = file.path().display().to_string();
    match broker.restore_state() {
        Ok(report) => tracing::info!(
            state_file = %path,
            tokens = report.tokens,
            stale = report.stale,
            known_tenants = report.known_tenants,
            "warm restart: tokens restored from the state file"
        ),
        Err(StateError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(state_file = %path, "no state file yet (a first start): starting with an empty cache; it is written every cache.state_interval and at shutdown")
        }
        Err(e) => tracing::warn!(state_file = %path, "{e}"),
    }
}

/// Writes the state file every `cache.state_interval` when something
/// changed. (The last write is at shutdown: [`save_state_at_exit`].)
pub fn spawn_state_saver(app: Arc<App>) -> Option<tokio::task::JoinHandle<()>> {
    app.broker().state_file()?;
    Some(tokio::spawn(async move {
        loop {
            let interval = app.broker().with_config(|c| c.cache.state_interval.0);
            tokio::time::sleep(interval).await;
            if let Err(e) = app.broker().save_state(false).await {
                tracing::warn!("{e}");
            }
        }
    }))
}

/// Keeps the `[[token_files]]` current ([`crate::token_files::writer::run`]):
/// written at start (after the state file's tokens are back), whenever the
/// cached token changes, and after each reload, whose file set it follows.
pub fn spawn_token_files(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { crate::token_files::writer::run(app.broker()).await })
}

/// The last write of the state file, as the daemon stops: within `limit`,
/// so a stuck disk cannot keep the process from exiting.
pub async fn save_state_at_exit(app: &App, limit: std::time::Duration) {
    let Some(file) = app.broker().state_file() else {
        return;
    };
    let path = file.path().display().to_string();
    match tokio::time::timeout(limit, app.broker().save_state(true)).await {
        Ok(Ok(bytes)) => {
            tracing::info!(state_file = %path, bytes = bytes.unwrap_or(0), "state file written")
        }
        Ok(Err(e)) => tracing::warn!("{e}"),
        Err(_) => {
            tracing::warn!(state_file = %path, "state file not written within {} s; the next start begins from the last one written", limit.as_secs())
        }
    }
}

/// What the daemon starts with, one structured line per fact (the
/// listeners follow from `server::run`), so an operator reading the first
/// lines of a log, or a machine reading them as JSON, knows what runs.
/// Counts and times are numbers; what is not configured is absent.
fn log_startup(
    config: &Config,
    config_path: Option<&Path>,
    credentials: &[CredentialSet],
    authority_host: &str,
) {
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "tokenbroker starting");
    match config_path {
        Some(path) => tracing::info!(config_file = %path.display(), "configuration"),
        None => tracing::info!(config_file = "<built in: serve --dev>", "configuration"),
    }
    for (i, app) in config.apps.iter().enumerate() {
        tracing::info!(app = app.name.as_str(), client_id = app.client_id.as_str(), signing = ?app.signing, "app registration");
        // The first app's authority may be overridden (tests, dev mode).
        let authority = if i == 0 {
            authority_host
        } else {
            app.authority_host().trim_end_matches('/')
        };
        tracing::info!(
            app = app.name.as_str(),
            cloud = app.cloud.name(),
            authority,
            "authority"
        );
    }
    tracing::info!(
        tenants = config.tenants.len() as u64,
        accounts = config.accounts.len() as u64,
        "tenants and accounts"
    );
    for (app, credential) in config.apps.iter().zip(credentials).flat_map(|(app, set)| {
        set.all()
            .iter()
            .map(|c| (app.name.clone(), Arc::clone(c)))
            .collect::<Vec<_>>()
    }) {
        let not_after = credential.not_after();
        tracing::info!(
            app = app.as_str(),
            credential = credential.source().key.as_str(),
            kind = credential.kind(),
            // The certificate's thumbprint, or `federated:<issuer>`.
            thumbprint = credential.id(),
            not_after = not_after.map(crate::clock::unix_seconds),
            expires = not_after.map(crate::sys::rfc3339),
            certificate_file = credential
                .source()
                .certificate()
                .map(|p| p.display().to_string()),
            "credential"
        );
    }
}

/// Every `app.credential_check_interval`: reloads credentials whose files
/// changed (a file rewritten in place, a Kubernetes secret's `..data`
/// swap; a half-written or invalid file is ignored with a warning and the
/// old credentials keep signing), and with `server.watch_config` reloads
/// the configuration when its file changed (a Kubernetes ConfigMap): once
/// two reads one interval apart agree, so a file caught half-written is
/// never applied. A change that cannot be read (too large, not a regular
/// file) is logged and counted as a failed reload, once per reason.
pub fn spawn_watch(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let path = app.broker().config_path().map(Path::to_owned);
        let mut watch = path
            .as_deref()
            .map(|p| ConfigWatch::new(file_sha256(p).ok()));
        loop {
            let config = app.broker().config();
            // The shortest of the apps' intervals: each app's files are
            // checked at least that often.
            let interval = config
                .apps
                .iter()
                .map(|a| a.credential_check_interval.0)
                .min()
                .unwrap_or(config.app().credential_check_interval.0);
            tokio::time::sleep(interval).await;
            if let (true, Some(path), Some(watch)) =
                (config.server.watch_config, path.as_deref(), watch.as_mut())
            {
                match watch.next(file_sha256(path).map_err(|e| e.to_string())) {
                    WatchStep::Apply => {
                        tracing::info!(file = %path.display(), "configuration file changed; reloading");
                        // The outcome is logged and counted by the broker.
                        let _ = app.broker().reload().await;
                        continue;
                    }
                    WatchStep::Unreadable(why) => {
                        tracing::warn!(file = %path.display(), "configuration file changed but cannot be read; nothing applied: {why}");
                        app.broker().reload_failed();
                    }
                    WatchStep::Wait => {}
                }
            }
            // Logged by the broker's control door, under its reload lock.
            app.broker().reload_changed_credentials().await;
        }
    })
}

/// What the configuration watch does after one read of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum WatchStep {
    /// Nothing yet (unchanged, or changed and waiting for a second read).
    Wait,
    /// Two reads one interval apart agree on new content: reload.
    Apply,
    /// The file cannot be read; said once per reason.
    Unreadable(String),
}

/// The configuration watch's memory: the content in force, a change seen
/// once, and the last reason the file could not be read. Pure.
#[derive(Debug)]
struct ConfigWatch {
    applied: Option<[u8; 32]>,
    pending: Option<[u8; 32]>,
    reported: Option<String>,
}

impl ConfigWatch {
    fn new(applied: Option<[u8; 32]>) -> ConfigWatch {
        ConfigWatch {
            applied,
            pending: None,
            reported: None,
        }
    }

    /// One read of the file: its SHA-256, or why it could not be read.
    fn next(&mut self, read: Result<[u8; 32], String>) -> WatchStep {
        match read {
            Ok(digest) if Some(digest) == self.applied => {
                self.pending = None;
                self.reported = None;
                WatchStep::Wait
            }
            Ok(digest) if Some(digest) == self.pending => {
                self.applied = Some(digest);
                self.pending = None;
                self.reported = None;
                WatchStep::Apply
            }
            Ok(digest) => {
                self.pending = Some(digest);
                WatchStep::Wait
            }
            Err(why) => {
                self.pending = None;
                if self.reported.as_deref() == Some(why.as_str()) {
                    WatchStep::Wait
                } else {
                    self.reported = Some(why.clone());
                    WatchStep::Unreadable(why)
                }
            }
        }
    }
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
            let _ = app.broker().reload().await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_applied_once_two_reads_agree() {
        let (a, b, c) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let mut watch = ConfigWatch::new(Some(a));
        assert_eq!(watch.next(Ok(a)), WatchStep::Wait);
        // Half-written (b), then whole (c): neither applied on one read.
        assert_eq!(watch.next(Ok(b)), WatchStep::Wait);
        assert_eq!(watch.next(Ok(c)), WatchStep::Wait);
        assert_eq!(watch.next(Ok(c)), WatchStep::Apply);
        assert_eq!(watch.next(Ok(c)), WatchStep::Wait);
        // A change undone before the second read is not applied.
        assert_eq!(watch.next(Ok(b)), WatchStep::Wait);
        assert_eq!(watch.next(Ok(c)), WatchStep::Wait);
        assert_eq!(watch.next(Ok(c)), WatchStep::Wait);
    }

    #[test]
    fn an_unreadable_file_is_reported_once_per_reason() {
        let mut watch = ConfigWatch::new(Some([1u8; 32]));
        let large = || Err("larger than 1048576 bytes".to_owned());
        assert_eq!(
            watch.next(large()),
            WatchStep::Unreadable("larger than 1048576 bytes".into())
        );
        assert_eq!(watch.next(large()), WatchStep::Wait);
        let fifo = Err("not a regular file".to_owned());
        assert!(matches!(watch.next(fifo), WatchStep::Unreadable(_)));
        // Readable again and back to what is in force: quiet.
        assert_eq!(watch.next(Ok([1u8; 32])), WatchStep::Wait);
        assert!(matches!(watch.next(large()), WatchStep::Unreadable(_)));
    }
}
