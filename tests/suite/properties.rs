//! Properties over generated inputs: any configuration `check` accepts,
//! `serve` starts on; any tenant a request parser accepts reaches the
//! token URL as the same id.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use tokenbroker::config::Config;

/// One throw-away certificate and key (PEM), made once.
fn credential_pem() -> &'static (String, String) {
    static PEM: OnceLock<(String, String)> = OnceLock::new();
    PEM.get_or_init(|| {
        let key =
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                .unwrap();
        let cert = rcgen::CertificateParams::new(vec!["prop.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    })
}

/// Mostly durations inside every key's bounds, sometimes far outside
/// (so both refusals and starts are exercised).
fn duration() -> impl Strategy<Value = &'static str> {
    duration_in(&["1s", "5s", "30s", "1m"])
}

fn duration_in(valid: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    prop_oneof![
        15 => prop::sample::select(valid),
        1 => prop::sample::select(vec![
            "0s", "1ms", "100ms", "500ms", "5m", "59m", "1h", "2h", "25h", "31days",
            "2000y", "300000000000y",
        ]),
    ]
}

fn number(low: u64, high: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        15 => low..=high,
        1 => prop_oneof![
            0u64..4,
            1u64..100_000,
            Just(65_536u64),
            Just(65_537u64),
            Just(10_000_000u64),
            Just(i64::MAX as u64),
        ],
    ]
}

prop_compose! {
    fn config_text()(
        max_connections in number(1, 65_536),
        max_socket_connections in number(1, 65_536),
        max_header_bytes in number(1024, 1 << 20),
        max_query_bytes in number(256, 65_536),
        max_entries in number(1, 10_000_000),
        max_concurrent in number(1, 1024),
        header_read_timeout in duration(),
        idle_timeout in duration(),
        shutdown_timeout in duration(),
        connect_timeout in duration(),
        request_timeout in duration(),
        check_interval in duration(),
        rejection_memory in duration(),
        min_remaining in duration(),
        keep_warm in duration_in(&["1m", "1h", "24h", "30days"]),
        negative_ttl in duration(),
        load_timeout in duration(),
        forced_refresh in duration(),
    ) -> String {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nmax_connections = {max_connections}\n\
             max_socket_connections = {max_socket_connections}\nmax_header_bytes = {max_header_bytes}\n\
             max_query_bytes = {max_query_bytes}\nheader_read_timeout = \"{header_read_timeout}\"\n\
             idle_timeout = \"{idle_timeout}\"\nshutdown_timeout = \"{shutdown_timeout}\"\n\
             [app]\nclient_id = \"11111111-2222-3333-4444-555555555555\"\n\
             authority_host = \"http://127.0.0.1:9\"\ncertificate = \"c.pem\"\n\
             connect_timeout = \"{connect_timeout}\"\nrequest_timeout = \"{request_timeout}\"\n\
             max_concurrent_requests = {max_concurrent}\ncredential_check_interval = \"{check_interval}\"\n\
             credential_rejection_memory = \"{rejection_memory}\"\n\
             [cache]\nmin_remaining = \"{min_remaining}\"\nkeep_warm = \"{keep_warm}\"\n\
             negative_ttl = \"{negative_ttl}\"\nmax_entries = {max_entries}\nload_timeout = \"{load_timeout}\"\n\
             forced_refresh_interval = \"{forced_refresh}\"\n"
        )
    }
}

#[test]
fn generated_configurations_both_start_and_are_refused() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..200 {
        let text = config_text().new_tree(&mut runner).unwrap().current();
        match Config::parse(&text, Path::new("t.toml")) {
            Ok(_) => accepted += 1,
            Err(_) => refused += 1,
        }
    }
    // The generator is worth running only if it exercises both sides.
    assert!(
        accepted >= 20 && refused >= 20,
        "{accepted} accepted, {refused} refused"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn any_configuration_check_accepts_serve_starts_on(text in config_text()) {
        let path = Path::new("/tmp/tokenbroker-prop/tokenbroker.toml");
        let Ok(config) = Config::parse(&text, path) else {
            // Refused with exit 2: nothing to start.
            return Ok(());
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let (cert, key) = credential_pem();
            let credential = tokenbroker::credentials::Credential::from_pem(
                cert.as_bytes(),
                key.as_bytes(),
                std::time::SystemTime::now(),
            )
            .unwrap()
            .credential;
            let listeners = tokenbroker::server::Listeners::bind(&config.server).await.unwrap();
            let options = tokenbroker::daemon::Options::from_config(&config);
            let app = tokenbroker::daemon::start(
                Arc::new(config),
                None,
                vec![tokenbroker::credentials::CredentialSet::single(credential)],
                options,
            )
            .await
            .unwrap();
            let addr = listeners.local_addr().unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(tokenbroker::server::run(app, listeners, async {
                let _ = stopped.await;
            }));
            // It answers, then stops.
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.unwrap();
            assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
            let _ = stop.send(());
            server.await.unwrap();
        });
    }

    #[test]
    fn an_accepted_tenant_reaches_the_token_url_unchanged(
        tenant in prop_oneof![
            "[a-z0-9-]{1,20}(\\.[a-z0-9-]{1,20}){1,3}",
            "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            any::<String>(),
            "[a-zA-Z0-9./%:@?#&= -]{0,40}",
        ]
    ) {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("tenant", &tenant)
            .finish();
        let Ok(asked) = tokenbroker::server::query::token_query(&query, false, 4096) else {
            return Ok(());
        };
        prop_assert_eq!(asked.tenant.as_deref(), Some(tenant.as_str()));
        let config = Config::parse(
            "[app]\nclient_id = \"11111111-2222-3333-4444-555555555555\"\ncertificate = \"c.pem\"\n",
            Path::new("t.toml"),
        )
        .unwrap();
        let policy = tokenbroker::access::Policy::new(&config);
        let Ok(target) = policy.target(&tenant, None, None) else {
            return Ok(());
        };
        prop_assert_eq!(target.tenant.id.as_str(), tenant.as_str());
        let endpoint = tokenbroker::cloud::token_endpoint("https://login.microsoftonline.com", target.tenant.id.as_str());
        let url = url::Url::parse(&endpoint).unwrap();
        let segments: Vec<&str> = url.path_segments().unwrap().collect();
        prop_assert_eq!(segments, vec![tenant.as_str(), "oauth2", "v2.0", "token"]);
    }
}

/// A spelling of `segment` a client might send: each character as it is,
/// percent-encoded (either hex case), and the whole as an OData key
/// (`prev('x')`) when it follows another segment.
fn spell(segment: &str, encode: &[bool], upper: bool) -> String {
    let mut out = String::new();
    for (i, c) in segment.chars().enumerate() {
        let plain = c.is_ascii_alphanumeric() || "-._~@$".contains(c);
        if plain && !encode.get(i).copied().unwrap_or(false) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&if upper {
                    format!("%{b:02X}")
                } else {
                    format!("%{b:02x}")
                });
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// What the gateway forwards parses to the path it matched.
    #[test]
    fn a_normalised_graph_path_survives_normalising_again(
        raw in prop_oneof![
            any::<String>(),
            "(/[a-zA-Z0-9@.%'()$=_\\\\-]{0,12}){1,6}",
            "(/(users|me|\\.|\\.\\.|%2[eEfF]|%5[cC]|%[0-9a-fA-F]{2}|users\\('[a-z@.%']{0,10}'\\)|[a-z]{1,6})){1,6}",
        ]
    ) {
        use tokenbroker::gateway::path::GraphPath;
        if let Ok(path) = GraphPath::parse(&raw) {
            let again = GraphPath::parse(path.encoded());
            prop_assert_eq!(again.as_ref(), Ok(&path), "{:?} -> {:?}", raw, path.encoded());
        }
    }

    /// No spelling turns a denied path into an allowed one: every way a
    /// client can write the same segments gets the same verdict.
    #[test]
    fn every_spelling_of_a_path_gets_the_same_verdict(
        segments in prop::collection::vec(
            prop_oneof![
                Just("users".to_owned()),
                Just("messages".to_owned()),
                Just("mailFolders".to_owned()),
                Just("$value".to_owned()),
                Just("alice@contoso.com".to_owned()),
                Just("Alice@Contoso.com".to_owned()),
                Just("bob@contoso.com".to_owned()),
                "[a-zA-Z0-9 @.=+!$&;:,-]{1,12}",
                "\\PC{1,6}",
            ],
            1..6,
        ),
        encode in prop::collection::vec(any::<bool>(), 0..40),
        upper in any::<bool>(),
        odata in any::<bool>(),
        method in prop::sample::select(vec!["GET", "POST", "get", "DELETE"]),
    ) {
        use tokenbroker::gateway::path::GraphPath;
        use tokenbroker::gateway::rules::{check, Mailboxes, Pattern, Rule, Unknown, Verdict};
        let rules = [
            Rule {
                methods: vec!["GET".into()],
                paths: vec![
                    Pattern::parse("/users/{mailbox}/messages/**").unwrap(),
                    Pattern::parse("/users/{mailbox}/mailFolders/*").unwrap(),
                ],
                mailboxes: Mailboxes::new(&["alice@contoso.com".to_owned()]),
            },
        ];
        let canonical: String = segments.iter().map(|s| format!("/{}", spell(s, &[], false))).collect();
        let Ok(reference) = GraphPath::parse(&canonical) else {
            return Ok(());
        };
        let expected = check(&rules, method, &reference, &Unknown);
        // Another spelling of the same segments.
        let mut spelled = String::new();
        for (i, s) in segments.iter().enumerate() {
            let body = spell(s, &encode, upper);
            // The key form needs a plain name before it and a plain key.
            let plain = |x: &str| !x.contains(['(', ')', '\'']);
            if odata && i == 1 && plain(s) && plain(&segments[0]) {
                spelled.push_str(&format!("('{body}')"));
            } else {
                spelled.push('/');
                spelled.push_str(&body);
            }
        }
        let path = GraphPath::parse(&spelled).unwrap();
        prop_assert_eq!(path.segments(), reference.segments(), "{}", spelled);
        prop_assert_eq!(check(&rules, method, &path, &Unknown), expected.clone());
        if expected == Verdict::Allowed {
            prop_assert!(segments[1].eq_ignore_ascii_case("alice@contoso.com"));
        }
    }
}
