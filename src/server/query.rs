//! What a token request asks for, read from its query string: the tenant
//! (`tenant=`, or an App Service selector), the resource, and the hash of a
//! token the caller saw rejected. Pure, and fuzzed (`fuzz/`).

use super::respond::Failure;
use super::MSI_API_VERSION;
use std::borrow::Cow;

/// Query parameters, borrowed from the query unless percent-decoding changed them.
type Params<'q> = Vec<(Cow<'q, str>, Cow<'q, str>)>;

/// A token request's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenQuery<'q> {
    /// `None`: the account's default tenant (App Service calls with no selector).
    pub tenant: Option<Cow<'q, str>>,
    /// `None`: the cloud's Graph.
    pub resource: Option<Cow<'q, str>>,
    /// `token_sha256_to_refresh`.
    pub rejected: Option<[u8; 32]>,
    /// `app=` on `/v1/token` (`None`: the account's first app). On
    /// `/msi/token` the selector may name an app by its client ID instead.
    pub app: Option<Cow<'q, str>>,
}

/// Reads the query of `/v1/token` (`is_msi` false) or `/msi/token`. At most
/// `max` bytes; each parameter at most once.
pub fn token_query(query: &str, is_msi: bool, max: usize) -> Result<TokenQuery<'_>, Failure> {
    let mut pairs = parse_query(query, max)?;
    let rejected = param(&pairs, "token_sha256_to_refresh")
        .map(parse_token_hash)
        .transpose()?;
    let (tenant, resource, app) = if is_msi {
        match param(&pairs, "api-version") {
            Some(MSI_API_VERSION) => {}
            other => {
                return Err(Failure::new(
                    400,
                    "invalid_request",
                    format!(
                        "api-version must be {MSI_API_VERSION} (got {})",
                        other.map_or("none".to_owned(), |v| format!(
                            "\"{}\"",
                            v.chars().take(32).collect::<String>().escape_debug()
                        ))
                    ),
                ))
            }
        }
        let resource = take(&mut pairs, "resource").ok_or_else(|| {
            Failure::new(400, "invalid_request", "the resource parameter is required")
        })?;
        // The SDKs strip it, but be lenient with callers that do not.
        let resource = match resource {
            Cow::Borrowed(r) => Cow::Borrowed(r.strip_suffix("/.default").unwrap_or(r)),
            Cow::Owned(r) => Cow::Owned(r.strip_suffix("/.default").unwrap_or(&r).to_owned()),
        };
        // `resource_id` is how azure-identity's async credential sends
        // `identity_config={"resource_id": …}`: ignoring it would hand out
        // the default tenant's token to a caller that named another.
        let mut selectors = [
            "client_id",
            "mi_res_id",
            "resource_id",
            "principal_id",
            "object_id",
        ]
        .iter()
        .filter_map(|name| take(&mut pairs, name).map(|value| (*name, value)));
        let selector = selectors.next();
        if let Some((first, a)) = &selector {
            if let Some((second, _)) = selectors.find(|(_, b)| b != a) {
                return Err(Failure::new(
                    400,
                    "invalid_request",
                    format!("{first} and {second} name different identities; give one"),
                ));
            }
        }
        (selector.map(|(_, value)| value), Some(resource), None)
    } else {
        let tenant = take(&mut pairs, "tenant").ok_or_else(|| {
            Failure::new(400, "invalid_request", "the tenant parameter is required")
        })?;
        (
            Some(tenant),
            take(&mut pairs, "resource"),
            take(&mut pairs, "app"),
        )
    };
    Ok(TokenQuery {
        tenant,
        resource,
        rejected,
        app,
    })
}

fn parse_query(query: &str, max: usize) -> Result<Params<'_>, Failure> {
    if query.len() > max {
        return Err(Failure::new(
            400,
            "invalid_request",
            format!("the query string is longer than {max} bytes"),
        ));
    }
    let mut pairs: Params<'_> = Vec::with_capacity(4);
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if pairs.iter().any(|(n, _)| *n == name) {
            return Err(Failure::new(
                400,
                "invalid_request",
                format!(
                    "parameter '{}' is given twice",
                    name.chars().take(32).collect::<String>().escape_debug()
                ),
            ));
        }
        pairs.push((name, value));
    }
    Ok(pairs)
}

fn param<'a>(pairs: &'a Params<'_>, name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_ref())
}

/// Takes `name`'s value out (no copy of a borrowed value).
fn take<'q>(pairs: &mut Params<'q>, name: &str) -> Option<Cow<'q, str>> {
    let i = pairs.iter().position(|(n, _)| n == name)?;
    Some(pairs.swap_remove(i).1)
}

/// `token_sha256_to_refresh`: the hex SHA-256 (either case) of a token the
/// caller saw rejected.
fn parse_token_hash(value: &str) -> Result<[u8; 32], Failure> {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(value, &mut hash).map_err(|_| {
        Failure::new(
            400,
            "invalid_request",
            "token_sha256_to_refresh must be the SHA-256 of the rejected access token, as 64 hex characters",
        )
    })?;
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_bounded_and_unambiguous() {
        assert_eq!(
            parse_query("tenant=a.com&resource=https%3A%2F%2Fx", 100)
                .unwrap()
                .len(),
            2
        );
        assert_eq!(parse_query("a=1&a=2", 100).unwrap_err().status, 400);
        assert!(parse_query(&"x".repeat(101), 100)
            .unwrap_err()
            .message
            .contains("longer than 100"));
        let pairs = parse_query("tenant=contoso&empty=", 100).unwrap();
        assert_eq!(param(&pairs, "tenant"), Some("contoso"));
        assert_eq!(param(&pairs, "empty"), Some(""));
        assert_eq!(param(&pairs, "missing"), None);
    }

    #[test]
    fn v1_and_msi_queries() {
        let q = token_query("tenant=contoso&resource=https%3A%2F%2Fx", false, 100).unwrap();
        assert_eq!(q.tenant.as_deref(), Some("contoso"));
        assert_eq!(q.resource.as_deref(), Some("https://x"));
        assert!(matches!(q.tenant, Some(Cow::Borrowed(_))), "no copy");
        assert_eq!(
            token_query("resource=x", false, 100).unwrap_err().status,
            400
        );
        let q = token_query(
            "api-version=2019-08-01&resource=https://x/.default&mi_res_id=fabrikam",
            true,
            200,
        )
        .unwrap();
        assert_eq!(q.tenant.as_deref(), Some("fabrikam"));
        assert_eq!(q.resource.as_deref(), Some("https://x"));
        let q = token_query(
            "api-version=2019-08-01&resource=r&resource_id=fabrikam",
            true,
            200,
        )
        .unwrap();
        assert_eq!(q.tenant.as_deref(), Some("fabrikam"));
        let twice = "api-version=2019-08-01&resource=r&client_id=fabrikam&object_id=fabrikam";
        assert_eq!(
            token_query(twice, true, 200).unwrap().tenant.as_deref(),
            Some("fabrikam")
        );
        let clash = "api-version=2019-08-01&resource=r&client_id=fabrikam&mi_res_id=fabrikam&object_id=contoso";
        let e = token_query(clash, true, 200).unwrap_err();
        assert_eq!(e.status, 400);
        let q = token_query("api-version=2019-08-01&resource=r", true, 100).unwrap();
        assert_eq!(q.tenant, None, "the account's default tenant");
        assert_eq!(
            token_query("resource=r", true, 100).unwrap_err().status,
            400
        );
        let hash = "AB".repeat(32);
        let text = format!("tenant=t&token_sha256_to_refresh={hash}");
        let q = token_query(&text, false, 200).unwrap();
        assert_eq!(q.rejected, Some([0xAB; 32]));
        assert_eq!(
            token_query("tenant=t&token_sha256_to_refresh=zz", false, 200)
                .unwrap_err()
                .status,
            400
        );
    }
}
