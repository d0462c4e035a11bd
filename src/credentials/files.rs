//! Reading certificate and key files in the forms operators have: PEM chains,
//! DER certificates, PKCS#8 / PKCS#1 / encrypted PKCS#8 PEM keys, and
//! PFX/PKCS#12 bundles (AES as well as legacy 3DES/RC2 exports).
//!
//! Everything returned here is raw DER; checking what it means is `mod.rs`'s job.

use super::CredentialError;
use crate::sys::{SecretError, SecretSource};
use pkcs8::der::Decode;
use std::path::Path;
use zeroize::Zeroizing;

/// A private key as found in a file, before any checks.
pub(crate) enum RawKey {
    /// PKCS#8 `PrivateKeyInfo` DER.
    Pkcs8(Zeroizing<Vec<u8>>),
    /// PKCS#1 `RSAPrivateKey` DER.
    Pkcs1(Zeroizing<Vec<u8>>),
}

/// What a certificate file held.
pub(crate) struct CertificateFile {
    /// Certificate DERs in file order (for PEM: the leaf first).
    pub(crate) certs: Vec<Vec<u8>>,
    /// The private key, when the file carried one (PFX, or PEM with a key block).
    pub(crate) key: Option<RawKey>,
}

/// Reads `path` whole, naming it in the error.
pub(crate) fn read(path: &Path) -> Result<Zeroizing<Vec<u8>>, CredentialError> {
    crate::sys::read_bounded(path).map_err(|source| CredentialError::Read {
        path: path.to_owned(),
        source,
    })
}

/// A password source: `None` when no password is configured.
pub(crate) type Password<'a> = Option<&'a PasswordSource>;

/// Where a key or PFX password comes from, and the password (or why it
/// could not be had), read when the credential is loaded.
#[derive(Clone)]
pub struct PasswordSource {
    /// For messages: `environment variable X (app.private_key_password_env)`.
    pub origin: String,
    pub value: Result<Zeroizing<String>, String>,
}

impl PasswordSource {
    /// The environment variable `name`; `key` is the setting that named it.
    pub fn from_env(name: &str, key: &str) -> PasswordSource {
        PasswordSource::read(SecretSource::Env(name.to_owned()), key)
    }

    /// The file at `path` (systemd's `$CREDENTIALS_DIRECTORY/…`), without
    /// its final newline; `key` is the setting that named it.
    pub fn from_file(path: &Path, key: &str) -> PasswordSource {
        PasswordSource::read(SecretSource::File(path.to_owned()), key)
    }

    fn read(source: SecretSource, key: &str) -> PasswordSource {
        PasswordSource {
            origin: format!("{} ({key})", source.describe()),
            value: source.read().map_err(|e| match e {
                SecretError::Unset => "is not set".to_owned(),
                other => other.to_string(),
            }),
        }
    }

    fn require(&self, path: &Path) -> Result<&str, CredentialError> {
        match &self.value {
            Ok(value) => Ok(value.as_str()),
            Err(why) => Err(CredentialError::PasswordUnavailable {
                path: path.to_owned(),
                origin: self.origin.clone(),
                why: why.clone(),
            }),
        }
    }
}

impl std::fmt::Debug for PasswordSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordSource")
            .field("origin", &self.origin)
            .field("value", &self.value.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// Reads a certificate file: a PEM chain (optionally with the key too), one
/// DER certificate, or a PFX/PKCS#12 bundle.
pub(crate) fn read_certificate_file(
    path: &Path,
    password: Password<'_>,
) -> Result<CertificateFile, CredentialError> {
    parse_certificate_file(path, &read(path)?, password)
}

/// Parses the contents of a certificate file; `path` names it in errors.
pub(crate) fn parse_certificate_file(
    path: &Path,
    bytes: &[u8],
    password: Password<'_>,
) -> Result<CertificateFile, CredentialError> {
    if looks_like_pem(bytes) {
        let blocks = pem_blocks(path, bytes)?;
        let certs: Vec<Vec<u8>> = blocks
            .iter()
            .filter(|(label, _)| label == "CERTIFICATE")
            .map(|(_, der)| der.to_vec())
            .collect();
        if certs.is_empty() {
            return Err(CredentialError::Format {
                path: path.to_owned(),
                message: "holds no \"BEGIN CERTIFICATE\" block; expected a PEM certificate \
                          or a .pfx/.p12 file"
                    .into(),
            });
        }
        let key = key_from_blocks(path, &blocks, password)?;
        return Ok(CertificateFile { certs, key });
    }
    if x509_cert::Certificate::from_der(bytes).is_ok() {
        return Ok(CertificateFile {
            certs: vec![bytes.to_vec()],
            key: None,
        });
    }
    read_pfx(path, bytes, password)
}

/// Reads a PEM private key file.
pub(crate) fn read_key_file(
    path: &Path,
    password: Password<'_>,
) -> Result<RawKey, CredentialError> {
    parse_key_file(path, &read(path)?, password)
}

/// Parses the contents of a PEM key file; `path` names it in errors.
pub(crate) fn parse_key_file(
    path: &Path,
    bytes: &[u8],
    password: Password<'_>,
) -> Result<RawKey, CredentialError> {
    if !looks_like_pem(bytes) {
        return Err(CredentialError::Format {
            path: path.to_owned(),
            message:
                "is not a PEM file; expected \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" \
                      or \"BEGIN ENCRYPTED PRIVATE KEY\""
                    .into(),
        });
    }
    let blocks = pem_blocks(path, bytes)?;
    key_from_blocks(path, &blocks, password)?.ok_or_else(|| CredentialError::Format {
        path: path.to_owned(),
        message: "holds no private key block; expected \"BEGIN PRIVATE KEY\", \
                  \"BEGIN RSA PRIVATE KEY\" or \"BEGIN ENCRYPTED PRIVATE KEY\""
            .into(),
    })
}

fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

/// One decoded PEM block: its label and DER.
type PemBlock = (String, Zeroizing<Vec<u8>>);

/// Splits a PEM file into (label, DER) blocks, ignoring text between them
/// (OpenSSL's "Bag Attributes" and comments).
fn pem_blocks(path: &Path, bytes: &[u8]) -> Result<Vec<PemBlock>, CredentialError> {
    let text = std::str::from_utf8(bytes).map_err(|_| CredentialError::Format {
        path: path.to_owned(),
        message: "is not valid UTF-8 text, so not a PEM file".into(),
    })?;
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start..];
        let Some(label_end) = after[11..].find("-----") else {
            break;
        };
        let label = &after[11..11 + label_end];
        let end_marker = format!("-----END {label}-----");
        let Some(end) = after.find(&end_marker) else {
            return Err(CredentialError::Format {
                path: path.to_owned(),
                message: format!(
                    "has a \"BEGIN {label}\" block without its END line; the file is truncated"
                ),
            });
        };
        let block = &after[..end + end_marker.len()];
        let (_, der) = pem_rfc7468_decode(block).map_err(|e| CredentialError::Format {
            path: path.to_owned(),
            message: format!("has a malformed \"{label}\" PEM block ({e})"),
        })?;
        blocks.push((label.to_owned(), der));
        rest = &after[end + end_marker.len()..];
    }
    // Text between blocks is allowed (OpenSSL's "Bag Attributes"); after the
    // last one, anything but white space means a damaged or concatenated file.
    let trailing = rest.trim();
    if !blocks.is_empty() && !trailing.is_empty() {
        return Err(CredentialError::Format {
            path: path.to_owned(),
            message: format!(
                "has {} bytes of text after its last PEM block; the file is damaged or has something appended: keep only the PEM blocks",
                trailing.len()
            ),
        });
    }
    Ok(blocks)
}

fn pem_rfc7468_decode(block: &str) -> Result<(String, Zeroizing<Vec<u8>>), pkcs8::der::pem::Error> {
    // Normalise CRLF so Windows-exported files decode too.
    let normalised = block.replace("\r\n", "\n");
    let (label, der) = pkcs8::der::pem::decode_vec(normalised.as_bytes())?;
    Ok((label.to_owned(), Zeroizing::new(der)))
}

/// Picks the private key out of PEM blocks, decrypting it when needed.
fn key_from_blocks(
    path: &Path,
    blocks: &[PemBlock],
    password: Password<'_>,
) -> Result<Option<RawKey>, CredentialError> {
    for (label, der) in blocks {
        match label.as_str() {
            "PRIVATE KEY" => return Ok(Some(RawKey::Pkcs8(der.clone()))),
            "RSA PRIVATE KEY" => return Ok(Some(RawKey::Pkcs1(der.clone()))),
            "ENCRYPTED PRIVATE KEY" => {
                let Some(source) = password else {
                    return Err(CredentialError::PasswordNeeded { path: path.to_owned() });
                };
                let password = source.require(path)?;
                let unsupported = |detail: String| CredentialError::Format {
                    path: path.to_owned(),
                    message: format!(
                        "is encrypted with an unsupported scheme ({detail}); re-export it with \
                         `openssl pkcs8 -topk8 -v2 aes-256-cbc`"
                    ),
                };
                // Legacy PBES1 (e.g. OpenSSL 1.x's default PBE-SHA1-3DES) does
                // not even parse as PBES2 parameters.
                let info = pkcs8::EncryptedPrivateKeyInfoRef::from_der(der)
                    .map_err(|e| unsupported(e.to_string()))?;
                let plain = info.decrypt(password).map_err(|e| match e {
                    pkcs8::Error::EncryptedPrivateKey(
                        pkcs8::pkcs5::Error::UnsupportedAlgorithm { .. },
                    ) => unsupported(e.to_string()),
                    // A wrong password shows up as a padding or decoding failure.
                    _ => CredentialError::WrongPassword {
                        path: path.to_owned(),
                        origin: source.origin.clone(),
                    },
                })?;
                return Ok(Some(RawKey::Pkcs8(Zeroizing::new(plain.as_bytes().to_vec()))));
            }
            "EC PRIVATE KEY" => {
                return Err(CredentialError::NotRsa {
                    path: path.to_owned(),
                    algorithm: "EC".into(),
                })
            }
            "OPENSSH PRIVATE KEY" | "DSA PRIVATE KEY" => {
                return Err(CredentialError::Format {
                    path: path.to_owned(),
                    message: format!(
                        "holds a \"{label}\" block; Entra accepts RSA keys only, in PKCS#8 or PKCS#1 PEM"
                    ),
                })
            }
            _ => {}
        }
    }
    Ok(None)
}

/// Reads a PFX/PKCS#12 bundle. Without a password variable the empty
/// password is tried, as Windows' export wizard allows.
fn read_pfx(
    path: &Path,
    bytes: &[u8],
    password: Password<'_>,
) -> Result<CertificateFile, CredentialError> {
    let password_text = match password {
        Some(source) => source.require(path)?,
        None => "",
    };
    let archive =
        p12_keystore::Pkcs12Archive::from_pkcs12(bytes, password_text).map_err(|e| match e {
            p12_keystore::error::Error::MacError(_) => match password {
                Some(source) => CredentialError::WrongPassword {
                    path: path.to_owned(),
                    origin: source.origin.clone(),
                },
                None => CredentialError::PasswordNeeded {
                    path: path.to_owned(),
                },
            },
            p12_keystore::error::Error::DerError(_) if !bytes.starts_with(&[0x30]) => {
                CredentialError::Format {
                    path: path.to_owned(),
                    message: "is neither PEM, a DER certificate, nor a PFX/PKCS#12 file".into(),
                }
            }
            other => CredentialError::Format {
                path: path.to_owned(),
                message: format!("could not be read as PFX/PKCS#12 ({other})"),
            },
        })?;
    let certs: Vec<Vec<u8>> = archive
        .certs
        .iter()
        .map(|bag| bag.cert.as_der().to_vec())
        .collect();
    if certs.is_empty() {
        return Err(CredentialError::Format {
            path: path.to_owned(),
            message:
                "is a PFX/PKCS#12 file without a certificate; export the certificate with its key"
                    .into(),
        });
    }
    let key = archive
        .keys
        .first()
        .map(|bag| RawKey::Pkcs8(Zeroizing::new(bag.key.as_der().to_vec())));
    Ok(CertificateFile { certs, key })
}
