//! Where a credential comes from: its files and password, a federated
//! token file or managed identity, or a key in a PKCS#11 token.

use super::PasswordSource;
use crate::config::AppConfig;
use crate::sys::SecretSource;
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

/// What kind of credential, and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialKind {
    /// A certificate file (PEM, DER or PFX) and its key: in the same file
    /// or in `private_key`, encrypted with `password` or not.
    Files {
        certificate: PathBuf,
        private_key: Option<PathBuf>,
        password: Option<SecretSource>,
    },
    /// A certificate file; its key inside a PKCS#11 token.
    Pkcs11 {
        certificate: PathBuf,
        token: crate::config::Pkcs11Config,
    },
    /// A token from another issuer instead of a key.
    Federated(FederatedSource),
}

/// Where a credential comes from, and the configuration key that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialSource {
    pub kind: CredentialKind,
    /// The configuration key that names it (`app`, `app.credentials[1]`,
    /// `apps[1].credentials[0]`).
    pub key: String,
}

impl CredentialSource {
    /// A certificate and key with no password (tests, tools).
    pub fn files(certificate: &Path, private_key: Option<&Path>) -> CredentialSource {
        CredentialSource {
            kind: CredentialKind::Files {
                certificate: certificate.to_owned(),
                private_key: private_key.map(Path::to_owned),
                password: None,
            },
            key: "app".into(),
        }
    }

    /// Every credential `app` names, in file order. (Validation gives
    /// every credential that is not federated a certificate.)
    pub fn all_from_config(app: &AppConfig) -> Vec<CredentialSource> {
        let single = app.credentials.is_empty();
        app.credential_configs()
            .into_iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let kind = match (
                    c.federated_token_file,
                    c.federated_managed_identity,
                    c.pkcs11,
                    c.certificate,
                ) {
                    (Some(path), _, _, _) => {
                        CredentialKind::Federated(FederatedSource::TokenFile(path))
                    }
                    (None, Some(mi), _, _) => {
                        CredentialKind::Federated(FederatedSource::ManagedIdentity(mi))
                    }
                    (None, None, Some(token), Some(certificate)) => {
                        CredentialKind::Pkcs11 { certificate, token }
                    }
                    (None, None, None, Some(certificate)) => CredentialKind::Files {
                        certificate,
                        private_key: c.private_key,
                        password: match (c.password_env, c.password_file) {
                            (Some(name), _) => Some(SecretSource::Env(name.as_str().to_owned())),
                            (None, Some(path)) => Some(SecretSource::File(path)),
                            (None, None) => None,
                        },
                    },
                    (None, None, _, None) => return None,
                };
                Some(CredentialSource {
                    kind,
                    key: if single {
                        app.key.clone()
                    } else {
                        format!("{}.credentials[{i}]", app.key)
                    },
                })
            })
            .collect()
    }

    /// The certificate file, for the kinds that have one.
    pub fn certificate(&self) -> Option<&Path> {
        match &self.kind {
            CredentialKind::Files { certificate, .. }
            | CredentialKind::Pkcs11 { certificate, .. } => Some(certificate),
            CredentialKind::Federated(_) => None,
        }
    }

    /// The key file, when separate from the certificate.
    pub fn private_key(&self) -> Option<&Path> {
        match &self.kind {
            CredentialKind::Files { private_key, .. } => private_key.as_deref(),
            _ => None,
        }
    }

    /// The file holding the key's password, when it is in one.
    pub fn password_file(&self) -> Option<&Path> {
        match &self.kind {
            CredentialKind::Files {
                password: Some(SecretSource::File(path)),
                ..
            } => Some(path),
            _ => None,
        }
    }

    /// The password, if one is configured, read now.
    pub fn password(&self) -> Option<PasswordSource> {
        // A lone credential's keys are the app's own (`app.private_key_…`).
        let (env_key, file_key) = if self.key.contains('.') {
            ("password_env", "password_file")
        } else {
            ("private_key_password_env", "private_key_password_file")
        };
        match &self.kind {
            CredentialKind::Files {
                password: Some(SecretSource::Env(name)),
                ..
            } => Some(PasswordSource::from_env(
                name,
                &format!("{}.{env_key}", self.key),
            )),
            CredentialKind::Files {
                password: Some(SecretSource::File(path)),
                ..
            } => Some(PasswordSource::from_file(
                path,
                &format!("{}.{file_key}", self.key),
            )),
            _ => None,
        }
    }

    /// The files this credential is read from (for the change watch). A
    /// federated token file is not among them: it is read at every use.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        [self.certificate(), self.private_key(), self.password_file()]
            .into_iter()
            .flatten()
    }
}
