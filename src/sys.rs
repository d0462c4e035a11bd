//! What the broker asks of the operating system, in one place: bounded
//! reads of small files (and their SHA-256, to see them change), the
//! process's own uid, user and group names through the system's name
//! service (so LDAP or sssd users and groups work as local ones do),
//! secrets kept in the environment or in files, files replaced whole
//! (the state file, token files), and the time format operators read.

use std::io::{Error, ErrorKind, Read};
use std::path::Path;
use std::time::SystemTime;
use zeroize::Zeroizing;

/// No certificate, key, bundle, password, secret or key file is larger.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Reads a small file that must be a regular file (after symlinks) of at
/// most [`MAX_FILE_BYTES`]: a FIFO with no writer would hang the reader, a
/// device such as `/dev/zero` would fill memory. The file is opened
/// without blocking and checked as opened, so a path swapped for a FIFO
/// between a check and the open cannot hang the reader either.
pub fn read_bounded(path: &Path) -> std::io::Result<Zeroizing<Vec<u8>>> {
    read_regular(path, MAX_FILE_BYTES)?.ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidData,
            format!("larger than {MAX_FILE_BYTES} bytes; not a certificate, key, configuration or password file"),
        )
    })
}

/// A regular file's content, or `None` when it is larger than `limit`
/// (no more than one byte past it is read). A FIFO, device or directory is
/// an `InvalidInput` error, found without blocking.
fn read_regular(path: &Path, limit: u64) -> std::io::Result<Option<Zeroizing<Vec<u8>>>> {
    let file = open_regular(path)?;
    let meta = file.metadata()?;
    if meta.len() > limit {
        return Ok(None);
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0)));
    file.take(limit + 1).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= limit).then_some(bytes))
}

/// Opens `path` for reading if it is a regular file (after symlinks),
/// without blocking: a FIFO, device or directory is an `InvalidInput`
/// error. For files read as a stream, whose reader bounds what it takes.
pub fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    let file = open_nonblocking(path)?;
    if !file.metadata()?.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "not a regular file (a device, FIFO or directory); name the file itself",
        ));
    }
    Ok(file)
}

/// Opens `path` for reading without blocking: opening a FIFO that no one
/// writes to returns at once (O_NONBLOCK; a regular file reads as usual).
fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    /// `O_NONBLOCK` on Linux (every architecture this builds for).
    const O_NONBLOCK: i32 = 0o4000;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(path)
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

/// Replaces `path` whole, so a reader sees the old content or the new,
/// never part of either: `write` fills a temporary file beside it (created
/// exclusively with mode 0600, so nobody else can open it meanwhile),
/// which is synced, given `mode` and `gid` (the owner stays this process's
/// user), renamed over `path`, and the directory synced so the rename
/// survives a crash. Returns what `write` returns; on failure nothing but
/// the old file is left.
pub fn replace_file<T>(
    path: &Path,
    mode: u32,
    gid: Option<u32>,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<T>,
) -> std::io::Result<T> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let name = path
        .file_name()
        .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "names no file"))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(".tmp");
    let temp = dir.join(temp_name);
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
    };
    let mut file = match create() {
        // Left by a crash mid-write (one writer per path): ours to replace.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            std::fs::remove_file(&temp)?;
            create()?
        }
        other => other?,
    };
    let result = (|| {
        let out = write(&mut file)?;
        file.sync_all()?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        if gid.is_some() {
            std::os::unix::fs::fchown(&file, None, gid)?;
        }
        std::fs::rename(&temp, path)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(out)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// No secret (a key or PFX password, a Redis username or password, an HSM
/// PIN) is longer: a larger file holds something else.
pub const MAX_SECRET_BYTES: u64 = 4096;

/// Where a secret comes from: an environment variable, or a file such as
/// systemd's `$CREDENTIALS_DIRECTORY/…` (read whole, bounded, without its
/// final newline). The one reader of secrets, so every one has one limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(std::path::PathBuf),
}

/// Why a secret could not be had (the message completes "the secret in …").
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("is not set (or not UTF-8)")]
    Unset,
    #[error("cannot be read: {0}")]
    Read(std::io::Error),
    #[error("is larger than {MAX_SECRET_BYTES} bytes; it holds no secret")]
    TooLarge,
    #[error("is not UTF-8 text")]
    NotText,
}

impl SecretSource {
    /// The secret, now.
    pub fn read(&self) -> Result<Zeroizing<String>, SecretError> {
        match self {
            SecretSource::Env(name) => std::env::var(name)
                .map(Zeroizing::new)
                .map_err(|_| SecretError::Unset),
            SecretSource::File(path) => {
                let bytes = read_regular(path, MAX_SECRET_BYTES)
                    .map_err(SecretError::Read)?
                    .ok_or(SecretError::TooLarge)?;
                let text = std::str::from_utf8(&bytes).map_err(|_| SecretError::NotText)?;
                Ok(Zeroizing::new(
                    text.trim_end_matches(['\n', '\r']).to_owned(),
                ))
            }
        }
    }

    /// For messages: `environment variable X` or `file F`.
    pub fn describe(&self) -> String {
        match self {
            SecretSource::Env(name) => format!("environment variable {name}"),
            SecretSource::File(path) => format!("file {}", path.display()),
        }
    }
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

/// Whether this process can create files in `dir`: made and removed, so
/// modes, ACLs and read-only mounts all answer as they will for `serve`.
pub fn writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".tokenbroker-probe-{}", std::process::id()));
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
    };
    match create() {
        // Left by a process with this pid that was killed mid-probe (PID 1
        // in a container): ours to replace.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&probe)?;
            create()?;
        }
        other => {
            other?;
        }
    }
    std::fs::remove_file(&probe)
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
    fn a_fifo_or_a_device_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            // No writer: a blocking open would never return.
            let error = read_bounded(&fifo).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::InvalidInput, "{error}");
            assert!(matches!(
                SecretSource::File(fifo).read(),
                Err(SecretError::Read(_))
            ));
        }
        let error = read_bounded(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidInput, "{error}");
    }

    #[test]
    fn a_replaced_file_is_whole_with_its_mode_and_group_and_nothing_beside_it() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.token");
        std::fs::write(&path, b"old").unwrap();
        // A temporary file a crash left (another mode) is replaced.
        std::fs::write(dir.path().join(".t.token.tmp"), b"crash").unwrap();
        let gid = std::fs::metadata(dir.path()).unwrap().gid();
        let n = replace_file(&path, 0o640, Some(gid), |f| {
            std::io::Write::write_all(f, b"new")?;
            Ok(3)
        })
        .unwrap();
        assert_eq!(n, 3);
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.mode() & 0o7777, meta.gid()), (0o640, gid));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A failed write leaves the old file, and nothing beside it.
        let failed = replace_file(&path, 0o600, None, |f| {
            std::io::Write::write_all(f, b"half")?;
            Err::<(), _>(Error::other("disk full"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A directory that is not there is an error, not a panic.
        let missing = dir.path().join("none/t.token");
        assert_eq!(
            replace_file(&missing, 0o600, None, |_| Ok(()))
                .unwrap_err()
                .kind(),
            ErrorKind::NotFound
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
    fn secrets_come_from_the_environment_or_a_bounded_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cret\r\n").unwrap();
        assert_eq!(
            SecretSource::File(file.clone()).read().unwrap().as_str(),
            "s3cret"
        );
        std::fs::write(&file, vec![b'a'; MAX_SECRET_BYTES as usize + 1]).unwrap();
        assert!(matches!(
            SecretSource::File(file.clone()).read(),
            Err(SecretError::TooLarge)
        ));
        std::fs::write(&file, b"\xff\xfe").unwrap();
        assert!(matches!(
            SecretSource::File(file).read(),
            Err(SecretError::NotText)
        ));
        assert!(matches!(
            SecretSource::File(dir.path().to_owned()).read(),
            Err(SecretError::Read(_))
        ));
        assert!(matches!(
            SecretSource::Env("TOKENBROKER_TEST_SURELY_UNSET".into()).read(),
            Err(SecretError::Unset)
        ));
        assert_eq!(
            SecretSource::Env("X".into()).describe(),
            "environment variable X"
        );
    }

    #[test]
    fn times_read_as_rfc3339() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(86_400);
        assert_eq!(rfc3339(t), "1970-01-02T00:00:00Z");
    }
}
