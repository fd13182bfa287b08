//! The answer store on a Redis server, possibly shared with other
//! applications: only keys starting with [`KEY_PREFIX`] are ever listed,
//! counted or purged (with `SCAN … MATCH`, never `KEYS` or `FLUSHDB`).
//!
//! One connection behind a mutex, plain TCP (no TLS), connect and read/write
//! timeouts of about a second; after a failure the next operation connects
//! again. An answer's expiry is `SET key value PXAT ms`; a new counter gets
//! `COUNTER_TTL` in the same transaction as its `INCRBY`. Redis keeps no
//! store time, so an entry's age (for `purge` and `stats`) is its value's
//! `"fetched_at"`.

use std::sync::Mutex;
use std::time::Duration;

use redis::{
    Client, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisError, RedisResult,
};

use super::{
    Backend, BackendError, COUNTER_TTL, KEY_PREFIX, LIST_PAGE, SpecError, Stats, cutoff_ms, lock,
    now_ms, times,
};

/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long one command's write, and its answer, may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(1);

/// Keys one `SCAN` step asks for, and one `MGET`/`UNLINK` carries.
const BATCH: usize = 500;

/// Low bits of a `list_keys` cursor: how many keys of the `SCAN` step the
/// cursor names were already returned (a step can hold more than a page).
const SKIP_BITS: u32 = 20;

/// A Redis answer store.
pub struct RedisBackend {
    client: Client,
    /// `redis://host:port/db`.
    public: String,
    /// The password (as given and as decoded), taken out of every message.
    secrets: Vec<String>,
    conn: Mutex<Option<redis::Connection>>,
}

/// Parses a `redis://` URL into what the client connects with.
pub(crate) fn connection_info(url: &str) -> Result<ConnectionInfo, SpecError> {
    let bad = |reason: String| SpecError::BadRedisUrl {
        url: public_url(url),
        reason: scrub(&reason, &url_secrets(url, None)),
    };
    // No Nagle delay: every command is one small write awaiting its answer.
    let info = url
        .into_connection_info()
        .map_err(|e| bad(e.to_string()))?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    match info.addr() {
        ConnectionAddr::Tcp(host, _) if !host.is_empty() => Ok(info),
        ConnectionAddr::Tcp(..) => Err(bad("no host".to_string())),
        _ => Err(bad("not a TCP address".to_string())),
    }
}

/// `url` as `redis://host:port/db`, without user name or password (when it
/// does not parse: as given, less its user info, query and fragment).
pub(crate) fn public_url(url: &str) -> String {
    if let Ok(info) = url.into_connection_info()
        && let ConnectionAddr::Tcp(host, port) = info.addr()
    {
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        return format!("redis://{host}:{port}/{}", info.redis_settings().db());
    }
    let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at_checked(slash).unwrap_or((rest, "")),
        None => (rest, ""),
    };
    let host = authority.rsplit('@').next().unwrap_or_default();
    format!("{scheme}://{host}{path}")
}

/// The user info's password of `url` as written, and decoded by the client.
fn url_secrets(url: &str, info: Option<&ConnectionInfo>) -> Vec<String> {
    let mut secrets = Vec::new();
    if let Some(rest) = url.split_once("://").map(|(_, rest)| rest) {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            let password = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
            secrets.push(password.to_string());
        }
    }
    if let Some(password) = info.and_then(|i| i.redis_settings().password()) {
        secrets.push(password.to_string());
    }
    secrets.retain(|s| !s.is_empty());
    // Longest first, so a password containing another is taken out whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
}

/// `text` with every secret replaced by `***`.
fn scrub(text: &str, secrets: &[String]) -> String {
    secrets.iter().fold(text.to_string(), |text, secret| {
        text.replace(secret.as_str(), "***")
    })
}

/// Whether the connection is still usable after `error`: the server
/// answered (with an error), so the stream is in step.
fn connection_survives(error: &RedisError) -> bool {
    matches!(error.kind(), ErrorKind::Server(_) | ErrorKind::Extension)
}

/// `prefix` as a glob pattern matching the keys that start with it.
fn glob_prefix(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    pattern
}

/// One `SCAN` step: the next cursor and the UTF-8 keys matching `pattern`
/// (a key that is not UTF-8 is not one of ours).
fn scan_step(
    con: &mut redis::Connection,
    cursor: u64,
    pattern: &str,
    count: usize,
) -> RedisResult<(u64, Vec<String>)> {
    let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(count)
        .query(con)?;
    Ok((
        next,
        keys.into_iter()
            .filter_map(|k| String::from_utf8(k).ok())
            .collect(),
    ))
}

/// Every key matching `pattern`, a batch at a time, with its value (`None`
/// when it went meanwhile); `each` says whether to go on.
fn scan_values(
    con: &mut redis::Connection,
    pattern: &str,
    mut each: impl FnMut(&mut redis::Connection, Vec<(String, Option<Vec<u8>>)>) -> RedisResult<bool>,
) -> RedisResult<()> {
    let mut cursor = 0;
    loop {
        let (next, keys) = scan_step(con, cursor, pattern, BATCH)?;
        if !keys.is_empty() {
            let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(&keys).query(con)?;
            if !each(con, keys.into_iter().zip(values).collect())? {
                return Ok(());
            }
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// `UNLINK`s `keys`; how many there were.
fn unlink(con: &mut redis::Connection, keys: &[String]) -> RedisResult<u64> {
    if keys.is_empty() {
        return Ok(0);
    }
    redis::cmd("UNLINK").arg(keys).query(con)
}

impl RedisBackend {
    /// Connects to the server `url` names and checks it answers `PING`.
    pub fn open(url: &str) -> Result<RedisBackend, BackendError> {
        let backend = RedisBackend::lazy(url)?;
        backend.with_conn("PING", |con| redis::cmd("PING").query::<String>(con))?;
        Ok(backend)
    }

    /// A backend for `url` that connects on its first operation (for a host
    /// that should start while Redis is down).
    pub fn lazy(url: &str) -> Result<RedisBackend, BackendError> {
        let info = connection_info(url)?;
        let secrets = url_secrets(url, Some(&info));
        let client = Client::open(info).map_err(|e| BackendError::Redis {
            op: "open",
            message: scrub(&e.to_string(), &secrets),
        })?;
        Ok(RedisBackend {
            client,
            public: public_url(url),
            secrets,
            conn: Mutex::new(None),
        })
    }

    /// The server as `redis://host:port/db`.
    pub fn describe(&self) -> &str {
        &self.public
    }

    /// A [`BackendError`] for `error` during `op`, password-free.
    fn error(&self, op: &'static str, error: &RedisError) -> BackendError {
        BackendError::Redis {
            op,
            message: scrub(&error.to_string(), &self.secrets),
        }
    }

    /// Runs `f` on the connection, connecting first when there is none;
    /// drops the connection when `f` fails other than by a server answer.
    fn with_conn<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut redis::Connection) -> RedisResult<T>,
    ) -> Result<T, BackendError> {
        let mut slot = lock(&self.conn);
        if slot.is_none() {
            let con = self
                .client
                .get_connection_with_timeout(CONNECT_TIMEOUT)
                .map_err(|e| self.error("connect", &e))?;
            con.set_read_timeout(Some(IO_TIMEOUT))
                .and_then(|()| con.set_write_timeout(Some(IO_TIMEOUT)))
                .map_err(|e| self.error("connect", &e))?;
            *slot = Some(con);
        }
        let Some(con) = slot.as_mut() else {
            return Err(BackendError::Redis {
                op,
                message: "no connection".to_string(),
            });
        };
        f(con).map_err(|e| {
            if !connection_survives(&e) {
                *slot = None;
            }
            self.error(op, &e)
        })
    }
}

impl Backend for RedisBackend {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        self.with_conn("GET", |con| redis::cmd("GET").arg(key).query(con))
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), BackendError> {
        match times(value).expires_at {
            // Already expired: stored and gone at once.
            Some(at) if at <= now_ms() => self.delete(key),
            Some(at) => self.with_conn("SET", |con| {
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("PXAT")
                    .arg(at)
                    .query(con)
            }),
            None => self.with_conn("SET", |con| {
                redis::cmd("SET").arg(key).arg(value).query(con)
            }),
        }
    }

    fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.with_conn("DEL", |con| redis::cmd("DEL").arg(key).query::<i64>(con))
            .map(drop)
    }

    fn exists(&self, key: &str) -> Result<bool, BackendError> {
        self.with_conn("EXISTS", |con| {
            redis::cmd("EXISTS").arg(key).query::<i64>(con)
        })
        .map(|n| n > 0)
    }

    fn increment(&self, key: &str, delta: u64) -> Result<u64, BackendError> {
        let overflow = || BackendError::Overflow {
            key: key.to_string(),
            delta,
        };
        let by = i64::try_from(delta).map_err(|_| overflow())?;
        let ttl = u64::try_from(COUNTER_TTL.as_millis()).unwrap_or(u64::MAX);
        // One transaction: a new key is made at 0 with its expiry (NX leaves
        // an existing one alone), then counted up; INCRBY keeps the expiry.
        let result = self.with_conn("INCRBY", |con| {
            redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(key)
                .arg(0)
                .arg("NX")
                .arg("PX")
                .arg(ttl)
                .ignore()
                .cmd("INCRBY")
                .arg(key)
                .arg(by)
                .query::<(i64,)>(con)
        });
        match result {
            Ok((n,)) => u64::try_from(n).map_err(|_| BackendError::NotACounter {
                key: key.to_string(),
            }),
            Err(BackendError::Redis { message, .. }) if message.contains("overflow") => {
                Err(overflow())
            }
            Err(BackendError::Redis { message, .. })
                if message.contains("not an integer") || message.contains("WRONGTYPE") =>
            {
                Err(BackendError::NotACounter {
                    key: key.to_string(),
                })
            }
            Err(e) => Err(e),
        }
    }

    fn list_keys(&self, cursor: Option<u64>) -> Result<(Vec<String>, Option<u64>), BackendError> {
        let cursor = cursor.unwrap_or(0);
        let step = cursor >> SKIP_BITS;
        let skip = usize::try_from(cursor & ((1 << SKIP_BITS) - 1)).unwrap_or(usize::MAX);
        let pattern = glob_prefix(KEY_PREFIX);
        let (next, keys) =
            self.with_conn("SCAN", |con| scan_step(con, step, &pattern, LIST_PAGE))?;
        let rest: Vec<String> = keys.into_iter().skip(skip).collect();
        if rest.len() > LIST_PAGE {
            let done = u64::try_from(skip + LIST_PAGE).unwrap_or(u64::MAX);
            if done >= 1 << SKIP_BITS {
                return Err(BackendError::Redis {
                    op: "SCAN",
                    message: "a SCAN step returned too many keys to page through".to_string(),
                });
            }
            let page = rest.into_iter().take(LIST_PAGE).collect();
            return Ok((page, Some(step << SKIP_BITS | done)));
        }
        if next == 0 {
            return Ok((rest, None));
        }
        if next >= 1 << (64 - SKIP_BITS) {
            return Err(BackendError::Redis {
                op: "SCAN",
                message: format!("the SCAN cursor {next} is too large to page with"),
            });
        }
        Ok((rest, Some(next << SKIP_BITS)))
    }

    fn stats(&self) -> Result<Stats, BackendError> {
        let mut stats = Stats::new(format!("redis {}", self.public));
        self.with_conn("SCAN", |con| {
            scan_values(con, &glob_prefix(KEY_PREFIX), |_, batch| {
                for (key, value) in batch {
                    if let Some(value) = value {
                        stats.count(&key, &value, times(&value).fetched_at);
                    }
                }
                Ok(true)
            })
        })?;
        Ok(stats)
    }

    fn scan_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, BackendError> {
        // Only our keys, whatever the prefix asks for.
        let prefix = if prefix.starts_with(KEY_PREFIX) {
            prefix
        } else if KEY_PREFIX.starts_with(prefix) {
            KEY_PREFIX
        } else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        if limit == 0 {
            return Ok(found);
        }
        self.with_conn("SCAN", |con| {
            scan_values(con, &glob_prefix(prefix), |_, batch| {
                for (key, value) in batch {
                    if let Some(value) = value {
                        found.push((key, value));
                        if found.len() == limit {
                            return Ok(false);
                        }
                    }
                }
                Ok(true)
            })
        })?;
        found.sort();
        Ok(found)
    }

    fn purge(&self, older_than: Option<Duration>) -> Result<u64, BackendError> {
        let pattern = glob_prefix(KEY_PREFIX);
        let mut deleted = 0;
        match older_than {
            None => self.with_conn("UNLINK", |con| {
                let mut cursor = 0;
                loop {
                    let (next, keys) = scan_step(con, cursor, &pattern, BATCH)?;
                    deleted += unlink(con, &keys)?;
                    if next == 0 {
                        return Ok(());
                    }
                    cursor = next;
                }
            })?,
            Some(age) => {
                let cutoff = cutoff_ms(age);
                self.with_conn("UNLINK", |con| {
                    scan_values(con, &pattern, |con, batch| {
                        let old: Vec<String> = batch
                            .into_iter()
                            .filter(|(_, value)| {
                                value
                                    .as_deref()
                                    .and_then(|v| times(v).fetched_at)
                                    .is_some_and(|at| at < cutoff)
                            })
                            .map(|(key, _)| key)
                            .collect();
                        deleted += unlink(con, &old)?;
                        Ok(true)
                    })
                })?;
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_lose_the_password() {
        let url = "redis://user:p%40ss@127.0.0.1:1/0";
        let info = connection_info(url).unwrap();
        let secrets = url_secrets(url, Some(&info));
        assert_eq!(secrets, vec!["p%40ss".to_string(), "p@ss".to_string()]);
        assert_eq!(
            scrub("AUTH p@ss failed; url had p%40ss", &secrets),
            "AUTH *** failed; url had ***"
        );
        assert_eq!(public_url(url), "redis://127.0.0.1:1/0");
    }

    #[test]
    fn glob_escapes_pattern_characters() {
        assert_eq!(glob_prefix("tip-enrich:"), "tip-enrich:*");
        assert_eq!(glob_prefix("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\*");
    }
}
