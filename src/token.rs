//! Access tokens as values: opaque, redacted in `Debug`, wiped on drop.

use bytes::Bytes;
use hyper::header::HeaderValue;
use std::fmt;
use std::sync::Arc;
use zeroize::Zeroizing;

/// An access token. Microsoft says to treat it as opaque; we only pass it on.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(Arc<Inner>);

#[derive(PartialEq, Eq)]
struct Inner {
    token: Zeroizing<String>,
    /// Whether the token can go into a JSON string as it is (no quote,
    /// backslash or control character): true for every JWT. Checked once
    /// here, so answering a caller does not re-scan it for escapes.
    json_safe: bool,
    /// `Bearer {token}`, the header the gateway sends Graph with every
    /// request, made once (it was a copy and a byte-by-byte check of the
    /// token per request), wiped on drop like the token; `None` when the
    /// token cannot be a header value.
    bearer: Option<HeaderValue>,
}

/// `Bearer {token}` as a sensitive header value whose bytes are wiped when
/// the last copy goes.
fn bearer_header(token: &str) -> Option<HeaderValue> {
    let mut text = Zeroizing::new(Vec::with_capacity("Bearer ".len() + token.len()));
    text.extend_from_slice(b"Bearer ");
    text.extend_from_slice(token.as_bytes());
    let mut value = HeaderValue::from_maybe_shared(Bytes::from_owner(text)).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Whether `value` can go into a JSON string as it is: no quote, backslash
/// or control character.
pub(crate) fn json_safe(value: &str) -> bool {
    value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\')
}

impl AccessToken {
    /// Wraps a token string.
    pub fn new(token: String) -> AccessToken {
        let json_safe = json_safe(&token);
        let bearer = bearer_header(&token);
        AccessToken(Arc::new(Inner {
            token: Zeroizing::new(token),
            json_safe,
            bearer,
        }))
    }

    /// The token text, for the response body that hands it to a caller.
    pub fn expose(&self) -> &str {
        self.0.token.as_str()
    }

    /// Its SHA-256: what a caller that saw it rejected sends back as
    /// `token_sha256_to_refresh`.
    pub fn sha256(&self) -> [u8; 32] {
        sha256(self.expose())
    }

    /// Whether [`AccessToken::expose`] needs no JSON escaping.
    pub fn is_json_safe(&self) -> bool {
        self.0.json_safe
    }

    /// The `Authorization` header that carries it (`Bearer {token}`,
    /// marked sensitive); `None` when the token is not a valid header value.
    pub fn bearer_header(&self) -> Option<&HeaderValue> {
        self.0.bearer.as_ref()
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.0.token.len()
    }

    /// Whether the token is empty (never, for a parsed response).
    pub fn is_empty(&self) -> bool {
        self.0.token.is_empty()
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccessToken([redacted], {} bytes)", self.len())
    }
}

/// SHA-256 of a token's text.
pub fn sha256(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref(),
    );
    out
}

/// Why a token's claims could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    #[error("does not hold a JWT (three base64url parts)")]
    NotJwt,
    #[error("holds a JWT whose claims are not base64url")]
    NotBase64,
    #[error("holds a JWT whose claims are not JSON")]
    NotJson,
}

/// The claims of a JWT, unverified: for diagnostics (the roles an access
/// token carries) and for what a federated token says of itself (its
/// issuer and expiry); Entra verifies every token that matters. The one
/// place a JWT is opened.
pub fn peek_claims(token: &str) -> Result<serde_json::Value, ClaimsError> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ClaimsError::NotJwt);
    };
    let json = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| ClaimsError::NotBase64)?;
    serde_json::from_slice(&json).map_err(|_| ClaimsError::NotJson)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_header_is_made_once_and_only_from_a_header_safe_token() {
        let token = AccessToken::new("eyJ0eXAi.eyJhdWQi.c2ln-_".into());
        let header = token.bearer_header().unwrap();
        assert_eq!(header, "Bearer eyJ0eXAi.eyJhdWQi.c2ln-_");
        assert!(header.is_sensitive());
        assert!(std::ptr::eq(header, token.clone().bearer_header().unwrap()));
        assert!(!format!("{header:?}").contains("eyJ"));
        for unfit in ["a\nb", "a\rb", "a\u{7f}b"] {
            assert!(
                AccessToken::new(unfit.into()).bearer_header().is_none(),
                "{unfit:?}"
            );
        }
    }

    #[test]
    fn json_safety_is_known_up_front() {
        assert!(AccessToken::new("eyJ0eXAi.eyJhdWQi.c2ln-_".into()).is_json_safe());
        for unsafe_token in ["a\"b", "a\\b", "a\nb", "a\u{1}b"] {
            assert!(
                !AccessToken::new(unsafe_token.into()).is_json_safe(),
                "{unsafe_token:?}"
            );
        }
        let debug = format!("{:?}", AccessToken::new("secret-token".into()));
        assert!(!debug.contains("secret"), "{debug}");
    }
    #[test]
    fn claims_are_peeked_from_three_base64url_parts() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        let payload = URL_SAFE_NO_PAD.encode(br#"{"roles":["Mail.Send"],"exp":5}"#);
        let claims = peek_claims(&format!("e30.{payload}.sig")).unwrap();
        assert_eq!(claims["exp"], 5);
        assert_eq!(peek_claims("opaque"), Err(ClaimsError::NotJwt));
        assert_eq!(peek_claims("a.b.c.d"), Err(ClaimsError::NotJwt));
        assert_eq!(peek_claims("e30.!!!.sig"), Err(ClaimsError::NotBase64));
        let text = URL_SAFE_NO_PAD.encode(b"not json");
        assert_eq!(
            peek_claims(&format!("e30.{text}.sig")),
            Err(ClaimsError::NotJson)
        );
    }
}
