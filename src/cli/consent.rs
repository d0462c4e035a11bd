//! `consent-url`: the admin-consent URL a tenant's global admin opens.

use super::{out, CliError};
use crate::cloud::{self, Cloud};
use crate::config::{self, Config, ConfigError};
use std::path::Path;

pub(super) fn consent_url(
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
