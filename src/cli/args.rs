//! The command line's arguments: every command and option, with its help.

use super::CliError;
use crate::config::{self, Config, ConfigError, ConfigLocation};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "tokenbroker",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("TOKENBROKER_COMMIT"), ")"),
    about = "Local broker for Microsoft Graph app-only tokens",
    long_about = "tokenbroker holds a multi-tenant Entra ID app's certificate and key, acquires \
app-only Microsoft Graph tokens for each consenting customer tenant (OAuth 2.0 client \
credentials), caches them, and serves them to local services over HTTP: its own /v1/token \
API and the App Service managed-identity protocol at /msi/token.",
    after_long_help = "FILES:\n  /etc/tokenbroker/tokenbroker.toml  configuration (when neither --config nor \
TOKENBROKER_CONFIG names one)\n  /etc/tokenbroker/cert.pem, key.pem  the app's certificate and key\n  \
/run/tokenbroker/tokenbroker.sock  the callers' Unix socket (server.unix_socket)\n\n\
ENVIRONMENT:\n  TOKENBROKER_CONFIG  the configuration file, when --config is not given\n  \
RUST_LOG  log filter (default: info)\n\n\
EXIT STATUS:\n  0 success, 2 usage or configuration error, 1 anything else.\n\n\
SIGNALS:\n  SIGHUP reloads the configuration and credentials; SIGTERM and SIGINT stop after the \
requests in flight."
)]
pub struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub(super) log_format: LogFormat,
    #[command(subcommand)]
    pub(super) command: Command,
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people.
    Text,
    /// For machines: one JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub(super) enum Command {
    /// Run the daemon.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
        /// Run with no Azure: a simulated authority, a throw-away certificate,
        /// two tenants and one account.
        #[arg(long)]
        dev: bool,
        /// Listen here instead of server.listen (with --dev: default 127.0.0.1:8765).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Certificates for the app registration.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Account secrets.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Print the admin-consent URL a customer's global admin opens.
    ConsentUrl {
        /// Tenant GUID, verified domain, or `organizations` (the admin's own tenant).
        #[arg(long)]
        tenant: String,
        /// Where Entra sends the admin afterwards; must be registered on the app.
        #[arg(long)]
        redirect_uri: Option<String>,
        /// Opaque value echoed back to the redirect URI; check it there.
        #[arg(long)]
        state: Option<String>,
        /// The configuration names the client ID, the cloud and the tenants.
        #[command(flatten)]
        config: ConfigArg,
        /// Client ID (instead of the configuration's).
        #[arg(long)]
        client_id: Option<String>,
        /// Cloud (instead of the configuration's): global, usgov, usgov-dod, china.
        #[arg(long)]
        cloud: Option<String>,
        /// The app whose consent is asked, by its name in the configuration
        /// (default: the first app).
        #[arg(long, conflicts_with = "client_id")]
        app: Option<String>,
    },
    /// Validate the configuration, certificate and key; with --online, also
    /// acquire one token per configured tenant.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Also acquire a token for every configured tenant.
        #[arg(long)]
        online: bool,
        /// Print one JSON document (also when a check fails) instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Show the daemon's status and each tenant's (over the admin socket).
    Status {
        #[command(flatten)]
        admin: AdminArgs,
        /// One tenant only (name, GUID or domain).
        #[arg(long)]
        tenant: Option<String>,
        /// Print JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Acquire a tenant's token now, past the cached one (over the admin socket).
    Refresh {
        #[command(flatten)]
        admin: AdminArgs,
        /// Tenant name, GUID or verified domain.
        #[arg(long)]
        tenant: String,
        /// Resource (default: the cloud's Microsoft Graph).
        #[arg(long)]
        resource: Option<String>,
        /// App name (default: the first app).
        #[arg(long)]
        app: Option<String>,
        /// Print the tenant's rows as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Drop a tenant's cached tokens and remembered refusals (over the admin socket).
    Evict {
        #[command(flatten)]
        admin: AdminArgs,
        /// Tenant name, GUID or verified domain.
        #[arg(long)]
        tenant: String,
        /// Resource (default: every resource cached for the tenant).
        #[arg(long)]
        resource: Option<String>,
        /// App name (default: every app).
        #[arg(long)]
        app: Option<String>,
        /// Print the tenant's rows as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Reload the configuration and credentials, as SIGHUP does (over the admin socket).
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the daemon's answer as JSON instead of a line.
        #[arg(long)]
        json: bool,
    },
    /// The fleet's shared-cache key.
    #[command(subcommand, name = "cache-key")]
    CacheKey(CacheKeyCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    ///
    /// bash: `tokenbroker completions bash > /etc/bash_completion.d/tokenbroker`;
    /// zsh: into a directory of `$fpath` as `_tokenbroker`;
    /// fish: `~/.config/fish/completions/tokenbroker.fish`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on stdout: `tokenbroker man | man -l -`.
    Man {
        /// Write every page instead (tokenbroker.1 and one per command,
        /// tokenbroker-serve.1, ...) into this directory, e.g.
        /// /usr/local/share/man/man1.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Acquire one token now: the token alone on stdout, its expiry on stderr.
    Token {
        /// Tenant name, GUID or verified domain.
        #[arg(long)]
        tenant: String,
        /// Resource (default: the cloud's Microsoft Graph).
        #[arg(long)]
        resource: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
        /// Print the whole response as JSON instead.
        #[arg(long)]
        json: bool,
    },
}

/// Where the admin socket is.
#[derive(Debug, clap::Args)]
pub(super) struct AdminArgs {
    /// The admin socket (default: server.admin_socket of the configuration).
    #[arg(long)]
    admin_socket: Option<PathBuf>,
    /// The configuration names server.admin_socket.
    #[command(flatten)]
    config: ConfigArg,
}

/// `--config FILE`; without it `$TOKENBROKER_CONFIG`, else the packaged path.
#[derive(Debug, Clone, clap::Args)]
pub(super) struct ConfigArg {
    /// Configuration file [default: $TOKENBROKER_CONFIG, else
    /// /etc/tokenbroker/tokenbroker.toml].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl ConfigArg {
    /// The file this command reads, and why that one.
    pub(super) fn locate(&self) -> ConfigLocation {
        let env = std::env::var_os(config::CONFIG_ENV);
        ConfigLocation::find(self.config.as_deref(), env.as_deref())
    }
}

#[derive(Debug, Subcommand)]
pub(super) enum CertCommand {
    /// Create a self-signed certificate and key to upload to the app registration.
    New {
        /// Subject, e.g. `CN=tokenbroker,O=Contoso` (CN, O, OU, L, ST, C).
        #[arg(long)]
        subject: String,
        /// Validity in days.
        #[arg(long, default_value_t = 730)]
        days: u32,
        /// RSA key size: 2048, 3072 or 4096.
        #[arg(long, default_value_t = 2048)]
        bits: u32,
        /// Directory for `cert.pem` and `key.pem`.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        pkcs11: Pkcs11Args,
    },
    /// Show a certificate's subject, validity and thumbprints.
    Inspect {
        /// PEM, DER or PFX file.
        cert: PathBuf,
        /// Key file to check against the certificate.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Environment variable holding the key or PFX password.
        #[arg(long)]
        password_env: Option<String>,
        /// Check the key in a PKCS#11 token instead of a key file.
        #[command(flatten)]
        pkcs11: Pkcs11Args,
        /// Print one JSON document instead of lines.
        #[arg(long)]
        json: bool,
    },
}

/// `cert new` with the key made inside a PKCS#11 token.
#[derive(Debug, clap::Args)]
pub(super) struct Pkcs11Args {
    /// Make the key inside this PKCS#11 module's token (HSM) instead of a
    /// key file: it is generated there (sensitive, never extractable) and
    /// never leaves it. Only cert.pem is written.
    #[arg(long, requires_all = ["token", "key_label", "pin_env"])]
    pkcs11_module: Option<PathBuf>,
    /// The token's label.
    #[arg(long)]
    token: Option<String>,
    /// The label of the key to make (it must not exist yet).
    #[arg(long)]
    key_label: Option<String>,
    /// The environment variable holding the token's user PIN.
    #[arg(long)]
    pin_env: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(super) enum CacheKeyCommand {
    /// Write a fresh AES-256 key for `shared_cache.key_file` (mode 0600).
    /// Every host of the fleet needs the same file.
    New {
        /// The key file to write.
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum SecretCommand {
    /// Print a fresh account secret and its `secret_sha256` line.
    New {
        /// Account the secret is for.
        #[arg(long)]
        account: String,
    },
}

impl AdminArgs {
    /// `--admin-socket`, else the configuration's `server.admin_socket`.
    pub(super) fn socket(&self) -> Result<PathBuf, CliError> {
        if let Some(path) = &self.admin_socket {
            return Ok(path.clone());
        }
        let location = self.config.locate();
        let socket = Config::admin_socket_of(&location.path).map_err(|e| {
            let hint = match &e {
                ConfigError::Read { .. } => format!(" ({})", location.explain()),
                _ => String::new(),
            };
            CliError::Usage(format!(
                "this command cannot find the admin socket, so the daemon was not asked: {e}{hint}; \
                 fix the file, or pass --admin-socket PATH"
            ))
        })?;
        socket.ok_or_else(|| {
            CliError::Usage(format!(
                "{} sets no server.admin_socket; set it (and restart the daemon), or pass --admin-socket PATH",
                location.path.display()
            ))
        })
    }
}

impl Pkcs11Args {
    pub(super) fn config(&self) -> Result<Option<crate::config::Pkcs11Config>, CliError> {
        let Some(module) = &self.pkcs11_module else {
            return Ok(None);
        };
        let (Some(token), Some(key_label), Some(pin_env)) =
            (&self.token, &self.key_label, &self.pin_env)
        else {
            return Err(CliError::Usage(
                "--pkcs11-module needs --token, --key-label and --pin-env".into(),
            ));
        };
        let pin_env = crate::config::EnvVarName::try_from(pin_env.clone())
            .map_err(|e| CliError::Usage(format!("--pin-env: {e}")))?;
        Ok(Some(crate::config::Pkcs11Config {
            module: module.clone(),
            token: token.clone(),
            key_label: key_label.clone(),
            pin_env,
        }))
    }
}
