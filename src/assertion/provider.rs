//! jsonwebtoken's crypto provider for this process: aws-lc-rs, as the
//! crate's own `aws_lc_rs` provider, except that RSA signing keys are parsed
//! once and reused.
//!
//! jsonwebtoken hands its signer the key as DER bytes and the stock provider
//! re-parses them — and re-runs aws-lc's `RSA_check_key` — on every
//! signature, which made a PS256 assertion cost about two RSA signatures.
//! Here a credential parses its key once ([`prepare`]) and keeps it; the
//! signer finds it by the SHA-256 of the DER. The table holds weak
//! references, so a key is freed (and wiped by aws-lc) when its credential
//! is dropped after a rotation.

use aws_lc_rs::signature::{RsaEncoding, RsaKeyPair, RSA_PKCS1_SHA256, RSA_PSS_SHA256};
use jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER as AWS_LC;
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind, Result};
use jsonwebtoken::jwk::EllipticCurve;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use std::sync::{Arc, Mutex, Once, Weak};

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: |der| {
            (AWS_LC.key_utils.rsa_pub_components_from_private_key)(der)
        },
        rsa_pub_components_from_public_key: |der| {
            (AWS_LC.key_utils.rsa_pub_components_from_public_key)(der)
        },
        ec_pub_components_from_private_key: |der, alg| {
            (AWS_LC.key_utils.ec_pub_components_from_private_key)(der, alg)
        },
        ed_pub_components_from_private_key: ed_components,
        compute_digest: |data, hash| (AWS_LC.key_utils.compute_digest)(data, hash),
    },
};

fn ed_components(der: &[u8], curve: &EllipticCurve) -> Result<Vec<u8>> {
    (AWS_LC.key_utils.ed_pub_components_from_private_key)(der, curve)
}

/// Parsed signing keys, by SHA-256 of their DER.
static KEYS: Mutex<Vec<([u8; 32], Weak<RsaKeyPair>)>> = Mutex::new(Vec::new());

/// Makes this provider jsonwebtoken's default (once per process).
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means a provider was installed already (by an embedding
        // program); signing still works through it, only slower.
        let _ = PROVIDER.install_default();
    });
}

fn fingerprint(der: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref());
    out
}

/// Parses an RSA key (PKCS#1 DER) once and registers it for signing. The
/// caller keeps the returned handle for as long as the key is in use.
pub(crate) fn prepare(key: &EncodingKey) -> Result<Arc<RsaKeyPair>> {
    install();
    let parsed = Arc::new(
        RsaKeyPair::from_der(key.as_bytes())
            .map_err(|e| Error::from(ErrorKind::InvalidRsaKey(e.to_string())))?,
    );
    let mut keys = KEYS.lock().unwrap_or_else(|p| p.into_inner());
    keys.retain(|(_, weak)| weak.strong_count() > 0);
    keys.push((fingerprint(key.as_bytes()), Arc::downgrade(&parsed)));
    Ok(parsed)
}

fn lookup(key: &EncodingKey) -> Result<Arc<RsaKeyPair>> {
    let id = fingerprint(key.as_bytes());
    let found = KEYS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(k, _)| *k == id)
        .and_then(|(_, weak)| weak.upgrade());
    match found {
        Some(parsed) => Ok(parsed),
        // A key nobody prepared: parse it for this signature only.
        None => RsaKeyPair::from_der(key.as_bytes())
            .map(Arc::new)
            .map_err(|e| Error::from(ErrorKind::InvalidRsaKey(e.to_string()))),
    }
}

struct RsaSigner {
    key: Arc<RsaKeyPair>,
    algorithm: Algorithm,
    encoding: &'static dyn RsaEncoding,
}

impl jsonwebtoken::signature::Signer<Vec<u8>> for RsaSigner {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, jsonwebtoken::signature::Error> {
        let mut signature = vec![0; self.key.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.key
            .sign(self.encoding, &rng, msg, &mut signature)
            .map_err(jsonwebtoken::signature::Error::from_source)?;
        Ok(signature)
    }
}

impl JwtSigner for RsaSigner {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn new_signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    let encoding: &'static dyn RsaEncoding = match algorithm {
        Algorithm::PS256 => &RSA_PSS_SHA256,
        Algorithm::RS256 => &RSA_PKCS1_SHA256,
        _ => return (AWS_LC.signer_factory)(algorithm, key),
    };
    Ok(Box::new(RsaSigner {
        key: lookup(key)?,
        algorithm: *algorithm,
        encoding,
    }))
}

fn new_verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    (AWS_LC.verifier_factory)(algorithm, key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use pkcs8::der::Decode;

    fn encoding_key() -> EncodingKey {
        let pair = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 = pair.as_der().unwrap();
        let info = pkcs8::PrivateKeyInfoRef::from_der(pkcs8.as_ref()).unwrap();
        EncodingKey::from_rsa_der(info.private_key.as_bytes())
    }

    #[test]
    fn a_prepared_key_is_reused_until_its_holder_drops_it() {
        let key = encoding_key();
        let held = prepare(&key).unwrap();
        let found = lookup(&key).unwrap();
        assert!(
            Arc::ptr_eq(&held, &found),
            "the signer reuses the parsed key"
        );
        drop((held, found));
        // Freed with its credential; a later lookup parses afresh.
        let again = lookup(&key).unwrap();
        assert_eq!(Arc::strong_count(&again), 1);
        let registered = KEYS
            .lock()
            .unwrap()
            .iter()
            .any(|(id, w)| *id == fingerprint(key.as_bytes()) && w.strong_count() > 0);
        assert!(!registered);
    }

    #[test]
    fn signatures_made_through_jsonwebtoken_verify_with_the_public_key() {
        use aws_lc_rs::signature::{
            KeyPair, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256,
        };
        use base64::Engine;
        let pair = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 = pair.as_der().unwrap();
        let info = pkcs8::PrivateKeyInfoRef::from_der(pkcs8.as_ref()).unwrap();
        let key = EncodingKey::from_rsa_der(info.private_key.as_bytes());
        let _held = prepare(&key).unwrap();
        for (alg, params) in [
            (Algorithm::PS256, &RSA_PSS_2048_8192_SHA256),
            (Algorithm::RS256, &RSA_PKCS1_2048_8192_SHA256),
        ] {
            let sig = jsonwebtoken::crypto::sign(b"message", &key, alg).unwrap();
            let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(sig)
                .unwrap();
            UnparsedPublicKey::new(params, pair.public_key().as_ref())
                .verify(b"message", &sig)
                .unwrap();
        }
    }
}
