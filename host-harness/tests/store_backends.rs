//! The answer store's backends against real things: SQLite files in temp
//! directories, `redis-server` processes, the memory map. Run with
//! `cargo test -p host-harness --test store_backends`.
//!
//! Two tests re-run this binary as a child (`current_exe`, the same test
//! name, an environment variable saying what to do): the one with 16
//! processes incrementing one SQLite file, the read-only directory one (as
//! user `nobody` when the tests run as root, who can write anywhere) and the
//! full disk one (under a file size limit, with SIGXFSZ ignored, so a write
//! past it fails as on a full disk).

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::redis::RedisServer;
use host_harness::store::{
    self, Backend, BackendError, Guarded, KEY_PREFIX, LIST_PAGE, MemoryBackend, RedisBackend,
    SqliteBackend, StoreOptions, StoreSpec, WarningSink,
};

/// Set in a child run of [`sqlite_increment_is_atomic_across_16_processes`]:
/// the file to increment.
const WORKER_ENV: &str = "STORE_BACKENDS_INCREMENT_WORKER";

/// Set in a child run of [`sqlite_read_only_directory_fails_cleanly`]: the
/// directory that is read-only for the child.
const READ_ONLY_ENV: &str = "STORE_BACKENDS_READ_ONLY_DIR";

/// Set in a child run of [`sqlite_full_disk_is_an_error`]: the directory of
/// the file that cannot grow.
const FULL_ENV: &str = "STORE_BACKENDS_FULL_DIR";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// An answer as the component stores it.
fn answer(ip: &str, fetched_at: i64, expires_at: i64) -> Vec<u8> {
    format!(
        r#"{{"ip":"{ip}","verdict":"clean","fetched_at":{fetched_at},"expires_at":{expires_at}}}"#
    )
    .into_bytes()
}

fn key(name: &str) -> String {
    format!("{KEY_PREFIX}{name}")
}

/// Sleeps until the clock is past `at` (unix ms).
fn sleep_past(at: i64) {
    while now_ms() <= at + 1 {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sqlite_in(dir: &Path) -> SqliteBackend {
    SqliteBackend::open(&dir.join("answers.sqlite"), store::DEFAULT_MAX_BYTES).unwrap()
}

/// Every key `list_keys` gives, page by page (each page within the bound).
fn all_keys(backend: &dyn Backend) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut cursor = None;
    for _ in 0..100_000 {
        let (page, next) = backend.list_keys(cursor).unwrap();
        assert!(page.len() <= LIST_PAGE, "a page of {}", page.len());
        keys.extend(page);
        match next {
            Some(next) => cursor = Some(next),
            None => return keys,
        }
    }
    panic!("list_keys never ended");
}

/// What every backend does alike.
fn exercise(backend: &dyn Backend) {
    let now = now_ms();
    let a = key("ip:192.0.2.1");
    assert_eq!(backend.get(&a).unwrap(), None);
    assert!(!backend.exists(&a).unwrap());

    // set / get / exists / overwrite / delete
    let fresh = answer("192.0.2.1", now, now + 3_600_000);
    backend.set(&a, &fresh).unwrap();
    assert_eq!(backend.get(&a).unwrap(), Some(fresh.clone()));
    assert!(backend.exists(&a).unwrap());
    backend.set(&a, b"plain bytes, no expiry").unwrap();
    assert_eq!(
        backend.get(&a).unwrap().as_deref(),
        Some(&b"plain bytes, no expiry"[..])
    );
    backend.delete(&a).unwrap();
    assert_eq!(backend.get(&a).unwrap(), None);
    assert!(!backend.exists(&a).unwrap());
    backend.delete(&a).unwrap(); // absent: fine

    // increment: from 0, decimal text, refuses a non-counter
    let c = key("lease:test");
    assert_eq!(backend.increment(&c, 5).unwrap(), 5);
    assert_eq!(backend.increment(&c, 0).unwrap(), 5);
    assert_eq!(backend.increment(&c, 37).unwrap(), 42);
    assert_eq!(backend.get(&c).unwrap().as_deref(), Some(&b"42"[..]));
    backend.set(&c, b"100").unwrap();
    assert_eq!(backend.increment(&c, 1).unwrap(), 101);
    backend.set(&a, &fresh).unwrap();
    let err = backend.increment(&a, 1).unwrap_err();
    assert!(
        matches!(err, BackendError::NotACounter { .. }),
        "{err:?} {err}"
    );
    assert!(!err.is_store_failure());
    assert_eq!(backend.get(&a).unwrap(), Some(fresh.clone()));
    backend.delete(&c).unwrap();

    // expiry: in the past reads as absent; a few hundred ms ahead, then gone
    let stale = key("ip:192.0.2.2");
    backend
        .set(&stale, &answer("192.0.2.2", now - 10_000, now - 1_000))
        .unwrap();
    assert_eq!(backend.get(&stale).unwrap(), None);
    assert!(!backend.exists(&stale).unwrap());
    let soon = key("ip:192.0.2.3");
    let soon_at = now_ms() + 400;
    let soon_value = answer("192.0.2.3", now, soon_at);
    backend.set(&soon, &soon_value).unwrap();
    let (seen, there) = (backend.get(&soon).unwrap(), backend.exists(&soon).unwrap());
    // Live when read before its time (a stalled machine may read it after).
    if now_ms() < soon_at {
        assert_eq!(seen, Some(soon_value));
        assert!(there);
    }
    sleep_past(soon_at);
    assert_eq!(backend.get(&soon).unwrap(), None);
    assert!(!backend.exists(&soon).unwrap());
    // An expired counter starts again at 0.
    let expired_counter = key("lease:expired");
    backend
        .set(
            &expired_counter,
            br#"{"expires_at": 1, "note": "not a counter, but expired"}"#,
        )
        .unwrap();
    assert_eq!(backend.increment(&expired_counter, 3).unwrap(), 3);
    backend.delete(&expired_counter).unwrap();

    // scan_prefix: live entries with the prefix, up to the limit
    for i in 0..5 {
        let at = now_ms();
        backend
            .set(
                &key(&format!("scan:{i}")),
                &answer(&format!("198.51.100.{i}"), at, at + 3_600_000),
            )
            .unwrap();
    }
    backend
        .set(&key("scan:9"), &answer("198.51.100.9", now, now - 1))
        .unwrap();
    backend.set(&key("scanner"), b"not under scan:").unwrap();
    let scanned = backend.scan_prefix(&key("scan:"), 100).unwrap();
    let names: Vec<&str> = scanned.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        (0..5)
            .map(|i| format!("{KEY_PREFIX}scan:{i}"))
            .collect::<Vec<_>>()
    );
    assert!(
        scanned
            .iter()
            .all(|(_, v)| v.starts_with(br#"{"ip":"198.51.100."#))
    );
    assert_eq!(backend.scan_prefix(&key("scan:"), 2).unwrap().len(), 2);
    assert!(backend.scan_prefix(&key("scan:"), 0).unwrap().is_empty());
    assert!(
        backend
            .scan_prefix(&key("nothing:"), 10)
            .unwrap()
            .is_empty()
    );

    // list_keys: pages of at most LIST_PAGE, all live keys, expired ones not
    let many: BTreeSet<String> = (0..2_345).map(|i| key(&format!("many:{i:05}"))).collect();
    for k in &many {
        backend.set(k, b"1").unwrap();
    }
    let listed = all_keys(backend);
    let mut expected = many.clone();
    expected.extend([a.clone(), key("scanner")]);
    expected.extend((0..5).map(|i| key(&format!("scan:{i}"))));
    assert_eq!(listed, expected);
    assert!(!listed.contains(&stale) && !listed.contains(&key("scan:9")));

    // stats: live entries of ours, their bytes, the oldest time
    let stats = backend.stats().unwrap();
    assert_eq!(stats.entries, expected.len() as u64);
    let bytes: u64 = expected
        .iter()
        .map(|k| (k.len() + backend.get(k).unwrap().unwrap().len()) as u64)
        .sum();
    assert_eq!(stats.bytes, bytes);
    let oldest = stats.oldest_stored_at_ms.unwrap();
    assert!(oldest >= (now - 1_000) as u64 && oldest <= now_ms() as u64);

    // purge: a day's age leaves the live ones, None takes all
    assert_eq!(
        backend.purge(Some(Duration::from_secs(86_400))).unwrap(),
        0,
        "nothing is a day old"
    );
    assert_eq!(backend.stats().unwrap().entries, expected.len() as u64);
    assert_eq!(backend.purge(None).unwrap(), expected.len() as u64);
    let empty = backend.stats().unwrap();
    assert_eq!((empty.entries, empty.bytes), (0, 0));
    assert_eq!(empty.oldest_stored_at_ms, None);
    assert_eq!(backend.list_keys(None).unwrap(), (vec![], None));
}

/// 16 threads, each with its own backend from `open`, 200 increments each.
fn increment_from_16_threads(open: impl Fn() -> Arc<dyn Backend> + Sync) {
    let k = key("lease:threads");
    std::thread::scope(|scope| {
        for _ in 0..16 {
            let backend = open();
            let k = &k;
            scope.spawn(move || {
                for _ in 0..200 {
                    backend.increment(k, 1).unwrap();
                }
            });
        }
    });
    assert_eq!(open().get(&k).unwrap().as_deref(), Some(&b"3200"[..]));
}

/// A sink that keeps the warning lines.
fn captured() -> (WarningSink, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let keep = lines.clone();
    (
        Arc::new(move |line: &str| keep.lock().unwrap().push(line.to_string())),
        lines,
    )
}

/// This test binary, running `test` alone, with `env` set.
fn rerun(test: &str, env: (&str, &Path)) -> Command {
    rerun_as(&std::env::current_exe().unwrap(), test, env)
}

/// [`rerun`] with the binary at `exe` (a link to this one).
fn rerun_as(exe: &Path, test: &str, env: (&str, &Path)) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env.0, env.1);
    cmd
}

/// The raw SQLite file, as another program would see it.
fn raw(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn
}

/// Another connection to the file, in the middle of a write transaction
/// (`ROLLBACK` it to let go).
fn hold_write_lock(path: &Path) -> rusqlite::Connection {
    let other = raw(path);
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    other
        .execute(
            "INSERT INTO entries (key, value, stored_at) VALUES ('other', x'00', 0)",
            [],
        )
        .unwrap();
    other
}

/// Bytes that are no SQLite database (a fixed xorshift stream).
fn garbage(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

// ---------------------------------------------------------------- SQLite

#[test]
fn sqlite_does_everything() {
    let dir = tempfile::tempdir().unwrap();
    let backend = sqlite_in(dir.path());
    exercise(&backend);
    assert_eq!(
        backend.stats().unwrap().backend,
        format!("sqlite {}", dir.path().join("answers.sqlite").display())
    );
}

#[test]
fn sqlite_keeps_expiry_and_counter_lifetime_in_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("answers.sqlite");
    let backend = SqliteBackend::open(&path, store::DEFAULT_MAX_BYTES).unwrap();
    let now = now_ms();
    backend
        .set(&key("a"), &answer("192.0.2.1", now, now + 60_000))
        .unwrap();
    backend.set(&key("b"), b"no expiry").unwrap();
    backend.increment(&key("c"), 7).unwrap();
    let conn = raw(&path);
    let row = |k: &str| -> (i64, Option<i64>, Vec<u8>) {
        conn.query_row(
            "SELECT stored_at, expires_at, value FROM entries WHERE key = ?1",
            [k],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap()
    };
    assert_eq!(row(&key("a")).1, Some(now + 60_000));
    assert_eq!(row(&key("b")).1, None);
    let (stored, expires, value) = row(&key("c"));
    assert_eq!(expires, Some(stored + 3_600_000));
    assert_eq!(value, b"7");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, store::sqlite::SCHEMA_VERSION);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    // Reopening keeps what was there.
    drop(backend);
    let again = SqliteBackend::open(&path, store::DEFAULT_MAX_BYTES).unwrap();
    assert_eq!(
        again.get(&key("b")).unwrap().as_deref(),
        Some(&b"no expiry"[..])
    );
    assert_eq!(again.increment(&key("c"), 1).unwrap(), 8);
}

#[test]
fn sqlite_purge_by_age_uses_the_store_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("answers.sqlite");
    let backend = SqliteBackend::open(&path, store::DEFAULT_MAX_BYTES).unwrap();
    let now = now_ms();
    for name in ["old1", "old2", "new"] {
        backend
            .set(&key(name), &answer("192.0.2.1", now, now + 86_400_000))
            .unwrap();
    }
    // Two of them stored two hours ago, as another process would have.
    raw(&path)
        .execute(
            "UPDATE entries SET stored_at = stored_at - 7200000 WHERE key LIKE '%old%'",
            [],
        )
        .unwrap();
    // The rows were stored at or before `after` (not `now`: the sets take time).
    let after = now_ms();
    let stats = backend.stats().unwrap();
    assert!(stats.oldest_stored_at_ms.unwrap() <= (after - 7_200_000) as u64);
    assert_eq!(backend.purge(Some(Duration::from_secs(3_600))).unwrap(), 2);
    assert_eq!(backend.get(&key("old1")).unwrap(), None);
    assert!(backend.exists(&key("new")).unwrap());
}

#[test]
fn sqlite_increment_is_atomic_across_16_threads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("answers.sqlite");
    SqliteBackend::open(&path, store::DEFAULT_MAX_BYTES).unwrap();
    // Each thread its own connection: the file's locking, not our mutex.
    increment_from_16_threads(|| {
        Arc::new(SqliteBackend::open(&path, store::DEFAULT_MAX_BYTES).unwrap())
    });
}

#[test]
fn sqlite_increment_is_atomic_across_16_processes() {
    const TEST: &str = "sqlite_increment_is_atomic_across_16_processes";
    if let Some(path) = std::env::var_os(WORKER_ENV) {
        // A child: open the file (maybe while the others create it) and count.
        let backend = SqliteBackend::open(Path::new(&path), store::DEFAULT_MAX_BYTES).unwrap();
        for _ in 0..200 {
            backend.increment(&key("lease:processes"), 1).unwrap();
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Not created beforehand: the 16 processes make the file between them.
    let path = dir.path().join("new").join("answers.sqlite");
    let children: Vec<_> = (0..16)
        .map(|_| {
            rerun(TEST, (WORKER_ENV, &path))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a worker failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let backend = SqliteBackend::open(&path, store::DEFAULT_MAX_BYTES).unwrap();
    assert_eq!(
        backend.get(&key("lease:processes")).unwrap().as_deref(),
        Some(&b"3200"[..])
    );
}

#[test]
fn sqlite_file_and_sidecars_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a").join("b").join("answers.sqlite");
    let backend = SqliteBackend::open(&path, store::DEFAULT_MAX_BYTES).unwrap();
    backend.set(&key("x"), b"1").unwrap();
    assert!(path.parent().unwrap().is_dir(), "the directories are made");
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        let mode = std::fs::metadata(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{} is {:o}", file.display(), mode);
    }
}

#[test]
fn sqlite_corrupt_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    // Random bytes: SQLite says so on open.
    let noise = dir.path().join("noise.sqlite");
    std::fs::write(&noise, garbage(16 * 1024)).unwrap();
    let err = SqliteBackend::open(&noise, store::DEFAULT_MAX_BYTES)
        .err()
        .expect("random bytes are no database");
    assert!(err.to_string().contains("not a database"), "{err}");
    assert!(store::open(&StoreSpec::Sqlite(noise.clone()), &StoreOptions::default()).is_err());

    // A real database whose pages after the first are overwritten: the
    // header reads fine, so the failure may come from open or a first op.
    let mangled = dir.path().join("mangled.sqlite");
    {
        let backend = SqliteBackend::open(&mangled, store::DEFAULT_MAX_BYTES).unwrap();
        for i in 0..300 {
            backend.set(&key(&format!("k{i}")), &[b'x'; 500]).unwrap();
        }
    }
    let mut bytes = std::fs::read(&mangled).unwrap();
    assert!(bytes.len() > 8192);
    let tail = garbage(bytes.len() - 4096);
    bytes[4096..].copy_from_slice(&tail);
    std::fs::write(&mangled, bytes).unwrap();
    let failed = match SqliteBackend::open(&mangled, store::DEFAULT_MAX_BYTES) {
        Err(_) => true,
        Ok(backend) => {
            backend.get(&key("k1")).is_err()
                || backend.set(&key("k1"), b"y").is_err()
                || backend.stats().is_err()
        }
    };
    assert!(failed, "a mangled database must fail somewhere");
}

#[test]
fn sqlite_locked_file_fails_writes_after_the_busy_timeout_and_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("answers.sqlite");
    let backend = SqliteBackend::open(&path, store::DEFAULT_MAX_BYTES).unwrap();
    backend.set(&key("there"), b"before").unwrap();
    let other = hold_write_lock(&path);
    let err = backend.set(&key("x"), b"1").unwrap_err();
    assert!(err.is_store_failure());
    assert!(err.to_string().contains("locked"), "{err}");
    assert!(backend.increment(&key("n"), 1).is_err());
    // WAL: a reader is not held up by the writer.
    assert_eq!(
        backend.get(&key("there")).unwrap().as_deref(),
        Some(&b"before"[..])
    );
    other.execute_batch("ROLLBACK").unwrap();
    backend.set(&key("x"), b"1").unwrap();
}

#[test]
fn sqlite_read_only_directory_fails_cleanly() {
    const TEST: &str = "sqlite_read_only_directory_fails_cleanly";
    if let Some(dir) = std::env::var_os(READ_ONLY_ENV) {
        // The child, for whom `dir` is read-only: it can read there (so what
        // fails below is writing, not reaching the place).
        let dir = Path::new(&dir);
        std::fs::read_dir(dir).expect("the child can list the directory");
        std::fs::read(dir.join("existing.sqlite")).expect("the child can read the file");
        let err = SqliteBackend::open(&dir.join("new.sqlite"), store::DEFAULT_MAX_BYTES)
            .err()
            .expect("a new file in a read-only directory");
        assert!(err.is_store_failure(), "{err}");
        eprintln!("{err}");
        let err = SqliteBackend::open(&dir.join("sub/new.sqlite"), store::DEFAULT_MAX_BYTES)
            .err()
            .expect("a new directory in a read-only directory");
        eprintln!("{err}");
        let err = SqliteBackend::open(&dir.join("existing.sqlite"), store::DEFAULT_MAX_BYTES)
            .err()
            .expect("an existing file it cannot write");
        eprintln!("{err}");
        return;
    }
    // Root writes through any mode, so then the child runs as nobody: in a
    // directory under /tmp (a $TMPDIR may be private to root), from a link
    // to this binary there (the build directory may be too).
    let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    let top = if root {
        tempfile::tempdir_in("/tmp").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = top.path().join("ro");
    std::fs::create_dir(&dir).unwrap();
    let existing = dir.join("existing.sqlite");
    {
        let backend = SqliteBackend::open(&existing, store::DEFAULT_MAX_BYTES).unwrap();
        backend.set(&key("x"), b"1").unwrap();
    }
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let mut cmd = if root {
        use std::os::unix::process::CommandExt;
        let exe = top.path().join("store_backends");
        let this = std::env::current_exe().unwrap();
        if std::fs::hard_link(&this, &exe).is_err() {
            std::fs::copy(&this, &exe).unwrap();
        }
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut cmd = rerun_as(&exe, TEST, (READ_ONLY_ENV, &dir));
        cmd.uid(65534).gid(65534);
        cmd
    } else {
        rerun(TEST, (READ_ONLY_ENV, &dir))
    };
    let out = cmd.output().unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(
        out.status.success(),
        "the read-only child failed (root: {root}):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "the child ran the test"
    );
}

#[test]
fn sqlite_full_disk_is_an_error() {
    const TEST: &str = "sqlite_full_disk_is_an_error";
    if let Some(dir) = std::env::var_os(FULL_ENV) {
        // The child: no file of it may pass 256 KiB.
        let backend = SqliteBackend::open(
            &Path::new(&dir).join("answers.sqlite"),
            store::DEFAULT_MAX_BYTES,
        )
        .unwrap();
        let value = vec![b'f'; 4_000];
        for i in 0..1_000 {
            if let Err(err) = backend.set(&key(&format!("f:{i}")), &value) {
                assert!(err.is_store_failure());
                eprintln!("full after {i} entries: {err}");
                // And it stays an error, not a panic or a hang.
                assert!(backend.set(&key("more"), &value).is_err());
                return;
            }
        }
        panic!("4 MB went into a file limited to 256 KiB");
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // An ignored signal stays ignored across exec: the write fails with EFBIG.
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"trap '' XFSZ; ulimit -f 256; exec "$0" --exact "$1" --nocapture --test-threads=1"#)
        .arg(&exe)
        .arg(TEST)
        .env(FULL_ENV, dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the full-disk child failed:\n{}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains("full after"), "{stderr}");
}

#[test]
fn sqlite_size_bound_evicts_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let max = 256 * 1024;
    let backend = SqliteBackend::open(&dir.path().join("answers.sqlite"), max).unwrap();
    let value = vec![b'v'; 2_000];
    let n = 600; // ~1.2 MB into a 256 KiB bound
    for i in 0..n {
        backend.set(&key(&format!("e:{i:04}")), &value).unwrap();
        assert!(backend.used_bytes().unwrap() <= max, "after {i}");
    }
    let present: Vec<bool> = (0..n)
        .map(|i| backend.exists(&key(&format!("e:{i:04}"))).unwrap())
        .collect();
    let first = present.iter().position(|p| *p).unwrap();
    assert!(first > 0, "the oldest went");
    assert!(present[first..].iter().all(|p| *p), "only the oldest went");
    let stats = backend.stats().unwrap();
    assert_eq!(stats.entries, (n - first) as u64);
    assert!(stats.bytes <= max);
}

#[test]
fn sqlite_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("answers.sqlite");
    drop(SqliteBackend::open(&path, store::DEFAULT_MAX_BYTES).unwrap());
    raw(&path)
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    let err = SqliteBackend::open(&path, store::DEFAULT_MAX_BYTES)
        .err()
        .unwrap();
    assert!(
        matches!(err, BackendError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
}

// ---------------------------------------------------------------- Redis

/// A raw connection to `server`, to look behind the backend's back.
fn raw_redis(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

#[test]
fn redis_does_everything() {
    let server = RedisServer::start();
    let backend = RedisBackend::open(&server.url()).unwrap();
    exercise(&backend);
    assert_eq!(
        backend.stats().unwrap().backend,
        format!("redis redis://127.0.0.1:{}/0", server.port())
    );
}

#[test]
fn redis_expiry_is_the_server_s() {
    let server = RedisServer::start();
    let backend = RedisBackend::open(&server.url()).unwrap();
    let mut con = raw_redis(&server);
    let pttl = |con: &mut redis::Connection, k: &str| -> i64 {
        redis::cmd("PTTL").arg(k).query(con).unwrap()
    };
    let now = now_ms();
    backend
        .set(&key("a"), &answer("192.0.2.1", now, now + 60_000))
        .unwrap();
    let ttl = pttl(&mut con, &key("a"));
    assert!(ttl > 0 && ttl <= 60_000, "{ttl}");
    // A value without expires_at replaces the expiry with none.
    backend.set(&key("a"), b"plain").unwrap();
    assert_eq!(pttl(&mut con, &key("a")), -1);
    // A new counter lives an hour; counting on keeps that expiry.
    backend.increment(&key("n"), 1).unwrap();
    let ttl = pttl(&mut con, &key("n"));
    assert!(ttl > 0 && ttl <= 3_600_000, "{ttl}");
    backend.increment(&key("n"), 1).unwrap();
    assert!(pttl(&mut con, &key("n")) > 0);
    // A counter set by hand has no expiry, and INCRBY leaves it so.
    backend.set(&key("m"), b"10").unwrap();
    assert_eq!(backend.increment(&key("m"), 5).unwrap(), 15);
    assert_eq!(pttl(&mut con, &key("m")), -1);
    // Stored as decimal text, as INCRBY keeps it.
    let raw_value: String = redis::cmd("GET").arg(key("m")).query(&mut con).unwrap();
    assert_eq!(raw_value, "15");
    // Redis's counters are i64.
    assert!(matches!(
        backend.increment(&key("m"), u64::MAX),
        Err(BackendError::Overflow { .. })
    ));
}

#[test]
fn redis_never_touches_other_applications_keys() {
    let server = RedisServer::start();
    let backend = RedisBackend::open(&server.url()).unwrap();
    let mut con = raw_redis(&server);
    let now = now_ms();
    let _: () = redis::cmd("SET")
        .arg("other-app:session")
        .arg(answer("192.0.2.1", now - 7_200_000, now + 60_000))
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("tip-enrich")
        .arg("no colon: not ours")
        .query(&mut con)
        .unwrap();
    backend
        .set(
            &key("old"),
            &answer("192.0.2.2", now - 7_200_000, now + 60_000),
        )
        .unwrap();
    backend
        .set(&key("new"), &answer("192.0.2.3", now, now + 60_000))
        .unwrap();
    backend.set(&key("plain"), b"no fetched_at").unwrap();

    let stats = backend.stats().unwrap();
    assert_eq!(stats.entries, 3);
    assert_eq!(stats.oldest_stored_at_ms, Some((now - 7_200_000) as u64));
    assert_eq!(all_keys(&backend).len(), 3);
    let everything = backend.scan_prefix("", 100).unwrap();
    assert_eq!(everything.len(), 3, "only ours, even for an empty prefix");
    assert!(backend.scan_prefix("other-app:", 100).unwrap().is_empty());

    // Age comes from fetched_at; a value without it is kept by age.
    assert_eq!(backend.purge(Some(Duration::from_secs(3_600))).unwrap(), 1);
    assert!(!backend.exists(&key("old")).unwrap());
    assert!(backend.exists(&key("new")).unwrap());
    assert!(backend.exists(&key("plain")).unwrap());
    assert_eq!(backend.purge(None).unwrap(), 2);

    let survivors: i64 = redis::cmd("EXISTS")
        .arg("other-app:session")
        .arg("tip-enrich")
        .query(&mut con)
        .unwrap();
    assert_eq!(survivors, 2, "the other keys survive stats, scan and purge");
}

#[test]
fn redis_list_keys_pages_through_many_keys_among_foreign_ones() {
    let server = RedisServer::start();
    let backend = RedisBackend::open(&server.url()).unwrap();
    let mut con = raw_redis(&server);
    let mut pipe = redis::pipe();
    for i in 0..5_000 {
        pipe.cmd("SET").arg(format!("foreign:{i}")).arg(1).ignore();
    }
    for i in 0..3_500 {
        pipe.cmd("SET").arg(key(&format!("k:{i}"))).arg(1).ignore();
    }
    let _: () = pipe.query(&mut con).unwrap();
    let keys = all_keys(&backend);
    assert_eq!(keys.len(), 3_500);
    assert!(keys.iter().all(|k| k.starts_with(KEY_PREFIX)));
}

#[test]
fn redis_increment_is_atomic_across_16_threads() {
    let server = RedisServer::start();
    let url = server.url();
    // Each thread its own connection, as replicas would be.
    increment_from_16_threads(|| Arc::new(RedisBackend::open(&url).unwrap()));
}

#[test]
fn redis_password_never_shows() {
    let url = "redis://:s3cret@127.0.0.1:1/0";
    let spec = StoreSpec::parse(url).unwrap();
    assert_eq!(spec.describe(), "redis://127.0.0.1:1/0");
    assert!(!format!("{spec:?}").contains("s3cret"));
    // Nothing listens on port 1.
    let err = RedisBackend::open(url).err().unwrap();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("s3cret"), "{text}");
    let err = store::open(&spec, &StoreOptions::default()).err().unwrap();
    assert!(!format!("{err} {err:?}").contains("s3cret"));
    // Through Guarded's warning too.
    let (sink, lines) = captured();
    let guarded =
        Guarded::new(Arc::new(RedisBackend::lazy(url).unwrap()), spec.describe()).with_sink(sink);
    let err = guarded.get(&key("x")).unwrap_err();
    assert!(!err.to_string().contains("s3cret"));
    let lines = lines.lock().unwrap();
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains("redis://127.0.0.1:1/0"), "{}", lines[0]);
    assert!(!lines[0].contains("s3cret"), "{}", lines[0]);

    // A server that wants the password: the right one works, a wrong one
    // fails without either showing.
    let server = RedisServer::start_with(&["--requirepass", "s3cret"]);
    let good = format!("redis://:s3cret@127.0.0.1:{}/0", server.port());
    let backend = RedisBackend::open(&good).unwrap();
    backend.set(&key("x"), b"1").unwrap();
    let bad = format!("redis://:wr0ngpass@127.0.0.1:{}/0", server.port());
    let err = RedisBackend::open(&bad).err().unwrap();
    let text = format!("{err} {err:?}");
    assert!(
        !text.contains("wr0ngpass") && !text.contains("s3cret"),
        "{text}"
    );
    let none = format!("redis://127.0.0.1:{}/0", server.port());
    let err = RedisBackend::open(&none).err().unwrap();
    assert!(err.to_string().contains("NOAUTH"), "{err}");
}

#[test]
fn redis_tls_is_refused_clearly() {
    let err = StoreSpec::parse("rediss://:s3cret@cache.example:6380/0").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("rediss://") && text.contains("not supported"),
        "{text}"
    );
    assert!(!text.contains("s3cret"));
    assert!(RedisBackend::open("rediss://cache.example:6380/0").is_err());
}

#[test]
fn guarded_redis_dies_warns_once_fails_fast_and_recovers() {
    let mut server = RedisServer::start();
    let port = server.port();
    let retry = Duration::from_millis(200);
    let (sink, lines) = captured();
    let describe = StoreSpec::parse(&server.url()).unwrap().describe();
    let guarded = Guarded::new(
        Arc::new(RedisBackend::open(&server.url()).unwrap()),
        describe,
    )
    .with_sink(sink)
    .with_retry_after(retry);
    guarded.set(&key("a"), b"1").unwrap();
    assert_eq!(guarded.get(&key("a")).unwrap().as_deref(), Some(&b"1"[..]));
    assert!(lines.lock().unwrap().is_empty());

    server.kill();
    // Many operations over several retry periods: all fail, one warning.
    let mut unavailable = 0;
    for i in 0..40 {
        let err = match i % 4 {
            0 => guarded.get(&key("a")).unwrap_err(),
            1 => guarded.set(&key("a"), b"2").unwrap_err(),
            2 => guarded.increment(&key("n"), 1).unwrap_err(),
            _ => guarded.exists(&key("a")).unwrap_err(),
        };
        if matches!(err, BackendError::Unavailable { .. }) {
            unavailable += 1;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(unavailable > 0, "later calls fail fast without trying");
    {
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with(&format!(
                "tip-enrich: warning: the answer store (redis://127.0.0.1:{port}/0) failed: "
            )) && lines[0].ends_with("; lookups go on uncached"),
            "{}",
            lines[0]
        );
    }

    // A fresh server on the same port: back within a retry period or so.
    let _server = RedisServer::start_on(port);
    let mut recovered = false;
    for _ in 0..200 {
        if guarded.set(&key("b"), b"back").is_ok() {
            recovered = true;
            break;
        }
        std::thread::sleep(retry / 4);
    }
    assert!(recovered, "the store came back");
    assert_eq!(
        guarded.get(&key("b")).unwrap().as_deref(),
        Some(&b"back"[..])
    );
    assert_eq!(lines.lock().unwrap().len(), 1);

    // After a success, a new outage warns again (once).
    drop(_server);
    for _ in 0..10 {
        assert!(guarded.get(&key("b")).is_err());
    }
    assert_eq!(lines.lock().unwrap().len(), 2);
}

// ---------------------------------------------------------------- memory

#[test]
fn memory_does_everything() {
    let backend = MemoryBackend::new();
    exercise(&backend);
    assert_eq!(backend.stats().unwrap().backend, "memory");
}

#[test]
fn memory_increment_is_atomic_across_16_threads() {
    let shared: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    increment_from_16_threads(|| shared.clone());
}

#[test]
fn memory_is_bounded_oldest_first() {
    let backend = MemoryBackend::with_max_entries(100);
    for i in 0..250 {
        backend.set(&key(&format!("{i:03}")), b"x").unwrap();
    }
    assert_eq!(backend.stats().unwrap().entries, 100);
    assert!(!backend.exists(&key("149")).unwrap());
    assert!(backend.exists(&key("150")).unwrap());
    // Storing again makes a key the newest.
    backend.set(&key("150"), b"y").unwrap();
    backend.set(&key("new"), b"z").unwrap();
    assert!(backend.exists(&key("150")).unwrap());
    assert!(!backend.exists(&key("151")).unwrap());
    assert_eq!(store::memory::MAX_ENTRIES, 10_000);
}

#[test]
fn memory_purge_by_age() {
    let backend = MemoryBackend::new();
    backend.set(&key("a"), b"1").unwrap();
    let now = now_ms();
    backend
        .set(&key("gone"), &answer("192.0.2.1", now, now - 1))
        .unwrap();
    sleep_past(now_ms());
    // Everything stored before now is older than zero; the expired one goes
    // uncounted.
    assert_eq!(backend.purge(Some(Duration::ZERO)).unwrap(), 1);
    assert_eq!(backend.stats().unwrap().entries, 0);
}

// ---------------------------------------------------------------- open / Guarded

#[test]
fn open_follows_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions::default();
    assert_eq!(options.max_bytes, 256 * 1024 * 1024);
    assert!(store::open(&StoreSpec::Off, &options).unwrap().is_none());
    let memory = store::open(&StoreSpec::Memory, &options).unwrap().unwrap();
    assert_eq!(memory.stats().unwrap().backend, "memory");
    let path = dir.path().join("x.sqlite");
    let sqlite = store::open(&StoreSpec::Sqlite(path.clone()), &options)
        .unwrap()
        .unwrap();
    assert_eq!(
        sqlite.stats().unwrap().backend,
        format!("sqlite {}", path.display())
    );
    let server = RedisServer::start();
    let redis = store::open(&StoreSpec::parse(&server.url()).unwrap(), &options)
        .unwrap()
        .unwrap();
    redis.set(&key("x"), b"1").unwrap();
}

#[test]
fn guarded_passes_value_errors_through_without_warning() {
    let (sink, lines) = captured();
    let guarded = Guarded::new(Arc::new(MemoryBackend::new()), "memory".into()).with_sink(sink);
    guarded.set(&key("json"), b"{}").unwrap();
    assert!(matches!(
        guarded.increment(&key("json"), 1),
        Err(BackendError::NotACounter { .. })
    ));
    assert_eq!(guarded.increment(&key("n"), 2).unwrap(), 2);
    assert!(lines.lock().unwrap().is_empty());
}

#[test]
fn guarded_sqlite_locked_warns_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("answers.sqlite");
    let (sink, lines) = captured();
    let guarded = Guarded::new(
        Arc::new(SqliteBackend::open(&path, store::DEFAULT_MAX_BYTES).unwrap()),
        path.display().to_string(),
    )
    .with_sink(sink)
    .with_retry_after(Duration::from_secs(3_600));
    guarded.set(&key("a"), b"1").unwrap();
    let other = hold_write_lock(&path);
    assert!(guarded.set(&key("b"), b"2").is_err());
    // Resting: reads fail fast too, without waiting on the lock.
    assert!(matches!(
        guarded.get(&key("a")),
        Err(BackendError::Unavailable { .. })
    ));
    assert!(guarded.set(&key("c"), b"3").is_err());
    let lines = lines.lock().unwrap();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("locked"), "{}", lines[0]);
    other.execute_batch("ROLLBACK").unwrap();
}
