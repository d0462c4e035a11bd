//! The `tokenbroker` command line.
//!
//! Exit codes (docs/contract.md, "Command line"): 0 success, 2 usage or
//! configuration error (bad config, unusable certificate or key), 1 anything
//! else.

use crate::config::{Config, ConfigError, ConfigLocation};
use crate::credentials::{CredentialError, CredentialSet};
use crate::daemon::{self, StartError};
use std::io::Write;
use std::process::ExitCode;

/// A command failure and its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments (exit 2).
    #[error("{0}")]
    Usage(String),
    /// Bad configuration (exit 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Unusable certificate or key (exit 2).
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// The host cannot run it as configured: permission denied, a missing
    /// directory, an address this host does not have (exit 2: restarting
    /// does not fix it).
    #[error("{0}")]
    Environment(String),
    /// Anything else (exit 1).
    #[error("{0}")]
    Other(String),
}

/// The exit codes every command uses (the manual lists them from here).
pub const EXIT_CODES: [(u8, &str); 3] = [
    (0, "Success."),
    (
        1,
        "Anything else: the daemon or Entra could not be reached, a tenant failed, the address is \
         in use (it may pass; the unit restarts).",
    ),
    (
        2,
        "A usage or configuration error: an unknown flag or tenant, a bad or unreadable \
         configuration, certificate or key, a socket directory missing or not writable, a \
         listener that cannot bind for any reason but an address in use. Restarting does not \
         fix it (the unit's RestartPreventExitStatus=2).",
    ),
];

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_)
            | CliError::Config(_)
            | CliError::Credential(_)
            | CliError::Environment(_) => 2,
            CliError::Other(_) => 1,
        }
    }
}

/// Parses the process arguments, runs the command, and returns the exit code.
pub fn run() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match refuse_dev_with_config(&matches).and_then(|()| execute(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `serve --dev` runs on an in-memory configuration: a `--config` given
/// with it would be silently ignored, so it is a usage error. (The
/// `TOKENBROKER_CONFIG` variable is not: it is meant for the non-dev runs.)
fn refuse_dev_with_config(matches: &clap::ArgMatches) -> Result<(), CliError> {
    let Some(("serve", serve)) = matches.subcommand() else {
        return Ok(());
    };
    let explicit = serve.value_source("config") == Some(clap::parser::ValueSource::CommandLine);
    if serve.get_flag("dev") && explicit {
        return Err(CliError::Usage(
            "serve: --dev runs on a built-in configuration (simulated authority, tenants contoso and fabrikam) \
             and cannot take --config; drop --dev to serve your configuration, or drop --config"
                .into(),
        ));
    }
    Ok(())
}

fn execute(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve {
            config,
            dev,
            listen,
        } => serve(&config.locate(), dev, listen, cli.log_format),
        Command::Cert(CertCommand::New {
            subject,
            days,
            bits,
            out,
            force,
            pkcs11,
        }) => match pkcs11.config()? {
            Some(config) => cert_new_pkcs11(&subject, days, bits, &out, force, &config),
            None => cert_new(&subject, days, bits, &out, force),
        },
        Command::Cert(CertCommand::Inspect {
            cert,
            key,
            password_env,
            pkcs11,
            json,
        }) => match pkcs11.config() {
            Ok(token) => cert_inspect(&cert, key.as_deref(), password_env.as_deref(), token, json),
            Err(e) => or_json_error(json, Err(e)),
        },
        Command::Secret(SecretCommand::New { account }) => secret_new(&account),
        Command::ConsentUrl {
            tenant,
            redirect_uri,
            state,
            config,
            client_id,
            cloud,
            app,
        } => consent_url(
            &tenant,
            redirect_uri.as_deref(),
            state.as_deref(),
            &config.locate(),
            client_id,
            cloud,
            app.as_deref(),
        ),
        Command::Check {
            config,
            online,
            json,
        } => check(&config.locate(), online, json),
        Command::Token {
            tenant,
            resource,
            config,
            json,
        } => token(&tenant, resource.as_deref(), &config.locate(), json),
        Command::Status {
            admin,
            tenant,
            json,
        } => or_json_error(
            json,
            admin
                .socket()
                .and_then(|socket| admin::status(&socket, tenant.as_deref(), json)),
        ),
        Command::Refresh {
            admin,
            tenant,
            resource,
            app,
            json,
        } => or_json_error(
            json,
            admin.socket().and_then(|socket| {
                let target = admin::Target {
                    tenant: &tenant,
                    resource: resource.as_deref(),
                    app: app.as_deref(),
                };
                admin::act(&socket, "refresh", &target, json)
            }),
        ),
        Command::Evict {
            admin,
            tenant,
            resource,
            app,
            json,
        } => or_json_error(
            json,
            admin.socket().and_then(|socket| {
                let target = admin::Target {
                    tenant: &tenant,
                    resource: resource.as_deref(),
                    app: app.as_deref(),
                };
                admin::act(&socket, "evict", &target, json)
            }),
        ),
        Command::Reload { admin, json } => match admin.socket() {
            Ok(socket) => admin::reload(&socket, json),
            Err(e) => or_json_error(json, Err(e)),
        },
        Command::CacheKey(CacheKeyCommand::New { out, force }) => cache_key_new(&out, force),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            // Into memory first: clap_complete panics when its writer fails
            // (a closed pipe), and a closed pipe is an error here, not a crash.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "tokenbroker", &mut script);
            write_stdout(&script)
        }
        // The pages name the release, not the commit: a package's
        // committed pages stay the same from one commit to the next.
        Command::Man { out: Some(dir) } => manual::write_pages(&dir),
        Command::Man { out: None } => write_stdout(&manual::main_page()?),
    }
}

mod admin;
mod args;
mod cert;
mod check;
mod consent;
mod manual;
mod secrets;
mod serve;
mod token;

use args::{CacheKeyCommand, CertCommand, Command, SecretCommand};
pub use args::{Cli, LogFormat};
use cert::{cert_inspect, cert_new, cert_new_pkcs11};
use check::check;
use consent::consent_url;
use secrets::{cache_key_new, secret_new};
use serve::serve;
use token::token;

/// With `--json`, a failure is a JSON document on stdout too (the error
/// line still goes to stderr), so a script always has one to parse.
pub(super) fn or_json_error(json: bool, result: Result<(), CliError>) -> Result<(), CliError> {
    if let (true, Err(e)) = (json, &result) {
        let document = serde_json::json!({"error": e.to_string(), "exit_code": e.exit_code()});
        // The error itself is what the caller learns; a closed stdout adds nothing.
        let _ = out(format_args!("{document}"));
    }
    result
}

pub(super) fn write_stdout(bytes: &[u8]) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::Other(format!("writing to stdout: {e}")))
}

pub(super) fn out(text: std::fmt::Arguments<'_>) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_fmt(text)
        .and_then(|()| stdout.write_all(b"\n"))
        .map_err(|e| CliError::Other(format!("writing to stdout: {e}")))
}

/// Reads the configuration at `location`; a file that cannot be read is
/// explained with where the command looked.
pub(super) fn load_config(location: &ConfigLocation) -> Result<Config, CliError> {
    Config::load(&location.path).map_err(|e| match e {
        ConfigError::Read { .. } => CliError::Usage(format!("{e}\n  ({})", location.explain())),
        other => CliError::Config(other),
    })
}

/// Loads configuration and credentials as `check`, `token` and `serve` need
/// them; `sockets`: also check the socket directories (not for `token`,
/// which listens on none).
pub(super) fn load(
    location: &ConfigLocation,
    sockets: bool,
) -> Result<(Config, Vec<CredentialSet>, Vec<String>), CliError> {
    let config = load_config(location)?;
    let config_path = location.path.as_path();
    daemon::preflight(&config, config_path, sockets)?;
    let (credentials, warnings) = daemon::load_credentials(&config, config_path)?;
    Ok((config, credentials, warnings))
}

pub(super) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(format!("starting the async runtime: {e}")))
}

impl From<crate::server::BindError> for CliError {
    /// An address in use may pass (the old process still stopping): exit 1,
    /// so the unit restarts. Any other bind failure will not: exit 2.
    fn from(e: crate::server::BindError) -> CliError {
        if e.source.kind() == std::io::ErrorKind::AddrInUse {
            CliError::Other(e.to_string())
        } else {
            CliError::Environment(format!("{e}; fix {} or the host", e.key))
        }
    }
}

impl From<StartError> for CliError {
    fn from(e: StartError) -> CliError {
        match e {
            StartError::Config(e) => CliError::Config(e),
            other => CliError::Other(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    fn parse(args: &[&str]) -> Result<(clap::ArgMatches, Cli), clap::Error> {
        let matches = Cli::command().try_get_matches_from(args)?;
        let cli = Cli::from_arg_matches(&matches)?;
        Ok((matches, cli))
    }

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_option_and_command_has_a_help_line() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() {
                    missing.push(format!("{path} --{}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{path} {}", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "tokenbroker", &mut missing);
        assert!(missing.is_empty(), "no help line: {missing:?}");
    }

    #[test]
    fn dev_mode_refuses_an_explicit_configuration() {
        let (matches, cli) = parse(&["tokenbroker", "serve", "--dev"]).unwrap();
        assert!(matches!(cli.command, Command::Serve { dev: true, .. }));
        assert!(refuse_dev_with_config(&matches).is_ok());
        let (matches, _) = parse(&["tokenbroker", "serve", "--dev", "--config", "x.toml"]).unwrap();
        let refused = refuse_dev_with_config(&matches).unwrap_err();
        assert_eq!(refused.exit_code(), 2);
        assert!(refused.to_string().contains("--dev"), "{refused}");
        let (matches, _) = parse(&["tokenbroker", "serve", "--config", "x.toml"]).unwrap();
        assert!(refuse_dev_with_config(&matches).is_ok());
    }

    #[test]
    fn admin_commands_take_their_tenant_and_socket() {
        let (_, cli) = parse(&[
            "tokenbroker",
            "refresh",
            "--tenant",
            "contoso",
            "--admin-socket",
            "/run/tb/admin.sock",
        ])
        .unwrap();
        match cli.command {
            Command::Refresh {
                admin,
                tenant,
                resource,
                app: None,
                json: false,
            } => {
                assert_eq!(tenant, "contoso");
                assert_eq!(resource, None);
                assert_eq!(
                    admin.socket().unwrap(),
                    std::path::Path::new("/run/tb/admin.sock")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            parse(&["tokenbroker", "refresh"]).is_err(),
            "--tenant is required"
        );
        assert!(parse(&["tokenbroker", "no-such-command"]).is_err());
    }

    #[test]
    fn exit_codes_follow_the_contract() {
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
        assert_eq!(CliError::Other("x".into()).exit_code(), 1);
        let config = ConfigError::Invalid {
            path: "/etc/t.toml".into(),
            key: "app".into(),
            message: "x".into(),
        };
        assert_eq!(CliError::Config(config).exit_code(), 2);
    }
}
