//! `secret new` (an account's caller secret and its hash) and
//! `cache-key new` (a key file for the fleet cache).

use super::cert::write_file;
use super::{out, CliError};
use crate::access::secret;
use crate::config::{self};
use std::path::Path;

pub(super) fn secret_new(account: &str) -> Result<(), CliError> {
    config::Name::try_from(account.to_owned())
        .map_err(|e| CliError::Usage(format!("--account: {e}")))?;
    let secret = secret::generate()
        .map_err(|_| CliError::Other("the system random generator failed".into()))?;
    let hex = secret::sha256_hex(&secret);
    out(format_args!("{}", secret.as_str()))?;
    eprintln!(
        "The line above is the secret for account \"{account}\": give it to that service \
         (Authorization: Bearer …, or IDENTITY_HEADER). It is not stored anywhere.\n\
         Put this line in the [[accounts]] entry named \"{account}\":\n\n    secret_sha256 = \"{hex}\"\n"
    );
    Ok(())
}

pub(super) fn cache_key_new(path: &Path, force: bool) -> Result<(), CliError> {
    if path.exists() && !force {
        return Err(CliError::Usage(format!(
            "{} exists; every host shares this key, so replacing it is a rotation: \
             keep the old one in shared_cache.old_key_files, then pass --force",
            path.display()
        )));
    }
    let text = crate::seal::new_key_file_text().map_err(|e| CliError::Other(e.to_string()))?;
    write_file(path, text.as_bytes(), 0o600)?;
    let keys = crate::seal::Keys::load(path, &[]).map_err(|e| CliError::Other(e.to_string()))?;
    out(format_args!(
        "shared-cache key: {} (mode 0600; key id {})\n\
         Copy it to every host of the fleet and set shared_cache.key_file to it.",
        path.display(),
        keys.current_id()
    ))
}
