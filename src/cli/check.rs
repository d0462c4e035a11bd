//! `check`: the configuration, the credentials and what `serve` needs
//! before it binds; with `--online`, a token per configured tenant and a
//! round trip through the fleet cache.

use super::{load, out, runtime, CliError};
use crate::authority::{AuthorityClient, AuthoritySettings};
use crate::clock::SystemClock;
use crate::config::{AppConfig, Config, ConfigLocation};
use crate::credentials::CredentialSet;
use crate::daemon::StartError;
use crate::sys::rfc3339;
use std::path::Path;
use std::sync::Arc;

pub(super) fn authority_client(
    config_path: &Path,
    app: &AppConfig,
    credentials: CredentialSet,
) -> Result<AuthorityClient, CliError> {
    AuthorityClient::new(
        AuthoritySettings::for_app(app),
        Arc::new(credentials),
        Arc::new(SystemClock),
    )
    .map_err(|e| StartError::from_build(config_path, e).into())
}

/// One finding of `check`: what was checked, whether it passed, and what it says.
#[derive(Debug, serde::Serialize)]
pub(super) struct Finding {
    /// `configuration`, `credential`, `token_file`, `shared_cache` or `tenant`.
    check: &'static str,
    /// The file, credential, cache or tenant it is about.
    name: String,
    ok: bool,
    message: String,
    /// Entra's AADSTS code (or "no AADSTS code"), for a tenant that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
}

impl Finding {
    /// The line for people (the same words as the JSON).
    fn line(&self) -> String {
        let verdict = match (&self.code, self.ok) {
            (_, true) => String::new(),
            (Some(code), false) => format!("FAILED ({code}): "),
            (None, false) => "FAILED: ".to_owned(),
        };
        let (name, message) = (&self.name, &self.message);
        match self.check {
            "configuration" if self.ok => format!("configuration: {name} is valid\n  {message}"),
            "credential" => format!("credential: {verdict}{message}"),
            "token_file" => format!("token file: {verdict}{message}"),
            "shared_cache" => format!("shared cache {name}: {verdict}{message}"),
            check => format!("{check} {name}: {verdict}{message}"),
        }
    }
}

/// What `check` found, for people (lines) or scripts (`--json`: one
/// document, also when something failed).
#[derive(Debug, Default, serde::Serialize)]
pub(super) struct Report {
    ok: bool,
    config_file: String,
    findings: Vec<Finding>,
}

impl Report {
    fn add(&mut self, check: &'static str, name: impl Into<String>, ok: bool, message: String) {
        self.findings.push(Finding {
            check,
            name: name.into(),
            ok,
            message,
            code: None,
        });
    }

    fn print(&self, json: bool) -> Result<(), CliError> {
        if json {
            let text = serde_json::to_string_pretty(self)
                .map_err(|e| CliError::Other(format!("encoding the report: {e}")))?;
            return out(format_args!("{text}"));
        }
        for finding in self.findings.iter().filter(|f| f.check != "warning") {
            out(format_args!("{}", finding.line()))?;
        }
        if self.ok {
            out(format_args!("ok"))?;
        }
        Ok(())
    }
}

pub(super) fn check(location: &ConfigLocation, online: bool, json: bool) -> Result<(), CliError> {
    let mut report = Report {
        config_file: location.path.display().to_string(),
        ..Report::default()
    };
    let result = run_checks(location, online, json, &mut report);
    if let Err(e) = &result {
        // The failure is the report's last finding; the error line on
        // stderr (and the exit code) come from the caller.
        let already = report.findings.iter().any(|f| !f.ok);
        if !already {
            report.add(
                "configuration",
                report.config_file.clone(),
                false,
                e.to_string(),
            );
        }
    }
    report.ok = result.is_ok();
    report.print(json)?;
    result
}

fn run_checks(
    location: &ConfigLocation,
    online: bool,
    json: bool,
    report: &mut Report,
) -> Result<(), CliError> {
    let config_path = location.path.as_path();
    let (config, credentials, warnings) = load(location, true)?;
    let apps: Vec<String> = config
        .apps
        .iter()
        .map(|app| {
            format!(
                "app {} ({}) in cloud {}, authority {}, signing {:?}",
                app.name,
                app.client_id,
                app.cloud,
                app.authority_host(),
                app.signing,
            )
        })
        .collect();
    report.add(
        "configuration",
        config_path.display().to_string(),
        true,
        format!(
            "{}; {} tenant(s), {} account(s), listening on {}",
            apps.join("; "),
            config.tenants.len(),
            config.accounts.len(),
            config.server.listen
        ),
    );
    for credential in credentials.iter().flat_map(|set| set.all().to_vec()) {
        let message = match credential.certificate() {
            Some(info) => format!(
                "{} (thumbprint {}, RSA {} bits, valid until {})",
                info.subject,
                info.thumbprint_sha1,
                info.key_bits,
                rfc3339(info.not_after)
            ),
            None => format!("{} ({})", credential.id(), credential.kind()),
        };
        report.add("credential", credential.id(), true, message);
    }
    // Not fatal to `serve` (a file it cannot write is an error in its log
    // and status), but a token file that is never written is a broken
    // deployment: exit 2, naming the key.
    let files = crate::token_files::check(&config.token_files).map_err(|(key, message)| {
        crate::config::ConfigError::Invalid {
            path: config_path.to_owned(),
            key,
            message,
        }
    })?;
    for (file, message) in config.token_files.iter().zip(files) {
        report.add("token_file", file.path.display().to_string(), true, message);
    }
    let mut warnings = warnings;
    if let Some(file) = &config.cache.state_file {
        // Not fatal to `serve` (it serves cold and logs each failed write),
        // and the unit's StateDirectory= makes the directory at the first start.
        let dir = file.parent().unwrap_or(Path::new("."));
        if let Err(e) = crate::sys::writable(dir) {
            warnings.push(format!(
                "cache.state_file: cannot write in {} as user {}: {e}; until it can, a restart starts \
                 with an empty cache (the unit's StateDirectory= makes the directory at its first start)",
                dir.display(),
                crate::sys::process_user()
            ));
        }
    }
    for warning in &warnings {
        if json {
            report.add(
                "warning",
                config_path.display().to_string(),
                true,
                warning.clone(),
            );
        } else {
            eprintln!("warning: {warning}");
        }
    }
    if online {
        if config.shared_cache.is_some() {
            runtime()?.block_on(check_shared_cache(config_path, &config, report))?;
        }
        let mut failures = 0;
        for (app, credentials) in config.apps.iter().zip(credentials) {
            let client = authority_client(config_path, app, credentials)?;
            failures += runtime()?.block_on(check_tenants(&config, app, &client, location, report));
        }
        if failures > 0 {
            // Each (tenant, app) the tenant consented to was checked.
            let what = if config.apps.len() > 1 {
                "(tenant, app) pair(s)"
            } else {
                "tenant(s)"
            };
            return Err(CliError::Other(format!(
                "{failures} of {} {what} failed; see above",
                config.consents().count()
            )));
        }
    }
    Ok(())
}

/// Connects to the shared cache and round-trips a sealed probe value: the
/// connection, the credentials and the key all work.
pub(super) async fn check_shared_cache(
    config_path: &Path,
    config: &Config,
    report: &mut Report,
) -> Result<(), CliError> {
    let observer: Arc<dyn crate::fleet::FleetObserver> = Arc::new(NoFleetObserver);
    let shared = crate::fleet::connect(config, Arc::new(SystemClock), observer)
        .map_err(|e| CliError::Config(e.in_config(config_path)))?
        .ok_or_else(|| CliError::Other("no [shared_cache] configured".into()))?;
    let target = shared.status().target;
    // A cluster connects in the background: give it a few tries.
    let mut last = String::new();
    for _ in 0..10 {
        match shared.probe().await {
            Ok(()) => {
                report.add(
                    "shared_cache",
                    target,
                    true,
                    format!(
                        "ok (wrote, read and opened a sealed value; key id {})",
                        shared.status().key_id
                    ),
                );
                return Ok(());
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let message = format!(
        "{last}; check shared_cache.url(s), the Redis user and password, and that every host has the same key_file"
    );
    report.add("shared_cache", target.clone(), false, message.clone());
    Err(CliError::Other(format!(
        "shared cache {target}: FAILED: {message}"
    )))
}

#[derive(Debug)]
pub(super) struct NoFleetObserver;

impl crate::fleet::FleetObserver for NoFleetObserver {}

/// Acquires one Graph token per configured tenant, concurrently (bounded by
/// the client), and reports each outcome. Returns the number of failures.
pub(super) async fn check_tenants(
    config: &Config,
    app: &AppConfig,
    client: &AuthorityClient,
    location: &ConfigLocation,
    report: &mut Report,
) -> usize {
    let graph = app.graph();
    let graph = &graph;
    let results = futures_util::future::join_all(
        config
            .tenants
            .iter()
            .filter(|t| t.consented_to(&app.name))
            .map(|t| async move { (t, client.acquire(&t.id, graph).await) }),
    )
    .await;
    // With several apps, each tenant line says which app it is for.
    let several = config.apps.len() > 1;
    let mut failures = 0;
    for (tenant, result) in results {
        match result {
            Ok(token) => {
                let roles = crate::broker::status::token_roles(token.access_token.expose());
                let missing = crate::broker::status::missing_permissions(
                    &tenant.required_permissions,
                    roles.as_deref(),
                )
                .unwrap_or_default();
                let roles_text = match &roles {
                    Some(r) if r.is_empty() => "no application permissions granted".to_owned(),
                    Some(r) => format!("roles {}", r.join(", ")),
                    None => "roles unreadable (opaque token)".to_owned(),
                };
                let name = tenant_line(tenant, app, several);
                if missing.is_empty() {
                    report.add(
                        "tenant",
                        name,
                        true,
                        format!(
                            "ok, token valid for {} s, {roles_text}",
                            token.expires_in.as_secs()
                        ),
                    );
                } else {
                    failures += 1;
                    report.add(
                        "tenant",
                        name,
                        false,
                        format!(
                            "missing permission(s) {}; add them to the app registration and have the tenant's admin consent again (`tokenbroker consent-url --tenant {}{}`); {roles_text}",
                            missing.join(", "),
                            tenant.name,
                            location.flag()
                        ),
                    );
                }
            }
            Err(e) => {
                failures += 1;
                let code = e.entra().and_then(|x| x.aadsts());
                report.add(
                    "tenant",
                    tenant_line(tenant, app, several),
                    false,
                    e.to_string(),
                );
                if let Some(finding) = report.findings.last_mut() {
                    finding.code = Some(code.unwrap_or_else(|| "no AADSTS code".into()));
                }
            }
        }
    }
    failures
}

/// How a tenant is named in `check`'s report: `contoso (id)`, and the app
/// when there are several.
fn tenant_line(tenant: &crate::config::TenantConfig, app: &AppConfig, several: bool) -> String {
    if several {
        format!("{} ({}) as app {}", tenant.name, tenant.id, app.name)
    } else {
        format!("{} ({})", tenant.name, tenant.id)
    }
}
