//! Access tokens as values: opaque, redacted in `Debug`, wiped on drop.

use std::fmt;
use std::sync::Arc;
use zeroize::Zeroizing;

/// An access token. Microsoft says to treat it as opaque; we only pass it on.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(Arc<Zeroizing<String>>);

impl AccessToken {
    /// Wraps a token string.
    pub fn new(token: String) -> AccessToken {
        AccessToken(Arc::new(Zeroizing::new(token)))
    }

    /// The token text, for the response body that hands it to a caller.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    /// Size in bytes (for cache weighing).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the token is empty (never, for a parsed response).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccessToken([redacted], {} bytes)", self.0.len())
    }
}
