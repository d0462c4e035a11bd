//! Who is calling, and may they: caller secrets (hashed, compared in
//! constant time), peer uids on the Unix socket, and the Host allow-list.
//! Pure functions over headers and the configuration.

use crate::config::{AccountConfig, Config, HostName};
use base64::Engine;
use std::collections::HashMap;
use zeroize::Zeroizing;

/// The configured accounts, indexed for authentication.
#[derive(Debug)]
pub struct Accounts {
    /// SHA-256 of each account's secret, by account index.
    hashes: Vec<[u8; 32]>,
    by_uid: HashMap<u32, usize>,
}

/// Why a caller was refused before any lookup (the `reason` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credential presented.
    Missing,
    /// A secret that matches no account.
    UnknownSecret,
    /// A socket peer whose uid maps to no account (and no secret).
    UnknownUid,
}

impl AuthFailure {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::UnknownSecret => "unknown_secret",
            AuthFailure::UnknownUid => "unknown_uid",
        }
    }
}

impl Accounts {
    /// Indexes `config`'s accounts.
    pub fn new(config: &Config) -> Accounts {
        let hashes = config
            .accounts
            .iter()
            .map(|a| {
                let mut hash = [0u8; 32];
                let hex = a.secret_sha256.as_str().as_bytes();
                for (i, byte) in hash.iter_mut().enumerate() {
                    // Validated as 64 hex characters when the config was parsed.
                    *byte = (hex_value(hex[2 * i]) << 4) | hex_value(hex[2 * i + 1]);
                }
                hash
            })
            .collect();
        let by_uid = config
            .accounts
            .iter()
            .enumerate()
            .flat_map(|(i, a)| a.unix_uids.iter().map(move |uid| (*uid, i)))
            .collect();
        Accounts { hashes, by_uid }
    }

    /// The account whose secret is `secret`. Every configured hash is
    /// compared, each in constant time, so timing says nothing about which
    /// account (or how much of a hash) matched.
    pub fn by_secret(&self, secret: &str) -> Option<usize> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes());
        let mut found = None;
        for (i, hash) in self.hashes.iter().enumerate() {
            let equal =
                aws_lc_rs::constant_time::verify_slices_are_equal(digest.as_ref(), hash).is_ok();
            if equal && found.is_none() {
                found = Some(i);
            }
        }
        found
    }

    /// The account a Unix-socket peer uid maps to.
    pub fn by_uid(&self, uid: u32) -> Option<usize> {
        self.by_uid.get(&uid).copied()
    }

    /// Authenticates a caller from its presented secret and (on the Unix
    /// socket) its peer uid. A presented secret decides (a wrong one is
    /// refused, never excused by the uid); without one, a mapped uid suffices.
    pub fn authenticate(
        &self,
        secret: Option<&str>,
        peer_uid: Option<u32>,
    ) -> Result<usize, AuthFailure> {
        match secret {
            Some(secret) if !secret.is_empty() => {
                self.by_secret(secret).ok_or(AuthFailure::UnknownSecret)
            }
            _ => match peer_uid {
                Some(uid) => self.by_uid(uid).ok_or(AuthFailure::UnknownUid),
                None => Err(AuthFailure::Missing),
            },
        }
    }
}

/// A fresh account secret: `tb_` and 32 random bytes in base64url. The
/// prefix lets secret scanners recognise a leaked one.
pub fn generate_secret() -> Result<Zeroizing<String>, aws_lc_rs::error::Unspecified> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(bytes.as_mut())?;
    Ok(Zeroizing::new(format!(
        "tb_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_ref())
    )))
}

/// The `secret_sha256` value for `secret`: its SHA-256 in lower-case hex.
pub fn secret_sha256_hex(secret: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn hex_value(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

/// The secret of an `Authorization: Bearer …` header.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether the Host header names an allowed host (port ignored). A missing
/// Host is refused: browsers always send one, and so does every HTTP/1.1 client.
pub fn host_allowed(host: Option<&str>, allowed: &[HostName]) -> bool {
    let Some(host) = host else { return false };
    let name = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => &host[..=end],
            None => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    allowed
        .iter()
        .any(|a| a.as_str().eq_ignore_ascii_case(name))
}

/// Whether `account` may request `resource` (its `resources`, else the cloud's Graph).
pub fn resource_allowed(config: &Config, account: &AccountConfig, resource: &str) -> bool {
    match &account.resources {
        Some(list) => list
            .iter()
            .any(|r| r.as_str().trim_end_matches('/') == resource),
        None => resource == config.app.cloud.graph_resource(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use super::secret_sha256_hex as sha256_hex;

    fn config() -> Config {
        let text = format!(
            "[app]\nclient_id = \"11111111-2222-3333-4444-555555555555\"\ncertificate = \"c.pem\"\n\
             [[accounts]]\nname = \"a\"\nsecret_sha256 = \"{}\"\ntenants = [\"*\"]\nunix_uids = [1001]\n\
             [[accounts]]\nname = \"b\"\nsecret_sha256 = \"{}\"\ntenants = [\"*\"]\nresources = [\"https://graph.microsoft.com\", \"https://outlook.office365.com/\"]\n",
            sha256_hex("secret-a"),
            sha256_hex("secret-b").to_uppercase()
        );
        Config::parse(&text, Path::new("t.toml")).unwrap()
    }

    #[test]
    fn secrets_map_to_their_accounts() {
        let accounts = Accounts::new(&config());
        assert_eq!(accounts.by_secret("secret-a"), Some(0));
        assert_eq!(
            accounts.by_secret("secret-b"),
            Some(1),
            "upper-case hex in the config works"
        );
        assert_eq!(accounts.by_secret("secret-c"), None);
        assert_eq!(accounts.by_secret(""), None);
    }

    #[test]
    fn authentication_by_secret_else_by_peer_uid() {
        let accounts = Accounts::new(&config());
        assert_eq!(accounts.authenticate(None, Some(1001)), Ok(0));
        assert_eq!(accounts.authenticate(Some(""), Some(1001)), Ok(0));
        assert_eq!(accounts.authenticate(Some("secret-b"), Some(1001)), Ok(1));
        assert_eq!(
            accounts.authenticate(Some("wrong"), Some(1001)),
            Err(AuthFailure::UnknownSecret)
        );
        assert_eq!(accounts.authenticate(Some("secret-b"), Some(5)), Ok(1));
        assert_eq!(
            accounts.authenticate(None, Some(5)),
            Err(AuthFailure::UnknownUid)
        );
        assert_eq!(accounts.authenticate(None, None), Err(AuthFailure::Missing));
        assert_eq!(
            accounts.authenticate(Some(""), None),
            Err(AuthFailure::Missing)
        );
        assert_eq!(
            accounts.authenticate(Some("nope"), None),
            Err(AuthFailure::UnknownSecret)
        );
    }

    #[test]
    fn bearer_headers() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer")), None);
        assert_eq!(bearer(None), None);
    }

    #[test]
    fn host_allow_list_ignores_ports() {
        let allowed = config().server.allowed_hosts;
        for ok in [
            "localhost",
            "localhost:8765",
            "LOCALHOST",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:8765",
        ] {
            assert!(host_allowed(Some(ok), &allowed), "{ok}");
        }
        for bad in [
            "evil.com",
            "evil.com:8765",
            "localhost.evil.com",
            "127.0.0.2",
            "[::2]:1",
            "[::1",
            "",
            "localhost:80:80",
        ] {
            assert!(!host_allowed(Some(bad), &allowed), "{bad}");
        }
        assert!(!host_allowed(None, &allowed));
    }

    #[test]
    fn resources_per_account() {
        let c = config();
        assert!(resource_allowed(
            &c,
            &c.accounts[0],
            "https://graph.microsoft.com"
        ));
        assert!(!resource_allowed(
            &c,
            &c.accounts[0],
            "https://outlook.office365.com"
        ));
        assert!(resource_allowed(
            &c,
            &c.accounts[1],
            "https://outlook.office365.com"
        ));
        assert!(!resource_allowed(
            &c,
            &c.accounts[1],
            "https://management.azure.com"
        ));
    }
}
