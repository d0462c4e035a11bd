//! The configuration's vocabulary: validated values that the rest of the
//! daemon passes around (a [`TenantId`] is safe in a URL path, a [`Resource`]
//! in a scope). Each checks itself as it is parsed, so a TOML error names the
//! key and its line; the checks are pure functions, also used on callers'
//! input. They share their text (`Arc<str>`): a clone, as every request
//! makes of its tenant and resource, copies no bytes.

use serde::Deserialize;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

impl TenantId {
    /// The id as a key: Entra's tenant ids and domains are case-insensitive,
    /// so `Contoso.com` and `contoso.com` are one tenant, one cache slot,
    /// one status row. The one place the case is folded.
    pub fn key(&self) -> TenantKey {
        if self.0.bytes().any(|b| b.is_ascii_uppercase()) {
            TenantKey(TenantId(self.0.to_ascii_lowercase().into()))
        } else {
            // Already lower case (the usual case): the same shared string.
            TenantKey(self.clone())
        }
    }

    /// Whether `self` and `other` name the same tenant (ASCII case ignored).
    pub fn same_as(&self, other: &TenantId) -> bool {
        self.0.eq_ignore_ascii_case(&other.0)
    }
}

/// A tenant id in its one case ([`TenantId::key`]): what every map keyed
/// by tenant is keyed by, so none can be asked with an id in another case.
/// Reads as the (lower-case) id it holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantKey(TenantId);

impl std::ops::Deref for TenantKey {
    type Target = TenantId;
    fn deref(&self) -> &TenantId {
        &self.0
    }
}

impl fmt::Display for TenantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How an account or default names a tenant in the configuration: `"*"`
/// (any tenant), a tenant GUID or domain, or the name of a `[[tenants]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum TenantRef {
    /// `"*"`: any tenant.
    Any,
    /// A tenant GUID or verified domain.
    Id(TenantId),
    /// A configured tenant's name (checked against `[[tenants]]` afterwards).
    Name(Name),
}

impl TryFrom<String> for TenantRef {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        if value == "*" {
            return Ok(TenantRef::Any);
        }
        // A GUID or domain first: a GUID would also pass as a name.
        if check_tenant_id(&value).is_ok() {
            return Ok(TenantRef::Id(TenantId(value.into())));
        }
        Name::try_from(value.clone())
            .map(TenantRef::Name)
            .map_err(|_| {
                format!(
                "\"{}\" is neither a configured tenant name, a tenant GUID or domain, nor \"*\"",
                value.escape_debug()
            )
            })
    }
}

impl fmt::Display for TenantRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TenantRef::Any => f.write_str("*"),
            TenantRef::Id(id) => id.fmt(f),
            TenantRef::Name(name) => name.fmt(f),
        }
    }
}

/// A tenant reference resolved to its id (and configured name, if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTenant {
    /// Tenant GUID or domain, as it goes into the token URL.
    pub id: TenantId,
    /// The configured alias, when the tenant is configured.
    pub name: Option<Name>,
}

/// Defines a string newtype validated on deserialization.
macro_rules! validated_string {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(Arc<str>);

        impl $name {
            /// The validated value.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(value: String) -> Result<Self, String> {
                let check: fn(&str) -> Result<(), String> = $check;
                check(&value)?;
                Ok($name(value.into()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

validated_string!(
    /// A GUID such as an application (client) ID.
    Guid,
    |v| {
        if is_guid(v) {
            Ok(())
        } else {
            Err(format!(
                "\"{v}\" is not a GUID; expected the form 00000000-0000-0000-0000-000000000000 \
                 (Entra admin center > App registrations > Application (client) ID)"
            ))
        }
    }
);

validated_string!(
    /// A tenant GUID or verified domain; safe to put in a URL path.
    TenantId,
    |v| check_tenant_id(v)
);

validated_string!(
    /// A tenant or account name: letters, digits, `-` and `_`, at most 64.
    Name,
    |v| {
        let ok = !v.is_empty()
            && v.len() <= 64
            && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(())
        } else {
            Err(format!(
                "\"{v}\" is not a valid name; use 1-64 letters, digits, '-' or '_'"
            ))
        }
    }
);

impl Name {
    /// The name of a lone `[app]`: "default".
    pub fn default_app() -> Name {
        Name(Arc::from("default"))
    }
}

/// Which app registration a token is for: its client ID (how Entra, the
/// fleet's shared cache and the state file know it) and its configured
/// name (labels, status, `?app=`). Both share their text: cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AppKey {
    pub name: Name,
    pub client_id: Guid,
}

impl AppKey {
    /// The app named "default" with the all-ones client ID (tests and
    /// benchmarks that need a key and no configuration).
    pub fn example() -> AppKey {
        AppKey {
            name: Name::default_app(),
            client_id: Guid(Arc::from("11111111-1111-1111-1111-111111111111")),
        }
    }
}

/// A SHA-256 digest, written as 64 hexadecimal characters in either case
/// (`secret_sha256`). Held as bytes, so two spellings of one digest are equal.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct SecretHash(pub [u8; 32]);

impl TryFrom<String> for SecretHash {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        let mut digest = [0u8; 32];
        match hex::decode_to_slice(value.as_bytes(), &mut digest) {
            Ok(()) => Ok(SecretHash(digest)),
            Err(_) => Err(format!(
                "expected 64 hexadecimal characters (a SHA-256 digest), got {} characters; \
                 make one with `tokenbroker secret new --account NAME`",
                value.chars().count()
            )),
        }
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretHash({})", hex::encode(self.0))
    }
}

/// `secret_sha256`: one hash, or a list of one or two (old and new secret,
/// both accepted while callers move to the new one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretHashes(pub Vec<SecretHash>);

impl<'de> Deserialize<'de> for SecretHashes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = SecretHashes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a SHA-256 digest in hex, or a list of one or two")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SecretHashes, E> {
                SecretHash::try_from(v.to_owned())
                    .map(|h| SecretHashes(vec![h]))
                    .map_err(E::custom)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<SecretHashes, A::Error> {
                let mut hashes = Vec::new();
                while let Some(hash) = seq.next_element::<SecretHash>()? {
                    hashes.push(hash);
                }
                if hashes.is_empty() || hashes.len() > 2 {
                    return Err(serde::de::Error::custom(format!(
                        "lists {} hashes; give one, or two while a secret rotates (old and new)",
                        hashes.len()
                    )));
                }
                Ok(SecretHashes(hashes))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

validated_string!(
    /// The name of an environment variable.
    EnvVarName,
    |v| {
        let ok = !v.is_empty()
            && !v.as_bytes()[0].is_ascii_digit()
            && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if ok {
            Ok(())
        } else {
            Err(format!(
                "\"{v}\" is not an environment variable name; use letters, digits and '_'"
            ))
        }
    }
);

validated_string!(
    /// A Graph application permission such as `Mail.ReadWrite`.
    Permission,
    |v| {
        let ok = v.len() <= 128
            && v.split('.').count() >= 2
            && v.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric()));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "\"{v}\" is not a Graph permission name; expected e.g. \"Mail.ReadWrite\""
            ))
        }
    }
);

validated_string!(
    /// A Host header name: `localhost`, a DNS name, an IPv4 address or `[IPv6]`.
    HostName,
    |v| {
        let ok = !v.is_empty()
            && v.len() <= 253
            && (v.starts_with('[') && v.ends_with(']') && v[1..v.len() - 1].parse::<std::net::Ipv6Addr>().is_ok()
                || v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "\"{v}\" is not a host name; expected e.g. \"localhost\", \"127.0.0.1\" or \"[::1]\" (no port)"
            ))
        }
    }
);

/// A token audience such as `https://graph.microsoft.com`, without a
/// trailing slash (so `…com/` and `…com` are one resource); the upstream
/// scope is `{resource}/.default`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Resource(Arc<str>);

impl Resource {
    /// The validated value.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks and normalises a resource (from the configuration or a caller).
    pub fn parse(value: &str) -> Result<Resource, String> {
        let trimmed = value.strip_suffix('/').unwrap_or(value);
        check_resource(trimmed)?;
        Ok(Resource(trimmed.into()))
    }
}

impl Resource {
    /// The Microsoft Graph resource of `cloud`.
    pub fn graph(cloud: crate::cloud::Cloud) -> Resource {
        Resource(cloud.graph_resource().into())
    }
}

impl TryFrom<String> for Resource {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Resource::parse(&value)
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

validated_string!(
    /// An authority host URL: `https://host[:port]`, or plain http for loopback only.
    AuthorityHost,
    |v| check_authority_host(v)
);

impl HostName {
    /// `localhost`, `127.0.0.1` and `[::1]`: the names local callers use.
    pub fn defaults() -> Vec<HostName> {
        ["localhost", "127.0.0.1", "[::1]"]
            .into_iter()
            .map(|h| HostName(h.into()))
            .collect()
    }
}

/// Whether `v` is a GUID in the 8-4-4-4-12 form.
pub fn is_guid(v: &str) -> bool {
    let groups: Vec<&str> = v.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Checks a tenant GUID or verified domain. The value goes into the token
/// URL's path, so only DNS characters pass: no `/`, `..`, spaces or `%`.
pub fn check_tenant_id(v: &str) -> Result<(), String> {
    if is_guid(v) {
        return Ok(());
    }
    if ["common", "organizations", "consumers"].contains(&v.to_ascii_lowercase().as_str()) {
        return Err(format!(
            "\"{v}\" is a multi-tenant alias; app-only tokens need the customer's tenant GUID or verified domain"
        ));
    }
    let labels: Vec<&str> = v.split('.').collect();
    let ok = v.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.bytes().any(|b| b.is_ascii_alphabetic()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "\"{}\" is not a tenant GUID or domain name; expected e.g. \
             \"contoso.onmicrosoft.com\" or 00000000-0000-0000-0000-000000000000",
            v.escape_debug()
        ))
    }
}

/// The permission bits of a file mode written as an octal string
/// (`"0640"`, `"640"`). World-writable modes are refused (anyone could
/// replace the token a reader trusts), and so are setuid, setgid and
/// sticky bits (meaningless on a token file). Pure.
pub fn parse_file_mode(v: &str) -> Result<u32, String> {
    let digits = v.strip_prefix("0o").unwrap_or(v);
    let octal =
        (3..=4).contains(&digits.len()) && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
    let bits = octal
        .then(|| u32::from_str_radix(digits, 8).ok())
        .flatten()
        .ok_or_else(|| {
            format!(
                "\"{}\" is not an octal file mode; write it as a string such as \"0640\"",
                v.escape_debug()
            )
        })?;
    if bits > 0o777 {
        return Err(format!(
            "\"{v}\" sets setuid, setgid or sticky bits; a token file needs none (e.g. \"0640\")"
        ));
    }
    if bits & 0o002 != 0 {
        return Err(format!(
            "\"{v}\" is world-writable; anyone could replace the token; use \"0600\", or \"0640\" with group"
        ));
    }
    Ok(bits)
}

fn check_resource(v: &str) -> Result<(), String> {
    // The URL parser silently drops tabs and newlines; the value also goes
    // into the scope and log lines, so only visible ASCII passes.
    if v.is_empty() || v.len() > 256 || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "\"{}\" is not a resource URL: use at most 256 visible ASCII characters, e.g. https://graph.microsoft.com",
            v.escape_debug()
        ));
    }
    let url = url::Url::parse(v).map_err(|_| format!("\"{v}\" is not an absolute URL"))?;
    if url.scheme() != "https" || url.host_str().is_none() {
        return Err(format!(
            "\"{v}\" must be an https:// URL such as https://graph.microsoft.com"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() || v.ends_with("/.default") {
        return Err(format!(
            "\"{v}\" must be a bare resource such as https://graph.microsoft.com (no /.default, query or fragment)"
        ));
    }
    Ok(())
}

fn check_authority_host(v: &str) -> Result<(), String> {
    let url = url::Url::parse(v).map_err(|_| format!("\"{v}\" is not an absolute URL"))?;
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" if !host.is_empty() => {}
        "http" if loopback => {}
        "http" => {
            return Err(format!(
                "\"{v}\": plain http is allowed only for loopback hosts (a local test authority); use https"
            ))
        }
        _ => return Err(format!("\"{v}\" must be an https:// URL such as https://login.microsoftonline.com")),
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "\"{v}\" must be scheme and host only, e.g. https://login.microsoftonline.com"
        ));
    }
    Ok(())
}

/// A duration written like `"5m"`, `"30s"`, `"1h 30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ConfigDuration(pub Duration);

impl TryFrom<String> for ConfigDuration {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        humantime::parse_duration(&value)
            .map(ConfigDuration)
            .map_err(|e| {
                format!(
                    "\"{value}\" is not a duration ({e}); write e.g. \"30s\", \"5m\" or \"24h\""
                )
            })
    }
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_file_mode;

    #[test]
    fn file_modes_are_octal_strings_never_world_writable() {
        assert_eq!(parse_file_mode("0600"), Ok(0o600));
        assert_eq!(parse_file_mode("0640"), Ok(0o640));
        assert_eq!(parse_file_mode("440"), Ok(0o440));
        assert_eq!(parse_file_mode("0o660"), Ok(0o660));
        for refused in ["0666", "777", "0602"] {
            let e = parse_file_mode(refused).unwrap_err();
            assert!(e.contains("world-writable"), "{refused}: {e}");
        }
        for not_octal in [
            "777x",
            "0680",
            "",
            "64",
            "00640",
            "-640",
            "rw-r-----",
            "0x1a0",
        ] {
            let e = parse_file_mode(not_octal).unwrap_err();
            assert!(e.contains("not an octal file mode"), "{not_octal}: {e}");
        }
        for special in ["1777", "4640", "2750", "1640"] {
            let e = parse_file_mode(special).unwrap_err();
            assert!(e.contains("setuid"), "{special}: {e}");
        }
    }
}
