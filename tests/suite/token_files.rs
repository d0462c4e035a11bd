//! Token files (`[[token_files]]`): a reader never sees a partial or
//! expired token while forced refreshes replace it; mode, group and the
//! JSON format are as configured; `check` refuses a directory that is not
//! there; a write that fails at run time is counted and shown, and the
//! daemon goes on (and writes the file once it can).

use crate::common::{self, Fixture, Server, GRAPH};
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TENANT: &str = "[[tenants]]\nname = \"contoso\"\nid = \"contoso.onmicrosoft.com\"\n";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The current user's primary group: (name, gid), so the test works as non-root.
fn primary_group() -> (String, u32) {
    let id = |flag: &str| {
        let out = std::process::Command::new("id").arg(flag).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    (id("-gn"), id("-g").parse().unwrap())
}

/// What a read of a `token` file must be: a whole JWT, not expired.
fn check_token(bytes: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!("not a whole JWT ({} bytes)", bytes.len()));
    }
    let exp = common::claims(text)["exp"].as_u64().ok_or("no exp")?;
    if exp <= now() {
        return Err(format!("expired at {exp}"));
    }
    Ok(text.to_owned())
}

fn metric(server: &Server, series: &str) -> f64 {
    server
        .metrics()
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reader_never_sees_a_partial_or_expired_token_while_refreshes_replace_it() {
    let (group, gid) = primary_group();
    let f = Fixture::new(&format!(
        "{TENANT}\
         [[token_files]]\npath = \"files/contoso.token\"\ntenant = \"contoso\"\nmode = \"0640\"\ngroup = \"{group}\"\n\
         [[token_files]]\npath = \"files/contoso.json\"\ntenant = \"contoso.onmicrosoft.com\"\nformat = \"json\"\n"
    ))
    .await;
    f.sim.consent("contoso.onmicrosoft.com");
    let files = f.dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let token_path = files.join("contoso.token");
    let json_path = files.join("contoso.json");
    let server = Server::start(&f, |_, _| {}).await;
    let writer = tokenbroker::daemon::spawn_token_files(Arc::clone(&server.app));
    assert!(
        common::eventually(Duration::from_secs(10), || token_path.exists()
            && json_path.exists())
        .await,
        "the files are written at start"
    );

    // Mode and group as configured; the owner is this process's user.
    let meta = std::fs::metadata(&token_path).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!(meta.gid(), gid);
    assert_eq!(meta.uid(), common::own_uid());
    let json_meta = std::fs::metadata(&json_path).unwrap();
    assert_eq!(json_meta.mode() & 0o7777, 0o600, "the default mode");

    // The reader: as fast as it can, no sleeps, on a blocking thread.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, path) = (Arc::clone(&stop), token_path.clone());
        tokio::task::spawn_blocking(move || {
            let mut seen = HashSet::new();
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) || reads < 500 {
                let bytes = std::fs::read(&path).expect("the file is always there");
                reads += 1;
                match check_token(&bytes) {
                    Ok(token) => {
                        seen.insert(token);
                    }
                    Err(e) => return Err(format!("read {reads}: {e}")),
                }
            }
            Ok((reads, seen))
        })
    };

    // Forced refreshes replace the token; each new one reaches the file.
    let mut written = HashSet::new();
    written.insert(std::fs::read_to_string(&token_path).unwrap());
    for round in 0..4 {
        let before = std::fs::read_to_string(&token_path).unwrap();
        server
            .app
            .broker()
            .refresh("contoso", None, None)
            .await
            .expect("a forced refresh");
        let changed = common::eventually(Duration::from_secs(3), || {
            std::fs::read_to_string(&token_path).is_ok_and(|t| t != before)
        })
        .await;
        // Within the wake on the cache's change, well before the 5 s poll.
        assert!(changed, "round {round}: the new token reached the file");
        written.insert(std::fs::read_to_string(&token_path).unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    let (reads, seen) = reader.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
    assert!(reads >= 500, "{reads} reads");
    assert!(
        seen.len() >= 2,
        "the reader saw {} tokens in {reads} reads",
        seen.len()
    );
    assert_eq!(written.len(), 5, "each refresh made a new token");

    // The JSON file: the same token, with its expiry, tenant and resource.
    let token = std::fs::read_to_string(&token_path).unwrap();
    assert!(
        common::eventually(Duration::from_secs(3), || {
            std::fs::read(&json_path)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .is_some_and(|v| v["access_token"] == token.as_str())
        })
        .await
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    assert_eq!(json.as_object().unwrap().len(), 4, "{json}");
    assert_eq!(json["tenant_id"], "contoso.onmicrosoft.com");
    assert_eq!(json["resource"], GRAPH);
    // The broker counts `expires_in` from when the answer arrived, the
    // authority its `exp` from when it signed: a second may lie between.
    let expires_on = json["expires_on"].as_u64().unwrap();
    let exp = common::claims(&token)["exp"].as_u64().unwrap();
    assert!(expires_on.abs_diff(exp) <= 1, "{expires_on} against {exp}");

    // The status lists both, written; the token is in no answer.
    let status = serde_json::to_value(server.app.broker().status()).unwrap();
    let listed = status["token_files"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{status}");
    assert_eq!(listed[0]["path"], token_path.display().to_string());
    assert_eq!(listed[0]["tenant"], "contoso");
    assert_eq!(listed[1]["format"], "json");
    assert!(listed
        .iter()
        .all(|f| f["last_error"].is_null() && f["last_written_at"].is_u64()));
    assert!(!status.to_string().contains(&token));
    // Counted just after the file is in place, so the last write's count
    // may trail the file the test saw.
    let successes = "tokenbroker_token_file_writes_total{result=\"success\"}";
    assert!(
        common::eventually(Duration::from_secs(3), || metric(&server, successes)
            >= 10.0)
        .await,
        "{} successful writes",
        metric(&server, successes)
    );
    assert_eq!(
        metric(
            &server,
            "tokenbroker_token_file_writes_total{result=\"failure\"}"
        ),
        0.0
    );
    writer.abort();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_write_is_counted_and_shown_and_the_daemon_goes_on() {
    let f = Fixture::new(&format!(
        "{TENANT}[[token_files]]\npath = \"missing/contoso.token\"\ntenant = \"contoso\"\n"
    ))
    .await;
    f.sim.consent("contoso.onmicrosoft.com");
    let server = Server::start(&f, |_, _| {}).await;
    let writer = tokenbroker::daemon::spawn_token_files(Arc::clone(&server.app));
    let failures = "tokenbroker_token_file_writes_total{result=\"failure\"}";
    assert!(
        common::eventually(Duration::from_secs(10), || metric(&server, failures) >= 1.0).await,
        "the failed write is counted"
    );
    let status = serde_json::to_value(server.app.broker().status()).unwrap();
    let file = &status["token_files"][0];
    let error = file["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("cannot write it") && error.contains("missing"),
        "{status}"
    );
    assert!(file["last_written_at"].is_null());
    // Still serving.
    let answer = server.token("contoso", common::TESTER_SECRET).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    // Once the directory is there, the file is written (within the poll).
    std::fs::create_dir(f.dir.path().join("missing")).unwrap();
    let path = f.dir.path().join("missing/contoso.token");
    assert!(
        common::eventually(Duration::from_secs(10), || path.exists()).await,
        "written once it can be"
    );
    // The status is updated just after the file lands.
    let cleared = || {
        let status = serde_json::to_value(server.app.broker().status()).unwrap();
        status["token_files"][0]["last_error"].is_null()
    };
    assert!(
        common::eventually(Duration::from_secs(3), cleared).await,
        "{}",
        serde_json::to_value(server.app.broker().status()).unwrap()
    );
    check_token(&std::fs::read(&path).unwrap()).unwrap();

    // A reload adds a file: written at once, not at the next poll; the
    // removed one is left on disk.
    let added = f.dir.path().join("added.token");
    f.write_config(
        "certificate = \"app.crt\"\nprivate_key = \"app.key\"\n",
        &format!("{TENANT}[[token_files]]\npath = \"added.token\"\ntenant = \"contoso\"\n"),
    );
    server.app.broker().reload().await.unwrap();
    assert!(
        common::eventually(Duration::from_secs(3), || added.exists()).await,
        "a file a reload added is written at once"
    );
    assert!(path.exists(), "a removed file is left alone");
    let status = serde_json::to_value(server.app.broker().status()).unwrap();
    assert_eq!(
        status["token_files"].as_array().unwrap().len(),
        1,
        "{status}"
    );
    writer.abort();
    server.stop().await;
}

#[test]
fn check_refuses_a_token_file_directory_that_is_not_there() {
    let dir = tempfile::tempdir().unwrap();
    common::write_credential(dir.path(), "app");
    let config = dir.path().join("tokenbroker.toml");
    let write = |files: &str| {
        std::fs::write(
            &config,
            format!(
                "[app]\nclient_id = \"{}\"\ncertificate = \"app.crt\"\nprivate_key = \"app.key\"\n{TENANT}{files}",
                common::CLIENT_ID
            ),
        )
        .unwrap()
    };
    let check = |json: bool| {
        let _host = crate::package::HOST
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tokenbroker"));
        command.args(["check", "--config"]).arg(&config);
        if json {
            command.arg("--json");
        }
        command.output().unwrap()
    };
    write("[[token_files]]\npath = \"nowhere/contoso.token\"\ntenant = \"contoso\"\n");
    let out = check(false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let missing = dir.path().join("nowhere");
    assert!(
        stderr.contains("token_files[0].path")
            && stderr.contains(&format!(
                "the directory {} does not exist",
                missing.display()
            )),
        "{stderr}"
    );
    let out = check(true);
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let said = report["findings"].to_string();
    assert!(
        said.contains("token_files[0].path") && said.contains("does not exist"),
        "{said}"
    );

    // A group nobody has: exit 2, naming the key.
    std::fs::create_dir(&missing).unwrap();
    write("[[token_files]]\npath = \"nowhere/contoso.token\"\ntenant = \"contoso\"\ngroup = \"no-such-group-tokenbroker\"\n");
    let out = check(false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("token_files[0].group"), "{stderr}");

    // There and writable: a finding per file, exit 0.
    write("[[token_files]]\npath = \"nowhere/contoso.token\"\ntenant = \"contoso\"\n");
    let out = check(true);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f["check"] == "token_file" && f["ok"] == true),
        "{report}"
    );
}

/// `tokenbroker serve` keeps the files (the task `serve` spawns), logs a
/// failed write as an ERROR without the token, and `tokenbroker status`
/// shows each file.
#[tokio::test(flavor = "multi_thread")]
async fn serve_writes_the_files_and_status_shows_them() {
    let f = Fixture::new(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_socket = \"admin.sock\"\n{TENANT}\
         [[token_files]]\npath = \"later/contoso.token\"\ntenant = \"contoso\"\n"
    ))
    .await;
    f.sim.consent("contoso.onmicrosoft.com");
    let mut daemon = common::Daemon::spawn(&f.config_path).await;
    // Already seen while the daemon started, or still to come.
    let failed = daemon
        .logged(Duration::from_secs(10), |l| {
            l["level"] == "ERROR"
                && l["token_file"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("later/contoso.token"))
        })
        .await;
    assert!(failed.is_some(), "{}", daemon.log.join("\n"));
    std::fs::create_dir(f.dir.path().join("later")).unwrap();
    let path = f.dir.path().join("later/contoso.token");
    assert!(common::eventually(Duration::from_secs(10), || path.exists()).await);
    let token = check_token(&std::fs::read(&path).unwrap()).unwrap();
    let status = {
        let _host = crate::package::HOST
            .read()
            .unwrap_or_else(|e| e.into_inner());
        std::process::Command::new(env!("CARGO_BIN_EXE_tokenbroker"))
            .args(["status", "--config"])
            .arg(&f.config_path)
            .output()
            .unwrap()
    };
    let said = String::from_utf8_lossy(&status.stdout);
    assert!(
        said.contains(&format!(
            "token file {} (token, tenant contoso): written",
            path.display()
        )),
        "{said}{}",
        String::from_utf8_lossy(&status.stderr)
    );
    daemon.signal("-TERM");
    let log = daemon.drain().await;
    let all = log.iter().map(|l| l.to_string()).collect::<String>();
    assert!(!all.contains(&token), "the token is never logged");
    assert!(all.contains("token file written again"), "{all}");
}
