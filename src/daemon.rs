//! Start-up: from a configuration and a credential to a running app. One
//! path for `tokenbroker serve`, `serve --dev`, the tests and the benches:
//! [`Options::from_config`] (tests then shorten retries), [`start`], then
//! [`Listeners::bind`](crate::server::Listeners::bind) and
//! [`server::run`](crate::server::run).

use crate::authority::{AuthoritySettings, BuildError};
use crate::broker::Broker;
use crate::cache::CacheSettings;
use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, ConfigError};
use crate::credentials::{Credential, CredentialStore};
use crate::metrics::Metrics;
use crate::server::App;
use std::path::Path;
use std::sync::Arc;

/// How the broker runs, beyond the configuration (tests tune these).
#[derive(Debug, Clone)]
pub struct Options {
    pub authority: AuthoritySettings,
    pub cache: CacheSettings,
    pub clock: SharedClock,
}

impl Options {
    /// What the configuration says, on the system clock.
    pub fn from_config(config: &Config) -> Options {
        Options {
            authority: AuthoritySettings::from_config(config),
            cache: CacheSettings::from_config(&config.cache),
            clock: Arc::new(SystemClock),
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

/// Builds the broker and the app for `config`, and starts fetching a token
/// for every configured tenant in the background. Call it inside the
/// runtime that will serve. `config_path` names the file in errors.
pub async fn start(
    config: Arc<Config>,
    config_path: &Path,
    credential: Credential,
    options: Options,
) -> Result<Arc<App>, StartError> {
    let metrics = Arc::new(Metrics::new(&config));
    let broker = Broker::with_settings(
        config,
        options.authority,
        options.cache,
        Arc::new(CredentialStore::new(credential)),
        options.clock,
        metrics.clone(),
    )
    .map_err(|e| StartError::from_build(config_path, e))?;
    broker.prefetch_configured_tenants();
    Ok(Arc::new(App::new(broker, metrics)))
}
