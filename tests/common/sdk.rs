//! What the Azure SDK interop tests (Python, JavaScript, Rust) share: the
//! broker they run against, one runner that starts an SDK program with the
//! App Service variables pointing at it (under a deadline, its output
//! drained), and what the broker saw of the SDK's requests.

use super::{claims, sha256_hex, Fixture, Server, GRAPH};
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// No SDK call may take longer than this (an SDK retrying a 404 takes ~25 s more).
pub const SDK_DEADLINE: Duration = Duration::from_secs(30);

/// Variables that would make an SDK pick another managed-identity source,
/// another credential in `DefaultAzureCredential`'s chain, or a proxy.
pub const CLEARED_ENV: &[&str] = &[
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "DEFAULT_IDENTITY_CLIENT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_AUTHORITY_HOST",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "AZURE_TOKEN_CREDENTIALS",
    "AZURE_LOG_LEVEL",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
];

/// What an SDK program did.
#[derive(Debug)]
pub struct SdkRun {
    /// The program, for messages.
    pub program: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl SdkRun {
    /// The program's last line, which is JSON.
    /// The JSON line of a run that exited 0 (a failed run's output is the
    /// panic message).
    pub fn succeeded(&self) -> Value {
        assert_eq!(
            self.code,
            Some(0),
            "the SDK failed: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self.json()
    }

    pub fn json(&self) -> Value {
        let line = self.stdout.lines().last().unwrap_or_default();
        serde_json::from_str(line).unwrap_or_else(|e| {
            panic!(
                "{} printed no JSON ({e}); exit {:?}\nstdout: {}\nstderr: {}",
                self.program, self.code, self.stdout, self.stderr
            )
        })
    }
}

/// Runs `command` (an SDK program, named `program` in messages) with the
/// App Service variables pointing at `server`'s `/msi/token` and
/// `identity_header`, every variable of [`CLEARED_ENV`] removed and `env`
/// set; kills it after [`SDK_DEADLINE`].
pub async fn run_sdk(
    program: &str,
    mut command: Command,
    server: &Server,
    identity_header: &str,
    env: &[(&str, &str)],
) -> SdkRun {
    command
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
    for (name, value) in env {
        command.env(name, value);
    }
    let program = program.to_owned();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
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
            if let Some(status) = child.try_wait().expect("wait for the SDK program") {
                break status;
            }
            if started.elapsed() > SDK_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{program} did not finish within {SDK_DEADLINE:?} (is it retrying?)\nstdout: {}\nstderr: {}",
                    stdout.join().unwrap_or_default(),
                    stderr.join().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        SdkRun {
            program,
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
/// one account (its secret `secret`) that may use both, contoso by default.
pub async fn two_tenant_broker(secret: &str) -> (Fixture, Server, String, String) {
    let f = Fixture::new(&format!(
        "[[tenants]]\nname = \"contoso\"\nid = \"contoso.onmicrosoft.com\"\n\
         [[tenants]]\nname = \"fabrikam\"\nid = \"fabrikam.com\"\n\
         [[accounts]]\nname = \"mail-sync\"\nsecret_sha256 = \"{}\"\n\
         tenants = [\"contoso\", \"fabrikam\"]\ndefault_tenant = \"contoso\"\n",
        sha256_hex(secret)
    ))
    .await;
    let contoso = f.sim.consent("contoso.onmicrosoft.com");
    let fabrikam = f.sim.consent("fabrikam.com");
    assert_ne!(contoso, fabrikam);
    let server = Server::start(&f, |_, _| {}).await;
    (f, server, contoso, fabrikam)
}

pub fn now_unix() -> u64 {
    tokenbroker::clock::unix_seconds(SystemTime::now())
}

/// How many `/msi/token` requests the broker answered, by status (`None`:
/// any status), from `tokenbroker_http_requests_total`: what the SDK sent.
pub fn msi_requests(server: &Server, status: Option<u16>) -> u64 {
    let prefix = "tokenbroker_http_requests_total{route=\"/msi/token\",status=\"";
    server
        .metrics()
        .encode()
        .lines()
        .filter_map(|line| line.strip_prefix(prefix))
        .filter_map(|rest| rest.split_once("\"} "))
        .filter(|(code, _)| status.is_none_or(|s| code.parse() == Ok(s)))
        .map(|(_, value)| value.trim().parse::<u64>().expect("a counter value"))
        .sum()
}

/// Checks a successful run of a program that prints the SDK's answer as
/// JSON (`token`, `expires_on`): a Graph token for tenant `tid` that
/// expires when the token does, got with one request.
pub fn assert_graph_token(server: &Server, run: &SdkRun, tid: &str) {
    let body = run.succeeded();
    eprintln!(
        "{} got a token in {:?} (expires_on {}, refresh_after {})",
        body["case"], run.elapsed, body["expires_on"], body["refresh_after"]
    );
    let token = body["token"].as_str().expect("a token string");
    let claims = claims(token);
    assert_eq!(claims["tid"], tid, "claims: {claims}");
    assert_eq!(claims["aud"], GRAPH, "claims: {claims}");
    let expires_on = body["expires_on"].as_u64().expect("expires_on in seconds");
    let now = now_unix();
    assert!(
        expires_on > now + 300 && expires_on <= now + 86_400,
        "expires_on {expires_on} is implausible (now {now})"
    );
    // The SDK's expiry is the broker's (the token's `exp`), to the second
    // (msal turns `expires_on` into `expires_in` and back).
    let exp = claims["exp"].as_u64().expect("an exp claim");
    assert!(
        expires_on.abs_diff(exp) <= 1,
        "expires_on {expires_on}, exp {exp}"
    );
    assert_eq!(msi_requests(server, Some(200)), 1, "one request, no probe");
    assert!(run.elapsed < SDK_DEADLINE);
}

/// Installs an SDK once per test binary: `install` runs on a blocking
/// thread the first time, and later callers get its result. `None` (the
/// test skips, saying it `needs` what failed) when it could not be had;
/// with `TOKENBROKER_TEST_ALL=1` that is a failure instead.
pub async fn installed<T: Send + Sync + 'static>(
    cell: &'static std::sync::OnceLock<Result<T, String>>,
    install: fn() -> Result<T, String>,
    needs: &str,
    versions: fn(&T) -> &str,
) -> Option<&'static T> {
    let sdk = tokio::task::spawn_blocking(move || cell.get_or_init(install))
        .await
        .expect("the install task panicked");
    match sdk {
        Ok(sdk) => {
            eprintln!("using {}", versions(sdk));
            Some(sdk)
        }
        Err(e) => {
            super::available(&format!("{needs} ({e})"), false);
            None
        }
    }
}

/// A virtualenv at `target/{name}` with `packages` installed from PyPI
/// (blocking). Reused while `current` accepts what `versions` reports of
/// it. Returns its python and that report.
pub fn python_venv(
    name: &str,
    packages: &[&str],
    versions: fn(&Path) -> Result<String, String>,
    current: impl Fn(&str) -> bool,
) -> Result<(PathBuf, String), String> {
    let venv = super::manifest_dir().join("target").join(name);
    let python = venv.join("bin/python");
    if let Ok(found) = versions(&python) {
        if current(&found) {
            return Ok((python, found));
        }
    }
    super::run(Command::new("python3").arg("-m").arg("venv").arg(&venv))
        .map_err(|e| format!("creating the virtualenv {}: {e}", venv.display()))?;
    super::run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(packages),
    )
    .map_err(|e| format!("installing {} from PyPI: {e}", packages.join(" ")))?;
    let found = versions(&python).map_err(|e| {
        format!(
            "{} still not importable after pip install: {e}",
            packages.join(" ")
        )
    })?;
    Ok((python, found))
}

/// `node --version`, when it is at least `major`.
pub fn node_at_least(major: u32) -> Result<String, String> {
    let node = super::run(Command::new("node").arg("--version"))
        .map_err(|e| format!("node is not available: {e}"))?;
    let found: u32 = node
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| format!("cannot read node --version {node:?}"))?;
    if found < major {
        return Err(format!("node {node} is older than {major}"));
    }
    Ok(node)
}

/// `target/{name}` with `package_json` in it and `npm install` run there
/// (blocking), unless `current(dir)` says the install there is the one
/// wanted already. `what` names the package in errors.
pub fn npm_install(
    name: &str,
    package_json: &str,
    what: &str,
    current: impl Fn(&Path) -> bool,
) -> Result<PathBuf, String> {
    let dir = super::manifest_dir().join("target").join(name);
    let manifest = dir.join("package.json");
    let same_manifest = std::fs::read_to_string(&manifest).ok().as_deref() == Some(package_json);
    if same_manifest && current(&dir) {
        eprintln!("reusing {}", dir.display());
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    std::fs::write(&manifest, package_json)
        .map_err(|e| format!("writing {}: {e}", manifest.display()))?;
    let started = Instant::now();
    super::run(Command::new("npm").current_dir(&dir).args([
        "install",
        "--no-audit",
        "--no-fund",
        "--no-update-notifier",
    ]))
    .map_err(|e| format!("installing {what} from the npm registry: {e}"))?;
    eprintln!("npm install of {what} took {:.1?}", started.elapsed());
    Ok(dir)
}

/// Copies `tests/{source}` into `dir` as `name`, beside its
/// `node_modules` so its imports resolve as in an application. Written
/// whole, then renamed into place: tests of this binary may be starting it.
pub fn place_program(dir: &Path, source: &str, name: &str) -> Result<(), String> {
    let program = std::fs::read(super::manifest_dir().join("tests").join(source))
        .map_err(|e| format!("reading {source}: {e}"))?;
    let partial = dir.join(format!("{name}.{}", std::process::id()));
    std::fs::write(&partial, program).map_err(|e| format!("writing {}: {e}", partial.display()))?;
    std::fs::rename(&partial, dir.join(name)).map_err(|e| format!("installing {name}: {e}"))
}
