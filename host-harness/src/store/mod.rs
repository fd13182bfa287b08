//! The answer store: where the host keeps the component's answers between
//! runs, behind `wasi:keyvalue/store` + `wasi:keyvalue/atomics`
//! (0.2.0-draft).
//!
//! - [`StoreSpec`]: what `--cache` / `$TIP_ENRICH_CACHE` name (a file, a
//!   Redis server, memory, or nothing).
//! - [`Backend`]: the operations the host implements the interfaces over;
//!   [`sqlite`], [`redis`] and [`memory`] implement it.
//! - [`open`]: a spec to a backend.
//! - [`Guarded`]: a backend whose failures degrade to "uncached" with one
//!   warning instead of failing lookups.
//!
//! Rules every backend keeps:
//! - The component's keys start with [`KEY_PREFIX`]. A Redis server may be
//!   shared with other applications, so there `stats`, `list_keys`,
//!   `scan_prefix` and `purge` only ever look at keys with that prefix.
//! - A value that is a JSON object with a numeric `"expires_at"` (unix ms)
//!   expires then: `get`, `exists`, `list_keys` and `scan_prefix` never
//!   return an expired entry. A value without one does not expire, except a
//!   key created by `increment`, which expires [`COUNTER_TTL`] after it was
//!   created.
//! - Counters are kept as decimal text, as Redis `INCRBY` and wasmtime's
//!   in-memory `wasi:keyvalue` keep them.

pub mod memory;
pub mod redis;
pub mod sqlite;

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use self::memory::MemoryBackend;
pub use self::redis::RedisBackend;
pub use self::sqlite::SqliteBackend;

/// The prefix of every key the component writes.
pub const KEY_PREFIX: &str = "tip-enrich:";

/// How long a key created by [`Backend::increment`] lives (lease counters
/// of a crashed process must not pile up).
pub const COUNTER_TTL: Duration = Duration::from_secs(3600);

/// Default size bound of a store ([`StoreOptions::max_bytes`]): 256 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// The most keys one [`Backend::list_keys`] page holds.
pub const LIST_PAGE: usize = 1000;

/// How often [`Guarded`] tries a failed backend again, at most.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The file name of the default SQLite store inside [`cache_dir`].
pub const DEFAULT_FILE_NAME: &str = "answers.sqlite";

/// The environment variable that names the store when `--cache` is not given.
pub const CACHE_ENV: &str = "TIP_ENRICH_CACHE";

/// Where answers are kept: parsed from
/// `--cache <PATH | redis://HOST:PORT[/DB] | memory | off>` or
/// `$TIP_ENRICH_CACHE`.
///
/// `Debug` shows what [`StoreSpec::describe`] shows, never a Redis password.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// No store: every lookup goes to the API.
    Off,
    /// A map in this process, gone when it ends.
    Memory,
    /// A SQLite file, shared by every process that names it.
    Sqlite(PathBuf),
    /// A Redis server: the URL as given (it may carry a password; see
    /// [`StoreSpec::describe`] for the printable form).
    Redis(String),
}

/// Why a `--cache` value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The value is empty.
    #[error(
        "the answer store is not named: give a file path, redis://HOST:PORT[/DB], memory or off"
    )]
    Empty,
    /// `rediss://`: Redis over TLS.
    #[error(
        "rediss:// (Redis over TLS) is not supported: tip-enrich talks to Redis over plain TCP; \
         use redis://HOST:PORT[/DB] on a trusted network (or through a TLS tunnel)"
    )]
    TlsUnsupported,
    /// A `redis://` URL that does not parse, or names no TCP server.
    #[error(
        "{url} is not a Redis URL tip-enrich can use ({reason}); expected redis://HOST:PORT[/DB]"
    )]
    BadRedisUrl {
        /// The URL without any user name or password.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `scheme://…` for a scheme other than `redis`.
    #[error(
        "{scheme}:// is not a kind of answer store: give a file path, redis://HOST:PORT[/DB], memory or off"
    )]
    UnknownScheme {
        /// The scheme as given.
        scheme: String,
    },
}

impl StoreSpec {
    /// Parses a `--cache` value: `off`, `memory`, `redis://…`, or else a
    /// file path. `rediss://` and other `scheme://` values are refused with a
    /// message saying what is accepted.
    pub fn parse(text: &str) -> Result<StoreSpec, SpecError> {
        match text {
            "" => return Err(SpecError::Empty),
            "off" => return Ok(StoreSpec::Off),
            "memory" => return Ok(StoreSpec::Memory),
            _ => {}
        }
        if let Some((scheme, _)) = text.split_once("://")
            && !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        {
            return match scheme.to_ascii_lowercase().as_str() {
                "redis" => {
                    redis::connection_info(text)?;
                    Ok(StoreSpec::Redis(text.to_string()))
                }
                "rediss" => Err(SpecError::TlsUnsupported),
                _ => Err(SpecError::UnknownScheme {
                    scheme: scheme.to_string(),
                }),
            };
        }
        Ok(StoreSpec::Sqlite(PathBuf::from(text)))
    }

    /// The store to use: `flag` (the `--cache` value) when given, else
    /// `$TIP_ENRICH_CACHE` when set and not empty, else the SQLite file
    /// [`StoreSpec::default_path`], else [`StoreSpec::Off`] when there is
    /// no cache directory.
    pub fn resolve(flag: Option<&str>) -> Result<StoreSpec, SpecError> {
        resolve_with(flag, &|name| std::env::var_os(name))
    }

    /// `<cache dir>/answers.sqlite`, with the cache directory of
    /// [`cache_dir`]; `None` when there is none.
    pub fn default_path() -> Option<PathBuf> {
        cache_dir().map(|dir| dir.join(DEFAULT_FILE_NAME))
    }

    /// The store for messages: `off`, `memory`, the file path, or the Redis
    /// URL as `redis://HOST:PORT/DB`, without any user name or password.
    pub fn describe(&self) -> String {
        match self {
            StoreSpec::Off => "off".to_string(),
            StoreSpec::Memory => "memory".to_string(),
            StoreSpec::Sqlite(path) => path.display().to_string(),
            StoreSpec::Redis(url) => redis::public_url(url),
        }
    }
}

impl fmt::Debug for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreSpec::Off => f.write_str("Off"),
            StoreSpec::Memory => f.write_str("Memory"),
            StoreSpec::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            StoreSpec::Redis(_) => f.debug_tuple("Redis").field(&self.describe()).finish(),
        }
    }
}

/// [`StoreSpec::resolve`] with the environment given as a function.
fn resolve_with(
    flag: Option<&str>,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<StoreSpec, SpecError> {
    if let Some(text) = flag {
        return StoreSpec::parse(text);
    }
    if let Some(text) = env(CACHE_ENV).filter(|t| !t.is_empty()) {
        return match text.to_str() {
            Some(text) => StoreSpec::parse(text),
            // Not UTF-8: it can only be a path.
            None => Ok(StoreSpec::Sqlite(PathBuf::from(text))),
        };
    }
    Ok(match cache_dir_with(env) {
        Some(dir) => StoreSpec::Sqlite(dir.join(DEFAULT_FILE_NAME)),
        None => StoreSpec::Off,
    })
}

/// The host's cache directory (the precompiled component and the default
/// answer store live there): `$TIP_ENRICH_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/tip-enrich` (when not empty), else
/// `$HOME/.cache/tip-enrich`. `TIP_ENRICH_CACHE_DIR=` (set but empty), or
/// no `HOME`, gives `None`: no cache.
pub fn cache_dir() -> Option<PathBuf> {
    cache_dir_with(&|name| std::env::var_os(name))
}

/// [`cache_dir`] with the environment given as a function.
fn cache_dir_with(env: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    match env("TIP_ENRICH_CACHE_DIR") {
        Some(d) if d.is_empty() => None,
        Some(d) => Some(PathBuf::from(d)),
        None => match env("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            Some(d) => Some(PathBuf::from(d).join("tip-enrich")),
            None => Some(PathBuf::from(env("HOME")?).join(".cache/tip-enrich")),
        },
    }
}

/// Why a store operation failed. The text never holds a Redis password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The `--cache` value is unusable.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// SQLite failed (locked past the busy timeout, not a database, read
    /// only, disk full, …).
    #[error("SQLite {op}: {source}")]
    Sqlite {
        /// What was being done.
        op: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A file or directory of the store could not be made or opened.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// SQLite cannot use WAL mode for the file (a file system without
    /// shared memory or locks, say), which many processes need.
    #[error("{}: SQLite keeps journal_mode {mode} there, and the answer store needs WAL", path.display())]
    NoWal {
        /// The file.
        path: PathBuf,
        /// The journal mode SQLite kept.
        mode: String,
    },
    /// The SQLite file was written by a newer tip-enrich.
    #[error(
        "{} has answer-store schema version {found}; this tip-enrich knows version {known} (use another file, or delete this one)",
        path.display()
    )]
    SchemaTooNew {
        /// The file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
        /// The version this build writes.
        known: i64,
    },
    /// Redis failed (unreachable, timed out, refused the command, …). The
    /// message has any password taken out.
    #[error("Redis {op}: {message}")]
    Redis {
        /// What was being done.
        op: &'static str,
        /// The client's or server's error, password-free.
        message: String,
    },
    /// `increment` on a key whose value is not a decimal counter.
    #[error("{key} does not hold a counter (its value is not a decimal number)")]
    NotACounter {
        /// The key.
        key: String,
    },
    /// `increment` past `u64::MAX` (Redis: past `i64::MAX`).
    #[error("incrementing {key} by {delta} would overflow")]
    Overflow {
        /// The key.
        key: String,
        /// The increment asked for.
        delta: u64,
    },
    /// [`Guarded`]: the backend failed recently and is not tried again yet.
    #[error("the answer store ({describe}) is unavailable; it is tried again every {}s", retry.as_secs_f64())]
    Unavailable {
        /// [`StoreSpec::describe`] of the store.
        describe: String,
        /// How often it is tried again.
        retry: Duration,
    },
}

impl BackendError {
    /// Whether the store itself failed (rather than refusing one request
    /// about one value, as [`BackendError::NotACounter`] and
    /// [`BackendError::Overflow`] do). [`Guarded`] only counts these.
    pub fn is_store_failure(&self) -> bool {
        !matches!(
            self,
            BackendError::NotACounter { .. } | BackendError::Overflow { .. }
        )
    }
}

/// What a store holds, for `tip-enrich cache stats`-like reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Live (not expired) entries of ours.
    pub entries: u64,
    /// Bytes of their keys and values.
    pub bytes: u64,
    /// When the oldest of them was stored (unix ms). Redis keeps no store
    /// time: there it is the oldest value's `"fetched_at"`.
    pub oldest_stored_at_ms: Option<u64>,
    /// Which store: `sqlite <path>`, `redis redis://host:port/db` or `memory`.
    pub backend: String,
}

/// The operations of `wasi:keyvalue/store` and `/atomics` the host serves
/// from a store, and the maintenance ones of the CLI. Keys are UTF-8.
pub trait Backend: Send + Sync {
    /// The value of `key`; `None` when absent or expired.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError>;
    /// Stores `value` under `key` (replacing any value and expiry), with the
    /// expiry its `"expires_at"` gives (see the [module](self) rules).
    fn set(&self, key: &str, value: &[u8]) -> Result<(), BackendError>;
    /// Removes `key` (nothing when absent).
    fn delete(&self, key: &str) -> Result<(), BackendError>;
    /// Whether `key` holds a live value.
    fn exists(&self, key: &str) -> Result<bool, BackendError>;
    /// Adds `delta` to the counter at `key` and returns the new value,
    /// atomically across threads, processes and replicas. An absent (or
    /// expired) key starts at 0 and expires [`COUNTER_TTL`] later; the value
    /// is decimal text.
    fn increment(&self, key: &str, delta: u64) -> Result<u64, BackendError>;
    /// One page of at most [`LIST_PAGE`] of our live keys, and the cursor of
    /// the next page (`None`: this was the last). Start with `None`. A page
    /// may be empty while the cursor says more follow.
    fn list_keys(&self, cursor: Option<u64>) -> Result<(Vec<String>, Option<u64>), BackendError>;
    /// Counts of what the store holds.
    fn stats(&self) -> Result<Stats, BackendError>;
    /// Up to `limit` live entries whose key starts with `prefix` (in key
    /// order for SQLite and memory; Redis returns whichever it scans first,
    /// sorted).
    fn scan_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, BackendError>;
    /// Deletes our entries stored longer ago than `older_than` (all of ours
    /// when `None`); returns how many. Expired entries go too, uncounted.
    fn purge(&self, older_than: Option<Duration>) -> Result<u64, BackendError>;
}

/// How to open a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Size bound of a SQLite store: past it the oldest entries go, down to
    /// about 90 % of it. Default [`DEFAULT_MAX_BYTES`]. (Memory is bounded
    /// by entry count, Redis by its own `maxmemory`.)
    pub max_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// Opens the store `spec` names: `None` for [`StoreSpec::Off`]. A SQLite
/// file (and its directory) is created if missing; a Redis server must
/// answer now (later failures reconnect by themselves).
pub fn open(
    spec: &StoreSpec,
    options: &StoreOptions,
) -> Result<Option<Arc<dyn Backend>>, BackendError> {
    Ok(match spec {
        StoreSpec::Off => None,
        StoreSpec::Memory => Some(Arc::new(MemoryBackend::new())),
        StoreSpec::Sqlite(path) => Some(Arc::new(SqliteBackend::open(path, options.max_bytes)?)),
        StoreSpec::Redis(url) => Some(Arc::new(RedisBackend::open(url)?)),
    })
}

/// Where [`Guarded`] sends its warning lines.
pub type WarningSink = Arc<dyn Fn(&str) + Send + Sync>;

/// A backend whose failures never fail a lookup loudly.
///
/// The first failure prints one warning line (`tip-enrich: warning: the
/// answer store (<describe>) failed: <error>; lookups go on uncached`);
/// from then on every operation returns [`BackendError::Unavailable`] at
/// once, and the backend is tried again at most every [`RETRY_AFTER`] (one
/// caller at a time), so a long-running `serve` recovers. After a success a
/// later failure warns again. Errors about one value
/// ([`BackendError::is_store_failure`] false) pass through and count as the
/// store working.
pub struct Guarded {
    inner: Arc<dyn Backend>,
    describe: String,
    retry_after: Duration,
    sink: WarningSink,
    health: Mutex<Health>,
}

/// [`Guarded`]'s view of its backend.
#[derive(Default)]
struct Health {
    /// When the backend last failed (or was last tried after failing).
    failed_at: Option<Instant>,
    /// Whether this outage has been warned about.
    warned: bool,
}

impl Guarded {
    /// Guards `inner`; `describe` names it in the warning
    /// ([`StoreSpec::describe`]). Warnings go to stderr.
    pub fn new(inner: Arc<dyn Backend>, describe: String) -> Guarded {
        Guarded {
            inner,
            describe,
            retry_after: RETRY_AFTER,
            sink: Arc::new(|line: &str| eprintln!("{line}")),
            health: Mutex::new(Health::default()),
        }
    }

    /// Sends the warning lines to `sink` instead of stderr (tests capture
    /// them this way).
    pub fn with_sink(mut self, sink: WarningSink) -> Guarded {
        self.sink = sink;
        self
    }

    /// Tries a failed backend again after `retry_after` instead of
    /// [`RETRY_AFTER`] (tests use a shorter one).
    pub fn with_retry_after(mut self, retry_after: Duration) -> Guarded {
        self.retry_after = retry_after;
        self
    }

    /// Runs `op` on the backend unless it is resting after a failure.
    fn call<T>(
        &self,
        op: impl FnOnce(&dyn Backend) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        {
            let mut health = lock(&self.health);
            if let Some(failed_at) = health.failed_at {
                if failed_at.elapsed() < self.retry_after {
                    return Err(BackendError::Unavailable {
                        describe: self.describe.clone(),
                        retry: self.retry_after,
                    });
                }
                // This caller tries it; the others keep failing fast meanwhile.
                health.failed_at = Some(Instant::now());
            }
        }
        let result = op(&*self.inner);
        let mut health = lock(&self.health);
        match &result {
            Err(error) if error.is_store_failure() => {
                health.failed_at = Some(Instant::now());
                if !health.warned {
                    health.warned = true;
                    drop(health);
                    (self.sink)(&format!(
                        "tip-enrich: warning: the answer store ({}) failed: {error}; lookups go on uncached",
                        self.describe
                    ));
                }
            }
            _ => *health = Health::default(),
        }
        result
    }
}

impl Backend for Guarded {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        self.call(|b| b.get(key))
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), BackendError> {
        self.call(|b| b.set(key, value))
    }
    fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.call(|b| b.delete(key))
    }
    fn exists(&self, key: &str) -> Result<bool, BackendError> {
        self.call(|b| b.exists(key))
    }
    fn increment(&self, key: &str, delta: u64) -> Result<u64, BackendError> {
        self.call(|b| b.increment(key, delta))
    }
    fn list_keys(&self, cursor: Option<u64>) -> Result<(Vec<String>, Option<u64>), BackendError> {
        self.call(|b| b.list_keys(cursor))
    }
    fn stats(&self) -> Result<Stats, BackendError> {
        self.call(|b| b.stats())
    }
    fn scan_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, BackendError> {
        self.call(|b| b.scan_prefix(prefix, limit))
    }
    fn purge(&self, older_than: Option<Duration>) -> Result<u64, BackendError> {
        self.call(|b| b.purge(older_than))
    }
}

impl Stats {
    /// Empty counts for `backend`.
    fn new(backend: String) -> Stats {
        Stats {
            entries: 0,
            bytes: 0,
            oldest_stored_at_ms: None,
            backend,
        }
    }

    /// Counts one entry, stored at `stored_at` (unix ms) when known.
    fn count(&mut self, key: &str, value: &[u8], stored_at: Option<i64>) {
        self.entries += 1;
        self.bytes = self
            .bytes
            .saturating_add(u64::try_from(key.len() + value.len()).unwrap_or(u64::MAX));
        if let Some(at) = stored_at.and_then(|t| u64::try_from(t).ok()) {
            self.oldest_stored_at_ms = Some(self.oldest_stored_at_ms.map_or(at, |o| o.min(at)));
        }
    }
}

/// Locks `mutex`, taking it over from a thread that panicked with it (the
/// data behind it stays consistent: every update is a single assignment or
/// an SQLite transaction).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Now, in unix milliseconds.
fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// `older_than` before now, in unix milliseconds.
fn cutoff_ms(older_than: Duration) -> i64 {
    now_ms().saturating_sub(i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX))
}

/// The time fields of a stored answer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Times {
    /// `"expires_at"`, unix ms.
    expires_at: Option<i64>,
    /// `"fetched_at"`, unix ms.
    fetched_at: Option<i64>,
}

/// The numeric `"expires_at"` and `"fetched_at"` of `value` when it is a
/// JSON object; none for anything else.
fn times(value: &[u8]) -> Times {
    #[derive(serde::Deserialize)]
    struct Fields {
        #[serde(default)]
        expires_at: Option<serde_json::Value>,
        #[serde(default)]
        fetched_at: Option<serde_json::Value>,
    }
    // Cheap refusal of what cannot be an object.
    if value.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Times::default();
    }
    match serde_json::from_slice::<Fields>(value) {
        Ok(fields) => Times {
            expires_at: fields.expires_at.as_ref().and_then(json_ms),
            fetched_at: fields.fetched_at.as_ref().and_then(json_ms),
        },
        Err(_) => Times::default(),
    }
}

/// A JSON number as whole milliseconds (clamped to `i64`).
fn json_ms(value: &serde_json::Value) -> Option<i64> {
    let number = value.as_number()?;
    if let Some(n) = number.as_i64() {
        return Some(n);
    }
    if number.as_u64().is_some() {
        return Some(i64::MAX);
    }
    let f = number.as_f64()?;
    // `as` saturates at the ends of i64.
    f.is_finite().then(|| f.floor() as i64)
}

/// Whether an entry with this expiry is live at `now`.
fn live(expires_at: Option<i64>, now: i64) -> bool {
    expires_at.is_none_or(|at| at > now)
}

/// A counter's stored text as a number.
fn parse_counter(key: &str, value: &[u8]) -> Result<u64, BackendError> {
    std::str::from_utf8(value)
        .ok()
        .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|text| text.parse::<u64>().ok())
        .ok_or_else(|| BackendError::NotACounter {
            key: key.to_string(),
        })
}

/// `current + delta`, or [`BackendError::Overflow`].
fn add_counter(key: &str, current: u64, delta: u64) -> Result<u64, BackendError> {
    current
        .checked_add(delta)
        .ok_or_else(|| BackendError::Overflow {
            key: key.to_string(),
            delta,
        })
}

/// `COUNTER_TTL` in milliseconds.
fn counter_ttl_ms() -> i64 {
    i64::try_from(COUNTER_TTL.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn parse_names_each_kind() {
        assert_eq!(StoreSpec::parse("off"), Ok(StoreSpec::Off));
        assert_eq!(StoreSpec::parse("memory"), Ok(StoreSpec::Memory));
        assert_eq!(
            StoreSpec::parse("redis://127.0.0.1:6379/2"),
            Ok(StoreSpec::Redis("redis://127.0.0.1:6379/2".into()))
        );
        assert_eq!(
            StoreSpec::parse("/var/cache/a.sqlite"),
            Ok(StoreSpec::Sqlite("/var/cache/a.sqlite".into()))
        );
        assert_eq!(
            StoreSpec::parse("answers.db"),
            Ok(StoreSpec::Sqlite("answers.db".into()))
        );
        // Only the exact words are words; anything else is a path.
        assert_eq!(
            StoreSpec::parse("Memory"),
            Ok(StoreSpec::Sqlite("Memory".into()))
        );
        assert_eq!(StoreSpec::parse(""), Err(SpecError::Empty));
    }

    #[test]
    fn parse_refuses_tls_and_other_schemes_clearly() {
        let tls = StoreSpec::parse("rediss://:pw@host:6380/0").unwrap_err();
        assert_eq!(tls, SpecError::TlsUnsupported);
        let text = tls.to_string();
        assert!(text.contains("rediss://") && text.contains("redis://HOST:PORT"));
        assert!(!text.contains("pw"));
        let other = StoreSpec::parse("memcached://host:11211").unwrap_err();
        assert_eq!(
            other,
            SpecError::UnknownScheme {
                scheme: "memcached".into()
            }
        );
        assert!(matches!(
            StoreSpec::parse("redis://:s3cret@host:notaport/0"),
            Err(SpecError::BadRedisUrl { .. })
        ));
        let bad = StoreSpec::parse("redis://:s3cret@host:notaport/0")
            .unwrap_err()
            .to_string();
        assert!(!bad.contains("s3cret"), "{bad}");
        assert!(matches!(
            StoreSpec::parse("redis://127.0.0.1:6379/notadb"),
            Err(SpecError::BadRedisUrl { .. })
        ));
    }

    #[test]
    fn describe_never_shows_userinfo() {
        for url in [
            "redis://:s3cret@127.0.0.1:1/0",
            "redis://user:s3cret@127.0.0.1:1/0",
            "redis://s3cret@127.0.0.1:1/0",
        ] {
            let spec = StoreSpec::parse(url).unwrap();
            assert_eq!(spec.describe(), "redis://127.0.0.1:1/0");
            assert!(!format!("{spec:?}").contains("s3cret"));
        }
        assert_eq!(
            StoreSpec::parse("redis://localhost").unwrap().describe(),
            "redis://localhost:6379/0"
        );
        assert_eq!(
            StoreSpec::parse("redis://[::1]:7000/3").unwrap().describe(),
            "redis://[::1]:7000/3"
        );
        // Even a spec made by hand that does not parse.
        assert_eq!(
            StoreSpec::Redis("redis://u:s3cret@h:x/y?password=s3cret".into()).describe(),
            "redis://h:x/y"
        );
        assert_eq!(
            StoreSpec::Sqlite("/a/b.sqlite".into()).describe(),
            "/a/b.sqlite"
        );
        assert_eq!(StoreSpec::Off.describe(), "off");
        assert_eq!(StoreSpec::Memory.describe(), "memory");
    }

    #[test]
    fn resolve_prefers_flag_then_env_then_default_file() {
        let e = env(&[(CACHE_ENV, "memory"), ("HOME", "/home/u")]);
        assert_eq!(resolve_with(Some("off"), &e), Ok(StoreSpec::Off));
        assert_eq!(resolve_with(None, &e), Ok(StoreSpec::Memory));
        let e = env(&[(CACHE_ENV, ""), ("HOME", "/home/u")]);
        assert_eq!(
            resolve_with(None, &e),
            Ok(StoreSpec::Sqlite(
                "/home/u/.cache/tip-enrich/answers.sqlite".into()
            ))
        );
        let e = env(&[("TIP_ENRICH_CACHE_DIR", ""), ("HOME", "/home/u")]);
        assert_eq!(resolve_with(None, &e), Ok(StoreSpec::Off));
        assert_eq!(resolve_with(None, &env(&[])), Ok(StoreSpec::Off));
        let e = env(&[(CACHE_ENV, "rediss://h:1")]);
        assert_eq!(resolve_with(None, &e), Err(SpecError::TlsUnsupported));
    }

    #[test]
    fn cache_dir_rule() {
        let dir = |pairs: &[(&str, &str)]| cache_dir_with(&env(pairs));
        assert_eq!(
            dir(&[("TIP_ENRICH_CACHE_DIR", "/c"), ("XDG_CACHE_HOME", "/x")]),
            Some("/c".into())
        );
        assert_eq!(dir(&[("TIP_ENRICH_CACHE_DIR", ""), ("HOME", "/h")]), None);
        assert_eq!(
            dir(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]),
            Some("/x/tip-enrich".into())
        );
        assert_eq!(
            dir(&[("XDG_CACHE_HOME", ""), ("HOME", "/h")]),
            Some("/h/.cache/tip-enrich".into())
        );
        assert_eq!(dir(&[]), None);
    }

    #[test]
    fn times_reads_numeric_fields_of_objects_only() {
        assert_eq!(
            times(br#"{"ip":"1.2.3.4","expires_at":1700000000000,"fetched_at":1600000000000}"#),
            Times {
                expires_at: Some(1_700_000_000_000),
                fetched_at: Some(1_600_000_000_000)
            }
        );
        assert_eq!(times(br#" {"expires_at": 12.9}"#).expires_at, Some(12));
        assert_eq!(times(br#"{"expires_at": -5}"#).expires_at, Some(-5));
        assert_eq!(
            times(br#"{"expires_at": 1e300}"#).expires_at,
            Some(i64::MAX)
        );
        assert_eq!(
            times(br#"{"expires_at": 18446744073709551615}"#).expires_at,
            Some(i64::MAX)
        );
        assert_eq!(
            times(br#"{"expires_at": "1700000000000"}"#),
            Times::default()
        );
        assert_eq!(times(br#"{"expires_at": null}"#), Times::default());
        assert_eq!(times(br#"[{"expires_at": 1}]"#), Times::default());
        assert_eq!(times(b"42"), Times::default());
        assert_eq!(times(b"{not json"), Times::default());
        assert_eq!(times(&[0xff, 0xfe]), Times::default());
        assert_eq!(
            times(br#"{"nested":{"expires_at":1},"x":[1,2]}"#),
            Times::default()
        );
    }

    #[test]
    fn counters_are_plain_decimal() {
        assert_eq!(parse_counter("k", b"0").unwrap(), 0);
        assert_eq!(
            parse_counter("k", b"18446744073709551615").unwrap(),
            u64::MAX
        );
        for bad in [
            &b""[..],
            b"-1",
            b"+1",
            b" 1",
            b"1.0",
            b"18446744073709551616",
            b"{}",
        ] {
            assert!(matches!(
                parse_counter("k", bad),
                Err(BackendError::NotACounter { .. })
            ));
        }
        assert!(matches!(
            add_counter("k", u64::MAX, 1),
            Err(BackendError::Overflow { .. })
        ));
        assert!(!BackendError::NotACounter { key: "k".into() }.is_store_failure());
    }
}
