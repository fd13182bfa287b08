//! The answer store in a SQLite file, shared by every process that opens it.
//!
//! WAL mode (readers never wait for a writer), `synchronous=NORMAL`, a busy
//! timeout of [`BUSY_TIMEOUT`]; every write is one statement or an
//! `IMMEDIATE` transaction, so `increment` is atomic across processes. The
//! file is created mode 0600 (its `-wal`/`-shm` files get the same mode).
//! Past the size bound the oldest entries go first, down to about 90 % of it.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use super::{
    Backend, BackendError, LIST_PAGE, Stats, add_counter, counter_ttl_ms, cutoff_ms, live, lock,
    now_ms, parse_counter, times,
};

/// How long an operation waits for another process's lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// The schema this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// Expired rows one `set` deletes on the side.
const EXPIRED_SWEEP: i64 = 64;

/// Rows one eviction round deletes.
const EVICT_BATCH: i64 = 128;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL,
    stored_at INTEGER NOT NULL,
    expires_at INTEGER
);
CREATE INDEX IF NOT EXISTS entries_stored_at ON entries (stored_at);
CREATE INDEX IF NOT EXISTS entries_expires_at ON entries (expires_at) WHERE expires_at IS NOT NULL;
";

/// The condition of a live row (`?now` bound as the named parameter).
const LIVE: &str = "(expires_at IS NULL OR expires_at > :now)";

/// A SQLite answer store: one connection behind a mutex.
pub struct SqliteBackend {
    path: PathBuf,
    max_bytes: u64,
    conn: Mutex<Connection>,
}

impl SqliteBackend {
    /// Opens (creating if missing, with its directory) the store at `path`,
    /// bounded to `max_bytes`. Fails on a file that is not a database, one
    /// written by a newer schema, a place it cannot write, or a lock held
    /// past [`BUSY_TIMEOUT`].
    pub fn open(path: &Path, max_bytes: u64) -> Result<SqliteBackend, BackendError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|source| BackendError::Io {
                    what: "cannot create the directory",
                    path: parent.to_path_buf(),
                    source,
                })?;
        }
        // Made here, 0600, before SQLite opens it (SQLite would use the umask).
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|source| BackendError::Io {
                what: "cannot open",
                path: path.to_path_buf(),
                source,
            })?;
        let mode = file
            .metadata()
            .map_err(|source| BackendError::Io {
                what: "cannot stat",
                path: path.to_path_buf(),
                source,
            })?
            .permissions()
            .mode()
            & 0o777;
        drop(file);
        // No SQLITE_OPEN_CREATE (the file is there) and no URI parsing of the path.
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql("open"))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql("open"))?;
        init(&mut conn, path)?;
        sidecar_modes(path, mode)?;
        Ok(SqliteBackend {
            path: path.to_path_buf(),
            max_bytes,
            conn: Mutex::new(conn),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of the database's pages in use (free pages not counted): what
    /// the size bound is kept on.
    pub fn used_bytes(&self) -> Result<u64, BackendError> {
        used_bytes(&lock(&self.conn))
    }

    /// Deletes the oldest rows (all but `keep`) until the database is under
    /// 90 % of the bound, when it is over the bound.
    fn enforce_bound(&self, conn: &mut Connection, keep: &str) -> Result<(), BackendError> {
        if used_bytes(conn)? <= self.max_bytes {
            return Ok(());
        }
        let target = self.max_bytes / 10 * 9;
        let mut evicted = false;
        while used_bytes(conn)? > target {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql("evict"))?;
            let expired = tx
                .execute(
                    "DELETE FROM entries WHERE expires_at IS NOT NULL AND expires_at <= ?1",
                    [now_ms()],
                )
                .map_err(sql("evict"))?;
            let oldest = tx
                .execute(
                    "DELETE FROM entries WHERE rowid IN (
                         SELECT rowid FROM entries WHERE key <> ?1
                         ORDER BY stored_at, rowid LIMIT ?2)",
                    params![keep, EVICT_BATCH],
                )
                .map_err(sql("evict"))?;
            tx.commit().map_err(sql("evict"))?;
            evicted = true;
            if expired == 0 && oldest == 0 {
                break; // Only `keep` is left.
            }
        }
        if evicted {
            give_back_pages(conn)?;
        }
        Ok(())
    }
}

/// Maps a rusqlite error to a [`BackendError`] for `op`.
fn sql(op: &'static str) -> impl Fn(rusqlite::Error) -> BackendError {
    move |source| BackendError::Sqlite { op, source }
}

/// Whether `error` is SQLITE_BUSY / SQLITE_LOCKED.
fn busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Journal, synchronous mode and schema of a freshly opened connection.
fn init(conn: &mut Connection, path: &Path) -> Result<(), BackendError> {
    // Takes effect only on a new, empty database: it lets purge and
    // eviction give pages back to the file system.
    conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")
        .map_err(sql("open"))?;
    // Switching to WAL needs a moment alone with the file; when many
    // processes open a new file at once, wait as the busy timeout would.
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |row| {
            row.get::<_, String>(0)
        }) {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => break,
            Ok(mode) => {
                return Err(BackendError::NoWal {
                    path: path.to_path_buf(),
                    mode,
                });
            }
            Err(e) if busy(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(sql("open")(e)),
        }
    }
    conn.execute_batch("PRAGMA synchronous = NORMAL")
        .map_err(sql("open"))?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("open"))?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(sql("open"))?;
    if version > SCHEMA_VERSION {
        return Err(BackendError::SchemaTooNew {
            path: path.to_path_buf(),
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    if version < SCHEMA_VERSION {
        tx.execute_batch(SCHEMA).map_err(sql("create the schema"))?;
        tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
            .map_err(sql("create the schema"))?;
    }
    tx.commit().map_err(sql("open"))
}

/// Gives the `-wal` and `-shm` files no more access than the database
/// file has (SQLite does so itself; this makes sure of it).
fn sidecar_modes(path: &Path, mode: u32) -> Result<(), BackendError> {
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let sidecar = PathBuf::from(name);
        let Ok(meta) = std::fs::metadata(&sidecar) else {
            continue; // Not there (yet): SQLite makes it with the file's mode.
        };
        if meta.permissions().mode() & 0o777 & !mode != 0 {
            std::fs::set_permissions(&sidecar, std::fs::Permissions::from_mode(mode)).map_err(
                |source| BackendError::Io {
                    what: "cannot restrict the mode of",
                    path: sidecar.clone(),
                    source,
                },
            )?;
        }
    }
    Ok(())
}

/// Bytes of the pages in use.
fn used_bytes(conn: &Connection) -> Result<u64, BackendError> {
    let pragma = |name: &str| -> Result<u64, BackendError> {
        conn.query_row(&format!("PRAGMA {name}"), [], |row| row.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(sql("measure"))
    };
    let pages = pragma("page_count")?.saturating_sub(pragma("freelist_count")?);
    Ok(pages.saturating_mul(pragma("page_size")?))
}

/// Returns free pages to the file system (a database made before
/// `auto_vacuum` was set keeps them, harmlessly).
fn give_back_pages(conn: &Connection) -> Result<(), BackendError> {
    let mut stmt = conn
        .prepare("PRAGMA incremental_vacuum")
        .map_err(sql("vacuum"))?;
    let mut rows = stmt.query([]).map_err(sql("vacuum"))?;
    while rows.next().map_err(sql("vacuum"))?.is_some() {}
    Ok(())
}

/// A `u64` cursor as a rowid (`None`: past every rowid).
fn rowid_after(cursor: Option<u64>) -> Option<i64> {
    i64::try_from(cursor.unwrap_or(0)).ok()
}

impl Backend for SqliteBackend {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let conn = lock(&self.conn);
        conn.query_row(
            &format!("SELECT value FROM entries WHERE key = :key AND {LIVE}"),
            rusqlite::named_params! {":key": key, ":now": now_ms()},
            |row| row.get(0),
        )
        .optional()
        .map_err(sql("get"))
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), BackendError> {
        let mut conn = lock(&self.conn);
        let now = now_ms();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("set"))?;
        tx.execute(
            "INSERT INTO entries (key, value, stored_at, expires_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (key) DO UPDATE SET
                 value = excluded.value, stored_at = excluded.stored_at,
                 expires_at = excluded.expires_at",
            params![key, value, now, times(value).expires_at],
        )
        .map_err(sql("set"))?;
        // Expired rows go on the side, a few at a time.
        tx.execute(
            "DELETE FROM entries WHERE rowid IN (
                 SELECT rowid FROM entries WHERE expires_at IS NOT NULL AND expires_at <= ?1
                 LIMIT ?2)",
            params![now, EXPIRED_SWEEP],
        )
        .map_err(sql("set"))?;
        tx.commit().map_err(sql("set"))?;
        self.enforce_bound(&mut conn, key)
    }

    fn delete(&self, key: &str) -> Result<(), BackendError> {
        let conn = lock(&self.conn);
        conn.execute("DELETE FROM entries WHERE key = ?1", [key])
            .map(drop)
            .map_err(sql("delete"))
    }

    fn exists(&self, key: &str) -> Result<bool, BackendError> {
        let conn = lock(&self.conn);
        conn.query_row(
            &format!("SELECT EXISTS (SELECT 1 FROM entries WHERE key = :key AND {LIVE})"),
            rusqlite::named_params! {":key": key, ":now": now_ms()},
            |row| row.get(0),
        )
        .map_err(sql("exists"))
    }

    fn increment(&self, key: &str, delta: u64) -> Result<u64, BackendError> {
        let mut conn = lock(&self.conn);
        let now = now_ms();
        // IMMEDIATE: the write lock is taken before the read, so no other
        // process's increment lands between them.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("increment"))?;
        let row: Option<(Vec<u8>, Option<i64>)> = tx
            .query_row(
                "SELECT value, expires_at FROM entries WHERE key = ?1",
                [key],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(sql("increment"))?;
        let next = match row {
            Some((value, expires_at)) if live(expires_at, now) => {
                let next = add_counter(key, parse_counter(key, &value)?, delta)?;
                tx.execute(
                    "UPDATE entries SET value = ?2 WHERE key = ?1",
                    params![key, next.to_string().as_bytes()],
                )
                .map_err(sql("increment"))?;
                next
            }
            // Absent or expired: a new counter, with its own expiry.
            _ => {
                tx.execute(
                    "INSERT INTO entries (key, value, stored_at, expires_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (key) DO UPDATE SET
                         value = excluded.value, stored_at = excluded.stored_at,
                         expires_at = excluded.expires_at",
                    params![
                        key,
                        delta.to_string().as_bytes(),
                        now,
                        now.saturating_add(counter_ttl_ms())
                    ],
                )
                .map_err(sql("increment"))?;
                delta
            }
        };
        tx.commit().map_err(sql("increment"))?;
        Ok(next)
    }

    fn list_keys(&self, cursor: Option<u64>) -> Result<(Vec<String>, Option<u64>), BackendError> {
        let Some(after) = rowid_after(cursor) else {
            return Ok((Vec::new(), None));
        };
        let conn = lock(&self.conn);
        let mut stmt = conn
            .prepare(&format!(
                "SELECT rowid, key FROM entries WHERE rowid > :after AND {LIVE}
                 ORDER BY rowid LIMIT :limit"
            ))
            .map_err(sql("list keys"))?;
        let rows = stmt
            .query_map(
                rusqlite::named_params! {
                    ":after": after, ":now": now_ms(),
                    ":limit": i64::try_from(LIST_PAGE + 1).unwrap_or(i64::MAX),
                },
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)),
            )
            .map_err(sql("list keys"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("list keys"))?;
        let more = rows.len() > LIST_PAGE;
        let page: Vec<(i64, String)> = rows.into_iter().take(LIST_PAGE).collect();
        let next = match page.last() {
            Some((rowid, _)) if more => u64::try_from(*rowid).ok(),
            _ => None,
        };
        Ok((page.into_iter().map(|(_, key)| key).collect(), next))
    }

    fn stats(&self) -> Result<Stats, BackendError> {
        let conn = lock(&self.conn);
        let (entries, bytes, oldest) = conn
            .query_row(
                &format!(
                    "SELECT COUNT(*), COALESCE(SUM(LENGTH(CAST(key AS BLOB)) + LENGTH(value)), 0),
                            MIN(stored_at)
                     FROM entries WHERE {LIVE}"
                ),
                rusqlite::named_params! {":now": now_ms()},
                |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, Option<i64>>(2)?,
                    ))
                },
            )
            .map_err(sql("stats"))?;
        Ok(Stats {
            entries: u64::try_from(entries).unwrap_or(0),
            bytes: u64::try_from(bytes).unwrap_or(0),
            oldest_stored_at_ms: oldest.and_then(|t| u64::try_from(t).ok()),
            backend: format!("sqlite {}", self.path.display()),
        })
    }

    fn scan_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, BackendError> {
        let conn = lock(&self.conn);
        // The primary key's order: from `prefix` on, until a key without it.
        let mut stmt = conn
            .prepare("SELECT key, value, expires_at FROM entries WHERE key >= ?1 ORDER BY key")
            .map_err(sql("scan"))?;
        let mut rows = stmt.query([prefix]).map_err(sql("scan"))?;
        let now = now_ms();
        let mut found = Vec::new();
        while found.len() < limit {
            let Some(row) = rows.next().map_err(sql("scan"))? else {
                break;
            };
            let key: String = row.get(0).map_err(sql("scan"))?;
            if !key.starts_with(prefix) {
                break;
            }
            if live(row.get(2).map_err(sql("scan"))?, now) {
                found.push((key, row.get(1).map_err(sql("scan"))?));
            }
        }
        Ok(found)
    }

    fn purge(&self, older_than: Option<Duration>) -> Result<u64, BackendError> {
        let mut conn = lock(&self.conn);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("purge"))?;
        // The expired go uncounted (they were gone already, as far as
        // anyone could see); then the live ones old enough.
        tx.execute(
            "DELETE FROM entries WHERE expires_at IS NOT NULL AND expires_at <= ?1",
            [now_ms()],
        )
        .map_err(sql("purge"))?;
        let deleted = match older_than {
            None => tx.execute("DELETE FROM entries", []),
            Some(age) => tx.execute("DELETE FROM entries WHERE stored_at < ?1", [cutoff_ms(age)]),
        }
        .map_err(sql("purge"))?;
        tx.commit().map_err(sql("purge"))?;
        give_back_pages(&conn)?;
        Ok(u64::try_from(deleted).unwrap_or(0))
    }
}
