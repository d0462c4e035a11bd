//! `check`: the configuration, the credentials and what `serve` needs
//! before it binds; with `--online`, a token per configured tenant and a
//! round trip through the fleet cache.

use super::{load, out, runtime, CliError};
use crate::authority::{AuthorityClient, AuthoritySettings};
use crate::clock::SystemClock;
use crate::config::Config;
use crate::credentials::CredentialSet;
use crate::daemon::StartError;
use crate::sys::rfc3339;
use std::path::Path;
use std::sync::Arc;

pub(super) fn authority_client(
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

pub(super) fn check(config_path: &Path, online: bool) -> Result<(), CliError> {
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
pub(super) async fn check_shared_cache(
    config_path: &Path,
    config: &Config,
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
                return out(format_args!(
                    "shared cache {target}: ok (wrote, read and opened a sealed value; key id {})",
                    shared.status().key_id
                ))
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    Err(CliError::Other(format!(
        "shared cache {target}: FAILED: {last}; check shared_cache.url(s), the Redis user and password, and that every host has the same key_file"
    )))
}

#[derive(Debug)]
pub(super) struct NoFleetObserver;

impl crate::fleet::FleetObserver for NoFleetObserver {}

/// Acquires one Graph token per configured tenant, concurrently (bounded by
/// the client), and reports each outcome. Returns the number of failures.
pub(super) async fn check_tenants(
    config: &Config,
    client: &AuthorityClient,
) -> Result<usize, CliError> {
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
