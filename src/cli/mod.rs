//! The `tokenbroker` command line.
//!
//! Exit codes (docs/contract.md, "Command line"): 0 success, 2 usage or
//! configuration error (bad config, unusable certificate or key), 1 anything
//! else.

use crate::access::{secret, Policy};
use crate::authority::{AuthorityClient, AuthoritySettings};
use crate::clock::{unix_seconds, SystemClock};
use crate::cloud::{self, Cloud};
use crate::config::{self, Config, ConfigError};
use crate::credentials::{
    self, rfc3339, CertificateInfo, Credential, CredentialError, CredentialSet, PasswordSource,
    Validity,
};
use crate::daemon::{self, StartError};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;
use zeroize::Zeroizing;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "tokenbroker",
    version,
    about = "Local broker for Microsoft Graph app-only tokens",
    long_about = "tokenbroker holds a multi-tenant Entra ID app's certificate and key, acquires \
app-only Microsoft Graph tokens for each consenting customer tenant (OAuth 2.0 client \
credentials), caches them, and serves them to local services over HTTP: its own /v1/token \
API and the App Service managed-identity protocol at /msi/token.",
    after_long_help = "FILES:\n  /etc/tokenbroker/tokenbroker.toml  configuration (default: config/tokenbroker.toml; \
TOKENBROKER_CONFIG or --config)\n  /etc/tokenbroker/cert.pem, key.pem  the app's certificate and key\n  \
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
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
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
enum Command {
    /// Run the daemon.
    Serve {
        /// Configuration file.
        #[arg(long, env = "TOKENBROKER_CONFIG", default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
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
        /// Configuration file to take the client ID and cloud from.
        #[arg(long, env = "TOKENBROKER_CONFIG", default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Client ID (instead of the configuration's).
        #[arg(long)]
        client_id: Option<String>,
        /// Cloud (instead of the configuration's): global, usgov, usgov-dod, china.
        #[arg(long)]
        cloud: Option<String>,
    },
    /// Validate the configuration, certificate and key; with --online, also
    /// acquire one token per configured tenant.
    Check {
        /// Configuration file.
        #[arg(long, env = "TOKENBROKER_CONFIG", default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Also acquire a token for every configured tenant.
        #[arg(long)]
        online: bool,
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
        #[arg(long)]
        tenant: String,
        /// Resource (default: the cloud's Microsoft Graph).
        #[arg(long)]
        resource: Option<String>,
    },
    /// Drop a tenant's cached tokens and remembered refusals (over the admin socket).
    Evict {
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        tenant: String,
        /// Resource (default: every resource cached for the tenant).
        #[arg(long)]
        resource: Option<String>,
    },
    /// Reload the configuration and credentials, as SIGHUP does (over the admin socket).
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
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
        /// Configuration file.
        #[arg(long, env = "TOKENBROKER_CONFIG", default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Print the whole response as JSON instead.
        #[arg(long)]
        json: bool,
    },
}

/// Where the admin socket is.
#[derive(Debug, clap::Args)]
struct AdminArgs {
    /// The admin socket (default: server.admin_socket of the configuration).
    #[arg(long)]
    admin_socket: Option<PathBuf>,
    /// Configuration file naming server.admin_socket.
    #[arg(long, env = "TOKENBROKER_CONFIG", default_value = config::DEFAULT_CONFIG_PATH)]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum CertCommand {
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
    },
}

/// `cert new` with the key made inside a PKCS#11 token.
#[derive(Debug, clap::Args)]
struct Pkcs11Args {
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
enum CacheKeyCommand {
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
enum SecretCommand {
    /// Print a fresh account secret and its `secret_sha256` line.
    New {
        /// Account the secret is for.
        #[arg(long)]
        account: String,
    },
}

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
    /// Anything else (exit 1).
    #[error("{0}")]
    Other(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Config(_) | CliError::Credential(_) => 2,
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
        } => serve(&config, dev, listen, cli.log_format),
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
        }) => cert_inspect(
            &cert,
            key.as_deref(),
            password_env.as_deref(),
            pkcs11.config()?,
        ),
        Command::Secret(SecretCommand::New { account }) => secret_new(&account),
        Command::ConsentUrl {
            tenant,
            redirect_uri,
            state,
            config,
            client_id,
            cloud,
        } => consent_url(
            &tenant,
            redirect_uri.as_deref(),
            state.as_deref(),
            &config,
            client_id,
            cloud,
        ),
        Command::Check { config, online } => check(&config, online),
        Command::Token {
            tenant,
            resource,
            config,
            json,
        } => token(&tenant, resource.as_deref(), &config, json),
        Command::Status {
            admin,
            tenant,
            json,
        } => admin::status(&admin.socket()?, tenant.as_deref(), json),
        Command::Refresh {
            admin,
            tenant,
            resource,
        } => admin::act(&admin.socket()?, "refresh", &tenant, resource.as_deref()),
        Command::Evict {
            admin,
            tenant,
            resource,
        } => admin::act(&admin.socket()?, "evict", &tenant, resource.as_deref()),
        Command::Reload { admin } => admin::reload(&admin.socket()?),
        Command::CacheKey(CacheKeyCommand::New { out, force }) => cache_key_new(&out, force),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            // Into memory first: clap_complete panics when its writer fails
            // (a closed pipe), and a closed pipe is an error here, not a crash.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "tokenbroker", &mut script);
            write_stdout(&script)
        }
        Command::Man { out } => {
            use clap::CommandFactory;
            if let Some(dir) = out {
                return std::fs::create_dir_all(&dir)
                    .and_then(|()| clap_mangen::generate_to(Cli::command(), &dir))
                    .map_err(|e| {
                        CliError::Other(format!(
                            "writing the manual pages to {}: {e}",
                            dir.display()
                        ))
                    });
            }
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut page)
                .map_err(|e| CliError::Other(format!("rendering the manual page: {e}")))?;
            write_stdout(&page)
        }
    }
}

impl AdminArgs {
    /// `--admin-socket`, else the configuration's `server.admin_socket`.
    fn socket(&self) -> Result<PathBuf, CliError> {
        if let Some(path) = &self.admin_socket {
            return Ok(path.clone());
        }
        let config = Config::load(&self.config)?;
        config.server.admin_socket.ok_or_else(|| {
            CliError::Usage(format!(
                "{} sets no server.admin_socket; set it (and restart the daemon), or pass --admin-socket PATH",
                self.config.display()
            ))
        })
    }
}

mod admin;

fn write_stdout(bytes: &[u8]) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::Other(format!("writing to stdout: {e}")))
}

fn out(text: std::fmt::Arguments<'_>) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_fmt(text)
        .and_then(|()| stdout.write_all(b"\n"))
        .map_err(|e| CliError::Other(format!("writing to stdout: {e}")))
}

fn cert_new(subject: &str, days: u32, bits: u32, dir: &Path, force: bool) -> Result<(), CliError> {
    let key_size = match bits {
        2048 => rcgen::RsaKeySize::_2048,
        3072 => rcgen::RsaKeySize::_3072,
        4096 => rcgen::RsaKeySize::_4096,
        other => {
            return Err(CliError::Usage(format!(
                "--bits {other}: use 2048, 3072 or 4096"
            )))
        }
    };
    let params = certificate_params(subject, days)?;
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, key_size)
        .map_err(|e| CliError::Other(format!("generating the RSA key: {e}")))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| CliError::Other(format!("signing the certificate: {e}")))?;

    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::Other(format!("creating {}: {e}", dir.display())))?;
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    for path in [&cert_path, &key_path] {
        if path.exists() && !force {
            return Err(CliError::Usage(format!(
                "{} exists; choose another --out directory or pass --force to replace it",
                path.display()
            )));
        }
    }
    let key_pem = Zeroizing::new(key.serialize_pem());
    write_file(&key_path, key_pem.as_bytes(), 0o600)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;

    let info = CertificateInfo::from_der(cert.der()).map_err(CliError::Other)?;
    out(format_args!("certificate: {}", cert_path.display()))?;
    out(format_args!(
        "private key: {} (mode 0600; keep it on this host only)",
        key_path.display()
    ))?;
    print_info(&info)?;
    out(format_args!(
        "\nUpload {} in the Entra admin center: App registrations > your app > \
         Certificates & secrets > Certificates > Upload certificate.\n\
         The portal will show thumbprint {}.",
        cert_path.display(),
        info.thumbprint_sha1
    ))
}

impl Pkcs11Args {
    fn config(&self) -> Result<Option<crate::config::Pkcs11Config>, CliError> {
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

/// The certificate's signer when the key is in a token: rcgen asks it for
/// the public key and to sign the certificate.
struct TokenKey {
    key: crate::credentials::pkcs11::HsmKey,
    /// PKCS#1 RSAPublicKey DER.
    public: Vec<u8>,
}

impl rcgen::PublicKeyData for TokenKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

impl rcgen::SigningKey for TokenKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.key
            .sign(crate::config::SigningAlgorithm::RS256, msg)
            .map_err(|e| {
                tracing::error!("{e}");
                rcgen::Error::RemoteKeyError
            })
    }
}

/// `cert new` with the key made inside a PKCS#11 token.
fn cert_new_pkcs11(
    subject: &str,
    days: u32,
    bits: u32,
    dir: &Path,
    force: bool,
    config: &crate::config::Pkcs11Config,
) -> Result<(), CliError> {
    use rsa::pkcs1::der::Encode as _;
    if !matches!(bits, 2048 | 3072 | 4096) {
        return Err(CliError::Usage(format!(
            "--bits {bits}: use 2048, 3072 or 4096"
        )));
    }
    let params = certificate_params(subject, days)?;
    let cert_path = dir.join("cert.pem");
    if cert_path.exists() && !force {
        return Err(CliError::Usage(format!(
            "{} exists; choose another --out directory or pass --force to replace it",
            cert_path.display()
        )));
    }
    let (modulus, exponent) =
        crate::credentials::pkcs11::generate(config, bits).map_err(CliError::Other)?;
    let public = rsa::pkcs1::RsaPublicKeyRef {
        modulus: rsa::pkcs1::UintRef::new(&modulus)
            .map_err(|e| CliError::Other(format!("the token's modulus: {e}")))?,
        public_exponent: rsa::pkcs1::UintRef::new(&exponent)
            .map_err(|e| CliError::Other(format!("the token's exponent: {e}")))?,
    }
    .to_der()
    .map_err(|e| CliError::Other(format!("encoding the token's public key: {e}")))?;
    let key = crate::credentials::pkcs11::HsmKey::open(config).map_err(CliError::Other)?;
    let signer = TokenKey { key, public };
    let cert = params
        .self_signed(&signer)
        .map_err(|e| CliError::Other(format!("signing the certificate in the token: {e}")))?;
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::Other(format!("creating {}: {e}", dir.display())))?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    let info = CertificateInfo::from_der(cert.der()).map_err(CliError::Other)?;
    out(format_args!("certificate: {}", cert_path.display()))?;
    out(format_args!(
        "private key: in token \"{}\" as \"{}\" (sensitive, never extractable; no key file written)",
        config.token, config.key_label
    ))?;
    print_info(&info)?;
    out(format_args!(
        "\nConfigure it as\n  [[app.credentials]]\n  certificate = \"{}\"\n  pkcs11 = {{ module = \"{}\", token = \"{}\", key_label = \"{}\", pin_env = \"{}\" }}\n\
         and upload {} to the app registration (thumbprint {}).",
        cert_path.display(),
        config.module.display(),
        config.token,
        config.key_label,
        config.pin_env.as_str(),
        cert_path.display(),
        info.thumbprint_sha1
    ))
}

fn cache_key_new(path: &Path, force: bool) -> Result<(), CliError> {
    if path.exists() && !force {
        return Err(CliError::Usage(format!(
            "{} exists; every host shares this key, so replacing it is a rotation: \
             keep the old one in shared_cache.old_key_files, then pass --force",
            path.display()
        )));
    }
    let text = crate::fleet::seal::new_key_file_text().map_err(CliError::Other)?;
    write_file(path, text.as_bytes(), 0o600)?;
    let keys =
        crate::fleet::seal::Keys::load(path, &[]).map_err(|e| CliError::Other(e.to_string()))?;
    out(format_args!(
        "shared-cache key: {} (mode 0600; key id {})\n\
         Copy it to every host of the fleet and set shared_cache.key_file to it.",
        path.display(),
        keys.current_id()
    ))
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CliError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    options
        .open(path)
        .and_then(|mut f| {
            // `mode` applies only when the file is created; an existing file
            // (--force) keeps its old mode unless it is set explicitly.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                f.set_permissions(std::fs::Permissions::from_mode(mode))?;
            }
            f.write_all(contents)
        })
        .map_err(|e| CliError::Other(format!("writing {}: {e}", path.display())))
}

/// What `cert new` certifies: the subject, `days` of validity (backdated 5
/// minutes, so a host with a slow clock does not see "not yet valid"), a
/// client-authentication key usage and a random positive serial.
fn certificate_params(subject: &str, days: u32) -> Result<rcgen::CertificateParams, CliError> {
    if days == 0 || days > 3650 {
        return Err(CliError::Usage(format!("--days {days}: use 1 to 3650")));
    }
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = parse_subject(subject)?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(i64::from(days));
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let mut serial = [0u8; 16];
    aws_lc_rs::rand::fill(&mut serial)
        .map_err(|_| CliError::Other("the system random generator failed".into()))?;
    serial[0] &= 0x7f; // positive
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    Ok(params)
}

/// Parses `CN=name,O=org,…` into a distinguished name.
fn parse_subject(subject: &str) -> Result<rcgen::DistinguishedName, CliError> {
    let mut dn = rcgen::DistinguishedName::new();
    for part in subject.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((attr, value)) = part.split_once('=') else {
            return Err(CliError::Usage(format!(
                "--subject: \"{part}\" is not ATTR=value; write e.g. CN=tokenbroker,O=Contoso"
            )));
        };
        let kind = match attr.trim().to_ascii_uppercase().as_str() {
            "CN" => rcgen::DnType::CommonName,
            "O" => rcgen::DnType::OrganizationName,
            "OU" => rcgen::DnType::OrganizationalUnitName,
            "L" => rcgen::DnType::LocalityName,
            "ST" => rcgen::DnType::StateOrProvinceName,
            "C" => rcgen::DnType::CountryName,
            other => {
                return Err(CliError::Usage(format!(
                    "--subject: attribute \"{other}\" is not supported; use CN, O, OU, L, ST or C"
                )))
            }
        };
        dn.push(kind, value.trim());
    }
    if dn.get(&rcgen::DnType::CommonName).is_none() {
        return Err(CliError::Usage(
            "--subject must contain CN=…, e.g. CN=tokenbroker".into(),
        ));
    }
    Ok(dn)
}

fn print_info(info: &CertificateInfo) -> Result<(), CliError> {
    out(format_args!("subject:        {}", info.subject))?;
    out(format_args!("issuer:         {}", info.issuer))?;
    out(format_args!("not before:     {}", rfc3339(info.not_before)))?;
    out(format_args!("not after:      {}", rfc3339(info.not_after)))?;
    out(format_args!(
        "thumbprint:     {}  (SHA-1, as the Azure portal shows it)",
        info.thumbprint_sha1
    ))?;
    out(format_args!("x5t:            {}", info.x5t))?;
    out(format_args!("x5t#S256:       {}", info.x5t_s256))?;
    if info.key_algorithm == "RSA" {
        out(format_args!("key:            RSA {} bits", info.key_bits))
    } else {
        out(format_args!(
            "key:            {} (Entra accepts RSA only)",
            info.key_algorithm
        ))
    }
}

fn cert_inspect(
    path: &Path,
    key: Option<&Path>,
    password_env: Option<&str>,
    token: Option<crate::config::Pkcs11Config>,
) -> Result<(), CliError> {
    let password = password_env.map(|name| PasswordSource::from_env(name, "--password-env"));
    let (infos, embedded_match) = credentials::inspect_file(path, password.as_ref())?;
    let Some(leaf) = infos.first() else {
        return Err(CliError::Other(format!(
            "{} holds no certificate",
            path.display()
        )));
    };
    print_info(leaf)?;
    let status = match leaf.validity_at(SystemTime::now()) {
        Validity::Valid => "valid".to_owned(),
        Validity::ExpiresSoon(left) => format!(
            "valid, expires in {} days: rotate soon",
            left.as_secs() / 86_400
        ),
        Validity::Expired => "EXPIRED".to_owned(),
        Validity::NotYetValid => "NOT YET VALID".to_owned(),
    };
    out(format_args!("status:         {status}"))?;
    if infos.len() > 1 {
        out(format_args!(
            "chain:          {} more certificate(s)",
            infos.len() - 1
        ))?;
    }
    let matches = match (key, &token) {
        (Some(key_path), _) => Some(credentials::key_matches(leaf, key_path, password.as_ref())?),
        (None, Some(config)) => {
            let key = credentials::pkcs11::HsmKey::open(config).map_err(CliError::Other)?;
            Some(credentials::same_rsa_key(leaf, key.public()))
        }
        (None, None) => embedded_match,
    };
    match matches {
        Some(true) => out(format_args!("key matches:    yes")),
        Some(false) => {
            out(format_args!("key matches:    NO"))?;
            Err(CliError::Credential(CredentialError::KeyMismatch {
                certificate: path.to_owned(),
                key: match (key, &token) {
                    (Some(key), _) => key.to_owned(),
                    (None, Some(t)) => PathBuf::from(format!("pkcs11:{}/{}", t.token, t.key_label)),
                    (None, None) => path.to_owned(),
                },
                thumbprint: leaf.thumbprint_sha1.clone(),
            }))
        }
        None => Ok(()),
    }
}

fn secret_new(account: &str) -> Result<(), CliError> {
    config::Name::try_from(account.to_owned())
        .map_err(|e| CliError::Usage(format!("--account: {e}")))?;
    let secret = secret::generate()
        .map_err(|_| CliError::Other("the system random generator failed".into()))?;
    let hex = secret::sha256_hex(&secret);
    out(format_args!("{}", secret.as_str()))?;
    eprintln!(
        "The line above is the secret for account \"{account}\": give it to that service \
         (Authorization: Bearer …, or IDENTITY_HEADER). It is not stored anywhere.\n\
         Put this line in the [[accounts]] entry named \"{account}\":\n\n    secret_sha256 = \"{hex}\"\n"
    );
    Ok(())
}

fn consent_url(
    tenant: &str,
    redirect_uri: Option<&str>,
    state: Option<&str>,
    config_path: &Path,
    client_id: Option<String>,
    cloud: Option<String>,
) -> Result<(), CliError> {
    if tenant != "organizations" {
        config::check_tenant_id(tenant).map_err(|e| CliError::Usage(format!("--tenant: {e}")))?;
    }
    let cloud: Option<Cloud> = match cloud {
        Some(name) => Some(
            Cloud::ALL
                .into_iter()
                .find(|c| c.name() == name)
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "--cloud \"{name}\": use global, usgov, usgov-dod or china"
                    ))
                })?,
        ),
        None => None,
    };
    let (client_id, cloud, authority) = match client_id {
        Some(id) => {
            config::Guid::try_from(id.clone())
                .map_err(|e| CliError::Usage(format!("--client-id: {e}")))?;
            let cloud = cloud.unwrap_or_default();
            (id, cloud, cloud.authority_host().to_owned())
        }
        None => {
            let config = Config::load(config_path).map_err(|e| match e {
                // Consent comes before the configuration in the set-up: the
                // client ID is all this command needs.
                ConfigError::Read { path, source } => CliError::Usage(format!(
                    "no client ID: pass --client-id <Application (client) ID>, or --config FILE \
                     (cannot read {}: {source})",
                    path.display()
                )),
                other => CliError::Config(other),
            })?;
            let cloud = cloud.unwrap_or(config.app.cloud);
            let authority = match &config.app.authority_host {
                Some(host) => host.as_str().to_owned(),
                None => cloud.authority_host().to_owned(),
            };
            (config.app.client_id.as_str().to_owned(), cloud, authority)
        }
    };
    if let Some(uri) = redirect_uri {
        url::Url::parse(uri)
            .map_err(|e| CliError::Usage(format!("--redirect-uri \"{uri}\": {e}")))?;
    }
    let url = cloud::admin_consent_url(
        &authority,
        tenant,
        &client_id,
        cloud.graph_resource(),
        redirect_uri,
        state,
    )
    .map_err(|e| CliError::Other(format!("building the consent URL: {e}")))?;
    out(format_args!("{url}"))
}

/// Loads configuration and credentials as `check`, `token` and `serve` need them.
fn load(config_path: &Path) -> Result<(Config, CredentialSet, Vec<String>), CliError> {
    let config = Config::load(config_path)?;
    daemon::preflight(&config, config_path)?;
    let (credentials, warnings) = daemon::load_credentials(&config, config_path)?;
    Ok((config, credentials, warnings))
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(format!("starting the async runtime: {e}")))
}

impl From<StartError> for CliError {
    fn from(e: StartError) -> CliError {
        match e {
            StartError::Config(e) => CliError::Config(e),
            other => CliError::Other(other.to_string()),
        }
    }
}

fn authority_client(
    config_path: &Path,
    config: &Config,
    credentials: CredentialSet,
) -> Result<AuthorityClient, CliError> {
    AuthorityClient::new(
        AuthoritySettings::from_config(config),
        Arc::new(credentials),
        Arc::new(SystemClock),
    )
    .map_err(|e| StartError::from_build(config_path, e).into())
}

fn check(config_path: &Path, online: bool) -> Result<(), CliError> {
    let (config, credentials, warnings) = load(config_path)?;
    out(format_args!(
        "configuration: {} is valid",
        config_path.display()
    ))?;
    out(format_args!(
        "  app {} in cloud {}, authority {}, signing {:?}",
        config.app.client_id,
        config.app.cloud,
        config.app.authority_host(),
        config.app.signing
    ))?;
    out(format_args!(
        "  {} tenant(s), {} account(s), listening on {}",
        config.tenants.len(),
        config.accounts.len(),
        config.server.listen
    ))?;
    for credential in credentials.all().iter() {
        match credential.certificate() {
            Some(info) => out(format_args!(
                "credential: {} (thumbprint {}, RSA {} bits, valid until {})",
                info.subject,
                info.thumbprint_sha1,
                info.key_bits,
                rfc3339(info.not_after)
            ))?,
            None => out(format_args!(
                "credential: {} ({})",
                credential.id(),
                credential.kind()
            ))?,
        }
    }
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    if online {
        if config.shared_cache.is_some() {
            runtime()?.block_on(check_shared_cache(config_path, &config))?;
        }
        let client = authority_client(config_path, &config, credentials)?;
        let failures = runtime()?.block_on(check_tenants(&config, &client))?;
        if failures > 0 {
            return Err(CliError::Other(format!(
                "{failures} of {} tenant(s) failed; see above",
                config.tenants.len()
            )));
        }
    }
    out(format_args!("ok"))
}

/// Connects to the shared cache and round-trips a sealed probe value: the
/// connection, the credentials and the key all work.
async fn check_shared_cache(config_path: &Path, config: &Config) -> Result<(), CliError> {
    let observer: Arc<dyn crate::fleet::FleetObserver> = Arc::new(NoFleetObserver);
    let shared = crate::fleet::connect(config, Arc::new(SystemClock), observer)
        .map_err(|(key, message)| {
            CliError::Config(ConfigError::Invalid {
                path: config_path.to_owned(),
                key,
                message,
            })
        })?
        .ok_or_else(|| CliError::Other("no [shared_cache] configured".into()))?;
    let target = shared.status().target;
    // A cluster connects in the background: give it a few tries.
    let mut last = String::new();
    for _ in 0..10 {
        match shared.probe().await {
            Ok(()) => {
                return out(format_args!(
                    "shared cache {target}: ok (wrote, read and opened a sealed value; key id {})",
                    shared.status().key_id
                ))
            }
            Err(e) => last = e,
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    Err(CliError::Other(format!(
        "shared cache {target}: FAILED: {last}; check shared_cache.url(s), the Redis user and password, and that every host has the same key_file"
    )))
}

#[derive(Debug)]
struct NoFleetObserver;
impl crate::fleet::FleetObserver for NoFleetObserver {}

/// Acquires one Graph token per configured tenant, concurrently (bounded by
/// the client), and reports each outcome. Returns the number of failures.
async fn check_tenants(config: &Config, client: &AuthorityClient) -> Result<usize, CliError> {
    let graph = config.app.graph();
    let graph = &graph;
    let results = futures_util::future::join_all(
        config
            .tenants
            .iter()
            .map(|t| async move { (t, client.acquire(&t.id, graph).await) }),
    )
    .await;
    let mut failures = 0;
    for (tenant, result) in results {
        match result {
            Ok(token) => {
                let roles = crate::broker::status::token_roles(token.access_token.expose());
                let missing: Vec<&str> = tenant
                    .required_permissions
                    .iter()
                    .map(|p| p.as_str())
                    .filter(|p| {
                        roles
                            .as_ref()
                            .is_some_and(|r| !r.iter().any(|have| have == p))
                    })
                    .collect();
                let roles_text = match &roles {
                    Some(r) if r.is_empty() => "no application permissions granted".to_owned(),
                    Some(r) => format!("roles {}", r.join(", ")),
                    None => "roles unreadable (opaque token)".to_owned(),
                };
                if missing.is_empty() {
                    out(format_args!(
                        "tenant {} ({}): ok, token valid for {} s, {roles_text}",
                        tenant.name,
                        tenant.id,
                        token.expires_in.as_secs()
                    ))?;
                } else {
                    failures += 1;
                    out(format_args!(
                        "tenant {} ({}): FAILED: missing permission(s) {}; add them to the app registration and have the tenant's admin consent again (`tokenbroker consent-url --tenant {}`); {roles_text}",
                        tenant.name,
                        tenant.id,
                        missing.join(", "),
                        tenant.id
                    ))?;
                }
            }
            Err(e) => {
                failures += 1;
                let code = e
                    .entra()
                    .and_then(|x| x.aadsts())
                    .unwrap_or_else(|| "no AADSTS code".into());
                out(format_args!(
                    "tenant {} ({}): FAILED ({code}): {e}",
                    tenant.name, tenant.id
                ))?;
            }
        }
    }
    Ok(failures)
}

fn token(
    tenant: &str,
    resource: Option<&str>,
    config_path: &Path,
    json: bool,
) -> Result<(), CliError> {
    let (config, credentials, warnings) = load(config_path)?;
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    // The operator runs this with the configuration's own credential: no
    // account is involved, only the validation of what is asked.
    let target = Policy::new(&config)
        .target(tenant, resource)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let client = authority_client(config_path, &config, credentials)?;
    let response = runtime()?
        .block_on(client.acquire(&target.tenant.id, &target.resource))
        .map_err(|e| CliError::Other(e.to_string()))?;
    let expires_in = response.expires_in.as_secs();
    let expires_on = SystemTime::now() + response.expires_in;
    let expires_on_unix = unix_seconds(expires_on);
    if json {
        let body = serde_json::json!({
            "access_token": response.access_token.expose(),
            "token_type": "Bearer",
            "expires_in": expires_in,
            "expires_on": expires_on_unix,
            "tenant_id": target.tenant.id.as_str(),
            "resource": target.resource.as_str(),
        });
        out(format_args!("{body}"))
    } else {
        out(format_args!("{}", response.access_token.expose()))?;
        eprintln!("expires {} (in {expires_in} s)", rfc3339(expires_on));
        Ok(())
    }
}

/// Sets up logging to stderr: `RUST_LOG` filters (default `info`).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second initialisation (tests) is harmless: the first one stays.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
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

fn serve(
    config_path: &Path,
    dev: bool,
    listen: Option<std::net::SocketAddr>,
    log_format: LogFormat,
) -> Result<(), CliError> {
    init_logging(log_format);
    runtime()?.block_on(async move {
        // First of all: until SIGHUP is caught, it would end the process.
        let hangup = daemon::catch_sighup();
        let (config, credentials, dev_mode) = if dev {
            let (config, credential, dev_mode) = dev_setup(listen).await?;
            (config, CredentialSet::single(credential), Some(dev_mode))
        } else {
            let (mut config, credentials, warnings) = load(config_path)?;
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
            .map_err(|e| CliError::Other(e.to_string()))?;
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
        // Kept alive (the simulated authority stops when dropped) until serving ends.
        let _dev_mode = dev_mode.map(|dev| dev.announce(local));
        crate::server::run(app, listeners, shutdown_signal()).await;
        tracing::info!("stopped");
        Ok(())
    })
}

#[cfg(feature = "dev-mode")]
use crate::dev::Running as DevMode;

/// Without the simulator there is no dev mode to keep alive.
#[cfg(not(feature = "dev-mode"))]
#[derive(Debug)]
enum DevMode {}

#[cfg(not(feature = "dev-mode"))]
impl DevMode {
    fn announce(self, _local: std::net::SocketAddr) -> DevMode {
        match self {}
    }
}

#[cfg(feature = "dev-mode")]
async fn dev_setup(
    listen: Option<std::net::SocketAddr>,
) -> Result<(Config, Credential, DevMode), CliError> {
    let addr = listen.unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 8765)));
    let setup = crate::dev::setup(addr)
        .await
        .map_err(|e| CliError::Other(e.to_string()))?;
    Ok(setup.into_parts())
}

#[cfg(not(feature = "dev-mode"))]
async fn dev_setup(
    _listen: Option<std::net::SocketAddr>,
) -> Result<(Config, Credential, DevMode), CliError> {
    Err(CliError::Usage(
        "--dev: this tokenbroker was built without the dev-mode feature (the simulated authority); \
         build it with default features"
            .into(),
    ))
}
