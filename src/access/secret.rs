//! Account secrets: made from the system RNG, stored only as SHA-256.

use base64::Engine;
use zeroize::Zeroizing;

/// A fresh account secret: `tb_` and 32 random bytes in base64url. The
/// prefix lets secret scanners recognise a leaked one.
pub fn generate() -> Result<Zeroizing<String>, aws_lc_rs::error::Unspecified> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(bytes.as_mut())?;
    Ok(Zeroizing::new(format!(
        "tb_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_ref())
    )))
}

/// SHA-256 of a presented secret.
pub fn digest(secret: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes()).as_ref(),
    );
    out
}

/// The `secret_sha256` value for `secret`: its SHA-256 in lower-case hex.
pub fn sha256_hex(secret: &str) -> String {
    hex::encode(digest(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_and_hash_to_64_hex() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert!(a.starts_with("tb_") && a.len() == 3 + 43, "{}", a.as_str());
        assert_ne!(a.as_str(), b.as_str());
        let hex = sha256_hex(&a);
        assert_eq!(hex.len(), 64);
        assert!(hex
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        // The well-known digest of "abc".
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
