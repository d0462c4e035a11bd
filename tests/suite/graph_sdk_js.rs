//! The real Microsoft Graph JavaScript client
//! (`@microsoft/microsoft-graph-client`), unmodified, through the broker's
//! Graph gateway: `Client.initWithMiddleware` with the gateway as base URL
//! and a small middleware that sends the account's secret ahead of the
//! SDK's own retry, redirect, telemetry and HTTP handlers.
//!
//! `target/graph-sdk-js` gets a `package.json` pinning [`PINNED`] and
//! `npm install` on first use (once per test binary; an install of that
//! version is reused). `tests/graph_sdk/mail.mjs` is copied next to its
//! `node_modules` and lists, sends or is refused, one action per process.
//! The checks are `graph_sdk.rs`'s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::common::run;
use crate::gateway::{Gateway, MAIL_SYNC_SECRET, NOTIFIER_SECRET};
use crate::graph_sdk::{assert_denied, assert_listed, assert_sent, run_program};

use common::sdk::SdkRun;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The client release the README's set-up rests on (the last 3.x).
const PINNED: &str = "3.0.7";
/// Node 18 and later have the global `fetch` the client falls back on, so
/// no `isomorphic-fetch`/`node-fetch` polyfill is installed.
const NODE_MAJOR: u32 = 18;

/// The install directory and what is installed in it.
#[derive(Debug)]
struct Sdk {
    dir: PathBuf,
    /// `@microsoft/microsoft-graph-client X, node Y`.
    versions: String,
}

static SDK: OnceLock<Result<Sdk, String>> = OnceLock::new();

fn package_json() -> String {
    format!(
        "{{\n  \"name\": \"tokenbroker-graph-sdk-js-test\",\n  \"private\": true,\n  \
         \"description\": \"written by tests/suite/graph_sdk_js.rs\",\n  \
         \"dependencies\": {{\n    \"@microsoft/microsoft-graph-client\": \"{PINNED}\"\n  }}\n}}\n"
    )
}

/// The installed client's version, as `dir` resolves it.
fn installed_version(dir: &Path) -> Result<String, String> {
    run(Command::new("node").current_dir(dir).args([
        "-e",
        "console.log(require('@microsoft/microsoft-graph-client/package.json').version)",
    ]))
}

/// Makes sure `target/graph-sdk-js` has [`PINNED`] installed and the
/// program beside it (blocking).
fn install_sdk() -> Result<Sdk, String> {
    let node = common::sdk::node_at_least(NODE_MAJOR)?;
    let dir = common::sdk::npm_install(
        "graph-sdk-js",
        &package_json(),
        &format!("@microsoft/microsoft-graph-client@{PINNED}"),
        |dir| installed_version(dir).is_ok_and(|v| v == PINNED),
    )?;
    let version = installed_version(&dir).map_err(|e| {
        format!("@microsoft/microsoft-graph-client is not resolvable after npm install: {e}")
    })?;
    if version != PINNED {
        return Err(format!(
            "npm installed @microsoft/microsoft-graph-client {version}, not {PINNED}"
        ));
    }
    common::sdk::place_program(&dir, "graph_sdk/mail.mjs", "mail.mjs")?;
    Ok(Sdk {
        dir,
        versions: format!("@microsoft/microsoft-graph-client {version}, node {node}"),
    })
}

/// The installed client, once per test binary (`None`: skipped, saying why).
async fn sdk() -> Option<&'static Sdk> {
    common::sdk::installed(
        &SDK,
        install_sdk,
        &format!("node >= {NODE_MAJOR}, npm and the npm registry, for the real @microsoft/microsoft-graph-client package"),
        |sdk| &sdk.versions,
    )
    .await
}

/// Runs `node mail.mjs ACTION` as the account with `secret`.
async fn mail(sdk: &Sdk, g: &Gateway, action: &str, secret: &str) -> SdkRun {
    let mut command = Command::new("node");
    command.current_dir(&sdk.dir).arg("mail.mjs").arg(action);
    run_program("mail.mjs", command, g, secret).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_js_sdk_pages_through_a_mailbox() {
    let Some(sdk) = sdk().await else { return };
    let g = Gateway::start("").await;
    let run = mail(sdk, &g, "list", MAIL_SYNC_SECRET).await;
    assert_listed(&g, &run);
    g.server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_js_sdk_sends_mail() {
    let Some(sdk) = sdk().await else { return };
    let g = Gateway::start("").await;
    let run = mail(sdk, &g, "send", NOTIFIER_SECRET).await;
    assert_sent(&g, &run);
    g.server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_js_sdk_throws_the_gateways_refusal_as_a_graph_error() {
    let Some(sdk) = sdk().await else { return };
    let g = Gateway::start("").await;
    let run = mail(sdk, &g, "denied", MAIL_SYNC_SECRET).await;
    assert_denied(&g, &run);
    g.server.stop().await;
}
