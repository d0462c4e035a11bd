//! `tokenbroker serve --dev`: the whole broker with no Azure at all. A
//! simulated Entra authority (the `entra-sim` crate) runs in-process, a
//! throw-away certificate is made and registered with it, and two consented
//! tenants and one account are configured. Nothing is written to disk.
//! Compiled with the `dev-mode` feature (on by default).

use crate::config::{Config, ConfigError};
use crate::credentials::{Credential, CredentialError};
use entra_sim::{SimError, SimulatedAuthority, SimulatedGraph};
use std::net::SocketAddr;
use std::path::Path;
use std::time::SystemTime;
use zeroize::Zeroizing;

/// The dev tenants: alias and domain. The first is the account's default.
pub const DEV_TENANTS: [(&str, &str); 2] = [
    ("contoso", "contoso.onmicrosoft.com"),
    ("fabrikam", "fabrikam.onmicrosoft.com"),
];
/// The dev account.
pub const DEV_ACCOUNT: &str = "dev";
/// The dev mailbox the dev account may read and send as through the gateway.
pub const DEV_MAILBOX: &str = "alice@contoso.com";
/// The dev app's client ID.
pub const DEV_CLIENT_ID: &str = "00000000-0000-4000-8000-00000000d3e7";

/// What `serve --dev` runs with.
#[derive(Debug)]
pub struct DevSetup {
    /// The simulated authority (stops when dropped).
    pub authority: SimulatedAuthority,
    /// The Graph stand-in the gateway forwards to (stops when dropped).
    pub graph: SimulatedGraph,
    /// The configuration pointing at it.
    pub config: Config,
    /// The throw-away credential, registered with the authority.
    pub credential: Credential,
    /// The dev account's secret (printed for the operator; never logged).
    pub secret: Zeroizing<String>,
}

/// Why dev mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// The simulated authority did not start.
    #[error(transparent)]
    Authority(#[from] SimError),
    /// The generated configuration was refused (a bug).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The generated credential was refused (a bug).
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// Key generation failed.
    #[error("generating the throw-away certificate: {0}")]
    Generate(String),
}

/// Starts the simulated authority and builds the dev configuration and
/// credential; the broker will listen on `listen`.
pub async fn setup(listen: SocketAddr) -> Result<DevSetup, DevError> {
    let authority = SimulatedAuthority::start(DEV_CLIENT_ID).await?;
    // What the dev gateway's rules need: reading mail, sending it, and
    // looking up users named by object id.
    authority.set_roles(&["Mail.ReadWrite", "Mail.Send", "User.Read.All"]);
    let graph = SimulatedGraph::start(&authority).await?;
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .map_err(|e| DevError::Generate(e.to_string()))?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tokenbroker dev (throw-away)");
    let cert = params
        .self_signed(&key)
        .map_err(|e| DevError::Generate(e.to_string()))?;
    authority.register_certificate(cert.der())?;
    let mut tenants = String::new();
    for (i, (name, domain)) in DEV_TENANTS.into_iter().enumerate() {
        let tid = authority.consent(domain);
        if i == 0 {
            graph.add_messages(&tid, DEV_MAILBOX, 25);
            graph.add_user(&tid, "bob@contoso.com");
        }
        tenants.push_str(&format!(
            "[[tenants]]\nname = \"{name}\"\nid = \"{domain}\"\n"
        ));
    }
    let key_pem = Zeroizing::new(key.serialize_pem());
    let credential =
        Credential::from_pem(cert.pem().as_bytes(), key_pem.as_bytes(), SystemTime::now())?
            .credential;

    let secret = crate::access::secret::generate()
        .map_err(|_| DevError::Generate("the system random generator failed".into()))?;
    let hash = crate::access::secret::sha256_hex(&secret);
    let text = format!(
        "[server]\nlisten = \"{listen}\"\n\
         [app]\nclient_id = \"{DEV_CLIENT_ID}\"\nauthority_host = \"{}\"\ngraph_host = \"{}\"\ncertificate = \"<in-memory certificate>\"\n\
         {tenants}\
         [[accounts]]\nname = \"{DEV_ACCOUNT}\"\nsecret_sha256 = \"{hash}\"\ntenants = [\"*\"]\ndefault_tenant = \"{}\"\n\
         [[accounts.graph]]\nmethods = [\"GET\"]\npaths = [\"/users/{{mailbox}}/messages\", \"/users/{{mailbox}}/messages/**\"]\nmailboxes = [\"{DEV_MAILBOX}\"]\n\
         [[accounts.graph]]\nmethods = [\"POST\"]\npaths = [\"/users/{{mailbox}}/sendMail\"]\nmailboxes = [\"{DEV_MAILBOX}\"]\n",
        authority.url(),
        graph.url(),
        DEV_TENANTS[0].0,
    );
    let config = Config::parse(&text, Path::new("<dev configuration>"))?;
    Ok(DevSetup {
        authority,
        graph,
        config,
        credential,
        secret,
    })
}

impl DevSetup {
    /// The configuration and credential to serve, and what must stay alive
    /// while serving.
    pub fn into_parts(self) -> (Config, Credential, Running) {
        let running = Running {
            authority: self.authority,
            graph: self.graph,
            secret: self.secret,
        };
        (self.config, self.credential, running)
    }
}

/// The simulated authority and the dev secret, kept while the broker serves.
#[derive(Debug)]
pub struct Running {
    authority: SimulatedAuthority,
    graph: SimulatedGraph,
    secret: Zeroizing<String>,
}

impl Running {
    /// The dev account's secret.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Prints the banner for a broker listening on `local`.
    pub fn announce(self, local: SocketAddr) -> Running {
        let view = Banner {
            authority_url: self.authority.url(),
            graph_url: self.graph.url(),
            secret: &self.secret,
        };
        print!("{}", banner(&view, local));
        // The banner is for the operator's terminal; a closed stdout is no reason to stop.
        let _ = std::io::Write::flush(&mut std::io::stdout());
        self
    }
}

/// What the banner needs.
#[derive(Debug)]
pub struct Banner<'a> {
    /// The simulated authority's URL.
    pub authority_url: String,
    /// The Graph stand-in's URL.
    pub graph_url: String,
    /// The dev account's secret.
    pub secret: &'a str,
}

/// The lines printed for the operator once the broker listens on `addr`.
pub fn banner(setup: &Banner<'_>, addr: SocketAddr) -> String {
    let base = format!("http://{addr}");
    let secret = setup.secret;
    format!(
        "tokenbroker dev mode: no Azure involved. A simulated Entra authority runs at {authority},\n\
         a Microsoft Graph stand-in at {graph_url} (mailbox {DEV_MAILBOX} has 25 messages);\n\
         tenants \"{name}\" ({domain}) and \"{other}\" ({other_domain}) have consented;\n\
         account \"{DEV_ACCOUNT}\" may use any tenant (default: {name}).\n\
         \n\
         Broker: {base}\n\
         \n\
         Get a Graph token:\n\
         \x20 curl -s -H 'Authorization: Bearer {secret}' '{base}/v1/token?tenant={name}'\n\
         \n\
         For Azure SDKs (ManagedIdentityCredential):\n\
         \x20 export IDENTITY_ENDPOINT={base}/msi/token\n\
         \x20 export IDENTITY_HEADER={secret}\n\
         \n\
         Or let the broker call Graph (the caller never holds a token; its rules allow\n\
         reading and sending as {DEV_MAILBOX} only):\n\
         \x20 curl -s -H 'Authorization: Bearer {secret}' '{base}/graph/{name}/v1.0/users/{DEV_MAILBOX}/messages?$top=2'\n\
         \n\
         Metrics: {base}/metrics    Stop: Ctrl-C\n",
        authority = setup.authority_url,
        graph_url = setup.graph_url,
        name = DEV_TENANTS[0].0,
        domain = DEV_TENANTS[0].1,
        other = DEV_TENANTS[1].0,
        other_domain = DEV_TENANTS[1].1,
    )
}
