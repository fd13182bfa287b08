//! Issue 11, the answer store, the way a user meets it: the `tip-enrich`
//! CLI and `tip-enrich serve` against a loopback API, with a real SQLite
//! file and a real `redis-server` (each test starts its own on a free
//! port). Runs in sequence, 16 processes at once on one store, replicas on
//! one Redis, a shared quota cool-down, Redis killed mid-stream, a corrupt
//! store file, a read-only directory, `cache stats|purge`, and no secret in
//! the store's bytes.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::redis::RedisServer;
use common::serving::Serving;
use common::{Action, Server};
use serde_json::Value;

const KEY: &str = "store-test-key-5f6e7d8c9b";

/// A TIP server: red for 45.9.*, 404 for 9.9.9.9, after `latency`.
fn api(latency: Duration) -> Server {
    Server::start(move |seen| {
        let action = if seen.target.contains("9.9.9.9") {
            Action::json(404, "")
        } else {
            Action::json(
                200,
                r#"{"LicenseInfo":{"DayRequests":40,"DayQuota":2000},"Zone":"Red","IpGeneralInfo":{"ThreatScore":88,"Status":"Known","CountryCode":"NL"}}"#,
            )
        };
        Action::Delay(latency, Box::new(action))
    })
}

/// The CLI with the test's key, base URL and store; no progress or summary.
fn cli(server: &Server, cache: &str, work: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tip-enrich"));
    cmd.env("TIP_API_KEY", KEY)
        .env("TIP_ENRICH_CACHE_DIR", work.join("cache-dir"))
        .env_remove("TIP_ENRICH_CACHE")
        .args(["--quiet", "--base-url", &server.url(), "--cache", cache]);
    cmd
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn requests(server: &Server) -> usize {
    server.seen().len()
}

fn warnings(text: &str) -> usize {
    text.lines()
        .filter(|l| l.contains("warning: the answer store"))
        .count()
}

#[test]
fn issue_11_the_cli_remembers_across_runs_in_sequence() {
    let work = tempfile::tempdir().unwrap();
    let server = api(Duration::ZERO);
    let store = work.path().join("answers.sqlite");
    let store = store.to_str().unwrap();
    let first = cli(&server, store, work.path())
        .args(["45.9.148.108", "9.9.9.9", "10.0.0.1"])
        .output()
        .unwrap();
    assert!(first.status.success(), "{}", stderr(&first));
    let first = lines(&first);
    assert_eq!(requests(&server), 2);
    assert_eq!(first[0]["source"], "api");
    assert_eq!(first[0]["fetched_at"], Value::Null);
    assert_eq!(first[0]["day_requests"], 40);

    for _ in 0..2 {
        let again = cli(&server, store, work.path())
            .args(["45.9.148.108", "9.9.9.9", "10.0.0.1"])
            .output()
            .unwrap();
        assert!(again.status.success(), "{}", stderr(&again));
        let again = lines(&again);
        assert_eq!(requests(&server), 2, "nothing asked twice");
        assert_eq!(again[0]["source"], "cache");
        assert_eq!(again[0]["zone"], "red");
        assert_eq!(again[0]["threat_score"], 88);
        assert_eq!(again[1]["source"], "cache");
        assert_eq!(again[1]["found"], false);
        assert_eq!(again[2]["source"], "local");
        let fetched = again[0]["fetched_at"].as_str().unwrap();
        assert!(
            fetched.len() == 20 && fetched.ends_with('Z') && fetched.as_bytes()[10] == b'T',
            "{fetched}"
        );
    }
    let mode = std::fs::metadata(store).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // ECS says so too.
    let ecs = cli(&server, store, work.path())
        .args(["--format", "ecs", "45.9.148.108"])
        .output()
        .unwrap();
    let ecs = lines(&ecs);
    assert_eq!(ecs[0]["kaspersky"]["tip"]["source"], "cache");
    assert!(ecs[0]["kaspersky"]["tip"]["fetched_at"].is_string());

    // The environment variable picks the store as the flag does.
    let other = work.path().join("other.sqlite");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tip-enrich"));
    let out = cmd
        .env("TIP_API_KEY", KEY)
        .env("TIP_ENRICH_CACHE_DIR", work.path().join("cache-dir"))
        .env("TIP_ENRICH_CACHE", &other)
        .args(["--quiet", "--base-url", &server.url(), "45.9.148.108"])
        .output()
        .unwrap();
    assert_eq!(lines(&out)[0]["source"], "api");
    assert!(other.exists());
    assert_eq!(requests(&server), 3);
}

#[test]
fn issue_11_the_default_store_is_in_the_cache_directory_and_off_keeps_nothing() {
    let work = tempfile::tempdir().unwrap();
    let server = api(Duration::ZERO);
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tip-enrich"));
        cmd.env("TIP_API_KEY", KEY)
            .env("TIP_ENRICH_CACHE_DIR", work.path())
            .env_remove("TIP_ENRICH_CACHE")
            .args(["--quiet", "--base-url", &server.url()])
            .args(extra)
            .arg("45.9.148.108")
            .output()
            .unwrap()
    };
    assert_eq!(lines(&run(&["--cache", "off"]))[0]["source"], "api");
    assert!(!work.path().join("answers.sqlite").exists());
    assert_eq!(lines(&run(&["--cache", "off"]))[0]["source"], "api");
    assert_eq!(requests(&server), 2);
    assert_eq!(lines(&run(&[]))[0]["source"], "api");
    assert!(work.path().join("answers.sqlite").exists());
    assert_eq!(lines(&run(&[]))[0]["source"], "cache");
    assert_eq!(requests(&server), 3);
}

#[test]
fn issue_11_sixteen_processes_at_once_on_one_store_spend_one_request_per_address() {
    let work = tempfile::tempdir().unwrap();
    // Slow enough that the processes overlap.
    let server = api(Duration::from_millis(400));
    let store = work.path().join("answers.sqlite");
    let store = store.to_str().unwrap();
    // Compile the component once, so the 16 start together.
    cli(&server, store, work.path())
        .arg("10.0.0.1")
        .output()
        .unwrap();
    let ips = ["45.9.1.1", "45.9.1.2", "45.9.1.3", "45.9.1.4", "9.9.9.9"];
    let children: Vec<_> = (0..16)
        .map(|_| {
            cli(&server, store, work.path())
                .args(ips)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut sources = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(warnings(&stderr(&out)), 0, "{}", stderr(&out));
        let lines = lines(&out);
        assert_eq!(lines.len(), ips.len());
        for (line, ip) in lines.iter().zip(ips) {
            assert_eq!(line["ip"], ip);
            sources.push(line["source"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        requests(&server),
        ips.len(),
        "one request per address for 16 processes: {:?}",
        server.seen().iter().map(|s| &s.target).collect::<Vec<_>>()
    );
    assert_eq!(sources.iter().filter(|s| *s == "api").count(), ips.len());
}

#[test]
fn issue_11_a_quota_answer_stops_every_process_for_the_cool_down() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(|_| Action::json(403, r#"{"error":"quota"}"#));
    let store = work.path().join("answers.sqlite");
    let store = store.to_str().unwrap();
    let first = cli(&server, store, work.path())
        .args(["--retries", "0", "--quota-cooldown-secs", "2", "45.9.1.1"])
        .output()
        .unwrap();
    assert_eq!(lines(&first)[0]["error"]["kind"], "quota-exceeded");
    assert_eq!(requests(&server), 1);
    let second = cli(&server, store, work.path())
        .args(["45.9.1.2", "45.9.1.3"])
        .output()
        .unwrap();
    for line in lines(&second) {
        assert_eq!(line["error"]["kind"], "quota-exceeded");
        let message = line["error"]["message"].as_str().unwrap();
        assert!(message.contains("next probe is due at"), "{message}");
        assert!(!message.contains(KEY));
    }
    assert_eq!(requests(&server), 1, "nothing sent during the cool-down");

    let stats = Command::new(env!("CARGO_BIN_EXE_tip-enrich"))
        .args(["--cache", store, "cache", "stats"])
        .output()
        .unwrap();
    let stats: Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(stats["quota"][0]["state"], "cooling-down", "{stats}");

    // After the cool-down (2 s here), the next lookup probes, once.
    std::thread::sleep(Duration::from_millis(2_100));
    let third = cli(&server, store, work.path())
        .args(["--retries", "0", "45.9.1.2", "45.9.1.3"])
        .output()
        .unwrap();
    assert!(
        lines(&third)
            .iter()
            .all(|l| l["error"]["kind"] == "quota-exceeded")
    );
    assert_eq!(requests(&server), 2, "one probe");
}

#[test]
fn issue_11_serve_replicas_share_answers_through_one_redis() {
    let redis = RedisServer::start();
    let server = api(Duration::ZERO);
    let url = redis.url();
    let env = [
        ("TIP_API_KEY", KEY),
        ("TIP_BASE_URL", &server.url() as &str),
        ("TIP_ENRICH_CACHE", &url),
    ];
    let a = Serving::start(&[], &env);
    let b = Serving::start(&[], &env);
    let (status, first) = a.get_json("/v1/ip/45.9.148.108");
    assert_eq!((status, first["source"].as_str()), (200, Some("api")));
    let (status, second) = b.get_json("/v1/ip/45.9.148.108");
    assert_eq!((status, second["source"].as_str()), (200, Some("cache")));
    let (_, again) = a.get_json("/v1/ip/45.9.148.108");
    assert_eq!(again["source"], "cache");
    assert_eq!(requests(&server), 1, "one request for both replicas");
    // A batch through the other replica: only the new address is asked.
    let answer = b.request("POST", "/v1/ip", r#"["45.9.148.108", "45.9.2.2"]"#);
    let batch: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(batch[0]["source"], "cache");
    assert_eq!(batch[1]["source"], "api");
    assert_eq!(requests(&server), 2);

    // No key, in any encoding, in what Redis holds.
    let dump = redis_dump(&redis);
    assert!(dump.contains("tip-enrich:v1:answer:"), "{dump}");
    assert_no_secret(dump.as_bytes());
}

/// Every key and value in `redis`, as text (KEYS is fine on a test server).
fn redis_dump(redis: &RedisServer) -> String {
    let mut out = String::new();
    let output = Command::new("redis-cli")
        .args(["-p", &redis.port().to_string(), "--raw", "KEYS", "*"])
        .output()
        .unwrap();
    for key in String::from_utf8_lossy(&output.stdout).lines() {
        let value = Command::new("redis-cli")
            .args(["-p", &redis.port().to_string(), "--raw", "GET", key])
            .output()
            .unwrap();
        out.push_str(key);
        out.push(' ');
        out.push_str(&String::from_utf8_lossy(&value.stdout));
    }
    out
}

fn assert_no_secret(bytes: &[u8]) {
    use base64::Engine;
    let text = String::from_utf8_lossy(bytes);
    let b64 = base64::engine::general_purpose::STANDARD.encode(KEY);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:"));
    for secret in [KEY.to_owned(), b64, basic, KEY.to_uppercase()] {
        assert!(!text.contains(&secret), "the store holds {secret}");
    }
}

#[test]
fn issue_11_no_secret_reaches_the_sqlite_file() {
    let work = tempfile::tempdir().unwrap();
    // A server that echoes the key into its answer.
    let server = Server::start(|seen| {
        let key = seen.header("x-api-key").unwrap_or_default().to_owned();
        Action::json(
            200,
            &format!(
                r#"{{"Zone":"Red","IpGeneralInfo":{{"ThreatScore":90,"Categories":["{key}"],"CountryCode":"{key}"}}}}"#
            ),
        )
    });
    let store = work.path().join("answers.sqlite");
    let out = cli(&server, store.to_str().unwrap(), work.path())
        .args(["45.9.1.1", "45.9.1.2"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_no_secret(&out.stdout);
    let mut bytes = std::fs::read(&store).unwrap();
    for suffix in ["-wal", "-shm"] {
        if let Ok(more) = std::fs::read(format!("{}{suffix}", store.display())) {
            bytes.extend(more);
        }
    }
    assert!(
        bytes.windows(13).any(|w| w == b"tip-enrich:v1"),
        "entries were written"
    );
    assert_no_secret(&bytes);
}

#[test]
fn issue_11_redis_killed_mid_stream_is_one_warning_and_every_line() {
    let mut redis = RedisServer::start();
    let server = api(Duration::ZERO);
    let work = tempfile::tempdir().unwrap();
    let mut child = cli(&server, &redis.url(), work.path())
        .args(["--concurrency", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    // A chunk is 16 addresses at concurrency 1: the first chunk is stored.
    for i in 0..16 {
        writeln!(stdin, "45.9.3.{i}").unwrap();
    }
    stdin.flush().unwrap();
    let mut got = Vec::new();
    for _ in 0..16 {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        got.push(line);
    }
    redis.kill();
    for i in 16..48 {
        writeln!(stdin, "45.9.3.{i}").unwrap();
    }
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    got.extend(rest.lines().map(str::to_owned));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(got.len(), 48, "every input has its line");
    for (i, line) in got.iter().enumerate() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["ip"], format!("45.9.3.{i}"));
        assert_eq!(v["zone"], "red", "{line}");
    }
    let text = stderr(&out);
    assert_eq!(warnings(&text), 1, "{text}");
    assert_eq!(requests(&server), 48);
}

#[test]
fn issue_11_a_redis_that_is_down_from_the_start_is_one_warning() {
    let redis = RedisServer::start();
    let url = redis.url();
    drop(redis);
    let server = api(Duration::ZERO);
    let work = tempfile::tempdir().unwrap();
    let out = cli(&server, &url, work.path())
        .args(["45.9.4.1", "45.9.4.2", "45.9.4.3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(lines(&out).len(), 3);
    assert_eq!(warnings(&stderr(&out)), 1, "{}", stderr(&out));
}

#[test]
fn issue_11_a_corrupt_store_file_is_one_warning_and_lookups_go_on() {
    let work = tempfile::tempdir().unwrap();
    let server = api(Duration::ZERO);
    let store = work.path().join("answers.sqlite");
    std::fs::write(&store, vec![0x5au8; 64 * 1024]).unwrap();
    let out = cli(&server, store.to_str().unwrap(), work.path())
        .args(["45.9.5.1", "45.9.5.2", "not-an-ip", "45.9.5.3"])
        .output()
        .unwrap();
    let text = stderr(&out);
    assert_eq!(warnings(&text), 1, "{text}");
    let lines = lines(&out);
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["zone"], "red");
    assert_eq!(lines[2]["error"]["kind"], "invalid-ip");
    assert_eq!(out.status.code(), Some(1));
    // The file is left as it was: nothing of ours overwrote it.
    assert_eq!(std::fs::read(&store).unwrap(), vec![0x5au8; 64 * 1024]);
}

/// Runs the CLI as `nobody` when the tests run as root (who writes through
/// any mode).
fn as_unprivileged(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if root {
        cmd.uid(65534).gid(65534);
    }
}

#[test]
fn issue_11_a_read_only_directory_is_one_warning_and_lookups_go_on() {
    let top = tempfile::tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The binary where nobody may run it.
    let exe = top.path().join("tip-enrich");
    std::fs::copy(env!("CARGO_BIN_EXE_tip-enrich"), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cache_dir = top.path().join("cache-dir");
    std::fs::create_dir(&cache_dir).unwrap();
    std::fs::set_permissions(&cache_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let ro = top.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let server = api(Duration::ZERO);
    let mut cmd = Command::new(&exe);
    cmd.env_clear()
        .env("TIP_API_KEY", KEY)
        .env("TIP_ENRICH_CACHE_DIR", &cache_dir)
        .args(["--quiet", "--base-url", &server.url(), "--cache"])
        .arg(ro.join("answers.sqlite"))
        .args(["45.9.6.1", "45.9.6.2"]);
    as_unprivileged(&mut cmd);
    let out = cmd.output().unwrap();
    let text = stderr(&out);
    assert!(out.status.success(), "{text}");
    assert_eq!(warnings(&text), 1, "{text}");
    assert_eq!(lines(&out).len(), 2);
    assert!(!ro.join("answers.sqlite").exists());
}

#[test]
fn issue_11_cache_stats_and_purge() {
    let work = tempfile::tempdir().unwrap();
    let server = api(Duration::ZERO);
    let store = work.path().join("answers.sqlite");
    let store = store.to_str().unwrap();
    cli(&server, store, work.path())
        .args(["45.9.7.1", "45.9.7.2", "9.9.9.9"])
        .output()
        .unwrap();
    let cache = |args: &[&str]| -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_tip-enrich"))
            .args(["--cache", store, "cache"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let stats = cache(&["stats"]);
    assert_eq!(stats["answers"], 3, "{stats}");
    assert_eq!(stats["not_found_answers"], 1, "{stats}");
    assert!(stats["entries"].as_u64().unwrap() >= 3, "{stats}");
    assert!(stats["bytes"].as_u64().unwrap() > 0);
    assert!(stats["oldest_entry"].as_str().unwrap().ends_with('Z'));
    assert_eq!(stats["quota"], serde_json::json!([]));
    assert!(stats["store"].as_str().unwrap().contains(store));

    assert_eq!(cache(&["purge", "--older-than", "1h"])["purged"], 0);
    assert_eq!(cache(&["purge"])["purged"], 3);
    let stats = cache(&["stats"]);
    assert_eq!(stats["entries"], 0, "{stats}");
    assert_eq!(stats["oldest_entry"], Value::Null);

    let bad = Command::new(env!("CARGO_BIN_EXE_tip-enrich"))
        .args(["--cache", store, "cache", "purge", "--older-than", "soon"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

/// The holder of a lease that dies is taken over: a process killed while
/// its request hangs leaves its lease, and the next lookup takes it over
/// after the lease (here 1 s) instead of waiting for ever.
#[test]
fn issue_11_a_lease_holder_killed_mid_request_is_taken_over() {
    let work = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let server = Server::start(move |_| {
        if counted.fetch_add(1, Ordering::SeqCst) == 0 {
            Action::Stall(Duration::from_secs(30))
        } else {
            Action::json(200, r#"{"Zone":"Green"}"#)
        }
    });
    let store = work.path().join("answers.sqlite");
    let store = store.to_str().unwrap();
    cli(&server, store, work.path())
        .arg("10.0.0.1")
        .output()
        .unwrap();
    let mut holder = cli(&server, store, work.path())
        .args(["--cache-lease-ms", "1000", "45.9.8.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while calls.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(20));
    }
    holder.kill().unwrap();
    holder.wait().unwrap();
    let out = cli(&server, store, work.path())
        .args(["--cache-lease-ms", "1000", "45.9.8.1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(lines(&out)[0]["zone"], "green");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn issue_11_an_alert_storm_on_serve_costs_one_request() {
    let work = tempfile::tempdir().unwrap();
    let server = api(Duration::from_millis(300));
    let store = work.path().join("answers.sqlite");
    let store = store.to_str().unwrap();
    let env = [
        ("TIP_API_KEY", KEY),
        ("TIP_BASE_URL", &server.url() as &str),
        ("TIP_ENRICH_CACHE", store),
    ];
    let serve = Serving::start(&[], &env);
    let addr = serve.addr.clone();
    let storm: Vec<_> = (0..16)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                common::serving::request(&addr, "GET", "/v1/ip/45.9.148.108", "")
            })
        })
        .collect();
    let mut sources = Vec::new();
    for answer in storm {
        let answer = answer.join().unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
        let v: Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(v["zone"], "red");
        sources.push(v["source"].as_str().unwrap().to_owned());
    }
    assert_eq!(requests(&server), 1, "16 requests at once, one API request");
    assert_eq!(
        sources.iter().filter(|s| *s == "api").count(),
        1,
        "{sources:?}"
    );
}
