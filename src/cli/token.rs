//! `token`: one token from Entra, without a daemon.

use super::check::authority_client;
use super::{load, out, runtime, CliError};
use crate::access::Policy;
use crate::clock::unix_seconds;
use crate::config::ConfigLocation;
use crate::sys::rfc3339;
use std::time::SystemTime;

pub(super) fn token(
    tenant: &str,
    resource: Option<&str>,
    location: &ConfigLocation,
    json: bool,
) -> Result<(), CliError> {
    let (config, credentials, warnings) = load(location, false)?;
    let config_path = location.path.as_path();
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    // The operator runs this with the configuration's own credential: no
    // account is involved, only the validation of what is asked.
    let target = Policy::new(&config)
        .target(tenant, resource, None)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    // The first app: its credentials come first.
    let Some(credentials) = credentials.into_iter().next() else {
        return Err(CliError::Other("the configuration names no app".into()));
    };
    let client = authority_client(config_path, config.app(), credentials)?;
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
