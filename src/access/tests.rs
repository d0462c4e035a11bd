use super::*;
use std::path::Path;

fn policy() -> Policy {
    let text = format!(
        "[app]\nclient_id = \"11111111-2222-3333-4444-555555555555\"\ncertificate = \"c.pem\"\n\
         [[tenants]]\nname = \"contoso\"\nid = \"contoso.onmicrosoft.com\"\n\
         [[accounts]]\nname = \"a\"\nsecret_sha256 = \"{}\"\ntenants = [\"*\"]\nunix_uids = [1001]\n\
         [[accounts]]\nname = \"b\"\nsecret_sha256 = \"{}\"\ntenants = [\"contoso\", \"fabrikam.com\"]\ndefault_tenant = \"contoso\"\n\
         resources = [\"https://graph.microsoft.com\", \"https://outlook.office365.com/\"]\n",
        secret::sha256_hex("secret-a"),
        secret::sha256_hex("secret-b").to_uppercase()
    );
    Policy::new(&Config::parse(&text, Path::new("t.toml")).unwrap())
}

fn id(policy: &Policy, secret: &str) -> AccountId {
    policy.authenticate(Some(secret), None).unwrap()
}

#[test]
fn secrets_map_to_their_accounts() {
    let p = policy();
    assert_eq!(p.account_name(id(&p, "secret-a")).as_str(), "a");
    // Upper-case hex in the configuration is the same digest.
    assert_eq!(p.account_name(id(&p, "secret-b")).as_str(), "b");
    assert_eq!(
        p.authenticate(Some("secret-c"), None),
        Err(AuthFailure::UnknownSecret)
    );
}

#[test]
fn an_account_with_two_hashes_accepts_both_secrets() {
    let text = format!(
        "[app]\nclient_id = \"11111111-2222-3333-4444-555555555555\"\ncertificate = \"c.pem\"\n\
         [[accounts]]\nname = \"rotating\"\nsecret_sha256 = [\"{}\", \"{}\"]\ntenants = [\"*\"]\n",
        secret::sha256_hex("old-secret"),
        secret::sha256_hex("new-secret"),
    );
    let p = Policy::new(&Config::parse(&text, Path::new("t.toml")).unwrap());
    for s in ["old-secret", "new-secret"] {
        assert_eq!(p.account_name(id(&p, s)).as_str(), "rotating");
    }
    assert_eq!(
        p.authenticate(Some("other"), None),
        Err(AuthFailure::UnknownSecret)
    );
}

#[test]
fn authentication_by_secret_else_by_peer_uid() {
    let p = policy();
    let a = id(&p, "secret-a");
    let b = id(&p, "secret-b");
    assert_eq!(p.authenticate(None, Some(1001)), Ok(a));
    assert_eq!(p.authenticate(Some(""), Some(1001)), Ok(a));
    assert_eq!(p.authenticate(Some("secret-b"), Some(1001)), Ok(b));
    assert_eq!(
        p.authenticate(Some("wrong"), Some(1001)),
        Err(AuthFailure::UnknownSecret)
    );
    assert_eq!(p.authenticate(Some("secret-b"), Some(5)), Ok(b));
    assert_eq!(p.authenticate(None, Some(5)), Err(AuthFailure::UnknownUid));
    assert_eq!(p.authenticate(None, None), Err(AuthFailure::Missing));
    assert_eq!(p.authenticate(Some(""), None), Err(AuthFailure::Missing));
}

#[test]
fn tenants_resolve_by_name_id_or_domain() {
    let p = policy();
    let a = id(&p, "secret-a");
    let t = p.resolve(a, Some("contoso"), None, None).unwrap();
    assert_eq!(t.tenant.id.as_str(), "contoso.onmicrosoft.com");
    assert_eq!(t.tenant_label(), "contoso");
    assert_eq!(t.resource.as_str(), "https://graph.microsoft.com");
    let t = p
        .resolve(a, Some("CONTOSO.onmicrosoft.com"), None, None)
        .unwrap();
    assert_eq!(t.tenant.name.as_ref().map(|n| n.as_str()), Some("contoso"));
    let t = p
        .resolve(a, Some("0a1b2c3d-0000-4000-8000-00000000000f"), None, None)
        .unwrap();
    assert_eq!(t.tenant.name, None);
    assert_eq!(t.tenant_label(), "0a1b2c3d-0000-4000-8000-00000000000f");
}

#[test]
fn a_missing_tenant_is_the_accounts_default() {
    let p = policy();
    let b = id(&p, "secret-b");
    let t = p.resolve(b, None, None, None).unwrap();
    assert_eq!(t.tenant_label(), "contoso");
    let a = id(&p, "secret-a");
    let message = p.resolve(a, None, None, None).unwrap_err().to_string();
    assert!(
        message.contains("pass client_id=<tenant> or set default_tenant for account \"a\""),
        "{message}"
    );
}

#[test]
fn bad_tenants_are_refused_before_any_upstream_call() {
    let p = policy();
    let a = id(&p, "secret-a");
    for bad in [
        "",
        "fabrikam",
        "../etc",
        "a b.com",
        "contoso.com/x",
        "contoso%2e.com",
        "common",
        "organizations",
        "x.com\n",
        &"a".repeat(300),
    ] {
        assert!(
            matches!(
                p.resolve(a, Some(bad), None, None),
                Err(RequestError::Tenant(_))
            ),
            "{bad:?}"
        );
    }
    let message = p
        .resolve(a, Some("evil\u{1b}[31m\nline"), None, None)
        .unwrap_err()
        .to_string();
    assert!(
        !message.contains('\u{1b}') && !message.contains('\n'),
        "{message}"
    );
}

#[test]
fn resources_are_validated_and_normalised() {
    let p = policy();
    let a = id(&p, "secret-a");
    assert_eq!(
        p.resolve(
            a,
            Some("contoso"),
            Some("https://graph.microsoft.com/"),
            None
        )
        .unwrap()
        .resource
        .as_str(),
        "https://graph.microsoft.com"
    );
    for bad in [
        "graph",
        "http://graph.microsoft.com",
        "https://graph.microsoft.com/.default",
        "https://x.com?a=b",
        "https://x.com#f",
        "https://x.com/\n",
        "https://x.com/a\tb",
        "https://x.com/a b",
        "https://gräph.com",
    ] {
        assert!(
            matches!(
                p.resolve(a, Some("contoso"), Some(bad), None),
                Err(RequestError::Resource(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn accounts_may_use_their_tenants_only() {
    let p = policy();
    let (a, b) = (id(&p, "secret-a"), id(&p, "secret-b"));
    let target = |t: &str| p.resolve(a, Some(t), None, None).unwrap();
    assert!(p.authorize(b, &target("contoso")).is_ok());
    assert!(p.authorize(b, &target("CONTOSO.onmicrosoft.com")).is_ok());
    assert!(p.authorize(b, &target("Fabrikam.com")).is_ok());
    let refused = p.authorize(b, &target("other.com")).unwrap_err();
    assert_eq!(refused.reason(), "forbidden_tenant");
    assert!(
        refused
            .to_string()
            .contains("account \"b\" may not use tenant other.com"),
        "{refused}"
    );
    assert!(p.authorize(a, &target("other.com")).is_ok());
}

#[test]
fn resources_per_account() {
    let p = policy();
    let (a, b) = (id(&p, "secret-a"), id(&p, "secret-b"));
    let target = |r: &str| p.resolve(a, Some("contoso"), Some(r), None).unwrap();
    assert!(p
        .authorize(a, &target("https://graph.microsoft.com"))
        .is_ok());
    let refused = p
        .authorize(a, &target("https://outlook.office365.com"))
        .unwrap_err();
    assert_eq!(refused.reason(), "forbidden_resource");
    assert!(p
        .authorize(b, &target("https://outlook.office365.com"))
        .is_ok());
    assert!(p
        .authorize(b, &target("https://management.azure.com"))
        .is_err());
}
