//! A token as it is kept outside this process (in the fleet's shared
//! cache, in the state file), before sealing: plain data with its JSON
//! form, checked on the way back in. Pure, so tested without a store.

use crate::cache::Fetched;
use crate::token::AccessToken;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use zeroize::Zeroizing;

/// The longest token lifetime taken back (Entra issues 1 to 24 hours).
const MAX_LIFETIME: u64 = 2 * 86_400;
/// No later than the year 2286.
const MAX_UNIX: u64 = 9_999_999_999;

/// Why a kept value is not a token record (it is never served).
#[derive(Debug, thiserror::Error)]
pub enum TokenRecordError {
    #[error("not a token record: {0}")]
    NotJson(serde_json::Error),
    #[error("not a token record: empty token, or times out of order or range")]
    OutOfRange,
}

/// A token as kept outside this process (times in unix seconds).
#[derive(Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    pub access_token: String,
    pub issued_on: u64,
    pub expires_on: u64,
    #[serde(default)]
    pub refresh_on: Option<u64>,
}

impl std::fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRecord")
            .field("access_token", &"<redacted>")
            .field("issued_on", &self.issued_on)
            .field("expires_on", &self.expires_on)
            .finish()
    }
}

impl Drop for TokenRecord {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.access_token.zeroize();
    }
}

impl TokenRecord {
    /// The record of a token fetched at `now`.
    pub fn of(fetched: &Fetched, now: u64) -> TokenRecord {
        let issued_on = now.saturating_sub(fetched.age.as_secs());
        TokenRecord {
            access_token: fetched.access_token.expose().to_owned(),
            issued_on,
            expires_on: now + fetched.expires_in.as_secs(),
            refresh_on: fetched.refresh_in.map(|r| issued_on + r.as_secs()),
        }
    }

    /// The token as a source hands it over, at `now` (unix seconds).
    pub fn into_fetched(mut self, now: u64) -> Fetched {
        Fetched {
            expires_in: Duration::from_secs(self.expires_on.saturating_sub(now)),
            refresh_in: self
                .refresh_on
                .map(|r| Duration::from_secs(r.saturating_sub(self.issued_on))),
            age: Duration::from_secs(now.saturating_sub(self.issued_on)),
            access_token: AccessToken::new(std::mem::take(&mut self.access_token)),
        }
    }

    /// SHA-256 of the token (what `token_sha256_to_refresh` names).
    pub fn sha256(&self) -> [u8; 32] {
        crate::token::sha256(&self.access_token)
    }

    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        // Serializing plain data into memory cannot fail.
        Zeroizing::new(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(bytes: &[u8]) -> Result<TokenRecord, TokenRecordError> {
        let record: TokenRecord =
            serde_json::from_slice(bytes).map_err(TokenRecordError::NotJson)?;
        // Only a key holder can write one, but numbers past these would
        // overflow the clocks they are added to.
        let lifetime = record.expires_on.checked_sub(record.issued_on);
        let sane = !record.access_token.is_empty()
            && lifetime.is_some_and(|l| l <= MAX_LIFETIME)
            && record.expires_on <= MAX_UNIX
            && record
                .refresh_on
                .is_none_or(|r| (record.issued_on..=record.expires_on).contains(&r));
        if !sane {
            return Err(TokenRecordError::OutOfRange);
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_records_round_trip_and_hide_the_token() {
        let fetched = Fetched {
            access_token: AccessToken::new("eyJ.secret.token".into()),
            expires_in: Duration::from_secs(3000),
            refresh_in: Some(Duration::from_secs(1800)),
            age: Duration::from_secs(600),
        };
        let record = TokenRecord::of(&fetched, 10_000);
        assert_eq!(
            (record.issued_on, record.expires_on, record.refresh_on),
            (9_400, 13_000, Some(11_200))
        );
        let back = TokenRecord::decode(&record.encode()).unwrap();
        assert_eq!(back.access_token, "eyJ.secret.token");
        assert!(!format!("{back:?}").contains("secret"));
        assert!(TokenRecord::decode(b"{}").is_err());
        assert!(
            TokenRecord::decode(br#"{"access_token":"","issued_on":1,"expires_on":2}"#).is_err()
        );
    }
}
