//! The door for changes of state, beside the request door: a reload of the
//! configuration file (SIGHUP, the admin API, `watch_config`) and a reload
//! of credential files that changed (the credential watch, and the
//! authority client when Entra refused every credential). Every one of
//! them goes through here, under one lock, so two never interleave.

use super::{Applied, Apps, Broker};
use crate::authority::{BuildError, CredentialReload};
use crate::clock::SharedClock;
use crate::config::{Config, ConfigError};
use crate::credentials::{CredentialError, CredentialSet};
use arc_swap::ArcSwap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// No reload holds the reload lock longer than this: reading files that
/// hang (a stuck network mount) fails the reload instead of blocking every
/// later one, and credential rotation with it.
pub const RELOAD_BOUND: Duration = Duration::from_secs(10);

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("nothing to reload: this daemon runs on an in-memory configuration (dev mode)")]
    NoFile,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// The HTTP client for the new settings could not be built.
    #[error(transparent)]
    Client(BuildError),
    /// The blocking task that reads the files did not finish.
    #[error("the reload task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// Reading the files took longer than [`RELOAD_BOUND`].
    #[error("reading the configuration and credential files took longer than {} s (a file on a stuck mount?); nothing changed", RELOAD_BOUND.as_secs())]
    TimedOut,
}

impl ReloadError {
    /// Whether the new configuration (or a credential it names) is at fault.
    pub fn is_configuration(&self) -> bool {
        !matches!(self, ReloadError::NoFile | ReloadError::TimedOut)
    }

    /// A client build failure, as a configuration error where the operator
    /// can fix it (`app.ca_file` of the file at `config_path`).
    pub fn from_build(config_path: &Path, e: BuildError) -> ReloadError {
        match e.into_config(config_path) {
            Ok(config) => ReloadError::Config(config),
            Err(other) => ReloadError::Client(other),
        }
    }
}

/// The reload lock and the apps (with their credentials) it guards.
#[derive(Debug)]
pub struct Control {
    lock: tokio::sync::Mutex<()>,
    apps: Arc<ArcSwap<Apps>>,
    clock: SharedClock,
}

impl Control {
    pub(super) fn new(apps: Arc<ArcSwap<Apps>>, clock: SharedClock) -> Control {
        Control {
            lock: tokio::sync::Mutex::new(()),
            apps,
            clock,
        }
    }

    /// Re-reads each app's credential files if any changed, off the
    /// runtime (it reads files and parses keys), under the reload lock.
    /// Whether new credentials came in. A change that does not load keeps
    /// the old credentials signing, with a warning.
    pub async fn reload_changed_credentials(&self) -> bool {
        let _one_at_a_time = self.lock.lock().await;
        let apps: Vec<_> = self
            .apps
            .load()
            .credentials()
            .map(|(key, set)| (key.name.clone(), Arc::clone(set)))
            .collect();
        let mut any = false;
        for (app, credentials) in apps {
            any |= self.reload_app(app.as_str(), credentials).await;
        }
        any
    }

    async fn reload_app(&self, app: &str, credentials: Arc<CredentialSet>) -> bool {
        let now = self.clock.now();
        let set = Arc::clone(&credentials);
        let check = tokio::task::spawn_blocking(move || set.reload_if_changed(now));
        let Ok(checked) = tokio::time::timeout(RELOAD_BOUND, check).await else {
            tracing::warn!(
                "reading the credential files took longer than {} s (a stuck mount?); the credentials in force keep signing",
                RELOAD_BOUND.as_secs()
            );
            return false;
        };
        match checked {
            Ok(Ok(Some(warnings))) => {
                warnings.iter().for_each(|w| tracing::warn!("{w}"));
                tracing::info!(
                    app,
                    in_use = %credentials.in_use(),
                    "credential files changed; reloaded them"
                );
                true
            }
            Ok(Ok(None)) => false,
            Ok(Err(e)) => {
                tracing::warn!(
                    app,
                    "credential files changed but do not load; the old credentials keep signing until they do: {e}"
                );
                false
            }
            Err(e) => {
                tracing::error!("the credential check failed: {e}");
                false
            }
        }
    }
}

impl CredentialReload for Control {
    fn reload_changed(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(self.reload_changed_credentials())
    }
}

impl Broker {
    /// Re-reads the configuration file and every credential file, checks it
    /// all, then puts it in force at once. A reload that fails changes
    /// nothing (the broker keeps serving on the old state), is logged and
    /// counted, and says why.
    pub async fn reload(&self) -> Result<Applied, ReloadError> {
        let _one_at_a_time = self.control.lock.lock().await;
        let Some(path) = self.config_path().map(Path::to_owned) else {
            return Err(ReloadError::NoFile);
        };
        let read = tokio::task::spawn_blocking(move || -> Result<_, ReloadError> {
            let config = Config::load(&path)?;
            let (credentials, warnings) = CredentialSet::read(&config, &path)?;
            Ok((config, credentials, warnings, path))
        });
        // Past the bound the read is abandoned (its result unused) and the
        // lock is free again.
        let loaded = match tokio::time::timeout(RELOAD_BOUND, read).await {
            Ok(joined) => joined.map_err(ReloadError::from).and_then(|r| r),
            Err(_) => Err(ReloadError::TimedOut),
        };
        let outcome = loaded.and_then(|(config, credentials, warnings, path)| {
            warnings.iter().for_each(|w| tracing::warn!("{w}"));
            self.apply(config, Some(credentials))
                .map_err(|e| ReloadError::from_build(&path, e))
        });
        match &outcome {
            Ok(applied) => tracing::info!(
                restart_needed = ?applied.restart_needed,
                dropped = applied.dropped,
                cleared = applied.cleared,
                "configuration reloaded"
            ),
            Err(e) => {
                self.reload_failed();
                tracing::error!("reload failed, nothing changed: {e}");
            }
        }
        outcome
    }

    /// Re-reads credential files that changed (the credential watch).
    pub async fn reload_changed_credentials(&self) -> bool {
        self.control.reload_changed_credentials().await
    }
}
