//! What a newcomer deploying tokenbroker meets: the README's service
//! walkthrough against `deploy/systemd/` (and the real `systemd-analyze`,
//! `systemd-sysusers` and `systemd-tmpfiles` on it), the start-up log, shell
//! completions and the manual, and the errors of the first steps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tokenbroker(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tokenbroker"))
        .args(args)
        .env_remove("TOKENBROKER_CONFIG")
        .output()
        .expect("run tokenbroker")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The shell lines of the README's "Run as a service (systemd)" block,
/// comments dropped.
fn walkthrough() -> Vec<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme
        .split("### Run as a service (systemd)")
        .nth(1)
        .expect("README has a \"Run as a service (systemd)\" section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the section has a sh block");
    block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// `Key=value` settings of a unit file, every value of each key in order.
fn unit_settings(unit: &str) -> BTreeMap<String, Vec<String>> {
    let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with('[') || line.is_empty() {
            continue;
        }
        let (key, value) = line.split_once('=').expect("Key=value");
        settings
            .entry(key.to_owned())
            .or_default()
            .push(value.to_owned());
    }
    settings
}

fn one<'a>(settings: &'a BTreeMap<String, Vec<String>>, key: &str) -> &'a str {
    match settings.get(key).map(Vec::as_slice) {
        Some([value]) => value,
        other => panic!("{key}= should be set once in the unit, found {other:?}"),
    }
}

/// Lines of a sysusers/tmpfiles file that are not comments, split into fields.
fn entries(file: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(repo().join("deploy/systemd").join(file)).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            // The GECOS field is quoted and may hold spaces.
            let mut fields = Vec::new();
            let mut rest = l;
            while !rest.is_empty() {
                rest = rest.trim_start();
                let (field, after) = if let Some(quoted) = rest.strip_prefix('"') {
                    let end = quoted.find('"').unwrap();
                    (&quoted[..end], &quoted[end + 1..])
                } else {
                    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                    (&rest[..end], &rest[end..])
                };
                fields.push(field.to_owned());
                rest = after;
            }
            fields
        })
        .collect()
}

/// What the deploy files define, read from the files themselves.
struct Deploy {
    unit: BTreeMap<String, Vec<String>>,
    user: String,
    groups: Vec<String>,
    socket_dir: PathBuf,
    socket_dir_mode: String,
    socket_dir_group: String,
    config_path: PathBuf,
}

fn deploy() -> Deploy {
    let unit_text =
        std::fs::read_to_string(repo().join("deploy/systemd/tokenbroker.service")).unwrap();
    let unit = unit_settings(&unit_text);
    let users = entries("tokenbroker.sysusers");
    let user = users
        .iter()
        .find(|e| e[0] == "u")
        .map(|e| e[1].clone())
        .expect("sysusers creates a user");
    let groups = users
        .iter()
        .filter(|e| e[0] == "g")
        .map(|e| e[1].clone())
        .collect();
    let dirs = entries("tokenbroker.tmpfiles");
    let d = dirs
        .iter()
        .find(|e| e[0] == "d")
        .expect("tmpfiles has a d line");
    let exec = one(&unit, "ExecStart");
    let config_path = exec
        .split_whitespace()
        .skip_while(|w| *w != "--config")
        .nth(1)
        .map(PathBuf::from)
        .expect("ExecStart passes --config");
    Deploy {
        user,
        groups,
        socket_dir: PathBuf::from(&d[1]),
        socket_dir_mode: d[2].clone(),
        socket_dir_group: d[4].clone(),
        config_path,
        unit,
    }
}

#[test]
fn the_readme_walkthrough_uses_what_the_deploy_files_define() {
    let d = deploy();
    let lines = walkthrough();
    let has = |needle: &str| {
        lines.iter().any(|l| l.contains(needle))
            || panic!("the walkthrough has no line with {needle:?}:\n{lines:#?}")
    };

    // The unit runs as the user sysusers creates, and reads the file the
    // walkthrough installs.
    assert_eq!(one(&d.unit, "User"), d.user);
    assert_eq!(one(&d.unit, "Group"), d.user);
    let config = d.config_path.display().to_string();
    has(&format!(
        "install -m 0640 -o root -g {} deploy/systemd/tokenbroker.toml {config}",
        d.user
    ));
    has(&format!(
        "sudo -u {} tokenbroker check --config {config}",
        d.user
    ));
    // Every deploy file it names exists, and the unit is installed under the
    // name it is enabled by.
    for line in &lines {
        for word in line.split_whitespace().filter(|w| w.starts_with("deploy/")) {
            assert!(
                repo().join(word).is_file(),
                "{word} (in {line:?}) is missing"
            );
        }
    }
    has("deploy/systemd/tokenbroker.service /etc/systemd/system/tokenbroker.service");
    has("systemctl enable --now tokenbroker");
    has("deploy/systemd/tokenbroker.sysusers /etc/sysusers.d/tokenbroker.conf");
    has("deploy/systemd/tokenbroker.tmpfiles /etc/tmpfiles.d/tokenbroker.conf");
    // The key goes to the daemon's user; the callers join the socket's group.
    has(&format!("chown {0}:{0} /etc/tokenbroker/key.pem", d.user));
    assert!(d.groups.contains(&d.socket_dir_group), "{:?}", d.groups);
    has(&format!("usermod -aG {} ", d.socket_dir_group));
    assert_eq!(
        d.socket_dir_mode, "2750",
        "set-group-ID, no access for others"
    );
    // ExecStart is the binary the walkthrough installs.
    has("install -m 0755 target/dist/tokenbroker /usr/local/bin/");
    assert!(one(&d.unit, "ExecStart").starts_with("/usr/local/bin/tokenbroker serve "));

    // The shipped configuration is valid, and its paths are the ones the
    // unit opens up and the tmpfiles line creates.
    let shipped = repo().join("deploy/systemd/tokenbroker.toml");
    let parsed = tokenbroker::config::Config::parse(
        &std::fs::read_to_string(&shipped).unwrap(),
        &d.config_path,
    )
    .unwrap();
    let server = &parsed.server;
    for socket in [&server.unix_socket, &server.admin_socket] {
        let socket = socket
            .as_deref()
            .expect("the shipped configuration sets both sockets");
        assert_eq!(socket.parent(), Some(d.socket_dir.as_path()));
    }
    assert_eq!(
        one(&d.unit, "ReadWritePaths"),
        d.socket_dir.to_str().unwrap()
    );
    // The state file lives in the unit's StateDirectory=, sealed with a key
    // the walkthrough makes and gives to the daemon's user.
    assert_eq!(
        parsed.cache.state_file.as_deref().and_then(Path::parent),
        Some(
            Path::new("/var/lib")
                .join(one(&d.unit, "StateDirectory"))
                .as_path()
        )
    );
    let state_key = parsed.cache.state_key_file.as_deref().unwrap().display();
    has(&format!("tokenbroker cache-key new --out {state_key}"));
    has(&format!("chown {0}:{0} {state_key}", d.user));
    let read_only = PathBuf::from(one(&d.unit, "ReadOnlyPaths"));
    assert_eq!(Some(read_only.as_path()), d.config_path.parent());
    assert_eq!(
        parsed.app().certificate.as_deref().and_then(Path::parent),
        Some(read_only.as_path())
    );
    assert_eq!(
        parsed.app().private_key.as_deref().and_then(Path::parent),
        Some(read_only.as_path())
    );
    // The unit asks for the hardening the issue lists.
    for (key, value) in [
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("LimitCORE", "0"),
    ] {
        assert_eq!(one(&d.unit, key), value, "{key}=");
    }
    assert!(d.unit["SystemCallFilter"].contains(&"@system-service".to_owned()));
    // No Environment= carries a password: the credential directive does.
    assert!(d
        .unit
        .get("Environment")
        .into_iter()
        .flatten()
        .all(|e| !e.to_ascii_lowercase().contains("password")));
    let unit_text =
        std::fs::read_to_string(repo().join("deploy/systemd/tokenbroker.service")).unwrap();
    assert!(unit_text.contains("LoadCredential=key-password:/etc/tokenbroker/key-password"));
}

/// The connections the shipped configuration allows, as the server counts
/// them, fit under the unit's `LimitNOFILE=` with room for the files,
/// Redis and the runtime (a full table of descriptors makes accept() fail
/// for every caller).
#[test]
fn the_units_open_file_limit_fits_the_connection_limits() {
    let d = deploy();
    let shipped = repo().join("deploy/systemd/tokenbroker.toml");
    let config = tokenbroker::config::Config::parse(
        &std::fs::read_to_string(&shipped).unwrap(),
        &d.config_path,
    )
    .unwrap();
    // The metrics and admin listeners' fixed budget, read from the server's
    // source so that a change there reaches this sum.
    let listen = std::fs::read_to_string(repo().join("src/server/listen.rs")).unwrap();
    let own_listener: usize = listen
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("const OWN_LISTENER_CONNECTIONS: usize = ")
        })
        .and_then(|v| v.trim_end_matches(';').parse().ok())
        .expect("src/server/listen.rs defines OWN_LISTENER_CONNECTIONS");
    let connections = config.server.max_connections
        + config.server.max_socket_connections
        + 2 * own_listener
        + config.app().max_concurrent_requests;
    // Listeners, configuration, credentials, the state file and its
    // temporary, token files, Redis (a connection per cluster node), DNS
    // lookups and the runtime's own descriptors.
    const MARGIN: usize = 256;
    // `LimitNOFILE=soft:hard` or one number for both: the soft limit counts.
    let limit = one(&d.unit, "LimitNOFILE");
    let soft: usize = limit
        .split(':')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("LimitNOFILE={limit} is not a number"));
    assert!(
        soft >= connections + MARGIN,
        "LimitNOFILE={limit} is below {connections} connections + {MARGIN} (server.max_connections \
         {} + max_socket_connections {} + metrics and admin {own_listener} each + \
         app.max_concurrent_requests {})",
        config.server.max_connections,
        config.server.max_socket_connections,
        config.app().max_concurrent_requests,
    );
    eprintln!("LimitNOFILE={limit}: {connections} connections + {MARGIN} at least");
}

/// The unit with `ExecStart` pointing at the binary under test, and the
/// manual pages its `Documentation=` names, in a scratch directory.
fn unit_for_analysis(dir: &Path) -> (PathBuf, PathBuf) {
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/tokenbroker.service"))
        .unwrap()
        .replace(
            "/usr/local/bin/tokenbroker",
            env!("CARGO_BIN_EXE_tokenbroker"),
        );
    let path = dir.join("tokenbroker.service");
    std::fs::write(&path, unit).unwrap();
    let man = dir.join("man");
    let out = tokenbroker(&["man", "--out", man.join("man1").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    (path, man)
}

#[test]
fn systemd_analyze_verifies_the_unit_and_rates_its_exposure_at_most_2() {
    if !common::available(
        "systemd-analyze and man (Debian packages systemd and man-db)",
        common::has_program("systemd-analyze") && common::has_program("man"),
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (unit, man) = unit_for_analysis(dir.path());
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .env("MANPATH", &man)
        .output()
        .unwrap();
    let said = format!("{}{}", text(&verify.stdout), text(&verify.stderr));
    assert!(verify.status.success(), "systemd-analyze verify: {said}");
    assert!(
        said.trim().is_empty(),
        "systemd-analyze verify printed: {said}"
    );

    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let report = text(&security.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|l| l.split("Overall exposure level for ").nth(1))
        .and_then(|rest| rest.split(": ").nth(1))
        .and_then(|level| level.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}{}", text(&security.stderr)));
    eprintln!("systemd-analyze security --offline=yes: exposure {exposure}");
    assert!(exposure <= 2.0, "exposure {exposure} > 2.0:\n{report}");
}

/// `systemd-sysusers` and `systemd-tmpfiles` applied to a scratch root: the
/// user and groups exist, the socket directory has the owner, group and
/// mode the walkthrough relies on. As root, steps 4–6 of the walkthrough are
/// rehearsed there, `check` running as the daemon's uid.
#[test]
fn sysusers_and_tmpfiles_make_what_the_walkthrough_needs() {
    if !common::available(
        "systemd-sysusers and systemd-tmpfiles (Debian package systemd)",
        common::has_program("systemd-sysusers") && common::has_program("systemd-tmpfiles"),
    ) {
        return;
    }
    let d = deploy();
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    for (program, file) in [
        ("systemd-sysusers", "tokenbroker.sysusers"),
        ("systemd-tmpfiles", "tokenbroker.tmpfiles"),
    ] {
        let mut command = Command::new(program);
        command.arg(format!("--root={}", root.path().display()));
        if program == "systemd-tmpfiles" {
            command.arg("--create");
        }
        let out = command
            .arg(repo().join("deploy/systemd").join(file))
            .output()
            .unwrap();
        assert!(out.status.success(), "{program}: {}", text(&out.stderr));
    }
    let id_of = |file: &str, name: &str| -> u32 {
        std::fs::read_to_string(root.path().join("etc").join(file))
            .unwrap()
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f[0] == name).then(|| f[2].parse().unwrap())
            })
            .unwrap_or_else(|| panic!("{name} is not in {file}"))
    };
    let uid = id_of("passwd", &d.user);
    let gid = id_of("group", &d.user);
    let clients = id_of("group", &d.socket_dir_group);

    use std::os::unix::fs::MetadataExt;
    let socket_dir = root.path().join(d.socket_dir.strip_prefix("/").unwrap());
    let meta = std::fs::metadata(&socket_dir).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o2750);
    assert_eq!((meta.uid(), meta.gid()), (uid, clients));

    if !common::is_root() {
        eprintln!("(not root: the rehearsal as the daemon's uid is skipped)");
        return;
    }
    // Steps 4 and 5, with the scratch root in place of /.
    let etc = root.path().join("etc/tokenbroker");
    std::fs::create_dir_all(&etc).unwrap();
    std::os::unix::fs::chown(&etc, Some(0), Some(gid)).unwrap();
    set_mode(&etc, 0o750);
    let out = tokenbroker(&[
        "cert",
        "new",
        "--subject",
        "CN=tokenbroker,O=Your Company",
        "--out",
        etc.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = tokenbroker(&[
        "cache-key",
        "new",
        "--out",
        etc.join("state.key").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::os::unix::fs::chown(etc.join("state.key"), Some(uid), Some(gid)).unwrap();
    let shipped = std::fs::read_to_string(repo().join("deploy/systemd/tokenbroker.toml"))
        .unwrap()
        .replace("/etc/tokenbroker", etc.to_str().unwrap())
        .replace(d.socket_dir.to_str().unwrap(), socket_dir.to_str().unwrap());
    let config = etc.join("tokenbroker.toml");
    std::fs::write(&config, shipped).unwrap();
    std::os::unix::fs::chown(&config, Some(0), Some(gid)).unwrap();
    set_mode(&config, 0o640);
    // The whole path must be traversable by the daemon's uid.
    for dir in root
        .path()
        .ancestors()
        .take(root.path().components().count())
    {
        let mode = std::fs::metadata(dir).unwrap().mode();
        set_mode(dir, (mode & 0o7777) | 0o001);
    }
    set_mode(&root.path().join("etc"), 0o755);
    set_mode(&root.path().join("run"), 0o755);

    // The binary, where the daemon's uid can reach it wherever the checkout
    // lives (a checkout under a 0700 directory is out of its reach).
    let binary = root.path().join("usr/bin/tokenbroker");
    std::fs::create_dir_all(binary.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_tokenbroker"), &binary).unwrap();
    set_mode(&binary, 0o755);
    set_mode(&root.path().join("usr"), 0o755);
    set_mode(&root.path().join("usr/bin"), 0o755);
    let as_daemon = |command: &str| {
        use std::os::unix::process::CommandExt;
        Command::new(&binary)
            .args([command, "--config"])
            .arg(&config)
            .env_remove("TOKENBROKER_CONFIG")
            .uid(uid)
            .gid(gid)
            .output()
            .unwrap()
    };
    let check_as_daemon = || as_daemon("check");
    // Before the chown, the root-owned key cannot be read, and the error
    // says by whom, in which file, for which key.
    let before = check_as_daemon();
    let said = text(&before.stderr);
    assert_eq!(before.status.code(), Some(2), "{said}");
    assert!(
        said.contains(&config.display().to_string())
            && said.contains("app.private_key")
            && said.contains(&etc.join("key.pem").display().to_string())
            && said.contains(&format!("uid {uid}"))
            && said.contains("Permission denied"),
        "{said}"
    );
    // Step 4's chown, and `check` passes as the daemon's user.
    std::os::unix::fs::chown(etc.join("key.pem"), Some(uid), Some(gid)).unwrap();
    let after = check_as_daemon();
    assert!(
        after.status.success(),
        "{}{}",
        text(&after.stdout),
        text(&after.stderr)
    );
    assert!(
        !text(&after.stderr).contains("readable by"),
        "no permission warning: {}",
        text(&after.stderr)
    );

    // A socket directory the daemon's user cannot write in: `check` says so
    // as that user, and `serve` exits 2 (the unit does not restart it).
    set_mode(&socket_dir, 0o2550);
    let refused = check_as_daemon();
    let said = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{said}");
    assert!(
        said.contains("server.unix_socket")
            && said.contains("cannot create the socket in")
            && said.contains(&socket_dir.display().to_string()),
        "{said}"
    );
    let serve = as_daemon("serve");
    assert_eq!(serve.status.code(), Some(2), "{}", text(&serve.stderr));
    assert!(
        text(&serve.stderr).contains("cannot create the socket in"),
        "{}",
        text(&serve.stderr)
    );
    set_mode(&socket_dir, 0o2750);
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_missing_credential_file_names_the_configuration_the_key_and_the_resolved_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("conf")).unwrap();
    std::fs::write(
        dir.path().join("conf/tokenbroker.toml"),
        format!(
            "[app]\nclient_id = \"{}\"\ncertificate = \"certs/cert.pem\"\nprivate_key = \"certs/key.pem\"\n",
            common::CLIENT_ID
        ),
    )
    .unwrap();
    // A relative --config from another working directory.
    let out = Command::new(env!("CARGO_BIN_EXE_tokenbroker"))
        .args(["check", "--config", "conf/tokenbroker.toml"])
        .current_dir(dir.path())
        .env_remove("TOKENBROKER_CONFIG")
        .output()
        .unwrap();
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    let resolved = dir.path().join("conf/certs/cert.pem");
    assert!(
        said.contains("conf/tokenbroker.toml: app.certificate: cannot read ")
            && said.contains(&resolved.display().to_string())
            && said.contains("No such file"),
        "{said}"
    );
}

#[test]
fn consent_url_without_a_client_id_says_to_pass_one() {
    // Without --config it reads /etc/tokenbroker/tokenbroker.toml, which the
    // package test installs for a few seconds: not meanwhile.
    let _host = crate::package::HOST
        .read()
        .unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tokenbroker"))
        .args(["consent-url", "--tenant", "contoso.onmicrosoft.com"])
        .current_dir(dir.path())
        .env_remove("TOKENBROKER_CONFIG")
        .output()
        .unwrap();
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("pass --client-id") && said.contains("--config FILE"),
        "{said}"
    );
    // The README's step, with --client-id and no configuration, works.
    let out = Command::new(env!("CARGO_BIN_EXE_tokenbroker"))
        .args([
            "consent-url",
            "--client-id",
            common::CLIENT_ID,
            "--tenant",
            "contoso.onmicrosoft.com",
        ])
        .current_dir(dir.path())
        .env_remove("TOKENBROKER_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with(
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0/adminconsent?client_id="
    ));
}

#[test]
fn serve_dev_with_a_configuration_is_a_usage_error() {
    let out = tokenbroker(&[
        "serve",
        "--dev",
        "--config",
        "/etc/tokenbroker/tokenbroker.toml",
    ]);
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("--dev") && said.contains("cannot take --config"),
        "{said}"
    );
}

#[test]
fn cert_new_keeps_the_subject_in_the_order_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokenbroker(&[
        "cert",
        "new",
        "--subject",
        "CN=tokenbroker,O=Your Company,C=US",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    let printed = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        printed.contains("subject:        CN=tokenbroker, O=Your Company, C=US\n"),
        "{printed}"
    );
    // As openssl shows the same certificate.
    if !common::available("the openssl command", common::has_program("openssl")) {
        return;
    }
    let openssl = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-nameopt", "oneline", "-in"])
        .arg(dir.path().join("cert.pem"))
        .output()
        .unwrap();
    assert_eq!(
        text(&openssl.stdout).trim(),
        "subject=CN = tokenbroker, O = Your Company, C = US"
    );
}

#[test]
fn completions_for_three_shells_and_a_manual_that_renders_cleanly() {
    let bash = tokenbroker(&["completions", "bash"]);
    assert!(bash.status.success());
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("tokenbroker.bash");
    std::fs::write(&script, &bash.stdout).unwrap();
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(syntax.status.success(), "bash -n: {}", text(&syntax.stderr));
    assert!(text(&bash.stdout).contains("complete -F _tokenbroker"));
    let zsh = tokenbroker(&["completions", "zsh"]);
    assert!(text(&zsh.stdout).starts_with("#compdef tokenbroker"));
    let fish = tokenbroker(&["completions", "fish"]);
    assert!(text(&fish.stdout).contains("complete -c tokenbroker"));
    assert_eq!(tokenbroker(&["completions", "tcsh"]).status.code(), Some(2));

    if !common::available(
        "groff (Debian package groff-base)",
        common::has_program("groff"),
    ) {
        return;
    }
    let page = tokenbroker(&["man"]);
    assert!(page.status.success());
    let roff = text(&page.stdout);
    assert!(roff.contains(".TH tokenbroker 1"), "{roff}");
    let man_dir = dir.path().join("man1");
    let out = tokenbroker(&["man", "--out", man_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&man_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    pages.sort();
    assert!(
        pages.iter().any(|p| p.ends_with("tokenbroker-serve.1")),
        "{pages:?}"
    );
    std::fs::write(dir.path().join("stdout.1"), &page.stdout).unwrap();
    pages.push(dir.path().join("stdout.1"));
    for page in &pages {
        let rendered = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(page)
            .output()
            .unwrap();
        assert!(rendered.status.success(), "{}", page.display());
        assert!(
            rendered.stderr.is_empty(),
            "groff warns on {}: {}",
            page.display(),
            text(&rendered.stderr)
        );
    }
}

/// The start-up log, as JSON: one line per fact, each field with its type;
/// nothing printed as `"None"`; the access line's latency in whole µs.
#[tokio::test(flavor = "multi_thread")]
async fn the_start_up_log_says_what_runs_with_typed_fields() {
    let f = common::Fixture::new("").await;
    f.sim.consent("contoso.onmicrosoft.com");
    f.sim.consent("fabrikam.com");
    let path = f.dir.path().join("daemon.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nunix_socket = \"api.sock\"\nadmin_socket = \"admin.sock\"\n\
             metrics_listen = \"127.0.0.1:0\"\n\
             [app]\nclient_id = \"{}\"\nauthority_host = \"{}\"\n\
             [[app.credentials]]\ncertificate = \"app.crt\"\nprivate_key = \"app.key\"\n\
             [[tenants]]\nname = \"contoso\"\nid = \"contoso.onmicrosoft.com\"\n\
             [[tenants]]\nname = \"fabrikam\"\nid = \"fabrikam.com\"\n\
             [[accounts]]\nname = \"svc\"\nsecret_sha256 = \"{}\"\ntenants = [\"*\"]\n",
            common::CLIENT_ID,
            f.sim.url(),
            common::sha256_hex("svc-secret"),
        ),
    )
    .unwrap();
    let mut daemon = common::Daemon::spawn(&path).await;
    let answer = daemon
        .get(
            "/v1/token?tenant=contoso",
            &[("Authorization", "Bearer svc-secret")],
        )
        .await;
    assert_eq!(answer.status, 200);
    let access = daemon
        .wait_for(Duration::from_secs(10), |l| {
            l["route"] == "/v1/token" && l.get("status").is_some()
        })
        .await
        .expect("an access line");
    daemon.signal("-TERM");
    let lines = daemon.drain().await;

    let find = |message: &str| -> &serde_json::Value {
        lines
            .iter()
            .find(|l| l["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} line in {lines:#?}"))
    };
    assert_eq!(
        find("tokenbroker starting")["version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        find("configuration")["config_file"],
        path.display().to_string()
    );
    assert_eq!(find("app registration")["client_id"], common::CLIENT_ID);
    let authority = find("authority");
    assert_eq!(authority["cloud"], "global");
    assert_eq!(authority["authority"], f.sim.url().trim_end_matches('/'));
    let counts = find("tenants and accounts");
    assert_eq!(counts["tenants"].as_u64(), Some(2), "{counts}");
    assert_eq!(counts["accounts"].as_u64(), Some(1), "{counts}");
    let credential = find("credential");
    assert_eq!(credential["credential"], "app.credentials[0]");
    assert_eq!(
        credential["thumbprint"].as_str().map(str::len),
        Some(40),
        "{credential}"
    );
    assert!(
        credential["not_after"].as_u64().unwrap() > 1_700_000_000,
        "{credential}"
    );
    assert!(credential["expires"].as_str().unwrap().ends_with('Z'));
    let listeners: BTreeMap<&str, &serde_json::Value> = lines
        .iter()
        .filter(|l| l["message"] == "listening")
        .map(|l| (l["listener"].as_str().unwrap(), l))
        .collect();
    assert_eq!(
        listeners.keys().copied().collect::<Vec<_>>(),
        ["admin", "metrics", "tcp", "unix"]
    );
    for tcp in ["tcp", "metrics"] {
        let address = listeners[tcp]["address"].as_str().unwrap();
        assert!(address.parse::<std::net::SocketAddr>().is_ok(), "{address}");
    }
    assert_eq!(
        listeners["unix"]["path"],
        f.dir.path().join("api.sock").display().to_string()
    );
    assert_eq!(
        listeners["admin"]["path"],
        f.dir.path().join("admin.sock").display().to_string()
    );
    // Whole microseconds, and no float in milliseconds.
    assert!(access["latency_us"].is_u64(), "{access}");
    assert!(access.get("latency_ms").is_none(), "{access}");
    // Absent values are absent, never the text "None" or null.
    for line in &lines {
        for (key, value) in line.as_object().unwrap() {
            assert!(
                !value.is_null() && value != "None",
                "{key} is {value} in {line}"
            );
        }
    }
}

/// The README's operator sections say what the code and the manifests do.
#[test]
fn the_readme_covers_logging_upgrading_and_the_rollout_as_built() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = |title: &str| -> String {
        let start = readme
            .find(&format!("\n## {title}\n"))
            .unwrap_or_else(|| panic!("README has no \"## {title}\" section"));
        let rest = &readme[start + 1..];
        let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3);
        rest[..end].to_owned()
    };
    // Logging: the filter it shows names the target the server logs under.
    let logging = section("Logging");
    let handler = std::fs::read_to_string(repo().join("src/server/access.rs")).unwrap();
    assert!(handler.contains("target: \"tokenbroker::access\""));
    assert!(
        logging.contains("RUST_LOG=info,tokenbroker::access=warn"),
        "{logging}"
    );
    // Upgrading: the package keeps the configuration and the state file makes
    // a restart cheap, as the shipped configuration sets it.
    let upgrading = section("Upgrading");
    let shipped = std::fs::read_to_string(repo().join("deploy/systemd/tokenbroker.toml")).unwrap();
    assert!(
        shipped
            .lines()
            .any(|l| l.trim_start().starts_with("state_file")),
        "{shipped}"
    );
    assert!(
        upgrading.contains("cache.state_file") && upgrading.contains("conffile"),
        "{upgrading}"
    );
    // The rollout: what the README says is what the DaemonSet does.
    let daemonset =
        std::fs::read_to_string(repo().join("deploy/kubernetes/daemonset.yaml")).unwrap();
    assert!(daemonset.contains("maxSurge: 0"));
    let kubernetes = section("Deployment");
    assert!(
        kubernetes.contains("`maxSurge: 0`") && kubernetes.contains("retries"),
        "{kubernetes}"
    );
    // The quick start warns that the first test run builds and fetches.
    assert!(readme[..readme.find("## Install").unwrap()].contains("package registries"));
}
