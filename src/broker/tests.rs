use super::apply::keep_restart_only;
use super::*;
use std::time::Duration;

fn parse(text: &str) -> Config {
    Config::parse(
        &format!(
            "[app]\nclient_id = \"11111111-2222-3333-4444-555555555555\"\ncertificate = \"c.pem\"\n{text}"
        ),
        Path::new("/etc/tokenbroker/t.toml"),
    )
    .unwrap()
}

#[test]
fn keys_that_need_a_restart_keep_their_old_value_and_are_named() {
    let old = parse(
        "[server]\nlisten = \"127.0.0.1:1000\"\nmax_query_bytes = 300\n[cache]\nmax_entries = 10\n",
    );
    let mut new = parse(
        "[server]\nlisten = \"127.0.0.1:2000\"\nmax_query_bytes = 400\nmax_connections = 5\n\
         [cache]\nmax_entries = 20\nmin_remaining = \"10m\"\n",
    );
    let changed = keep_restart_only(&old, &mut new);
    assert_eq!(
        changed,
        [
            "server.listen",
            "server.max_connections",
            "cache.max_entries"
        ]
    );
    assert_eq!(new.server.listen, old.server.listen);
    assert_eq!(new.server.max_connections, old.server.max_connections);
    assert_eq!(new.cache.max_entries, 10);
    // What applies live is left as the new file says.
    assert_eq!(new.server.max_query_bytes, 400);
    assert_eq!(new.cache.min_remaining.0.as_secs(), 600);
    assert!(keep_restart_only(&old.clone(), &mut old.clone()).is_empty());
}

/// A broker on `config_text`, with a throw-away credential, its
/// configuration read from `path` on reload.
fn broker(config_text: &str, path: Option<&Path>) -> Broker {
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    let cert = rcgen::CertificateParams::new(vec!["unit.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let loaded = crate::credentials::Credential::from_pem(
        cert.pem().as_bytes(),
        key.serialize_pem().as_bytes(),
        std::time::SystemTime::now(),
    )
    .unwrap();
    let credentials = Arc::new(CredentialSet::new(
        vec![loaded.credential],
        Vec::new(),
        None,
        Duration::from_secs(60),
    ));
    let broker = Broker::new(
        Arc::new(parse(config_text)),
        vec![credentials],
        Arc::new(crate::clock::SystemClock),
        Arc::new(NoObserver),
    )
    .unwrap();
    match path {
        Some(path) => broker.with_config_path(path),
        None => broker,
    }
}

#[tokio::test]
async fn a_reload_needs_a_file_and_a_bad_one_changes_nothing() {
    let tenants = "[[tenants]]\nname = \"contoso\"\nid = \"contoso.com\"\n";
    let in_memory = broker(tenants, None);
    assert!(matches!(in_memory.reload().await, Err(ReloadError::NoFile)));
    assert!(!ReloadError::NoFile.is_configuration());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    std::fs::write(&path, "[app]\nclient_id = \"not a guid\"\n").unwrap();
    let broker = broker(tenants, Some(&path));
    let error = broker.reload().await.unwrap_err();
    assert!(error.is_configuration());
    assert!(error.to_string().contains("t.toml"), "{error}");
    // The state in force is the one it had.
    assert_eq!(broker.config().tenants.len(), 1);
    assert_eq!(broker.config().tenants[0].name.as_str(), "contoso");
}

#[test]
fn refusals_are_named_by_the_broker() {
    use crate::access::RequestError;
    use crate::cache::CacheError;
    let tenant = crate::config::TenantId::try_from("contoso.com".to_owned()).unwrap();
    let cases: Vec<(TokenError, Refusal, &str)> = vec![
        (
            TokenError::BadRequest(RequestError::Tenant("x".into())),
            Refusal::BadRequest,
            "invalid_request",
        ),
        (
            TokenError::NewTenantsLimited {
                account: "a".into(),
                retry_after: Duration::from_secs(7),
            },
            Refusal::TooManyNewTenants {
                retry_after: Duration::from_secs(7),
            },
            "too_many_new_tenants",
        ),
        (
            TokenError::Unavailable(CacheError::Load(AcquireError::Throttled {
                tenant: "contoso.com".into(),
                retry_after: Duration::from_secs(30),
                entra: None,
            })),
            Refusal::Throttled {
                retry_after: Duration::from_secs(30),
            },
            "throttled",
        ),
        (
            TokenError::Unavailable(CacheError::Load(AcquireError::Timeout {
                tenant: "contoso.com".into(),
                after: Duration::from_secs(1),
            })),
            Refusal::Timeout,
            "entra_timeout",
        ),
        (
            TokenError::Unavailable(CacheError::Deadline {
                tenant: tenant.clone(),
                after: Duration::from_secs(20),
            }),
            Refusal::Timeout,
            "entra_timeout",
        ),
        (
            TokenError::Unavailable(CacheError::Abandoned { tenant }),
            Refusal::Unavailable {
                retry_after: crate::cache::schedule::TRANSIENT_HOLD,
            },
            "entra_unavailable",
        ),
    ];
    for (error, refusal, code) in cases {
        assert_eq!(error.refusal(), refusal, "{error}");
        assert_eq!(error.code(), code, "{error}");
        assert!(error.entra().is_none());
    }
}
