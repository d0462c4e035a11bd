//! The daemon's credentials, for rotation: several certificates at once,
//! the newest valid one signing, a fallback to the next when Entra refuses
//! one for a tenant (remembered per tenant), and a reload when their files
//! change. Swapped as a whole, so a request signing with an old credential
//! finishes with it. A credential a reload replaced stays in memory for
//! `app.credential_rejection_memory` as the last fallback: a new
//! certificate written before it was uploaded (Entra refuses it) never
//! takes a tenant down while the old one is valid.

use super::{Credential, CredentialError, CredentialKind, CredentialSource};
use crate::config::{AppConfig, Config, TenantId, TenantKey};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Credentials read from their files, with their sources and the files'
/// fingerprint: what a reload puts in force.
pub type ReadSet = (Vec<Credential>, Vec<CredentialSource>, Fingerprint);

/// What Entra said the last time it refused a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Unix seconds.
    pub at: u64,
    pub tenant: String,
    pub aadsts: Option<String>,
}

/// SHA-256 over the content of a set's files (a missing file counts as
/// its error), to tell when any of them changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// Reads every file of `sources`.
    pub fn of(sources: &[CredentialSource]) -> Fingerprint {
        let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for path in sources.iter().flat_map(CredentialSource::paths) {
            context.update(path.as_os_str().as_encoded_bytes());
            match crate::sys::file_sha256(path) {
                Ok(digest) => {
                    context.update(b"\x00ok");
                    context.update(&digest);
                }
                Err(e) => context.update(format!("\x00error {}", e.kind()).as_bytes()),
            }
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(context.finish().as_ref());
        Fingerprint(out)
    }
}

#[derive(Debug, Default)]
struct Memory {
    /// (tenant, thumbprint) → refused until.
    refused: HashMap<(TenantKey, String), Instant>,
    /// Per thumbprint, the latest refusal (for the admin status).
    last: HashMap<String, Rejection>,
    /// Thumbprint of the credential that last got a token.
    in_use: Option<String>,
}

/// The loaded credentials and what is known about them.
#[derive(Debug)]
pub struct CredentialSet {
    /// Newest `notBefore` first: the order they are tried in.
    list: ArcSwap<Vec<Arc<Credential>>>,
    sources: ArcSwap<Vec<CredentialSource>>,
    /// Of the files the credentials in `list` were loaded from.
    loaded: Mutex<Option<Fingerprint>>,
    /// Of files that failed to load: warned about once, not reloaded again
    /// until they change.
    failed: Mutex<Option<Fingerprint>>,
    memory: Mutex<Memory>,
    remember_for: Mutex<Duration>,
    /// Credentials a reload replaced, kept as the last fallback until then.
    retired: Mutex<Vec<(Arc<Credential>, Instant)>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is a plain assignment or map insert: a panic elsewhere
    // cannot leave these half-written, so a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Loaded credentials and the warnings an operator should see.
pub type LoadedSet = (Vec<Credential>, Vec<String>);

impl CredentialSet {
    /// One credential that is not reloaded from files (tests, `serve --dev`).
    pub fn single(credential: Credential) -> CredentialSet {
        CredentialSet::new(vec![credential], Vec::new(), None, Duration::from_secs(600))
    }

    /// Credentials loaded from `sources`, whose files had fingerprint
    /// `loaded` before they were read; a refusal is remembered for
    /// `remember_for`.
    pub fn new(
        credentials: Vec<Credential>,
        sources: Vec<CredentialSource>,
        loaded: Option<Fingerprint>,
        remember_for: Duration,
    ) -> CredentialSet {
        CredentialSet {
            list: ArcSwap::from_pointee(order(credentials)),
            sources: ArcSwap::from_pointee(sources),
            loaded: Mutex::new(loaded),
            failed: Mutex::new(None),
            memory: Mutex::new(Memory::default()),
            remember_for: Mutex::new(remember_for),
            retired: Mutex::new(Vec::new()),
        }
    }

    /// Loads every source as of `now`. A certificate that is expired or not
    /// yet valid is skipped with a warning while another one is usable;
    /// any other problem, or none usable, is an error.
    pub fn load(
        sources: &[CredentialSource],
        now: SystemTime,
    ) -> Result<LoadedSet, CredentialError> {
        if sources.is_empty() {
            return Err(CredentialError::NoCredential);
        }
        let mut credentials = Vec::with_capacity(sources.len());
        let mut warnings = Vec::new();
        let mut skipped = None;
        for source in sources {
            match Credential::load(source, now) {
                Ok(loaded) => {
                    warnings.extend(loaded.warnings);
                    credentials.push(loaded.credential);
                }
                // A certificate out of its validity, or a token or HSM that
                // is not there right now, is passed over while another
                // credential loads: the others keep the daemon serving.
                Err(e)
                    if sources.len() > 1
                        && (matches!(
                            e,
                            CredentialError::Expired { .. } | CredentialError::NotYetValid { .. }
                        ) || !matches!(source.kind, CredentialKind::Files { .. })) =>
                {
                    warnings.push(format!(
                        "{} ({}): skipped: {e}",
                        source.key,
                        source
                            .certificate()
                            .map_or_else(|| "federated".into(), |p| p.display().to_string())
                    ));
                    skipped.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        match (credentials.is_empty(), skipped) {
            (true, Some(e)) => Err(e),
            _ => Ok((credentials, warnings)),
        }
    }

    /// The credential tried first: the newest valid certificate.
    pub fn current(&self) -> Arc<Credential> {
        let list = self.list.load();
        // `new` and `replace` never hold an empty list.
        Arc::clone(&list[0])
    }

    /// Every credential, in the order they are tried.
    pub fn all(&self) -> Arc<Vec<Arc<Credential>>> {
        self.list.load_full()
    }

    /// The credentials to try for `tenant`, in order: those Entra refused
    /// for it within the memory go last (not dropped: a refusal may be
    /// stale, and with one certificate there is nothing else to try).
    pub fn candidates(&self, tenant: &TenantId) -> Vec<Arc<Credential>> {
        let list = self.list.load();
        let tenant = tenant.key();
        let now = Instant::now();
        let memory = lock(&self.memory);
        let refused = |c: &Arc<Credential>| {
            memory
                .refused
                .get(&(tenant.clone(), c.id().to_owned()))
                .is_some_and(|until| *until > now)
        };
        let (mut fresh, stale): (Vec<_>, Vec<_>) = list.iter().cloned().partition(|c| !refused(c));
        // A replaced credential that still works comes before one Entra
        // refused for this tenant (a new certificate not uploaded yet).
        fresh.extend(self.retired().into_iter().filter(|c| !refused(c)));
        fresh.extend(stale);
        fresh
    }

    /// Credentials a reload replaced that are still kept as a fallback:
    /// within `app.credential_rejection_memory` of the change, and (for a
    /// certificate) still valid.
    pub fn retired(&self) -> Vec<Arc<Credential>> {
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut retired = lock(&self.retired);
        retired.retain(|(c, until)| *until > now && c.not_after().is_none_or(|end| end > wall));
        retired.iter().map(|(c, _)| Arc::clone(c)).collect()
    }

    /// Entra refused `credential` for `tenant`.
    pub fn reject(
        &self,
        tenant: &TenantId,
        credential: &Credential,
        aadsts: Option<String>,
        at_unix: u64,
    ) {
        let remember_for = *lock(&self.remember_for);
        let thumbprint = credential.id().to_owned();
        let mut memory = lock(&self.memory);
        let now = Instant::now();
        memory.refused.retain(|_, until| *until > now);
        memory
            .refused
            .insert((tenant.key(), thumbprint.clone()), now + remember_for);
        memory.last.insert(
            thumbprint,
            Rejection {
                at: at_unix,
                tenant: tenant.as_str().to_owned(),
                aadsts,
            },
        );
    }

    /// `credential` just got a token: it is the one in use.
    pub fn signed(&self, credential: &Credential) {
        let id = credential.id();
        let mut memory = lock(&self.memory);
        if memory.in_use.as_deref() != Some(id) {
            memory.in_use = Some(id.to_owned());
        }
    }

    /// The thumbprint of the credential in use: the one that last got a
    /// token, else the first one tried.
    pub fn in_use(&self) -> String {
        let list = self.list.load();
        let retired = self.retired();
        let memory = lock(&self.memory);
        memory
            .in_use
            .as_ref()
            .filter(|t| {
                list.iter()
                    .chain(retired.iter())
                    .any(|c| c.id() == t.as_str())
            })
            .cloned()
            .unwrap_or_else(|| list[0].id().to_owned())
    }

    /// The latest refusal of the credential with `thumbprint`.
    pub fn last_rejection(&self, thumbprint: &str) -> Option<Rejection> {
        lock(&self.memory).last.get(thumbprint).cloned()
    }

    /// Puts `credentials` (from `sources`) in force. What is remembered about
    /// a certificate that stays is kept; about one that left, dropped.
    /// `loaded` is the fingerprint of the files taken *before* they were
    /// read, so a change that lands while they load is seen next time.
    pub fn replace(
        &self,
        credentials: Vec<Credential>,
        sources: Vec<CredentialSource>,
        loaded: Option<Fingerprint>,
    ) {
        if credentials.is_empty() {
            return;
        }
        let list = order(credentials);
        {
            // What leaves is kept as the last fallback for a while.
            let until = Instant::now() + *lock(&self.remember_for);
            let old = self.list.load();
            let mut retired = lock(&self.retired);
            let stays = |id: &str| list.iter().any(|c| c.id() == id);
            retired.retain(|(c, _)| !stays(c.id()));
            for credential in old.iter().filter(|c| !stays(c.id())) {
                retired.retain(|(c, _)| c.id() != credential.id());
                retired.push((Arc::clone(credential), until));
            }
            let mut memory = lock(&self.memory);
            let kept = |t: &String| stays(t) || retired.iter().any(|(c, _)| c.id() == t.as_str());
            memory.refused.retain(|(_, t), _| kept(t));
            memory.last.retain(|t, _| kept(t));
        }
        self.list.store(Arc::new(list));
        self.sources.store(Arc::new(sources));
        *lock(&self.loaded) = loaded;
        *lock(&self.failed) = None;
    }

    /// Forgets every refusal (the app's identity changed: they were another
    /// app's).
    pub fn forget_rejections(&self) {
        let mut memory = lock(&self.memory);
        memory.refused.clear();
        memory.last.clear();
        memory.in_use = None;
        lock(&self.retired).clear();
    }

    /// How long a refusal is remembered (`app.credential_rejection_memory`).
    pub fn set_rejection_memory(&self, remember_for: Duration) {
        *lock(&self.remember_for) = remember_for;
    }

    /// The credentials of every app of `config`, in file order (see
    /// [`CredentialSet::read_app`]), and the warnings of all.
    pub fn read(
        config: &Config,
        config_path: &Path,
    ) -> Result<(Vec<ReadSet>, Vec<String>), CredentialError> {
        let mut sets = Vec::with_capacity(config.apps.len());
        let mut warnings = Vec::new();
        for app in &config.apps {
            let (set, more) = CredentialSet::read_app(app, config_path)?;
            sets.push(set);
            warnings.extend(more);
        }
        Ok((sets, warnings))
    }

    /// The credentials `app` names, read from their files now: the
    /// credentials, their sources, and the fingerprint of the files taken
    /// *before* they were read (a change that lands meanwhile is picked up
    /// by the next check); and the warnings an operator should see.
    /// `config_path` names the file in errors, with the key at fault.
    pub fn read_app(
        app: &AppConfig,
        config_path: &Path,
    ) -> Result<(ReadSet, Vec<String>), CredentialError> {
        let sources = CredentialSource::all_from_config(app);
        let fingerprint = Fingerprint::of(&sources);
        let (credentials, warnings) = CredentialSet::load(&sources, SystemTime::now())
            .map_err(|e| e.in_config(config_path, &sources))?;
        Ok(((credentials, sources, fingerprint), warnings))
    }

    /// Reloads the credentials if any of their files changed since they
    /// were loaded. `Ok(None)`: unchanged (or changed to content that
    /// already failed); `Ok(Some(warnings))`: reloaded; `Err`: the new
    /// content does not load, and the old credentials stay in force.
    pub fn reload_if_changed(
        &self,
        now: SystemTime,
    ) -> Result<Option<Vec<String>>, CredentialError> {
        let sources = self.sources.load_full();
        if sources.is_empty() {
            return Ok(None);
        }
        let fingerprint = Fingerprint::of(&sources);
        if *lock(&self.loaded) == Some(fingerprint) || *lock(&self.failed) == Some(fingerprint) {
            return Ok(None);
        }
        match CredentialSet::load(&sources, now) {
            // A reload that replaced the sources meanwhile wins: these were
            // loaded from the old ones.
            Ok(_) if !Arc::ptr_eq(&sources, &self.sources.load()) => Ok(None),
            Ok((credentials, warnings)) => {
                self.replace(credentials, sources.to_vec(), Some(fingerprint));
                Ok(Some(warnings))
            }
            Err(e) => {
                *lock(&self.failed) = Some(fingerprint);
                Err(e)
            }
        }
    }
}

/// Newest `notBefore` first; file order among equals. Ids are made unique
/// (a second credential with the same id, such as two token files from one
/// issuer, gets its configuration key appended), since refusals, "in use"
/// and metrics are kept per id.
fn order(mut credentials: Vec<Credential>) -> Vec<Arc<Credential>> {
    let mut seen = std::collections::HashSet::new();
    for credential in &mut credentials {
        if !seen.insert(credential.id().to_owned()) {
            let unique = format!("{} ({})", credential.id(), credential.source().key);
            credential.set_id(unique.clone());
            seen.insert(unique);
        }
    }
    let mut list: Vec<Arc<Credential>> = credentials.into_iter().map(Arc::new).collect();
    list.sort_by_key(|c| std::cmp::Reverse(c.not_before()));
    list
}
