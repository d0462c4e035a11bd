//! The national clouds Entra ID runs in, and the URLs that follow from each.
//!
//! Facts from Microsoft's "national cloud" page (docs/entra.md, "Clouds").

use serde::Deserialize;
use std::fmt;
use url::Url;

/// An Entra ID cloud: where tokens come from and which Graph they are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Cloud {
    /// Microsoft's worldwide cloud.
    #[default]
    Global,
    /// US Government (GCC High).
    Usgov,
    /// US Government DoD.
    UsgovDod,
    /// China, operated by 21Vianet.
    China,
}

impl Cloud {
    /// Every cloud, in the order the docs list them.
    pub const ALL: [Cloud; 4] = [Cloud::Global, Cloud::Usgov, Cloud::UsgovDod, Cloud::China];

    /// The configuration spelling (`global`, `usgov`, `usgov-dod`, `china`).
    pub fn name(self) -> &'static str {
        match self {
            Cloud::Global => "global",
            Cloud::Usgov => "usgov",
            Cloud::UsgovDod => "usgov-dod",
            Cloud::China => "china",
        }
    }

    /// The authority host, scheme included, without a trailing slash.
    pub fn authority_host(self) -> &'static str {
        match self {
            Cloud::Global => "https://login.microsoftonline.com",
            Cloud::Usgov | Cloud::UsgovDod => "https://login.microsoftonline.us",
            Cloud::China => "https://login.partner.microsoftonline.cn",
        }
    }

    /// The Microsoft Graph resource of this cloud (the default token audience).
    pub fn graph_resource(self) -> &'static str {
        match self {
            Cloud::Global => "https://graph.microsoft.com",
            Cloud::Usgov => "https://graph.microsoft.us",
            Cloud::UsgovDod => "https://dod-graph.microsoft.us",
            Cloud::China => "https://microsoftgraph.chinacloudapi.cn",
        }
    }
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The v2.0 token endpoint of `tenant` under `authority_host`; also the exact
/// `aud` Entra expects in a client assertion.
pub fn token_endpoint(authority_host: &str, tenant: &str) -> String {
    format!(
        "{}/{}/oauth2/v2.0/token",
        authority_host.trim_end_matches('/'),
        tenant
    )
}

/// The v2.0 admin-consent URL a customer's global admin opens to grant the
/// app's configured application permissions (`{graph}/.default`) in `tenant`.
///
/// `tenant` may be a GUID, a verified domain or `organizations` (the admin's
/// own tenant). Query values are percent-encoded.
pub fn admin_consent_url(
    authority_host: &str,
    tenant: &str,
    client_id: &str,
    graph_resource: &str,
    redirect_uri: Option<&str>,
    state: Option<&str>,
) -> Result<Url, url::ParseError> {
    let mut url = Url::parse(&format!(
        "{}/{}/v2.0/adminconsent",
        authority_host.trim_end_matches('/'),
        tenant
    ))?;
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("client_id", client_id);
        query.append_pair("scope", &format!("{graph_resource}/.default"));
        if let Some(uri) = redirect_uri {
            query.append_pair("redirect_uri", uri);
        }
        if let Some(state) = state {
            query.append_pair("state", state);
        }
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_endpoint_is_the_assertion_audience() {
        assert_eq!(
            token_endpoint(
                "https://login.microsoftonline.com/",
                "contoso.onmicrosoft.com"
            ),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
    }

    #[test]
    fn consent_url_is_percent_encoded() {
        let url = admin_consent_url(
            Cloud::Global.authority_host(),
            "organizations",
            "11111111-2222-3333-4444-555555555555",
            Cloud::Global.graph_resource(),
            Some("https://app.example.com/consent?x=1"),
            Some("a b&c"),
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://login.microsoftonline.com/organizations/v2.0/adminconsent\
             ?client_id=11111111-2222-3333-4444-555555555555\
             &scope=https%3A%2F%2Fgraph.microsoft.com%2F.default\
             &redirect_uri=https%3A%2F%2Fapp.example.com%2Fconsent%3Fx%3D1\
             &state=a+b%26c"
        );
    }
}
