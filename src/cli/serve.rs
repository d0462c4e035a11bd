//! `serve`: logging, signals, the daemon until it is stopped (and
//! `serve --dev`'s simulated authority).

use super::{load, runtime, CliError, LogFormat};
use crate::config::{Config, ConfigLocation};
use crate::credentials::{Credential, CredentialSet};
use crate::daemon::{self};
use std::sync::Arc;

/// Sets up logging to stderr (`RUST_LOG` filters, default `info`), info
/// lines in batches (`log_writer`); the guard writes what is left.
pub(super) fn init_logging(format: LogFormat) -> crate::log_writer::LogGuard {
    let stderr = crate::log_writer::Batched::new(std::io::stderr());
    let guard = stderr.guard();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(stderr);
    // A second initialisation (tests) is harmless: the first one stays.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .event_format(crate::log_json::JsonLines::new())
            .try_init(),
    };
    guard
}

/// Resolves on SIGTERM or SIGINT.
pub(super) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = terminate => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

pub(super) fn serve(
    location: &ConfigLocation,
    dev: bool,
    listen: Option<std::net::SocketAddr>,
    log_format: LogFormat,
) -> Result<(), CliError> {
    // Dropped when serving ends, before an error is printed.
    let _logs = init_logging(log_format);
    let config_path = location.path.as_path();
    let runtime = runtime()?;
    let result = runtime.block_on(async move {
        // First of all: until SIGHUP is caught, it would end the process.
        let hangup = daemon::catch_sighup();
        let (config, credentials, dev_mode) = if dev {
            let (config, credential, dev_mode) = dev_setup(listen).await?;
            (config, vec![CredentialSet::single(credential)], Some(dev_mode))
        } else {
            let (mut config, credentials, warnings) = load(location, true)?;
            for warning in warnings {
                tracing::warn!("{warning}");
            }
            if let Some(addr) = listen {
                // The override is held to the same rules as the file.
                config.server.listen = addr;
                config.validate(config_path)?;
            }
            (config, credentials, None)
        };
        let server = &config.server;
        if !server.listen.ip().is_loopback() {
            tracing::warn!(listen = %server.listen, "listening on a non-loopback address (server.allow_remote = true): tokens are served to other hosts");
        }
        let listeners = crate::server::Listeners::bind(server)
            .await
            .map_err(CliError::from)?;
        let local = listeners
            .local_addr()
            .map_err(|e| CliError::Other(format!("listener address: {e}")))?;
        let mut options = daemon::Options::from_config(&config);
        options.listen_override = listen.filter(|_| dev_mode.is_none());
        let file = dev_mode.is_none().then_some(config_path);
        let app = daemon::start(Arc::new(config), file, credentials, options).await?;
        match hangup {
            Ok(hangup) => {
                daemon::spawn_sighup(Arc::clone(&app), hangup);
            }
            Err(e) => tracing::error!("cannot catch SIGHUP (reload with `tokenbroker reload` instead): {e}"),
        }
        daemon::spawn_watch(Arc::clone(&app));
        daemon::spawn_token_files(Arc::clone(&app));
        let saver = daemon::spawn_state_saver(Arc::clone(&app));
        // Kept alive (the simulated authority stops when dropped) until serving ends.
        let _dev_mode = dev_mode.map(|dev| dev.announce(local));
        crate::server::run(Arc::clone(&app), listeners, shutdown_signal()).await;
        let limit = app.broker().with_config(|c| c.server.shutdown_timeout.0);
        // The periodic writer stops first: an older snapshot must not land
        // after the last one.
        if let Some(saver) = saver {
            saver.abort();
            let _ = saver.await;
        }
        daemon::save_state_at_exit(&app, limit).await;
        tracing::info!("stopped");
        Ok::<(), CliError>(())
    });
    // Work still running on blocking threads (a reload reading a stuck
    // file, say) never keeps the process from exiting.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

#[cfg(feature = "dev-mode")]
use crate::dev::Running as DevMode;

/// Without the simulator there is no dev mode to keep alive.
#[cfg(not(feature = "dev-mode"))]
#[derive(Debug)]
pub(super) enum DevMode {}

#[cfg(not(feature = "dev-mode"))]
impl DevMode {
    fn announce(self, _local: std::net::SocketAddr) -> DevMode {
        match self {}
    }
}

#[cfg(feature = "dev-mode")]
pub(super) async fn dev_setup(
    listen: Option<std::net::SocketAddr>,
) -> Result<(Config, Credential, DevMode), CliError> {
    let addr = listen.unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 8765)));
    let setup = crate::dev::setup(addr)
        .await
        .map_err(|e| CliError::Other(e.to_string()))?;
    Ok(setup.into_parts())
}

#[cfg(not(feature = "dev-mode"))]
pub(super) async fn dev_setup(
    _listen: Option<std::net::SocketAddr>,
) -> Result<(Config, Credential, DevMode), CliError> {
    Err(CliError::Usage(
        "--dev: this tokenbroker was built without the dev-mode feature (the simulated authority); \
         build it with default features"
            .into(),
    ))
}
