//! Loading and checking certificates and keys, end to end: files made by the
//! `openssl` command (and, where OpenSSL 3.0 cannot, by rcgen) are fed to the
//! real `tokenbroker` binary (`check`, `cert inspect`, `cert new`) and to the
//! library's `Credential::load`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};
use tokenbroker::credentials::{
    self, CertificateInfo, Credential, CredentialError, CredentialSource, PasswordSource,
};

const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
const PASSWORD: &str = "correct horse battery staple";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Runs `openssl ARGS` in `dir`; panics with its stderr when it fails.
/// These tests make keys and certificates in every form with the real
/// `openssl` command.
fn openssl_available() -> bool {
    common::available(
        "the openssl command (Debian package openssl)",
        common::has_program("openssl"),
    )
}

fn openssl(dir: &Path, args: &[&str]) -> Output {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl {args:?}: {e}"));
    assert!(
        output.status.success(),
        "openssl {args:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Generates an RSA key (PKCS#8 PEM) of `bits` bits as `dir/name`.
fn rsa_key(dir: &Path, name: &str, bits: u32) -> PathBuf {
    let bits_opt = format!("rsa_keygen_bits:{bits}");
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            &bits_opt,
            "-out",
            name,
        ],
    );
    dir.join(name)
}

/// Generates a P-256 EC key (PKCS#8 PEM) as `dir/name`.
fn ec_key(dir: &Path, name: &str) -> PathBuf {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            name,
        ],
    );
    dir.join(name)
}

/// A self-signed certificate `dir/name` for the key `dir/key`, valid `days` days.
fn self_signed(dir: &Path, key: &str, name: &str, subject: &str, days: u32) -> PathBuf {
    let days = days.to_string();
    openssl(
        dir,
        &[
            "req", "-x509", "-new", "-key", key, "-subj", subject, "-days", &days, "-out", name,
        ],
    );
    dir.join(name)
}

/// The usual pair: `key.pem` (2048-bit PKCS#8) and `cert.pem` (365 days).
fn key_and_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let key = rsa_key(dir, "key.pem", 2048);
    let cert = self_signed(dir, "key.pem", "cert.pem", "/CN=test", 365);
    (key, cert)
}

/// Writes `dir/tokenbroker.toml` naming the files relative to `dir`.
fn write_config(dir: &Path, cert: &str, key: Option<&str>, password_env: Option<&str>) -> PathBuf {
    let mut text = format!("[app]\nclient_id = \"{CLIENT_ID}\"\ncertificate = \"{cert}\"\n");
    if let Some(key) = key {
        text.push_str(&format!("private_key = \"{key}\"\n"));
    }
    if let Some(var) = password_env {
        text.push_str(&format!("private_key_password_env = \"{var}\"\n"));
    }
    let path = dir.join("tokenbroker.toml");
    fs::write(&path, text).unwrap();
    path
}

fn tokenbroker() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tokenbroker"))
}

/// Runs `tokenbroker check --config CONFIG` with `set` added to and `unset`
/// removed from its environment.
fn check(config: &Path, set: &[(&str, &str)], unset: &[&str]) -> Output {
    let mut cmd = tokenbroker();
    cmd.arg("check").arg("--config").arg(config);
    for (k, v) in set {
        cmd.env(k, v);
    }
    for k in unset {
        cmd.env_remove(k);
    }
    cmd.output().expect("run tokenbroker check")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn describe(o: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        o.status,
        stdout(o),
        stderr(o)
    )
}

/// `check` succeeded and said "ok"; returns its stderr (warnings).
fn assert_check_ok(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(0), "check failed:\n{}", describe(o));
    assert!(
        stdout(o).lines().any(|l| l == "ok"),
        "no \"ok\" line:\n{}",
        describe(o)
    );
    stderr(o)
}

/// `check` failed with exit code 2, and its error names `path` and contains
/// each of `words`. Returns stderr.
fn assert_check_fails(o: &Output, path: &Path, words: &[&str]) -> String {
    assert_eq!(
        o.status.code(),
        Some(2),
        "expected exit 2:\n{}",
        describe(o)
    );
    assert!(
        !stdout(o).lines().any(|l| l == "ok"),
        "failed check printed ok:\n{}",
        describe(o)
    );
    let err = stderr(o);
    assert!(
        err.starts_with("error: "),
        "stderr is not an error:\n{}",
        describe(o)
    );
    let shown = path.display().to_string();
    assert!(
        err.contains(&shown),
        "error does not name {shown}:\n{}",
        describe(o)
    );
    for word in words {
        assert!(
            err.contains(word),
            "error does not mention {word:?}:\n{}",
            describe(o)
        );
    }
    err
}

fn source(cert: &Path, key: Option<&Path>) -> CredentialSource {
    CredentialSource::files(cert, key)
}

fn password(variable: &str, value: &str) -> PasswordSource {
    PasswordSource {
        origin: format!("environment variable {variable}"),
        value: Ok(zeroize::Zeroizing::new(value.to_owned())),
    }
}

/// `openssl x509 -fingerprint -sha1` as upper-case hex without colons.
fn openssl_thumbprint(dir: &Path, cert: &Path, inform: &str) -> String {
    let o = openssl(
        dir,
        &[
            "x509",
            "-noout",
            "-fingerprint",
            "-sha1",
            "-inform",
            inform,
            "-in",
            cert.to_str().unwrap(),
        ],
    );
    let text = String::from_utf8(o.stdout).unwrap();
    let (_, hex) = text
        .trim()
        .split_once('=')
        .unwrap_or_else(|| panic!("unexpected openssl output {text:?}"));
    let hex = hex.replace(':', "").to_ascii_uppercase();
    assert_eq!(hex.len(), 40, "not a SHA-1: {text:?}");
    hex
}

/// Deterministic bytes that are no certificate or key format (xorshift).
fn garbage(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Writes a certificate and key made with rcgen, valid over [from, to].
fn rcgen_pair(dir: &Path, from: (i32, u8, u8), to: (i32, u8, u8)) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .expect("generate RSA key");
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "rcgen-test");
    params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
    params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
    let cert = params.self_signed(&key).expect("self-sign");
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    fs::write(&cert_path, cert.pem()).unwrap();
    fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

// ---------------------------------------------------------------------------
// 1. Forms that load
// ---------------------------------------------------------------------------

#[test]
fn pkcs8_key_loads() {
    if !openssl_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (key, cert) = key_and_cert(dir);
    assert!(fs::read_to_string(&key)
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));

    let config = write_config(dir, "cert.pem", Some("key.pem"), None);
    let err = assert_check_ok(&check(&config, &[], &[]));
    assert!(!err.contains("warning"), "unexpected warning: {err}");

    let loaded = Credential::load(&source(&cert, Some(&key)), SystemTime::now()).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let info = loaded.credential.certificate().unwrap();
    assert_eq!(info.key_algorithm, "RSA");
    assert_eq!(info.key_bits, 2048);
    assert_eq!(info.subject, "CN=test");
    assert_eq!(info.thumbprint_sha1, openssl_thumbprint(dir, &cert, "PEM"));
    assert_eq!(loaded.credential.chain().len(), 1);
    assert_eq!(loaded.credential.chain()[0], info.der);
    // The key never shows in Debug.
    let debug = format!("{:?}", loaded.credential);
    assert!(debug.contains("[redacted]"), "{debug}");
}

#[test]
fn pkcs1_key_loads() {
    if !openssl_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, cert) = key_and_cert(dir);
    openssl(
        dir,
        &["rsa", "-in", "key.pem", "-traditional", "-out", "key1.pem"],
    );
    let key1 = dir.join("key1.pem");
    assert!(fs::read_to_string(&key1)
        .unwrap()
        .starts_with("-----BEGIN RSA PRIVATE KEY-----"));

    let config = write_config(dir, "cert.pem", Some("key1.pem"), None);
    assert_check_ok(&check(&config, &[], &[]));

    let loaded = Credential::load(&source(&cert, Some(&key1)), SystemTime::now()).unwrap();
    assert_eq!(loaded.credential.certificate().unwrap().key_bits, 2048);
}

#[test]
fn encrypted_pkcs8_key_loads_with_password_variable() {
    if !openssl_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, cert) = key_and_cert(dir);
    encrypt_key(dir, "key-enc.pem", &["-v2", "aes-256-cbc"]);
    let key_enc = dir.join("key-enc.pem");
    assert!(fs::read_to_string(&key_enc)
        .unwrap()
        .starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));

    let var = "TB_TEST_PW_ENC_OK";
    let config = write_config(dir, "cert.pem", Some("key-enc.pem"), Some(var));
    assert_check_ok(&check(&config, &[(var, PASSWORD)], &[]));

    // Library: the decrypted key is the certificate's.
    let info = CertificateInfo::from_der(&pem_der(&cert)).unwrap();
    assert!(credentials::key_matches(&info, &key_enc, Some(&password(var, PASSWORD))).unwrap());
}

/// Encrypts `dir/key.pem` with PASSWORD into `dir/out`, as
/// `openssl pkcs8 -topk8 <scheme>` does.
fn encrypt_key(dir: &Path, out: &str, scheme: &[&str]) {
    let passout = format!("pass:{PASSWORD}");
    let mut args = vec![
        "pkcs8", "-topk8", "-in", "key.pem", "-out", out, "-passout", &passout,
    ];
    args.extend_from_slice(scheme);
    openssl(dir, &args);
}

/// The DER of the first PEM block of `path` (via openssl, to stay independent).
fn pem_der(cert: &Path) -> Vec<u8> {
    let dir = cert.parent().unwrap();
    let o = openssl(
        dir,
        &["x509", "-in", cert.to_str().unwrap(), "-outform", "DER"],
    );
    o.stdout
}

/// Makes `dir/name` from key.pem and cert.pem (plus `extra` arguments).
fn pfx(dir: &Path, name: &str, pass: &str, extra: &[&str]) -> PathBuf {
    let passout = format!("pass:{pass}");
    let mut args = vec![
        "pkcs12", "-export", "-inkey", "key.pem", "-in", "cert.pem", "-out", name, "-passout",
        &passout,
    ];
    args.extend_from_slice(extra);
    openssl(dir, &args);
    dir.join(name)
}

#[test]
fn pfx_modern_loads() {
    if !openssl_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, cert) = key_and_cert(dir);
    let bundle = pfx(dir, "cert.pfx", PASSWORD, &[]);

    let var = "TB_TEST_PW_PFX_OK";
    let config = write_config(dir, "cert.pfx", None, Some(var));
    let o = check(&config, &[(var, PASSWORD)], &[]);
    assert_check_ok(&o);
    let thumbprint = openssl_thumbprint(dir, &cert, "PEM");
    assert!(stdout(&o).contains(&thumbprint), "{}", describe(&o));

    let (infos, key_matches) =
        credentials::inspect_file(&bundle, Some(&password(var, PASSWORD))).expect("inspect PFX");
    assert_eq!(key_matches, Some(true));
    assert_eq!(infos[0].thumbprint_sha1, thumbprint);
}

#[test]
fn pfx_legacy_loads() {
    if !openssl_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, cert) = key_and_cert(dir);
    // No skipping: a machine whose OpenSSL cannot write legacy PFX fails here
    // with openssl's message, which names the missing legacy provider.
    let o = Command::new("openssl")
        .current_dir(dir)
        .args([
            "pkcs12",
            "-export",
            "-legacy",
            "-inkey",
            "key.pem",
            "-in",
            "cert.pem",
            "-out",
            "legacy.pfx",
            "-passout",
        ])
        .arg(format!("pass:{PASSWORD}"))
        .output()
        .expect("run openssl");
    assert!(
        o.status.success(),
        "`openssl pkcs12 -export -legacy` failed: this OpenSSL lacks the legacy provider \
         (RC2/3DES), so the legacy PFX path cannot be tested here. Install it (e.g. the \
         ossl-modules/legacy.so of OpenSSL 3) and rerun.\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let bundle = dir.join("legacy.pfx");

    let var = "TB_TEST_PW_LEGACY_OK";
    let config = write_config(dir, "legacy.pfx", None, Some(var));
    let o = check(&config, &[(var, PASSWORD)], &[]);
    assert_check_ok(&o);
    let thumbprint = openssl_thumbprint(dir, &cert, "PEM");
    assert!(stdout(&o).contains(&thumbprint), "{}", describe(&o));

    let (infos, key_matches) = credentials::inspect_file(&bundle, Some(&password(var, PASSWORD)))
        .expect("inspect legacy PFX");
    assert_eq!(key_matches, Some(true));
    assert_eq!(infos[0].thumbprint_sha1, thumbprint);
}

#[test]
fn pfx_with_empty_password_loads_without_password_variable() {
    if !openssl_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, cert) = key_and_cert(dir);
    let bundle = pfx(dir, "nopass.pfx", "", &[]);

    let config = write_config(dir, "nopass.pfx", None, None);
    assert_check_ok(&check(&config, &[], &[]));

    let loaded = Credential::load(&source(&bundle, None), SystemTime::now()).unwrap();
    assert_eq!(
        loaded.credential.certificate().unwrap().thumbprint_sha1,
        openssl_thumbprint(dir, &cert, "PEM")
    );
}

/// A CA (`ca.key`, `ca.pem`) and a leaf `leaf.pem` for `key.pem`, signed by it.
fn ca_and_leaf(dir: &Path) {
    rsa_key(dir, "key.pem", 2048);
    rsa_key(dir, "ca.key", 2048);
    self_signed(dir, "ca.key", "ca.pem", "/CN=test CA", 365);
    openssl(
        dir,
        &[
            "req", "-new", "-key", "key.pem", "-subj", "/CN=leaf", "-out", "leaf.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "2",
            "-days",
            "365",
            "-out",
            "leaf.pem",
        ],
    );
}

#[test]
fn pem_chain_with_leaf_first_loads() {
    if !openssl_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ca_and_leaf(dir);
    let leaf = fs::read_to_string(dir.join("leaf.pem")).unwrap();
    let ca = fs::read_to_string(dir.join("ca.pem")).unwrap();
    let chain = dir.join("chain.pem");
    fs::write(&chain, format!("{leaf}{ca}")).unwrap();

    let config = write_config(dir, "chain.pem", Some("key.pem"), None);
    let o = check(&config, &[], &[]);
    assert_check_ok(&o);
    assert!(
        stdout(&o).contains("credential: CN=leaf"),
        "{}",
        describe(&o)
    );

    let key = dir.join("key.pem");
    let loaded = Credential::load(&source(&chain, Some(&key)), SystemTime::now()).unwrap();
    let credential = &loaded.credential;
    assert_eq!(credential.certificate().unwrap().subject, "CN=leaf");
    assert_eq!(credential.certificate().unwrap().issuer, "CN=test CA");
    assert_eq!(credential.chain().len(), 2);
    assert_eq!(credential.chain()[1], pem_der(&dir.join("ca.pem")));

    // Documented: in a PEM chain the leaf must come first; CA first is a mismatch.
    let reversed = dir.join("reversed.pem");
    fs::write(&reversed, format!("{ca}{leaf}")).unwrap();
    let config = write_config(dir, "reversed.pem", Some("key.pem"), None);
    assert_check_fails(&check(&config, &[], &[]), &reversed, &["does not match"]);
}

#[test]
fn pfx_with_chain_finds_the_leaf() {
    if !openssl_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ca_and_leaf(dir);
    // The bundle holds the leaf and its CA; the loader must pick the leaf.
    let passout = format!("pass:{PASSWORD}");
    openssl(
        dir,
        &[
            "pkcs12",
            "-export",
            "-inkey",
            "key.pem",
            "-in",
            "leaf.pem",
            "-certfile",
            "ca.pem",
            "-out",
            "chain.pfx",
            "-passout",
            &passout,
        ],
    );
    let var = "TB_TEST_PW_PFX_CHAIN";
    let config = write_config(dir, "chain.pfx", None, Some(var));
    let o = check(&config, &[(var, PASSWORD)], &[]);
    assert_check_ok(&o);
    let thumbprint = openssl_thumbprint(dir, &dir.join("leaf.pem"), "PEM");
    assert!(
        stdout(&o).contains(&format!("credential: CN=leaf (thumbprint {thumbprint}")),
        "{}",
        describe(&o)
    );

    let (infos, key_matches) =
        credentials::inspect_file(&dir.join("chain.pfx"), Some(&password(var, PASSWORD)))
            .expect("inspect PFX chain");
    assert_eq!(key_matches, Some(true));
    assert_eq!(infos.len(), 2);
    assert_eq!(infos[0].thumbprint_sha1, thumbprint);
    assert_eq!(infos[1].subject, "CN=test CA");
}

#[test]
fn certificate_expiring_in_10_days_loads_with_warning() {
    if !openssl_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    rsa_key(dir, "key.pem", 2048);
    let cert = self_signed(dir, "key.pem", "cert.pem", "/CN=test", 10);

    let config = write_config(dir, "cert.pem", Some("key.pem"), None);
    let err = assert_check_ok(&check(&config, &[], &[]));
    assert!(
        err.contains("warning:") && err.contains("expires"),
        "no expiry warning on stderr: {err:?}"
    );
    assert!(err.contains(&cert.display().to_string()), "{err}");

    let key = dir.join("key.pem");
    let loaded = Credential::load(&source(&cert, Some(&key)), SystemTime::now()).unwrap();
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(loaded.warnings[0].contains("expires"));
    // 10 days minus the seconds since openssl made it: "in 9 days".
    assert!(
        loaded.warnings[0].contains("(in 9 days)"),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn validity_is_judged_at_the_given_time() {
    if !openssl_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (key, cert) = key_and_cert(dir);
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);

    let soon = Credential::load(&source(&cert, Some(&key)), now + 350 * day).unwrap();
    assert_eq!(soon.warnings.len(), 1);

    match Credential::load(&source(&cert, Some(&key)), now + 400 * day) {
        Err(CredentialError::Expired { path, .. }) => assert_eq!(path, cert),
        other => panic!("expected Expired, got {other:?}"),
    }
    match Credential::load(&source(&cert, Some(&key)), now - 2 * day) {
        Err(CredentialError::NotYetValid { path, .. }) => assert_eq!(path, cert),
        other => panic!("expected NotYetValid, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// 2. Forms that are refused, with exit code 2 and the file named
// ---------------------------------------------------------------------------

#[test]
fn missing_key_file_is_refused() {
    if !openssl_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    key_and_cert(dir);
    let config = write_config(dir, "cert.pem", Some("no-such-key.pem"), None);
    assert_check_fails(
        &check(&config, &[], &[]),
        &dir.join("no-such-key.pem"),
        &["cannot read"],
    );
}

#[test]
fn garbage_key_file_is_refused() {
    if !openssl_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    key_and_cert(dir);
    let garbage_key = dir.join("garbage.pem");
    fs::write(&garbage_key, garbage(1200, 0x5eed_0001)).unwrap();
    let config = write_config(dir, "cert.pem", Some("garbage.pem"), None);
    assert_check_fails(
        &check(&config, &[], &[]),
        &garbage_key,
        &["is not a PEM file"],
    );
}

#[test]
fn garbage_certificate_file_is_refused() {
    if !openssl_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    key_and_cert(dir);
    let garbage_cert = dir.join("garbage.crt");
    let mut bytes = garbage(1200, 0x5eed_0002);
    bytes[0] = 0xa5; // not a DER SEQUENCE
    fs::write(&garbage_cert, &bytes).unwrap();
    let config = write_config(dir, "garbage.crt", Some("key.pem"), None);
    assert_check_fails(
        &check(&config, &[], &[]),
        &garbage_cert,
        &["is neither PEM, a DER certificate, nor a PFX/PKCS#12 file"],
    );

    // Garbage that starts like DER goes down the PFX path; still refused, named.
    bytes[0] = 0x30;
    fs::write(&garbage_cert, &bytes).unwrap();
    assert_check_fails(&check(&config, &[], &[]), &garbage_cert, &[]);
}

#[test]
fn key_not_matching_certificate_is_refused() {
    if !openssl_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, cert) = key_and_cert(dir);
    let other = rsa_key(dir, "other.pem", 2048);
    let config = write_config(dir, "cert.pem", Some("other.pem"), None);
    let err = assert_check_fails(&check(&config, &[], &[]), &other, &["does not match"]);
    assert!(err.contains(&cert.display().to_string()), "{err}");
    assert!(
        err.contains(&openssl_thumbprint(dir, &cert, "PEM")),
        "no thumbprint: {err}"
    );
}

#[test]
fn rsa_1024_key_is_refused() {
    if !openssl_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let key = rsa_key(dir, "small.pem", 1024);
    self_signed(dir, "small.pem", "small-cert.pem", "/CN=small", 365);
    let config = write_config(dir, "small-cert.pem", Some("small.pem"), None);
    assert_check_fails(&check(&config, &[], &[]), &key, &["1024-bit", "2048"]);
}

#[test]
fn ec_key_with_rsa_certificate_is_refused() {
    if !openssl_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    key_and_cert(dir);
    let ec = ec_key(dir, "ec.pem");
    let config = write_config(dir, "cert.pem", Some("ec.pem"), None);
    assert_check_fails(&check(&config, &[], &[]), &ec, &["EC", "RSA keys only"]);

    // The traditional "BEGIN EC PRIVATE KEY" form too.
    openssl(dir, &["ec", "-in", "ec.pem", "-out", "ec-trad.pem"]);
    let ec_trad = dir.join("ec-trad.pem");
    assert!(fs::read_to_string(&ec_trad)
        .unwrap()
        .starts_with("-----BEGIN EC PRIVATE KEY-----"));
    let config = write_config(dir, "cert.pem", Some("ec-trad.pem"), None);
    assert_check_fails(
        &check(&config, &[], &[]),
        &ec_trad,
        &["EC", "RSA keys only"],
    );
}

#[test]
fn ec_certificate_and_key_are_refused() {
    if !openssl_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ec = ec_key(dir, "ec.pem");
    let cert = self_signed(dir, "ec.pem", "ec-cert.pem", "/CN=ec", 365);
    let config = write_config(dir, "ec-cert.pem", Some("ec.pem"), None);
    // The key is checked first, so the key file is the one named.
    assert_check_fails(&check(&config, &[], &[]), &ec, &["EC", "RSA keys only"]);

    // The certificate alone is recognised as EC by the library.
    let info = CertificateInfo::from_der(&pem_der(&cert)).unwrap();
    assert_eq!(info.key_algorithm, "EC");
    assert_eq!(info.key_bits, 0);

    // An EC certificate with an RSA key: the certificate is named.
    rsa_key(dir, "key.pem", 2048);
    let config = write_config(dir, "ec-cert.pem", Some("key.pem"), None);
    assert_check_fails(&check(&config, &[], &[]), &cert, &["EC", "RSA keys only"]);
}

#[test]
fn expired_certificate_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (cert, _) = rcgen_pair(dir, (2020, 1, 1), (2021, 1, 1));
    let config = write_config(dir, "cert.pem", Some("key.pem"), None);
    assert_check_fails(
        &check(&config, &[], &[]),
        &cert,
        &["expired", "2021-01-01T00:00:00Z", "tokenbroker cert new"],
    );
}

#[test]
fn not_yet_valid_certificate_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (cert, _) = rcgen_pair(dir, (2090, 1, 1), (2091, 1, 1));
    let config = write_config(dir, "cert.pem", Some("key.pem"), None);
    assert_check_fails(
        &check(&config, &[], &[]),
        &cert,
        &["not valid before", "2090-01-01T00:00:00Z"],
    );
}

#[test]
fn wrong_password_for_encrypted_key_is_refused() {
    if !openssl_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    key_and_cert(dir);
    encrypt_key(dir, "key-enc.pem", &["-v2", "aes-256-cbc"]);
    let key_enc = dir.join("key-enc.pem");
    let var = "TB_TEST_PW_ENC_WRONG";
    let config = write_config(dir, "cert.pem", Some("key-enc.pem"), Some(var));
    let err = assert_check_fails(
        &check(&config, &[(var, "not the password")], &[]),
        &key_enc,
        &["wrong password", var],
    );
    assert!(!err.contains("not the password"), "password leaked: {err}");
}

#[test]
fn wrong_password_for_pfx_is_refused() {
    if !openssl_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    key_and_cert(dir);
    let bundle = pfx(dir, "cert.pfx", PASSWORD, &[]);
    let var = "TB_TEST_PW_PFX_WRONG";
    let config = write_config(dir, "cert.pfx", None, Some(var));
    let err = assert_check_fails(
        &check(&config, &[(var, "not the password")], &[]),
        &bundle,
        &["wrong password", var],
    );
    assert!(!err.contains("not the password"), "password leaked: {err}");

    // Legacy (RC2/3DES) bundles too.
    let legacy = pfx(dir, "legacy.pfx", PASSWORD, &["-legacy"]);
    let config = write_config(dir, "legacy.pfx", None, Some(var));
    assert_check_fails(
        &check(&config, &[(var, "not the password")], &[]),
        &legacy,
        &["wrong password", var],
    );
}

#[test]
fn unset_password_variable_is_refused() {
    if !openssl_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    key_and_cert(dir);
    encrypt_key(dir, "key-enc.pem", &["-v2", "aes-256-cbc"]);
    let var = "TB_TEST_PW_UNSET";
    let config = write_config(dir, "cert.pem", Some("key-enc.pem"), Some(var));
    assert_check_fails(
        &check(&config, &[], &[var]),
        &dir.join("key-enc.pem"),
        &[var, "is not set"],
    );

    let bundle = pfx(dir, "cert.pfx", PASSWORD, &[]);
    let config = write_config(dir, "cert.pfx", None, Some(var));
    assert_check_fails(&check(&config, &[], &[var]), &bundle, &[var, "is not set"]);
}

#[test]
fn encrypted_key_without_password_variable_is_refused() {
    if !openssl_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    key_and_cert(dir);
    encrypt_key(dir, "key-enc.pem", &["-v2", "aes-256-cbc"]);
    let config = write_config(dir, "cert.pem", Some("key-enc.pem"), None);
    assert_check_fails(
        &check(&config, &[], &[]),
        &dir.join("key-enc.pem"),
        &["password-protected", "private_key_password_env"],
    );

    let bundle = pfx(dir, "cert.pfx", PASSWORD, &[]);
    let config = write_config(dir, "cert.pfx", None, None);
    assert_check_fails(
        &check(&config, &[], &[]),
        &bundle,
        &["password-protected", "private_key_password_env"],
    );
}

// ---------------------------------------------------------------------------
// 3. cert inspect
// ---------------------------------------------------------------------------

fn inspect(cert: &Path) -> Output {
    tokenbroker()
        .args(["cert", "inspect"])
        .arg(cert)
        .output()
        .expect("run tokenbroker cert inspect")
}

/// The thumbprint `cert inspect` printed.
fn inspected_thumbprint(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(0), "inspect failed:\n{}", describe(o));
    let text = stdout(o);
    let line = text
        .lines()
        .find(|l| l.starts_with("thumbprint:"))
        .unwrap_or_else(|| panic!("no thumbprint line:\n{}", describe(o)));
    line["thumbprint:".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn cert_inspect_thumbprint_matches_openssl_for_pem() {
    if !openssl_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, cert) = key_and_cert(dir);
    let o = inspect(&cert);
    assert_eq!(
        inspected_thumbprint(&o),
        openssl_thumbprint(dir, &cert, "PEM")
    );
    let text = stdout(&o);
    assert!(text.contains("subject:        CN=test"), "{text}");
    assert!(text.contains("key:            RSA 2048 bits"), "{text}");
    assert!(text.contains("status:         valid"), "{text}");
}

#[test]
fn cert_inspect_thumbprint_matches_openssl_for_der() {
    if !openssl_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    key_and_cert(dir);
    openssl(
        dir,
        &[
            "x509", "-in", "cert.pem", "-outform", "DER", "-out", "cert.der",
        ],
    );
    let der = dir.join("cert.der");
    assert_eq!(
        inspected_thumbprint(&inspect(&der)),
        openssl_thumbprint(dir, &der, "DER")
    );

    // Library agrees, on the raw DER bytes.
    let info = CertificateInfo::from_der(&fs::read(&der).unwrap()).unwrap();
    assert_eq!(info.thumbprint_sha1, openssl_thumbprint(dir, &der, "DER"));
}

// ---------------------------------------------------------------------------
// 4. cert new
// ---------------------------------------------------------------------------

#[test]
fn cert_new_makes_a_pair_openssl_accepts_and_that_loads() {
    if !openssl_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out_dir = dir.join("out");
    let new = |force: bool| {
        let mut cmd = tokenbroker();
        cmd.args(["cert", "new", "--subject", "CN=tbtest", "--out"])
            .arg(&out_dir);
        if force {
            cmd.arg("--force");
        }
        cmd.output().expect("run tokenbroker cert new")
    };

    let o = new(false);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let cert = out_dir.join("cert.pem");
    let key = out_dir.join("key.pem");
    assert!(cert.is_file() && key.is_file(), "{}", describe(&o));

    let subject = openssl(
        dir,
        &["x509", "-in", cert.to_str().unwrap(), "-noout", "-subject"],
    );
    let subject = String::from_utf8(subject.stdout).unwrap();
    assert!(subject.contains("CN = tbtest"), "{subject}");

    openssl(
        dir,
        &["rsa", "-in", key.to_str().unwrap(), "-check", "-noout"],
    );

    // The thumbprint it announces is the certificate's.
    assert!(
        stdout(&o).contains(&openssl_thumbprint(dir, &cert, "PEM")),
        "{}",
        describe(&o)
    );

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "key.pem mode {mode:o}");
    }

    // The pair loads back.
    let config = write_config(&out_dir, "cert.pem", Some("key.pem"), None);
    let err = assert_check_ok(&check(&config, &[], &[]));
    assert!(!err.contains("warning"), "{err}");

    // Again without --force: refused, files untouched.
    let before = (fs::read(&cert).unwrap(), fs::read(&key).unwrap());
    let o = new(false);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    assert!(stderr(&o).contains("--force"), "{}", describe(&o));
    assert_eq!(before, (fs::read(&cert).unwrap(), fs::read(&key).unwrap()));

    // With --force: replaced by a new pair.
    let o = new(true);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert_ne!(before.1, fs::read(&key).unwrap());
    assert_check_ok(&check(&config, &[], &[]));
}

// ---------------------------------------------------------------------------
// Regressions: bugs found while writing these tests.
// ---------------------------------------------------------------------------

#[cfg(unix)]
#[test]
fn cert_new_force_leaves_key_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let new = || {
        tokenbroker()
            .args(["cert", "new", "--subject", "CN=tbtest", "--force", "--out"])
            .arg(&out_dir)
            .output()
            .expect("run tokenbroker cert new")
    };
    let o = new();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let key = out_dir.join("key.pem");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let o = new();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "new private key left with mode {mode:o}");
}

#[test]
fn key_encrypted_with_unsupported_scheme_says_so() {
    if !openssl_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    key_and_cert(dir);
    let var = "TB_TEST_PW_SCHEME";
    // PBES2 with 3DES (OpenSSL's `-v2 des3`) is read; legacy PBES1 is
    // refused with advice to re-export.
    let des3 = "des3.pem";
    encrypt_key(dir, des3, &["-v2", "des3"]);
    let config = write_config(dir, "cert.pem", Some(des3), Some(var));
    let o = check(&config, &[(var, PASSWORD)], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let v1 = "v1.pem";
    encrypt_key(dir, v1, &["-v1", "PBE-SHA1-3DES"]);
    let config = write_config(dir, "cert.pem", Some(v1), Some(var));
    assert_check_fails(
        &check(&config, &[(var, PASSWORD)], &[]),
        &dir.join(v1),
        &["unsupported scheme", "aes-256-cbc"],
    );
}
