//! What can be wrong with a credential, naming the file (and, through the
//! configuration, the key) and what to do.

use super::{CredentialKind, CredentialSource, FederatedSource, MIN_RSA_BITS};
use std::path::{Path, PathBuf};

/// A problem with the certificate or key, naming the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The configuration names no credential at all.
    #[error("no credential is configured; set app.certificate or list [[app.credentials]]")]
    NoCredential,
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The file is not in a form tokenbroker reads.
    #[error("{path} {message}")]
    Format {
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The key or PFX is encrypted but no password variable is configured.
    #[error("{path} is password-protected; put the password in an environment variable or a file and name it in app.private_key_password_env or app.private_key_password_file (password_env or password_file in [[app.credentials]]; --password-env for `cert inspect`)")]
    PasswordNeeded { path: PathBuf },
    /// The configured password variable is not set, or its file unreadable.
    #[error("{path} needs a password, but {origin} {why}")]
    PasswordUnavailable {
        path: PathBuf,
        origin: String,
        why: String,
    },
    /// Decryption failed: the password is wrong.
    #[error("{path}: wrong password (from {origin}); check its value")]
    WrongPassword { path: PathBuf, origin: String },
    /// Entra accepts RSA keys only.
    #[error("{path} holds an {algorithm} key; Entra accepts RSA keys only: make an RSA certificate and key with `tokenbroker cert new`")]
    NotRsa {
        /// The key or certificate file.
        path: PathBuf,
        /// The algorithm found.
        algorithm: String,
    },
    /// The key is smaller than 2048 bits.
    #[error("{path} holds a {bits}-bit RSA key; Entra requires at least {MIN_RSA_BITS} bits: make a new one with `tokenbroker cert new`")]
    KeyTooSmall {
        path: PathBuf,
        /// The key's modulus size.
        bits: usize,
    },
    /// The key is malformed or inconsistent.
    #[error("{path} holds an invalid RSA key ({reason})")]
    InvalidKey {
        path: PathBuf,
        /// What the check found.
        reason: String,
    },
    /// No key was given and the certificate file has none.
    #[error("{path} holds no private key; set app.private_key to the key file, or use a PFX holding both")]
    KeyMissing { path: PathBuf },
    /// The key does not belong to the certificate.
    #[error("the private key in {key} does not match the certificate in {certificate} (thumbprint {thumbprint}); configure the key that was created with this certificate")]
    KeyMismatch {
        certificate: PathBuf,
        key: PathBuf,
        /// SHA-1 thumbprint of the certificate.
        thumbprint: String,
    },
    /// The certificate's notAfter has passed.
    #[error("certificate {path} (thumbprint {thumbprint}) expired at {not_after}; create a new one with `tokenbroker cert new`, upload it to the app registration and configure it")]
    Expired {
        path: PathBuf,
        thumbprint: String,
        /// notAfter, RFC 3339.
        not_after: String,
    },
    /// One of the errors above, placed in the configuration: which file and
    /// which key named the file at fault.
    #[error("{config}: {field}: {source}{hint}")]
    InConfig {
        config: PathBuf,
        /// `app.certificate`, `app.credentials[1].private_key`, …
        field: String,
        source: Box<CredentialError>,
        /// What to do beyond the inner error's advice (for permission errors:
        /// which user the process runs as).
        hint: String,
    },
    /// The certificate's notBefore is in the future.
    #[error("certificate {path} (thumbprint {thumbprint}) is not valid before {not_before}; check the system clock or wait")]
    NotYetValid {
        path: PathBuf,
        thumbprint: String,
        /// notBefore, RFC 3339.
        not_before: String,
    },
}

impl CredentialError {
    /// The file this error is about, if it is about one file.
    fn path(&self) -> Option<&Path> {
        use CredentialError as E;
        match self {
            E::Read { path, .. }
            | E::Format { path, .. }
            | E::PasswordNeeded { path }
            | E::WrongPassword { path, .. }
            | E::NotRsa { path, .. }
            | E::KeyTooSmall { path, .. }
            | E::InvalidKey { path, .. }
            | E::KeyMissing { path }
            | E::Expired { path, .. }
            | E::NotYetValid { path, .. } => Some(path),
            E::KeyMismatch { key, .. } => Some(key),
            // The password's origin already names its key.
            E::PasswordUnavailable { .. } | E::NoCredential | E::InConfig { .. } => None,
        }
    }

    /// Places the error in the configuration file `config`: the key among
    /// `sources` that named the file at fault. A permission error also says
    /// which user the process runs as, since that is what the operator fixes.
    pub fn in_config(self, config: &Path, sources: &[CredentialSource]) -> CredentialError {
        let Some(path) = self.path() else {
            return self;
        };
        let field = sources.iter().find_map(|s| {
            let name = if Some(path) == s.certificate() {
                "certificate"
            } else if Some(path) == s.private_key() {
                "private_key"
            } else if matches!(&s.kind, CredentialKind::Federated(FederatedSource::TokenFile(p)) if p == path) {
                "federated_token_file"
            } else if Some(path) == s.password_file() {
                if s.key == "app" {
                    "private_key_password_file"
                } else {
                    "password_file"
                }
            } else {
                return None;
            };
            Some(format!("{}.{name}", s.key))
        });
        let Some(field) = field else {
            return self;
        };
        let hint = match &self {
            CredentialError::Read { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                format!(
                    "; tokenbroker runs as {}: let that user read the file (chown it, or chmod; keep a key 0600 or 0640)",
                    crate::sys::process_user()
                )
            }
            _ => String::new(),
        };
        CredentialError::InConfig {
            config: config.to_owned(),
            field,
            source: Box::new(self),
            hint,
        }
    }
}
