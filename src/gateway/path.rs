//! The Graph path a gateway request names, normalised before any rule sees
//! it. This is a security boundary: a rule allows or denies segments, so
//! every spelling of a path (percent-encoded, the OData key form
//! `users('x')`, mixed case) must come down to one list of segments, and the
//! request is forwarded with exactly that list, re-encoded canonically.
//! Anything that could mean two things to two parsers is refused (HTTP 400)
//! before any upstream request. Pure.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

/// The longest path accepted, in bytes as sent.
pub const MAX_PATH_BYTES: usize = 2048;

/// Why a path was refused (each a 400 `tokenbroker.bad_request`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path is longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
    #[error("the path must start with / and name a resource")]
    Missing,
    #[error("the path has an empty segment (//, or a trailing /)")]
    EmptySegment,
    #[error("the path has a . or .. segment")]
    DotSegment,
    #[error("the path has an encoded / or \\ (%2F, %5C) or a \\")]
    EncodedSeparator,
    #[error("the path has a % not followed by two hex digits")]
    BadEscape,
    #[error("the path is not UTF-8 once decoded")]
    NotUtf8,
    #[error("the path has a control character")]
    ControlCharacter,
    #[error("an OData key ('...') holds ( or ), which this gateway does not forward")]
    AmbiguousKey,
    #[error("/me names a signed-in user, and app-only access has none; name the mailbox: /users/{{id or user principal name}}")]
    Me,
}

/// A normalised Graph path: its decoded segments, in order, and the form
/// forwarded (made once: the rules, the access line and the URL read it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphPath {
    segments: Vec<String>,
    encoded: String,
}

/// What a segment keeps as it is when re-encoded: unreserved characters and
/// the sub-delimiters, `:` and `@` that RFC 3986 allows in a segment (`$`
/// of `$value` and `$batch`, the parentheses of function calls). Everything
/// else (space, `%`, `/`, `\`, `?`, `#`, non-ASCII, …) is percent-encoded.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

impl GraphPath {
    /// Normalises `raw`, the path after `/graph/{tenant}/{version}` as the
    /// request sent it (starting with `/`, without the query).
    pub fn parse(raw: &str) -> Result<GraphPath, PathError> {
        if raw.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong);
        }
        let rest = raw.strip_prefix('/').ok_or(PathError::Missing)?;
        if rest.is_empty() {
            return Err(PathError::Missing);
        }
        let mut segments = Vec::new();
        for encoded in rest.split('/') {
            let (segment, key) = split_key(decode(encoded)?)?;
            for segment in std::iter::once(segment).chain(key) {
                check(&segment)?;
                segments.push(segment);
            }
        }
        if segments
            .first()
            .is_some_and(|s| s.eq_ignore_ascii_case("me"))
        {
            return Err(PathError::Me);
        }
        let encoded = encode(&segments);
        // What is forwarded is bounded too (encoding can triple a length),
        // so the forwarded form always parses again.
        if encoded.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong);
        }
        Ok(GraphPath { segments, encoded })
    }

    /// The decoded segments.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The path to forward: `/` and each segment, percent-encoded where
    /// needed. Parsing it again gives the same segments.
    pub fn encoded(&self) -> &str {
        &self.encoded
    }
}

fn encode(segments: &[String]) -> String {
    let decoded: usize = segments.iter().map(|s| s.len() + 1).sum();
    let mut out = String::with_capacity(decoded);
    for segment in segments {
        out.push('/');
        out.extend(utf8_percent_encode(segment, SEGMENT));
    }
    out
}

/// One segment as sent, percent-decoded.
fn decode(encoded: &str) -> Result<String, PathError> {
    if encoded.is_empty() {
        return Err(PathError::EmptySegment);
    }
    if encoded.contains('\\') {
        return Err(PathError::EncodedSeparator);
    }
    let bytes = encoded.as_bytes();
    if !bytes.contains(&b'%') {
        // Nothing to decode, and a `str` is UTF-8 already.
        return Ok(encoded.to_owned());
    }
    let mut i = 0;
    while let Some(offset) = bytes[i..].iter().position(|&b| b == b'%') {
        let at = i + offset;
        let hex = bytes.get(at + 1..at + 3).ok_or(PathError::BadEscape)?;
        if !hex.iter().all(u8::is_ascii_hexdigit) {
            return Err(PathError::BadEscape);
        }
        if hex.eq_ignore_ascii_case(b"2f") || hex.eq_ignore_ascii_case(b"5c") {
            return Err(PathError::EncodedSeparator);
        }
        i = at + 3;
    }
    percent_decode_str(encoded)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| PathError::NotUtf8)
}

/// The OData key form `name('key')` as two segments, the name and the key
/// (`''` in the key is one `'`, as in `o''brien@...`); any other segment as
/// it is. A key holding `(` or `)` could read as another key form to the
/// next parser: refused.
fn split_key(segment: String) -> Result<(String, Option<String>), PathError> {
    // `find("('")` sets up a substring search per segment; `(` is rare.
    let Some(open) = segment.as_bytes().windows(2).position(|w| w == b"('") else {
        return Ok((segment, None));
    };
    let (name, rest) = segment.split_at(open);
    let Some(quoted) = rest.strip_prefix("('").and_then(|r| r.strip_suffix("')")) else {
        return Ok((segment, None));
    };
    if name.is_empty() || name.contains(['(', ')', '\'']) {
        return Ok((segment, None));
    }
    let key = quoted.replace("''", "'");
    if key.contains(['(', ')']) {
        return Err(PathError::AmbiguousKey);
    }
    Ok((name.to_owned(), Some(key)))
}

/// A decoded segment the rules may see.
fn check(segment: &str) -> Result<(), PathError> {
    if segment.is_empty() {
        return Err(PathError::EmptySegment);
    }
    if segment == "." || segment == ".." {
        return Err(PathError::DotSegment);
    }
    if segment.bytes().any(|b| b == b'/' || b == b'\\') {
        return Err(PathError::EncodedSeparator);
    }
    // For ASCII, `char::is_control` is `is_ascii_control`; byte by byte
    // then, without decoding characters.
    let control = if segment.is_ascii() {
        segment.bytes().any(|b| b.is_ascii_control())
    } else {
        segment.chars().any(char::is_control)
    };
    if control {
        return Err(PathError::ControlCharacter);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(raw: &str) -> Vec<String> {
        GraphPath::parse(raw).unwrap().segments().to_vec()
    }

    #[test]
    fn sdk_spellings_come_down_to_one_path() {
        let plain = segments("/users/alice@contoso.com/messages");
        assert_eq!(plain, ["users", "alice@contoso.com", "messages"]);
        assert_eq!(segments("/users/alice%40contoso.com/messages"), plain);
        assert_eq!(segments("/users('alice@contoso.com')/messages"), plain);
        assert_eq!(segments("/users('alice%40contoso.com')/messages"), plain);
        assert_eq!(
            segments("/users%28%27alice%40contoso.com%27%29/messages"),
            plain
        );
        assert_eq!(
            segments("/users('o''brien@contoso.com')/messages"),
            ["users", "o'brien@contoso.com", "messages"]
        );
        assert_eq!(
            segments("/users/a@b.com/messages/AAMk=/$value"),
            ["users", "a@b.com", "messages", "AAMk=", "$value"]
        );
        assert_eq!(
            segments("/users/a@b.com/mailFolders/inbox/messages/delta()"),
            [
                "users",
                "a@b.com",
                "mailFolders",
                "inbox",
                "messages",
                "delta()"
            ]
        );
        assert_eq!(
            GraphPath::parse("/users/a b@c.com/x").unwrap().encoded(),
            "/users/a%20b@c.com/x"
        );
    }

    #[test]
    fn what_could_mean_two_things_is_refused() {
        let refused = |raw: &str| GraphPath::parse(raw).unwrap_err();
        assert_eq!(refused("/users/../admin"), PathError::DotSegment);
        assert_eq!(refused("/users/./x"), PathError::DotSegment);
        assert_eq!(refused("/users/%2e%2e/x"), PathError::DotSegment);
        assert_eq!(refused("/users//x"), PathError::EmptySegment);
        assert_eq!(refused("/users/x/"), PathError::EmptySegment);
        assert_eq!(refused("/users/a%2Fb"), PathError::EncodedSeparator);
        assert_eq!(refused("/users/a%5cb"), PathError::EncodedSeparator);
        assert_eq!(refused("/users/a\\b"), PathError::EncodedSeparator);
        assert_eq!(refused("/users/a%0ab"), PathError::ControlCharacter);
        assert_eq!(refused("/users/a%00"), PathError::ControlCharacter);
        // DEL, and a C1 control (U+0085) outside ASCII.
        assert_eq!(refused("/users/a%7F"), PathError::ControlCharacter);
        assert_eq!(refused("/users/a%C2%85b"), PathError::ControlCharacter);
        assert_eq!(refused("/users/\u{e9}%C2%9F"), PathError::ControlCharacter);
        assert_eq!(refused("/users/%zz"), PathError::BadEscape);
        assert_eq!(refused("/users/a%4"), PathError::BadEscape);
        assert_eq!(refused("/users/%ff"), PathError::NotUtf8);
        assert_eq!(refused("/me/messages"), PathError::Me);
        assert_eq!(refused("/ME"), PathError::Me);
        assert_eq!(refused("/me('x')"), PathError::Me);
        assert_eq!(refused("/users('a(b)')"), PathError::AmbiguousKey);
        assert_eq!(refused("/users('a)')"), PathError::AmbiguousKey);
        assert_eq!(refused(""), PathError::Missing);
        assert_eq!(refused("/"), PathError::Missing);
        assert_eq!(
            refused(&format!("/{}", "a".repeat(MAX_PATH_BYTES))),
            PathError::TooLong
        );
        // Short as sent, long once encoded: refused, so what is forwarded parses.
        assert_eq!(
            refused(&format!("/{}", "{".repeat(1000))),
            PathError::TooLong
        );
        assert_eq!(
            refused(&format!("/{}", "\u{e9}".repeat(400))),
            PathError::TooLong
        );
        let near = GraphPath::parse(&format!("/{}", "{".repeat(682))).unwrap();
        assert_eq!(GraphPath::parse(near.encoded()).as_ref(), Ok(&near));
    }
}
