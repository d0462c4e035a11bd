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
use crate::common::{manifest_dir, run};
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
    let node = run(Command::new("node").arg("--version"))
        .map_err(|e| format!("node is not available: {e}"))?;
    let major: u32 = node
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| format!("cannot read node --version {node:?}"))?;
    if major < NODE_MAJOR {
        return Err(format!("node {node} is older than {NODE_MAJOR}"));
    }
    let dir = manifest_dir().join("target/graph-sdk-js");
    let manifest = dir.join("package.json");
    let wanted = package_json();
    let reusable = std::fs::read_to_string(&manifest).ok().as_deref() == Some(wanted.as_str())
        && installed_version(&dir).is_ok_and(|v| v == PINNED);
    if !reusable {
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        std::fs::write(&manifest, &wanted)
            .map_err(|e| format!("writing {}: {e}", manifest.display()))?;
        run(Command::new("npm").current_dir(&dir).args([
            "install",
            "--no-audit",
            "--no-fund",
            "--no-update-notifier",
        ]))
        .map_err(|e| {
            format!(
                "installing @microsoft/microsoft-graph-client@{PINNED} from the npm registry: {e}"
            )
        })?;
    }
    let version = installed_version(&dir).map_err(|e| {
        format!("@microsoft/microsoft-graph-client is not resolvable after npm install: {e}")
    })?;
    if version != PINNED {
        return Err(format!(
            "npm installed @microsoft/microsoft-graph-client {version}, not {PINNED}"
        ));
    }
    // Beside node_modules, so that its import resolves as in an
    // application. Written whole, then renamed into place: tests of this
    // binary may be starting it meanwhile.
    let program = std::fs::read(manifest_dir().join("tests/graph_sdk/mail.mjs"))
        .map_err(|e| format!("reading mail.mjs: {e}"))?;
    let partial = dir.join(format!("mail.mjs.{}", std::process::id()));
    std::fs::write(&partial, program).map_err(|e| format!("writing {}: {e}", partial.display()))?;
    std::fs::rename(&partial, dir.join("mail.mjs"))
        .map_err(|e| format!("installing mail.mjs: {e}"))?;
    Ok(Sdk {
        dir,
        versions: format!("@microsoft/microsoft-graph-client {version}, node {node}"),
    })
}

/// The installed client; installs it once per test binary. `None` (the
/// test skips, saying why) when Node.js, npm or the npm registry cannot be
/// had here; with `TOKENBROKER_TEST_ALL=1` that is a failure instead.
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
                &format!(
                    "node >= {NODE_MAJOR}, npm and the npm registry, for the real @microsoft/microsoft-graph-client package ({e})"
                ),
                false,
            );
            None
        }
    }
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
