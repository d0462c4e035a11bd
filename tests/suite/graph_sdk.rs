//! The real Microsoft Graph SDK for Python (`msgraph-sdk`), unmodified,
//! through the broker's Graph gateway: the SDK's base URL is the gateway
//! and its authentication provider sends the account's secret.
//!
//! A virtualenv at `target/graph-sdk-venv` gets `msgraph-sdk` [`PINNED`]
//! (with the `msgraph-core` and `kiota-*` it names) from PyPI on first use
//! (once per test binary; a virtualenv that has it is reused).
//! `tests/graph_sdk/mail.py` lists, sends or is refused, one action per
//! process, against [`Gateway`]. The checks are shared with
//! `graph_sdk_js.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::common::sdk::{run_sdk, SdkRun, SDK_DEADLINE};
use crate::common::{manifest_dir, run};
use crate::gateway::{assert_token_not_secret, Gateway, MAIL_SYNC_SECRET, NOTIFIER_SECRET};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The msgraph-sdk release the README's set-up rests on.
const PINNED: &str = "1.65.0";

/// The virtualenv's Python and what is installed in it.
#[derive(Debug)]
struct Sdk {
    python: PathBuf,
    /// `msgraph-sdk X, msgraph-core Y, microsoft-kiota-http Z, httpx W`.
    versions: String,
}

static SDK: OnceLock<Result<Sdk, String>> = OnceLock::new();

/// What is installed; an error unless the SDK imports.
fn installed_versions(python: &Path) -> Result<String, String> {
    run(Command::new(python).args([
        "-c",
        "import msgraph, msgraph_core, kiota_http\n\
         from importlib.metadata import version\n\
         print(', '.join(f'{p} {version(p)}' for p in \
         ['msgraph-sdk', 'msgraph-core', 'microsoft-kiota-http', 'httpx']))",
    ]))
}

/// Makes sure the virtualenv exists with msgraph-sdk [`PINNED`] (blocking).
fn install_sdk() -> Result<Sdk, String> {
    let (python, versions) = common::sdk::python_venv(
        "graph-sdk-venv",
        &[&format!("msgraph-sdk=={PINNED}")],
        installed_versions,
        |found| found.starts_with(&format!("msgraph-sdk {PINNED},")),
    )?;
    Ok(Sdk { python, versions })
}

/// The installed SDK, once per test binary (`None`: skipped, saying why).
async fn sdk() -> Option<&'static Sdk> {
    common::sdk::installed(
        &SDK,
        install_sdk,
        "python3 with venv and PyPI, for the real msgraph-sdk package",
        |sdk| &sdk.versions,
    )
    .await
}

/// Runs `mail.py ACTION` as the account with `secret`.
async fn mail(sdk: &Sdk, g: &Gateway, action: &str, secret: &str) -> SdkRun {
    let mut command = Command::new(&sdk.python);
    command
        .arg(manifest_dir().join("tests/graph_sdk/mail.py"))
        .arg(action);
    run_program("mail.py", command, g, secret).await
}

/// Runs an SDK program (kills it after [`SDK_DEADLINE`]) with the gateway's
/// base URL in `TOKENBROKER_GRAPH_URL` and `secret` in `TOKENBROKER_SECRET`.
/// The runner's `IDENTITY_*` variables go unused.
pub(crate) async fn run_program(
    program: &str,
    command: Command,
    g: &Gateway,
    secret: &str,
) -> SdkRun {
    let url = g.url("");
    let run = run_sdk(
        program,
        command,
        &g.server,
        "unused",
        &[
            ("TOKENBROKER_GRAPH_URL", &url),
            ("TOKENBROKER_SECRET", secret),
        ],
    )
    .await;
    eprintln!(
        "{program} exited {:?} after {:?}\nstdout: {}\nstderr: {}",
        run.code, run.elapsed, run.stdout, run.stderr
    );
    assert!(run.elapsed < SDK_DEADLINE);
    run
}

/// The SDK's page iterator went through all 25 of alice's messages, 10 a
/// page, following the nextLinks the gateway rewrote to point at itself;
/// Graph saw the tenant's token on each of the three requests and never
/// the secret, and the mailbox the SDK percent-encoded arrived as the
/// gateway forwards it.
pub(crate) fn assert_listed(g: &Gateway, run: &SdkRun) {
    let body = run.succeeded();
    assert_eq!(body["count"], 25, "{body}");
    assert_eq!(body["pages"], 3, "{body}");
    let requests = g.graph.requests();
    assert_eq!(requests.len(), 3, "{requests:#?}");
    for r in &requests {
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/v1.0/users/alice@contoso.com/messages", "{r:#?}");
        assert_token_not_secret(r, MAIL_SYNC_SECRET);
    }
    let first = requests[0].query.as_deref().unwrap_or("");
    assert!(
        first.contains("top=10"),
        "the SDK's $top did not arrive: {first}"
    );
    for later in &requests[1..] {
        assert!(
            later
                .query
                .as_deref()
                .is_some_and(|q| q.contains("skiptoken")),
            "a page after the first is the nextLink's: {later:#?}"
        );
    }
}

/// The notifier's sendMail reached Graph once and Graph accepted it (202).
pub(crate) fn assert_sent(g: &Gateway, run: &SdkRun) {
    let body = run.succeeded();
    assert_eq!(body["ok"], true, "{body}");
    let sent = g.graph.sent_mail(&g.tid, "noreply@contoso.com");
    assert_eq!(sent.len(), 1, "{sent:?}");
    let metrics = g.server.metrics().encode();
    assert!(
        metrics.contains(
            r#"tokenbroker_graph_requests_total{account="notifier",method="POST",status="2xx"} 1"#
        ),
        "{metrics}"
    );
    let requests = g.graph.requests();
    assert_eq!(requests.len(), 1, "one request, no retry: {requests:#?}");
    assert_eq!(requests[0].path, "/v1.0/users/noreply@contoso.com/sendMail");
}

/// The gateway's refusal reached the application as the SDK's own Graph
/// error, with its status, code and message, after one request (none
/// reaching Graph).
pub(crate) fn assert_denied(g: &Gateway, run: &SdkRun) {
    let body = run.succeeded();
    assert_eq!(body["status"], 403, "{body}");
    assert_eq!(body["code"], "tokenbroker.forbidden", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("account \"mail-sync\" may not GET /users/bob@contoso.com/messages"),
        "{body}"
    );
    assert_eq!(
        g.graph.request_count(),
        0,
        "a refused request reached Graph"
    );
    let metrics = g.server.metrics().encode();
    assert!(
        metrics
            .contains(r#"tokenbroker_graph_denied_total{account="mail-sync",reason="no_rule"} 1"#),
        "the SDK sent the refused request more than once: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_sdk_pages_through_a_mailbox() {
    let Some(sdk) = sdk().await else { return };
    let g = Gateway::start("").await;
    let run = mail(sdk, &g, "list", MAIL_SYNC_SECRET).await;
    assert_listed(&g, &run);
    g.server.stop().await;
}

/// The SDK writes sendMail's parameters as the metadata names them,
/// `Message` and `SaveToSentItems` (Graph reads them case-insensitively).
#[tokio::test(flavor = "multi_thread")]
async fn the_python_sdk_sends_mail() {
    let Some(sdk) = sdk().await else { return };
    let g = Gateway::start("").await;
    let run = mail(sdk, &g, "send", NOTIFIER_SECRET).await;
    assert_sent(&g, &run);
    g.server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_sdk_raises_the_gateways_refusal_as_an_odata_error() {
    let Some(sdk) = sdk().await else { return };
    let g = Gateway::start("").await;
    let run = mail(sdk, &g, "denied", MAIL_SYNC_SECRET).await;
    assert_denied(&g, &run);
    g.server.stop().await;
}
