//! From `[shared_cache]` to a connected [`SharedCache`]: the keys, the
//! Redis credentials and the CA file read and checked first (errors name
//! the key at fault), then the store, connected in the background.

use super::{seal, store, FleetObserver, FleetSettings, Op, SharedCache};
use crate::clock::SharedClock;
use std::sync::Arc;
use std::time::Duration;

/// A `[shared_cache]` setting that cannot be used: the key at fault and
/// what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SetupError {
    pub key: String,
    pub message: String,
}

impl SetupError {
    fn new(key: &str, message: String) -> SetupError {
        SetupError {
            key: key.to_owned(),
            message,
        }
    }

    /// The configuration error it is, in the file at `config_path`.
    pub fn in_config(self, config_path: &std::path::Path) -> crate::config::ConfigError {
        crate::config::ConfigError::Invalid {
            path: config_path.to_owned(),
            key: self.key,
            message: self.message,
        }
    }
}

/// Everything `[shared_cache]` needs read before connecting: the keys, the
/// Redis user and password, the CA file. Errors name the key at fault.
pub fn prepare(
    config: &crate::config::Config,
) -> Result<Option<(seal::Keys, store::RedisTarget)>, SetupError> {
    let Some(shared) = &config.shared_cache else {
        return Ok(None);
    };
    let keys = seal::Keys::load(&shared.key_file, &shared.old_key_files).map_err(|e| {
        let key = if e.path == shared.key_file {
            "shared_cache.key_file"
        } else {
            "shared_cache.old_key_files"
        };
        SetupError::new(key, e.to_string())
    })?;
    let secret = |env_key: &str,
                  env: &Option<crate::config::EnvVarName>,
                  file_key: &str,
                  file: &Option<std::path::PathBuf>|
     -> Result<Option<zeroize::Zeroizing<String>>, SetupError> {
        use crate::sys::{SecretError, SecretSource};
        let (key, source) = match (env, file) {
            (Some(name), _) => (env_key, SecretSource::Env(name.as_str().to_owned())),
            (None, Some(path)) => (file_key, SecretSource::File(path.clone())),
            (None, None) => return Ok(None),
        };
        source.read().map(Some).map_err(|e| {
            let message = match (&source, e) {
                (SecretSource::Env(name), SecretError::Unset) => format!(
                    "the environment variable {name} is not set (or not UTF-8); set it, or name a file in {file_key}"
                ),
                (SecretSource::File(path), SecretError::Read(e)) => {
                    format!("cannot read {}: {e}", path.display())
                }
                (source, e) => format!("the {} {e}", source.describe()),
            };
            SetupError::new(key, message)
        })
    };
    let username = secret(
        "shared_cache.username_env",
        &shared.username_env,
        "shared_cache.username_file",
        &shared.username_file,
    )?
    .map(|u| u.to_string());
    let password = secret(
        "shared_cache.password_env",
        &shared.password_env,
        "shared_cache.password_file",
        &shared.password_file,
    )?;
    let ca_pem =
        match &shared.ca_file {
            Some(path) => Some(crate::sys::read_bounded(path).map(|b| b.to_vec()).map_err(
                |e| {
                    SetupError::new(
                        "shared_cache.ca_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                },
            )?),
            None => None,
        };
    let target = store::RedisTarget {
        seeds: shared.seeds().into_iter().map(str::to_owned).collect(),
        cluster: shared.is_cluster(),
        username,
        password,
        ca_pem,
        timeout: shared.timeout.0,
    };
    Ok(Some((keys, target)))
}

/// Connects the shared cache `config` names (in the background: this
/// returns at once), or `None` without `[shared_cache]`.
pub fn connect(
    config: &crate::config::Config,
    clock: SharedClock,
    observer: Arc<dyn FleetObserver>,
) -> Result<Option<SharedCache>, SetupError> {
    let Some((keys, target)) = prepare(config)? else {
        return Ok(None);
    };
    let Some(shared) = &config.shared_cache else {
        return Ok(None);
    };
    let store = store::RedisStore::connect(target)
        .map_err(|e| SetupError::new("shared_cache.url", e.to_string()))?;
    let shown = store.target().to_owned();
    let shared = SharedCache::new(
        Arc::new(store),
        shown,
        keys,
        FleetSettings {
            prefix: shared.prefix.clone(),
            timeout: shared.timeout.0,
            lease: shared.lease.0,
            negative_ttl: config.cache.negative_ttl.0,
            min_remaining: config.cache.min_remaining.0,
        },
        clock,
        observer,
    );
    Ok(Some(shared))
}

impl SharedCache {
    /// Connects now, in the background, so the first callers do not pay
    /// for it (and the health shows as soon as Redis answers); then, for
    /// as long as the cache lives, pings Redis whenever the host had no
    /// other traffic to it for [`IDLE_PROBE`](super::IDLE_PROBE).
    pub fn warm_up(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            for _ in 0..50 {
                let Some(shared) = weak.upgrade() else { return };
                if shared.op(Op::Get, shared.store.ping()).await.is_ok() {
                    break;
                }
                drop(shared);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            loop {
                tokio::time::sleep(super::IDLE_PROBE).await;
                let Some(shared) = weak.upgrade() else { return };
                if shared.idle_for(super::IDLE_PROBE) {
                    let _ = shared.op(Op::Get, shared.store.ping()).await;
                }
            }
        });
    }
}
