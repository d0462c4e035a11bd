//! What a request presents: the secret in its `Authorization` or
//! `X-IDENTITY-HEADER`, and its Host header against the allow-list. Pure
//! functions over header values; who the secret belongs to is the access
//! policy's business.

use crate::config::HostName;

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

#[cfg(test)]
mod tests {
    use super::*;

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
        let allowed = HostName::defaults();
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
}
