//! The fleet cache: hosts share one encrypted token cache on Redis, so N
//! hosts cost Entra what one host does.
//!
//! A host's own cache (L1, [`crate::cache`]) asks its token source on a
//! miss or a refresh; with `[shared_cache]` configured that source goes
//! through [`SharedCache::fetch`] first (L2), and only then to Entra:
//!
//! 1. A refusal or throttle another host saw for this (tenant, resource) is
//!    answered at once (one host's 429 keeps the fleet from hammering).
//! 2. A shared token newer than this host's, with `min_remaining` left, not
//!    the one a caller saw rejected, is taken (unless an operator forced a
//!    refresh).
//! 3. Else the host takes a short lease (`SET NX PX`): one host fetches
//!    and writes the token through; hosts that find the lease held wait for
//!    the value (at most `lease`) and fetch themselves only if none comes.
//!
//! Correctness never rests on Redis: every operation has `timeout`, and a
//! Redis that is down, slow or refusing makes the host fetch directly (at
//! worst two hosts fetch). Values are sealed ([`seal`]) and bound to the
//! app, tenant and resource; one that fails to open is counted, never
//! served, and replaced.

pub mod record;
mod setup;
mod source;
pub mod store;

pub use setup::{connect, prepare, SetupError};
pub use source::SharedSource;

use crate::cache::{CacheKey, Fetched, LoadContext};
use crate::clock::SharedClock;
use crate::seal::{self, TokenRecord};
use record::{BlockRecord, Shareable};
use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{Store, StoreError};

/// What a value is bound to: the app (its client ID), the tenant, the
/// resource.
fn bound(key: &CacheKey) -> String {
    format!(
        "{}\0{}\0{}",
        key.app.client_id.as_str(),
        key.tenant.as_str(),
        key.resource.as_str()
    )
}

/// The Redis key of `kind` (`token`, `lease`, `block`) for `key`: hashed,
/// so Redis never sees tenant names and every key has one shape.
pub fn redis_key(prefix: &str, key: &CacheKey, kind: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bound(key).as_bytes());
    format!("{prefix}:{kind}:{}", hex::encode(&digest.as_ref()[..16]))
}

/// How often a host waiting on another's lease looks for the value.
const LEASE_POLL: Duration = Duration::from_millis(50);

/// The shared-cache operations and their outcomes (the metric's labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get,
    Set,
    Delete,
    Lease,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Set => "set",
            Op::Delete => "delete",
            Op::Lease => "lease",
        }
    }
}

/// `result` of `tokenbroker_shared_cache_operations_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpResult {
    Hit,
    Miss,
    Ok,
    Busy,
    Error,
    Timeout,
    Rejected,
}

impl OpResult {
    pub fn as_str(self) -> &'static str {
        match self {
            OpResult::Hit => "hit",
            OpResult::Miss => "miss",
            OpResult::Ok => "ok",
            OpResult::Busy => "busy",
            OpResult::Error => "error",
            OpResult::Timeout => "timeout",
            OpResult::Rejected => "rejected",
        }
    }
}

/// Hooks for metrics.
pub trait FleetObserver: Send + Sync + std::fmt::Debug + 'static {
    fn shared_op(&self, _op: Op, _result: OpResult) {}
    fn shared_up(&self, _up: bool) {}
}

/// Settings of `[shared_cache]` that the logic needs.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    pub prefix: String,
    pub timeout: Duration,
    pub lease: Duration,
    /// Remember a refusal this long fleet-wide (`cache.negative_ttl`).
    pub negative_ttl: Duration,
    /// Take a shared token only with this much life left (`cache.min_remaining`).
    pub min_remaining: Duration,
}

// 0: no answer yet (connecting).
const UP: u8 = 1;
const DOWN: u8 = 2;

/// Whether Redis answers, for status and the once-per-outage log line.
#[derive(Debug, Default)]
struct Health {
    state: AtomicU8,
    /// Since when (unix s), and the last failure.
    detail: Mutex<(u64, Option<String>)>,
    /// While Redis is down, operations fail at once until then; the first
    /// one after it is the probe. So a Redis that drops packets costs one
    /// `timeout` per [`PROBE_INTERVAL`], not one per request.
    skip_until: Mutex<Option<tokio::time::Instant>>,
    /// When the last operation started: an idle host probes Redis.
    last_op: Mutex<Option<tokio::time::Instant>>,
}

/// While Redis is down, it is tried again this often.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// A host with no other traffic to Redis pings it this often, so its
/// health (`tokenbroker_shared_cache_up`, the status) follows Redis within
/// seconds, and the connection is fresh for the next caller.
pub const IDLE_PROBE: Duration = Duration::from_secs(5);

/// The shared cache's state, for admin status and `tokenbroker status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FleetStatus {
    /// `ok`, `down`, or `connecting` (no answer yet).
    pub state: &'static str,
    pub target: String,
    pub since: Option<u64>,
    pub last_error: Option<String>,
    /// The id of the key values are sealed with.
    pub key_id: String,
}

/// Why a round trip through the shared cache failed (`check --online`).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{op}: no answer within shared_cache.timeout ({} ms)", .timeout.as_millis())]
    Timeout { op: &'static str, timeout: Duration },
    #[error("{op}: {source}")]
    Store {
        op: &'static str,
        source: StoreError,
    },
    #[error("GET: the value just written is missing")]
    Missing,
    /// The probe value would not seal, or not open again.
    #[error(transparent)]
    Sealed(#[from] seal::Rejected),
}

/// The shared cache of one app on one store.
#[derive(Debug)]
pub struct SharedCache {
    store: Arc<dyn Store>,
    target: String,
    keys: seal::Keys,
    settings: FleetSettings,
    clock: SharedClock,
    observer: Arc<dyn FleetObserver>,
    health: Health,
    /// `cache.min_remaining` and `cache.negative_ttl` in force, in
    /// milliseconds: a reload of `[cache]` changes them.
    min_remaining_ms: std::sync::atomic::AtomicU64,
    negative_ttl_ms: std::sync::atomic::AtomicU64,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The Redis keys and associated data of one (tenant, resource).
struct Names {
    token: String,
    lease: String,
    block: String,
    token_aad: Vec<u8>,
    block_aad: Vec<u8>,
}

/// What a read of the shared token found.
enum Read {
    /// A token this load may take.
    Hit(TokenRecord),
    /// None, or none this load may take.
    Miss,
    /// A value that failed to open (counted; the fetch replaces it).
    Rejected,
    /// Redis did not answer.
    Unavailable,
}

/// How taking the lease went.
enum Lease {
    Taken(Vec<u8>),
    Busy,
    Unavailable,
}

impl SharedCache {
    pub fn new(
        store: Arc<dyn Store>,
        target: String,
        keys: seal::Keys,
        settings: FleetSettings,
        clock: SharedClock,
        observer: Arc<dyn FleetObserver>,
    ) -> SharedCache {
        SharedCache {
            min_remaining_ms: millis(settings.min_remaining).into(),
            negative_ttl_ms: millis(settings.negative_ttl).into(),
            store,
            target,
            keys,
            settings,
            clock,
            observer,
            health: Health::default(),
        }
    }

    /// The settings it started with (`[shared_cache]` needs a restart).
    pub fn settings(&self) -> &FleetSettings {
        &self.settings
    }

    /// Follows a reload of `[cache]`.
    pub fn set_cache_tuning(&self, min_remaining: Duration, negative_ttl: Duration) {
        self.min_remaining_ms
            .store(millis(min_remaining), Ordering::Relaxed);
        self.negative_ttl_ms
            .store(millis(negative_ttl), Ordering::Relaxed);
    }

    fn min_remaining(&self) -> Duration {
        Duration::from_millis(self.min_remaining_ms.load(Ordering::Relaxed))
    }

    fn negative_ttl(&self) -> Duration {
        Duration::from_millis(self.negative_ttl_ms.load(Ordering::Relaxed))
    }

    fn names(&self, key: &CacheKey) -> Names {
        let settings = &self.settings;
        let bound = bound(key);
        let key_of = |kind| redis_key(&settings.prefix, key, kind);
        Names {
            token: key_of("token"),
            lease: key_of("lease"),
            block: key_of("block"),
            token_aad: format!("tokenbroker/v1\0token\0{}\0{bound}", settings.prefix).into_bytes(),
            block_aad: format!("tokenbroker/v1\0block\0{}\0{bound}", settings.prefix).into_bytes(),
        }
    }

    /// The Redis key holding `key`'s token (tests tamper with it).
    pub fn token_key(&self, key: &CacheKey) -> String {
        self.names(key).token
    }

    /// Runs one store operation within `timeout`, counting its outcome and
    /// following Redis's health. `Err` is an outage (already counted).
    async fn op<T>(
        &self,
        op: Op,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, ()> {
        *self
            .health
            .last_op
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(tokio::time::Instant::now());
        if self.health.state.load(Ordering::Acquire) == DOWN {
            let mut skip = self
                .health
                .skip_until
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let now = tokio::time::Instant::now();
            match *skip {
                Some(until) if now < until => return Err(()),
                // This call is the probe; the others skip until it is done.
                _ => *skip = Some(now + PROBE_INTERVAL.max(self.settings.timeout)),
            }
        }
        match tokio::time::timeout(self.settings.timeout, call).await {
            Ok(Ok(value)) => {
                self.healthy();
                Ok(value)
            }
            Ok(Err(e)) => {
                self.observer.shared_op(op, OpResult::Error);
                self.unhealthy(format!("{} failed: {e}", op.as_str()));
                Err(())
            }
            Err(_) => {
                self.observer.shared_op(op, OpResult::Timeout);
                self.unhealthy(format!(
                    "{} took longer than shared_cache.timeout ({} ms)",
                    op.as_str(),
                    self.settings.timeout.as_millis()
                ));
                Err(())
            }
        }
    }

    /// Whether no operation started within `span`.
    fn idle_for(&self, span: Duration) -> bool {
        let last = *self
            .health
            .last_op
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        last.is_none_or(|at| at.elapsed() >= span)
    }

    fn healthy(&self) {
        let was = self.health.state.swap(UP, Ordering::AcqRel);
        if was != UP {
            self.set_detail(None);
            self.observer.shared_up(true);
            if was == DOWN {
                tracing::info!(target = %self.target, "shared cache reachable again: sharing tokens with the fleet");
            } else {
                tracing::info!(target = %self.target, "shared cache connected");
            }
        }
    }

    fn unhealthy(&self, why: String) {
        *self
            .health
            .skip_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()) =
            Some(tokio::time::Instant::now() + PROBE_INTERVAL);
        let was = self.health.state.swap(DOWN, Ordering::AcqRel);
        if was != DOWN {
            self.observer.shared_up(false);
            // Once per outage, not once per request.
            tracing::warn!(target = %self.target, "shared cache unreachable ({why}); serving from the local cache and fetching from Entra directly until it is back");
            self.set_detail(Some(why));
        } else if let Ok(mut detail) = self.health.detail.lock() {
            detail.1 = Some(why);
        }
    }

    fn set_detail(&self, error: Option<String>) {
        if let Ok(mut detail) = self.health.detail.lock() {
            *detail = (self.clock.unix_now(), error);
        }
    }

    /// The state for the admin status.
    pub fn status(&self) -> FleetStatus {
        let (since, last_error) = self
            .health
            .detail
            .lock()
            .map(|d| (d.0, d.1.clone()))
            .unwrap_or((0, None));
        FleetStatus {
            state: match self.health.state.load(Ordering::Acquire) {
                UP => "ok",
                DOWN => "down",
                _ => "connecting",
            },
            target: self.target.clone(),
            since: (since > 0).then_some(since),
            last_error,
            key_id: self.keys.current_id(),
        }
    }

    /// A round trip to the store (`check --online`): seals a probe value,
    /// writes it, reads it back and opens it.
    pub async fn probe(&self) -> Result<(), ProbeError> {
        let key = format!("{}:probe:{}", self.settings.prefix, uuid::Uuid::new_v4());
        let aad = b"tokenbroker/v1\0probe";
        let sealed = self.keys.seal(aad, b"probe")?;
        let timeout = self.settings.timeout;
        let within = |op: &'static str| move |_| ProbeError::Timeout { op, timeout };
        let store = |op: &'static str| move |source| ProbeError::Store { op, source };
        tokio::time::timeout(
            timeout,
            self.store.set(key.clone(), sealed, Duration::from_secs(10)),
        )
        .await
        .map_err(within("SET"))?
        .map_err(store("SET"))?;
        let back = tokio::time::timeout(timeout, self.store.get(key.clone()))
            .await
            .map_err(within("GET"))?
            .map_err(store("GET"))?
            .ok_or(ProbeError::Missing)?;
        self.keys.open(aad, &back)?;
        let _ = tokio::time::timeout(timeout, self.store.delete(key)).await;
        Ok(())
    }

    /// Opens a value read from the store: at most [`store::MAX_VALUE_BYTES`]
    /// (the store reads no more than one byte past it), sealed by a key of
    /// this fleet for this (tenant, resource).
    fn open_value(&self, aad: &[u8], value: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
        if value.len() > store::MAX_VALUE_BYTES {
            return Err(format!(
                "larger than {} bytes; not a value this fleet writes",
                store::MAX_VALUE_BYTES
            ));
        }
        self.keys.open(aad, value).map_err(|e| e.to_string())
    }

    /// A token from the shared cache that this load may take.
    async fn read_token(&self, names: &Names, load: &LoadContext) -> Read {
        let Ok(value) = self.op(Op::Get, self.store.get(names.token.clone())).await else {
            return Read::Unavailable;
        };
        let Some(value) = value else {
            self.observer.shared_op(Op::Get, OpResult::Miss);
            return Read::Miss;
        };
        let record = match self
            .open_value(&names.token_aad, &value)
            .and_then(|plain| TokenRecord::decode(&plain).map_err(|e| e.to_string()))
        {
            Ok(record) => record,
            Err(why) => {
                // Never served; the fetch that follows replaces it.
                self.observer.shared_op(Op::Get, OpResult::Rejected);
                tracing::warn!(key = %names.token, "shared cache value rejected: {why}");
                return Read::Rejected;
            }
        };
        let now = self.clock.unix_now();
        let sha = record.sha256();
        let usable = record.expires_on.saturating_sub(now) > self.min_remaining().as_secs()
            && load.rejected != Some(sha)
            // Newer than what this host holds: a refresh must not take back
            // the very token it is replacing.
            && load
                .current
                .is_none_or(|(held, expires_on)| held != sha && record.expires_on > expires_on);
        if usable {
            self.observer.shared_op(Op::Get, OpResult::Hit);
            Read::Hit(record)
        } else {
            self.observer.shared_op(Op::Get, OpResult::Miss);
            Read::Miss
        }
    }

    async fn write_token(&self, names: &Names, record: &TokenRecord) {
        self.write_sealed(
            &names.token,
            &names.token_aad,
            &record.encode(),
            record.expires_on,
        )
        .await;
    }

    /// Seals `plain` bound to `aad` and stores it under `key` until `until`
    /// (unix seconds), Redis expiring it then.
    async fn write_sealed(&self, key: &str, aad: &[u8], plain: &[u8], until: u64) {
        let ttl = Duration::from_secs(until.saturating_sub(self.clock.unix_now()));
        if ttl.is_zero() {
            return;
        }
        let Ok(sealed) = self.keys.seal(aad, plain) else {
            return;
        };
        if self
            .op(Op::Set, self.store.set(key.to_owned(), sealed, ttl))
            .await
            .is_ok()
        {
            self.observer.shared_op(Op::Set, OpResult::Ok);
        }
    }

    async fn read_block(&self, names: &Names) -> Option<BlockRecord> {
        let value = self
            .op(Op::Get, self.store.get(names.block.clone()))
            .await
            .ok()??;
        match self
            .open_value(&names.block_aad, &value)
            .and_then(|plain| BlockRecord::decode(&plain).map_err(|e| e.to_string()))
        {
            Ok(block) if block.until > self.clock.unix_now() => {
                self.observer.shared_op(Op::Get, OpResult::Hit);
                Some(block)
            }
            Ok(_) => None,
            Err(why) => {
                self.observer.shared_op(Op::Get, OpResult::Rejected);
                tracing::warn!(key = %names.block, "shared cache value rejected: {why}");
                None
            }
        }
    }

    async fn write_block(&self, names: &Names, block: &BlockRecord) {
        self.write_sealed(&names.block, &names.block_aad, &block.encode(), block.until)
            .await;
    }

    /// Takes the lease; `count_busy`: count finding it held (once per
    /// wait, not once per poll).
    async fn take_lease(&self, names: &Names, count_busy: bool) -> Lease {
        let mut id = vec![0u8; 16];
        if aws_lc_rs::rand::fill(&mut id).is_err() {
            return Lease::Unavailable;
        }
        let taken = self
            .op(
                Op::Lease,
                self.store
                    .set_if_absent(names.lease.clone(), id.clone(), self.settings.lease),
            )
            .await;
        match taken {
            Ok(true) => {
                self.observer.shared_op(Op::Lease, OpResult::Ok);
                Lease::Taken(id)
            }
            Ok(false) => {
                if count_busy {
                    self.observer.shared_op(Op::Lease, OpResult::Busy);
                }
                Lease::Busy
            }
            Err(()) => Lease::Unavailable,
        }
    }

    async fn release(&self, names: &Names, id: Vec<u8>) {
        if self
            .op(Op::Delete, self.store.delete_if(names.lease.clone(), id))
            .await
            .is_ok()
        {
            self.observer.shared_op(Op::Delete, OpResult::Ok);
        }
    }

    /// Drops `key`'s shared token and remembered refusal (`tokenbroker evict`).
    pub async fn evict(&self, key: &CacheKey) {
        let names = self.names(key);
        for name in [names.token, names.block] {
            if self.op(Op::Delete, self.store.delete(name)).await.is_ok() {
                self.observer.shared_op(Op::Delete, OpResult::Ok);
            }
        }
    }

    /// A token for `key`: a remembered fleet-wide refusal, a shared token
    /// this load may take, or `upstream`'s (under the lease when it can be
    /// had), written through.
    pub async fn fetch<E, F, Fut>(
        &self,
        key: &CacheKey,
        load: &LoadContext,
        upstream: F,
    ) -> Result<Fetched, E>
    where
        E: Shareable,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Fetched, E>>,
    {
        let names = self.names(key);
        // An operator's refresh still honours a throttle, as the local cache does.
        if let Some(block) = self.read_block(&names).await {
            if !load.forced || block.is_throttle() {
                return Err(block.to_error(key, self.clock.unix_now()));
            }
        }
        let first = if load.forced {
            Read::Miss
        } else {
            self.read_token(&names, load).await
        };
        match first {
            Read::Hit(record) => return Ok(record.into_fetched(self.clock.unix_now())),
            // Redis is not answering: no lease either.
            Read::Unavailable => return self.upstream(&names, &upstream).await,
            Read::Miss | Read::Rejected => {}
        }
        match self.take_lease(&names, true).await {
            Lease::Taken(id) => {
                // Another host may have written and released just before:
                // look once more before going upstream (not when the value
                // there was just rejected: this host replaces it).
                if matches!(first, Read::Miss) && !load.forced {
                    if let Read::Hit(record) = self.read_token(&names, load).await {
                        self.release(&names, id).await;
                        return Ok(record.into_fetched(self.clock.unix_now()));
                    }
                }
                let result = self.upstream(&names, &upstream).await;
                self.release(&names, id).await;
                result
            }
            Lease::Busy => {
                let deadline = tokio::time::Instant::now() + self.settings.lease;
                while tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(LEASE_POLL).await;
                    match self.read_token(&names, load).await {
                        Read::Hit(record) => return Ok(record.into_fetched(self.clock.unix_now())),
                        Read::Unavailable => break,
                        Read::Miss | Read::Rejected => {}
                    }
                    if let Some(block) = self.read_block(&names).await {
                        if !load.forced || block.is_throttle() {
                            return Err(block.to_error(key, self.clock.unix_now()));
                        }
                    }
                    // The holder gave up without a token to share (a
                    // transient failure): the lease is free, take it over.
                    match self.take_lease(&names, false).await {
                        Lease::Taken(id) => {
                            // The holder may have written and released
                            // since the read above: look once more.
                            if let Read::Hit(record) = self.read_token(&names, load).await {
                                self.release(&names, id).await;
                                return Ok(record.into_fetched(self.clock.unix_now()));
                            }
                            let result = self.upstream(&names, &upstream).await;
                            self.release(&names, id).await;
                            return result;
                        }
                        Lease::Busy => {}
                        Lease::Unavailable => break,
                    }
                }
                // The holder died or is slow: at worst two hosts fetch.
                self.upstream(&names, &upstream).await
            }
            Lease::Unavailable => self.upstream(&names, &upstream).await,
        }
    }

    /// Fetches from Entra and writes the outcome through: the token, or a
    /// refusal or throttle the fleet should answer without asking again.
    async fn upstream<E, F, Fut>(&self, names: &Names, upstream: &F) -> Result<Fetched, E>
    where
        E: Shareable,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Fetched, E>>,
    {
        let result = upstream().await;
        let now = self.clock.unix_now();
        match &result {
            Ok(fetched) => {
                self.write_token(names, &TokenRecord::of(fetched, now))
                    .await
            }
            Err(error) => {
                if let Some(block) = BlockRecord::of(error, now, self.negative_ttl()) {
                    self.write_block(names, &block).await;
                }
            }
        }
        result
    }
}

#[cfg(test)]
mod tests;
