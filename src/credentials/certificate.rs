//! What a certificate says about itself, as the Azure portal shows it
//! (thumbprints, names, validity, key), and whether a key is its own.

use super::EXPIRY_WARNING;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use pkcs8::der::Decode;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::traits::PublicKeyParts;
use std::time::{Duration, SystemTime};

pub(super) const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
pub(super) const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
pub(super) const OID_ED25519: &str = "1.3.101.112";
pub(super) const OID_RSASSA_PSS: &str = "1.2.840.113549.1.1.10";

/// What a certificate says about itself, as the Azure portal shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Subject distinguished name.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// SHA-1 of the DER, upper-case hex: the "Thumbprint" column of the portal.
    pub thumbprint_sha1: String,
    /// base64url(SHA-1 of the DER): the `x5t` JWT header (RS256 form).
    pub x5t: String,
    /// base64url(SHA-256 of the DER): the `x5t#S256` JWT header (PS256 form).
    pub x5t_s256: String,
    /// Public key algorithm name (`RSA`, `EC`, …).
    pub key_algorithm: String,
    /// RSA modulus size in bits (0 for other algorithms).
    pub key_bits: usize,
    /// The DER of the certificate.
    pub der: Vec<u8>,
}

/// A distinguished name in the order it is encoded, which is the order the
/// user wrote it in `cert new --subject` and the order openssl prints
/// (x509-cert's `Display` follows RFC 4514, which reverses it).
fn name_in_order(name: &x509_cert::name::Name) -> String {
    let parts: Vec<String> = name.as_ref().iter().map(ToString::to_string).collect();
    parts.join(", ")
}

impl CertificateInfo {
    /// Parses a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<CertificateInfo, String> {
        let cert = x509_cert::Certificate::from_der(der)
            .map_err(|e| format!("is not a valid X.509 certificate ({e})"))?;
        let tbs = cert.tbs_certificate();
        let spki = tbs.subject_public_key_info();
        let oid = spki.algorithm.oid.to_string();
        let (key_algorithm, key_bits) = match oid.as_str() {
            OID_RSA_ENCRYPTION => {
                let bits = rsa::PublicKey::from_pkcs1_der(spki.subject_public_key.raw_bytes())
                    .map(|k| modulus_bits(&k))
                    .map_err(|e| format!("has a malformed RSA public key ({e})"))?;
                ("RSA".to_owned(), bits)
            }
            other => (algorithm_name(other), 0),
        };
        let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
        let sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
        Ok(CertificateInfo {
            subject: name_in_order(tbs.subject()),
            issuer: name_in_order(tbs.issuer()),
            not_before: tbs.validity().not_before.to_system_time(),
            not_after: tbs.validity().not_after.to_system_time(),
            thumbprint_sha1: hex::encode_upper(sha1.as_ref()),
            x5t: URL_SAFE_NO_PAD.encode(sha1.as_ref()),
            x5t_s256: URL_SAFE_NO_PAD.encode(sha256.as_ref()),
            key_algorithm,
            key_bits,
            der: der.to_vec(),
        })
    }

    /// The certificate's RSA public key, if it has one.
    pub(super) fn rsa_public_key(&self) -> Option<rsa::PublicKey> {
        let cert = x509_cert::Certificate::from_der(&self.der).ok()?;
        let spki = cert.tbs_certificate().subject_public_key_info();
        if spki.algorithm.oid.to_string() != OID_RSA_ENCRYPTION {
            return None;
        }
        rsa::PublicKey::from_pkcs1_der(spki.subject_public_key.raw_bytes()).ok()
    }

    /// Where `now` stands against the validity period.
    pub fn validity_at(&self, now: SystemTime) -> Validity {
        if now < self.not_before {
            Validity::NotYetValid
        } else if now >= self.not_after {
            Validity::Expired
        } else {
            let left = self.not_after.duration_since(now).unwrap_or_default();
            if left <= EXPIRY_WARNING {
                Validity::ExpiresSoon(left)
            } else {
                Validity::Valid
            }
        }
    }
}

/// A certificate's validity at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// Valid for more than [`EXPIRY_WARNING`].
    Valid,
    /// Valid, but expires within [`EXPIRY_WARNING`]; the time left.
    ExpiresSoon(Duration),
    /// notAfter has passed.
    Expired,
    /// notBefore is in the future.
    NotYetValid,
}

pub(super) fn modulus_bits(key: &impl PublicKeyParts) -> usize {
    let n = key.n_bytes();
    match n.iter().position(|b| *b != 0) {
        Some(first) => (n.len() - first) * 8 - n[first].leading_zeros() as usize,
        None => 0,
    }
}

pub(super) fn algorithm_name(oid: &str) -> String {
    match oid {
        OID_EC_PUBLIC_KEY => "EC".into(),
        OID_ED25519 => "Ed25519".into(),
        OID_RSASSA_PSS => "RSASSA-PSS-restricted RSA".into(),
        other => format!("unsupported (OID {other})"),
    }
}

/// Whether the certificate's RSA key is the one with `(modulus, exponent)`
/// (big-endian; leading zeros do not count).
pub fn same_rsa_key(leaf: &CertificateInfo, (modulus, exponent): (&[u8], &[u8])) -> bool {
    use rsa::pkcs1::der::Decode as _;
    let Ok(cert) = x509_cert::Certificate::from_der(&leaf.der) else {
        return false;
    };
    let spki = cert.tbs_certificate().subject_public_key_info();
    let Ok(public) = rsa::pkcs1::RsaPublicKeyRef::from_der(spki.subject_public_key.raw_bytes())
    else {
        return false;
    };
    let trim = |b: &[u8]| -> Vec<u8> { b.iter().copied().skip_while(|&x| x == 0).collect() };
    trim(public.modulus.as_bytes()) == trim(modulus)
        && trim(public.public_exponent.as_bytes()) == trim(exponent)
}
