//! Where a credential comes from: its files and password, a federated
//! token file or managed identity, or a key in a PKCS#11 token.

use super::PasswordSource;
use crate::config::AppConfig;
use std::path::{Path, PathBuf};

/// A credential that is a token from another issuer (workload identity
/// federation) rather than a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FederatedSource {
    /// A token file, re-read for every assertion (Kubernetes rotates it).
    TokenFile(PathBuf),
    /// The host's managed identity, asked for `api://AzureADTokenExchange`.
    ManagedIdentity(crate::config::ManagedIdentityConfig),
}

/// Where a credential comes from: its files and its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialSource {
    /// Certificate file (PEM, DER or PFX); none for a federated credential.
    pub certificate: Option<PathBuf>,
    /// Key file, when separate from the certificate.
    pub private_key: Option<PathBuf>,
    /// Name of the password variable, when the key or PFX is encrypted.
    pub password_env: Option<String>,
    /// Or the file holding the password.
    pub password_file: Option<PathBuf>,
    /// The key is in a PKCS#11 token.
    pub pkcs11: Option<crate::config::Pkcs11Config>,
    /// A federated credential instead of a certificate.
    pub federated: Option<FederatedSource>,
    /// The configuration key that names it (`app`, `app.credentials[1]`).
    pub key: String,
}

impl CredentialSource {
    /// A certificate and key with no password (tests, tools).
    pub fn files(certificate: &Path, private_key: Option<&Path>) -> CredentialSource {
        CredentialSource {
            certificate: Some(certificate.to_owned()),
            private_key: private_key.map(Path::to_owned),
            password_env: None,
            password_file: None,
            pkcs11: None,
            federated: None,
            key: "app".into(),
        }
    }

    /// Every credential `[app]` names, in file order.
    pub fn all_from_config(app: &AppConfig) -> Vec<CredentialSource> {
        let single = app.credentials.is_empty();
        app.credential_configs()
            .into_iter()
            .enumerate()
            .map(|(i, c)| CredentialSource {
                certificate: c.certificate,
                private_key: c.private_key,
                password_env: c.password_env.map(|v| v.as_str().to_owned()),
                password_file: c.password_file,
                pkcs11: c.pkcs11,
                federated: match (c.federated_token_file, c.federated_managed_identity) {
                    (Some(path), _) => Some(FederatedSource::TokenFile(path)),
                    (None, Some(mi)) => Some(FederatedSource::ManagedIdentity(mi)),
                    (None, None) => None,
                },
                key: if single {
                    "app".into()
                } else {
                    format!("app.credentials[{i}]")
                },
            })
            .collect()
    }

    /// The password, if one is configured, read now.
    pub fn password(&self) -> Option<PasswordSource> {
        let (env_key, file_key) = if self.key == "app" {
            (
                "app.private_key_password_env",
                "app.private_key_password_file",
            )
        } else {
            ("password_env", "password_file")
        };
        match (&self.password_env, &self.password_file) {
            (Some(name), _) => Some(PasswordSource::from_env(name, &self.qualified(env_key))),
            (None, Some(path)) => Some(PasswordSource::from_file(path, &self.qualified(file_key))),
            (None, None) => None,
        }
    }

    fn qualified(&self, key: &str) -> String {
        if self.key == "app" {
            key.to_owned()
        } else {
            format!("{}.{key}", self.key)
        }
    }

    /// The files this credential is read from (for the change watch). A
    /// federated token file is not among them: it is read at every use.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        [
            self.certificate.as_deref(),
            self.private_key.as_deref(),
            self.password_file.as_deref(),
        ]
        .into_iter()
        .flatten()
    }
}
