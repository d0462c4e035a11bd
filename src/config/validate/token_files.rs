//! `[[token_files]]`: what a file the daemon keeps fresh must be.

use super::{broken, Broken};
use crate::config::schema::Config;
use crate::config::types::{Name, TenantId, TenantRef};
use std::collections::{HashMap, HashSet};

/// At most this many `[[token_files]]`: each is a file rewritten at every
/// token change, checked every few seconds.
const MAX_TOKEN_FILES: usize = 256;

/// `[[token_files]]`: a bounded count, unique paths naming a file, a tenant
/// that is one (a configured name, or a GUID or domain; never `"*"`), a
/// mode that is not world-writable, a group name that is one.
pub(super) fn token_files(
    config: &Config,
    tenants: &HashMap<&Name, &TenantId>,
) -> Result<(), Broken> {
    if config.token_files.len() > MAX_TOKEN_FILES {
        return Err(broken(
            "token_files",
            format!(
                "lists {} files; at most {MAX_TOKEN_FILES} are kept (callers that can share one should read the same file)",
                config.token_files.len()
            ),
        ));
    }
    let mut paths = HashSet::new();
    for (i, file) in config.token_files.iter().enumerate() {
        let key = |k: &str| format!("token_files[{i}].{k}");
        let named_file = file.path.file_name().is_some_and(|n| n != "." && n != "..");
        if !named_file || file.path.as_os_str().to_string_lossy().ends_with('/') {
            return Err(broken(
                key("path"),
                format!("\"{}\" names no file; give the file's path, e.g. /run/tokenbroker/files/contoso.token", file.path.display()),
            ));
        }
        if !paths.insert(&file.path) {
            return Err(broken(
                key("path"),
                format!(
                    "\"{}\" is used by two token files; each file holds one token",
                    file.path.display()
                ),
            ));
        }
        if config.cache.state_file.as_ref() == Some(&file.path) {
            return Err(broken(
                key("path"),
                "is cache.state_file's path; give the token file a path of its own",
            ));
        }
        if let Some(app) = &file.app {
            super::app_names(config, &key("app"), std::slice::from_ref(app))?;
        }
        match &file.tenant {
            TenantRef::Any => {
                return Err(broken(
                    key("tenant"),
                    "\"*\" is not a tenant; a file holds one tenant's token (a configured name, GUID or domain)",
                ))
            }
            TenantRef::Name(name) if !tenants.contains_key(name) => {
                return Err(broken(
                    key("tenant"),
                    format!("\"{name}\" is neither a configured tenant name nor a tenant GUID or domain"),
                ))
            }
            _ => {}
        }
        file.mode_bits().map_err(|e| broken(key("mode"), e))?;
        if let Some(group) = &file.group {
            let ok = !group.is_empty()
                && group.len() <= 64
                && !group.starts_with('-')
                && group
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.$".contains(&b));
            if !ok {
                return Err(broken(
                    key("group"),
                    format!("\"{}\" is not a group name", group.escape_debug()),
                ));
            }
        }
    }
    Ok(())
}
