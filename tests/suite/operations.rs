//! Live operations: reload by SIGHUP (a real `tokenbroker serve`), by the
//! admin API and by a watched file; certificate rotation with fallback;
//! credential files replaced in place and by a symlink swap; the admin
//! socket, `tokenbroker status`, `refresh` and `reload`; forced refresh by
//! a rejected token's hash.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{sha256_hex, Fixture, Server, TESTER_SECRET};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const MAIL: &str = "tb_mail-secret";
const NEW: &str = "tb_new-account-secret";

fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

/// The daemon's configuration: two tenants; account "mail" may use both.
fn daemon_config(f: &Fixture, tenants: &str, accounts: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [app]\nclient_id = \"{}\"\nauthority_host = \"{}\"\ncertificate = \"app.crt\"\nprivate_key = \"app.key\"\n\
         {tenants}{accounts}",
        common::CLIENT_ID,
        f.sim.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_applies_a_new_configuration_while_callers_loop() {
    let f = Fixture::new("").await;
    let contoso = f.sim.consent("contoso.onmicrosoft.com");
    f.sim.consent("fabrikam.com");
    let path = f.dir.path().join("daemon.toml");
    let both = "[[tenants]]\nname = \"contoso\"\nid = \"contoso.onmicrosoft.com\"\n\
                [[tenants]]\nname = \"fabrikam\"\nid = \"fabrikam.com\"\n";
    let mail = |tenants: &str, resources: &str| {
        format!(
            "[[accounts]]\nname = \"mail\"\nsecret_sha256 = \"{}\"\ntenants = [{tenants}]\n{resources}",
            sha256_hex(MAIL)
        )
    };
    std::fs::write(
        &path,
        daemon_config(&f, both, &mail("\"contoso\", \"fabrikam\"", "")),
    )
    .unwrap();
    let mut daemon = common::Daemon::spawn(&path).await;
    let addr = daemon.addr;
    for tenant in ["contoso", "fabrikam.com"] {
        let answer = daemon
            .get(
                &format!("/v1/token?tenant={tenant}"),
                &[("Authorization", &bearer(MAIL))],
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    assert_eq!(f.sim.requests("contoso.onmicrosoft.com"), 1);

    // 50 callers loop on contoso for the whole reload.
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut callers = Vec::new();
    for _ in 0..50 {
        let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
        callers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                let answer = common::request(
                    stream,
                    "GET",
                    "/v1/token?tenant=contoso",
                    &[("Authorization", &bearer(MAIL))],
                )
                .await;
                if answer.status == 200 {
                    served.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // New: fabrikam removed, a new account, mail's ACL now also Outlook.
    std::fs::write(
        &path,
        daemon_config(
            &f,
            "[[tenants]]\nname = \"contoso\"\nid = \"contoso.onmicrosoft.com\"\n",
            &format!(
                "{}[[accounts]]\nname = \"new\"\nsecret_sha256 = \"{}\"\ntenants = [\"contoso\"]\n",
                mail(
                    "\"contoso\"",
                    "resources = [\"https://graph.microsoft.com\", \"https://outlook.office365.com\"]\n"
                ),
                sha256_hex(NEW)
            ),
        ),
    )
    .unwrap();
    daemon.signal("-HUP");
    let reloaded = daemon
        .wait_for(Duration::from_secs(10), |l| {
            l["message"] == "configuration reloaded"
                || l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("reload failed"))
        })
        .await
        .expect("a reload log line");
    assert_eq!(reloaded["message"], "configuration reloaded", "{reloaded}");
    // The new account works at once; the removed tenant is refused; the new ACL applies.
    let answer = daemon
        .get(
            "/v1/token?tenant=contoso",
            &[("Authorization", &bearer(NEW))],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answer = daemon
        .get(
            "/v1/token?tenant=fabrikam.com",
            &[("Authorization", &bearer(MAIL))],
        )
        .await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no caller saw an error");
    assert!(served.load(Ordering::Relaxed) > 50);
    // The untouched tenant's token was not fetched again.
    assert_eq!(f.sim.requests("contoso.onmicrosoft.com"), 1);
    // The changed ACL: mail may now have an Outlook token (one more request).
    let answer = daemon
        .get(
            "/v1/token?tenant=contoso&resource=https://outlook.office365.com",
            &[("Authorization", &bearer(MAIL))],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        common::claims(answer.json()["access_token"].as_str().unwrap())["tid"],
        contoso.as_str()
    );
    daemon.signal("-TERM");
    let log = daemon.drain().await;
    assert!(log
        .iter()
        .any(|l| l["message"] == "SIGHUP received; reloading"));
}

const TENANTS: &str = "[[tenants]]\nname = \"contoso\"\nid = \"contoso.onmicrosoft.com\"\n";

/// Runs the `tokenbroker` binary (off the async runtime).
async fn cli(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tokenbroker"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn metric(server: &Server, series: &str) -> f64 {
    server
        .metrics()
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_reload_changes_nothing_and_says_why() {
    let extra = format!("[server]\nadmin_socket = \"admin.sock\"\n{TENANTS}");
    let f = Fixture::new(&extra).await;
    f.sim.consent("contoso.onmicrosoft.com");
    let server = Server::start(&f, |_, _| {}).await;
    let socket = f.dir.path().join("admin.sock");
    let get = || server.token("contoso", TESTER_SECRET);
    assert_eq!(get().await.status, 200);
    let good = std::fs::read_to_string(&f.config_path).unwrap();
    common::write_credential(f.dir.path(), "other");
    let cases = [
        ("[app\nclient_id = 1\n".to_owned(), "expected"),
        (
            good.replace("private_key = \"app.key\"", "private_key = \"missing.key\""),
            "missing.key",
        ),
        (
            good.replace("private_key = \"app.key\"", "private_key = \"other.key\""),
            "does not match the certificate",
        ),
    ];
    for (i, (config, why)) in cases.iter().enumerate() {
        std::fs::write(&f.config_path, config).unwrap();
        let out = cli(vec![
            "reload".into(),
            "--admin-socket".into(),
            socket.display().to_string(),
        ])
        .await;
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(why),
            "{why}: {}",
            text(&out.stderr)
        );
        // The admin answer itself.
        let answer = common::admin(&socket, "POST", "/admin/reload").await;
        assert_eq!(answer.status, 400);
        assert_eq!(answer.json()["error"], "reload_failed");
        assert!(answer.json()["message"].as_str().unwrap().contains(why));
        // Still serving on the old state.
        assert_eq!(get().await.status, 200);
        assert_eq!(
            metric(
                &server,
                "tokenbroker_config_reloads_total{result=\"failure\"}"
            ),
            2.0 * (i as f64 + 1.0)
        );
        assert_eq!(
            metric(&server, "tokenbroker_config_last_reload_successful"),
            0.0
        );
    }
    // Without --admin-socket the command finds the socket in the file. One
    // the daemon refuses still reaches it, and the error says who refused.
    let by_file = || {
        cli(vec![
            "reload".into(),
            "--config".into(),
            f.config_path.display().to_string(),
        ])
    };
    std::fs::write(&f.config_path, &cases[1].0).unwrap();
    let out = by_file().await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let said = text(&out.stderr);
    assert!(
        said.contains("the daemon refused the new configuration") && said.contains(cases[1].1),
        "{said}"
    );
    // A file that is not TOML: the command cannot even find the socket.
    std::fs::write(&f.config_path, format!("{good}\n[server\n")).unwrap();
    let out = by_file().await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let said = text(&out.stderr);
    assert!(
        said.contains("cannot find the admin socket, so the daemon was not asked")
            && said.contains("line "),
        "{said}"
    );
    std::fs::write(&f.config_path, &good).unwrap();
    let out = cli(vec![
        "reload".into(),
        "--admin-socket".into(),
        socket.display().to_string(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        metric(
            &server,
            "tokenbroker_config_reloads_total{result=\"success\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&server, "tokenbroker_config_last_reload_successful"),
        1.0
    );

    // A key that needs a restart: the reload says so and keeps the old value.
    std::fs::write(
        &f.config_path,
        good.replace("[server]\n", "[server]\nmax_connections = 7\n"),
    )
    .unwrap();
    let answer = common::admin(&socket, "POST", "/admin/reload").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.json()["restart_needed"],
        serde_json::json!(["server.max_connections"])
    );
    assert_eq!(server.app.broker().config().server.max_connections, 1024);

    // Another client ID: the cached tokens belong to another app and are
    // all dropped (this authority knows only the first app, so none comes back).
    assert!(server.app.broker().cached_token_count() >= 1);
    std::fs::write(
        &f.config_path,
        good.replace(common::CLIENT_ID, "99999999-2222-3333-4444-555555555555"),
    )
    .unwrap();
    assert_eq!(
        common::admin(&socket, "POST", "/admin/reload").await.status,
        200
    );
    assert_eq!(server.app.broker().cached_token_count(), 0);
    // Back to the first app: fetched afresh.
    let before = f.sim.requests("contoso.onmicrosoft.com");
    std::fs::write(&f.config_path, &good).unwrap();
    assert_eq!(
        common::admin(&socket, "POST", "/admin/reload").await.status,
        200
    );
    assert_eq!(get().await.status, 200);
    assert!(f.sim.requests("contoso.onmicrosoft.com") > before);
    assert!(
        metric(
            &server,
            "tokenbroker_config_last_reload_success_timestamp_seconds"
        ) > 1.7e9
    );
    server.stop().await;
}

/// The 700027 refusals the simulator gave for `tenant`.
fn refusals_700027(f: &Fixture) -> usize {
    f.sim
        .refusals()
        .iter()
        .filter(|r| r.code == 700_027)
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_rotation_never_fails_a_caller() {
    let credential = |name: &str| {
        format!("[[app.credentials]]\ncertificate = \"{name}.crt\"\nprivate_key = \"{name}.key\"\n")
    };
    let extra = format!(
        "credential_rejection_memory = \"2s\"\n[server]\nadmin_socket = \"admin.sock\"\n{TENANTS}\
         [[tenants]]\nname = \"fabrikam\"\nid = \"fabrikam.com\"\n"
    );
    // A: the registered certificate (written by the fixture as app.*), old.
    let f = Fixture::with_credentials(&credential("app"), &extra).await;
    f.sim.consent("contoso.onmicrosoft.com");
    f.sim.consent("fabrikam.com");
    let server = Server::start(&f, |_, _| {}).await;
    let socket = f.dir.path().join("admin.sock");
    let get = |tenant: &'static str| server.token(tenant, TESTER_SECRET);
    for tenant in ["contoso", "fabrikam"] {
        assert_eq!(get(tenant).await.status, 200);
    }
    let a = common::thumbprint(&f.cert_der);

    // 1. Add B (newer, not yet uploaded): A keeps signing through fallback,
    //    with one AADSTS700027 per tenant however often tokens are refetched.
    let b_der = common::write_credential_from(f.dir.path(), "b", 0);
    let b = common::thumbprint(&b_der);
    f.write_config(&format!("{}{}", credential("b"), credential("app")), &extra);
    assert_eq!(
        common::admin(&socket, "POST", "/admin/reload").await.status,
        200
    );
    for _ in 0..3 {
        for tenant in ["contoso", "fabrikam"] {
            let answer =
                common::admin(&socket, "POST", &format!("/admin/tenants/{tenant}/refresh")).await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            assert_eq!(get(tenant).await.status, 200);
        }
    }
    assert_eq!(refusals_700027(&f), 2, "one per tenant");
    let status = common::admin(&socket, "GET", "/admin/status").await.json();
    let creds = status["credentials"].as_array().unwrap();
    assert_eq!(creds[0]["thumbprint"], b.as_str(), "newest first");
    assert_eq!(creds[0]["in_use"], false);
    assert_eq!(creds[0]["last_rejection"]["aadsts"], "AADSTS700027");
    assert_eq!(creds[1]["thumbprint"], a.as_str());
    assert_eq!(creds[1]["in_use"], true);
    assert!(
        metric(
            &server,
            &format!(
                "tokenbroker_credential_rejections_total{{aadsts=\"AADSTS700027\",credential=\"{b}\"}}"
            )
        ) >= 2.0
    );

    // 2. Upload B: once the remembered refusals run out, B signs.
    f.sim.register_certificate(&b_der).unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for tenant in ["contoso", "fabrikam"] {
        let answer =
            common::admin(&socket, "POST", &format!("/admin/tenants/{tenant}/refresh")).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    assert_eq!(refusals_700027(&f), 2, "B is registered now");
    let status = common::admin(&socket, "GET", "/admin/status").await.json();
    assert_eq!(status["credentials"][0]["in_use"], true, "{status}");

    // 3. Remove A: still served, and no tenant is fetched again because A left.
    let before = f.sim.total_requests();
    f.write_config(&credential("b"), &extra);
    assert_eq!(
        common::admin(&socket, "POST", "/admin/reload").await.status,
        200
    );
    for tenant in ["contoso", "fabrikam"] {
        assert_eq!(get(tenant).await.status, 200);
    }
    assert_eq!(f.sim.total_requests(), before);
    // A is kept as the last fallback for credential_rejection_memory, and
    // listed as such (retired), then goes.
    let status = common::admin(&socket, "GET", "/admin/status").await.json();
    let creds = status["credentials"].as_array().unwrap();
    assert_eq!(creds.len(), 2, "{status}");
    assert_eq!(
        (
            creds[1]["thumbprint"].as_str(),
            creds[1]["retired"].as_bool()
        ),
        (Some(a.as_str()), Some(true))
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let status = common::admin(&socket, "GET", "/admin/status").await.json();
    assert_eq!(status["credentials"].as_array().unwrap().len(), 1);
    let metrics = server.metrics().encode();
    assert!(!metrics.contains(&a), "A's expiry series left with A");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watched_configuration_is_reloaded_without_sighup() {
    let extra =
        format!("credential_check_interval = \"1s\"\n[server]\nwatch_config = true\n{TENANTS}");
    let f = Fixture::new(&extra).await;
    f.sim.consent("contoso.onmicrosoft.com");
    let server = Server::start(&f, |_, _| {}).await;
    common::daemon_watch(&server);
    let new = [("Authorization", format!("Bearer {NEW}"))];
    let headers: Vec<(&str, &str)> = new.iter().map(|(n, v)| (*n, v.as_str())).collect();
    assert_eq!(
        server
            .get("/v1/token?tenant=contoso", &headers)
            .await
            .status,
        401
    );
    let config = std::fs::read_to_string(&f.config_path).unwrap();
    std::fs::write(
        &f.config_path,
        format!(
            "{config}[[accounts]]\nname = \"new\"\nsecret_sha256 = [\"{}\", \"{}\"]\ntenants = [\"contoso\"]\n",
            sha256_hex("old-secret"),
            sha256_hex(NEW)
        ),
    )
    .unwrap();
    let mut status = 0;
    for _ in 0..60 {
        status = server
            .get("/v1/token?tenant=contoso", &headers)
            .await
            .status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status, 200,
        "the new account works within the check interval"
    );
    // Its other secret (the one being rotated out) works too.
    let old = format!("Bearer {}", "old-secret");
    assert_eq!(
        server
            .get("/v1/token?tenant=contoso", &[("Authorization", &old)])
            .await
            .status,
        200
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_callers_with_one_rejected_token_cause_one_refresh() {
    let f = Fixture::new(TENANTS).await;
    f.sim.consent("contoso.onmicrosoft.com");
    let server = Arc::new(Server::start(&f, |_, _| {}).await);
    let auth = format!("Bearer {TESTER_SECRET}");
    let first = server
        .get("/v1/token?tenant=contoso", &[("Authorization", &auth)])
        .await;
    let old = first.json()["access_token"].as_str().unwrap().to_owned();
    let hash = hex::encode_upper(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        old.as_bytes(),
    ));
    let before = f.sim.requests("contoso.onmicrosoft.com");
    f.sim.set_latency(Duration::from_millis(300));
    let mut callers = Vec::new();
    for _ in 0..100 {
        let (server, auth, hash) = (server.clone(), auth.clone(), hash.clone());
        callers.push(tokio::spawn(async move {
            server
                .get(
                    &format!("/v1/token?tenant=contoso&token_sha256_to_refresh={hash}"),
                    &[("Authorization", &auth)],
                )
                .await
        }));
    }
    let mut tokens = std::collections::HashSet::new();
    for caller in callers {
        let answer = caller.await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
        tokens.insert(answer.json()["access_token"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        f.sim.requests("contoso.onmicrosoft.com"),
        before + 1,
        "exactly one upstream request"
    );
    assert_eq!(tokens.len(), 1, "all got the same token");
    assert!(!tokens.contains(&old), "and it is a new one");
    // The old hash again: the cached token is already newer, nothing upstream.
    let again = server
        .get(
            &format!(
                "/v1/token?tenant=contoso&token_sha256_to_refresh={}",
                hash.to_lowercase()
            ),
            &[("Authorization", &auth)],
        )
        .await;
    assert!(tokens.contains(again.json()["access_token"].as_str().unwrap()));
    // The new token rejected at once: within forced_refresh_interval the
    // current token is answered, without another request.
    let new = tokens.iter().next().unwrap();
    let new_hash = hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        new.as_bytes(),
    ));
    let answer = server
        .get(
            &format!("/v1/token?tenant=contoso&token_sha256_to_refresh={new_hash}"),
            &[("Authorization", &auth)],
        )
        .await;
    assert_eq!(answer.json()["access_token"].as_str().unwrap(), new);
    assert_eq!(f.sim.requests("contoso.onmicrosoft.com"), before + 1);
    assert_eq!(
        metric(
            &server,
            "tokenbroker_forced_refreshes_total{trigger=\"token_hash\"}"
        ),
        1.0
    );
    let bad = server
        .get(
            "/v1/token?tenant=contoso&token_sha256_to_refresh=xyz",
            &[("Authorization", &auth)],
        )
        .await;
    assert_eq!(bad.status, 400);
}

/// A certificate pair in a Kubernetes-style secret volume: `dir/..data` is a
/// symlink to the current version directory, and `app.crt`/`app.key` are
/// symlinks through it.
fn secret_volume(dir: &Path, version: &str) -> Vec<u8> {
    let versioned = dir.join(version);
    std::fs::create_dir_all(&versioned).unwrap();
    let der = common::write_credential(&versioned, "app");
    // Swap `..data` atomically, as kubelet does: a new link renamed over it.
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(version, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for name in ["app.crt", "app.key"] {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
    der
}

#[tokio::test(flavor = "multi_thread")]
async fn credential_files_are_picked_up_when_replaced_and_garbage_is_ignored() {
    let f = Fixture::new("").await;
    f.sim.consent("contoso.onmicrosoft.com");
    let volume = f.dir.path().join("secret");
    std::fs::create_dir_all(&volume).unwrap();
    let v1 = secret_volume(&volume, "..2026_v1");
    f.sim.register_certificate(&v1).unwrap();
    let socket = f.dir.path().join("admin.sock");
    let path = f.dir.path().join("daemon.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_socket = \"admin.sock\"\n\
             [app]\nclient_id = \"{}\"\nauthority_host = \"{}\"\ncertificate = \"secret/app.crt\"\n\
             private_key = \"secret/app.key\"\ncredential_check_interval = \"1s\"\n{TENANTS}",
            common::CLIENT_ID,
            f.sim.url()
        ),
    )
    .unwrap();
    let mut daemon = common::Daemon::spawn(&path).await;
    let in_use = |status: &serde_json::Value| {
        status["credentials"][0]["thumbprint"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let status = common::admin(&socket, "GET", "/admin/status").await.json();
    assert_eq!(in_use(&status), common::thumbprint(&v1));

    // A Kubernetes secret update: the `..data` symlink swaps to a new version.
    // Only the new certificate is registered, so a refresh proves it signs.
    let v2 = secret_volume(&volume, "..2026_v2");
    f.sim.clear_certificates();
    f.sim.register_certificate(&v2).unwrap();
    let swapped = daemon
        .wait_for(Duration::from_secs(5), |l| {
            l["message"] == "credential files changed; reloaded them"
        })
        .await;
    assert!(swapped.is_some(), "{}", daemon.log.join("\n"));
    let refreshed = common::admin(&socket, "POST", "/admin/tenants/contoso/refresh").await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    assert_eq!(
        in_use(&common::admin(&socket, "GET", "/admin/status").await.json()),
        common::thumbprint(&v2)
    );

    // Half-written garbage in place: a warning, and the v2 credential keeps signing.
    std::fs::write(
        volume.join("..2026_v2/app.crt"),
        "-----BEGIN CERTIFICATE-----\nMIIB",
    )
    .unwrap();
    let warned = daemon
        .wait_for(Duration::from_secs(5), |l| {
            l["level"] == "WARN"
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("do not load; the old credentials keep signing"))
        })
        .await;
    assert!(warned.is_some(), "{}", daemon.log.join("\n"));
    let refreshed = common::admin(&socket, "POST", "/admin/tenants/contoso/refresh").await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);

    // The file rewritten in place with a whole new pair: picked up.
    let v3 = common::write_credential(&volume.join("..2026_v2"), "app");
    f.sim.clear_certificates();
    f.sim.register_certificate(&v3).unwrap();
    let rewritten = daemon
        .wait_for(Duration::from_secs(5), |l| {
            l["message"] == "credential files changed; reloaded them"
        })
        .await;
    assert!(rewritten.is_some(), "{}", daemon.log.join("\n"));
    let refreshed = common::admin(&socket, "POST", "/admin/tenants/contoso/refresh").await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    assert_eq!(
        in_use(&common::admin(&socket, "GET", "/admin/status").await.json()),
        common::thumbprint(&v3)
    );

    // Every admin action is logged with the caller's uid.
    let uid = common::own_uid();
    daemon.signal("-TERM");
    let log = daemon.drain().await;
    let refreshes: Vec<&serde_json::Value> = log
        .iter()
        .filter(|l| l["message"] == "admin: refresh")
        .collect();
    assert_eq!(refreshes.len(), 3);
    assert!(
        refreshes
            .iter()
            .all(|l| l["uid"] == uid && l["tenant"] == "contoso"),
        "{refreshes:?}"
    );
    assert!(!socket.exists(), "the admin socket is removed on exit");
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_consent_and_missing_permissions_and_refresh_clears_them() {
    let extra = "[server]\nadmin_socket = \"admin.sock\"\n\
        [[tenants]]\nname = \"contoso\"\nid = \"contoso.onmicrosoft.com\"\nrequired_permissions = [\"Mail.ReadWrite\"]\n\
        [[tenants]]\nname = \"fabrikam\"\nid = \"fabrikam.com\"\n\
        [[tenants]]\nname = \"tailspin\"\nid = \"tailspin.com\"\nrequired_permissions = [\"Mail.ReadWrite\", \"Mail.Send\"]\n";
    let f = Fixture::new(extra).await;
    f.sim.consent("contoso.onmicrosoft.com");
    f.sim.add_unconsented_tenant("fabrikam.com");
    f.sim.consent("tailspin.com");
    let server = Server::start(&f, |_, _| {}).await;
    let socket = f.dir.path().join("admin.sock");
    // Prefetch reaches all three.
    assert!(common::eventually(Duration::from_secs(10), || f.sim.total_requests() >= 3).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = |extra: &[&str]| {
        let mut args = vec![
            "status".to_owned(),
            "--admin-socket".to_owned(),
            socket.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        cli(args)
    };
    let out = status(&["--json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = |name: &str| {
        json["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no row {name}: {json}"))
            .clone()
    };
    assert_eq!(json["status"]["tenants"], 3);
    assert_eq!(json["status"]["credentials"][0]["kind"], "certificate");
    let contoso = row("contoso");
    assert_eq!(contoso["consent"], "granted");
    assert_eq!(contoso["configured"], true);
    assert_eq!(contoso["missing_permissions"], serde_json::json!([]));
    assert!(
        contoso["token"]["expires_on"].as_u64().unwrap()
            > contoso["token"]["acquired_at"].as_u64().unwrap()
    );
    assert!(
        contoso["token"]["refresh_at"].as_u64().unwrap()
            < contoso["token"]["expires_on"].as_u64().unwrap()
    );
    let fabrikam = row("fabrikam");
    assert_eq!(fabrikam["consent"], "missing");
    assert_eq!(fabrikam["token"], serde_json::Value::Null);
    assert_eq!(fabrikam["last_error"]["aadsts"], "AADSTS700016");
    assert_eq!(fabrikam["upstream"]["failure"], 1);
    let tailspin = row("tailspin");
    assert_eq!(tailspin["consent"], "granted");
    assert_eq!(
        tailspin["missing_permissions"],
        serde_json::json!(["Mail.Send"])
    );

    // The table, for people.
    let out = status(&[]).await;
    let table = text(&out.stdout);
    let line = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{table}"))
            .to_owned()
    };
    assert!(line("contoso").contains("granted"), "{table}");
    assert!(
        line("fabrikam").contains("missing") && line("fabrikam").contains("AADSTS700016"),
        "{table}"
    );
    assert!(line("tailspin").contains("Mail.Send"), "{table}");
    // One tenant.
    let out = status(&["--tenant", "tailspin", "--json"]).await;
    let one: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(one["tenants"].as_array().unwrap().len(), 1);

    // The customer grants Mail.Send; a refresh shows it at once.
    f.sim.set_roles(&["Mail.ReadWrite", "Mail.Send"]);
    let out = cli(vec![
        "refresh".into(),
        "--admin-socket".into(),
        socket.display().to_string(),
        "--tenant".into(),
        "tailspin".into(),
        "--json".into(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        rows["tenants"][0]["missing_permissions"],
        serde_json::json!([])
    );
    assert_eq!(
        metric(
            &server,
            "tokenbroker_forced_refreshes_total{trigger=\"admin\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &server,
            "tokenbroker_tenant_consent{app=\"default\",state=\"missing\",tenant=\"fabrikam\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &server,
            "tokenbroker_tenant_consent{app=\"default\",state=\"granted\",tenant=\"contoso\"}"
        ),
        1.0
    );

    // For people: what was done, then the rows as a table.
    let admin_cli = |args: &[&str]| {
        let mut all = vec!["--admin-socket".to_owned(), socket.display().to_string()];
        all.splice(0..0, args.iter().map(|a| (*a).to_owned()));
        cli(all)
    };
    let out = admin_cli(&["refresh", "--tenant", "tailspin"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.starts_with("refreshed tailspin")
            && said.contains("TENANT")
            && said.contains("granted"),
        "{said}"
    );
    // A tenant the daemon does not know is a usage error: exit 2.
    let out = admin_cli(&["refresh", "--tenant", "no-such-name"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    // Evicting a configured tenant drops its token and its expiry series
    // (a stale expiry would look like a failing refresh to the alert).
    let expiry =
        "tokenbroker_tenant_token_expiry_timestamp_seconds{app=\"default\",tenant=\"contoso\"}";
    assert!(server.metrics().encode().contains(expiry));
    let out = cli(vec![
        "evict".into(),
        "--admin-socket".into(),
        socket.display().to_string(),
        "--tenant".into(),
        "contoso".into(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!server.metrics().encode().contains(expiry));

    // Evict drops the token and the remembered refusal; nothing is prefetched.
    let before = f.sim.total_requests();
    let out = cli(vec![
        "evict".into(),
        "--admin-socket".into(),
        socket.display().to_string(),
        "--tenant".into(),
        "fabrikam".into(),
        "--json".into(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows["tenants"][0]["last_error"], serde_json::Value::Null);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.sim.total_requests(), before);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_is_for_allowed_uids_on_its_socket_only() {
    let f = Fixture::new(&format!(
        "[server]\nadmin_socket = \"admin.sock\"\n{TENANTS}"
    ))
    .await;
    f.sim.consent("contoso.onmicrosoft.com");
    let server = Server::start(&f, |_, _| {}).await;
    let socket = f.dir.path().join("admin.sock");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    // The TCP listener and the API socket have no admin routes.
    assert_eq!(server.get("/admin/status", &[]).await.status, 404);
    assert_eq!(server.get_unix("/admin/status", &[]).await.status, 404);
    // This process's own uid (the daemon's) may act.
    assert_eq!(
        common::admin(&socket, "GET", "/admin/status").await.status,
        200
    );
    let wrong = common::admin(&socket, "GET", "/admin/reload").await;
    assert_eq!(wrong.status, 405);
    // Another uid is refused, even when the file system lets it connect.
    if common::available(
        "root (to connect as uid 65534) and python3",
        common::is_root() && common::has_program("python3"),
    ) {
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        std::fs::set_permissions(f.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let answer = common::request_as_uid(&socket, 65534, "GET /admin/status").await;
        assert_eq!(answer.status, 403, "{}", answer.body);
        assert!(
            answer.body.contains("may not use the admin API"),
            "{}",
            answer.body
        );
    }
    // The CLI says what is wrong when no daemon listens.
    let out = cli(vec![
        "status".into(),
        "--admin-socket".into(),
        f.dir.path().join("none.sock").display().to_string(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no daemon is listening there"),
        "{}",
        text(&out.stderr)
    );
    server.stop().await;
}

#[test]
fn expired_certificates_are_skipped_while_another_is_usable() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, from_days: i64, to_days: i64| {
        let key =
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                .unwrap();
        let mut params = rcgen::CertificateParams::new(vec![format!("{name}.test")]).unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(from_days);
        params.not_after = now + time::Duration::days(to_days);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join(format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).unwrap();
    };
    write("expired", -400, -1);
    write("future", 10, 400);
    write("good", -1, 400);
    let config = |names: &[&str]| {
        let mut text = "[app]\nclient_id = \"11111111-2222-3333-4444-555555555555\"\n".to_owned();
        for name in names {
            text.push_str(&format!(
                "[[app.credentials]]\ncertificate = \"{name}.crt\"\nprivate_key = \"{name}.key\"\n"
            ));
        }
        tokenbroker::config::Config::parse(&text, &dir.path().join("t.toml")).unwrap()
    };
    let (set, warnings) = tokenbroker::daemon::load_credentials(
        &config(&["expired", "good", "future"]),
        &dir.path().join("t.toml"),
    )
    .unwrap();
    assert_eq!(set[0].all().len(), 1);
    let warnings: Vec<&String> = warnings.iter().filter(|w| w.contains("skipped")).collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].contains("app.credentials[0]") && warnings[0].contains("expired"),
        "{warnings:?}"
    );
    assert!(
        warnings[1].contains("app.credentials[2]") && warnings[1].contains("not valid before"),
        "{warnings:?}"
    );
    // None usable: a configuration error that names the certificate.
    let error = tokenbroker::daemon::load_credentials(
        &config(&["expired", "future"]),
        &dir.path().join("t.toml"),
    )
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("expired.crt") && error.contains("expired at"),
        "{error}"
    );
}

/// `watch_config` applies a file only once two reads one interval apart
/// agree: a file caught half-written is never applied (no failed reload),
/// and a change it cannot read (too large) is counted once, while the
/// configuration in force keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_watched_configuration_is_applied_only_once_it_reads_the_same_twice() {
    let extra =
        format!("credential_check_interval = \"1s\"\n[server]\nwatch_config = true\n{TENANTS}");
    let f = Fixture::new(&extra).await;
    f.sim.consent("contoso.onmicrosoft.com");
    let server = Server::start(&f, |_, _| {}).await;
    common::daemon_watch(&server);
    // The watch takes its first look at the file as it starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let failures = |server: &Server| {
        server
            .metrics()
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix("tokenbroker_config_reloads_total{result=\"failure\"} "))
            .map_or(0, |v| v.trim().parse::<u64>().unwrap())
    };
    let config = std::fs::read_to_string(&f.config_path).unwrap();
    let whole = format!(
        "{config}[[accounts]]\nname = \"new\"\nsecret_sha256 = \"{}\"\ntenants = [\"contoso\"]\n",
        sha256_hex(NEW)
    );
    // Half of the new file, read by the watch at least once...
    std::fs::write(&f.config_path, &whole[..config.len() + 20]).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // ...then the whole of it.
    std::fs::write(&f.config_path, &whole).unwrap();
    let bearer = format!("Bearer {NEW}");
    let served = common::eventually(Duration::from_secs(8), || {
        server
            .app
            .broker()
            .config()
            .accounts
            .iter()
            .any(|a| a.name.as_str() == "new")
    })
    .await;
    assert!(served, "the whole file is applied");
    assert_eq!(
        server
            .get("/v1/token?tenant=contoso", &[("Authorization", &bearer)])
            .await
            .status,
        200
    );
    assert_eq!(
        failures(&server),
        0,
        "the half-written file was never applied"
    );

    // Too large to be a configuration: counted once, nothing changes.
    std::fs::write(&f.config_path, vec![b'#'; 2 << 20]).unwrap();
    assert!(common::eventually(Duration::from_secs(8), || failures(&server) == 1).await);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(failures(&server), 1, "reported once, not every interval");
    assert_eq!(
        server
            .get("/v1/token?tenant=contoso", &[("Authorization", &bearer)])
            .await
            .status,
        200
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_certificate_entra_refuses_never_takes_a_tenant_down() {
    let f = Fixture::new(&format!(
        "credential_check_interval = \"1s\"\n[server]\nadmin_socket = \"admin.sock\"\n{TENANTS}\
         [[tenants]]\nname = \"fabrikam\"\nid = \"fabrikam.com\"\n"
    ))
    .await;
    f.sim.consent("contoso.onmicrosoft.com");
    f.sim.consent("fabrikam.com");
    let socket = f.dir.path().join("admin.sock");
    let server = Server::start(&f, |_, _| {}).await;
    common::daemon_watch(&server);
    let old = common::thumbprint(&f.cert_der);

    // Callers all along.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut callers = Vec::new();
    for i in 0..4 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let addr = server.addr;
        let tenant = ["contoso", "fabrikam"][i % 2];
        callers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                let answer = common::request(
                    stream,
                    "GET",
                    &format!("/v1/token?tenant={tenant}"),
                    &[(
                        "Authorization",
                        &format!("Bearer {}", common::TESTER_SECRET),
                    )],
                )
                .await;
                let counter = if answer.status == 200 { &ok } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }

    // `cert new --force` into the watched files: a certificate nobody
    // uploaded to the app registration.
    let new = common::thumbprint(&common::write_credential(f.dir.path(), "app"));
    let status = || async { common::admin(&socket, "GET", "/admin/status").await.json() };
    let mut swapped = false;
    for _ in 0..100 {
        if status().await["credentials"][0]["thumbprint"] == new.as_str() {
            swapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(swapped, "the watch did not load the new files");
    // Every tenant's token is fetched again: Entra refuses the new
    // certificate, the one it replaced signs.
    for _ in 0..3 {
        for tenant in ["contoso", "fabrikam"] {
            let answer =
                common::admin(&socket, "POST", &format!("/admin/tenants/{tenant}/refresh")).await;
            assert_eq!(answer.status, 200, "{}", answer.body);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no caller saw an error");
    assert!(ok.load(Ordering::Relaxed) > 20);
    assert!(
        refusals_700027(&f) >= 2,
        "Entra refused the new certificate"
    );

    // Both are in the status: the new one (refused) and the one it replaced.
    let status = status().await;
    let creds = status["credentials"].as_array().unwrap();
    assert_eq!(creds.len(), 2, "{status}");
    assert_eq!(creds[0]["thumbprint"], new.as_str());
    assert_eq!(creds[0]["retired"], false);
    assert_eq!(creds[0]["last_rejection"]["aadsts"], "AADSTS700027");
    assert_eq!(creds[1]["thumbprint"], old.as_str());
    assert_eq!(creds[1]["retired"], true);
    assert_eq!(creds[1]["in_use"], true);
    assert!(
        metric(
            &server,
            &format!(
                "tokenbroker_credential_rejections_total{{aadsts=\"AADSTS700027\",credential=\"{new}\"}}"
            )
        ) >= 2.0
    );
    server.stop().await;
}
