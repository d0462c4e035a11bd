//! `consent-url`: the admin-consent URL a tenant's global admin opens.

use super::{out, CliError};
use crate::cloud::{self, Cloud};
use crate::config::{self, Config, ConfigLocation};

pub(super) fn consent_url(
    tenant: &str,
    redirect_uri: Option<&str>,
    state: Option<&str>,
    location: &ConfigLocation,
    client_id: Option<String>,
    cloud: Option<String>,
    app: Option<&str>,
) -> Result<(), CliError> {
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
    // The configuration gives the client ID, the cloud and the tenants'
    // names. Consent may come before the rest of the set-up, so with
    // --client-id a missing file is no error.
    let config = match (&client_id, super::load_config(location)) {
        (_, Ok(config)) => Some(config),
        (Some(_), Err(CliError::Usage(_))) => None,
        (None, Err(CliError::Usage(e))) => {
            return Err(CliError::Usage(format!(
                "no client ID: pass --client-id <Application (client) ID>, or point the command at \
                 the configuration: {e}"
            )))
        }
        (_, Err(e)) => return Err(e),
    };
    let tenant = consent_tenant(tenant, config.as_ref())?;
    let (client_id, cloud, authority) = match (client_id, &config) {
        (Some(id), _) => {
            config::Guid::try_from(id.clone())
                .map_err(|e| CliError::Usage(format!("--client-id: {e}")))?;
            let cloud = cloud
                .or(config.as_ref().map(|c| c.app().cloud))
                .unwrap_or_default();
            (id, cloud, cloud.authority_host().to_owned())
        }
        (None, Some(config)) => {
            let chosen = match app {
                None => config.app(),
                Some(name) => config.app_named(name).ok_or_else(|| {
                    let apps: Vec<&str> = config.apps.iter().map(|a| a.name.as_str()).collect();
                    CliError::Usage(format!(
                        "--app \"{name}\" is not a configured app; the apps are: {}",
                        apps.join(", ")
                    ))
                })?,
            };
            let cloud = cloud.unwrap_or(chosen.cloud);
            let authority = match &chosen.authority_host {
                Some(host) => host.as_str().to_owned(),
                None => cloud.authority_host().to_owned(),
            };
            (chosen.client_id.as_str().to_owned(), cloud, authority)
        }
        (None, None) => {
            return Err(CliError::Usage(
                "no client ID: pass --client-id <Application (client) ID> or --config FILE".into(),
            ))
        }
    };
    let tenant = tenant.as_str();
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

/// The tenant a consent URL names: `organizations`, a configured tenant's
/// name (its ID is used), or a tenant GUID or verified domain.
fn consent_tenant(tenant: &str, config: Option<&Config>) -> Result<String, CliError> {
    if tenant == "organizations" {
        return Ok(tenant.to_owned());
    }
    if let Some(configured) = config.and_then(|c| {
        c.tenants
            .iter()
            .find(|t| t.name.as_str().eq_ignore_ascii_case(tenant))
    }) {
        return Ok(configured.id.as_str().to_owned());
    }
    config::check_tenant_id(tenant).map_err(|e| {
        let names = config
            .map(|c| {
                c.tenants
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .filter(|names| !names.is_empty())
            .map(|names| format!("; configured tenants: {names}"))
            .unwrap_or_default();
        CliError::Usage(format!(
            "--tenant \"{tenant}\" is no configured tenant's name, and {e}{names}"
        ))
    })?;
    Ok(tenant.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let text = r#"
[app]
client_id = "11111111-2222-3333-4444-555555555555"
certificate = "cert.pem"
private_key = "key.pem"

[[tenants]]
name = "northwind"
id = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"

[[accounts]]
name = "svc"
secret_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
tenants = ["northwind"]
"#;
        Config::parse(text, std::path::Path::new("/etc/tokenbroker/t.toml")).unwrap()
    }

    #[test]
    fn a_configured_name_becomes_its_id_and_others_must_be_ids_or_domains() {
        let config = config();
        assert_eq!(
            consent_tenant("northwind", Some(&config)).unwrap(),
            "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
        );
        assert_eq!(
            consent_tenant("Northwind", Some(&config)).unwrap(),
            "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
        );
        assert_eq!(
            consent_tenant("contoso.onmicrosoft.com", Some(&config)).unwrap(),
            "contoso.onmicrosoft.com"
        );
        assert_eq!(
            consent_tenant("organizations", None).unwrap(),
            "organizations"
        );
        let refused = consent_tenant("southwind", Some(&config)).unwrap_err();
        assert_eq!(refused.exit_code(), 2);
        assert!(
            refused
                .to_string()
                .contains("configured tenants: northwind"),
            "{refused}"
        );
        assert!(consent_tenant("northwind", None).is_err());
    }
}
