//! The task that keeps every `[[token_files]]` entry current: it asks the
//! broker for each file's token, writes the files whose token (or form)
//! changed, and sleeps until the next token change, reload or check.

use super::{needs_write, next_check, render, Content};
use crate::broker::Broker;
use crate::config::TokenFileConfig;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;
use zeroize::Zeroizing;

/// What the writer remembers of one file between passes.
#[derive(Debug, Default)]
struct Memory {
    written: Option<Content>,
    /// When the token written stops being good enough; `None` after a
    /// failed attempt (the next pass is at most [`super::CHECK_INTERVAL`] away).
    good_until: Option<Instant>,
    /// Whether the last attempt failed (the next success is logged).
    failing: bool,
}

/// Keeps every configured token file current, for as long as the daemon
/// runs (`tokenbroker serve` spawns it; tests may too). Returns only when
/// the broker is gone.
pub async fn run(broker: &Broker) {
    let mut reloads = broker.watch_reloads();
    let mut changes = broker.watch_cache_changes();
    let mut memory: HashMap<PathBuf, Memory> = HashMap::new();
    loop {
        // Seen before the pass: a change during it wakes the next one.
        reloads.borrow_and_update();
        changes.borrow_and_update();
        let config = broker.config();
        // Files a reload removed are left on disk, and forgotten here.
        memory.retain(|path, _| config.token_files.iter().any(|f| f.path == *path));
        let floor_of = config.cache.min_remaining.0;
        let passes = config.token_files.iter().map(|file| {
            let remembered = memory.remove(&file.path).unwrap_or_default();
            async move {
                let updated = visit(broker, file, remembered, floor_of).await;
                (file.path.clone(), updated)
            }
        });
        // Side by side: a tenant Entra is slow for does not hold up the others.
        for (path, updated) in futures_util::future::join_all(passes).await {
            memory.insert(path, updated);
        }
        let wait = next_check(Instant::now(), memory.values().map(|m| m.good_until));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            changed = reloads.changed() => if changed.is_err() { return },
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}

/// One file, once: its token from the cache, written when it changed.
async fn visit(
    broker: &Broker,
    file: &TokenFileConfig,
    mut memory: Memory,
    min_remaining: Duration,
) -> Memory {
    let tenant = file.tenant.to_string();
    let resource = file.resource.as_ref().map(|r| r.as_str());
    let app = file.app.as_ref().map(|a| a.as_str());
    let outcome = match broker.token_for_file(&tenant, resource, app).await {
        Err(e) => Err(format!(
            "no token for tenant {tenant}: {e}; the file keeps its last token"
        )),
        Ok(issued) => {
            let token = &issued.grant.token;
            let good_until = token
                .expires_at
                .checked_sub(token.floor(min_remaining))
                .unwrap_or_else(Instant::now);
            // Validated at load; a value that is not one fails the write.
            let mode = file.mode_bits();
            let wanted = Content {
                token_sha256: token.sha256,
                format: file.format,
                mode: mode.clone().unwrap_or(0o600),
                group: file.group.clone(),
            };
            // A stat of a local file: not worth a blocking thread.
            let present = file.path.try_exists().unwrap_or(false);
            if !needs_write(memory.written.as_ref(), &wanted, present) {
                memory.good_until = Some(good_until);
                return memory;
            }
            let bytes = render(
                file.format,
                token.access_token.expose(),
                token.expires_on,
                issued.target.tenant.id.as_str(),
                issued.target.resource.as_str(),
            );
            match write(file, mode, bytes).await {
                Ok(()) => {
                    memory.written = Some(wanted);
                    memory.good_until = Some(good_until);
                    Ok(token.expires_on)
                }
                Err(e) => Err(e),
            }
        }
    };
    let path = file.path.display();
    match &outcome {
        Ok(expires_on) => {
            if std::mem::take(&mut memory.failing) {
                tracing::info!(token_file = %path, tenant, expires_on, "token file written again");
            } else {
                tracing::debug!(token_file = %path, tenant, expires_on, "token file written");
            }
        }
        Err(e) => {
            memory.failing = true;
            memory.good_until = None;
            if let Some(held_back) = crate::log_limit::admit(&format!("token file: {path}")) {
                tracing::error!(token_file = %path, tenant, held_back, "token file {path}: {e}");
            }
        }
    }
    broker.token_file_written(&file.path, outcome);
    memory
}

/// Replaces the file with `bytes` (blocking work: the group's look-up
/// through the name service, the writes and syncs).
async fn write(
    file: &TokenFileConfig,
    mode: Result<u32, String>,
    bytes: Zeroizing<Vec<u8>>,
) -> Result<(), String> {
    let mode = mode?;
    let path = file.path.clone();
    let group = file.group.clone();
    let written = tokio::task::spawn_blocking(move || {
        let gid = match &group {
            Some(name) => Some(crate::sys::group_id(name).ok_or_else(|| {
                format!("group \"{name}\" is not known to the name service; create it or change token_files.group")
            })?),
            None => None,
        };
        crate::sys::replace_file(&path, mode, gid, |out| {
            std::io::Write::write_all(out, &bytes)
        })
        .map_err(|e| {
            let dir = path.parent().map(|d| d.display().to_string()).unwrap_or_default();
            format!(
                "cannot write it: {e}; the directory {dir} must exist and be writable by {}{} \
                 (`tokenbroker check` tests it)",
                crate::sys::process_user(),
                match &group {
                    Some(g) => format!(", a member of group {g}"),
                    None => String::new(),
                }
            )
        })
    })
    .await;
    written.unwrap_or_else(|e| Err(format!("the write did not finish: {e}")))
}
