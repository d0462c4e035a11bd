//! Warm restart with `cache.state_file`, with the real binary: a restart
//! serves every tenant it served before without a request to Entra, and a
//! state file that cannot be used never fails a start.

use crate::common::{self, Daemon, Fixture, CLIENT_ID, TESTER_SECRET};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const TENANTS: usize = 120;

fn tenant(i: usize) -> String {
    format!("warm{i}.example.com")
}

fn config(f: &Fixture) -> PathBuf {
    let key = f.dir.path().join("state.key");
    if !key.exists() {
        let out = Command::new(env!("CARGO_BIN_EXE_tokenbroker"))
            .args(["cache-key", "new", "--out"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::create_dir_all(f.dir.path().join("state")).unwrap();
    let path = f.dir.path().join("warm.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\
             [app]\nclient_id = \"{CLIENT_ID}\"\nauthority_host = \"{}\"\n\
             certificate = \"app.crt\"\nprivate_key = \"app.key\"\nrequest_timeout = \"5s\"\n\
             max_concurrent_requests = 32\n\
             [cache]\nstate_file = \"state/cache.sealed\"\nstate_key_file = \"state.key\"\nstate_interval = \"1s\"\n\
             [[tenants]]\nname = \"configured\"\nid = \"{}\"\n\
             [[accounts]]\nname = \"tester\"\nsecret_sha256 = \"{}\"\ntenants = [\"*\"]\n\
             max_new_tenants_per_minute = 1000\n",
            f.sim.url(),
            tenant(0),
            common::sha256_hex(TESTER_SECRET),
        ),
    )
    .unwrap();
    path
}

async fn token(broker: &Daemon, tenant: &str) -> common::HttpAnswer {
    broker
        .get(
            &format!("/v1/token?tenant={tenant}"),
            &[("Authorization", &format!("Bearer {TESTER_SECRET}"))],
        )
        .await
}

/// Stops `broker` with SIGTERM; returns its log.
async fn stop(mut broker: Daemon) -> Vec<serde_json::Value> {
    broker.signal("-TERM");
    tokio::time::timeout(Duration::from_secs(20), broker.drain())
        .await
        .expect("the broker exits after SIGTERM")
}

fn state_path(f: &Fixture) -> PathBuf {
    f.dir.path().join("state/cache.sealed")
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_serves_every_tenant_with_no_request_to_entra() {
    let f = Fixture::new("").await;
    for i in 0..TENANTS {
        f.sim.consent(&tenant(i));
    }
    let path = config(&f);
    let broker = Daemon::spawn(&path).await;
    let mut first = Vec::new();
    for i in 0..TENANTS {
        let answer = token(&broker, &tenant(i)).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        first.push(answer.json()["access_token"].as_str().unwrap().to_owned());
    }
    let log = stop(broker).await;
    assert!(
        log.iter().any(|l| l["message"] == "state file written"),
        "{log:?}"
    );
    let state = state_path(&f);
    assert_eq!(mode(&state), 0o600);
    let bytes = std::fs::read(&state).unwrap();
    assert!(
        !String::from_utf8_lossy(&bytes).contains(&first[3][..40]),
        "tokens are sealed"
    );

    // The restart: every tenant is served from the file, none from Entra.
    let before = f.sim.total_requests();
    let mut broker = Daemon::spawn(&path).await;
    let restored = broker
        .logged(Duration::from_secs(1), |l| {
            l["message"] == "warm restart: tokens restored from the state file"
        })
        .await;
    let restored =
        restored.unwrap_or_else(|| panic!("no restore line:\n{}", broker.log.join("\n")));
    assert_eq!(restored["tokens"], TENANTS, "{restored}");
    for (i, expected) in first.iter().enumerate() {
        let answer = token(&broker, &tenant(i)).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.json()["access_token"], *expected);
    }
    assert_eq!(f.sim.total_requests(), before, "no upstream request");
    // Tenants known from the file are not new: an account's budget of new
    // tenants is not charged for them (the file also holds them).
    stop(broker).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_or_foreign_state_file_is_a_warning_not_a_failed_start() {
    let f = Fixture::new("").await;
    f.sim.consent(&tenant(0));
    let path = config(&f);
    let state = state_path(&f);
    let damaged: [(&str, &[u8]); 2] =
        [("not ours", b"[cache]\nnot a state file\n"), ("empty", b"")];
    for (what, bytes) in damaged {
        std::fs::write(&state, bytes).unwrap();
        let mut broker = Daemon::spawn(&path).await;
        let warning = broker
            .logged(Duration::from_secs(1), |l| {
                l["level"] == "WARN"
                    && l["state_file"]
                        .as_str()
                        .is_some_and(|p| p.ends_with("cache.sealed"))
            })
            .await;
        assert!(warning.is_some(), "{what}: no WARN naming the file");
        assert_eq!(token(&broker, &tenant(0)).await.status, 200, "{what}");
        stop(broker).await;
    }
    // The file written at that stop is valid; under another key it is foreign.
    let key = f.dir.path().join("state.key");
    let good_key = std::fs::read(&key).unwrap();
    std::fs::remove_file(&key).unwrap();
    config(&f);
    assert_ne!(std::fs::read(&key).unwrap(), good_key);
    let mut broker = Daemon::spawn(&path).await;
    let warning = broker
        .logged(Duration::from_secs(1), |l| {
            l["level"] == "WARN"
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("another key"))
        })
        .await;
    assert!(warning.is_some(), "foreign: {}", broker.log.join("\n"));
    assert_eq!(token(&broker, &tenant(0)).await.status, 200);
    stop(broker).await;
}
