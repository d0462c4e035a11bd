//! Token files (`[[token_files]]`, docs/contract.md "Token files"): for a
//! caller that can only read a file (a cron job, a container without a
//! client), the daemon keeps a current token of one tenant in a file,
//! replaced whole whenever the token changes.
//!
//! - Pure: what a file holds ([`render`]), whether to write it again
//!   ([`needs_write`]) and when to look again ([`next_check`]).
//! - The writer ([`writer::run`]) asks the broker for each file's token as a caller
//!   would, from the cache and without an account
//!   ([`Broker::token_for_file`]), and replaces the file through
//!   [`crate::sys::replace_file`] on a blocking thread. It looks again when
//!   the cache stores or drops a token, after a reload, and at least every
//!   [`CHECK_INTERVAL`], and never later than the moment the token written
//!   would drop below its hand-out floor (`cache.min_remaining`).
//! - A file that cannot be written is an ERROR line (rate-limited), a
//!   metric and the status ([`Broker::token_file_written`]); the daemon
//!   goes on, and the file keeps its last token.

pub mod writer;

use crate::config::{Config, TokenFileConfig, TokenFileFormat};
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;
use zeroize::Zeroizing;

/// The longest a file goes unlooked-at: a token refreshed or evicted is in
/// its files within this, even if no change was seen.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// The shortest wait between two passes: a token at its floor is replaced
/// by the cache at once, so this only bounds a loop on a misbehaving clock.
const MIN_WAIT: Duration = Duration::from_millis(50);

/// What a file holds, rendered: the token alone (no newline, so
/// `$(cat file)` and a raw read agree), or one JSON object.
pub fn render(
    format: TokenFileFormat,
    token: &str,
    expires_on: u64,
    tenant_id: &str,
    resource: &str,
) -> Zeroizing<Vec<u8>> {
    match format {
        TokenFileFormat::Token => Zeroizing::new(token.as_bytes().to_vec()),
        TokenFileFormat::Json => {
            #[derive(Serialize)]
            struct Json<'a> {
                access_token: &'a str,
                expires_on: u64,
                tenant_id: &'a str,
                resource: &'a str,
            }
            // Sized up front: no reallocation leaves a copy of the token behind.
            let mut out = Zeroizing::new(Vec::with_capacity(
                token.len() + tenant_id.len() + resource.len() + 128,
            ));
            let json = Json {
                access_token: token,
                expires_on,
                tenant_id,
                resource,
            };
            // Writing strings and a number into a Vec cannot fail.
            if serde_json::to_writer(&mut *out, &json).is_err() {
                out.clear();
            }
            out
        }
    }
}

/// What the writer put in a file, as far as it knows: rewritten when any of
/// it changes (a new token, or a reload changing format, mode or group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// SHA-256 of the token (never the token itself).
    pub token_sha256: [u8; 32],
    pub format: TokenFileFormat,
    pub mode: u32,
    pub group: Option<String>,
}

/// Whether a file must be written: it is gone (removed by someone), or
/// what it holds is not what it should. Pure.
pub fn needs_write(written: Option<&Content>, wanted: &Content, present: bool) -> bool {
    !present || written != Some(wanted)
}

/// How long until the next pass, given when each file's token stops being
/// good enough (its hand-out floor; `None` for a file whose last attempt
/// failed or that has none): the earliest of those, at most
/// [`CHECK_INTERVAL`]. Pure.
pub fn next_check(now: Instant, good_until: impl IntoIterator<Item = Option<Instant>>) -> Duration {
    good_until
        .into_iter()
        .flatten()
        .map(|until| until.saturating_duration_since(now))
        .fold(CHECK_INTERVAL, Duration::min)
        .max(MIN_WAIT)
}

/// One file in `/admin/status`.
#[derive(Debug, Clone, Serialize)]
pub struct FileView {
    pub path: String,
    /// The app's `name`.
    pub app: String,
    /// As configured (a name, GUID or domain).
    pub tenant: String,
    pub resource: String,
    pub format: &'static str,
    /// Unix seconds; null until written by this process.
    pub last_written_at: Option<u64>,
    /// The written token's expiry, unix seconds.
    pub expires_on: Option<u64>,
    /// Why the last attempt failed; null once a write succeeds.
    pub last_error: Option<String>,
}

/// What happened to each file (for the status), by path.
#[derive(Debug, Default)]
pub struct Book {
    files: std::sync::Mutex<HashMap<PathBuf, Record>>,
}

/// The last outcome of one file.
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub last_written_at: Option<u64>,
    pub expires_on: Option<u64>,
    pub last_error: Option<String>,
}

impl Book {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Record>> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A successful write (`Ok(expires_on)`) or why it failed, at `now`.
    pub fn record(&self, path: &std::path::Path, outcome: Result<u64, String>, now: u64) {
        let mut files = self.lock();
        let record = files.entry(path.to_owned()).or_default();
        match outcome {
            Ok(expires_on) => {
                record.last_written_at = Some(now);
                record.expires_on = Some(expires_on);
                record.last_error = None;
            }
            Err(e) => record.last_error = Some(e),
        }
    }

    /// Each configured file with its last outcome, in the file's order;
    /// records of files no longer configured are forgotten.
    pub fn views(&self, config: &Config) -> Vec<FileView> {
        let files = &config.token_files;
        let mut book = self.lock();
        book.retain(|path, _| files.iter().any(|f| f.path == *path));
        files
            .iter()
            .map(|f| {
                let record = book.get(&f.path).cloned().unwrap_or_default();
                let app = config.app_or_first(f.app.as_ref().map(|a| a.as_str()));
                FileView {
                    path: f.path.display().to_string(),
                    app: app.name.to_string(),
                    tenant: f.tenant.to_string(),
                    resource: f
                        .resource
                        .as_ref()
                        .map_or_else(|| app.graph().to_string(), |r| r.as_str().to_owned()),
                    format: f.format.as_str(),
                    last_written_at: record.last_written_at,
                    expires_on: record.expires_on,
                    last_error: record.last_error,
                }
            })
            .collect()
    }
}

/// `tokenbroker check`: each file's directory exists, is a directory, this
/// user can create files in it, and the group is known. The error names
/// the key (`token_files[0].path`).
pub fn check(files: &[TokenFileConfig]) -> Result<Vec<String>, (String, String)> {
    let mut ok = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let key = |k: &str| format!("token_files[{i}].{k}");
        let dir = match file.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => std::path::Path::new("."),
        };
        let user = crate::sys::process_user();
        match std::fs::metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err((
                    key("path"),
                    format!(
                        "the directory {} does not exist; create it, writable by the daemon's user \
                         (systemd: RuntimeDirectory=tokenbroker tokenbroker/files; Kubernetes: an emptyDir volume)",
                        dir.display()
                    ),
                ))
            }
            Err(e) => {
                return Err((
                    key("path"),
                    format!("cannot look at the directory {}: {e}", dir.display()),
                ))
            }
            Ok(meta) if !meta.is_dir() => {
                return Err((
                    key("path"),
                    format!("{} is not a directory; the file must be in one", dir.display()),
                ))
            }
            Ok(_) => {}
        }
        crate::sys::writable(dir).map_err(|e| {
            (
                key("path"),
                format!(
                    "cannot create files in {} as {user}: {e}; make the directory writable by the daemon's user",
                    dir.display()
                ),
            )
        })?;
        if let Some(group) = &file.group {
            if crate::sys::group_id(group).is_none() {
                return Err((
                    key("group"),
                    format!("group \"{group}\" is not known to the name service; create it (groupadd {group}) or change the key"),
                ));
            }
        }
        ok.push(format!(
            "{} ({} for tenant {}, mode {}{}): its directory is writable by {user}",
            file.path.display(),
            file.format.as_str(),
            file.tenant,
            file.mode,
            file.group
                .as_ref()
                .map(|g| format!(", group {g}"))
                .unwrap_or_default()
        ));
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJ0aWQiOiJ4In0.c2ln";

    #[test]
    fn a_token_file_is_the_token_alone_or_one_json_object() {
        let raw = render(
            TokenFileFormat::Token,
            JWT,
            1_700_000_000,
            "contoso.onmicrosoft.com",
            "https://graph.microsoft.com",
        );
        assert_eq!(&raw[..], JWT.as_bytes());
        let json = render(
            TokenFileFormat::Json,
            JWT,
            1_700_000_000,
            "contoso.onmicrosoft.com",
            "https://graph.microsoft.com",
        );
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "access_token": JWT,
                "expires_on": 1_700_000_000u64,
                "tenant_id": "contoso.onmicrosoft.com",
                "resource": "https://graph.microsoft.com",
            })
        );
        // A token needing escapes still makes valid JSON.
        let odd = render(
            TokenFileFormat::Json,
            "a\"b\\c",
            1,
            "t.example.com",
            "https://r.example.com",
        );
        let value: serde_json::Value = serde_json::from_slice(&odd).unwrap();
        assert_eq!(value["access_token"], "a\"b\\c");
    }

    fn content(token: u8) -> Content {
        Content {
            token_sha256: [token; 32],
            format: TokenFileFormat::Token,
            mode: 0o640,
            group: None,
        }
    }

    #[test]
    fn a_file_is_written_when_its_token_or_its_settings_change_or_it_is_gone() {
        let a = content(1);
        assert!(needs_write(None, &a, false), "first write");
        assert!(needs_write(None, &a, true), "a file left by an earlier run");
        assert!(!needs_write(Some(&a), &a, true), "unchanged");
        assert!(needs_write(Some(&a), &a, false), "removed by someone");
        assert!(needs_write(Some(&a), &content(2), true), "a new token");
        let json = Content {
            format: TokenFileFormat::Json,
            ..a.clone()
        };
        let mode = Content {
            mode: 0o600,
            ..a.clone()
        };
        let group = Content {
            group: Some("mail".into()),
            ..a.clone()
        };
        for changed in [json, mode, group] {
            assert!(needs_write(Some(&a), &changed, true), "{changed:?}");
        }
    }

    #[test]
    fn the_next_look_is_before_any_token_written_drops_below_its_floor() {
        let now = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(next_check(now, []), CHECK_INTERVAL);
        assert_eq!(next_check(now, [None, None]), CHECK_INTERVAL);
        assert_eq!(next_check(now, [Some(now + s(3600))]), CHECK_INTERVAL);
        assert_eq!(
            next_check(now, [Some(now + s(3600)), Some(now + s(2)), None]),
            s(2)
        );
        // Already at its floor: at once (the cache replaces it), but never a spin.
        assert_eq!(next_check(now, [Some(now)]), MIN_WAIT);
    }

    #[test]
    fn the_book_shows_configured_files_only_and_the_last_outcome() {
        let config = crate::config::Config::parse(
            "[app]\nclient_id = \"11111111-2222-3333-4444-555555555555\"\ncertificate = \"c\"\nprivate_key = \"k\"\n\
             [[token_files]]\npath = \"/run/a.token\"\ntenant = \"contoso.onmicrosoft.com\"\n",
            std::path::Path::new("/etc/t.toml"),
        )
        .unwrap();
        let book = Book::default();
        let path = std::path::Path::new("/run/a.token");
        book.record(path, Ok(2000), 1000);
        book.record(std::path::Path::new("/run/gone.token"), Ok(1), 1);
        let views = book.views(&config);
        assert_eq!(views.len(), 1);
        assert_eq!(
            (views[0].last_written_at, views[0].expires_on),
            (Some(1000), Some(2000))
        );
        assert_eq!(views[0].resource, "https://graph.microsoft.com");
        book.record(path, Err("disk full".into()), 1100);
        let views = book.views(&config);
        // The last success stays, with the error after it.
        assert_eq!(views[0].last_written_at, Some(1000));
        assert_eq!(views[0].last_error.as_deref(), Some("disk full"));
        assert_eq!(book.lock().len(), 1, "the removed file is forgotten");
    }
}
