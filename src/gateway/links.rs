//! Links back to Graph in answers (`@odata.nextLink`, `@odata.deltaLink`,
//! `Location`), rewritten to point at the gateway, so an SDK's page iterator
//! keeps paging through it. Pure.
//!
//! A JSON page is not parsed into a tree and written out again: its members
//! are read as unparsed slices of the answer, and only the bytes of each link
//! are replaced. The rest of the body goes back byte for byte, and a page
//! costs one validating pass (a `$batch` answer one per level it is read
//! at) instead of a parse, an allocation per value and a re-serialisation (BENCHMARKS.md, "the gateway's own work").

use super::forward::VERSIONS;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;
use std::ops::Range;

/// Where links to Graph point once rewritten.
#[derive(Debug, Clone)]
pub struct Links<'a> {
    /// Prefixes of links to Graph (`https://graph.microsoft.com`, and
    /// `app.graph_host` when set), without a trailing `/`.
    pub graph_bases: &'a [String],
    /// `http://{Host}/graph/{tenant as the caller wrote it}`.
    pub gateway_base: String,
}

impl Links<'_> {
    /// `link` pointed at the gateway, when it is a link to a Graph version
    /// this gateway serves; `None` leaves it as it is.
    pub fn rewrite(&self, link: &str) -> Option<String> {
        self.graph_bases.iter().find_map(|base| {
            let rest = strip_prefix_ignore_case(link, base)?;
            let after_slash = rest.strip_prefix('/')?;
            let version = after_slash.split(['/', '?']).next()?;
            VERSIONS
                .contains(&version)
                .then(|| [self.gateway_base.as_str(), rest].concat())
        })
    }

    /// A JSON answer with its links rewritten: the top-level
    /// `@odata.nextLink` and `@odata.deltaLink`, and in a `$batch` answer
    /// each response's (and its `Location` header). `None`: not a JSON
    /// object, or nothing to rewrite (send the body as it came).
    pub fn rewrite_json(&self, body: &[u8]) -> Option<Vec<u8>> {
        if !may_hold_links(body) {
            return None;
        }
        // Parsed as bytes: the members the rewrite reads (names, links, and
        // a `$batch` answer's `responses` whole) are checked as UTF-8, the
        // ones it skips are not, so one bad byte in a page's messages does
        // not leave its links pointing at Graph for a caller whose parser
        // replaces bad bytes (JavaScript's does).
        let top: Members<'_> = serde_json::from_slice(body).ok()?;
        let mut edits = Vec::new();
        self.page_links(body, &top, &mut edits);
        for (_, responses) in top.0.iter().filter(|(k, _)| *k == Key::Responses) {
            let Ok(responses) = serde_json::from_str::<Vec<&RawValue>>(responses.get()) else {
                continue;
            };
            for response in responses {
                let Ok(response) = serde_json::from_str::<Members<'_>>(response.get()) else {
                    continue;
                };
                for (key, value) in &response.0 {
                    if !matches!(key, Key::Body | Key::Headers) {
                        continue;
                    }
                    let Ok(inner) = serde_json::from_str::<Members<'_>>(value.get()) else {
                        continue;
                    };
                    match key {
                        Key::Body => self.page_links(body, &inner, &mut edits),
                        Key::Headers => {
                            for (name, value) in &inner.0 {
                                if *name == Key::Location {
                                    self.link(body, value, &mut edits);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        splice(body, edits)
    }

    /// The edits for a page's own `@odata.nextLink` and `@odata.deltaLink`.
    fn page_links(&self, body: &[u8], page: &Members<'_>, edits: &mut Vec<Edit>) {
        for (_, value) in page.0.iter().filter(|(k, _)| *k == Key::PageLink) {
            self.link(body, value, edits);
        }
    }

    /// The edit for one link, when it is a string that points at Graph.
    fn link(&self, body: &[u8], value: &RawValue, edits: &mut Vec<Edit>) {
        let Ok(link) = serde_json::from_str::<String>(value.get()) else {
            return;
        };
        let (Some(at), Some(rewritten)) = (within(body, value.get()), self.rewrite(&link)) else {
            return;
        };
        if let Ok(json) = serde_json::to_string(&rewritten) {
            edits.push((at, json));
        }
    }
}

/// Whether `body` may hold a member the rewrite changes, found without
/// parsing it: a single message or event (no page link) then costs a few
/// scans instead of a validating pass. Without a `\u` escape, member names
/// are written as they read (no other escape spells a letter), so a page
/// link's name ends in `Link"` and a `$batch` answer has `"responses"`.
fn may_hold_links(body: &[u8]) -> bool {
    use memchr::memmem::find;
    find(body, b"Link\"").is_some()
        || find(body, b"\"responses\"").is_some()
        || find(body, b"\\u").is_some()
}

/// Bytes of the answer replaced by a JSON string.
type Edit = (Range<usize>, String);

/// Where `part`, a slice borrowed from `body`, lies in it.
fn within(body: &[u8], part: &str) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= body.len()).then_some(start..end)
}

/// `body` with `edits` applied; `None` when there are none.
fn splice(body: &[u8], mut edits: Vec<Edit>) -> Option<Vec<u8>> {
    if edits.is_empty() {
        return None;
    }
    edits.sort_by_key(|(at, _)| at.start);
    let mut out =
        Vec::with_capacity(body.len() + edits.iter().map(|(_, s)| s.len()).sum::<usize>());
    let mut done = 0;
    for (at, text) in edits {
        // Edits are of distinct values, so they never overlap; be sure.
        if at.start < done {
            return None;
        }
        out.extend_from_slice(body.get(done..at.start)?);
        out.extend_from_slice(text.as_bytes());
        done = at.end;
    }
    out.extend_from_slice(body.get(done..)?);
    Some(out)
}

/// The member names the rewrite looks at (compared after JSON unescaping,
/// so `"@odata.next\u004cink"` is a page link too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    PageLink,
    Responses,
    Body,
    Headers,
    /// `Location` in any case (a header name).
    Location,
    Other,
}

impl Key {
    fn of(name: &str) -> Key {
        match name {
            "@odata.nextLink" | "@odata.deltaLink" => Key::PageLink,
            "responses" => Key::Responses,
            "body" => Key::Body,
            "headers" => Key::Headers,
            _ if name.eq_ignore_ascii_case("location") => Key::Location,
            _ => Key::Other,
        }
    }
}

/// A JSON object's members that the rewrite looks at, in the order written
/// (duplicates kept), each value an unparsed slice of the input.
struct Members<'a>(Vec<(Key, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some(key) = map.next_key::<KeyName>()? {
                    // A member the rewrite ignores is skipped (its JSON
                    // still checked), not kept as a slice of its own.
                    if key.0 == Key::Other {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    } else {
                        members.push((key.0, map.next_value::<&'de RawValue>()?));
                    }
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Object)
    }
}

/// A member name, classified without keeping it.
struct KeyName(Key);

impl<'de> Deserialize<'de> for KeyName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl Visitor<'_> for Name {
            type Value = KeyName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<KeyName, E> {
                Ok(KeyName(Key::of(name)))
            }
        }
        deserializer.deserialize_str(Name)
    }
}

/// `text` without `prefix`, comparing ASCII case-insensitively (scheme and
/// host are case-insensitive).
fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    static BASES: std::sync::LazyLock<[String; 2]> = std::sync::LazyLock::new(|| {
        [
            "https://graph.microsoft.com".into(),
            "http://127.0.0.1:9000".into(),
        ]
    });

    fn links() -> Links<'static> {
        Links {
            graph_bases: &*BASES,
            gateway_base: "http://localhost:8765/graph/contoso".into(),
        }
    }

    #[test]
    fn links_to_graph_point_back_at_the_gateway() {
        let l = links();
        assert_eq!(
            l.rewrite("https://graph.microsoft.com/v1.0/users/a/messages?%24skiptoken=x")
                .as_deref(),
            Some("http://localhost:8765/graph/contoso/v1.0/users/a/messages?%24skiptoken=x")
        );
        assert_eq!(
            l.rewrite("HTTPS://GRAPH.microsoft.com/beta/users")
                .as_deref(),
            Some("http://localhost:8765/graph/contoso/beta/users")
        );
        assert_eq!(
            l.rewrite("http://127.0.0.1:9000/v1.0/x").as_deref(),
            Some("http://localhost:8765/graph/contoso/v1.0/x")
        );
        // Other hosts, look-alike hosts and unknown versions stay as they are.
        for other in [
            "https://graph.microsoft.com.evil.example/v1.0/x",
            "https://example.com/v1.0/x",
            "https://graph.microsoft.com/v2.0/x",
            "https://graph.microsoft.com",
            "http://127.0.0.1:90001/v1.0/x",
        ] {
            assert_eq!(l.rewrite(other), None, "{other}");
        }
    }

    #[test]
    fn json_pages_and_batch_answers_have_their_links_rewritten() {
        let l = links();
        let page = br#"{"value":[{"id":"1","note":"https://graph.microsoft.com/v1.0/keep"}],"@odata.nextLink":"https://graph.microsoft.com/v1.0/users/a/messages?$skiptoken=2"}"#;
        let out: serde_json::Value =
            serde_json::from_slice(&l.rewrite_json(page).unwrap()).unwrap();
        assert_eq!(
            out["@odata.nextLink"],
            "http://localhost:8765/graph/contoso/v1.0/users/a/messages?$skiptoken=2"
        );
        // Links inside values are data, not paging: untouched.
        assert_eq!(
            out["value"][0]["note"],
            "https://graph.microsoft.com/v1.0/keep"
        );

        let delta = br#"{"value":[],"@odata.deltaLink":"https://graph.microsoft.com/v1.0/users/a/messages/delta?$deltatoken=z"}"#;
        let out: serde_json::Value =
            serde_json::from_slice(&l.rewrite_json(delta).unwrap()).unwrap();
        assert_eq!(
            out["@odata.deltaLink"],
            "http://localhost:8765/graph/contoso/v1.0/users/a/messages/delta?$deltatoken=z"
        );

        let batch = br#"{"responses":[{"id":"1","status":200,"body":{"@odata.nextLink":"https://graph.microsoft.com/v1.0/u?$skiptoken=3"}},{"id":"2","status":201,"headers":{"Location":"https://graph.microsoft.com/v1.0/users/a/messages/9"},"body":{}}]}"#;
        let out: serde_json::Value =
            serde_json::from_slice(&l.rewrite_json(batch).unwrap()).unwrap();
        assert_eq!(
            out["responses"][0]["body"]["@odata.nextLink"],
            "http://localhost:8765/graph/contoso/v1.0/u?$skiptoken=3"
        );
        assert_eq!(
            out["responses"][1]["headers"]["Location"],
            "http://localhost:8765/graph/contoso/v1.0/users/a/messages/9"
        );

        // Nothing to rewrite, or not JSON: the body goes as it came.
        assert_eq!(l.rewrite_json(br#"{"value":[]}"#), None);
        assert_eq!(l.rewrite_json(b"not json"), None);
        assert_eq!(
            l.rewrite_json(br#"["https://graph.microsoft.com/v1.0/x"]"#),
            None
        );
    }

    #[test]
    fn only_the_links_bytes_change() {
        let l = links();
        // Odd spacing, escapes and non-ASCII stay exactly as Graph wrote them;
        // a link written with escaped slashes is still a link to Graph.
        let page = "{ \"value\" : [ {\"subject\":\"caf\\u00e9 \u{1F600}\", \"n\": 1.50 } ],\n  \"@odata.nextLink\":\"https:\\/\\/graph.microsoft.com\\/v1.0\\/users\\/a\\/messages?$skip=2\" }";
        let out = String::from_utf8(l.rewrite_json(page.as_bytes()).unwrap()).unwrap();
        assert_eq!(
            out,
            "{ \"value\" : [ {\"subject\":\"caf\\u00e9 \u{1F600}\", \"n\": 1.50 } ],\n  \"@odata.nextLink\":\"http://localhost:8765/graph/contoso/v1.0/users/a/messages?$skip=2\" }"
        );
    }

    #[test]
    fn a_body_with_no_member_to_change_is_not_parsed_and_an_escape_is() {
        // Pages and $batch answers go on to the parse, as does any escape
        // that could spell a member name; an entity with none does not.
        for body in [
            &br#"{"@odata.nextLink":"x"}"#[..],
            br#"{"@odata.deltaLink" :"x"}"#,
            br#"{"responses":[]}"#,
            br#"{"@odata.next\u004cink":"x"}"#,
            br#"{"a":"\u0041"}"#,
        ] {
            assert!(may_hold_links(body), "{}", String::from_utf8_lossy(body));
        }
        let message =
            br#"{"id":"AAMk","subject":"Links and responses","body":{"content":"see \"x\""}}"#;
        assert!(!may_hold_links(message));
        assert_eq!(links().rewrite_json(message), None);
    }

    #[test]
    fn a_bad_utf8_byte_in_a_skipped_member_does_not_stop_the_rewrite() {
        let l = links();
        let page = b"{\"value\":[{\"subject\":\"caf\xE9\"}],\"@odata.nextLink\":\"https://graph.microsoft.com/v1.0/users/a/messages?$skip=1\"}";
        let out = l.rewrite_json(page).unwrap();
        let expected = b"{\"value\":[{\"subject\":\"caf\xE9\"}],\"@odata.nextLink\":\"http://localhost:8765/graph/contoso/v1.0/users/a/messages?$skip=1\"}";
        assert_eq!(out, expected.to_vec(), "{}", String::from_utf8_lossy(&out));
        // A bad byte in a link itself fails the parse: nothing is rewritten
        // (the caller's parser refuses the link, or gets a broken one).
        let bad_link = b"{\"@odata.nextLink\":\"https://graph.microsoft.com/v1.0/\xFF\"}";
        assert_eq!(l.rewrite_json(bad_link), None);
    }

    #[test]
    fn member_names_are_compared_unescaped_and_every_duplicate_is_rewritten() {
        let l = links();
        let page = br#"{"@odata.next\u004cink":"https://graph.microsoft.com/v1.0/a","@odata.deltaLink":"https://graph.microsoft.com/v1.0/b","@odata.deltaLink":"https://graph.microsoft.com/v1.0/c"}"#;
        let out = String::from_utf8(l.rewrite_json(page).unwrap()).unwrap();
        assert!(!out.contains("graph.microsoft.com"), "{out}");
        assert_eq!(
            out.matches("http://localhost:8765/graph/contoso/v1.0/")
                .count(),
            3
        );
    }

    #[test]
    fn what_is_not_a_page_or_a_link_is_left_alone() {
        let l = links();
        for body in [
            // A batch body that is not an object (Graph base64-encodes some).
            br#"{"responses":[{"id":"1","body":"aHR0cHM6Ly9ncmFwaC5taWNyb3NvZnQuY29tL3YxLjAveA=="}]}"#.as_slice(),
            br#"{"responses":{"body":{"@odata.nextLink":"https://graph.microsoft.com/v1.0/x"}}}"#,
            br#"{"@odata.nextLink":42,"value":[]}"#,
            br#"{"@odata.nextLink":"https://example.com/v1.0/x"}"#,
            // Not one JSON value: trailing bytes, or broken off.
            br#"{"@odata.nextLink":"https://graph.microsoft.com/v1.0/x"} {}"#,
            br#"{"@odata.nextLink":"https://graph.microsoft.com/v1.0/x""#,
            b"",
        ] {
            assert_eq!(l.rewrite_json(body), None, "{}", String::from_utf8_lossy(body));
        }
    }

    /// The rewrite as a tree: parse, replace, serialise (what the splice
    /// must agree with).
    fn rewritten_as_a_tree(l: &Links<'_>, body: &[u8]) -> serde_json::Value {
        let mut value: serde_json::Value = serde_json::from_slice(body).unwrap();
        let link = |v: &mut serde_json::Value| {
            if let Some(new) = v.as_str().and_then(|s| l.rewrite(s)) {
                *v = serde_json::Value::String(new);
            }
        };
        let page = |p: &mut serde_json::Value| {
            for key in ["@odata.nextLink", "@odata.deltaLink"] {
                if let Some(v) = p.get_mut(key) {
                    link(v);
                }
            }
        };
        page(&mut value);
        if let Some(responses) = value.get_mut("responses").and_then(|r| r.as_array_mut()) {
            for response in responses {
                if let Some(body) = response.get_mut("body") {
                    page(body);
                }
                if let Some(headers) = response.get_mut("headers").and_then(|h| h.as_object_mut()) {
                    for (name, v) in headers.iter_mut() {
                        if name.eq_ignore_ascii_case("location") {
                            link(v);
                        }
                    }
                }
            }
        }
        value
    }

    #[test]
    fn the_splice_agrees_with_rewriting_the_parsed_tree() {
        let l = links();
        let bodies: [&[u8]; 5] = [
            br#"{"value":[{"id":"1","body":{"content":"<p>hi</p>"}}],"@odata.nextLink":"https://graph.microsoft.com/v1.0/users/a/messages?$skiptoken=2"}"#,
            br#"{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#x","@odata.deltaLink":"http://127.0.0.1:9000/beta/u/delta?$deltatoken=9"}"#,
            br#"{"responses":[{"id":"1","status":200,"body":{"@odata.nextLink":"https://graph.microsoft.com/v1.0/u?$skiptoken=3","value":[]}},{"id":"2","status":201,"headers":{"LOCATION":"https://graph.microsoft.com/v1.0/users/a/messages/9","Content-Type":"application/json"},"body":{}},{"id":"3","status":204}]}"#,
            br#"{"value":[{"@odata.nextLink":"https://graph.microsoft.com/v1.0/inner"}],"@odata.nextLink":"https://graph.microsoft.com/v2.0/not-ours"}"#,
            br#"{"a":{"b":[1,2,{"c":null}]},"@odata.nextLink":"HTTPS://Graph.Microsoft.com/v1.0/x?y=%20z"}"#,
        ];
        for body in bodies {
            let expected = rewritten_as_a_tree(&l, body);
            let got = match l.rewrite_json(body) {
                Some(out) => serde_json::from_slice::<serde_json::Value>(&out).unwrap(),
                None => serde_json::from_slice(body).unwrap(),
            };
            assert_eq!(got, expected, "{}", String::from_utf8_lossy(body));
        }
    }
}
