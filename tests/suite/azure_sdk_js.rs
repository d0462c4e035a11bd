//! The real `@azure/identity` npm package (the Azure SDK for JavaScript),
//! unmodified, against the broker's App Service managed-identity endpoint
//! (`/msi/token`).
//!
//! `target/azure-sdk-js` gets a `package.json` pinning `@azure/identity`
//! [`PINNED`] and `npm install` on first use (once per test binary; an
//! install of that version is reused). `tests/azure_sdk/get_token.mjs` is
//! copied next to its `node_modules` and runs one credential per process —
//! `ManagedIdentityCredential` with each selector, or
//! `DefaultAzureCredential` — with only `IDENTITY_ENDPOINT` and
//! `IDENTITY_HEADER` pointing at an in-process broker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::common::run;
use crate::common::sdk::{
    assert_graph_token, msi_requests, run_sdk, two_tenant_broker, SdkRun, SDK_DEADLINE,
};

use common::Server;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The `@azure/identity` version under test: the newest 4.13.x whose
/// `engines` still admit Node 20 (4.13.2 and later ask for Node 22).
const PINNED: &str = "4.13.1";
/// The oldest Node.js major that [`PINNED`] supports.
const NODE_MAJOR: u32 = 20;
const SECRET: &str = "tb_azure-sdk-js-test-secret-0123456789";

/// The install directory and what is installed in it.
#[derive(Debug)]
struct Sdk {
    dir: PathBuf,
    /// `@azure/identity X, @azure/msal-node Y, node Z`.
    versions: String,
}

static SDK: OnceLock<Result<Sdk, String>> = OnceLock::new();

fn package_json() -> String {
    format!(
        "{{\n  \"name\": \"tokenbroker-azure-sdk-js-test\",\n  \"private\": true,\n  \
         \"description\": \"written by tests/azure_sdk_js.rs\",\n  \
         \"dependencies\": {{\n    \"@azure/identity\": \"{PINNED}\"\n  }}\n}}\n"
    )
}

/// `X Y` for the installed `@azure/identity` and `@azure/msal-node` (the one
/// it resolves), from `dir`.
fn installed_versions(dir: &Path) -> Result<(String, String), String> {
    let out = run(Command::new("node").current_dir(dir).args([
        "-e",
        "const { createRequire } = require('node:module');\n\
         const identity = require.resolve('@azure/identity');\n\
         const msal = createRequire(identity).resolve('@azure/msal-node');\n\
         const version = (file, name) => { const at = file.lastIndexOf(name) + name.length; \
           return require(file.slice(0, at) + '/package.json').version; };\n\
         console.log(version(identity, '@azure/identity'), version(msal, '@azure/msal-node'));",
    ]))?;
    let mut words = out.split_whitespace().map(str::to_owned);
    match (words.next(), words.next()) {
        (Some(identity), Some(msal)) => Ok((identity, msal)),
        _ => Err(format!("unexpected version output {out:?}")),
    }
}

/// Makes sure `target/azure-sdk-js` has [`PINNED`] installed and the script
/// beside it (blocking).
fn install_sdk() -> Result<Sdk, String> {
    let node = common::sdk::node_at_least(NODE_MAJOR)?;
    let dir = common::sdk::npm_install(
        "azure-sdk-js",
        &package_json(),
        &format!("@azure/identity@{PINNED}"),
        |dir| installed_versions(dir).is_ok_and(|(identity, _)| identity == PINNED),
    )?;
    let (identity, msal) = installed_versions(&dir)
        .map_err(|e| format!("@azure/identity is still not resolvable after npm install: {e}"))?;
    if identity != PINNED {
        return Err(format!(
            "npm installed @azure/identity {identity}, not {PINNED}"
        ));
    }
    common::sdk::place_program(&dir, "azure_sdk/get_token.mjs", "get_token.mjs")?;
    Ok(Sdk {
        dir,
        versions: format!("@azure/identity {identity}, @azure/msal-node {msal}, node {node}"),
    })
}

/// The installed SDK, once per test binary (`None`: skipped, saying why).
async fn sdk() -> Option<&'static Sdk> {
    common::sdk::installed(
        &SDK,
        install_sdk,
        &format!(
            "node >= {NODE_MAJOR}, npm and the npm registry, for the real @azure/identity package"
        ),
        |sdk| &sdk.versions,
    )
    .await
}

/// What the SDK's message carries of the broker's 401 (its `error` and
/// `message`, in msal-node's words): "ManagedIdentityCredential:
/// Authentication failed. Message unauthorized: Error(s): Not Available -
/// Timestamp: Not Available - Description: the secret matches no configured
/// account - Correlation ID: Not Available - Trace ID: Not Available".
const UNAUTHORIZED: &[&str] = &[
    "Message unauthorized: ",
    "Description: the secret matches no configured account",
];

/// How `get_token.mjs` is to run: which credential, and the environment.
struct Case<'a> {
    /// `managed-identity`, `client-id`, `resource-id`, `object-id`, `default`.
    credential: &'a str,
    /// The selector's value.
    value: Option<&'a str>,
    identity_header: &'a str,
    /// Set beyond `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`.
    env: &'a [(&'a str, &'a str)],
}

impl<'a> Case<'a> {
    fn new(credential: &'a str, value: Option<&'a str>) -> Self {
        Case {
            credential,
            value,
            identity_header: SECRET,
            env: &[],
        }
    }
}

/// Runs `node get_token.mjs CASE [VALUE]` with the App Service variables
/// pointing at `server`; kills it after [`SDK_DEADLINE`].
async fn get_token(server: &Server, case: &Case<'_>) -> SdkRun {
    let sdk = SDK
        .get()
        .and_then(|sdk| sdk.as_ref().ok())
        .expect("checked at the start of the test");
    let mut command = Command::new("node");
    command
        .current_dir(&sdk.dir)
        .arg("get_token.mjs")
        .arg(case.credential)
        .args(case.value);
    run_sdk(
        "get_token.mjs",
        command,
        server,
        case.identity_header,
        case.env,
    )
    .await
}

/// Checks a failed run: error `name`, its message carrying each of
/// `broker_says`, after one request answered `status` and no retry.
fn assert_failure(server: &Server, run: &SdkRun, name: &str, status: u16, broker_says: &[&str]) {
    assert_eq!(run.code, Some(3), "{run:?}");
    let body = run.json();
    eprintln!("the SDK threw after {:?}: {body}", run.elapsed);
    assert_eq!(body["error"], name, "{body}");
    let message = body["message"].as_str().unwrap();
    for part in broker_says {
        assert!(
            message.contains(part),
            "the SDK's message does not carry the broker's {part:?}: {message}"
        );
    }
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

#[tokio::test(flavor = "multi_thread")]
async fn managed_identity_credential_gets_the_default_tenants_token() {
    if sdk().await.is_none() {
        return;
    }
    let (_f, server, contoso, _) = two_tenant_broker(SECRET).await;
    let run = get_token(&server, &Case::new("managed-identity", None)).await;
    assert_graph_token(&server, &run, &contoso);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn client_id_selects_the_tenant() {
    if sdk().await.is_none() {
        return;
    }
    let (_f, server, _, fabrikam) = two_tenant_broker(SECRET).await;
    let run = get_token(&server, &Case::new("client-id", Some("fabrikam"))).await;
    assert_graph_token(&server, &run, &fabrikam);
    server.stop().await;
}

/// `resourceId` goes out as `mi_res_id` on App Service (msal-node does not
/// check that it looks like an ARM resource ID). `clientId` goes out as
/// `client_id`, `objectId` as `object_id`, and the scope as
/// `resource=https://graph.microsoft.com`.
#[tokio::test(flavor = "multi_thread")]
async fn resource_id_selects_the_tenant() {
    if sdk().await.is_none() {
        return;
    }
    let (_f, server, _, fabrikam) = two_tenant_broker(SECRET).await;
    let run = get_token(&server, &Case::new("resource-id", Some("fabrikam"))).await;
    assert_graph_token(&server, &run, &fabrikam);
    server.stop().await;
}

/// `objectId` goes out as `object_id` (msal-node does not check that it
/// looks like a GUID).
#[tokio::test(flavor = "multi_thread")]
async fn object_id_selects_the_tenant() {
    if sdk().await.is_none() {
        return;
    }
    let (_f, server, _, fabrikam) = two_tenant_broker(SECRET).await;
    let run = get_token(&server, &Case::new("object-id", Some("fabrikam"))).await;
    assert_graph_token(&server, &run, &fabrikam);
    server.stop().await;
}

/// With only `IDENTITY_*` set, `DefaultAzureCredential`'s chain reaches
/// `ManagedIdentityCredential` (environment and workload identity are not
/// configured) and that sends one request: it probes only IMDS.
#[tokio::test(flavor = "multi_thread")]
async fn default_azure_credential_needs_nothing_more() {
    if sdk().await.is_none() {
        return;
    }
    let (_f, server, contoso, _) = two_tenant_broker(SECRET).await;
    let run = get_token(&server, &Case::new("default", None)).await;
    assert_graph_token(&server, &run, &contoso);
    server.stop().await;
}

/// `DefaultAzureCredential` passes `AZURE_CLIENT_ID` (alone, it does not
/// configure `EnvironmentCredential`) to `ManagedIdentityCredential` as its
/// `clientId`.
#[tokio::test(flavor = "multi_thread")]
async fn default_azure_credential_selects_the_tenant_with_azure_client_id() {
    if sdk().await.is_none() {
        return;
    }
    let (_f, server, _, fabrikam) = two_tenant_broker(SECRET).await;
    let run = get_token(
        &server,
        &Case {
            env: &[("AZURE_CLIENT_ID", "fabrikam")],
            ..Case::new("default", None)
        },
    )
    .await;
    assert_graph_token(&server, &run, &fabrikam);
    server.stop().await;
}

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
            ..Case::new("managed-identity", None)
        },
    )
    .await;
    // @azure/identity wraps msal-node's error as CredentialUnavailableError
    // (so DefaultAzureCredential moves on to its next credential).
    assert_failure(
        &server,
        &run,
        "CredentialUnavailableError",
        401,
        UNAUTHORIZED,
    );
    server.stop().await;
}

/// The production chain (`AZURE_TOKEN_CREDENTIALS=prod`: environment,
/// workload identity, managed identity) ends in the managed identity's
/// failure, with the broker's explanation in the aggregate message. Without
/// it the chain goes on to the developer credentials (VS Code, Azure CLI,
/// PowerShell, azd), whose outcome depends on the machine: a logged-in `az`
/// would silently answer instead.
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
            ..Case::new("default", None)
        },
    )
    .await;
    assert_failure(
        &server,
        &run,
        "AggregateAuthenticationError",
        401,
        UNAUTHORIZED,
    );
    server.stop().await;
}

/// `AZURE_TOKEN_CREDENTIALS=ManagedIdentityCredential` makes the chain that
/// credential alone: its error is thrown as it is.
#[tokio::test(flavor = "multi_thread")]
async fn default_azure_credential_limited_to_managed_identity_fails_with_the_explanation() {
    if sdk().await.is_none() {
        return;
    }
    let (_f, server, _, _) = two_tenant_broker(SECRET).await;
    let run = get_token(
        &server,
        &Case {
            identity_header: "tb_not-the-secret",
            env: &[("AZURE_TOKEN_CREDENTIALS", "ManagedIdentityCredential")],
            ..Case::new("default", None)
        },
    )
    .await;
    assert_failure(
        &server,
        &run,
        "AggregateAuthenticationError",
        401,
        UNAUTHORIZED,
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
    let run = get_token(&server, &Case::new("client-id", Some("other.example.com"))).await;
    assert_failure(
        &server,
        &run,
        "CredentialUnavailableError",
        400,
        &[
            "Message forbidden: ",
            "Description: account \"mail-sync\" may not use tenant other.example.com",
        ],
    );
    assert_eq!(
        f.sim.requests("other.example.com"),
        0,
        "nothing goes upstream"
    );
    server.stop().await;
}
