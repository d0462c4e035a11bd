//! Gets a Microsoft Graph token with the real `azure_identity`
//! `ManagedIdentityCredential`, exactly as an unmodified Rust application
//! would, once per case given on the command line.
//!
//! Usage: azure-identity-rust-interop CASE...
//!
//! where CASE is `system` (no selector), `client_id=ID`, `object_id=ID` or
//! `resource_id=ID` (`UserAssignedId::ClientId`, `ObjectId`, `ResourceId`).
//! The App Service source is selected by `IDENTITY_ENDPOINT` and
//! `IDENTITY_HEADER` in the environment (`tests/azure_sdk_rust.rs` sets them
//! to the broker). Prints one JSON line per case:
//!
//! `{"case", "ok", "token", "expires_on", "error", "kind", "stage", "status", "body"}`
//!
//! `token` and `expires_on` (Unix seconds) on success; on failure `error`
//! (the SDK's message), `kind` (its `ErrorKind`), `stage` (`new`: the
//! credential was refused before any request; `get_token`: the request
//! failed), and for an HTTP error the `status` and the response `body` the
//! SDK kept. Exits 0 once every case is reported, 2 on a malformed case.

use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_identity::{ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId};
use serde_json::{json, Value};
use std::process::ExitCode;

const SCOPE: &str = "https://graph.microsoft.com/.default";

fn selector(case: &str) -> Result<Option<UserAssignedId>, String> {
    if case == "system" {
        return Ok(None);
    }
    let (kind, id) = case
        .split_once('=')
        .ok_or_else(|| format!("malformed case {case:?}"))?;
    let id = id.to_owned();
    Ok(Some(match kind {
        "client_id" => UserAssignedId::ClientId(id),
        "object_id" => UserAssignedId::ObjectId(id),
        "resource_id" => UserAssignedId::ResourceId(id),
        _ => return Err(format!("unknown selector {kind:?} in {case:?}")),
    }))
}

/// A failure as JSON: the SDK's message and, for an HTTP error, the status
/// and body of the response it kept (inside the credential's wrapper).
fn failure(case: &str, stage: &str, error: &azure_core::Error) -> Value {
    let inner = error.downcast_ref::<azure_core::Error>().unwrap_or(error);
    let (status, body) = match inner.kind() {
        ErrorKind::HttpResponse {
            status,
            raw_response,
            ..
        } => (
            Some(u16::from(*status)),
            raw_response
                .as_ref()
                .map(|r| String::from_utf8_lossy(r.body()).into_owned()),
        ),
        _ => (None, None),
    };
    json!({
        "case": case,
        "ok": false,
        "token": null,
        "expires_on": null,
        "error": error.to_string(),
        "kind": format!("{:?}", error.kind()),
        "stage": stage,
        "status": status,
        "body": body,
    })
}

async fn run(case: &str) -> Result<Value, String> {
    let options = ManagedIdentityCredentialOptions {
        user_assigned_id: selector(case)?,
        ..Default::default()
    };
    let credential = match ManagedIdentityCredential::new(Some(options)) {
        Ok(credential) => credential,
        Err(e) => return Ok(failure(case, "new", &e)),
    };
    Ok(match credential.get_token(&[SCOPE], None).await {
        Ok(token) => json!({
            "case": case,
            "ok": true,
            "token": token.token.secret(),
            "expires_on": token.expires_on.unix_timestamp(),
            "error": null,
        }),
        Err(e) => failure(case, "get_token", &e),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cases: Vec<String> = std::env::args().skip(1).collect();
    if cases.is_empty() {
        eprintln!(
            "usage: azure-identity-rust-interop system|client_id=ID|object_id=ID|resource_id=ID..."
        );
        return ExitCode::from(2);
    }
    for case in &cases {
        match run(case).await {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        }
    }
    ExitCode::SUCCESS
}
