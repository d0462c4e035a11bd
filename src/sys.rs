//! What the broker asks of the operating system, in one place: bounded
//! reads of small files (and their SHA-256, to see them change), the
//! process's own uid, user and group names through the system's name
//! service (so LDAP or sssd users and groups work as local ones do), and
//! the time format operators read.

use std::io::{Error, ErrorKind, Read};
use std::path::Path;
use std::time::SystemTime;
use zeroize::Zeroizing;

/// No certificate, key, bundle, password, secret or key file is larger.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Reads a small file that must be a regular file (after symlinks) of at
/// most [`MAX_FILE_BYTES`]: a FIFO with no writer would hang the reader, a
/// device such as `/dev/zero` would fill memory.
pub fn read_bounded(path: &Path) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "not a regular file (a device, FIFO or directory); name the file itself",
        ));
    }
    let too_large = || {
        Error::new(
            ErrorKind::InvalidData,
            format!("larger than {MAX_FILE_BYTES} bytes; not a certificate, key or password file"),
        )
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0)));
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

/// SHA-256 of a watched file (a credential or the configuration), read as
/// the loaders read it: a regular file (after symlinks, so a Kubernetes
/// volume's `..data` swap shows) of at most [`MAX_FILE_BYTES`]. A FIFO or
/// device is an error, never a blocked or endless read.
pub fn file_sha256(path: &Path) -> std::io::Result<[u8; 32]> {
    let bytes = read_bounded(path)?;
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes).as_ref());
    Ok(out)
}

/// This process's effective uid (the daemon may always administer itself).
pub fn own_uid() -> u32 {
    uzers::get_effective_uid()
}

/// The gid of group `name`, through the name service.
pub fn group_id(name: &str) -> Option<u32> {
    uzers::get_group_by_name(name).map(|group| group.gid())
}

/// The name of user `uid`, through the name service.
pub fn user_name(uid: u32) -> Option<String> {
    uzers::get_user_by_uid(uid).map(|user| user.name().to_string_lossy().into_owned())
}

/// The user this process runs as, for permission errors: `user NAME (uid N)`.
pub fn process_user() -> String {
    let uid = own_uid();
    match user_name(uid) {
        Some(name) => format!("user {name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

/// A time as RFC 3339 (UTC, seconds).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_reads_refuse_what_is_not_a_small_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small");
        std::fs::write(&small, b"abc").unwrap();
        assert_eq!(&read_bounded(&small).unwrap()[..], b"abc");
        let error = read_bounded(dir.path()).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidInput);
        let large = dir.path().join("large");
        std::fs::write(&large, vec![0u8; MAX_FILE_BYTES as usize + 1]).unwrap();
        assert_eq!(
            read_bounded(&large).unwrap_err().kind(),
            ErrorKind::InvalidData
        );
        assert_ne!(
            file_sha256(&small).unwrap(),
            file_sha256(&large).unwrap_or_default()
        );
    }

    #[test]
    fn names_come_from_the_name_service() {
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(group_id("no-such-group-tokenbroker"), None);
        assert!(process_user().contains(&format!("uid {}", own_uid())));
    }

    #[test]
    fn times_read_as_rfc3339() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(86_400);
        assert_eq!(rfc3339(t), "1970-01-02T00:00:00Z");
    }
}
