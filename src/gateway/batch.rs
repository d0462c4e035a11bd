//! `POST /$batch`: Graph runs up to 20 sub-requests from one body, so each
//! is checked against the rules as if it came alone; one that is not
//! allowed refuses the whole batch. Pure.

use super::path::{GraphPath, PathError};

/// Graph's own limit on sub-requests in one batch.
pub const MAX_REQUESTS: usize = 20;

/// The longest `$batch` body read to check it (Graph takes at most 4 MB).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// One sub-request: its id, method, normalised path and query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubRequest {
    pub id: String,
    pub method: String,
    pub path: GraphPath,
    pub query: Option<String>,
}

/// Why a batch was refused before any rule looked at it (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("the $batch body is not JSON with a \"requests\" array")]
    NotBatch,
    #[error("the $batch has {0} requests; Graph takes at most {MAX_REQUESTS}")]
    TooMany(usize),
    #[error("a $batch request has no string \"id\", \"method\" and \"url\"")]
    Incomplete,
    #[error("$batch request \"{0}\": the url must be relative to the version, such as /users/{{id}}/messages")]
    NotRelative(String),
    #[error("$batch request \"{id}\": {error}")]
    Path { id: String, error: PathError },
    #[error("$batch request \"{0}\" is itself a $batch")]
    Nested(String),
}

/// The sub-requests of a `$batch` body, each path normalised as a request
/// of its own would be.
pub fn parse(body: &[u8]) -> Result<Vec<SubRequest>, BatchError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| BatchError::NotBatch)?;
    parse_value(&value)
}

/// The body to forward: the caller's, with each sub-request's method and
/// URL replaced by the normalised ones the rules judged, so Graph runs
/// exactly what was allowed (as for a request of its own).
pub fn canonical(body: &[u8]) -> Result<(Vec<SubRequest>, Vec<u8>), BatchError> {
    let mut value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| BatchError::NotBatch)?;
    let subs = parse_value(&value)?;
    if let Some(requests) = value
        .get_mut("requests")
        .and_then(serde_json::Value::as_array_mut)
    {
        for (request, sub) in requests.iter_mut().zip(&subs) {
            let mut url = sub.path.encoded().to_owned();
            if let Some(query) = &sub.query {
                url.push('?');
                url.push_str(query);
            }
            // Each is an object: parse_value read its fields.
            if let Some(fields) = request.as_object_mut() {
                fields.insert("url".into(), serde_json::Value::String(url));
                fields.insert(
                    "method".into(),
                    serde_json::Value::String(sub.method.clone()),
                );
            }
        }
    }
    let bytes = serde_json::to_vec(&value).map_err(|_| BatchError::NotBatch)?;
    Ok((subs, bytes))
}

fn parse_value(value: &serde_json::Value) -> Result<Vec<SubRequest>, BatchError> {
    let requests = value
        .get("requests")
        .and_then(serde_json::Value::as_array)
        .ok_or(BatchError::NotBatch)?;
    if requests.len() > MAX_REQUESTS {
        return Err(BatchError::TooMany(requests.len()));
    }
    requests
        .iter()
        .map(|r| {
            let field = |name: &str| r.get(name).and_then(serde_json::Value::as_str);
            let (Some(id), Some(method), Some(url)) = (field("id"), field("method"), field("url"))
            else {
                return Err(BatchError::Incomplete);
            };
            let id = shown(id);
            // Relative to the version: "/users/x" or "users/x". An absolute
            // URL or a scheme-relative one would name another host.
            if url.contains("://") || url.starts_with("//") {
                return Err(BatchError::NotRelative(id));
            }
            let without_fragment = url.split('#').next().unwrap_or_default();
            let (raw, query) = match without_fragment.split_once('?') {
                Some((raw, query)) => (raw, Some(query.to_owned())),
                None => (without_fragment, None),
            };
            let raw = if raw.starts_with('/') {
                raw.to_owned()
            } else {
                format!("/{raw}")
            };
            let path = GraphPath::parse(&raw).map_err(|error| BatchError::Path {
                id: id.clone(),
                error,
            })?;
            if path
                .segments()
                .first()
                .is_some_and(|s| s.eq_ignore_ascii_case("$batch"))
            {
                return Err(BatchError::Nested(id));
            }
            Ok(SubRequest {
                id,
                method: method.to_ascii_uppercase(),
                path,
                query,
            })
        })
        .collect()
}

/// A sub-request id as it may appear in a message: short, printable.
fn shown(id: &str) -> String {
    id.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// Whether a path is the batch endpoint (`/$batch`).
pub fn is_batch(path: &GraphPath) -> bool {
    matches!(path.segments(), [only] if only.eq_ignore_ascii_case("$batch"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_requests_are_normalised_like_requests_of_their_own() {
        let body = br#"{"requests":[
            {"id":"1","method":"get","url":"/users/alice%40contoso.com/messages?$top=2"},
            {"id":"2","method":"POST","url":"users('bob@contoso.com')/sendMail","body":{},"headers":{"content-type":"application/json"}}
        ]}"#;
        let subs = parse(body).unwrap();
        assert_eq!(subs.len(), 2);
        assert_eq!(subs[0].id, "1");
        assert_eq!(subs[0].method, "GET");
        assert_eq!(
            subs[0].path.segments(),
            ["users", "alice@contoso.com", "messages"]
        );
        assert_eq!(
            subs[1].path.segments(),
            ["users", "bob@contoso.com", "sendMail"]
        );
    }

    #[test]
    fn malformed_batches_are_refused_naming_the_request() {
        assert_eq!(parse(b"[]"), Err(BatchError::NotBatch));
        assert_eq!(parse(b"{\"requests\": {}}"), Err(BatchError::NotBatch));
        let many = format!(
            "{{\"requests\":[{}]}}",
            (0..21)
                .map(|i| format!("{{\"id\":\"{i}\",\"method\":\"GET\",\"url\":\"/users\"}}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(parse(many.as_bytes()), Err(BatchError::TooMany(21)));
        assert_eq!(
            parse(br#"{"requests":[{"id":"1","method":"GET"}]}"#),
            Err(BatchError::Incomplete)
        );
        for url in ["https://evil.example/v1.0/users", "//evil.example/users"] {
            let body =
                format!("{{\"requests\":[{{\"id\":\"x\",\"method\":\"GET\",\"url\":\"{url}\"}}]}}");
            assert_eq!(
                parse(body.as_bytes()),
                Err(BatchError::NotRelative("x".into()))
            );
        }
        assert_eq!(
            parse(br#"{"requests":[{"id":"7","method":"GET","url":"/users/a/../b"}]}"#),
            Err(BatchError::Path {
                id: "7".into(),
                error: PathError::DotSegment
            })
        );
        assert_eq!(
            parse(br#"{"requests":[{"id":"8","method":"GET","url":"/me/messages"}]}"#),
            Err(BatchError::Path {
                id: "8".into(),
                error: PathError::Me
            })
        );
        assert_eq!(
            parse(br#"{"requests":[{"id":"9","method":"POST","url":"/$batch"}]}"#),
            Err(BatchError::Nested("9".into()))
        );
    }

    #[test]
    fn the_forwarded_batch_runs_exactly_what_was_judged() {
        let body = br#"{"requests":[
            {"id":"1","method":"get","url":"users('alice%40contoso.com')/Messages?$top=2","headers":{"x":"y"}},
            {"id":"2","method":"POST","url":"/users/bob@contoso.com/sendMail","body":{"message":{}}}
        ]}"#;
        let (subs, forwarded) = canonical(body).unwrap();
        assert_eq!(subs[0].query.as_deref(), Some("$top=2"));
        let value: serde_json::Value = serde_json::from_slice(&forwarded).unwrap();
        assert_eq!(
            value["requests"][0]["url"],
            "/users/alice@contoso.com/Messages?$top=2"
        );
        assert_eq!(value["requests"][0]["method"], "GET");
        assert_eq!(value["requests"][0]["headers"]["x"], "y");
        assert_eq!(
            value["requests"][1]["url"],
            "/users/bob@contoso.com/sendMail"
        );
        assert_eq!(
            value["requests"][1]["body"],
            serde_json::json!({"message": {}})
        );
        // What is forwarded parses to the same sub-requests.
        assert_eq!(parse(&forwarded).unwrap(), subs);
    }

    #[test]
    fn only_the_batch_endpoint_is_a_batch() {
        assert!(is_batch(&GraphPath::parse("/$batch").unwrap()));
        assert!(is_batch(&GraphPath::parse("/$BATCH").unwrap()));
        assert!(!is_batch(&GraphPath::parse("/users/$batch").unwrap()));
    }
}
