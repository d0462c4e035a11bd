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

/// The host of a `Host` header (or an absolute-form target's authority),
/// parsed by its grammar (RFC 3986 `host [ ":" port ]`): an IPv6 literal in
/// brackets, an IPv4 address or a DNS name; `None` for anything else, such
/// as `[::1]evil.com` or a second colon.
pub fn host_name(value: &str) -> Option<&str> {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let end = rest.find(']')?;
        let literal = &rest[..end];
        literal.parse::<std::net::Ipv6Addr>().ok()?;
        let after = &rest[end + 1..];
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (&value[..end + 2], port)
    } else {
        match value.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (value, None),
        }
    };
    if let Some(port) = port {
        let ok = port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u32>().map_or(port.is_empty(), |p| p <= 65_535);
        if !ok {
            return None;
        }
    }
    let dns = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    (host.starts_with('[') || dns).then_some(host)
}

/// Whether the Host header names an allowed host (port ignored). A missing
/// or malformed Host is refused: browsers always send one, and so does
/// every HTTP/1.1 client.
pub fn host_allowed(host: Option<&str>, allowed: &[HostName]) -> bool {
    let Some(name) = host.and_then(host_name) else {
        return false;
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
            "[::1]evil.com",
            "[::1].evil.com",
            "[::1]:80x",
            "localhost:99999",
            "localhost:8765:",
            "local host",
            "localhost/",
            "localhost@evil.com",
            "localhost.",
            "[evil.com]",
        ] {
            assert!(!host_allowed(Some(bad), &allowed), "{bad}");
        }
        assert!(!host_allowed(None, &allowed));
        // An empty port is allowed by the grammar.
        assert!(host_allowed(Some("localhost:"), &allowed));
    }

    #[test]
    fn hosts_parse_by_their_grammar() {
        assert_eq!(host_name("Example.COM:80"), Some("Example.COM"));
        assert_eq!(host_name("[::1]:1"), Some("[::1]"));
        assert_eq!(host_name("[fe80::1]"), Some("[fe80::1]"));
        assert_eq!(host_name("10.0.0.1"), Some("10.0.0.1"));
        assert_eq!(host_name("[::1]x"), None);
        assert_eq!(host_name("a..b"), None);
        assert_eq!(host_name(&"a".repeat(64)), None);
    }
}
