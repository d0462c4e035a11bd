//! The real `azure-identity` Python package, unmodified, against the
//! broker's App Service managed-identity endpoint (`/msi/token`).
//!
//! A virtualenv at `target/azure-sdk-venv` gets `azure-identity` from PyPI on
//! first use (once per test binary); `tests/azure_sdk/get_token.py` then runs
//! `ManagedIdentityCredential().get_token(...)` with only `IDENTITY_ENDPOINT`
//! and `IDENTITY_HEADER` pointing at an in-process broker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{claims, sha256_hex, Fixture, Server};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

const SECRET: &str = "tb_azure-sdk-test-secret-0123456789";
/// No SDK call may take longer than this (an SDK retrying a 404 takes ~25 s more).
const SDK_DEADLINE: Duration = Duration::from_secs(30);

/// Variables that would make the SDK pick another managed-identity source,
/// another credential, or a proxy.
const CLEARED_ENV: &[&str] = &[
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
];

/// The virtualenv's Python and what is installed in it.
#[derive(Debug)]
struct Sdk {
    python: PathBuf,
    /// `azure-identity X, msal Y`.
    versions: String,
}

static SDK: OnceLock<Result<Sdk, String>> = OnceLock::new();

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `command`, returning its stdout, or an error with its output.
fn run(command: &mut Command) -> Result<String, String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "{command:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn installed_versions(python: &Path) -> Result<String, String> {
    run(Command::new(python).args([
        "-c",
        "import azure.identity, msal; print('azure-identity', azure.identity.__version__ + ', msal', msal.__version__)",
    ]))
}

/// The azure-identity release the README's claims rest on.
const PINNED: &str = "1.27.0";

/// Makes sure the virtualenv exists with azure-identity installed (blocking).
fn install_sdk() -> Result<Sdk, String> {
    let venv = manifest_dir().join("target/azure-sdk-venv");
    let python = venv.join("bin/python");
    // The version the README says was verified; an older virtualenv is upgraded.
    if let Ok(versions) = installed_versions(&python) {
        if versions.contains(&format!("azure-identity {PINNED}")) {
            return Ok(Sdk { python, versions });
        }
    }
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))
        .map_err(|e| format!("creating the virtualenv {}: {e}", venv.display()))?;
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("azure-identity=={PINNED}"),
    ]))
    .map_err(|e| format!("installing azure-identity from PyPI: {e}"))?;
    let versions = installed_versions(&python)
        .map_err(|e| format!("azure-identity is still not importable after pip install: {e}"))?;
    Ok(Sdk { python, versions })
}

/// The installed SDK; installs it once per test binary. `None` (the test
/// skips, saying why) when python3 with venv or PyPI cannot be had here;
/// with `TOKENBROKER_TEST_ALL=1` that is a failure instead.
async fn sdk() -> Option<&'static Sdk> {
    let sdk = tokio::task::spawn_blocking(|| SDK.get_or_init(install_sdk))
        .await
        .expect("the install task panicked");
    match sdk {
        Ok(sdk) => {
            eprintln!("using {}", sdk.versions);
            Some(sdk)
        }
        Err(e) => {
            common::available(
                &format!("python3 with venv and PyPI, for the real azure-identity package ({e})"),
                false,
            );
            None
        }
    }
}

/// What `get_token.py` did.
#[derive(Debug)]
struct SdkRun {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl SdkRun {
    fn json(&self) -> serde_json::Value {
        let line = self.stdout.lines().last().unwrap_or_default();
        serde_json::from_str(line).unwrap_or_else(|e| {
            panic!(
                "get_token.py printed no JSON ({e}); exit {:?}\nstdout: {}\nstderr: {}",
                self.code, self.stdout, self.stderr
            )
        })
    }
}

/// Runs `tests/azure_sdk/get_token.py [client_id]` with the App Service
/// variables pointing at `server`; kills it after [`SDK_DEADLINE`].
async fn get_token(server: &Server, identity_header: &str, client_id: Option<&str>) -> SdkRun {
    let sdk = sdk().await.expect("checked at the start of the test");
    let script = manifest_dir().join("tests/azure_sdk/get_token.py");
    let mut command = Command::new(&sdk.python);
    command
        .arg(script)
        .arg(client_id.unwrap_or(""))
        .env(
            "IDENTITY_ENDPOINT",
            format!("http://127.0.0.1:{}/msi/token", server.addr.port()),
        )
        .env("IDENTITY_HEADER", identity_header)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for name in CLEARED_ENV {
        command.env_remove(name);
    }
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut child = command.spawn().expect("start get_token.py");
        let drain = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = pipe.read_to_string(&mut text);
                text
            })
        };
        let stdout = drain(Box::new(child.stdout.take().unwrap()));
        let stderr = drain(Box::new(child.stderr.take().unwrap()));
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for get_token.py") {
                break status;
            }
            if started.elapsed() > SDK_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the SDK did not finish within {SDK_DEADLINE:?} (is it retrying?)\nstdout: {}\nstderr: {}",
                    stdout.join().unwrap_or_default(),
                    stderr.join().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        SdkRun {
            code: status.code(),
            elapsed: started.elapsed(),
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        }
    })
    .await
    .expect("the SDK run panicked")
}

/// Tenants contoso and fabrikam, both consented (their GUIDs returned), and
/// one account that may use both, contoso by default.
async fn broker() -> (Fixture, Server, String, String) {
    let f = Fixture::new(&format!(
        "[[tenants]]\nname = \"contoso\"\nid = \"contoso.onmicrosoft.com\"\n\
         [[tenants]]\nname = \"fabrikam\"\nid = \"fabrikam.com\"\n\
         [[accounts]]\nname = \"mail-sync\"\nsecret_sha256 = \"{}\"\n\
         tenants = [\"contoso\", \"fabrikam\"]\ndefault_tenant = \"contoso\"\n",
        sha256_hex(SECRET)
    ))
    .await;
    let contoso = f.sim.consent("contoso.onmicrosoft.com");
    let fabrikam = f.sim.consent("fabrikam.com");
    let server = Server::start(&f, |_, _| {}).await;
    (f, server, contoso, fabrikam)
}

fn now_unix() -> u64 {
    tokenbroker::clock::unix_seconds(SystemTime::now())
}

/// How many `/msi/token` requests the broker answered with `status`
/// (`tokenbroker_http_requests_total`), to see what the SDK sent.
fn msi_requests(server: &Server, status: u16) -> u64 {
    let series =
        format!("tokenbroker_http_requests_total{{route=\"/msi/token\",status=\"{status}\"}} ");
    server
        .metrics()
        .encode()
        .lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .map_or(0, |value| value.trim().parse().expect("a counter value"))
}

/// Checks a successful run: a Graph token for tenant `tid`, expiring later.
fn assert_graph_token(run: &SdkRun, tid: &str) {
    assert_eq!(
        run.code,
        Some(0),
        "the SDK failed: {}\nstderr: {}",
        run.stdout,
        run.stderr
    );
    let body = run.json();
    let token = body["token"].as_str().expect("a token string");
    let claims = claims(token);
    assert_eq!(claims["tid"], tid, "claims: {claims}");
    assert_eq!(claims["aud"], common::GRAPH, "claims: {claims}");
    let expires_on = body["expires_on"].as_u64().expect("expires_on in seconds");
    let now = now_unix();
    assert!(
        expires_on > now + 300,
        "expires_on {expires_on} is not in the future (now {now})"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn managed_identity_credential_gets_the_default_tenants_token() {
    if sdk().await.is_none() {
        return;
    }
    let (_f, server, contoso, _) = broker().await;
    let run = get_token(&server, SECRET, None).await;
    assert_graph_token(&run, &contoso);
    assert_eq!(msi_requests(&server, 200), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn client_id_selects_the_tenant() {
    if sdk().await.is_none() {
        return;
    }
    let (_f, server, contoso, fabrikam) = broker().await;
    let run = get_token(&server, SECRET, Some("fabrikam")).await;
    assert_graph_token(&run, &fabrikam);
    assert_ne!(contoso, fabrikam);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_identity_header_surfaces_the_brokers_explanation() {
    if sdk().await.is_none() {
        return;
    }
    let (_f, server, _, _) = broker().await;
    let run = get_token(&server, "tb_not-the-secret", None).await;
    assert_eq!(run.code, Some(3), "{run:?}");
    let body = run.json();
    eprintln!("the SDK raised: {body}");
    // azure-identity raises every App Service error as CredentialUnavailableError,
    // prefixed "App Service managed identity configuration not found in
    // environment." (misleading, but the SDK's); msal puts the body's
    // `statusCode` and `message` after it.
    assert_eq!(body["error"], "CredentialUnavailableError", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("401, the secret matches no configured account"),
        "the SDK's message does not carry the broker's explanation: {message}"
    );
    assert!(run.elapsed < SDK_DEADLINE);
    assert_eq!(msi_requests(&server, 401), 1, "one request, no retry");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_the_account_may_not_use_fails_fast_with_a_clear_error() {
    if sdk().await.is_none() {
        return;
    }
    let (f, server, _, _) = broker().await;
    f.sim.consent("other.example.com");
    let run = get_token(&server, SECRET, Some("other.example.com")).await;
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(
        run.elapsed < SDK_DEADLINE,
        "took {:?}: did the SDK retry?",
        run.elapsed
    );
    let body = run.json();
    eprintln!("the SDK raised after {:?}: {body}", run.elapsed);
    assert_eq!(body["error"], "CredentialUnavailableError", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("400, account \"mail-sync\" may not use tenant other.example.com"),
        "the SDK's message does not carry the broker's explanation: {message}"
    );
    assert_eq!(
        f.sim.requests("other.example.com"),
        0,
        "nothing goes upstream"
    );
    server.stop().await;
}
