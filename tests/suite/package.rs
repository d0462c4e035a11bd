//! The Debian package (SPEC, "Package"): `cargo deb` builds it from the
//! binary under test, `dpkg -i` installs it on this machine (root only),
//! every installed file is checked, then `dpkg -r` and `dpkg --purge`
//! remove it. Without any tool: the packaged unit is the deploy unit with
//! the binary in /usr/bin, and the committed manual pages are the binary's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::RwLock;
use std::time::Instant;

/// Held for writing while the package is on this machine. A test that needs
/// the host without tokenbroker (no /etc/tokenbroker/tokenbroker.toml, the
/// default configuration path) takes it for reading:
/// `let _host = package::HOST.read().unwrap_or_else(|e| e.into_inner());`
pub static HOST: RwLock<()> = RwLock::new(());

const PACKAGE: &str = "tokenbroker";
/// Where the README's from-source walkthrough installs the binary, and the
/// deploy unit runs it from.
const FROM_SOURCE: &str = "/usr/local/bin/tokenbroker";
/// Where the package installs it.
const PACKAGED: &str = "/usr/bin/tokenbroker";
const CONFFILE: &str = "/etc/tokenbroker/tokenbroker.toml";
const UNIT: &str = "/usr/lib/systemd/system/tokenbroker.service";
const DOC: &str = "/usr/share/doc/tokenbroker";
/// The one command that rewrites deploy/debian/man from the current source
/// (the `rm` drops the page of a command that went away).
const REGENERATE_MAN: &str =
    "rm -f deploy/debian/man/*.1 && cargo run -q -- man --out deploy/debian/man";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn said(out: &Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

/// Runs `command` (no standard input: dpkg must not ask) and insists it
/// succeeds; its standard output.
fn ok(command: &mut Command) -> String {
    let out = command.stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{command:?} failed: {}", said(&out));
    text(&out.stdout)
}

/// [`ok`] for a binary just written: while another test's child, forked
/// before it execs, still holds the copy's write descriptor, running it
/// fails with ETXTBSY ("Text file busy"). That child lets go within
/// moments; try again for up to 5 s.
fn ok_once_written(command: &mut Command) -> String {
    command.stdin(Stdio::null());
    let mut tries = 0;
    let out = loop {
        match command.output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            out => break out.unwrap(),
        }
    };
    assert!(out.status.success(), "{command:?} failed: {}", said(&out));
    text(&out.stdout)
}

/// The first line where `a` and `b` differ, for a message shorter than both.
fn first_difference(a: &str, b: &str) -> String {
    let (mut a_lines, mut b_lines) = (a.lines(), b.lines());
    for n in 1.. {
        match (a_lines.next(), b_lines.next()) {
            (Some(x), Some(y)) if x == y => continue,
            (None, None) => return "no line differs (line endings?)".into(),
            (x, y) => return format!("line {n}: {x:?}\n     vs: {y:?}"),
        }
    }
    unreachable!()
}

fn manifest() -> toml::Table {
    std::fs::read_to_string(repo().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap()
}

/// The Cargo profile `cargo deb` builds the packaged binary with: the
/// `profile` of `[package.metadata.deb]`, else cargo-deb's default.
fn deb_profile() -> String {
    manifest()["package"]["metadata"]["deb"]
        .get("profile")
        .map_or("release", |p| p.as_str().unwrap())
        .to_owned()
}

/// `[package.metadata.deb]` assets: destination (without the leading `/`)
/// to source.
fn deb_assets() -> BTreeMap<String, String> {
    manifest()["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .expect("Cargo.toml has [package.metadata.deb] assets")
        .iter()
        .map(|asset| {
            let source = asset[0].as_str().unwrap().to_owned();
            (asset[1].as_str().unwrap().to_owned(), source)
        })
        .collect()
}

/// The shipped binary (BENCHMARKS.md, "the shipped binary"): plain
/// `cargo deb` builds it with `[profile.dist]`, the release profile with
/// fat LTO, one codegen unit and no symbols (a fifth smaller); the release
/// profile itself stays quick to rebuild for `cargo run --release`,
/// `benches/load.sh` and `cargo bench`.
#[test]
fn cargo_deb_builds_the_binary_with_the_dist_profile() {
    let manifest = manifest();
    assert_eq!(
        deb_profile(),
        "dist",
        "[package.metadata.deb] has profile = \"dist\": the documented `cargo deb`, with no \
         --profile, builds the package's binary with it"
    );
    let dist = manifest
        .get("profile")
        .and_then(|p| p.get("dist"))
        .and_then(toml::Value::as_table)
        .expect("Cargo.toml has [profile.dist]");
    let setting = |key: &str| dist.get(key).cloned();
    assert_eq!(setting("inherits"), Some("release".into()), "{dist:#?}");
    assert!(
        matches!(setting("lto"), Some(lto) if lto == "fat".into() || lto == true.into()),
        "[profile.dist] lto = \"fat\": {dist:#?}"
    );
    assert_eq!(setting("codegen-units"), Some(1.into()), "{dist:#?}");
    assert!(
        matches!(setting("strip"), Some(strip) if strip == "symbols".into() || strip == true.into()),
        "[profile.dist] strip = true: {dist:#?}"
    );
    // Panics unwind, as in every other build of it.
    assert_eq!(setting("panic"), None, "{dist:#?}");
    // The release profile stays the developers' one.
    let release = manifest.get("profile").and_then(|p| p.get("release"));
    for key in ["lto", "codegen-units"] {
        assert!(
            release.and_then(|r| r.get(key)).is_none(),
            "[profile.release] {key}: set it in [profile.dist], which only `cargo deb` builds"
        );
    }
    // cargo-deb reads `target/release/` in an asset as the selected
    // profile's directory (target/dist/); any other spelling of the path
    // would package whatever binary is there instead of building one.
    assert_eq!(
        deb_assets().get("usr/bin/").map(String::as_str),
        Some("target/release/tokenbroker")
    );
    // The README's command is plain `cargo deb`.
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        readme
            .lines()
            .any(|line| line.starts_with("cargo deb ") && !line.contains("--profile")),
        "README's \"From the Debian package\" runs `cargo deb`"
    );
}

/// The packaged unit is the deploy unit with the binary in /usr/bin, and
/// nothing else changed: the hardening, the limits and the paths are
/// written once, in deploy/systemd.
#[test]
fn the_packaged_unit_is_the_deploy_unit_with_the_binary_in_usr_bin() {
    let deploy =
        std::fs::read_to_string(repo().join("deploy/systemd/tokenbroker.service")).unwrap();
    let packaged =
        std::fs::read_to_string(repo().join("deploy/debian/tokenbroker.service")).unwrap();
    assert!(
        deploy.contains(&format!("\nExecStart={FROM_SOURCE} ")),
        "the deploy unit runs {FROM_SOURCE}"
    );
    let expected = deploy.replace(FROM_SOURCE, PACKAGED);
    assert!(
        packaged == expected,
        "deploy/debian/tokenbroker.service must be deploy/systemd/tokenbroker.service with \
         {FROM_SOURCE} as {PACKAGED} and no other change; at {}\nRegenerate it:\n  \
         sed 's|{FROM_SOURCE}|{PACKAGED}|' deploy/systemd/tokenbroker.service > \
         deploy/debian/tokenbroker.service",
        first_difference(&packaged, &expected)
    );
    // The package ships that unit, and the manual pages committed beside it.
    let assets = deb_assets();
    assert_eq!(
        assets.get(UNIT.trim_start_matches('/')).map(String::as_str),
        Some("deploy/debian/tokenbroker.service"),
        "{assets:#?}"
    );
    assert_eq!(
        assets.get("usr/share/man/man1/").map(String::as_str),
        Some("deploy/debian/man/*.1"),
        "{assets:#?}"
    );
}

/// Manual pages by file name.
fn pages(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect()
}

/// A page as compared: byte for byte, but for what names the build rather
/// than the source. The `.TH` line keeps its title and section and whether
/// it names this version (clap_mangen puts the version, and any date or
/// commit the binary reports, there); a line with the version keeps what
/// comes up to it (the VERSION section's `v0.1.0 (commit …)`). A new version
/// asks for new pages; a new commit does not.
fn normalized(page: &str) -> String {
    let version = env!("CARGO_PKG_VERSION");
    page.lines()
        .map(|line| {
            if line.starts_with(".TH ") {
                let head: Vec<&str> = line.split_whitespace().take(3).collect();
                let names = line.contains(&format!("{PACKAGE} {version}"));
                format!("{} [names the version: {names}]", head.join(" "))
            } else if let Some(at) = line.find(version) {
                format!("{}…", &line[..at + version.len()])
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// deploy/debian/man is what `tokenbroker man --out` writes now: the
/// package ships those files (cargo-deb runs no build step of ours), so a
/// change to a command or its help must reach them.
#[test]
fn the_committed_manual_pages_are_the_ones_the_binary_writes() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tokenbroker"))
        .args(["man", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", said(&out));
    let written = pages(dir.path());
    let committed = pages(&repo().join("deploy/debian/man"));
    let names = |p: &BTreeMap<String, String>| p.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&committed),
        names(&written),
        "deploy/debian/man has other pages than `tokenbroker man --out` writes. Regenerate them:\n  \
         {REGENERATE_MAN}"
    );
    for (name, page) in &written {
        let (mine, theirs) = (normalized(&committed[name]), normalized(page));
        assert!(
            mine == theirs,
            "deploy/debian/man/{name} is not what the binary writes; at {}\nRegenerate them:\n  \
             {REGENERATE_MAN}",
            first_difference(&mine, &theirs)
        );
    }
    // The main page names the version (so the check above is not vacuous).
    assert!(
        normalized(&written["tokenbroker.1"]).contains("[names the version: true]"),
        "{}",
        written["tokenbroker.1"]
    );
}

/// What of tokenbroker is on this machine already: the package known to
/// dpkg, or the files a from-source install or an earlier run leaves.
fn already_here() -> Vec<String> {
    let mut found = Vec::new();
    if let Some(status) = package_status() {
        found.push(format!("dpkg knows package {PACKAGE} ({status})"));
    }
    for path in [
        PACKAGED,
        FROM_SOURCE,
        UNIT,
        "/etc/systemd/system/tokenbroker.service",
        "/etc/tokenbroker",
        "/var/lib/tokenbroker",
        "/run/tokenbroker",
    ] {
        if Path::new(path).symlink_metadata().is_ok() {
            found.push(format!("{path} exists"));
        }
    }
    found
}

/// dpkg's abbreviated status of the package (`ii`, `rc`…), None when it is
/// neither installed nor has its configuration files.
fn package_status() -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Abbrev}", PACKAGE])
        .output()
        .unwrap();
    let status = text(&out.stdout).trim().to_owned();
    // The second letter is the state: n is not installed.
    (out.status.success() && status.chars().nth(1).is_some_and(|c| c != 'n')).then_some(status)
}

/// `getent DATABASE NAME`, split at the colons.
fn getent(database: &str, name: &str) -> Option<Vec<String>> {
    let out = Command::new("getent")
        .args([database, name])
        .output()
        .unwrap();
    out.status.success().then(|| {
        text(&out.stdout)
            .trim()
            .split(':')
            .map(str::to_owned)
            .collect()
    })
}

/// Leaves the machine as the test found it, whatever assertion failed: the
/// package purged, and the user and groups removed if the test made them.
struct Cleanup {
    made: Vec<(&'static str, &'static str)>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if package_status().is_some() {
            let _ = Command::new("dpkg")
                .args(["--purge", PACKAGE])
                .stdin(Stdio::null())
                .output();
        }
        // The user first: its group goes with it, or just after.
        for (database, name) in &self.made {
            let tool = if *database == "passwd" {
                "userdel"
            } else {
                "groupdel"
            };
            if getent(database, name).is_some() {
                let _ = Command::new(tool).arg(name).output();
            }
        }
    }
}

/// Builds the package from the binary under test with `cargo deb --no-build`,
/// in `dir`. cargo-deb takes the binary from `<target dir>/<profile>` (the
/// `dist` profile's); a target directory of its own in `dir`, holding a copy
/// of the test build's binary, spares an optimised build (many minutes) and
/// stays clear of the target directory `cargo test` holds locked.
/// Returns the package and what its binary's `--version` printed.
fn build_package(dir: &Path) -> (PathBuf, String) {
    let target = dir.join("target");
    let built = target.join(deb_profile());
    std::fs::create_dir_all(&built).unwrap();
    let binary = built.join("tokenbroker");
    std::fs::copy(env!("CARGO_BIN_EXE_tokenbroker"), &binary).unwrap();
    let version = ok_once_written(Command::new(&binary).arg("--version"));
    let arch = ok(Command::new("dpkg").arg("--print-architecture"));
    let deb = dir.join(format!(
        "{PACKAGE}_{}-1_{}.deb",
        env!("CARGO_PKG_VERSION"),
        arch.trim()
    ));
    // --fast: xz's quick preset; the package is thrown away.
    ok(Command::new(env!("CARGO"))
        .args(["deb", "--no-build", "--fast", "--output"])
        .arg(&deb)
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(repo()));
    (deb, version)
}

fn mode_owner(path: &str) -> (u32, u32, u32) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    (meta.mode() & 0o7777, meta.uid(), meta.gid())
}

fn id_of(database: &str, name: &str) -> u32 {
    getent(database, name)
        .unwrap_or_else(|| panic!("no {name} in {database}"))
        .get(2)
        .and_then(|id| id.parse().ok())
        .unwrap()
}

/// Processes running the packaged binary.
fn packaged_processes() -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let exe = std::fs::read_link(entry.path().join("exe")).ok()?;
            exe.starts_with(PACKAGED)
                .then(|| entry.file_name().to_string_lossy().into_owned())
        })
        .collect()
}

#[test]
fn the_package_installs_creates_the_user_starts_nothing_and_removes_cleanly() {
    let tools = [
        "dpkg",
        "dpkg-deb",
        "systemd-analyze",
        "systemd-sysusers",
        "systemd-tmpfiles",
        "man",
    ];
    let has_cargo_deb = Command::new(env!("CARGO"))
        .args(["deb", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !common::available(
        "root, cargo-deb (`cargo install cargo-deb`) and dpkg, systemd and man-db",
        common::is_root() && has_cargo_deb && tools.iter().all(|t| common::has_program(t)),
    ) {
        return;
    }
    let _host = HOST.write().unwrap_or_else(|e| e.into_inner());
    let found = already_here();
    assert!(
        found.is_empty(),
        "tokenbroker is on this machine already ({}): this test installs the package and \
         purges it, which would replace or delete what is there. Remove it first \
         (`dpkg --purge {PACKAGE}`), or run the test on another machine.",
        found.join("; ")
    );
    let started = Instant::now();
    let made = [
        ("passwd", "tokenbroker"),
        ("group", "tokenbroker"),
        ("group", "tokenbroker-clients"),
    ]
    .into_iter()
    .filter(|(database, name)| getent(database, name).is_none())
    .collect();
    let _cleanup = Cleanup { made };

    let dir = tempfile::tempdir().unwrap();
    let (deb, packaged_version) = build_package(dir.path());
    let built = started.elapsed();
    let info = ok(Command::new("dpkg-deb").arg("--field").arg(&deb));
    assert!(info.contains(&format!("Package: {PACKAGE}\n")), "{info}");
    assert!(info.contains("Depends: libc6"), "{info}");

    let installing = ok(Command::new("dpkg")
        .arg("-i")
        .arg(&deb)
        .env("DEBIAN_FRONTEND", "noninteractive"));
    eprintln!("{installing}");

    // Every file, and nothing else.
    let man_pages: Vec<String> = pages(&repo().join("deploy/debian/man"))
        .into_keys()
        .map(|name| format!("/usr/share/man/man1/{name}.gz"))
        .collect();
    let mut expected: BTreeSet<String> = [
        PACKAGED,
        UNIT,
        "/usr/lib/sysusers.d/tokenbroker.conf",
        "/usr/lib/tmpfiles.d/tokenbroker.conf",
        CONFFILE,
        "/usr/share/doc/tokenbroker/README.md",
        "/usr/share/doc/tokenbroker/LICENSE-MIT",
        "/usr/share/doc/tokenbroker/LICENSE-APACHE",
        "/usr/share/doc/tokenbroker/copyright",
        "/usr/share/doc/tokenbroker/examples/tokenbroker.example.toml",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    expected.extend(man_pages.iter().cloned());
    let listed: BTreeSet<String> = ok(Command::new("dpkg").args(["-L", PACKAGE]))
        .lines()
        .filter(|path| !Path::new(path).is_dir())
        .map(str::to_owned)
        .collect();
    assert_eq!(listed, expected, "dpkg -L {PACKAGE}");
    for path in &expected {
        assert!(
            Path::new(path).is_file(),
            "{path} is listed but not installed (a dpkg path-exclude for /usr/share/man or doc?)"
        );
    }

    // The files are the repository's, with the modes the unit needs.
    for (installed, source) in [
        (UNIT, "deploy/debian/tokenbroker.service"),
        (
            "/usr/lib/sysusers.d/tokenbroker.conf",
            "deploy/systemd/tokenbroker.sysusers",
        ),
        (
            "/usr/lib/tmpfiles.d/tokenbroker.conf",
            "deploy/systemd/tokenbroker.tmpfiles",
        ),
        (CONFFILE, "deploy/systemd/tokenbroker.toml"),
        ("/usr/share/doc/tokenbroker/README.md", "README.md"),
        ("/usr/share/doc/tokenbroker/LICENSE-MIT", "LICENSE-MIT"),
        (
            "/usr/share/doc/tokenbroker/LICENSE-APACHE",
            "LICENSE-APACHE",
        ),
        (
            "/usr/share/doc/tokenbroker/copyright",
            "deploy/debian/copyright",
        ),
        (
            "/usr/share/doc/tokenbroker/examples/tokenbroker.example.toml",
            "config/tokenbroker.example.toml",
        ),
    ] {
        assert!(
            std::fs::read(installed).unwrap() == std::fs::read(repo().join(source)).unwrap(),
            "{installed} is not {source}"
        );
    }
    for page in &man_pages {
        let name = Path::new(page).file_stem().unwrap().to_string_lossy();
        let unpacked = ok(Command::new("gzip").args(["-dc", page]));
        let committed =
            std::fs::read_to_string(repo().join("deploy/debian/man").join(&*name)).unwrap();
        assert!(
            unpacked == committed,
            "{page} is not deploy/debian/man/{name}"
        );
    }
    let tokenbroker_gid = id_of("group", "tokenbroker");
    for path in expected.iter().filter(|p| p.starts_with("/usr/")) {
        let mode = if path == PACKAGED { 0o755 } else { 0o644 };
        assert_eq!(mode_owner(path), (mode, 0, 0), "{path}: mode, uid, gid");
    }
    // The daemon reads /etc/tokenbroker through its group; dpkg keeps that
    // across upgrades because the postinst registered statoverrides.
    assert_eq!(mode_owner("/etc/tokenbroker"), (0o750, 0, tokenbroker_gid));
    assert_eq!(mode_owner(CONFFILE), (0o640, 0, tokenbroker_gid));
    for (path, mode) in [("/etc/tokenbroker", "750"), (CONFFILE, "640")] {
        let listed = ok(Command::new("dpkg-statoverride").args(["--list", path]));
        assert_eq!(listed.trim(), format!("root tokenbroker {mode} {path}"));
    }
    // The configuration is dpkg's one conffile: an upgrade keeps its edits.
    let conffiles = ok(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", PACKAGE]));
    let md5 = ok(Command::new("md5sum").arg(CONFFILE));
    assert_eq!(
        conffiles.trim(),
        format!("{CONFFILE} {}", md5.split_whitespace().next().unwrap()),
        "dpkg-query -W -f='${{Conffiles}}' {PACKAGE}"
    );

    // The user and groups of the sysusers file, and the socket directory of
    // the tmpfiles file.
    let user = getent("passwd", "tokenbroker").expect("the package creates user tokenbroker");
    let uid: u32 = user[2].parse().unwrap();
    assert!(uid < 1000, "a system user: {user:?}");
    assert_eq!(user[3].parse::<u32>().unwrap(), tokenbroker_gid, "{user:?}");
    assert!(user[6].ends_with("nologin"), "{user:?}");
    let clients_gid = id_of("group", "tokenbroker-clients");
    assert_eq!(
        mode_owner("/run/tokenbroker"),
        (0o2750, uid, clients_gid),
        "/run/tokenbroker: mode, uid, gid"
    );

    // The installed unit verifies, silently, with the installed binary and
    // manual page (Documentation=man:tokenbroker(1)).
    let verify = Command::new("systemd-analyze")
        .args(["verify", UNIT])
        .env_remove("MANPATH")
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "systemd-analyze verify: {}",
        said(&verify)
    );
    assert!(
        said(&verify).trim().is_empty(),
        "systemd-analyze verify printed: {}",
        said(&verify)
    );

    // The installed binary is the one under test, and `check` explains the
    // example configuration (its certificate and keys do not exist yet) as
    // the daemon's user, who can read it.
    let version = ok(Command::new(PACKAGED).arg("--version"));
    assert_eq!(version, packaged_version);
    assert!(
        version.starts_with(&format!("tokenbroker {}", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    let check = {
        use std::os::unix::process::CommandExt;
        Command::new(PACKAGED)
            .args(["check", "--config", CONFFILE])
            .env_remove("TOKENBROKER_CONFIG")
            .current_dir("/")
            .uid(uid)
            .gid(tokenbroker_gid)
            .output()
            .unwrap()
    };
    let explained = said(&check);
    assert_eq!(check.status.code(), Some(2), "{explained}");
    assert!(
        ["cert.pem", "key.pem", "state.key"]
            .iter()
            .any(|file| explained.contains(&format!("/etc/tokenbroker/{file}"))),
        "check names a missing file of the example: {explained}"
    );
    assert!(
        !explained.contains(&format!("{CONFFILE}: Permission denied"))
            && !explained.contains("cannot read configuration"),
        "the daemon's user reads the configuration: {explained}"
    );

    // Installed, not enabled, not started.
    let enabled = Command::new("systemctl")
        .args(["is-enabled", "tokenbroker.service"])
        .output()
        .unwrap();
    assert_eq!(
        text(&enabled.stdout).trim(),
        "disabled",
        "{}",
        said(&enabled)
    );
    assert!(!Path::new("/etc/systemd/system/multi-user.target.wants/tokenbroker.service").exists());
    assert_eq!(
        packaged_processes(),
        Vec::<String>::new(),
        "tokenbroker runs"
    );
    if Path::new("/run/systemd/system").is_dir() {
        let active = Command::new("systemctl")
            .args(["is-active", "tokenbroker.service"])
            .output()
            .unwrap();
        assert_eq!(text(&active.stdout).trim(), "inactive", "{}", said(&active));
    }

    // What a first start leaves: the state directory (StateDirectory=).
    let state = Path::new("/var/lib/tokenbroker");
    std::fs::create_dir(state).unwrap();
    std::fs::write(state.join("cache.sealed"), b"sealed tokens").unwrap();
    std::os::unix::fs::chown(state, Some(uid), Some(tokenbroker_gid)).unwrap();

    // Remove: the program goes; the configuration and the state stay.
    ok(Command::new("dpkg").args(["-r", PACKAGE]));
    for path in [PACKAGED, UNIT, DOC] {
        assert!(!Path::new(path).exists(), "{path} outlived dpkg -r");
    }
    assert!(!Path::new(&man_pages[0]).exists());
    assert_eq!(
        std::fs::read(CONFFILE).unwrap(),
        std::fs::read(repo().join("deploy/systemd/tokenbroker.toml")).unwrap(),
        "dpkg -r keeps {CONFFILE}"
    );
    assert!(
        state.join("cache.sealed").is_file(),
        "dpkg -r keeps {}",
        state.display()
    );
    assert_eq!(package_status().as_deref(), Some("rc"));

    // Purge: the configuration, the state and the runtime directory go; the
    // user stays (Debian reuses no ids), until the cleanup.
    ok(Command::new("dpkg").args(["--purge", PACKAGE]));
    for path in [
        "/etc/tokenbroker",
        "/var/lib/tokenbroker",
        "/run/tokenbroker",
    ] {
        assert!(!Path::new(path).exists(), "{path} outlived dpkg --purge");
    }
    assert_eq!(package_status(), None);
    let overrides = ok(Command::new("dpkg-statoverride").arg("--list"));
    assert!(!overrides.contains("/etc/tokenbroker"), "{overrides}");
    assert!(getent("passwd", "tokenbroker").is_some());
    eprintln!(
        "the package: built in {built:?}, installed, checked and purged in {:?}",
        started.elapsed()
    );
}
