//! Warm restart (`cache.state_file`): the cached tokens and the known
//! tenants, kept in one sealed file so that a restart or an upgrade serves
//! every tenant at once instead of asking Entra for all of them again
//! (docs/contract.md, "Warm restart").
//!
//! - Each token is sealed on its own (AES-256-GCM, [`crate::seal`]) with the
//!   app's client ID, the tenant and the resource as associated data, so a
//!   record cannot be read without `cache.state_key_file`, altered, or
//!   moved to another app or tenant. The known tenants are
//!   sealed in chunks the same way.
//! - The file is written whole into a temporary file beside it (mode 0600),
//!   synced, then renamed over the old one: a reader never sees half a file.
//! - It is read as a stream, each length checked before anything is
//!   allocated for it, and at most a given number of records: a file that
//!   is not ours cannot make the broker allocate or block.
//!
//! Layout: `TBSTATE1`, then records, each a kind byte — 3: a token (its
//! app's client ID, tenant, resource, sealed record), 4: a chunk of one
//! app's known tenants (client ID, then sealed, one tenant per line) — and
//! an end byte (0xFF), without which the file was cut short. Kinds 1 and 2
//! are the same without the client ID, as written before several apps
//! (the first app's, sealed to it and its cloud); they are still read.
//! Records of an app no longer configured are passed over, so apps may be
//! added, removed, renamed or reordered between runs. Lengths are big-endian: u16 for names, u32 for sealed
//! bytes.

use crate::cache::CacheKey;
use crate::config::{AppKey, Resource, TenantId, TenantKey};
use crate::seal::{Keys, Rejected, TokenRecord};
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"TBSTATE1";
const TOKEN: u8 = 1;
const KNOWN: u8 = 2;
/// A token, its app's client ID first.
const APP_TOKEN: u8 = 3;
/// Known tenants of one app, its client ID first.
const APP_KNOWN: u8 = 4;
const END: u8 = 0xFF;
/// Longest tenant id or resource taken back (tenant ids are at most 253).
const MAX_NAME: usize = 2048;
/// Largest sealed record taken back (a token is about 1.5 KiB).
const MAX_SEALED: usize = 64 * 1024 + 64;
/// Known tenants per sealed chunk.
const KNOWN_CHUNK: usize = 1000;

/// The state file, and what seals it.
pub struct StateFile {
    path: PathBuf,
    keys: Keys,
    /// The first app's client ID and cloud: what the records of files
    /// written before several apps (kinds 1 and 2) are bound to.
    legacy: String,
    /// The configured apps: a record names its app by client ID, and one
    /// of an app not among them is passed over.
    apps: Vec<AppKey>,
    /// One write at a time (the periodic one and the one at exit share
    /// the temporary file).
    writing: std::sync::Mutex<()>,
}

impl std::fmt::Debug for StateFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateFile")
            .field("path", &self.path)
            .field("keys", &self.keys)
            .finish()
    }
}

/// What a state file held.
#[derive(Debug, Default)]
pub struct Restored {
    pub tokens: Vec<(CacheKey, TokenRecord)>,
    pub known: Vec<(AppKey, TenantKey)>,
}

/// Why a state file was not read or written. Reading errors are WARNs:
/// the broker starts without the file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: cannot read the state file: {source}; starting with an empty cache")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a tokenbroker state file ({what}); starting with an empty cache")]
    Malformed { path: PathBuf, what: &'static str },
    #[error("{path}: written under another key (cache.state_key_file changed, or by an older version for another app): {rejected}; starting with an empty cache")]
    Foreign { path: PathBuf, rejected: Rejected },
    #[error("{path}: cannot write the state file: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StateFile {
    /// The file at `path`, sealed with `keys`, for `apps` (the first in
    /// `cloud`: files written before several apps are that app's).
    pub fn new(path: &Path, keys: Keys, apps: Vec<AppKey>, cloud: &str) -> StateFile {
        let first = apps.first().map(|a| a.client_id.as_str()).unwrap_or("");
        StateFile {
            path: path.to_owned(),
            keys,
            legacy: format!("{first}\0{cloud}"),
            apps,
            writing: std::sync::Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What a token record is sealed to: its app's client ID, tenant and
    /// resource (kind 3); or, in a file written before several apps, the
    /// first app and its cloud (kind 1).
    fn token_aad(&self, client_id: Option<&str>, tenant: &str, resource: &str) -> Vec<u8> {
        match client_id {
            Some(id) => format!("tokenbroker state app token\0{id}\0{tenant}\0{resource}"),
            None => format!(
                "tokenbroker state token\0{}\0{tenant}\0{resource}",
                self.legacy
            ),
        }
        .into_bytes()
    }

    /// What a chunk of known tenants is sealed to (as [`Self::token_aad`]).
    fn known_aad(&self, client_id: Option<&str>) -> Vec<u8> {
        match client_id {
            Some(id) => format!("tokenbroker state app known\0{id}"),
            None => format!("tokenbroker state known\0{}", self.legacy),
        }
        .into_bytes()
    }

    /// The configured app a record names: by its client ID, or the first
    /// for a record of an older file (`None`). `None` when not configured.
    fn app_of(&self, client_id: Option<&str>) -> Option<&AppKey> {
        match client_id {
            None => self.apps.first(),
            Some(id) => self
                .apps
                .iter()
                .find(|a| a.client_id.as_str().eq_ignore_ascii_case(id)),
        }
    }

    /// Reads the file: at most `max_tokens` tokens and `max_known` known
    /// tenants are taken back (the cache could not hold more).
    pub fn read(&self, max_tokens: usize, max_known: usize) -> Result<Restored, StateError> {
        let file = crate::sys::open_regular(&self.path).map_err(|source| StateError::Read {
            path: self.path.clone(),
            source,
        })?;
        self.read_from(BufReader::new(file), max_tokens, max_known)
    }

    fn read_from(
        &self,
        mut reader: impl Read,
        max_tokens: usize,
        max_known: usize,
    ) -> Result<Restored, StateError> {
        let malformed = |what| StateError::Malformed {
            path: self.path.clone(),
            what,
        };
        let cut = |e: std::io::Error| match e.kind() {
            ErrorKind::UnexpectedEof => malformed("cut short"),
            _ => StateError::Read {
                path: self.path.clone(),
                source: e,
            },
        };
        let mut magic = [0u8; 8];
        reader.read_exact(&mut magic).map_err(cut)?;
        if &magic != MAGIC {
            return Err(malformed("bad header"));
        }
        let foreign = |rejected| StateError::Foreign {
            path: self.path.clone(),
            rejected,
        };
        let mut restored = Restored::default();
        loop {
            match read_u8(&mut reader).map_err(cut)? {
                END => return Ok(restored),
                kind @ (TOKEN | APP_TOKEN) => {
                    let client_id = client_id_of(&mut reader, kind == APP_TOKEN, &cut)?;
                    let tenant = read_name(&mut reader).map_err(cut)?;
                    let resource = read_name(&mut reader).map_err(cut)?;
                    let sealed = read_sealed(&mut reader).map_err(cut)?;
                    if restored.tokens.len() >= max_tokens {
                        continue;
                    }
                    let tenant = String::from_utf8(tenant)
                        .ok()
                        .and_then(|t| TenantId::try_from(t).ok())
                        .ok_or_else(|| malformed("a tenant id that is not one"))?;
                    let resource = std::str::from_utf8(&resource)
                        .ok()
                        .and_then(|r| Resource::parse(r).ok())
                        .ok_or_else(|| malformed("a resource that is not one"))?;
                    // An app no longer configured: its token goes.
                    let Some(app) = self.app_of(client_id.as_deref()) else {
                        continue;
                    };
                    let key = CacheKey::new(app, &tenant, &resource);
                    let aad = self.token_aad(
                        client_id.as_deref(),
                        key.tenant.as_str(),
                        key.resource.as_str(),
                    );
                    let plain = self.keys.open(&aad, &sealed).map_err(foreign)?;
                    let record =
                        TokenRecord::decode(&plain).map_err(|_| malformed("a bad token record"))?;
                    restored.tokens.push((key, record));
                }
                kind @ (KNOWN | APP_KNOWN) => {
                    let client_id = client_id_of(&mut reader, kind == APP_KNOWN, &cut)?;
                    let sealed = read_sealed(&mut reader).map_err(cut)?;
                    let Some(app) = self.app_of(client_id.as_deref()) else {
                        continue;
                    };
                    let aad = self.known_aad(client_id.as_deref());
                    let plain = self.keys.open(&aad, &sealed).map_err(foreign)?;
                    let text = std::str::from_utf8(&plain)
                        .map_err(|_| malformed("a known-tenants record that is not text"))?;
                    for line in text.lines() {
                        if restored.known.len() >= max_known {
                            break;
                        }
                        let tenant = TenantId::try_from(line.to_owned())
                            .map_err(|_| malformed("a known tenant that is not a tenant id"))?;
                        restored.known.push((app.clone(), tenant.key()));
                    }
                }
                _ => return Err(malformed("an unknown record kind")),
            }
        }
    }

    /// Writes `tokens` and `known` atomically: a temporary file beside the
    /// state file (mode 0600), synced, renamed over it, and the directory
    /// synced. Returns the number of bytes written.
    /// `tokens` may make each record as it is asked for: only one is held
    /// at a time.
    pub fn write<'a>(
        &self,
        tokens: impl IntoIterator<Item = (&'a CacheKey, TokenRecord)>,
        known: &[(AppKey, TenantKey)],
    ) -> Result<u64, StateError> {
        let _one_at_a_time = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let failed = |source| StateError::Write {
            path: self.path.clone(),
            source,
        };
        crate::sys::replace_file(&self.path, 0o600, None, |file| {
            let mut out = Counting::new(BufWriter::new(file));
            self.write_to(&mut out, tokens, known)?;
            let written = out.count;
            out.inner.into_inner().map_err(|e| e.into_error())?;
            Ok(written)
        })
        .map_err(failed)
    }

    fn write_to<'a>(
        &self,
        out: &mut impl Write,
        tokens: impl IntoIterator<Item = (&'a CacheKey, TokenRecord)>,
        known: &[(AppKey, TenantKey)],
    ) -> std::io::Result<()> {
        let sealing = |e: Rejected| std::io::Error::other(format!("cannot seal: {e}"));
        out.write_all(MAGIC)?;
        for (key, record) in tokens {
            let id = key.app.client_id.as_str();
            let aad = self.token_aad(Some(id), key.tenant.as_str(), key.resource.as_str());
            let sealed = self.keys.seal(&aad, &record.encode()).map_err(sealing)?;
            out.write_all(&[APP_TOKEN])?;
            write_name(out, id)?;
            write_name(out, key.tenant.as_str())?;
            write_name(out, key.resource.as_str())?;
            write_sealed(out, &sealed)?;
        }
        // Each app's known tenants, in chunks naming the app.
        let mut by_app: std::collections::BTreeMap<&str, Vec<&TenantKey>> = Default::default();
        for (app, tenant) in known {
            by_app
                .entry(app.client_id.as_str())
                .or_default()
                .push(tenant);
        }
        for (id, tenants) in by_app {
            let aad = self.known_aad(Some(id));
            for chunk in tenants.chunks(KNOWN_CHUNK) {
                let mut text = String::new();
                for tenant in chunk {
                    text.push_str(tenant.as_str());
                    text.push('\n');
                }
                let sealed = self.keys.seal(&aad, text.as_bytes()).map_err(sealing)?;
                out.write_all(&[APP_KNOWN])?;
                write_name(out, id)?;
                write_sealed(out, &sealed)?;
            }
        }
        out.write_all(&[END])
    }
}

/// Counts the bytes written through it.
struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W> Counting<W> {
    fn new(inner: W) -> Counting<W> {
        Counting { inner, count: 0 }
    }
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The client ID a record of an app starts with (`named`), as text.
fn client_id_of(
    reader: &mut impl Read,
    named: bool,
    cut: &impl Fn(std::io::Error) -> StateError,
) -> Result<Option<String>, StateError> {
    if !named {
        return Ok(None);
    }
    let name = read_name(reader).map_err(cut)?;
    String::from_utf8(name)
        .map(Some)
        .map_err(|_| cut(invalid("a client ID that is not text")))
}

fn read_u8(reader: &mut impl Read) -> std::io::Result<u8> {
    let mut b = [0u8; 1];
    reader.read_exact(&mut b)?;
    Ok(b[0])
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(ErrorKind::InvalidData, what.to_owned())
}

/// A length-prefixed name, its length checked before it is read.
fn read_name(reader: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    reader.read_exact(&mut len)?;
    let len = usize::from(u16::from_be_bytes(len));
    if len == 0 || len > MAX_NAME {
        return Err(invalid("a name of a length no tenant or resource has"));
    }
    let mut name = vec![0u8; len];
    reader.read_exact(&mut name)?;
    Ok(name)
}

fn read_sealed(reader: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    reader.read_exact(&mut len)?;
    let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
    if len == 0 || len > MAX_SEALED {
        return Err(invalid("a sealed record larger than any token"));
    }
    let mut sealed = vec![0u8; len];
    reader.read_exact(&mut sealed)?;
    Ok(sealed)
}

fn write_name(out: &mut impl Write, name: &str) -> std::io::Result<()> {
    let len = u16::try_from(name.len())
        .ok()
        .filter(|l| usize::from(*l) <= MAX_NAME)
        .ok_or_else(|| invalid("a name too long to keep"))?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(name.as_bytes())
}

fn write_sealed(out: &mut impl Write, sealed: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(sealed.len())
        .ok()
        .filter(|l| (*l as usize) <= MAX_SEALED)
        .ok_or_else(|| invalid("a record too large to keep"))?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(sealed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    /// "app-a" (the tokens' app) or "app-b" (another).
    fn app(name: &str) -> AppKey {
        let id = if name == "app-b" {
            "22222222-2222-2222-2222-222222222222"
        } else {
            "11111111-1111-1111-1111-111111111111"
        };
        AppKey {
            name: crate::config::Name::default_app(),
            client_id: crate::config::Guid::try_from(id.to_owned()).unwrap(),
        }
    }

    fn file(dir: &Path, client_id: &str, key: [u8; 32]) -> StateFile {
        StateFile::new(
            &dir.join("cache.sealed"),
            Keys::from_bytes(&key, &[]).unwrap(),
            vec![app(client_id)],
            "global",
        )
    }

    fn key(tenant: &str) -> CacheKey {
        CacheKey::new(
            &app("app-a"),
            &TenantId::try_from(tenant.to_owned()).unwrap(),
            &Resource::parse("https://graph.microsoft.com").unwrap(),
        )
    }

    fn record(n: u64) -> TokenRecord {
        TokenRecord {
            access_token: format!("eyJ.token-{n}.sig"),
            issued_on: 1_000 + n,
            expires_on: 4_600 + n,
            refresh_on: None,
        }
    }

    type Known = Vec<(AppKey, TenantKey)>;

    fn sample(n: usize) -> (Vec<(CacheKey, TokenRecord)>, Known) {
        let tokens: Vec<_> = (0..n)
            .map(|i| (key(&format!("t{i}.example.com")), record(i as u64)))
            .collect();
        let known = tokens
            .iter()
            .map(|(k, _)| (k.app.clone(), k.tenant.clone()))
            .collect();
        (tokens, known)
    }

    #[test]
    fn each_apps_tokens_and_known_tenants_come_back_as_that_apps_whatever_the_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut other = app("app-b");
        other.name = crate::config::Name::try_from("notify".to_owned()).unwrap();
        let with = |apps: Vec<AppKey>| {
            StateFile::new(
                &dir.path().join("cache.sealed"),
                Keys::from_bytes(&KEY, &[]).unwrap(),
                apps,
                "global",
            )
        };
        let first = key("contoso.com");
        let second = CacheKey {
            app: other.clone(),
            ..first.clone()
        };
        with(vec![app("app-a"), other.clone()])
            .write(
                [(&first, record(1)), (&second, record(2))],
                &[
                    (first.app.clone(), first.tenant.clone()),
                    (other.clone(), second.tenant.clone()),
                ],
            )
            .unwrap();
        // The apps in the other order: each record is still its app's.
        let mut back = with(vec![other.clone(), app("app-a")])
            .read(10, 10)
            .unwrap();
        assert_eq!(back.tokens.len(), 2);
        back.known
            .sort_by(|a, b| a.0.client_id.as_str().cmp(b.0.client_id.as_str()));
        assert_eq!(
            back.known,
            [
                (first.app.clone(), first.tenant.clone()),
                (other.clone(), second.tenant.clone())
            ]
        );
        assert_eq!(back.tokens[0].0, first);
        assert_eq!(back.tokens[1].0, second);
        assert_eq!(back.tokens[1].1.access_token, "eyJ.token-2.sig");
        // Renamed, an app keeps its records (they name its client ID).
        let mut renamed = other.clone();
        renamed.name = crate::config::Name::try_from("sender".to_owned()).unwrap();
        let back = with(vec![app("app-a"), renamed.clone()])
            .read(10, 10)
            .unwrap();
        assert_eq!(back.tokens[1].0.app, renamed);
        // Without the second app configured, its records are passed over.
        let back = with(vec![app("app-a")]).read(10, 10).unwrap();
        assert_eq!(back.tokens.len(), 1);
        assert_eq!(back.tokens[0].0, first);
        assert_eq!(back.known.len(), 1);
    }

    #[test]
    fn a_file_written_before_several_apps_is_the_first_apps() {
        let dir = tempfile::tempdir().unwrap();
        let state = file(dir.path(), "app-a", KEY);
        let tenant = "contoso.com";
        let resource = "https://graph.microsoft.com";
        // The old layout: kind 1 and 2, sealed to the first app and cloud.
        let mut bytes = MAGIC.to_vec();
        bytes.push(TOKEN);
        write_name(&mut bytes, tenant).unwrap();
        write_name(&mut bytes, resource).unwrap();
        let aad = format!(
            "tokenbroker state token\0{}\0global\0{tenant}\0{resource}",
            app("app-a").client_id
        );
        let sealed = state
            .keys
            .seal(aad.as_bytes(), &record(1).encode())
            .unwrap();
        write_sealed(&mut bytes, &sealed).unwrap();
        bytes.push(KNOWN);
        let aad = format!(
            "tokenbroker state known\0{}\0global",
            app("app-a").client_id
        );
        write_sealed(
            &mut bytes,
            &state.keys.seal(aad.as_bytes(), b"contoso.com\n").unwrap(),
        )
        .unwrap();
        bytes.push(END);
        let back = state.read_from(&bytes[..], 10, 10).unwrap();
        assert_eq!(back.tokens.len(), 1);
        assert_eq!(back.tokens[0].0, key(tenant));
        assert_eq!(back.known, [(app("app-a"), key(tenant).tenant)]);
        // Read for another first app, it was written for someone else.
        let other = file(dir.path(), "app-b", KEY);
        assert!(matches!(
            other.read_from(&bytes[..], 10, 10),
            Err(StateError::Foreign { .. })
        ));
    }

    #[test]
    fn tokens_and_known_tenants_come_back_from_a_0600_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = file(dir.path(), "app-a", KEY);
        let (tokens, known) = sample(2500);
        state
            .write(tokens.iter().map(|(k, r)| (k, r.clone())), &known)
            .unwrap();
        let mode = std::fs::metadata(state.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let bytes = std::fs::read(state.path()).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("token-1"),
            "tokens are sealed"
        );
        let back = state.read(10_000, 10_000).unwrap();
        assert_eq!(back.tokens.len(), 2500);
        assert_eq!(back.tokens[7].0, tokens[7].0);
        assert_eq!(back.tokens[7].1.access_token, "eyJ.token-7.sig");
        assert_eq!(back.known.len(), 2500);
        // No more than asked for is taken back.
        let few = state.read(10, 20).unwrap();
        assert_eq!((few.tokens.len(), few.known.len()), (10, 20));
        // Nothing is left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn another_apps_records_pass_and_another_key_or_a_damaged_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (tokens, known) = sample(3);
        file(dir.path(), "app-a", KEY)
            .write(tokens.iter().map(|(k, r)| (k, r.clone())), &known)
            .unwrap();
        let foreign = file(dir.path(), "app-b", KEY).read(10, 10).unwrap();
        assert_eq!((foreign.tokens.len(), foreign.known.len()), (0, 0));
        assert!(matches!(
            file(dir.path(), "app-a", [8; 32]).read(10, 10),
            Err(StateError::Foreign { .. })
        ));
        let state = file(dir.path(), "app-a", KEY);
        let bytes = std::fs::read(state.path()).unwrap();
        // Cut short, flipped, not ours, or empty: each is an error, never a panic.
        std::fs::write(state.path(), &bytes[..bytes.len() - 1]).unwrap();
        assert!(matches!(
            state.read(10, 10),
            Err(StateError::Malformed { .. })
        ));
        let mut flipped = bytes.clone();
        flipped[60] ^= 1;
        std::fs::write(state.path(), &flipped).unwrap();
        assert!(state.read(10, 10).is_err());
        std::fs::write(state.path(), b"[cache]\n").unwrap();
        assert!(matches!(
            state.read(10, 10),
            Err(StateError::Malformed { .. })
        ));
        std::fs::write(state.path(), b"").unwrap();
        assert!(state.read(10, 10).is_err());
        // A huge length is refused before anything is allocated for it.
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&[KNOWN, 0xFF, 0xFF, 0xFF, 0xFF]);
        std::fs::write(state.path(), &huge).unwrap();
        assert!(matches!(state.read(10, 10), Err(StateError::Read { .. })));
        std::fs::remove_file(state.path()).unwrap();
        assert!(matches!(state.read(10, 10), Err(StateError::Read { .. })));
    }

    #[test]
    fn every_truncation_and_byte_flip_is_an_error_or_a_valid_subset() {
        let dir = tempfile::tempdir().unwrap();
        let state = file(dir.path(), "app-a", KEY);
        let (tokens, known) = sample(2);
        let mut bytes = Vec::new();
        state
            .write_to(
                &mut bytes,
                tokens.iter().map(|(k, r)| (k, r.clone())),
                &known,
            )
            .unwrap();
        for cut in 0..bytes.len() {
            assert!(
                state.read_from(&bytes[..cut], 10, 10).is_err(),
                "cut at {cut}"
            );
        }
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x40;
            if let Ok(back) = state.read_from(&flipped[..], 10, 10) {
                // Only a flip that changes nothing sealed can pass.
                assert!(back.tokens.len() <= 2 && back.known.len() <= 2);
                for (k, r) in &back.tokens {
                    assert!(tokens
                        .iter()
                        .any(|(k2, r2)| k2 == k && r2.access_token == r.access_token));
                }
            }
        }
    }
}
