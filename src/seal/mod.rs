//! Tokens kept outside this process (the fleet's shared cache, the state
//! file) are sealed: AES-256-GCM (aws-lc-rs) under a
//! key from `shared_cache.key_file` (or `cache.state_key_file`), with the app's client ID, the tenant,
//! the resource and the kind of record bound in as associated data. A value
//! cannot be read without the key, altered without detection, or moved to
//! another tenant's place.
//!
//! Layout: `TB1` | key id (8 bytes) | nonce (12) | ciphertext and tag. The
//! key id (the first 8 bytes of SHA-256 over a label and the key) lets a
//! host holding the new key and the old ones (`old_key_files`) open values
//! sealed under any of them during a rotation; it always seals with the new.

pub mod record;

pub use record::TokenRecord;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use std::fmt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

const MAGIC: &[u8; 3] = b"TB1";
const KEY_ID_LEN: usize = 8;
const HEADER_LEN: usize = MAGIC.len() + KEY_ID_LEN + NONCE_LEN;
/// Bytes of an AES-256 key.
pub const KEY_LEN: usize = 32;

/// One key and its id.
struct SealingKey {
    id: [u8; KEY_ID_LEN],
    key: LessSafeKey,
}

impl SealingKey {
    fn new(bytes: &[u8; KEY_LEN]) -> Result<SealingKey, KeyError> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| KeyError::NotAes256)?;
        let mut labelled = Zeroizing::new(b"tokenbroker shared cache key id\0".to_vec());
        labelled.extend_from_slice(bytes);
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &labelled);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest.as_ref()[..KEY_ID_LEN]);
        Ok(SealingKey {
            id,
            key: LessSafeKey::new(unbound),
        })
    }
}

/// The key that seals, and the keys that may still open.
pub struct Keys {
    current: SealingKey,
    old: Vec<SealingKey>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Ids only: never key material.
        f.debug_struct("Keys")
            .field("current", &hex::encode(self.current.id))
            .field(
                "old",
                &self
                    .old
                    .iter()
                    .map(|k| hex::encode(k.id))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Why a value was not opened. Such a value is never served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("not a tokenbroker value (bad header)")]
    Malformed,
    #[error(
        "sealed under key {0}, which is neither shared_cache.key_file nor one of old_key_files"
    )]
    UnknownKey(String),
    #[error("failed authentication: altered, or sealed for another app, tenant or resource")]
    Forged,
}

/// Why key material is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("is not an AES-256 key")]
    NotAes256,
    #[error("the system random generator failed")]
    Random,
}

/// Why a key file is unusable.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct KeyFileError {
    pub path: PathBuf,
    pub message: String,
}

impl Keys {
    /// Keys from their raw bytes (tests, and [`Keys::load`]).
    pub fn from_bytes(current: &[u8; KEY_LEN], old: &[[u8; KEY_LEN]]) -> Result<Keys, KeyError> {
        Ok(Keys {
            current: SealingKey::new(current)?,
            old: old.iter().map(SealingKey::new).collect::<Result<_, _>>()?,
        })
    }

    /// Reads `key_file` and `old_key_files`.
    pub fn load(key_file: &Path, old_key_files: &[PathBuf]) -> Result<Keys, KeyFileError> {
        let current = read_key_file(key_file)?;
        let old = old_key_files
            .iter()
            .map(|p| read_key_file(p))
            .collect::<Result<Vec<_>, _>>()?;
        let old: Vec<[u8; KEY_LEN]> = old.iter().map(|k| **k).collect();
        Keys::from_bytes(&current, &old).map_err(|e| KeyFileError {
            path: key_file.to_owned(),
            message: e.to_string(),
        })
    }

    /// The id of the sealing key, hex (for status and logs).
    pub fn current_id(&self) -> String {
        hex::encode(self.current.id)
    }

    /// Seals `plaintext` bound to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, Rejected> {
        let mut nonce = [0u8; NONCE_LEN];
        // A failed random source must not seal with a repeated nonce.
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| Rejected::Malformed)?;
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + 16);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.current.id);
        out.extend_from_slice(&nonce);
        let mut body = Zeroizing::new(plaintext.to_vec());
        self.current
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut *body,
            )
            .map_err(|_| Rejected::Malformed)?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens a value sealed by [`seal`](Self::seal) with the same `aad`.
    pub fn open(&self, aad: &[u8], value: &[u8]) -> Result<Zeroizing<Vec<u8>>, Rejected> {
        if value.len() < HEADER_LEN + 16 || &value[..MAGIC.len()] != MAGIC {
            return Err(Rejected::Malformed);
        }
        let id = &value[MAGIC.len()..MAGIC.len() + KEY_ID_LEN];
        let key = std::iter::once(&self.current)
            .chain(&self.old)
            .find(|k| k.id == id)
            .ok_or_else(|| Rejected::UnknownKey(hex::encode(id)))?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&value[MAGIC.len() + KEY_ID_LEN..HEADER_LEN]);
        let mut body = Zeroizing::new(value[HEADER_LEN..].to_vec());
        let plain_len = key
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| Rejected::Forged)?
            .len();
        body.truncate(plain_len);
        Ok(body)
    }
}

/// Reads a key file: 32 bytes, base64 (as `tokenbroker cache-key new` writes).
fn read_key_file(path: &Path) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyFileError> {
    use base64::Engine;
    let error = |message: String| KeyFileError {
        path: path.to_owned(),
        message,
    };
    let bytes =
        crate::sys::read_bounded(path).map_err(|e| error(format!("cannot read it: {e}")))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        error("is not text; make one with `tokenbroker cache-key new --out FILE`".into())
    })?;
    let decoded = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| {
                error("is not base64; make one with `tokenbroker cache-key new --out FILE`".into())
            })?,
    );
    let key: [u8; KEY_LEN] = decoded.as_slice().try_into().map_err(|_| {
        error(format!(
            "holds {} bytes, not {KEY_LEN}; make one with `tokenbroker cache-key new --out FILE`",
            decoded.len()
        ))
    })?;
    Ok(Zeroizing::new(key))
}

/// A fresh key, base64 with a newline: the content of a key file.
pub fn new_key_file_text() -> Result<Zeroizing<String>, KeyError> {
    use base64::Engine;
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    aws_lc_rs::rand::fill(&mut *key).map_err(|_| KeyError::Random)?;
    let mut text = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(*key));
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 32] = [7; 32];
    const B: [u8; 32] = [9; 32];

    #[test]
    fn a_sealed_value_opens_with_the_same_binding_only() {
        let keys = Keys::from_bytes(&A, &[]).unwrap();
        let value = keys.seal(b"app|contoso|graph", b"secret token").unwrap();
        assert!(!value.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            &*keys.open(b"app|contoso|graph", &value).unwrap(),
            b"secret token"
        );
        assert_eq!(
            keys.open(b"app|fabrikam|graph", &value),
            Err(Rejected::Forged)
        );
        // Every flipped byte is caught.
        for i in 0..value.len() {
            let mut altered = value.clone();
            altered[i] ^= 0x01;
            assert!(
                keys.open(b"app|contoso|graph", &altered).is_err(),
                "byte {i}"
            );
        }
        assert_eq!(keys.open(b"x", b"short"), Err(Rejected::Malformed));
    }

    #[test]
    fn rotation_opens_old_values_and_seals_with_the_new_key() {
        let old = Keys::from_bytes(&A, &[]).unwrap();
        let sealed_before = old.seal(b"aad", b"v1").unwrap();
        let rotated = Keys::from_bytes(&B, &[A]).unwrap();
        assert_eq!(&*rotated.open(b"aad", &sealed_before).unwrap(), b"v1");
        let sealed_after = rotated.seal(b"aad", b"v2").unwrap();
        assert_eq!(
            &sealed_after[3..11],
            &Keys::from_bytes(&B, &[]).unwrap().current.id
        );
        // A host without the new key cannot read it, and says which key it lacks.
        assert!(matches!(
            old.open(b"aad", &sealed_after),
            Err(Rejected::UnknownKey(_))
        ));
        // Two seals of one value differ (random nonces).
        assert_ne!(rotated.seal(b"aad", b"v2").unwrap(), sealed_after);
    }

    #[test]
    fn key_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.key");
        std::fs::write(&good, &*new_key_file_text().unwrap()).unwrap();
        Keys::load(&good, &[]).unwrap();
        let short = dir.path().join("short.key");
        std::fs::write(&short, "c2hvcnQ=\n").unwrap();
        let e = Keys::load(&short, &[]).unwrap_err().to_string();
        assert!(e.contains("short.key") && e.contains("not 32"), "{e}");
        let e = Keys::load(&good, &[dir.path().join("missing.key")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("missing.key") && e.contains("cannot read"),
            "{e}"
        );
        assert!(!format!("{:?}", Keys::from_bytes(&A, &[B]).unwrap()).contains("07070707"));
    }
}
