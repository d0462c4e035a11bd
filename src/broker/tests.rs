use super::*;

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
