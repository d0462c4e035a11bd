//! What the gateway changes on the way through, and nothing else: which
//! headers pass and the upstream URL (links in answers: [`super::links`]).
//! Pure.

use super::path::GraphPath;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};

/// Graph API versions the gateway forwards.
pub const VERSIONS: [&str; 2] = ["v1.0", "beta"];

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded either way.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Request headers that stay here: the caller's credentials (its secret
/// must never reach Graph), the broker's own, `Host` (the client sets
/// Graph's), and `Accept-Encoding`: answers come back uncompressed, so the
/// gateway can rewrite links in any JSON page; the caller still gets a
/// correct body (HTTP lets a server answer identity to any request).
const KEPT_BACK: [&str; 6] = [
    "authorization",
    "x-identity-header",
    "x-tokenbroker-app",
    "host",
    "accept-encoding",
    "content-length",
];

/// Whether `name` is a hop-by-hop header, or one the `Connection` header
/// names (RFC 9110: those are this hop's too).
fn hop_by_hop(name: &HeaderName, connection: &[String]) -> bool {
    HOP_BY_HOP.contains(&name.as_str()) || connection.iter().any(|c| c == name.as_str())
}

/// The header names a `Connection` header lists, lower-cased.
fn connection_names(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect()
}

/// The headers to send Graph: the caller's, less hop-by-hop ones and those
/// kept back, plus `Authorization: Bearer <token>`.
pub fn request_headers(from_caller: &HeaderMap, bearer: &HeaderValue) -> HeaderMap {
    let connection = connection_names(from_caller);
    let mut out = HeaderMap::with_capacity(from_caller.len() + 1);
    for (name, value) in from_caller {
        if hop_by_hop(name, &connection) || KEPT_BACK.contains(&name.as_str()) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out.insert(hyper::header::AUTHORIZATION, bearer.clone());
    out
}

/// The headers to answer with: Graph's, less hop-by-hop ones (and
/// `Content-Length` when the body is rewritten; the server sets it).
/// Removed in place: an answer rarely has any to remove, and a copy of the
/// rest cost a hash and two clones per header.
pub fn response_headers(mut headers: HeaderMap, rewritten: bool) -> HeaderMap {
    let connection = connection_names(&headers);
    let gone: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            hop_by_hop(name, &connection) || (rewritten && *name == hyper::header::CONTENT_LENGTH)
        })
        .cloned()
        .collect();
    for name in gone {
        headers.remove(name);
    }
    headers
}

/// `{base}/{version}{path}[?query]`: `base` is `https://graph.microsoft.com`
/// (or `app.graph_host`), `path` the normalised one re-encoded.
pub fn upstream_url(base: &str, version: &str, path: &GraphPath, query: Option<&str>) -> String {
    let base = base.trim_end_matches('/');
    let query = query.filter(|q| !q.is_empty());
    let mut url = String::with_capacity(
        base.len() + 1 + version.len() + path.encoded().len() + query.map_or(0, |q| 1 + q.len()),
    );
    for part in [base, "/", version, path.encoded()] {
        url.push_str(part);
    }
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

/// Whether a `Content-Type` is JSON (`application/json`, with parameters).
pub fn is_json(content_type: Option<&HeaderValue>) -> bool {
    content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callers_credentials_and_hop_by_hop_headers_stay_here() {
        let mut caller = HeaderMap::new();
        caller.insert(
            "authorization",
            HeaderValue::from_static("Bearer account-secret"),
        );
        caller.insert(
            "x-identity-header",
            HeaderValue::from_static("account-secret"),
        );
        caller.insert("host", HeaderValue::from_static("localhost:8765"));
        caller.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Trace"),
        );
        caller.insert("x-trace", HeaderValue::from_static("1"));
        caller.insert("te", HeaderValue::from_static("trailers"));
        caller.insert("accept-encoding", HeaderValue::from_static("gzip"));
        caller.insert("consistencylevel", HeaderValue::from_static("eventual"));
        caller.append("prefer", HeaderValue::from_static("a"));
        caller.append("prefer", HeaderValue::from_static("b"));
        let out = request_headers(&caller, &HeaderValue::from_static("Bearer graph-token"));
        assert_eq!(out.get("authorization").unwrap(), "Bearer graph-token");
        assert_eq!(out.get_all("authorization").iter().count(), 1);
        for gone in [
            "x-identity-header",
            "host",
            "connection",
            "x-trace",
            "te",
            "accept-encoding",
        ] {
            assert!(out.get(gone).is_none(), "{gone} was forwarded");
        }
        assert_eq!(out.get("consistencylevel").unwrap(), "eventual");
        assert_eq!(out.get_all("prefer").iter().count(), 2);
    }

    #[test]
    fn answers_keep_graphs_headers_but_hop_by_hop_ones() {
        let mut graph = HeaderMap::new();
        graph.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        graph.insert("retry-after", HeaderValue::from_static("7"));
        graph.insert("content-length", HeaderValue::from_static("12"));
        graph.insert("request-id", HeaderValue::from_static("abc"));
        graph.append("connection", HeaderValue::from_static("close, X-Hop"));
        graph.insert("x-hop", HeaderValue::from_static("1"));
        let out = response_headers(graph.clone(), false);
        assert!(out.get("connection").is_none() && out.get("x-hop").is_none());
        assert!(out.get("transfer-encoding").is_none());
        assert_eq!(out.get("retry-after").unwrap(), "7");
        assert_eq!(out.get("content-length").unwrap(), "12");
        assert!(response_headers(graph, true)
            .get("content-length")
            .is_none());
    }

    #[test]
    fn the_upstream_url_is_the_normalised_path_and_the_query_as_sent() {
        let path = GraphPath::parse("/users('alice%40contoso.com')/messages").unwrap();
        assert_eq!(
            upstream_url(
                "https://graph.microsoft.com/",
                "v1.0",
                &path,
                Some("%24top=5")
            ),
            "https://graph.microsoft.com/v1.0/users/alice@contoso.com/messages?%24top=5"
        );
        assert_eq!(
            upstream_url("http://127.0.0.1:9", "beta", &path, Some("")),
            "http://127.0.0.1:9/beta/users/alice@contoso.com/messages"
        );
    }

    #[test]
    fn json_content_types_are_recognised_with_parameters() {
        assert!(is_json(Some(&HeaderValue::from_static("application/json"))));
        assert!(is_json(Some(&HeaderValue::from_static(
            "application/json; odata.metadata=minimal; charset=utf-8"
        ))));
        assert!(!is_json(Some(&HeaderValue::from_static("text/plain"))));
        assert!(!is_json(Some(&HeaderValue::from_static(
            "application/jsonx"
        ))));
        assert!(!is_json(None));
    }
}
