//! The app's credentials: loading, checking, thumbprints, and the client
//! assertion each one makes.
//!
//! [`Credential::load`] reads what `[app]` names. A certificate and key
//! (see `files.rs` for the formats) are checked as Entra will check them:
//! an RSA key of at least 2048 bits, matching the certificate, within the
//! certificate's validity. The key is parsed and checked with the `rsa`
//! crate, then parsed once more by aws-lc-rs, which holds it for signing
//! (and wipes it when the credential is dropped); the bytes in between live
//! only in zeroizing buffers, and no key material reaches `Debug`, logs or
//! errors. The credential hands the [`assertion`](crate::assertion) module
//! a [`Signer`] over that key.
//!
//! Two other kinds make assertions without a key in the process: a key in
//! a PKCS#11 token ([`pkcs11`], the token signs) and federated credentials
//! (`federated.rs`: a token file, or the host's managed identity).
//!
//! The daemon holds its credentials in a [`CredentialSet`], which orders
//! them, remembers refusals per tenant, and lets new credentials replace
//! the old ones while requests are in flight.

mod certificate;
mod error;
mod federated;
mod files;
pub mod pkcs11;
mod source;

use certificate::{algorithm_name, modulus_bits, OID_RSA_ENCRYPTION};
pub use certificate::{same_rsa_key, CertificateInfo, Validity};
pub use error::CredentialError;
pub use source::{CredentialKind, CredentialSource, FederatedSource};

pub use files::PasswordSource;

use crate::assertion::Signer;
use pkcs8::der::Decode;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Entra rejects smaller RSA keys.
pub const MIN_RSA_BITS: usize = 2048;
/// A certificate expiring within this window gets a warning: time to rotate.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// A loaded, checked credential, ready to make client assertions: a
/// certificate and its key, or a federated credential.
pub struct Credential {
    /// The certificate, for the kinds that have one.
    info: Option<CertificateInfo>,
    chain: Vec<Vec<u8>>,
    proof: Proof,
    /// What status, metrics and logs call it: the certificate's thumbprint,
    /// `federated:<issuer>`, `pkcs11:<label>`.
    id: String,
    source: CredentialSource,
}

/// How a credential proves the app's identity.
#[allow(clippy::large_enum_variant)]
enum Proof {
    /// A private key in memory, parsed (and checked) once by aws-lc-rs,
    /// which wipes it on drop.
    Key(aws_lc_rs::signature::RsaKeyPair),
    /// A token from another issuer.
    Federated(federated::Federated),
    /// A key inside a PKCS#11 token.
    Hsm(Arc<pkcs11::HsmKey>),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("id", &self.id)
            .field("kind", &self.kind())
            .field("subject", &self.info.as_ref().map(|i| &i.subject))
            .field(
                "not_after",
                &self.info.as_ref().map(|i| crate::sys::rfc3339(i.not_after)),
            )
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// A credential and the warnings its checks produced (e.g. expiring soon).
#[derive(Debug)]
pub struct Loaded {
    /// The credential.
    pub credential: Credential,
    /// Things an operator should act on, but that do not stop the daemon.
    pub warnings: Vec<String>,
}

impl Credential {
    /// Loads and checks the credential `source` names, as of `now`.
    pub fn load(source: &CredentialSource, now: SystemTime) -> Result<Loaded, CredentialError> {
        let (cert_path, private_key) = match &source.kind {
            CredentialKind::Federated(federated) => {
                let (proof, id, warnings) = federated::Federated::load(source, federated, now)?;
                return Ok(Loaded {
                    credential: Credential {
                        info: None,
                        chain: Vec::new(),
                        proof: Proof::Federated(proof),
                        id,
                        source: source.clone(),
                    },
                    warnings,
                });
            }
            CredentialKind::Pkcs11 { certificate, token } => {
                return Credential::load_hsm(source, certificate, token, now);
            }
            CredentialKind::Files {
                certificate,
                private_key,
                ..
            } => (certificate.as_path(), private_key.as_deref()),
        };
        let password = source.password();
        let cert_file = files::read_certificate_file(cert_path, password.as_ref())?;
        let key = match private_key {
            Some(key_path) => Some((
                files::read_key_file(key_path, password.as_ref())?,
                key_path.to_owned(),
            )),
            None => None,
        };
        let mut loaded = Credential::assemble(source.clone(), cert_path, cert_file, key, now)?;
        let key_file = private_key.unwrap_or(cert_path);
        if let Some(warning) = key_file_exposure(key_file) {
            loaded.warnings.push(warning);
        }
        Ok(loaded)
    }

    /// A certificate file and its key in a PKCS#11 token: the token's public
    /// key must be the certificate's, and the token must sign.
    fn load_hsm(
        source: &CredentialSource,
        cert_path: &Path,
        config: &crate::config::Pkcs11Config,
        now: SystemTime,
    ) -> Result<Loaded, CredentialError> {
        let hsm_error = |message: String| CredentialError::Format {
            path: config.module.clone(),
            message: format!(
                "(pkcs11, token \"{}\", key \"{}\"): {message}",
                config.token, config.key_label
            ),
        };
        let cert_file = files::read_certificate_file(cert_path, None)?;
        let der = cert_file
            .certs
            .first()
            .ok_or_else(|| CredentialError::Format {
                path: cert_path.to_owned(),
                message: "holds no certificate".into(),
            })?;
        let leaf = CertificateInfo::from_der(der).map_err(|message| CredentialError::Format {
            path: cert_path.to_owned(),
            message,
        })?;
        let key = pkcs11::HsmKey::open(config).map_err(|e| hsm_error(e.to_string()))?;
        let bits = key.public().0.iter().skip_while(|b| **b == 0).count() * 8;
        if bits < MIN_RSA_BITS {
            return Err(hsm_error(format!(
                "the key is RSA-{bits}; Entra requires at least {MIN_RSA_BITS} bits: make a new one with `tokenbroker cert new --pkcs11-…`"
            )));
        }
        if !same_rsa_key(&leaf, key.public()) {
            return Err(CredentialError::KeyMismatch {
                certificate: cert_path.to_owned(),
                key: PathBuf::from(format!("pkcs11:{}/{}", config.token, config.key_label)),
                thumbprint: leaf.thumbprint_sha1,
            });
        }
        let warnings = check_validity(cert_path, &leaf, now)?;
        // Prove it signs now rather than at the first token request.
        for algorithm in [
            crate::config::SigningAlgorithm::PS256,
            crate::config::SigningAlgorithm::RS256,
        ] {
            key.sign(algorithm, b"tokenbroker key check")
                .map_err(|e| hsm_error(e.to_string()))?;
        }
        Ok(Loaded {
            credential: Credential {
                id: format!("pkcs11:{}", config.key_label),
                chain: cert_file.certs,
                info: Some(leaf),
                proof: Proof::Hsm(Arc::new(key)),
                source: source.clone(),
            },
            warnings,
        })
    }

    /// Builds a credential from PEM text held in memory (a throw-away dev
    /// certificate); it cannot be reloaded from disk.
    pub fn from_pem(
        cert_pem: &[u8],
        key_pem: &[u8],
        now: SystemTime,
    ) -> Result<Loaded, CredentialError> {
        let source = CredentialSource::files(
            Path::new("<in-memory certificate>"),
            Some(Path::new("<in-memory key>")),
        );
        let cert_path = Path::new("<in-memory certificate>");
        let cert_file = files::parse_certificate_file(cert_path, cert_pem, None)?;
        let key = files::parse_key_file(Path::new("<in-memory key>"), key_pem, None)?;
        let key_path = PathBuf::from("<in-memory key>");
        Credential::assemble(source, cert_path, cert_file, Some((key, key_path)), now)
    }

    /// Checks a certificate file and key against each other and the clock.
    fn assemble(
        source: CredentialSource,
        cert_path: &Path,
        cert_file: files::CertificateFile,
        key: Option<(files::RawKey, PathBuf)>,
        now: SystemTime,
    ) -> Result<Loaded, CredentialError> {
        let cert_path = &cert_path.to_owned();
        let separate_key = key.is_some();
        let (key, key_path) = match key {
            Some(pair) => pair,
            None => match cert_file.key {
                Some(key) => (key, cert_path.clone()),
                None => {
                    return Err(CredentialError::KeyMissing {
                        path: cert_path.clone(),
                    })
                }
            },
        };
        let (private_key, pkcs1_der) = check_private_key(&key_path, key)?;
        let public = private_key.to_public_key();

        // The leaf is the certificate whose key we hold; in a PEM chain it must
        // be the first one, in a PFX it may be anywhere.
        let mut infos = Vec::with_capacity(cert_file.certs.len());
        for der in &cert_file.certs {
            infos.push(CertificateInfo::from_der(der).map_err(|message| {
                CredentialError::Format {
                    path: cert_path.clone(),
                    message,
                }
            })?);
        }
        let leaf_index = if !separate_key && infos.len() > 1 {
            infos
                .iter()
                .position(|info| info.rsa_public_key().as_ref() == Some(&public))
                .unwrap_or(0)
        } else {
            0
        };
        let leaf = infos.swap_remove(leaf_index);
        if leaf.key_algorithm != "RSA" {
            return Err(CredentialError::NotRsa {
                path: cert_path.clone(),
                algorithm: leaf.key_algorithm,
            });
        }
        if leaf.rsa_public_key().as_ref() != Some(&public) {
            return Err(CredentialError::KeyMismatch {
                certificate: cert_path.clone(),
                key: key_path,
                thumbprint: leaf.thumbprint_sha1,
            });
        }

        let warnings = check_validity(cert_path, &leaf, now)?;

        let invalid = |e: String| CredentialError::InvalidKey {
            path: key_path.clone(),
            reason: format!("the signing library rejected it: {e}"),
        };
        let key = aws_lc_rs::signature::RsaKeyPair::from_der(&pkcs1_der)
            .map_err(|e| invalid(e.to_string()))?;
        // Prove it signs now rather than at the first token request.
        crate::assertion::self_test(&key).map_err(|e| invalid(e.to_string()))?;

        let mut chain = vec![leaf.der.clone()];
        chain.extend(
            cert_file
                .certs
                .into_iter()
                .enumerate()
                .filter(|(i, _)| *i != leaf_index)
                .map(|(_, der)| der),
        );
        Ok(Loaded {
            credential: Credential {
                id: leaf.thumbprint_sha1.clone(),
                info: Some(leaf),
                chain,
                proof: Proof::Key(key),
                source,
            },
            warnings,
        })
    }

    /// The leaf certificate, for the kinds that have one.
    pub fn certificate(&self) -> Option<&CertificateInfo> {
        self.info.as_ref()
    }

    /// What status, metrics and logs call it: the certificate's SHA-1
    /// thumbprint, or `federated:<issuer>`.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn set_id(&mut self, id: String) {
        self.id = id;
    }

    /// `certificate`, `federated_token_file` or `federated_managed_identity`.
    pub fn kind(&self) -> &'static str {
        match &self.proof {
            Proof::Key(_) => "certificate",
            Proof::Hsm(_) => "pkcs11",
            Proof::Federated(f) => f.kind(),
        }
    }

    /// When it stops being usable (a certificate's notAfter).
    pub fn not_after(&self) -> Option<SystemTime> {
        self.info.as_ref().map(|i| i.not_after)
    }

    /// Orders credentials: the newest certificate first; federated ones
    /// after every certificate, in file order.
    pub(crate) fn not_before(&self) -> SystemTime {
        self.info
            .as_ref()
            .map_or(SystemTime::UNIX_EPOCH, |i| i.not_before)
    }

    /// A client assertion for `client_id` towards `token_endpoint`: signed
    /// afresh with the key, or the federated token as it is now.
    pub async fn client_assertion(
        &self,
        algorithm: crate::config::SigningAlgorithm,
        client_id: &str,
        token_endpoint: &str,
        now_unix: u64,
    ) -> Result<crate::assertion::ClientAssertion, crate::assertion::AssertionError> {
        match &self.proof {
            Proof::Key(key) => {
                let info = self.info.as_ref().ok_or_else(|| {
                    crate::assertion::AssertionError::new(
                        "a key credential without its certificate",
                    )
                })?;
                let signer = Signer {
                    key,
                    x5t: &info.x5t,
                    x5t_s256: &info.x5t_s256,
                };
                crate::assertion::sign(&signer, algorithm, client_id, token_endpoint, now_unix)
            }
            Proof::Hsm(key) => {
                let info = self.info.as_ref().ok_or_else(|| {
                    crate::assertion::AssertionError::new(
                        "a PKCS#11 credential without its certificate",
                    )
                })?;
                let input = crate::assertion::signing_input(
                    algorithm,
                    &info.x5t,
                    &info.x5t_s256,
                    client_id,
                    token_endpoint,
                    now_unix,
                )?;
                let key = Arc::clone(key);
                let message = input.clone().into_bytes();
                // The token signs synchronously, and may be slow or remote.
                let signature = tokio::task::spawn_blocking(move || key.sign(algorithm, &message))
                    .await
                    .map_err(|e| {
                        crate::assertion::AssertionError::new(format!(
                            "the signing task failed: {e}"
                        ))
                    })?
                    .map_err(|e| crate::assertion::AssertionError::new(e.to_string()))?;
                Ok(crate::assertion::finish(input, &signature))
            }
            Proof::Federated(federated) => federated
                .assertion(now_unix)
                .await
                .map(crate::assertion::ClientAssertion::federated)
                .map_err(|e| crate::assertion::AssertionError::new(e.to_string())),
        }
    }

    /// DER certificates, leaf first.
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// Where this credential was loaded from (for reloading).
    pub fn source(&self) -> &CredentialSource {
        &self.source
    }

    /// What the assertion module signs with: the key and the certificate's
    /// thumbprints for the JWT header (`None` for a federated credential).
    pub fn signer(&self) -> Option<Signer<'_>> {
        match (&self.proof, &self.info) {
            (Proof::Key(key), Some(info)) => Some(Signer {
                key,
                x5t: &info.x5t,
                x5t_s256: &info.x5t_s256,
            }),
            _ => None,
        }
    }
}

/// A certificate's validity at `now`: an error when expired or not yet
/// valid, a warning when it expires within [`EXPIRY_WARNING`].
fn check_validity(
    cert_path: &Path,
    leaf: &CertificateInfo,
    now: SystemTime,
) -> Result<Vec<String>, CredentialError> {
    let mut warnings = Vec::new();
    match leaf.validity_at(now) {
        Validity::Valid => {}
        Validity::ExpiresSoon(left) => warnings.push(format!(
            "certificate {} (thumbprint {}) expires at {} (in {} days); create a new one with \
             `tokenbroker cert new`, upload it beside the old one, then switch the configuration",
            cert_path.display(),
            leaf.thumbprint_sha1,
            crate::sys::rfc3339(leaf.not_after),
            left.as_secs() / 86_400
        )),
        Validity::Expired => {
            return Err(CredentialError::Expired {
                path: cert_path.to_owned(),
                thumbprint: leaf.thumbprint_sha1.clone(),
                not_after: crate::sys::rfc3339(leaf.not_after),
            })
        }
        Validity::NotYetValid => {
            return Err(CredentialError::NotYetValid {
                path: cert_path.to_owned(),
                thumbprint: leaf.thumbprint_sha1.clone(),
                not_before: crate::sys::rfc3339(leaf.not_before),
            })
        }
    }
    Ok(warnings)
}

/// A warning when the file holding a private key can be read by its group
/// or by others: anyone who copies the key gets tokens for every tenant.
fn key_file_exposure(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "private key {} is readable by {} (mode {mode:04o}): anyone who copies it can get tokens for every tenant; run `chmod 600 {}` (and chown it to the daemon's user)",
            path.display(),
            if mode & 0o007 != 0 { "every user" } else { "its group" },
            path.display()
        )
    })
}

/// Parses and checks a private key; returns it and its PKCS#1 DER (what
/// aws-lc-rs signs with).
fn check_private_key(
    path: &Path,
    key: files::RawKey,
) -> Result<(rsa::PrivateKey, zeroize::Zeroizing<Vec<u8>>), CredentialError> {
    let invalid = |reason: String| CredentialError::InvalidKey {
        path: path.to_owned(),
        reason,
    };
    let (private_key, pkcs1_der) = match key {
        files::RawKey::Pkcs8(der) => {
            let info = pkcs8::PrivateKeyInfoRef::from_der(&der)
                .map_err(|e| invalid(format!("malformed PKCS#8: {e}")))?;
            let oid = info.algorithm.oid.to_string();
            if oid != OID_RSA_ENCRYPTION {
                return Err(CredentialError::NotRsa {
                    path: path.to_owned(),
                    algorithm: algorithm_name(&oid),
                });
            }
            let pkcs1 = zeroize::Zeroizing::new(info.private_key.as_bytes().to_vec());
            let key = rsa::PrivateKey::try_from(info).map_err(|e| invalid(e.to_string()))?;
            (key, pkcs1)
        }
        files::RawKey::Pkcs1(der) => {
            let key = <rsa::PrivateKey as rsa::pkcs1::DecodeRsaPrivateKey>::from_pkcs1_der(&der)
                .map_err(|e| invalid(format!("malformed PKCS#1: {e}")))?;
            (key, der)
        }
    };
    let bits = modulus_bits(&private_key);
    if bits < MIN_RSA_BITS {
        return Err(CredentialError::KeyTooSmall {
            path: path.to_owned(),
            bits,
        });
    }
    private_key.validate().map_err(|e| invalid(e.to_string()))?;
    Ok((private_key, pkcs1_der))
}

/// Checks the key in `path` against a certificate without loading a whole
/// credential (for `cert inspect --key`). `Ok(true)` when they match.
pub fn key_matches(
    cert: &CertificateInfo,
    key_path: &Path,
    password: Option<&PasswordSource>,
) -> Result<bool, CredentialError> {
    let key = files::read_key_file(key_path, password)?;
    let (private_key, _) = check_private_key(key_path, key)?;
    Ok(cert.rsa_public_key().as_ref() == Some(&private_key.to_public_key()))
}

/// Reads the certificates of a file (PEM, DER or PFX) for inspection, with
/// whether the file carries a matching key (PFX, combined PEM).
pub fn inspect_file(
    path: &Path,
    password: Option<&PasswordSource>,
) -> Result<(Vec<CertificateInfo>, Option<bool>), CredentialError> {
    let file = files::read_certificate_file(path, password)?;
    let mut infos = Vec::new();
    for der in &file.certs {
        infos.push(
            CertificateInfo::from_der(der).map_err(|message| CredentialError::Format {
                path: path.to_owned(),
                message,
            })?,
        );
    }
    let embedded_key_matches = match file.key {
        Some(key) => {
            let (private_key, _) = check_private_key(path, key)?;
            let public = private_key.to_public_key();
            // Put the matching certificate first: that is the leaf.
            match infos
                .iter()
                .position(|i| i.rsa_public_key().as_ref() == Some(&public))
            {
                Some(i) => {
                    infos.swap(0, i);
                    Some(true)
                }
                None => Some(false),
            }
        }
        None => None,
    };
    Ok((infos, embedded_key_matches))
}

mod set;

pub use set::{CredentialSet, Fingerprint, ReadSet, Rejection};
