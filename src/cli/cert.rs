//! `cert new` (a key and self-signed certificate in files, or a key made
//! inside a PKCS#11 token) and `cert inspect`.

use super::{out, CliError};
use crate::credentials::{self, CertificateInfo, CredentialError, PasswordSource, Validity};
use crate::sys::rfc3339;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use zeroize::Zeroizing;

pub(super) fn cert_new(
    subject: &str,
    days: u32,
    bits: u32,
    dir: &Path,
    force: bool,
) -> Result<(), CliError> {
    let key_size = match bits {
        2048 => rcgen::RsaKeySize::_2048,
        3072 => rcgen::RsaKeySize::_3072,
        4096 => rcgen::RsaKeySize::_4096,
        other => {
            return Err(CliError::Usage(format!(
                "--bits {other}: use 2048, 3072 or 4096"
            )))
        }
    };
    let params = certificate_params(subject, days)?;
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, key_size)
        .map_err(|e| CliError::Other(format!("generating the RSA key: {e}")))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| CliError::Other(format!("signing the certificate: {e}")))?;

    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::Other(format!("creating {}: {e}", dir.display())))?;
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    for path in [&cert_path, &key_path] {
        if path.exists() && !force {
            return Err(CliError::Usage(format!(
                "{} exists; choose another --out directory or pass --force to replace it",
                path.display()
            )));
        }
    }
    let key_pem = Zeroizing::new(key.serialize_pem());
    write_file(&key_path, key_pem.as_bytes(), 0o600)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;

    let info = CertificateInfo::from_der(cert.der()).map_err(CliError::Other)?;
    out(format_args!("certificate: {}", cert_path.display()))?;
    out(format_args!(
        "private key: {} (mode 0600; keep it on this host only)",
        key_path.display()
    ))?;
    print_info(&info)?;
    out(format_args!(
        "\nUpload {} in the Entra admin center: App registrations > your app > \
         Certificates & secrets > Certificates > Upload certificate.\n\
         The portal will show thumbprint {}.",
        cert_path.display(),
        info.thumbprint_sha1
    ))
}

/// The certificate's signer when the key is in a token: rcgen asks it for
/// the public key and to sign the certificate.
pub(super) struct TokenKey {
    key: crate::credentials::pkcs11::HsmKey,
    /// PKCS#1 RSAPublicKey DER.
    public: Vec<u8>,
}

impl rcgen::PublicKeyData for TokenKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

impl rcgen::SigningKey for TokenKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.key
            .sign(crate::config::SigningAlgorithm::RS256, msg)
            .map_err(|e| {
                tracing::error!("{e}");
                rcgen::Error::RemoteKeyError
            })
    }
}

/// `cert new` with the key made inside a PKCS#11 token.
pub(super) fn cert_new_pkcs11(
    subject: &str,
    days: u32,
    bits: u32,
    dir: &Path,
    force: bool,
    config: &crate::config::Pkcs11Config,
) -> Result<(), CliError> {
    use rsa::pkcs1::der::Encode as _;
    if !matches!(bits, 2048 | 3072 | 4096) {
        return Err(CliError::Usage(format!(
            "--bits {bits}: use 2048, 3072 or 4096"
        )));
    }
    let params = certificate_params(subject, days)?;
    let cert_path = dir.join("cert.pem");
    if cert_path.exists() && !force {
        return Err(CliError::Usage(format!(
            "{} exists; choose another --out directory or pass --force to replace it",
            cert_path.display()
        )));
    }
    let (modulus, exponent) = crate::credentials::pkcs11::generate(config, bits)
        .map_err(|e| CliError::Other(e.to_string()))?;
    let public = rsa::pkcs1::RsaPublicKeyRef {
        modulus: rsa::pkcs1::UintRef::new(&modulus)
            .map_err(|e| CliError::Other(format!("the token's modulus: {e}")))?,
        public_exponent: rsa::pkcs1::UintRef::new(&exponent)
            .map_err(|e| CliError::Other(format!("the token's exponent: {e}")))?,
    }
    .to_der()
    .map_err(|e| CliError::Other(format!("encoding the token's public key: {e}")))?;
    let key = crate::credentials::pkcs11::HsmKey::open(config)
        .map_err(|e| CliError::Other(e.to_string()))?;
    let signer = TokenKey { key, public };
    let cert = params
        .self_signed(&signer)
        .map_err(|e| CliError::Other(format!("signing the certificate in the token: {e}")))?;
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::Other(format!("creating {}: {e}", dir.display())))?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    let info = CertificateInfo::from_der(cert.der()).map_err(CliError::Other)?;
    out(format_args!("certificate: {}", cert_path.display()))?;
    out(format_args!(
        "private key: in token \"{}\" as \"{}\" (sensitive, never extractable; no key file written)",
        config.token, config.key_label
    ))?;
    print_info(&info)?;
    out(format_args!(
        "\nConfigure it as\n  [[app.credentials]]\n  certificate = \"{}\"\n  pkcs11 = {{ module = \"{}\", token = \"{}\", key_label = \"{}\", pin_env = \"{}\" }}\n\
         and upload {} to the app registration (thumbprint {}).",
        cert_path.display(),
        config.module.display(),
        config.token,
        config.key_label,
        config.pin_env.as_str(),
        cert_path.display(),
        info.thumbprint_sha1
    ))
}

pub(super) fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CliError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    options
        .open(path)
        .and_then(|mut f| {
            // `mode` applies only when the file is created; an existing file
            // (--force) keeps its old mode unless it is set explicitly.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                f.set_permissions(std::fs::Permissions::from_mode(mode))?;
            }
            f.write_all(contents)
        })
        .map_err(|e| CliError::Other(format!("writing {}: {e}", path.display())))
}

/// What `cert new` certifies: the subject, `days` of validity (backdated 5
/// minutes, so a host with a slow clock does not see "not yet valid"), a
/// client-authentication key usage and a random positive serial.
pub(super) fn certificate_params(
    subject: &str,
    days: u32,
) -> Result<rcgen::CertificateParams, CliError> {
    if days == 0 || days > 3650 {
        return Err(CliError::Usage(format!("--days {days}: use 1 to 3650")));
    }
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = parse_subject(subject)?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(i64::from(days));
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let mut serial = [0u8; 16];
    aws_lc_rs::rand::fill(&mut serial)
        .map_err(|_| CliError::Other("the system random generator failed".into()))?;
    serial[0] &= 0x7f; // positive
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    Ok(params)
}

/// Parses `CN=name,O=org,…` into a distinguished name.
pub(super) fn parse_subject(subject: &str) -> Result<rcgen::DistinguishedName, CliError> {
    let mut dn = rcgen::DistinguishedName::new();
    for part in subject.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((attr, value)) = part.split_once('=') else {
            return Err(CliError::Usage(format!(
                "--subject: \"{part}\" is not ATTR=value; write e.g. CN=tokenbroker,O=Contoso"
            )));
        };
        let kind = match attr.trim().to_ascii_uppercase().as_str() {
            "CN" => rcgen::DnType::CommonName,
            "O" => rcgen::DnType::OrganizationName,
            "OU" => rcgen::DnType::OrganizationalUnitName,
            "L" => rcgen::DnType::LocalityName,
            "ST" => rcgen::DnType::StateOrProvinceName,
            "C" => rcgen::DnType::CountryName,
            other => {
                return Err(CliError::Usage(format!(
                    "--subject: attribute \"{other}\" is not supported; use CN, O, OU, L, ST or C"
                )))
            }
        };
        dn.push(kind, value.trim());
    }
    if dn.get(&rcgen::DnType::CommonName).is_none() {
        return Err(CliError::Usage(
            "--subject must contain CN=…, e.g. CN=tokenbroker".into(),
        ));
    }
    Ok(dn)
}

pub(super) fn print_info(info: &CertificateInfo) -> Result<(), CliError> {
    out(format_args!("subject:        {}", info.subject))?;
    out(format_args!("issuer:         {}", info.issuer))?;
    out(format_args!("not before:     {}", rfc3339(info.not_before)))?;
    out(format_args!("not after:      {}", rfc3339(info.not_after)))?;
    out(format_args!(
        "thumbprint:     {}  (SHA-1, as the Azure portal shows it)",
        info.thumbprint_sha1
    ))?;
    out(format_args!("x5t:            {}", info.x5t))?;
    out(format_args!("x5t#S256:       {}", info.x5t_s256))?;
    if info.key_algorithm == "RSA" {
        out(format_args!("key:            RSA {} bits", info.key_bits))
    } else {
        out(format_args!(
            "key:            {} (Entra accepts RSA only)",
            info.key_algorithm
        ))
    }
}

/// What `cert inspect` found, for scripts (`--json`).
#[derive(Debug, serde::Serialize)]
struct Inspection<'a> {
    file: String,
    subject: &'a str,
    issuer: &'a str,
    not_before: String,
    not_after: String,
    /// SHA-1, upper-case hex, as the Azure portal shows it.
    thumbprint_sha1: &'a str,
    x5t: &'a str,
    #[serde(rename = "x5t#S256")]
    x5t_s256: &'a str,
    key_algorithm: &'a str,
    key_bits: usize,
    /// `valid`, `expires_soon`, `expired` or `not_yet_valid`.
    status: &'static str,
    /// Whole days left (0 once expired).
    days_left: u64,
    /// Certificates after the leaf in the file.
    chain: usize,
    /// Whether the key (file, PKCS#11 token or PFX) matches; null when none was checked.
    key_matches: Option<bool>,
}

/// `cert inspect`. With `--json`, one document on stdout whatever happens:
/// the inspection (also when the key does not match), or the error.
pub(super) fn cert_inspect(
    path: &Path,
    key: Option<&Path>,
    password_env: Option<&str>,
    token: Option<crate::config::Pkcs11Config>,
    json: bool,
) -> Result<(), CliError> {
    let mut printed = false;
    let result = inspect(path, key, password_env, token, json, &mut printed);
    if printed {
        result
    } else {
        super::or_json_error(json, result)
    }
}

fn inspect(
    path: &Path,
    key: Option<&Path>,
    password_env: Option<&str>,
    token: Option<crate::config::Pkcs11Config>,
    json: bool,
    printed: &mut bool,
) -> Result<(), CliError> {
    let password = password_env.map(|name| PasswordSource::from_env(name, "--password-env"));
    let (infos, embedded_match) = credentials::inspect_file(path, password.as_ref())?;
    let Some(leaf) = infos.first() else {
        return Err(CliError::Other(format!(
            "{} holds no certificate",
            path.display()
        )));
    };
    let now = SystemTime::now();
    let days_left = leaf
        .not_after
        .duration_since(now)
        .map_or(0, |left| left.as_secs() / 86_400);
    let (status, status_text) = match leaf.validity_at(now) {
        Validity::Valid => ("valid", "valid".to_owned()),
        Validity::ExpiresSoon(left) => (
            "expires_soon",
            format!(
                "valid, expires in {} days: rotate soon",
                left.as_secs() / 86_400
            ),
        ),
        Validity::Expired => ("expired", "EXPIRED".to_owned()),
        Validity::NotYetValid => ("not_yet_valid", "NOT YET VALID".to_owned()),
    };
    let matches = match (key, &token) {
        (Some(key_path), _) => Some(credentials::key_matches(leaf, key_path, password.as_ref())?),
        (None, Some(config)) => {
            let key = credentials::pkcs11::HsmKey::open(config)
                .map_err(|e| CliError::Other(e.to_string()))?;
            Some(credentials::same_rsa_key(leaf, key.public()))
        }
        (None, None) => embedded_match,
    };
    if json {
        let inspection = Inspection {
            file: path.display().to_string(),
            subject: &leaf.subject,
            issuer: &leaf.issuer,
            not_before: rfc3339(leaf.not_before),
            not_after: rfc3339(leaf.not_after),
            thumbprint_sha1: &leaf.thumbprint_sha1,
            x5t: &leaf.x5t,
            x5t_s256: &leaf.x5t_s256,
            key_algorithm: &leaf.key_algorithm,
            key_bits: leaf.key_bits,
            status,
            days_left,
            chain: infos.len() - 1,
            key_matches: matches,
        };
        let text = serde_json::to_string_pretty(&inspection)
            .map_err(|e| CliError::Other(format!("encoding the inspection: {e}")))?;
        *printed = true;
        out(format_args!("{text}"))?;
    } else {
        print_info(leaf)?;
        out(format_args!("status:         {status_text}"))?;
        if infos.len() > 1 {
            out(format_args!(
                "chain:          {} more certificate(s)",
                infos.len() - 1
            ))?;
        }
        match matches {
            Some(true) => out(format_args!("key matches:    yes"))?,
            Some(false) => out(format_args!("key matches:    NO"))?,
            None => {}
        }
    }
    if matches == Some(false) {
        return Err(CliError::Credential(CredentialError::KeyMismatch {
            certificate: path.to_owned(),
            key: match (key, &token) {
                (Some(key), _) => key.to_owned(),
                (None, Some(t)) => PathBuf::from(format!("pkcs11:{}/{}", t.token, t.key_label)),
                (None, None) => path.to_owned(),
            },
            thumbprint: leaf.thumbprint_sha1.clone(),
        }));
    }
    Ok(())
}
