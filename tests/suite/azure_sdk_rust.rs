//! The real `azure_identity` crate (the Azure SDK for Rust), unmodified,
//! against the broker's App Service managed-identity endpoint (`/msi/token`).
//!
//! `interop/azure-identity-rust` is a crate of its own (not a workspace
//! member, so the main build never compiles the Azure SDK). On first use
//! (once per test binary) it is fetched from crates.io and built into
//! `target/interop`; its binary then runs `ManagedIdentityCredential` with
//! each selector, with only `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`
//! pointing at an in-process broker, and prints one JSON line per case.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::common::sdk::{msi_requests, now_unix, run_sdk, two_tenant_broker, SDK_DEADLINE};
use crate::common::{manifest_dir, run};

use common::{claims, Server};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

const SECRET: &str = "tb_azure-sdk-rust-test-secret-0123456789";
/// What `ManagedIdentityCredential::new` says to `UserAssignedId::ResourceId`
/// with the App Service source (azure_identity 1.0, before any request:
/// https://github.com/Azure/azure-sdk-for-rust/issues/2407).
const RESOURCE_ID_REFUSAL: &str =
    "User-assigned resource IDs aren't supported for App Service. Use a client or object ID instead.";

/// The built interop binary and the SDK version it was built with.
#[derive(Debug)]
struct Sdk {
    binary: PathBuf,
    /// `azure_identity X, azure_core Y`.
    versions: String,
}

static SDK: OnceLock<Result<Sdk, String>> = OnceLock::new();

fn interop_manifest() -> PathBuf {
    manifest_dir().join("interop/azure-identity-rust/Cargo.toml")
}

/// `cargo` with the interop crate's manifest and its own target directory
/// (so neither the main target directory's artifacts nor its lock are touched).
fn cargo(subcommand: &str) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .arg(subcommand)
        .arg("--manifest-path")
        .arg(interop_manifest())
        .arg("--locked")
        .env("CARGO_TARGET_DIR", manifest_dir().join("target/interop"))
        .env("CARGO_TERM_COLOR", "never")
        .stdin(Stdio::null());
    command
}

/// The locked version of `package` in the interop crate's Cargo.lock.
fn locked_version(lock: &str, package: &str) -> String {
    let entry = format!("name = \"{package}\"\nversion = \"");
    lock.split_once(&entry)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or_else(|| "?".to_owned(), |(version, _)| version.to_owned())
}

/// Fetches the interop crate's dependencies (the only step that needs
/// crates.io, and the only failure that skips), then builds it offline; a
/// build failure panics (the SDK's API changed, or the crate is broken).
fn build_sdk() -> Result<Sdk, String> {
    let started = Instant::now();
    if let Err(e) = run(&mut cargo("fetch")) {
        assert!(
            !e.contains("--locked was passed"),
            "interop/azure-identity-rust/Cargo.lock is out of date: {e}"
        );
        return Err(format!(
            "fetching the azure_identity crate from crates.io: {e}"
        ));
    }
    let out = run(cargo("build")
        .arg("--offline")
        .arg("--message-format=json-render-diagnostics"))
    .unwrap_or_else(|e| panic!("the interop crate does not build: {e}"));
    let binary = out
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo build named no executable:\n{out}"));
    let lock = std::fs::read_to_string(interop_manifest().with_file_name("Cargo.lock")).unwrap();
    let versions = format!(
        "azure_identity {}, azure_core {}",
        locked_version(&lock, "azure_identity"),
        locked_version(&lock, "azure_core")
    );
    eprintln!(
        "fetched and built the interop crate ({versions}) in {:.1?}",
        started.elapsed()
    );
    Ok(Sdk { binary, versions })
}

/// The built SDK binary; builds it once per test binary. `None` (the test
/// skips, saying why) when crates.io cannot be reached; with
/// `TOKENBROKER_TEST_ALL=1` that is a failure instead.
async fn sdk() -> Option<&'static Sdk> {
    let sdk = tokio::task::spawn_blocking(|| SDK.get_or_init(build_sdk))
        .await
        .expect("the build task panicked");
    match sdk {
        Ok(sdk) => {
            eprintln!("using {}", sdk.versions);
            Some(sdk)
        }
        Err(e) => {
            common::available(
                &format!("cargo and crates.io, for the real azure_identity crate ({e})"),
                false,
            );
            None
        }
    }
}

/// What the interop binary printed: one JSON object per case.
#[derive(Debug)]
struct Cases {
    cases: Vec<Value>,
    stderr: String,
}

impl Cases {
    fn case(&self, case: &str) -> &Value {
        self.cases
            .iter()
            .find(|c| c["case"] == case)
            .unwrap_or_else(|| panic!("no line for {case}: {self:?}"))
    }
}

/// Runs the interop binary for `cases` with the App Service variables
/// pointing at `server`; kills it after [`SDK_DEADLINE`].
async fn get_tokens(server: &Server, identity_header: &str, cases: &[&str]) -> Cases {
    let sdk = SDK
        .get()
        .and_then(|sdk| sdk.as_ref().ok())
        .expect("checked at the start of the test");
    let mut command = Command::new(&sdk.binary);
    command.args(cases);
    let run = run_sdk("the interop binary", command, server, identity_header, &[]).await;
    assert_eq!(
        run.code,
        Some(0),
        "the interop binary failed\nstdout: {}\nstderr: {}",
        run.stdout,
        run.stderr
    );
    let lines: Vec<Value> = run
        .stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\nstderr: {}", run.stderr))
        })
        .collect();
    assert_eq!(
        lines.len(),
        cases.len(),
        "one line per case: {}",
        run.stdout
    );
    Cases {
        cases: lines,
        stderr: run.stderr,
    }
}

/// Checks a successful case: a Graph token for tenant `tid`, expiring later.
fn assert_graph_token(case: &Value, tid: &str) {
    assert_eq!(case["ok"], true, "the SDK failed: {case}");
    let token = case["token"].as_str().expect("a token string");
    let claims = claims(token);
    assert_eq!(claims["tid"], tid, "{}: claims {claims}", case["case"]);
    assert_eq!(claims["aud"], common::GRAPH, "claims: {claims}");
    let expires_on = case["expires_on"].as_u64().expect("expires_on in seconds");
    let now = now_unix();
    assert!(
        expires_on > now + 300,
        "expires_on {expires_on} is not in the future (now {now})"
    );
}

/// Checks a failed case: the SDK's message and, if it reached the broker,
/// the HTTP status it kept.
fn assert_failed(case: &Value, stage: &str, status: Option<u16>) -> String {
    assert_eq!(case["ok"], false, "{case}");
    assert_eq!(case["stage"], stage, "{case}");
    assert_eq!(case["status"].as_u64(), status.map(u64::from), "{case}");
    let error = case["error"].as_str().expect("an error message").to_owned();
    eprintln!("the SDK returned, for {}: {error}", case["case"]);
    error
}

#[tokio::test(flavor = "multi_thread")]
async fn selectors_choose_the_tenant() {
    if sdk().await.is_none() {
        return;
    }
    let (_f, server, contoso, fabrikam) = two_tenant_broker(SECRET).await;
    assert_ne!(contoso, fabrikam);
    let run = get_tokens(
        &server,
        SECRET,
        &[
            "system",
            "client_id=fabrikam",
            "object_id=contoso",
            "object_id=fabrikam",
            "client_id=contoso.onmicrosoft.com",
        ],
    )
    .await;
    // No selector: the account's default tenant.
    assert_graph_token(run.case("system"), &contoso);
    assert_graph_token(run.case("client_id=fabrikam"), &fabrikam);
    assert_graph_token(run.case("object_id=contoso"), &contoso);
    assert_graph_token(run.case("object_id=fabrikam"), &fabrikam);
    // A tenant's domain works as well as its configured name.
    assert_graph_token(run.case("client_id=contoso.onmicrosoft.com"), &contoso);
    assert_eq!(msi_requests(&server, Some(200)), 5, "{}", run.stderr);
    assert_eq!(msi_requests(&server, None), 5, "one request per case");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn resource_id_is_refused_by_the_sdk_before_any_request() {
    if sdk().await.is_none() {
        return;
    }
    let (_f, server, _, _) = two_tenant_broker(SECRET).await;
    let run = get_tokens(&server, SECRET, &["resource_id=fabrikam"]).await;
    // The crate refuses `UserAssignedId::ResourceId` for App Service when the
    // credential is built (it would send the wrong parameter); the broker
    // would take `mi_res_id`. If this changes, the README should say so.
    let error = assert_failed(run.case("resource_id=fabrikam"), "new", None);
    assert_eq!(error, RESOURCE_ID_REFUSAL);
    assert_eq!(msi_requests(&server, None), 0, "nothing was sent");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_identity_header_surfaces_the_brokers_explanation() {
    if sdk().await.is_none() {
        return;
    }
    let (_f, server, _, _) = two_tenant_broker(SECRET).await;
    let run = get_tokens(&server, "tb_not-the-secret", &["system"]).await;
    let case = run.case("system");
    let error = assert_failed(case, "get_token", Some(401));
    // For statuses other than 400, 502 and 504 the crate puts the body after
    // "The request failed: ", so the broker's JSON explanation shows.
    assert!(
        error.starts_with("ManagedIdentityCredential authentication failed. The request failed: "),
        "{error}"
    );
    assert!(
        error.contains("the secret matches no configured account"),
        "the SDK's message does not carry the broker's explanation: {error}"
    );
    assert_eq!(msi_requests(&server, Some(401)), 1, "one request, no retry");
    assert_eq!(msi_requests(&server, None), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_the_account_may_not_use_fails_fast_with_the_sdks_own_message() {
    if sdk().await.is_none() {
        return;
    }
    let (f, server, _, _) = two_tenant_broker(SECRET).await;
    f.sim.consent("other.example.com");
    let started = Instant::now();
    let run = get_tokens(&server, SECRET, &["client_id=other.example.com"]).await;
    let elapsed = started.elapsed();
    let case = run.case("client_id=other.example.com");
    let error = assert_failed(case, "get_token", Some(400));
    // The crate replaces any 400's body with its own sentence (App Service's
    // meaning of 400); the broker's explanation stays only in the response
    // the error keeps, which an application would have to dig out.
    assert!(
        error.starts_with(
            "ManagedIdentityCredential authentication failed. The requested identity has not been assigned to this resource"
        ),
        "{error}"
    );
    assert!(!error.contains("may not use"), "{error}");
    let body: Value = serde_json::from_str(case["body"].as_str().unwrap()).unwrap();
    let explanation = body["message"].as_str().unwrap();
    assert!(
        explanation.starts_with("account \"mail-sync\" may not use tenant other.example.com"),
        "{body}"
    );
    assert_eq!(body["statusCode"], 400);
    assert!(
        elapsed < SDK_DEADLINE,
        "took {elapsed:?}: did the SDK retry?"
    );
    assert_eq!(msi_requests(&server, Some(400)), 1, "one request, no retry");
    assert_eq!(
        f.sim.requests("other.example.com"),
        0,
        "nothing goes upstream"
    );
    server.stop().await;
}
