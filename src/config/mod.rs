//! The TOML configuration operators write (docs/contract.md, "Configuration").
//!
//! - [`schema`]: the file's shape and its documented defaults;
//! - [`types`]: the vocabulary (validated values such as [`TenantId`] and
//!   [`Resource`]) that the rest of the daemon passes around;
//! - `validate`: the rules that span keys.
//!
//! Validation happens in two steps. Each value checks itself as it is parsed,
//! so the TOML parser's error names the key and its line. Rules that span
//! keys run afterwards and name the key path, e.g. `accounts[1].tenants`.

pub mod schema;
pub mod types;
pub(crate) mod validate;

pub use schema::{
    AccountConfig, AppConfig, CacheConfig, Config, CredentialConfig, GraphConfig, GraphRuleConfig,
    ManagedIdentityConfig, ManagedIdentityProtocol, Pkcs11Config, ServerConfig, SharedCacheConfig,
    SigningAlgorithm, TenantConfig, TokenFileConfig, TokenFileFormat,
};
pub use types::{
    check_tenant_id, is_guid, parse_file_mode, AppKey, AuthorityHost, ConfigDuration, EnvVarName,
    Guid, HostName, Name, Permission, ResolvedTenant, Resource, SecretHash, SecretHashes, TenantId,
    TenantKey, TenantRef,
};

use std::path::{Path, PathBuf};

/// Where commands look when neither `--config` nor `TOKENBROKER_CONFIG` is
/// given: the path the package installs.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/tokenbroker/tokenbroker.toml";

/// The environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "TOKENBROKER_CONFIG";

/// Where a command's configuration file came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFrom {
    /// `--config FILE`.
    Flag,
    /// `$TOKENBROKER_CONFIG`.
    Env,
    /// Neither: [`DEFAULT_CONFIG_PATH`].
    Default,
}

/// The configuration file a command uses, and why that one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigLocation {
    pub path: PathBuf,
    pub from: ConfigFrom,
}

impl ConfigLocation {
    /// `--config`, else `$TOKENBROKER_CONFIG` (when set and not empty), else
    /// the packaged path.
    pub fn find(flag: Option<&Path>, env: Option<&std::ffi::OsStr>) -> ConfigLocation {
        match (flag, env) {
            (Some(path), _) => ConfigLocation {
                path: path.to_owned(),
                from: ConfigFrom::Flag,
            },
            (None, Some(value)) if !value.is_empty() => ConfigLocation {
                path: PathBuf::from(value),
                from: ConfigFrom::Env,
            },
            _ => ConfigLocation {
                path: PathBuf::from(DEFAULT_CONFIG_PATH),
                from: ConfigFrom::Default,
            },
        }
    }

    /// Where the file came from and the other places, for an error that
    /// says how to point the command at the right file.
    pub fn explain(&self) -> String {
        let chosen = match self.from {
            ConfigFrom::Flag => "given with --config".to_owned(),
            ConfigFrom::Env => format!("from ${CONFIG_ENV}"),
            ConfigFrom::Default => {
                format!("the default: no --config given and ${CONFIG_ENV} is not set")
            }
        };
        format!(
            "{chosen}; a command reads --config FILE, else ${CONFIG_ENV}, else {DEFAULT_CONFIG_PATH}"
        )
    }

    /// ` --config PATH` for a command line this one suggests, when the file
    /// was not found by default (empty when it was).
    pub fn flag(&self) -> String {
        match self.from {
            ConfigFrom::Default => String::new(),
            ConfigFrom::Flag | ConfigFrom::Env => format!(" --config {}", self.path.display()),
        }
    }
}

/// A configuration problem, naming the file and the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The TOML did not parse, or a value is malformed (the parser names key and line).
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A rule that spans several keys is broken.
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        /// The key path, e.g. `accounts[0].tenants`.
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// As `Invalid`, at a line of the file.
    #[error("{path}: line {line}: {key}: {message}")]
    InvalidAt {
        path: PathBuf,
        key: String,
        /// 1-based.
        line: usize,
        message: String,
    },
}

impl ConfigError {
    /// An `Invalid` error with the line of its key in `text` (the file it
    /// was parsed from), when the key is found there.
    fn at_line_in(self, text: &str) -> ConfigError {
        match self {
            ConfigError::Invalid { path, key, message } => match key_line(text, &key) {
                Some(line) => ConfigError::InvalidAt {
                    path,
                    key,
                    line,
                    message,
                },
                None => ConfigError::Invalid { path, key, message },
            },
            other => other,
        }
    }
}

/// The directory relative paths in the file at `path` are anchored at,
/// made absolute so errors and logs show the path the daemon really opens,
/// whatever its working directory.
fn base_dir(path: &Path) -> PathBuf {
    let base = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::path::absolute(base).unwrap_or_else(|_| base.to_owned())
}

/// The line (1-based) of `key` (`accounts[1].tenants`, `server.listen`) in
/// the TOML `text`; for a key the file does not set, the line of the
/// nearest table that holds it. Pure.
pub fn key_line(text: &str, key: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let mut span = None;
    let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
    let mut value: Option<&DeValue<'_>> = None;
    for segment in key.split('.') {
        let (name, index) = match segment.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        let current = match (table, value) {
            (Some(t), _) => t,
            (None, Some(DeValue::Table(t))) => t,
            _ => break,
        };
        let Some((found_key, found)) = current.iter().find(|(k, _)| k.get_ref().as_ref() == name)
        else {
            break;
        };
        span = Some(found_key.span());
        let mut found = found;
        if let (Some(i), DeValue::Array(items)) = (index, found.get_ref()) {
            match items.get(i) {
                Some(item) => {
                    span = Some(item.span());
                    found = item;
                }
                None => break,
            }
        }
        table = None;
        value = Some(found.get_ref());
    }
    let start = span?.start;
    Some(text.get(..start)?.matches('\n').count() + 1)
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        // Read as every other file is: a regular file, bounded, opened
        // without blocking (a FIFO or device is an error, never a wait).
        let bytes = crate::sys::read_bounded(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let text = std::str::from_utf8(&bytes).map_err(|_| ConfigError::Read {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"),
        })?;
        Config::parse(text, path)
    }

    /// Parses and validates `text`; `path` only names the file in errors and
    /// anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config
            .gather_apps()
            .map_err(|(key, message)| ConfigError::Invalid {
                path: path.to_owned(),
                key,
                message,
            })
            .map_err(|e| e.at_line_in(text))?;
        config.validate(path).map_err(|e| e.at_line_in(text))?;
        // Anchored at an absolute directory, so errors and logs show the path
        // the daemon really opens, whatever its working directory.
        config.resolve_paths(&base_dir(path));
        Ok(config)
    }

    /// `server.admin_socket` of the file at `path`, read leniently: only
    /// the TOML syntax must hold, so an admin command still reaches the
    /// daemon when the rest of the file is one it would refuse (and the
    /// daemon then says why). A relative path is anchored as `load` does.
    pub fn admin_socket_of(path: &Path) -> Result<Option<PathBuf>, ConfigError> {
        let bytes = crate::sys::read_bounded(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let parse_error = |message: String| ConfigError::Parse {
            path: path.to_owned(),
            message,
        };
        let text =
            std::str::from_utf8(&bytes).map_err(|_| parse_error("not UTF-8 text".to_owned()))?;
        let table: toml::Table =
            toml::from_str(text).map_err(|e| parse_error(e.to_string().trim_end().to_owned()))?;
        let Some(value) = table.get("server").and_then(|s| s.get("admin_socket")) else {
            return Ok(None);
        };
        let socket = value.as_str().ok_or_else(|| ConfigError::Invalid {
            path: path.to_owned(),
            key: "server.admin_socket".to_owned(),
            message: "must be a path (a string)".to_owned(),
        })?;
        let socket = PathBuf::from(socket);
        if socket.is_absolute() {
            return Ok(Some(socket));
        }
        Ok(Some(base_dir(path).join(socket)))
    }

    /// The default app: the first in the file (a lone `[app]` is it).
    /// Parsing refuses a file without one, so there always is one.
    pub fn app(&self) -> &AppConfig {
        &self.apps[0]
    }

    /// The app called `name`.
    pub fn app_named(&self, name: &str) -> Option<&AppConfig> {
        self.apps.iter().find(|a| a.name.as_str() == name)
    }

    /// The app `name` names, else the first (a name the configuration no
    /// longer has falls back too).
    pub fn app_or_first(&self, name: Option<&str>) -> &AppConfig {
        name.and_then(|n| self.app_named(n))
            .unwrap_or_else(|| self.app())
    }

    /// Each configured tenant with each app it consented to, tenants in
    /// file order, then apps.
    pub fn consents(&self) -> impl Iterator<Item = (&AppConfig, &TenantConfig)> {
        self.tenants.iter().flat_map(move |tenant| {
            self.apps
                .iter()
                .filter(|app| tenant.consented_to(&app.name))
                .map(move |app| (app, tenant))
        })
    }

    /// A lone `[app]` becomes the app named "default"; each app learns
    /// where its keys are (`app` or `apps[N]`), for errors.
    fn gather_apps(&mut self) -> Result<(), (String, String)> {
        match (self.single_app.take(), self.apps.is_empty()) {
            (Some(_), false) => Err((
                "apps".into(),
                "is given together with [app]; list every app registration as [[apps]] \
                 (a lone [app] is the app named \"default\")"
                    .into(),
            )),
            (None, true) => Err((
                "app".into(),
                "is missing: name the app registration in [app] (client_id and its \
                 certificate), or several in [[apps]]"
                    .into(),
            )),
            (Some(mut app), true) => {
                app.key = "app".into();
                self.apps.push(app);
                Ok(())
            }
            (None, false) => {
                for (i, app) in self.apps.iter_mut().enumerate() {
                    app.key = format!("apps[{i}]");
                }
                Ok(())
            }
        }
    }

    /// Runs the cross-key rules again, after a command-line override (such
    /// as `serve --listen`) changed a value; `path` names the file in errors.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        validate::validate(self).map_err(|(key, message)| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        })
    }

    /// Relative file paths are relative to the configuration file, so the
    /// daemon behaves the same whatever its working directory.
    fn resolve_paths(&mut self, base: &Path) {
        let apps = self.apps.iter_mut().flat_map(|app| {
            let credentials = app.credentials.iter_mut().flat_map(|c| {
                [
                    c.certificate.as_mut(),
                    c.private_key.as_mut(),
                    c.password_file.as_mut(),
                    c.federated_token_file.as_mut(),
                    c.pkcs11.as_mut().map(|p| &mut p.module),
                ]
            });
            [
                app.certificate.as_mut(),
                app.private_key.as_mut(),
                app.private_key_password_file.as_mut(),
                app.ca_file.as_mut(),
            ]
            .into_iter()
            .chain(credentials)
        });
        let server = &mut self.server;
        let shared = self.shared_cache.iter_mut().flat_map(|c| {
            [
                Some(&mut c.key_file),
                c.ca_file.as_mut(),
                c.username_file.as_mut(),
                c.password_file.as_mut(),
            ]
            .into_iter()
            .chain(c.old_key_files.iter_mut().map(Some))
        });
        for path in [
            server.unix_socket.as_mut(),
            server.admin_socket.as_mut(),
            self.cache.state_file.as_mut(),
            self.cache.state_key_file.as_mut(),
        ]
        .into_iter()
        .chain(apps)
        .chain(shared)
        .chain(self.token_files.iter_mut().map(|f| Some(&mut f.path)))
        .flatten()
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_configuration_is_found_by_flag_then_environment_then_etc() {
        use super::{ConfigFrom, ConfigLocation};
        use std::ffi::OsStr;
        use std::path::Path;
        let flag = ConfigLocation::find(Some(Path::new("a.toml")), Some(OsStr::new("b.toml")));
        assert_eq!(
            (flag.path.to_str(), flag.from),
            (Some("a.toml"), ConfigFrom::Flag)
        );
        assert_eq!(flag.flag(), " --config a.toml");
        let env = ConfigLocation::find(None, Some(OsStr::new("b.toml")));
        assert_eq!(
            (env.path.to_str(), env.from),
            (Some("b.toml"), ConfigFrom::Env)
        );
        for unset in [None, Some(OsStr::new(""))] {
            let default = ConfigLocation::find(None, unset);
            assert_eq!(
                (default.path.to_str(), default.from),
                (
                    Some("/etc/tokenbroker/tokenbroker.toml"),
                    ConfigFrom::Default
                )
            );
            assert_eq!(default.flag(), "");
            let explained = default.explain();
            assert!(
                explained.contains("--config")
                    && explained.contains("$TOKENBROKER_CONFIG")
                    && explained.contains("/etc/tokenbroker/tokenbroker.toml"),
                "{explained}"
            );
        }
    }

    #[test]
    fn a_key_is_found_on_its_line() {
        let text = "[app]\nclient_id = \"x\"\n\n[[accounts]]\nname = \"a\"\n\n[[accounts]]\nname = \"b\"\ntenants = [\"t\"]\n[server]\nlisten = \"127.0.0.1:1\"\n";
        assert_eq!(super::key_line(text, "app.client_id"), Some(2));
        assert_eq!(super::key_line(text, "accounts[1].tenants"), Some(9));
        assert_eq!(super::key_line(text, "accounts[1].name"), Some(8));
        assert_eq!(super::key_line(text, "server.listen"), Some(11));
        // A key the file does not set: its table's line.
        assert_eq!(super::key_line(text, "accounts[0].tenants"), Some(4));
        assert_eq!(super::key_line(text, "cache.state_file"), None);
        assert_eq!(super::key_line("[app\n", "app"), None);
    }

    #[test]
    fn a_broken_rule_names_the_line() {
        let text = "[app]\nclient_id = \"11111111-2222-3333-4444-555555555555\"\ncertificate = \"c.pem\"\nprivate_key = \"k.pem\"\n\n[server]\nlisten = \"0.0.0.0:8080\"\n";
        let e = super::Config::parse(text, std::path::Path::new("/etc/t.toml")).unwrap_err();
        let said = e.to_string();
        assert!(
            said.starts_with("/etc/t.toml: line 7: server.listen: "),
            "{said}"
        );
    }

    #[test]
    fn the_admin_socket_is_read_from_a_file_the_daemon_would_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(
            &path,
            "[app]\nclient_id = 1\n[server]\nadmin_socket = \"a.sock\"\n",
        )
        .unwrap();
        let socket = super::Config::admin_socket_of(&path).unwrap().unwrap();
        assert!(
            socket.is_absolute() && socket.ends_with("a.sock"),
            "{socket:?}"
        );
        std::fs::write(&path, "[server]\nlisten = \"x\"\n").unwrap();
        assert_eq!(super::Config::admin_socket_of(&path).unwrap(), None);
        std::fs::write(&path, "[server\n").unwrap();
        let broken = super::Config::admin_socket_of(&path)
            .unwrap_err()
            .to_string();
        assert!(
            broken.contains("t.toml") && broken.contains("line 1"),
            "{broken}"
        );
    }

    use super::*;
    use crate::cloud::Cloud;
    use std::time::Duration;

    const MINIMAL: &str = r#"
[app]
client_id = "11111111-2222-3333-4444-555555555555"
certificate = "cert.pem"
private_key = "key.pem"
"#;

    const HASH_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const HASH_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const HASH_C: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/tokenbroker/tokenbroker.toml"))
    }

    /// Parses `text` expecting failure; returns the message.
    fn error(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    fn with_tenants_and_accounts(tenants: &str, accounts: &str) -> String {
        format!("{MINIMAL}\n{tenants}\n{accounts}")
    }

    #[test]
    fn token_files_are_checked_and_named_by_their_place() {
        let files = |body: &str| {
            format!("{MINIMAL}\n[[tenants]]\nname = \"contoso\"\nid = \"contoso.onmicrosoft.com\"\n{body}")
        };
        let good = files(
            "[[token_files]]\npath = \"files/contoso.token\"\ntenant = \"contoso\"\n\
             [[token_files]]\npath = \"/run/t/f.json\"\ntenant = \"fabrikam.onmicrosoft.com\"\n\
             resource = \"https://outlook.office365.com\"\nformat = \"json\"\nmode = \"0640\"\ngroup = \"mail-sync\"\n",
        );
        let config = parse(&good).unwrap();
        let [first, second] = &config.token_files[..] else {
            panic!("two files")
        };
        // Relative to the configuration file, like every path.
        assert_eq!(
            first.path,
            Path::new("/etc/tokenbroker/files/contoso.token")
        );
        assert_eq!(
            (first.format, first.mode_bits()),
            (TokenFileFormat::Token, Ok(0o600))
        );
        assert_eq!(
            (second.format, second.mode_bits()),
            (TokenFileFormat::Json, Ok(0o640))
        );
        assert_eq!(second.group.as_deref(), Some("mail-sync"));
        let one = |extra: &str| {
            files(&format!(
                "[[token_files]]\npath = \"a.token\"\ntenant = \"contoso\"\n{extra}"
            ))
        };
        for (text, key, what) in [
            (one("mode = \"0666\"\n"), "token_files[0].mode", "world-writable"),
            (one("mode = \"777x\"\n"), "token_files[0].mode", "not an octal"),
            (one("mode = \"1777\"\n"), "token_files[0].mode", "sticky"),
            (one("group = \"a b\"\n"), "token_files[0].group", "not a group name"),
            (files("[[token_files]]\npath = \"a\"\ntenant = \"*\"\n"), "token_files[0].tenant", "\"*\" is not a tenant"),
            (files("[[token_files]]\npath = \"a\"\ntenant = \"nobody\"\n"), "token_files[0].tenant", "\"nobody\" is neither"),
            (files("[[token_files]]\npath = \"dir/\"\ntenant = \"contoso\"\n"), "token_files[0].path", "names no file"),
            (
                files("[[token_files]]\npath = \"a\"\ntenant = \"contoso\"\n[[token_files]]\npath = \"a\"\ntenant = \"contoso\"\n"),
                "token_files[1].path",
                "used by two",
            ),
        ] {
            let message = error(&text);
            assert!(message.contains(key) && message.contains(what), "{text}: {message}");
        }
        // The line of the key at fault is named.
        let text = one("mode = \"0666\"\n");
        let line = text.lines().position(|l| l.starts_with("mode")).unwrap() + 1;
        assert!(error(&text).contains(&format!("line {line}: token_files[0].mode")));
        // `app` names a configured app.
        let message = error(&one("app = \"mail\"\n"));
        assert!(
            message.contains("token_files[0].app: names app \"mail\", which is not configured"),
            "{message}"
        );
        let message = error(&one("format = \"xml\"\n"));
        assert!(message.contains("unknown variant `xml`"), "{message}");
        let many: String = (0..257)
            .map(|i| format!("[[token_files]]\npath = \"f{i}\"\ntenant = \"contoso\"\n"))
            .collect();
        let message = error(&files(&many));
        assert!(
            message.contains("token_files: lists 257 files; at most 256"),
            "{message}"
        );
    }

    #[test]
    fn graph_rules_are_checked_and_named_by_their_place() {
        let account = |rules: &str| {
            format!(
                "{MINIMAL}\n[[accounts]]\nname = \"a\"\nsecret_sha256 = \"{HASH_A}\"\ntenants = [\"*\"]\n{rules}"
            )
        };
        let good = account(
            "[[accounts.graph]]\nmethods = [\"GET\"]\npaths = [\"/users/{mailbox}/messages/**\"]\n\
             mailboxes = [\"alice@contoso.com\", \"7d6c2f0e-1111-2222-3333-444444444444\"]\n\
             [[accounts.graph]]\nmethods = [\"POST\"]\npaths = [\"/users/{mailbox}/sendMail\"]\nmailboxes = [\"*\"]\n",
        );
        let config = parse(&good).unwrap();
        assert_eq!(config.accounts[0].graph.len(), 2);
        assert!(!config.accounts[0].graph_only);
        assert!(parse(&good.replace("tenants = [", "graph_only = true\ntenants = [")).is_ok());
        for (rules, key, what) in [
            ("[[accounts.graph]]\nmethods = []\npaths = [\"/users\"]\n", "accounts[0].graph[0].methods", "is empty"),
            ("[[accounts.graph]]\nmethods = [\"get\"]\npaths = [\"/users\"]\n", "accounts[0].graph[0].methods", "\"get\" is not one of"),
            ("[[accounts.graph]]\nmethods = [\"GET\"]\npaths = []\n", "accounts[0].graph[0].paths", "is empty"),
            ("[[accounts.graph]]\nmethods = [\"GET\"]\npaths = [\"/users/**/x\"]\n", "accounts[0].graph[0].paths", "only be the last"),
            ("[[accounts.graph]]\nmethods = [\"GET\"]\npaths = [\"/me/messages\"]\n", "accounts[0].graph[0].paths", "/me"),
            ("[[accounts.graph]]\nmethods = [\"GET\"]\npaths = [\"/users/{mailbox}\"]\n", "accounts[0].graph[0].mailboxes", "is empty"),
            ("[[accounts.graph]]\nmethods = [\"GET\"]\npaths = [\"/users/{mailbox}\"]\nmailboxes = [\"alice\"]\n", "accounts[0].graph[0].mailboxes", "\"alice\" is neither"),
            ("[[accounts.graph]]\nmethods = [\"GET\"]\npaths = [\"/users/{mailbox}\"]\nmailboxes = [\"a/b@c.com\"]\n", "accounts[0].graph[0].mailboxes", "is neither"),
            ("graph_only = true\n", "accounts[0].graph_only", "no [[accounts.graph]] rules"),
        ] {
            let message = error(&account(rules));
            assert!(message.contains(key) && message.contains(what), "{rules}: {message}");
        }
        let message = error(&account(
            "[[accounts.graph]]\nmethods = [\"GET\"]\npaths = [\"/users\"]\nverbs = 1\n",
        ));
        assert!(message.contains("unknown field `verbs`"), "{message}");
        // [graph] limits, and graph_host as authority_host is checked.
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.graph.max_request_bytes, 32 << 20);
        assert_eq!(config.graph.timeout.0, Duration::from_secs(100));
        let message = error(&format!("{MINIMAL}[graph]\ntimeout = \"0s\"\n"));
        assert!(
            message.contains("graph.timeout: 0s is out of bounds"),
            "{message}"
        );
        let message = error(&MINIMAL.replace(
            "[app]\n",
            "[app]\ngraph_host = \"http://graph.example.com\"\n",
        ));
        assert!(message.contains("graph_host"), "{message}");
        assert!(
            parse(&MINIMAL.replace("[app]\n", "[app]\ngraph_host = \"http://127.0.0.1:9\"\n"))
                .is_ok()
        );
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:8765".parse().unwrap());
        assert!(!config.server.allow_remote);
        let hosts: Vec<&str> = config
            .server
            .allowed_hosts
            .iter()
            .map(HostName::as_str)
            .collect();
        assert_eq!(hosts, ["localhost", "127.0.0.1", "[::1]"]);
        assert_eq!(config.app().cloud, Cloud::Global);
        assert_eq!(config.app().signing, SigningAlgorithm::PS256);
        assert_eq!(
            config.app().authority_host(),
            "https://login.microsoftonline.com"
        );
        assert_eq!(config.app().connect_timeout.0, Duration::from_secs(3));
        assert_eq!(config.app().request_timeout.0, Duration::from_secs(10));
        assert_eq!(config.cache.min_remaining.0, Duration::from_secs(300));
        assert_eq!(config.cache.keep_warm.0, Duration::from_secs(86_400));
        assert_eq!(config.cache.negative_ttl.0, Duration::from_secs(30));
        assert_eq!(config.cache.max_entries, 100_000);
        assert_eq!(config.cache.load_timeout.0, Duration::from_secs(20));
        // Relative paths are anchored at the configuration file's directory.
        assert_eq!(
            config.app().certificate.as_deref(),
            Some(Path::new("/etc/tokenbroker/cert.pem"))
        );
        assert_eq!(
            config.app().private_key.as_deref(),
            Some(Path::new("/etc/tokenbroker/key.pem"))
        );
    }

    #[test]
    fn the_example_configuration_is_valid() {
        let text = include_str!("../../config/tokenbroker.example.toml");
        let config = parse(text).unwrap();
        assert!(!config.tenants.is_empty());
        assert!(!config.accounts.is_empty());
        // Its [shared_cache] block, uncommented (one of each either-or pair).
        let (_, shared) = text.split_once("# [shared_cache]").unwrap();
        let mut block = String::from("[shared_cache]\n");
        for line in shared.lines() {
            let Some(setting) = line.strip_prefix("# ") else {
                continue;
            };
            let key = setting.split(' ').next().unwrap_or("");
            if !["urls", "username_file", "password_file"].contains(&key) && setting.contains(" = ")
            {
                block.push_str(setting);
                block.push('\n');
            }
        }
        let shared = parse(&format!("{text}\n{block}"))
            .unwrap()
            .shared_cache
            .unwrap();
        assert_eq!(
            shared.key_file,
            Path::new("/etc/tokenbroker/shared-cache.key")
        );
        assert_eq!(shared.timeout.0, Duration::from_millis(250));
        // Its [[token_files]] block, uncommented.
        let (_, files) = text.split_once("# [[token_files]]").unwrap();
        let (files, _) = files.split_once("\n\n").unwrap();
        let mut block = String::from("[[token_files]]\n");
        for setting in files.lines().filter_map(|l| l.strip_prefix("# ")) {
            if setting.contains(" = ") {
                block.push_str(setting);
                block.push('\n');
            }
        }
        let config = parse(&format!("{text}\n{block}")).unwrap();
        let file = &config.token_files[0];
        assert_eq!(
            (file.format, file.mode_bits(), file.group.as_deref()),
            (TokenFileFormat::Token, Ok(0o640), Some("mail-sync"))
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_line() {
        let message = error(&format!("{MINIMAL}\nclient_secret = \"x\"\n"));
        assert!(
            message.contains("unknown field `client_secret`"),
            "{message}"
        );
        assert!(message.contains("line 7"), "{message}");
        let message = error(&format!(
            "[server]\nlisten = \"127.0.0.1:1\"\nport = 3\n{MINIMAL}"
        ));
        assert!(message.contains("unknown field `port`"), "{message}");
        assert!(message.contains("line 3"), "{message}");
    }

    #[test]
    fn missing_required_keys_are_named() {
        let message = error("[app]\ncertificate = \"c.pem\"\n");
        assert!(message.contains("missing field `client_id`"), "{message}");
        let message = error("[server]\n");
        assert!(message.contains("app: is missing"), "{message}");
    }

    #[test]
    fn client_id_must_be_a_guid() {
        for bad in [
            "contoso",
            "11111111-2222-3333-4444-55555555555",
            "11111111222233334444555555555555",
            "{11111111-2222-3333-4444-555555555555}",
            "g1111111-2222-3333-4444-555555555555",
        ] {
            let message = error(&MINIMAL.replace("11111111-2222-3333-4444-555555555555", bad));
            assert!(message.contains("is not a GUID"), "{bad}: {message}");
            assert!(message.contains("client_id"), "{bad}: {message}");
            assert!(message.contains("line 3"), "{bad}: {message}");
        }
    }

    #[test]
    fn tenant_id_is_a_guid_or_a_domain() {
        for good in [
            "contoso.onmicrosoft.com",
            "fabrikam.com",
            "0a1b2c3d-0000-4000-8000-00000000000f",
            "xn--bcher-kva.example",
        ] {
            let text = with_tenants_and_accounts(
                &format!("[[tenants]]\nname = \"t\"\nid = \"{good}\"\n"),
                "",
            );
            assert!(parse(&text).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("contoso", "not a tenant GUID or domain"),
            ("../etc/passwd", "not a tenant GUID or domain"),
            ("contoso.com/x", "not a tenant GUID or domain"),
            ("contoso .com", "not a tenant GUID or domain"),
            ("contoso%2ecom", "not a tenant GUID or domain"),
            ("-bad.example.com", "not a tenant GUID or domain"),
            ("common", "multi-tenant alias"),
            ("organizations", "multi-tenant alias"),
        ] {
            let text = with_tenants_and_accounts(
                &format!("[[tenants]]\nname = \"t\"\nid = \"{bad}\"\n"),
                "",
            );
            let message = error(&text);
            assert!(message.contains(why), "{bad}: {message}");
            assert!(message.contains("id"), "{bad}: {message}");
        }
        let long = format!("{}.com", "a".repeat(250));
        let message = error(&with_tenants_and_accounts(
            &format!("[[tenants]]\nname = \"t\"\nid = \"{long}\"\n"),
            "",
        ));
        assert!(message.contains("not a tenant GUID or domain"), "{message}");
    }

    #[test]
    fn secret_sha256_must_be_64_hex_characters() {
        for bad in ["abc", &"g".repeat(64), &"a".repeat(65)] {
            let text = with_tenants_and_accounts(
                "",
                &format!(
                    "[[accounts]]\nname = \"a\"\nsecret_sha256 = \"{bad}\"\ntenants = [\"*\"]\n"
                ),
            );
            let message = error(&text);
            assert!(
                message.contains("expected 64 hexadecimal characters"),
                "{bad}: {message}"
            );
            assert!(message.contains("secret_sha256"), "{bad}: {message}");
        }
    }

    #[test]
    fn account_tenants_refer_to_names_ids_or_star() {
        let tenants = "[[tenants]]\nname = \"contoso\"\nid = \"contoso.onmicrosoft.com\"\n";
        let ok = with_tenants_and_accounts(
            tenants,
            &format!("[[accounts]]\nname = \"a\"\nsecret_sha256 = \"{HASH_A}\"\ntenants = [\"contoso\", \"fabrikam.com\", \"0a1b2c3d-0000-4000-8000-00000000000f\"]\n[[accounts]]\nname = \"b\"\nsecret_sha256 = \"{HASH_B}\"\ntenants = [\"*\"]\n"),
        );
        let config = parse(&ok).unwrap();
        assert_eq!(
            config.accounts[0].tenants,
            [
                TenantRef::Name(Name::try_from("contoso".to_owned()).unwrap()),
                TenantRef::Id(TenantId::try_from("fabrikam.com".to_owned()).unwrap()),
                TenantRef::Id(
                    TenantId::try_from("0a1b2c3d-0000-4000-8000-00000000000f".to_owned()).unwrap()
                ),
            ]
        );
        assert_eq!(config.accounts[1].tenants, [TenantRef::Any]);

        let message = error(&with_tenants_and_accounts(
            tenants,
            &format!("[[accounts]]\nname = \"a\"\nsecret_sha256 = \"{HASH_A}\"\ntenants = [\"contso\"]\n"),
        ));
        assert!(message.contains("accounts[0].tenants"), "{message}");
        assert!(
            message.contains("\"contso\" is neither a configured tenant name"),
            "{message}"
        );
        let message = error(&with_tenants_and_accounts(
            tenants,
            &format!("[[accounts]]\nname = \"a\"\nsecret_sha256 = \"{HASH_A}\"\ntenants = []\n"),
        ));
        assert!(
            message.contains("accounts[0].tenants: is empty"),
            "{message}"
        );
    }

    #[test]
    fn default_tenant_must_be_one_of_the_accounts_tenants() {
        let tenants = "[[tenants]]\nname = \"contoso\"\nid = \"contoso.onmicrosoft.com\"\n[[tenants]]\nname = \"fabrikam\"\nid = \"fabrikam.com\"\n";
        let account = |default: &str| {
            format!("[[accounts]]\nname = \"a\"\nsecret_sha256 = \"{HASH_A}\"\ntenants = [\"contoso\"]\ndefault_tenant = \"{default}\"\n")
        };
        assert!(parse(&with_tenants_and_accounts(tenants, &account("contoso"))).is_ok());
        assert!(parse(&with_tenants_and_accounts(
            tenants,
            &account("contoso.onmicrosoft.com")
        ))
        .is_ok());
        let message = error(&with_tenants_and_accounts(tenants, &account("fabrikam")));
        assert!(
            message.contains(
                "accounts[0].default_tenant: \"fabrikam\" is not in this account's tenants"
            ),
            "{message}"
        );
        let message = error(&with_tenants_and_accounts(tenants, &account("nope")));
        assert!(message.contains("accounts[0].default_tenant"), "{message}");
    }

    #[test]
    fn names_are_unique() {
        let message = error(&with_tenants_and_accounts(
            "[[tenants]]\nname = \"c\"\nid = \"a.com\"\n[[tenants]]\nname = \"c\"\nid = \"b.com\"\n",
            "",
        ));
        assert!(
            message.contains("tenants[1].name: \"c\" is used by two tenants"),
            "{message}"
        );
        let message = error(&with_tenants_and_accounts(
            "[[tenants]]\nname = \"c\"\nid = \"a.com\"\n[[tenants]]\nname = \"d\"\nid = \"A.com\"\n",
            "",
        ));
        assert!(
            message.contains("tenants[1].id: \"A.com\" is configured twice"),
            "{message}"
        );
        let message = error(&with_tenants_and_accounts(
            "",
            &format!("[[accounts]]\nname = \"a\"\nsecret_sha256 = \"{HASH_A}\"\ntenants = [\"*\"]\n[[accounts]]\nname = \"a\"\nsecret_sha256 = \"{HASH_B}\"\ntenants = [\"*\"]\n"),
        ));
        assert!(
            message.contains("accounts[1].name: \"a\" is used by two accounts"),
            "{message}"
        );
        let message = error(&with_tenants_and_accounts(
            "",
            &format!("[[accounts]]\nname = \"a\"\nsecret_sha256 = \"{HASH_A}\"\ntenants = [\"*\"]\n[[accounts]]\nname = \"b\"\nsecret_sha256 = \"{HASH_A}\"\ntenants = [\"*\"]\n"),
        ));
        assert!(
            message.contains("accounts[1].secret_sha256: is the same as another account's"),
            "{message}"
        );
        // The same digest spelt in upper case is the same secret.
        let message = error(&with_tenants_and_accounts(
            "",
            &format!("[[accounts]]\nname = \"a\"\nsecret_sha256 = \"{}\"\ntenants = [\"*\"]\n[[accounts]]\nname = \"b\"\nsecret_sha256 = \"{}\"\ntenants = [\"*\"]\n", HASH_C, HASH_C.to_uppercase()),
        ));
        assert!(
            message.contains("accounts[1].secret_sha256: is the same as another account's: accounts \"a\" and \"b\""),
            "{message}"
        );
        let message = error(&with_tenants_and_accounts(
            "",
            &format!("[[accounts]]\nname = \"a\"\nsecret_sha256 = \"{HASH_A}\"\ntenants = [\"*\"]\nunix_uids = [1001]\n[[accounts]]\nname = \"b\"\nsecret_sha256 = \"{HASH_B}\"\ntenants = [\"*\"]\nunix_uids = [1001]\n"),
        ));
        assert!(
            message.contains("accounts[1].unix_uids: uid 1001 is given to two accounts"),
            "{message}"
        );
        let message = error(&with_tenants_and_accounts(
            "[[tenants]]\nname = \"has space\"\nid = \"a.com\"\n",
            "",
        ));
        assert!(
            message.contains("\"has space\" is not a valid name"),
            "{message}"
        );
    }

    #[test]
    fn non_loopback_listen_needs_allow_remote() {
        let message = error(&format!("[server]\nlisten = \"0.0.0.0:8765\"\n{MINIMAL}"));
        assert!(
            message.contains("server.listen: 0.0.0.0:8765 is not a loopback address"),
            "{message}"
        );
        assert!(message.contains("allow_remote = true"), "{message}");
        let config = parse(&format!(
            "[server]\nlisten = \"0.0.0.0:8765\"\nallow_remote = true\n{MINIMAL}"
        ))
        .unwrap();
        assert!(config.server.allow_remote);
        assert!(parse(&format!("[server]\nlisten = \"[::1]:8765\"\n{MINIMAL}")).is_ok());
        let message = error(&format!("[server]\nlisten = \"localhost:8765\"\n{MINIMAL}"));
        assert!(message.contains("listen"), "{message}");
        let message = error(&format!(
            "[server]\nallowed_hosts = [\"evil.com:80\"]\n{MINIMAL}"
        ));
        assert!(message.contains("is not a host name"), "{message}");
        let message = error(&format!("[server]\nallowed_hosts = []\n{MINIMAL}"));
        assert!(
            message.contains("server.allowed_hosts: must list at least one host name"),
            "{message}"
        );
    }

    #[test]
    fn durations_parse() {
        let config = parse(&format!("{MINIMAL}\nconnect_timeout = \"1500ms\"\n[cache]\nmin_remaining = \"10m\"\nkeep_warm = \"1h 30m\"\nnegative_ttl = \"45s\"\n")).unwrap();
        assert_eq!(config.app().connect_timeout.0, Duration::from_millis(1500));
        assert_eq!(config.cache.min_remaining.0, Duration::from_secs(600));
        assert_eq!(config.cache.keep_warm.0, Duration::from_secs(5400));
        assert_eq!(config.cache.negative_ttl.0, Duration::from_secs(45));
        let message = error(&format!("{MINIMAL}\n[cache]\nkeep_warm = \"soon\"\n"));
        assert!(message.contains("\"soon\" is not a duration"), "{message}");
        assert!(message.contains("keep_warm"), "{message}");
        let message = error(&format!("{MINIMAL}\n[cache]\nmin_remaining = 300\n"));
        assert!(message.contains("min_remaining"), "{message}");
        let message = error(&format!("{MINIMAL}\n[cache]\nmin_remaining = \"2h\"\n"));
        assert!(
            message.contains("cache.min_remaining: 2h is out of bounds: use 0s to 59m"),
            "{message}"
        );
    }

    #[test]
    fn cloud_signing_and_authority_host_are_checked() {
        let config = parse(&format!(
            "{MINIMAL}cloud = \"usgov-dod\"\nsigning = \"RS256\"\n"
        ))
        .unwrap();
        assert_eq!(config.app().cloud, Cloud::UsgovDod);
        assert_eq!(config.app().signing, SigningAlgorithm::RS256);
        let message = error(&format!("{MINIMAL}cloud = \"mars\"\n"));
        assert!(message.contains("unknown variant `mars`"), "{message}");
        let message = error(&format!("{MINIMAL}signing = \"HS256\"\n"));
        assert!(message.contains("unknown variant `HS256`"), "{message}");
        let config = parse(&format!(
            "{MINIMAL}authority_host = \"http://127.0.0.1:9000\"\n"
        ))
        .unwrap();
        assert_eq!(config.app().authority_host(), "http://127.0.0.1:9000");
        let message = error(&format!(
            "{MINIMAL}authority_host = \"http://login.example.com\"\n"
        ));
        assert!(
            message.contains("plain http is allowed only for loopback hosts"),
            "{message}"
        );
        let message = error(&format!(
            "{MINIMAL}authority_host = \"https://login.example.com/tenant\"\n"
        ));
        assert!(
            message.contains("must be scheme and host only"),
            "{message}"
        );
        let message = error(&format!("{MINIMAL}private_key_password_env = \"MY-VAR\"\n"));
        assert!(
            message.contains("is not an environment variable name"),
            "{message}"
        );
    }

    #[test]
    fn resources_and_permissions_are_checked() {
        let account = |resources: &str| {
            with_tenants_and_accounts("", &format!("[[accounts]]\nname = \"a\"\nsecret_sha256 = \"{HASH_A}\"\ntenants = [\"*\"]\nresources = [{resources}]\n"))
        };
        assert!(parse(&account("\"https://graph.microsoft.com\"")).is_ok());
        let message = error(&account("\"https://graph.microsoft.com/.default\""));
        assert!(message.contains("must be a bare resource"), "{message}");
        let message = error(&account("\"http://graph.microsoft.com\""));
        assert!(message.contains("must be an https:// URL"), "{message}");
        let message = error(&with_tenants_and_accounts(
            "[[tenants]]\nname = \"t\"\nid = \"a.com\"\nrequired_permissions = [\"Mail Send\"]\n",
            "",
        ));
        assert!(
            message.contains("is not a Graph permission name"),
            "{message}"
        );
    }

    #[test]
    fn unreadable_file_is_named() {
        let message = Config::load(Path::new("/nonexistent/tokenbroker.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("cannot read configuration file /nonexistent/tokenbroker.toml"),
            "{message}"
        );
    }

    #[test]
    fn credentials_are_named_one_way() {
        let app = "[app]\nclient_id = \"11111111-2222-3333-4444-555555555555\"\n";
        let two = "[[app.credentials]]\ncertificate = \"a.pem\"\nprivate_key = \"a.key\"\n\
                   [[app.credentials]]\ncertificate = \"b.pfx\"\npassword_file = \"pw\"\n";
        let config = parse(&format!("{app}{two}")).unwrap();
        let list = config.app().credential_configs();
        assert_eq!(list.len(), 2);
        assert_eq!(
            list[1].password_file.as_deref(),
            Some(Path::new("/etc/tokenbroker/pw"))
        );
        let message = error(&format!("{app}certificate = \"c.pem\"\n{two}"));
        assert!(
            message.contains("app.credentials: is given together with certificate"),
            "{message}"
        );
        let message = error(app);
        assert!(message.contains("app.certificate: is missing"), "{message}");
        let message = error(&format!(
            "{app}[[app.credentials]]\ncertificate = \"a.pem\"\npassword_env = \"X\"\npassword_file = \"y\"\n"
        ));
        assert!(
            message
                .contains("app.credentials[0].password_file: is given together with password_env"),
            "{message}"
        );
        let message = error(&format!(
            "{MINIMAL}private_key_password_env = \"X\"\nprivate_key_password_file = \"y\"\n"
        ));
        assert!(
            message.contains("app.private_key_password_file"),
            "{message}"
        );
    }

    #[test]
    fn secret_hashes_are_one_or_two() {
        let account = |hashes: &str| {
            with_tenants_and_accounts(
                "",
                &format!(
                    "[[accounts]]\nname = \"a\"\nsecret_sha256 = {hashes}\ntenants = [\"*\"]\n"
                ),
            )
        };
        let config = parse(&account(&format!("[\"{HASH_A}\", \"{HASH_B}\"]"))).unwrap();
        assert_eq!(config.accounts[0].secret_sha256.0.len(), 2);
        let message = error(&account("[]"));
        assert!(message.contains("lists 0 hashes"), "{message}");
        let message = error(&account(&format!(
            "[\"{HASH_A}\", \"{HASH_B}\", \"{HASH_C}\"]"
        )));
        assert!(message.contains("lists 3 hashes"), "{message}");
        let message = error(&account(&format!(
            "[\"{HASH_A}\", \"{}\"]",
            HASH_A.to_uppercase()
        )));
        assert!(message.contains("lists the same hash twice"), "{message}");
    }

    #[test]
    fn operations_durations_have_bounds() {
        for (key, section, value) in [
            ("credential_check_interval", "", "0s"),
            ("credential_rejection_memory", "", "2d"),
            ("forced_refresh_interval", "[cache]\n", "2h"),
            ("load_timeout", "[cache]\n", "500ms"),
            ("negative_ttl", "[cache]\n", "300000000000y"),
            ("keep_warm", "[cache]\n", "2000y"),
        ] {
            let message = error(&format!("{MINIMAL}{section}{key} = \"{value}\"\n"));
            assert!(
                message.contains(key) && message.contains("out of bounds"),
                "{message}"
            );
        }
        let config = parse(&format!("{MINIMAL}credential_check_interval = \"1s\"\n[server]\nwatch_config = true\nadmin_socket = \"admin.sock\"\nadmin_uids = [1001]\n")).unwrap();
        assert!(config.server.watch_config);
        assert_eq!(
            config.server.admin_socket.as_deref(),
            Some(Path::new("/etc/tokenbroker/admin.sock"))
        );
        let message = error(&format!(
            "{MINIMAL}[server]\nunix_socket = \"s.sock\"\nadmin_socket = \"s.sock\"\n"
        ));
        assert!(
            message.contains("server.admin_socket: is the same path"),
            "{message}"
        );
    }

    #[test]
    fn credential_kinds_are_checked() {
        const APP: &str = "[app]\nclient_id = \"11111111-2222-3333-4444-555555555555\"\n";
        let ok = parse(&format!(
            "{APP}[[app.credentials]]\nfederated_token_file = \"token\"\n\
             [[app.credentials]]\nfederated_managed_identity = {{ client_id = \"6a7b8c9d-0000-4000-8000-000000000001\" }}\n\
             [[app.credentials]]\ncertificate = \"hsm.pem\"\npkcs11 = {{ module = \"lib/softhsm2.so\", token = \"t\", key_label = \"k\", pin_env = \"PIN\" }}\n\
             [[app.credentials]]\nfederated_managed_identity = {{ protocol = \"app-service\", endpoint = \"http://127.0.0.1:41000/msi/token\", header_env = \"H\" }}\n"
        ))
        .unwrap();
        let c = &ok.app().credentials;
        assert_eq!(
            c[0].federated_token_file.as_deref(),
            Some(Path::new("/etc/tokenbroker/token"))
        );
        assert_eq!(
            c[2].pkcs11.as_ref().map(|p| p.module.as_path()),
            Some(Path::new("/etc/tokenbroker/lib/softhsm2.so"))
        );
        for (body, key, says) in [
            ("private_key = \"k.pem\"\n", "app.credentials[0].certificate", "is missing"),
            ("federated_token_file = \"t\"\ncertificate = \"c.pem\"\n", "federated_token_file", "no certificate or key"),
            ("federated_token_file = \"t\"\nfederated_managed_identity = {}\n", "federated_managed_identity", "one of them"),
            ("certificate = \"c.pem\"\nprivate_key = \"k.pem\"\npkcs11 = { module = \"m\", token = \"t\", key_label = \"k\", pin_env = \"P\" }\n", "pkcs11", "the key is in the token"),
            ("federated_managed_identity = { protocol = \"app-service\" }\n", "federated_managed_identity", "needs endpoint"),
            ("federated_managed_identity = { header_env = \"H\" }\n", "header_env", "IMDS takes no secret"),
            ("federated_managed_identity = { endpoint = \"ftp://x\" }\n", "endpoint", "not an http(s) URL"),
            ("federated_managed_identity = { client_id = \"mine\" }\n", "client_id", ""),
        ] {
            let e = error(&format!("{APP}[[app.credentials]]\n{body}"));
            assert!(e.contains(key) && e.contains(says), "{body}: {e}");
        }
    }

    #[test]
    fn shared_cache_is_checked_and_its_paths_resolved() {
        let ok = parse(&format!(
            "{MINIMAL}[shared_cache]\nurl = \"rediss://redis.internal:6380/2\"\nkey_file = \"shared.key\"\n\
             old_key_files = [\"old.key\"]\npassword_file = \"redis.pw\"\n"
        ))
        .unwrap();
        let shared = ok.shared_cache.unwrap();
        assert_eq!(shared.key_file, Path::new("/etc/tokenbroker/shared.key"));
        assert_eq!(
            shared.old_key_files,
            [Path::new("/etc/tokenbroker/old.key")]
        );
        assert_eq!(
            shared.password_file.as_deref(),
            Some(Path::new("/etc/tokenbroker/redis.pw"))
        );
        assert_eq!(
            (shared.prefix.as_str(), shared.timeout.0, shared.lease.0),
            (
                "tokenbroker",
                Duration::from_millis(250),
                Duration::from_secs(15)
            )
        );
        assert!(!shared.is_cluster());
        let cluster = parse(&format!(
            "{MINIMAL}[shared_cache]\nurls = [\"redis://a:7000\", \"redis://b:7000\"]\nkey_file = \"k\"\n"
        ))
        .unwrap();
        assert!(cluster.shared_cache.unwrap().is_cluster());
        for (body, key, says) in [
            ("key_file = \"k\"\n", "shared_cache.url", "is missing"),
            ("url = \"redis://a\"\nurls = [\"redis://b\"]\nkey_file = \"k\"\n", "shared_cache.urls", "together"),
            ("url = \"http://a\"\nkey_file = \"k\"\n", "shared_cache.url", "redis://"),
            ("url = \"redis://:hunter2@a\"\nkey_file = \"k\"\n", "shared_cache.url", "password_env"),
            ("url = \"redis://a\"\nkey_file = \"k\"\nprefix = \"a b\"\n", "shared_cache.prefix", "1 to 64"),
            ("url = \"redis://a\"\nkey_file = \"k\"\ntimeout = \"1ms\"\n", "shared_cache.timeout", "out of bounds"),
            ("url = \"redis://a\"\nkey_file = \"k\"\nlease = \"1h\"\n", "shared_cache.lease", "out of bounds"),
            ("url = \"redis://a\"\nkey_file = \"k\"\npassword_env = \"P\"\npassword_file = \"p\"\n", "shared_cache.password_file", "keep one"),
        ] {
            let e = error(&format!("{MINIMAL}[shared_cache]\n{body}"));
            assert!(e.contains(key) && e.contains(says), "{body}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn every_number_and_duration_has_bounds_named_in_the_error() {
        // Each key just past its bounds: an error naming the key and the bounds.
        for (line, expect) in [
            (
                "[server]\nmax_connections = 9223372036854775807",
                "server.max_connections: 9223372036854775807 is out of bounds: use 1 to 65536",
            ),
            ("[server]\nmax_connections = 0", "use 1 to 65536"),
            (
                "[server]\nmax_query_bytes = 0",
                "server.max_query_bytes: 0 is out of bounds: use 256 to 65536",
            ),
            (
                "[server]\nheader_read_timeout = \"0s\"",
                "server.header_read_timeout: 0s is out of bounds: use 100ms to 1m",
            ),
            (
                "[server]\nshutdown_timeout = \"1h\"",
                "server.shutdown_timeout",
            ),
            (
                "[cache]\nkeep_warm = \"0s\"",
                "cache.keep_warm: 0s is out of bounds: use 1m to 30days",
            ),
            ("[cache]\nmax_entries = 0", "cache.max_entries"),
        ] {
            let message = error(&format!("{MINIMAL}{line}\n"));
            assert!(message.contains(expect), "{line}: {message}");
        }
        for (key, value) in [
            ("request_timeout", "0s"),
            ("connect_timeout", "2m"),
            ("max_concurrent_requests", "0"),
        ] {
            let value = if key == "max_concurrent_requests" {
                value.to_owned()
            } else {
                format!("\"{value}\"")
            };
            let message = error(&format!("{MINIMAL}{key} = {value}\n"));
            assert!(
                message.contains(&format!("app.{key}")) && message.contains("out of bounds"),
                "{message}"
            );
        }
        // The example configuration's values are inside every bound.
        let config = parse(include_str!("../../config/tokenbroker.example.toml")).unwrap();
        for (key, value, low, high) in validate::duration_bounds(&config) {
            assert!((low..=high).contains(&value.0), "{key}");
        }
    }
}
