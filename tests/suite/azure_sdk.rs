//! The real `azure-identity` Python package, unmodified, against the
//! broker's App Service managed-identity endpoint (`/msi/token`).
//!
//! A virtualenv at `target/azure-sdk-venv` gets `azure-identity` [`PINNED`]
//! and `aiohttp` (the transport of `azure.identity.aio`) from PyPI on first
//! use (once per test binary; a virtualenv that has both is reused).
//! `tests/azure_sdk/get_token.py` then runs one credential per process —
//! `ManagedIdentityCredential` with each selector, or
//! `DefaultAzureCredential`, from `azure.identity` or `azure.identity.aio` —
//! with only `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` pointing at an
//! in-process broker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::common::sdk::{
    assert_graph_token, msi_requests, run_sdk, two_tenant_broker, SdkRun, SDK_DEADLINE,
};
use crate::common::{manifest_dir, run};

use common::Server;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const SECRET: &str = "tb_azure-sdk-test-secret-0123456789";

/// The virtualenv's Python and what is installed in it.
#[derive(Debug)]
struct Sdk {
    python: PathBuf,
    /// `azure-identity X, msal Y, aiohttp Z`.
    versions: String,
}

static SDK: OnceLock<Result<Sdk, String>> = OnceLock::new();

/// What is installed; an error unless azure-identity, azure.identity.aio
/// and aiohttp all import.
fn installed_versions(python: &Path) -> Result<String, String> {
    run(Command::new(python).args([
        "-c",
        "import azure.identity, azure.identity.aio, msal, aiohttp; \
         print('azure-identity', azure.identity.__version__ + ', msal', msal.__version__ \
         + ', aiohttp', aiohttp.__version__)",
    ]))
}

/// The azure-identity release the README's claims rest on.
const PINNED: &str = "1.27.0";
/// `azure.identity.aio` needs an async transport and names no dependency
/// for it: azure-core's default is aiohttp.
const AIOHTTP: &str = "aiohttp>=3.9,<4";

/// Makes sure the virtualenv exists with azure-identity [`PINNED`] and
/// aiohttp installed (blocking); an older one, or one without aiohttp, is
/// upgraded.
fn install_sdk() -> Result<Sdk, String> {
    let (python, versions) = common::sdk::python_venv(
        "azure-sdk-venv",
        &[&format!("azure-identity=={PINNED}"), AIOHTTP],
        installed_versions,
        |found| found.contains(&format!("azure-identity {PINNED}")),
    )?;
    Ok(Sdk { python, versions })
}

/// The installed SDK, once per test binary (`None`: skipped, saying why).
async fn sdk() -> Option<&'static Sdk> {
    common::sdk::installed(
        &SDK,
        install_sdk,
        "python3 with venv and PyPI, for the real azure-identity package",
        |sdk| &sdk.versions,
    )
    .await
}

/// How `get_token.py` is to run: which credential, and the environment.
struct Case<'a> {
    /// `get_token.py`'s argument: `mi`, `client_id=X`, `object_id=X`,
    /// `mi_res_id=X`, `identity_config:KEY=X` or `default`, each optionally
    /// prefixed `async_`.
    case: &'a str,
    identity_header: &'a str,
    /// Set beyond `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`.
    env: &'a [(&'a str, &'a str)],
}

impl<'a> Case<'a> {
    fn new(case: &'a str) -> Self {
        Case {
            case,
            identity_header: SECRET,
            env: &[],
        }
    }
}

/// Runs `tests/azure_sdk/get_token.py CASE` with the App Service variables
/// pointing at `server`; kills it after [`SDK_DEADLINE`].
async fn get_token(server: &Server, case: &Case<'_>) -> SdkRun {
    let sdk = SDK
        .get()
        .and_then(|sdk| sdk.as_ref().ok())
        .expect("checked at the start of the test");
    let mut command = Command::new(&sdk.python);
    command
        .arg(manifest_dir().join("tests/azure_sdk/get_token.py"))
        .arg(case.case);
    run_sdk(
        "get_token.py",
        command,
        server,
        case.identity_header,
        case.env,
    )
    .await
}

/// Checks a failed run: exception `name`, its message carrying
/// `broker_says`, after one request answered `status` and no retry.
fn assert_failure(server: &Server, run: &SdkRun, name: &str, status: u16, broker_says: &str) {
    assert_eq!(run.code, Some(3), "{run:?}");
    let body = run.json();
    eprintln!("the SDK raised after {:?}: {body}", run.elapsed);
    assert_eq!(body["error"], name, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(broker_says),
        "the SDK's message does not carry the broker's {broker_says:?}: {message}"
    );
    assert!(
        run.elapsed < SDK_DEADLINE,
        "took {:?}: did the SDK retry?",
        run.elapsed
    );
    assert_eq!(
        msi_requests(server, Some(status)),
        1,
        "one request, no retry"
    );
    assert_eq!(msi_requests(server, Some(200)), 0);
}

/// Runs `case` against a fresh broker and checks it gets a Graph token for
/// fabrikam (`fabrikam`), or for the default tenant contoso.
async fn check(case: Case<'_>, fabrikam: bool) {
    if sdk().await.is_none() {
        return;
    }
    let (_f, server, contoso, fabrikam_tid) = two_tenant_broker(SECRET).await;
    let run = get_token(&server, &case).await;
    assert_graph_token(
        &server,
        &run,
        if fabrikam { &fabrikam_tid } else { &contoso },
    );
    server.stop().await;
}

// ManagedIdentityCredential (azure.identity): msal's ManagedIdentityClient
// sends `api-version=2019-08-01&resource=https://graph.microsoft.com` and
// the selector as `client_id`, `object_id` or `mi_res_id`.

#[tokio::test(flavor = "multi_thread")]
async fn managed_identity_credential_gets_the_default_tenants_token() {
    check(Case::new("mi"), false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn client_id_selects_the_tenant() {
    check(Case::new("client_id=fabrikam"), true).await;
}

/// With several apps, `client_id` may be an app's client ID: the SDK gets
/// that app's token for the account's default tenant.
#[tokio::test(flavor = "multi_thread")]
async fn client_id_of_an_app_selects_the_app() {
    if sdk().await.is_none() {
        return;
    }
    let (f, server) = crate::apps::two_app_broker().await;
    let case = format!("client_id={}", crate::apps::NOTIFY_ID);
    let run = get_token(
        &server,
        &Case {
            case: &case,
            identity_header: crate::apps::BOTH,
            env: &[],
        },
    )
    .await;
    let contoso = f.sim.consent("contoso.onmicrosoft.com");
    assert_graph_token(&server, &run, &contoso);
    let token = run.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(
        common::claims(&token)["appid"],
        crate::apps::NOTIFY_ID,
        "the app the SDK named"
    );
    server.stop().await;
}

/// `identity_config={"object_id": ...}` goes out as `object_id` (neither
/// azure-identity nor msal checks that it looks like a GUID).
#[tokio::test(flavor = "multi_thread")]
async fn object_id_selects_the_tenant() {
    check(Case::new("object_id=fabrikam"), true).await;
}

/// `identity_config={"resource_id": ...}` (1.27 has no `resource_id`
/// keyword) goes out as `mi_res_id`, App Service's name for it.
#[tokio::test(flavor = "multi_thread")]
async fn resource_id_selects_the_tenant() {
    check(Case::new("mi_res_id=fabrikam"), true).await;
}

/// `identity_config={"mi_res_id": ...}`, App Service's parameter name (what
/// azure-identity's docs once told App Service users to pass), is not one
/// of the keys the msal-based credential reads (`client_id`, `object_id`,
/// `resource_id`): it sends no selector and gets the default tenant,
/// silently. Pinned here so that a change on either side is noticed.
#[tokio::test(flavor = "multi_thread")]
async fn identity_config_mi_res_id_is_ignored_by_the_sdk() {
    check(Case::new("identity_config:mi_res_id=fabrikam"), false).await;
}

// DefaultAzureCredential: with only IDENTITY_* set, environment and workload
// identity are not configured and the chain reaches ManagedIdentityCredential,
// which sends one request (it probes only IMDS).

#[tokio::test(flavor = "multi_thread")]
async fn default_azure_credential_needs_nothing_more() {
    check(Case::new("default"), false).await;
}

/// `AZURE_CLIENT_ID` is `DefaultAzureCredential`'s default
/// `managed_identity_client_id` (alone, it configures neither
/// `EnvironmentCredential` nor `WorkloadIdentityCredential`).
/// `AZURE_TOKEN_CREDENTIALS=prod` keeps the chain to environment, workload
/// identity and managed identity, so no developer credential can answer.
#[tokio::test(flavor = "multi_thread")]
async fn default_azure_credential_selects_the_tenant_with_azure_client_id() {
    check(
        Case {
            env: &[
                ("AZURE_CLIENT_ID", "fabrikam"),
                ("AZURE_TOKEN_CREDENTIALS", "prod"),
            ],
            ..Case::new("default")
        },
        true,
    )
    .await;
}

// azure.identity.aio.ManagedIdentityCredential does not use msal: it sends
// `api-version`, `resource` and its `identity_config` as they are, with
// `client_id` added — over aiohttp.

#[tokio::test(flavor = "multi_thread")]
async fn async_managed_identity_credential_gets_the_default_tenants_token() {
    check(Case::new("async_mi"), false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn async_client_id_selects_the_tenant() {
    check(Case::new("async_client_id=fabrikam"), true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn async_object_id_selects_the_tenant() {
    check(Case::new("async_object_id=fabrikam"), true).await;
}

/// The async credential sends `identity_config`'s keys verbatim, so App
/// Service's `mi_res_id` works there.
#[tokio::test(flavor = "multi_thread")]
async fn async_identity_config_mi_res_id_selects_the_tenant() {
    check(Case::new("async_identity_config:mi_res_id=fabrikam"), true).await;
}

/// ... and the documented `resource_id` goes out as `resource_id`, which
/// is not an App Service parameter. The broker reads it as a selector all
/// the same: ignoring it would hand the default tenant's token to a caller
/// that named another.
#[tokio::test(flavor = "multi_thread")]
async fn async_resource_id_selects_the_tenant_too() {
    check(Case::new("async_mi_res_id=fabrikam"), true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn async_default_azure_credential_selects_the_tenant_with_azure_client_id() {
    check(
        Case {
            env: &[
                ("AZURE_CLIENT_ID", "fabrikam"),
                ("AZURE_TOKEN_CREDENTIALS", "prod"),
            ],
            ..Case::new("async_default")
        },
        true,
    )
    .await;
}

// Failures: the broker's explanation reaches the application.

/// azure-identity raises every App Service error as CredentialUnavailableError,
/// prefixed "App Service managed identity configuration not found in
/// environment." (misleading, but the SDK's); msal puts the body's
/// `statusCode` and `message` after it.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_identity_header_surfaces_the_brokers_explanation() {
    if sdk().await.is_none() {
        return;
    }
    let (_f, server, _, _) = two_tenant_broker(SECRET).await;
    let run = get_token(
        &server,
        &Case {
            identity_header: "tb_not-the-secret",
            ..Case::new("mi")
        },
    )
    .await;
    assert_failure(
        &server,
        &run,
        "CredentialUnavailableError",
        401,
        "401, the secret matches no configured account",
    );
    server.stop().await;
}

/// The async credential raises ClientAuthenticationError quoting the body.
#[tokio::test(flavor = "multi_thread")]
async fn async_a_wrong_identity_header_surfaces_the_brokers_explanation() {
    if sdk().await.is_none() {
        return;
    }
    let (_f, server, _, _) = two_tenant_broker(SECRET).await;
    let run = get_token(
        &server,
        &Case {
            identity_header: "tb_not-the-secret",
            ..Case::new("async_mi")
        },
    )
    .await;
    assert_failure(
        &server,
        &run,
        "ClientAuthenticationError",
        401,
        "the secret matches no configured account",
    );
    server.stop().await;
}

/// With `AZURE_TOKEN_CREDENTIALS=prod` the chain ends after the managed
/// identity (its CredentialUnavailableError lets the chain go on) in a
/// ClientAuthenticationError listing each attempt, the broker's
/// explanation among them. Without it the chain would go on to the
/// developer credentials (VS Code, Azure CLI, PowerShell, azd), whose
/// outcome depends on the machine: a logged-in `az` would answer instead.
#[tokio::test(flavor = "multi_thread")]
async fn default_azure_credential_with_a_wrong_identity_header_fails_with_the_explanation() {
    if sdk().await.is_none() {
        return;
    }
    let (_f, server, _, _) = two_tenant_broker(SECRET).await;
    let run = get_token(
        &server,
        &Case {
            identity_header: "tb_not-the-secret",
            env: &[("AZURE_TOKEN_CREDENTIALS", "prod")],
            ..Case::new("default")
        },
    )
    .await;
    assert_failure(
        &server,
        &run,
        "ClientAuthenticationError",
        401,
        "401, the secret matches no configured account",
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_the_account_may_not_use_fails_fast_with_a_clear_error() {
    if sdk().await.is_none() {
        return;
    }
    let (f, server, _, _) = two_tenant_broker(SECRET).await;
    f.sim.consent("other.example.com");
    let run = get_token(&server, &Case::new("client_id=other.example.com")).await;
    assert_failure(
        &server,
        &run,
        "CredentialUnavailableError",
        400,
        "400, account \"mail-sync\" may not use tenant other.example.com",
    );
    assert_eq!(
        f.sim.requests("other.example.com"),
        0,
        "nothing goes upstream"
    );
    server.stop().await;
}
