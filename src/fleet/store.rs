//! Where the fleet's shared values live: a key-value [`Store`] with expiry,
//! "set if absent" and "delete if still mine". [`RedisStore`] is Redis
//! (standalone, or a Cluster) through the `redis` crate; tests use
//! [`MemoryStore`]. Timeouts, metrics and outage logging are the caller's
//! ([`super::SharedCache`]), so every store gets them alike.

use crate::cache::BoxFuture;
use arc_swap::ArcSwapOption;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// No connection yet (connecting in the background).
    #[error("not connected")]
    NotConnected,
    /// The server answered an error or the connection failed.
    #[error("{0}")]
    Failed(String),
}

/// Why a Redis client could not be set up from the settings (the setting
/// at fault is named, the URL without its password).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("shared_cache.url is empty")]
    NoUrl,
    #[error("{setting}: {source}")]
    Invalid {
        setting: String,
        source: redis::RedisError,
    },
}

/// A shared key-value store with expiry.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    fn get(&self, key: String) -> BoxFuture<Result<Option<Vec<u8>>, StoreError>>;
    /// Sets `key`, expiring after `ttl`.
    fn set(&self, key: String, value: Vec<u8>, ttl: Duration) -> BoxFuture<Result<(), StoreError>>;
    /// Sets `key` only if absent; whether it was set.
    fn set_if_absent(
        &self,
        key: String,
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<Result<bool, StoreError>>;
    fn delete(&self, key: String) -> BoxFuture<Result<(), StoreError>>;
    /// Deletes `key` only if it still holds `value` (a lease this host took).
    fn delete_if(&self, key: String, value: Vec<u8>) -> BoxFuture<Result<(), StoreError>>;
    /// A round trip (`check --online`, status).
    fn ping(&self) -> BoxFuture<Result<(), StoreError>>;
}

/// Milliseconds for `PX`, at least 1.
fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Deletes a key only if it holds the given value: one round trip, atomic.
const DELETE_IF: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

#[derive(Clone)]
enum Connection {
    Single(redis::aio::ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

/// Whether an error says the connection broke (Redis restarted, a proxy
/// closed it) rather than that Redis answered: the first operation after a
/// restart meets the old, dead connection, and the manager reconnects for
/// the next one, so it is tried once more.
fn connection_broke(e: &redis::RedisError) -> bool {
    e.is_connection_dropped() || e.is_io_error()
}

impl Connection {
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match self.query_once(cmd).await {
            Err(e) if connection_broke(&e) => self.query_once(cmd).await,
            answered => answered,
        }
    }

    async fn query_once<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        match self.clone() {
            Connection::Single(mut c) => cmd.query_async(&mut c).await,
            Connection::Cluster(mut c) => cmd.query_async(&mut c).await,
        }
    }

    async fn script(
        &self,
        script: &redis::Script,
        key: &str,
        arg: &[u8],
    ) -> redis::RedisResult<i64> {
        match self.script_once(script, key, arg).await {
            Err(e) if connection_broke(&e) => self.script_once(script, key, arg).await,
            answered => answered,
        }
    }

    async fn script_once(
        &self,
        script: &redis::Script,
        key: &str,
        arg: &[u8],
    ) -> redis::RedisResult<i64> {
        let mut invocation = script.key(key);
        invocation.arg(arg);
        match self.clone() {
            Connection::Single(mut c) => invocation.invoke_async(&mut c).await,
            Connection::Cluster(mut c) => invocation.invoke_async(&mut c).await,
        }
    }
}

/// Redis, standalone or Cluster. It connects (and reconnects) in the
/// background; until it is connected every operation fails at once, so a
/// host never waits on a Redis it cannot reach.
pub struct RedisStore {
    connection: Arc<ArcSwapOption<Connection>>,
    delete_if: redis::Script,
    /// What it connects to, without credentials (status, logs).
    target: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("target", &self.target)
            .finish()
    }
}

/// How to reach Redis (from `[shared_cache]`; secrets already read).
#[derive(Clone)]
pub struct RedisTarget {
    pub seeds: Vec<String>,
    pub cluster: bool,
    pub username: Option<String>,
    pub password: Option<zeroize::Zeroizing<String>>,
    /// Extra roots for `rediss://` (PEM).
    pub ca_pem: Option<Vec<u8>>,
    pub timeout: Duration,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
            .field(
                "seeds",
                &self.seeds.iter().map(|s| redact(s)).collect::<Vec<_>>(),
            )
            .field("cluster", &self.cluster)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A URL without its password, for logs and status.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "<unparsable URL>".into(),
    }
}

impl RedisStore {
    /// Starts connecting to `target` in the background; returns at once.
    pub fn connect(target: RedisTarget) -> Result<RedisStore, ConnectError> {
        let connection = Arc::new(ArcSwapOption::empty());
        let shown = target
            .seeds
            .iter()
            .map(|s| redact(s))
            .collect::<Vec<_>>()
            .join(", ");
        let store = RedisStore {
            connection: Arc::clone(&connection),
            delete_if: redis::Script::new(DELETE_IF),
            target: shown,
        };
        if target.cluster {
            let client = cluster_client(&target)?;
            tokio::spawn(connect_cluster(client, connection, target.timeout));
        } else {
            let client = single_client(&target)?;
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(target.timeout))
                .set_response_timeout(Some(target.timeout))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_secs(2));
            // Lazy: it connects on first use and reconnects after a failure.
            let manager = redis::aio::ConnectionManager::new_lazy_with_config(client, config)
                .map_err(|source| ConnectError::Invalid {
                    setting: "shared_cache.url".into(),
                    source,
                })?;
            connection.store(Some(Arc::new(Connection::Single(manager))));
        }
        Ok(store)
    }

    /// The server(s), without credentials.
    pub fn target(&self) -> &str {
        &self.target
    }

    fn connection(&self) -> Result<Arc<Connection>, StoreError> {
        self.connection.load_full().ok_or(StoreError::NotConnected)
    }
}

fn failed(e: redis::RedisError) -> StoreError {
    StoreError::Failed(e.to_string())
}

fn single_client(target: &RedisTarget) -> Result<redis::Client, ConnectError> {
    use redis::IntoConnectionInfo;
    let url = target.seeds.first().ok_or(ConnectError::NoUrl)?;
    let invalid = |source| ConnectError::Invalid {
        setting: format!("shared_cache.url {}", redact(url)),
        source,
    };
    let info = url.as_str().into_connection_info().map_err(invalid)?;
    let mut settings = info.redis_settings().clone();
    if let Some(user) = &target.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = &target.password {
        settings = settings.set_password(password.as_str());
    }
    let info = info.set_redis_settings(settings);
    match &target.ca_pem {
        Some(pem) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        ),
        None => redis::Client::open(info),
    }
    .map_err(invalid)
}

fn cluster_client(target: &RedisTarget) -> Result<redis::cluster::ClusterClient, ConnectError> {
    let mut builder =
        redis::cluster::ClusterClientBuilder::new(target.seeds.iter().map(String::as_str))
            .connection_timeout(target.timeout)
            .response_timeout(target.timeout)
            .retries(1);
    if let Some(user) = &target.username {
        builder = builder.username(user);
    }
    if let Some(password) = &target.password {
        builder = builder.password(password.as_str());
    }
    if let Some(pem) = &target.ca_pem {
        builder = builder.certs(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        });
    }
    builder.build().map_err(|source| ConnectError::Invalid {
        setting: "shared_cache.urls".into(),
        source,
    })
}

/// Connects to a Cluster, retrying with backoff until it answers; the
/// connection then follows the cluster's changes by itself.
async fn connect_cluster(
    client: redis::cluster::ClusterClient,
    slot: Arc<ArcSwapOption<Connection>>,
    timeout: Duration,
) {
    let mut delay = Duration::from_millis(200);
    loop {
        match tokio::time::timeout(timeout * 8, client.get_async_connection()).await {
            Ok(Ok(connection)) => {
                slot.store(Some(Arc::new(Connection::Cluster(connection))));
                return;
            }
            Ok(Err(e)) => tracing::debug!("shared cache: Redis Cluster not reachable yet: {e}"),
            Err(_) => tracing::debug!("shared cache: Redis Cluster did not answer in time"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// No value this broker writes is larger (a sealed token is about 2 KiB);
/// a read takes at most one byte more, so a writer to Redis cannot make a
/// broker read a huge value whole.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

impl Store for RedisStore {
    fn get(&self, key: String) -> BoxFuture<Result<Option<Vec<u8>>, StoreError>> {
        let connection = self.connection();
        Box::pin(async move {
            // GETRANGE answers an empty string for a missing key; no value
            // this broker writes is empty.
            let value: Vec<u8> = connection?
                .query(redis::cmd("GETRANGE").arg(&key).arg(0).arg(MAX_VALUE_BYTES))
                .await
                .map_err(failed)?;
            Ok((!value.is_empty()).then_some(value))
        })
    }

    fn set(&self, key: String, value: Vec<u8>, ttl: Duration) -> BoxFuture<Result<(), StoreError>> {
        let connection = self.connection();
        Box::pin(async move {
            connection?
                .query(
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(value)
                        .arg("PX")
                        .arg(millis(ttl)),
                )
                .await
                .map_err(failed)
        })
    }

    fn set_if_absent(
        &self,
        key: String,
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<Result<bool, StoreError>> {
        let connection = self.connection();
        Box::pin(async move {
            let answer: Option<String> = connection?
                .query(
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(value)
                        .arg("NX")
                        .arg("PX")
                        .arg(millis(ttl)),
                )
                .await
                .map_err(failed)?;
            Ok(answer.is_some())
        })
    }

    fn delete(&self, key: String) -> BoxFuture<Result<(), StoreError>> {
        let connection = self.connection();
        Box::pin(async move {
            let _: i64 = connection?
                .query(redis::cmd("DEL").arg(&key))
                .await
                .map_err(failed)?;
            Ok(())
        })
    }

    fn delete_if(&self, key: String, value: Vec<u8>) -> BoxFuture<Result<(), StoreError>> {
        let connection = self.connection();
        let script = self.delete_if.clone();
        Box::pin(async move {
            connection?
                .script(&script, &key, &value)
                .await
                .map(|_| ())
                .map_err(failed)
        })
    }

    fn ping(&self) -> BoxFuture<Result<(), StoreError>> {
        let connection = self.connection();
        Box::pin(async move {
            let _: String = connection?
                .query(&redis::cmd("PING"))
                .await
                .map_err(failed)?;
            Ok(())
        })
    }
}

/// Values and when they expire.
type Entries = HashMap<String, (Vec<u8>, tokio::time::Instant)>;

/// An in-process store (tests; one "Redis" shared by several brokers).
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    entries: Arc<Mutex<Entries>>,
    down: Arc<std::sync::atomic::AtomicBool>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Makes every operation fail (an outage) or work again.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    /// The raw value of `key` (tests tamper with it).
    pub fn raw(&self, key: &str) -> Option<Vec<u8>> {
        self.live(key)
    }

    /// Replaces the raw value of `key`, keeping its expiry.
    pub fn put_raw(&self, key: &str, value: Vec<u8>) {
        let mut entries = self.lock();
        let until = entries
            .get(key)
            .map(|(_, t)| *t)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        entries.insert(key.to_owned(), (value, until));
    }

    /// Keys holding a live value.
    pub fn keys(&self) -> Vec<String> {
        let now = tokio::time::Instant::now();
        self.lock()
            .iter()
            .filter(|(_, (_, until))| *until > now)
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn live(&self, key: &str) -> Option<Vec<u8>> {
        let now = tokio::time::Instant::now();
        self.lock()
            .get(key)
            .filter(|(_, until)| *until > now)
            .map(|(v, _)| v.clone())
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            Err(StoreError::Failed(
                "connection refused (simulated outage)".into(),
            ))
        } else {
            Ok(())
        }
    }
}

impl Store for MemoryStore {
    fn get(&self, key: String) -> BoxFuture<Result<Option<Vec<u8>>, StoreError>> {
        let result = self.check().map(|()| self.live(&key));
        Box::pin(async move { result })
    }

    fn set(&self, key: String, value: Vec<u8>, ttl: Duration) -> BoxFuture<Result<(), StoreError>> {
        let result = self.check().map(|()| {
            self.lock()
                .insert(key, (value, tokio::time::Instant::now() + ttl));
        });
        Box::pin(async move { result })
    }

    fn set_if_absent(
        &self,
        key: String,
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<Result<bool, StoreError>> {
        let result = self.check().map(|()| {
            if self.live(&key).is_some() {
                return false;
            }
            self.lock()
                .insert(key, (value, tokio::time::Instant::now() + ttl));
            true
        });
        Box::pin(async move { result })
    }

    fn delete(&self, key: String) -> BoxFuture<Result<(), StoreError>> {
        let result = self.check().map(|()| {
            self.lock().remove(&key);
        });
        Box::pin(async move { result })
    }

    fn delete_if(&self, key: String, value: Vec<u8>) -> BoxFuture<Result<(), StoreError>> {
        let result = self.check().map(|()| {
            let mut entries = self.lock();
            if entries.get(&key).is_some_and(|(v, _)| *v == value) {
                entries.remove(&key);
            }
        });
        Box::pin(async move { result })
    }

    fn ping(&self) -> BoxFuture<Result<(), StoreError>> {
        let result = self.check();
        Box::pin(async move { result })
    }
}
