//! `tokenbroker status | refresh | evict | reload`: the admin API over its
//! Unix socket, for people (a table) and scripts (`--json`).

use super::{out, runtime, CliError};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use serde_json::Value;
use std::path::Path;

/// An answer of the admin API.
struct Answer {
    status: u16,
    body: Value,
}

/// One request to the admin socket at `socket`.
fn request(socket: &Path, method: &str, target: &str) -> Result<Answer, CliError> {
    runtime()?.block_on(async {
        let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| {
            let why = match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    "no daemon is listening there (is `tokenbroker serve` running with server.admin_socket set?)".to_owned()
                }
                std::io::ErrorKind::PermissionDenied => format!(
                    "permission denied: run as root, as the daemon's user, or as a member of server.admin_group ({e})"
                ),
                _ => e.to_string(),
            };
            CliError::Other(format!("cannot connect to the admin socket {}: {why}", socket.display()))
        })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| CliError::Other(format!("admin socket {}: {e}", socket.display())))?;
        tokio::spawn(connection);
        let req = hyper::Request::builder()
            .method(method)
            .uri(target)
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .map_err(|e| CliError::Other(format!("building the admin request: {e}")))?;
        let response = sender
            .send_request(req)
            .await
            .map_err(|e| CliError::Other(format!("admin socket {}: {e}", socket.display())))?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| CliError::Other(format!("reading the admin answer: {e}")))?
            .to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer { status, body })
    })
}

/// The error an admin answer carries, as a command failure.
fn failure(answer: &Answer) -> CliError {
    let message = answer.body["message"]
        .as_str()
        .unwrap_or("the admin API refused the request");
    let message = if answer.status == 403 {
        format!("{message} (you are uid {})", current_uid())
    } else {
        message.to_owned()
    };
    let message = format!("{} ({})", message, answer.status);
    match answer.status {
        // What was asked is wrong (an unknown tenant or resource): a usage error.
        400 | 404 => CliError::Usage(message),
        _ => CliError::Other(message),
    }
}

fn current_uid() -> String {
    crate::sys::own_uid().to_string()
}

fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// `tokenbroker status`.
pub(super) fn status(socket: &Path, tenant: Option<&str>, json: bool) -> Result<(), CliError> {
    let status = request(socket, "GET", "/admin/status")?;
    if status.status != 200 {
        return Err(failure(&status));
    }
    let target = match tenant {
        Some(t) => format!("/admin/tenants/{}", encode(t)),
        None => "/admin/tenants".to_owned(),
    };
    let tenants = request(socket, "GET", &target)?;
    if tenants.status != 200 {
        return Err(failure(&tenants));
    }
    let rows = tenants.body["tenants"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if json {
        let both = serde_json::json!({"status": status.body, "tenants": rows});
        return out(format_args!("{both}"));
    }
    let now = crate::clock::unix_seconds(std::time::SystemTime::now());
    out(format_args!("{}", table(&status.body, &rows, now)))
}

/// The status as people read it. Pure.
fn table(status: &Value, rows: &[Value], now: u64) -> String {
    let mut text = format!(
        "tokenbroker {}, configuration {} (loaded {}), {} configured tenant(s)\n",
        status["version"].as_str().unwrap_or("?"),
        status["config_file"].as_str().unwrap_or("in memory"),
        ago(status["config_loaded_at"].as_u64(), now),
        status["tenants"].as_u64().unwrap_or(0),
    );
    for c in status["credentials"].as_array().into_iter().flatten() {
        let rejection = match &c["last_rejection"] {
            Value::Object(r) => format!(
                ", refused by {} {} ({})",
                r.get("tenant").and_then(Value::as_str).unwrap_or("?"),
                ago(r.get("at").and_then(Value::as_u64), now),
                r.get("aadsts").and_then(Value::as_str).unwrap_or("?"),
            ),
            _ => String::new(),
        };
        text.push_str(&format!(
            "credential {} {}: expires in {}{}\n",
            c["thumbprint"].as_str().unwrap_or("?"),
            if c["in_use"].as_bool() == Some(true) {
                "(in use)"
            } else {
                "(standby)"
            },
            until(c["not_after"].as_u64(), now),
            rejection,
        ));
    }
    if let Value::Object(shared) = &status["shared_cache"] {
        let field = |k: &str| shared.get(k).and_then(Value::as_str).unwrap_or("?");
        let error = match shared.get("last_error").and_then(Value::as_str) {
            Some(e) => format!(": {e}"),
            None => String::new(),
        };
        text.push_str(&format!(
            "shared cache {} {} (since {}), key {}{}\n",
            field("target"),
            field("state"),
            ago(shared.get("since").and_then(Value::as_u64), now),
            field("key_id"),
            error,
        ));
    }
    for f in status["token_files"].as_array().into_iter().flatten() {
        let field = |k: &str| f.get(k).and_then(Value::as_str).unwrap_or("?");
        let written = match f.get("last_written_at").and_then(Value::as_u64) {
            Some(at) => format!(
                "written {}, token expires in {}",
                ago(Some(at), now),
                until(f.get("expires_on").and_then(Value::as_u64), now)
            ),
            None => "not written yet".to_owned(),
        };
        let error = match f.get("last_error").and_then(Value::as_str) {
            Some(e) => format!("; FAILING: {e}"),
            None => String::new(),
        };
        text.push_str(&format!(
            "token file {} ({}, tenant {}): {written}{error}\n",
            field("path"),
            field("format"),
            field("tenant"),
        ));
    }
    text.push_str(&tenant_rows(rows, now));
    text
}

/// The tenants' rows as a table. Pure.
fn tenant_rows(rows: &[Value], now: u64) -> String {
    let mut text = String::new();
    // With several apps, each row says whose token it is.
    let apps: std::collections::HashSet<&str> =
        rows.iter().filter_map(|r| r["app"].as_str()).collect();
    let several = apps.len() > 1;
    let mut lines = vec![[
        "TENANT".to_owned(),
        "RESOURCE".to_owned(),
        "CONSENT".to_owned(),
        "EXPIRES IN".to_owned(),
        "MISSING PERMISSIONS".to_owned(),
        "LAST ERROR".to_owned(),
    ]];
    for row in rows {
        let name = row["name"]
            .as_str()
            .or_else(|| row["id"].as_str())
            .unwrap_or("?");
        let missing = match row["missing_permissions"].as_array() {
            Some(list) if list.is_empty() => "-".to_owned(),
            Some(list) => list
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            None => "?".to_owned(),
        };
        let error = match &row["last_error"] {
            Value::Object(e) => format!(
                "{} {}",
                e.get("aadsts")
                    .and_then(Value::as_str)
                    .or_else(|| e.get("error").and_then(Value::as_str))
                    .unwrap_or("?"),
                ago(e.get("at").and_then(Value::as_u64), now)
            ),
            _ => "-".to_owned(),
        };
        lines.push([
            match row["app"].as_str() {
                Some(app) if several => format!("{name} ({app})"),
                _ => name.to_owned(),
            },
            row["resource"].as_str().unwrap_or("?").to_owned(),
            row["consent"].as_str().unwrap_or("?").to_owned(),
            match row["token"]["expires_on"].as_u64() {
                Some(at) => until(Some(at), now),
                None => "-".to_owned(),
            },
            missing,
            error,
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text.trim_end().to_owned()
}

/// `12m ago`, for a unix time at or before `now`.
fn ago(at: Option<u64>, now: u64) -> String {
    match at {
        Some(at) => format!("{} ago", span(now.saturating_sub(at))),
        None => "never".to_owned(),
    }
}

/// `52m`, for a unix time after `now` (`expired` when past).
fn until(at: Option<u64>, now: u64) -> String {
    match at {
        Some(at) if at > now => span(at - now),
        Some(_) => "expired".to_owned(),
        None => "?".to_owned(),
    }
}

fn span(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// What `refresh` or `evict` acts on.
pub(super) struct Target<'a> {
    pub(super) tenant: &'a str,
    pub(super) resource: Option<&'a str>,
    pub(super) app: Option<&'a str>,
}

/// `tokenbroker refresh` and `evict`: what was done, then the tenant's
/// rows (a table, or the admin API's JSON with `--json`).
pub(super) fn act(
    socket: &Path,
    action: &str,
    what: &Target<'_>,
    json: bool,
) -> Result<(), CliError> {
    let Target {
        tenant,
        resource,
        app,
    } = *what;
    let query: Vec<String> = [("resource", resource), ("app", app)]
        .into_iter()
        .filter_map(|(name, value)| Some(format!("{name}={}", encode(value?))))
        .collect();
    let mut target = format!("/admin/tenants/{}/{action}", encode(tenant));
    if !query.is_empty() {
        target.push('?');
        target.push_str(&query.join("&"));
    }
    let answer = request(socket, "POST", &target)?;
    if answer.status != 200 {
        return Err(failure(&answer));
    }
    if json {
        return out(format_args!("{}", answer.body));
    }
    let rows = answer.body["tenants"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let now = crate::clock::unix_seconds(std::time::SystemTime::now());
    out(format_args!(
        "{}\n{}",
        done(action, tenant, resource),
        tenant_rows(&rows, now)
    ))
}

/// The line `refresh` or `evict` prints first. Pure.
fn done(action: &str, tenant: &str, resource: Option<&str>) -> String {
    let what = resource.unwrap_or(if action == "refresh" {
        "Microsoft Graph"
    } else {
        "every resource"
    });
    match action {
        "refresh" => format!("refreshed {tenant} ({what}): a new token from Entra"),
        _ => format!(
            "evicted {tenant} ({what}): cached tokens and remembered refusals dropped; nothing is fetched until a caller asks"
        ),
    }
}

/// `tokenbroker reload`: exit 2 when the daemon refuses the new
/// configuration (it keeps serving the previous one).
pub(super) fn reload(socket: &Path, json: bool) -> Result<(), CliError> {
    let answer = match request(socket, "POST", "/admin/reload") {
        Ok(answer) => answer,
        Err(e) => return super::or_json_error(json, Err(e)),
    };
    if json {
        out(format_args!("{}", answer.body))?;
    }
    match answer.status {
        200 if json => Ok(()),
        200 => {
            let restart: Vec<&str> = answer.body["restart_needed"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if restart.is_empty() {
                out(format_args!("reloaded"))
            } else {
                out(format_args!(
                    "reloaded; these changes need a restart and kept their old value: {}",
                    restart.join(", ")
                ))
            }
        }
        400 if answer.body["error"] == "reload_failed" => Err(CliError::Usage(format!(
            "the daemon refused the new configuration and keeps serving the previous one: {}",
            answer.body["message"].as_str().unwrap_or("?")
        ))),
        _ => Err(failure(&answer)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_of_several_apps_name_their_app() {
        let row = |app: &str| {
            json!({"app": app, "name": "contoso", "id": "contoso.com",
                "resource": "https://graph.microsoft.com", "consent": "granted",
                "token": null, "missing_permissions": null, "last_error": null})
        };
        let two = tenant_rows(&[row("mail"), row("notify")], 1000);
        let lines: Vec<&str> = two.lines().collect();
        assert!(lines[1].starts_with("contoso (mail) "), "{two}");
        assert!(lines[2].starts_with("contoso (notify) "), "{two}");
        // One app: the table is as it always was.
        let one = tenant_rows(&[row("default")], 1000);
        assert!(one.lines().nth(1).unwrap().starts_with("contoso "), "{one}");
        assert!(!one.contains("(default)"), "{one}");
    }

    #[test]
    fn the_status_table_reads_at_a_glance() {
        let status = json!({"version": "0.1.0", "config_file": "/etc/t.toml", "config_loaded_at": 900,
            "tenants": 2, "credentials": [{"thumbprint": "AB12", "not_after": 1000 + 40 * 86_400,
            "in_use": true, "last_rejection": null}],
            "token_files": [{"path": "/run/t/c.token", "tenant": "contoso", "format": "token",
                "last_written_at": 990, "expires_on": 1000 + 3000, "last_error": null},
                {"path": "/run/t/f.json", "tenant": "f.com", "format": "json",
                "last_written_at": null, "expires_on": null, "last_error": "cannot write it: denied"}]});
        let rows = vec![
            json!({"name": "contoso", "id": "contoso.com", "resource": "https://graph.microsoft.com",
                "consent": "granted", "token": {"expires_on": 1000 + 3000}, "missing_permissions": ["Mail.Send"],
                "last_error": null}),
            json!({"name": null, "id": "f.com", "resource": "https://graph.microsoft.com",
                "consent": "missing", "token": null, "missing_permissions": null,
                "last_error": {"at": 880, "error": "entra_refused", "aadsts": "AADSTS700016"}}),
        ];
        let text = table(&status, &rows, 1000);
        assert!(
            text.contains("credential AB12 (in use): expires in 40d"),
            "{text}"
        );
        assert!(
            text.contains("token file /run/t/c.token (token, tenant contoso): written 10s ago, token expires in 50m\n"),
            "{text}"
        );
        assert!(
            text.contains("token file /run/t/f.json (json, tenant f.com): not written yet; FAILING: cannot write it: denied\n"),
            "{text}"
        );
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("token file"))
            .collect();
        assert!(lines[2].starts_with("TENANT"), "{text}");
        assert!(
            lines[3].starts_with("contoso")
                && lines[3].contains("granted")
                && lines[3].contains("50m")
                && lines[3].contains("Mail.Send"),
            "{text}"
        );
        assert!(
            lines[4].starts_with("f.com")
                && lines[4].contains("missing")
                && lines[4].contains("AADSTS700016 2m ago"),
            "{text}"
        );
    }
}
