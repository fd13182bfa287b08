//! The component in hosts that are not ours, each run as a subprocess against a
//! loopback server that answers from the bundled recordings: the stock wasmtime
//! CLI (`run --invoke` and `serve`), jco on Node (`hosts/node/enrich.mjs`) and
//! wasmtime-py (`hosts/python/enrich_playbook.py`).
//!
//! The tools (pinned: `hosts/python/requirements.txt`, `hosts/cli-requirements.txt`,
//! `hosts/node/package-lock.json`) live in `$TIP_HOSTS_DIR` (default
//! `~/.cache/tip-enrich/hosts`). The first test that needs them runs
//! `hosts/setup.sh`, which installs them from PyPI and npm when they are missing
//! or their pins changed and returns at once otherwise; a lock file in that
//! directory makes concurrent test processes install once. So a machine needs
//! only Python 3.9+ and Node.js 20+ with npm. Each test checks the verdict against `tests/expected.toml`,
//! the requests the server saw (path, `x-api-key`, count), an `unauthorized`
//! answer whose body echoes the key, an invalid address, and that the key never
//! shows in the host's output.

mod common;
#[path = "../../tests/support/expect.rs"]
mod expect;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Action, Seen, Server};
use expect::{Expectation, Failure, Observed};
use host_harness::BUNDLED_RECORDINGS;
use host_harness::recordings::RecordingSet;
use host_harness::runtime::{PLAIN_COMPONENT_PATH as COMPONENT_PATH, SERVICE_COMPONENT_PATH};
use serde_json::Value;

/// A fake key: it must reach the server and never the host's output.
const KEY: &str = "hosts-fake-key-5f3a9c1e";
/// Longest a host subprocess may run (compiling the component included).
const BUDGET: Duration = Duration::from_secs(180);
/// Where the recordings were made; the loopback server stands in for it.
const TIP: &str = "https://tip.kaspersky.com";

/// A verdict with APT reports, a 401, a 429 retried twice, a 500 retried twice.
const RED: &str = "tip-red-apt-45.9.148.108";
const UNAUTHORIZED: &str = "tip-401-5.5.5.5";
const RATE_LIMITED: &str = "tip-429-9.9.9.9";
const UPSTREAM: &str = "tip-500-11.11.11.11";
/// Answered 401 with the key echoed in the body, which must not reach the output.
const ECHO_IP: &str = "6.6.6.7";
const INVALID: &str = "not-an-ip";
/// Reserved: answered by the component without a request.
const RESERVED: &str = "10.0.0.1";
/// Answered with `tip-whois-45.9.148.108`'s body (AS context) whatever the
/// sections asked: the server stands in for TIP asked for `IpWhoIs`, since
/// the host scripts pass no settings but the key and the base URL.
const WHOIS_IP: &str = "45.9.148.109";
const WHOIS: &str = "tip-whois-45.9.148.108";

// ---- the installed tools ----

/// The hosts directory, with the pinned hosts installed in it (once per
/// test process; see `install`).
fn hosts_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = match std::env::var_os("TIP_HOSTS_DIR") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => {
                let home = std::env::var_os("HOME").expect("HOME is set");
                Path::new(&home).join(".cache/tip-enrich/hosts")
            }
        };
        install(&dir);
        dir
    })
}

/// Runs `hosts/setup.sh` into `dir` holding an exclusive lock on
/// `dir/.setup.lock`, so test processes started at once (two checkouts, or
/// `cargo test` beside CI) install one at a time, and all but the first
/// find the pinned tools in place (setup.sh then only checks its stamp).
fn install(dir: &Path) {
    std::fs::create_dir_all(dir)
        .unwrap_or_else(|e| panic!("create the hosts directory {}: {e}", dir.display()));
    let lock_path = dir.join(".setup.lock");
    let lock = std::fs::File::create(&lock_path)
        .unwrap_or_else(|e| panic!("open {}: {e}", lock_path.display()));
    lock.lock()
        .unwrap_or_else(|e| panic!("lock {}: {e}", lock_path.display()));
    let out = Command::new("bash")
        .arg(repo().join("hosts/setup.sh"))
        .env("TIP_HOSTS_DIR", dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run bash hosts/setup.sh: {e}"));
    assert!(
        out.status.success(),
        "installing the independent hosts with hosts/setup.sh failed ({}); it needs \
         Python 3.9+ and Node.js 20+ with npm, and PyPI and npm reachable once\n\
         stdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(lock);
}

/// A path inside the hosts directory that must exist.
fn installed(rel: &str) -> PathBuf {
    let path = hosts_dir().join(rel);
    assert!(
        path.exists(),
        "{} is missing although hosts/setup.sh succeeded",
        path.display()
    );
    path
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A command with a clean environment: no TIP_* of the caller leaks in.
fn command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear();
    for var in ["PATH", "HOME", "LANG", "TMPDIR"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

// ---- subprocesses, bounded and killed on drop ----

/// A running subprocess whose output is collected by threads; killed on drop.
struct Running {
    child: Child,
    what: String,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

fn collect(mut from: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    })
}

impl Running {
    fn spawn(mut cmd: Command, what: &str) -> Running {
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {what}: {e}"));
        let (out, err) = (Arc::default(), Arc::default());
        let readers = vec![
            collect(child.stdout.take().unwrap(), Arc::clone(&out)),
            collect(child.stderr.take().unwrap(), Arc::clone(&err)),
        ];
        Running {
            child,
            what: what.to_owned(),
            out,
            err,
            readers,
        }
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().unwrap()).into_owned()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits for the exit within `BUDGET`, then for the output to be read.
    fn finish(mut self) -> Finished {
        let deadline = Instant::now() + BUDGET;
        let status = loop {
            if let Some(status) = self.exited() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "{} ran longer than {BUDGET:?}; stderr:\n{}",
                    self.what,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        Finished {
            what: self.what.clone(),
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Finished {
    what: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn run(cmd: Command, what: &str) -> Finished {
        Running::spawn(cmd, what).finish()
    }

    /// Fails unless the process exited with `code`.
    fn expect_code(self, code: i32) -> Finished {
        assert_eq!(
            self.status.code(),
            Some(code),
            "{} exit status; stdout:\n{}\nstderr:\n{}",
            self.what,
            self.stdout,
            self.stderr
        );
        self
    }

    fn assert_no_key(&self) {
        assert_no_key(&self.what, &self.stdout, &self.stderr);
    }

    /// stdout as JSON Lines.
    fn lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {l}", self.what))
            })
            .collect()
    }
}

fn assert_no_key(what: &str, stdout: &str, stderr: &str) {
    assert!(!stdout.contains(KEY), "{what} printed the key:\n{stdout}");
    assert!(!stderr.contains(KEY), "{what} logged the key:\n{stderr}");
}

// ---- the loopback API ----

/// The recorded TIP answers, served at the paths the recordings were made on;
/// `ECHO_IP` gets a 401 that quotes the key.
fn recorded_api() -> Server {
    let set = RecordingSet::load(Path::new(BUNDLED_RECORDINGS)).expect("load the recordings");
    let whois =
        std::fs::read_to_string(repo().join(format!("tests/recordings/bodies/{WHOIS}.json")))
            .expect("read the IpWhoIs recording's body");
    Server::start(move |seen| {
        if seen.target.starts_with(&format!("/api/ip/{ECHO_IP}?")) {
            let body = format!(r#"{{"error":"invalid API key {KEY}"}}"#);
            return Action::json(401, &body);
        }
        if seen.target.starts_with(&format!("/api/ip/{WHOIS_IP}?")) {
            return Action::json(200, &whois);
        }
        match set.find(&seen.method, &format!("{TIP}{}", seen.target)) {
            Some(r) => Action::Respond {
                status: r.status,
                headers: r.headers.clone(),
                body: r.body.clone(),
            },
            None => Action::json(418, r#"{"error":"no recording for this request"}"#),
        }
    })
}

fn expectation(name: &str) -> Expectation {
    expect::load()
        .into_iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("tests/expected.toml has no {name}"))
}

/// The request target of a recording's request (path and query).
fn recorded_target(name: &str) -> String {
    let text = std::fs::read_to_string(repo().join(format!("tests/recordings/{name}.toml")))
        .expect("read the recording");
    let file: host_harness::recordings::RecordingFile = toml::from_str(&text).unwrap();
    file.request
        .url
        .strip_prefix(TIP)
        .expect("a TIP recording")
        .to_owned()
}

/// The requests the server saw for `ip`.
fn requests_for<'a>(seen: &'a [Seen], ip: &str) -> Vec<&'a Seen> {
    let prefix = format!("/api/ip/{ip}?");
    seen.iter()
        .filter(|s| s.target.starts_with(&prefix))
        .collect()
}

/// The server saw exactly the recording's request, as many times as expected,
/// each a GET with the key in `x-api-key`.
fn assert_requested(seen: &[Seen], name: &str) {
    let e = expectation(name);
    let want = usize::try_from(
        e.table
            .get("requests")
            .and_then(|v| v.as_integer())
            .unwrap_or(1),
    )
    .unwrap();
    let target = recorded_target(name);
    let got = requests_for(seen, e.ip());
    assert_eq!(got.len(), want, "{name}: requests seen: {seen:?}");
    for s in got {
        assert_eq!(s.method, "GET", "{name}");
        assert_eq!(s.target, target, "{name}: request target");
        assert_eq!(s.header("x-api-key"), Some(KEY), "{name}: x-api-key");
    }
}

// ---- lines with the fields of a CLI line (jco, wasmtime-py, the service) ----

fn observed(line: &Value) -> Result<Observed, Failure> {
    let s = |key: &str| line.get(key).and_then(Value::as_str).map(str::to_owned);
    let u = |key: &str| line.get(key).and_then(Value::as_u64);
    let b = |key: &str| line.get(key).and_then(Value::as_bool).unwrap_or(false);
    let strs = |key: &str| -> Vec<String> {
        line.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    if let Some(e) = line.get("error") {
        let field = |key: &str| e.get(key).and_then(Value::as_u64);
        return Err(Failure {
            kind: e["kind"].as_str().unwrap_or_default().to_owned(),
            message: e["message"].as_str().unwrap_or_default().to_owned(),
            retry_after_secs: field("retry_after_secs").map(|v| v as u32),
            status: field("status").map(|v| v as u16),
        });
    }
    Ok(Observed {
        ip: s("ip").unwrap_or_default(),
        zone: s("zone").unwrap_or_default(),
        threat_score: u("threat_score").map(|v| v as u8),
        verdict: s("verdict").unwrap_or_default(),
        has_apt: b("has_apt"),
        report_ids: strs("related_report_ids"),
        suspicious: b("suspicious"),
        found: b("found"),
        status: s("status"),
        country_code: s("country_code"),
        as_number: u("as_number").map(|n| u32::try_from(n).unwrap()),
        as_organization: s("as_organization"),
        network_name: s("network_name"),
        categories: strs("categories"),
        first_seen: s("first_seen"),
        day_requests: u("day_requests"),
        day_quota: u("day_quota"),
        has_quota: u("day_requests").is_some() || u("day_quota").is_some(),
        source: s("source").unwrap_or_default(),
        ..Observed::default()
    })
}

fn error_kind(line: &Value) -> &str {
    line["error"]["kind"].as_str().unwrap_or("(not an error)")
}

/// The addresses the JSON-line hosts get, in order, and what each line must be.
fn json_host_inputs() -> Vec<String> {
    let mut ips: Vec<String> = [RED, UNAUTHORIZED, RATE_LIMITED, UPSTREAM]
        .iter()
        .map(|name| expectation(name).ip().to_owned())
        .collect();
    ips.extend([ECHO_IP, INVALID, RESERVED].map(str::to_owned));
    // An over-long input: every host echoes the same bounded excerpt of it.
    ips.push(format!("1.2.3.4{}", "é".repeat(300)));
    ips.push(WHOIS_IP.to_owned());
    ips
}

/// Checks the lines of a host that printed one JSON line per `json_host_inputs()`
/// address, against the expectations and against the CLI's line for the
/// same answer.
fn check_json_host(host: Finished, server: &Server) {
    let host = host.expect_code(1); // some lines are errors
    host.assert_no_key();
    let lines = host.lines();
    let inputs = json_host_inputs();
    assert_eq!(
        lines.len(),
        inputs.len(),
        "{}: stdout:\n{}\nstderr:\n{}",
        host.what,
        host.stdout,
        host.stderr
    );
    for (name, line) in [RED, UNAUTHORIZED, RATE_LIMITED, UPSTREAM]
        .iter()
        .zip(&lines)
    {
        expect::check(&expectation(name), observed(line));
    }
    // The same bytes as the CLI's lines, verdicts and errors alike.
    let cli = cli_lines(&inputs);
    for (i, (host_line, cli_line)) in host.stdout.lines().zip(cli.lines()).enumerate() {
        assert_eq!(
            host_line, cli_line,
            "{}: line {i} differs from the CLI's",
            host.what
        );
    }
    assert_eq!(error_kind(&lines[4]), "unauthorized", "{}", host.what);
    assert_eq!(error_kind(&lines[5]), "invalid-ip", "{}", host.what);
    assert_eq!(lines[5]["ip"], INVALID);
    assert_eq!(lines[6]["source"], "local");
    assert_eq!(error_kind(&lines[7]), "invalid-ip", "{}", host.what);
    assert_eq!(lines[7]["ip"].as_str().unwrap().chars().count(), 129);
    // The AS context, as the CLI prints it (the byte comparison above).
    let whois = &lines[8];
    assert_eq!(whois["ip"], WHOIS_IP, "{}", host.what);
    assert_eq!(whois["as_number"], 57043, "{}: {whois}", host.what);
    assert_eq!(whois["as_organization"], "HOSTKEY-AS", "{}", host.what);
    assert_eq!(
        whois["network_name"], "NL-HOSTKEY-20190612",
        "{}",
        host.what
    );
    assert!(
        lines[..8]
            .iter()
            .all(|l| l.get("error").is_some() || l["as_number"].is_null()),
        "{}: AS context without IpWhoIs",
        host.what
    );

    let seen = server.seen();
    for name in [RED, UNAUTHORIZED, RATE_LIMITED, UPSTREAM] {
        assert_requested(&seen, name);
    }
    assert_eq!(requests_for(&seen, ECHO_IP).len(), 1);
    assert_eq!(requests_for(&seen, WHOIS_IP).len(), 1);
    assert!(
        requests_for(&seen, RESERVED).is_empty(),
        "reserved is local"
    );
    assert!(
        !seen.iter().any(|s| s.target.contains(INVALID)),
        "nothing is sent for an invalid address"
    );
}

/// What our own CLI prints for `ips` (against a server of its own), as text.
fn cli_lines(ips: &[String]) -> String {
    let server = recorded_api();
    let mut cmd = command(Path::new(env!("CARGO_BIN_EXE_tip-enrich")));
    cmd.env("TIP_API_KEY", KEY)
        .env("TIP_ENRICH_CACHE", "off")
        .args(["--quiet", "--base-url", &server.url()])
        .args(ips);
    let done = Finished::run(cmd, "tip-enrich").expect_code(1);
    assert_eq!(done.stdout.lines().count(), ips.len());
    done.stdout
}

// ---- 1. the stock wasmtime CLI ----

/// `wasmtime run -S http --env … --invoke 'enrich("…")'`, printing WAVE.
fn wasmtime_invoke(server: &Server, call: &str) -> Finished {
    let mut cmd = command(&installed("bin/wasmtime"));
    cmd.env("TIP_API_KEY", KEY)
        .args(["run", "-S", "http", "--env", "TIP_API_KEY"])
        .arg("--env")
        .arg(format!("TIP_BASE_URL={}", server.url()))
        .args(["--invoke", call, COMPONENT_PATH]);
    let done = Finished::run(cmd, &format!("wasmtime run --invoke '{call}'")).expect_code(0);
    done.assert_no_key();
    done
}

#[test]
fn wasmtime_cli_run_invokes_enrich() {
    let server = recorded_api();
    let e = expectation(RED);

    // `{:}`: the settings record with every field unset (all are optional).
    let out = wasmtime_invoke(&server, &format!("enrich(\"{}\", {{:}})", e.ip())).stdout;
    let want = |field: String| assert!(out.contains(&field), "lacks {field}: {out}");
    want(format!(
        "ok({{ip: \"{}\", zone: {}",
        e.ip(),
        e.str("zone").unwrap()
    ));
    want(format!(
        "threat-score: some({})",
        e.table["threat_score"].as_integer().unwrap()
    ));
    want(format!("has-apt: {}", e.bool("has_apt").unwrap()));
    want(format!("verdict: {}", e.str("verdict").unwrap()));
    let ids: Vec<&str> = out
        .split("{id: \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    let want_ids: Vec<&str> = e.table["report_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(ids, want_ids, "report ids in {out}");

    let out = wasmtime_invoke(&server, &format!("enrich(\"{ECHO_IP}\", {{:}})")).stdout;
    assert!(out.starts_with("err(unauthorized("), "{out}");
    let out = wasmtime_invoke(&server, &format!("enrich(\"{INVALID}\", {{:}})")).stdout;
    assert!(out.starts_with("err(invalid-ip("), "{out}");

    let seen = server.seen();
    assert_requested(&seen, RED);
    assert_eq!(requests_for(&seen, ECHO_IP).len(), 1);
    assert_eq!(
        seen.len(),
        2,
        "nothing sent for the invalid address: {seen:?}"
    );
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `wasmtime serve` on `addr` with WASI, wasi-http, wasi:config and
/// wasi:keyvalue, the key from the environment (the guests' fallback) and
/// the base URL through wasi:config; add `-S` options and the component.
fn wasmtime_serve(base_url: &str, addr: &str) -> Command {
    let mut cmd = command(&installed("bin/wasmtime"));
    cmd.env("TIP_API_KEY", KEY)
        .args([
            "serve", "-S", "cli", "-S", "http", "-S", "config", "-S", "keyvalue",
        ])
        .arg("-S")
        .arg(format!("config-var=tip_base_url={base_url}"))
        .args(["--env", "TIP_API_KEY", "--addr", addr]);
    cmd
}

/// Waits until `serve` (wasmtime serve) accepts connections on `addr`,
/// at most [`BUDGET`]; panics with its stderr if it exits or does not.
fn wait_listening(serve: &mut Running, addr: &str) {
    let deadline = Instant::now() + BUDGET;
    while TcpStream::connect(addr).is_err() {
        if let Some(status) = serve.exited() {
            panic!("wasmtime serve exited ({status}):\n{}", serve.stderr());
        }
        assert!(
            Instant::now() < deadline,
            "wasmtime serve did not listen on {addr} within {BUDGET:?}:\n{}",
            serve.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// GET over HTTP/1.0 (so the body ends at close): status and body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let a = common::serving::request(addr, "GET", path, "");
    (a.status, a.body)
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

#[test]
fn wasmtime_cli_serves_the_service_world() {
    let server = recorded_api();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = wasmtime_serve(&server.url(), &addr);
    cmd.arg(SERVICE_COMPONENT_PATH);
    let mut serve = Running::spawn(cmd, "wasmtime serve");

    wait_listening(&mut serve, &addr);

    let (status, body) = http_get(&addr, "/healthz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["status"], "ok", "{body}");

    let e = expectation(RED);
    let (status, body) = http_get(&addr, &format!("/v1/ip/{}", e.ip()));
    assert_eq!(status, 200, "{body}");
    expect::check(&e, observed(&json(&body)));

    let (status, body) = http_get(&addr, &format!("/v1/ip/{ECHO_IP}"));
    assert_eq!(status, 502, "{body}");
    assert_eq!(error_kind(&json(&body)), "unauthorized", "{body}");
    assert!(!body.contains(KEY), "the key in a response: {body}");

    let (status, body) = http_get(&addr, &format!("/v1/ip/{INVALID}"));
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_kind(&json(&body)), "invalid-ip", "{body}");

    let seen = server.seen();
    assert_requested(&seen, RED);
    assert_eq!(requests_for(&seen, ECHO_IP).len(), 1);
    assert_eq!(
        seen.len(),
        2,
        "nothing sent for the invalid address: {seen:?}"
    );

    let (stdout, stderr) = (serve.stdout(), serve.stderr());
    drop(serve);
    assert_no_key("wasmtime serve", &stdout, &stderr);
}

/// Hosts that hand the guest the request body as the client sends it (here
/// the stock `wasmtime serve`) rely on the guest's own body deadline
/// (`tip_enrich_service::http::BODY_DEADLINE`, 30 s): a client that stalls
/// mid-body gets a 408 instead of keeping the instance waiting for ever.
#[test]
fn wasmtime_cli_serve_answers_408_to_a_body_that_stalls() {
    let server = recorded_api();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = command(&installed("bin/wasmtime"));
    cmd.env("TIP_API_KEY", KEY)
        .args([
            "serve", "-S", "cli", "-S", "http", "-S", "config", "-S", "keyvalue",
        ])
        .arg("-S")
        .arg(format!("config-var=tip_base_url={}", server.url()))
        .args(["--env", "TIP_API_KEY", "--addr", &addr])
        .arg(SERVICE_COMPONENT_PATH);
    let mut serve = Running::spawn(cmd, "wasmtime serve");
    let deadline = Instant::now() + BUDGET;
    let mut conn = loop {
        if let Ok(conn) = TcpStream::connect(&addr) {
            break conn;
        }
        if let Some(status) = serve.exited() {
            panic!("wasmtime serve exited ({status}):\n{}", serve.stderr());
        }
        assert!(Instant::now() < deadline, "wasmtime serve did not listen");
        std::thread::sleep(Duration::from_millis(50));
    };

    // A POST promising 1000 bytes, a few of them, then nothing.
    use std::io::Write;
    write!(
        conn,
        "POST /v1/ip HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: 1000\r\n\r\n[\"45.9"
    )
    .unwrap();
    conn.flush().unwrap();
    // A hang guard well past the 30 s deadline, not a speed assertion.
    let started = Instant::now();
    let guard = Duration::from_secs(120);
    conn.set_read_timeout(Some(guard)).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&raw).contains("body-timeout") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
        assert!(started.elapsed() < guard, "no answer within {guard:?}");
    }
    let raw = String::from_utf8_lossy(&raw);
    eprintln!("wasmtime serve: 408 after {:?}", started.elapsed());
    assert!(raw.starts_with("HTTP/1.1 408"), "{raw}\n{}", serve.stderr());
    assert!(raw.contains("\"kind\":\"body-timeout\""), "{raw}");
    assert!(server.seen().is_empty(), "nothing was looked up");
    drop(conn);
    drop(serve);
}

// ---- 2. jco on Node ----

#[test]
fn jco_on_node_calls_enrich() {
    let node_dir = installed("node/node_modules/@bytecodealliance/jco")
        .ancestors()
        .nth(3)
        .unwrap()
        .to_owned();
    // Inside the installed package, so the transpiled code finds preview2-shim.
    let work = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&node_dir)
        .unwrap();
    std::fs::copy(
        repo().join("hosts/node/enrich.mjs"),
        work.path().join("enrich.mjs"),
    )
    .unwrap();
    let mut jco = command(&node_dir.join("node_modules/.bin/jco"));
    // `--name`: the module enrich.mjs imports, whatever the file is called.
    jco.args(["transpile", COMPONENT_PATH, "--name", "tip_enrich", "-o"])
        .arg(work.path().join("component"));
    Finished::run(jco, "jco transpile").expect_code(0);

    let server = recorded_api();
    let mut node = command(Path::new("node"));
    node.current_dir(work.path())
        .env("TIP_API_KEY", KEY)
        .env("TIP_BASE_URL", server.url())
        .arg("enrich.mjs")
        .args(json_host_inputs());
    check_json_host(Finished::run(node, "node enrich.mjs"), &server);
}

// ---- 3. wasmtime-py ----

#[test]
fn wasmtime_py_playbook_calls_enrich() {
    let server = recorded_api();
    let mut python = command(&installed("venv/bin/python"));
    python
        .env("TIP_API_KEY", KEY)
        .env("TIP_BASE_URL", server.url())
        .env("TIP_ENRICH_WASM", COMPONENT_PATH)
        .arg(repo().join("hosts/python/enrich_playbook.py"))
        .args(json_host_inputs());
    check_json_host(Finished::run(python, "python enrich_playbook.py"), &server);
}

/// A front proxy on 127.0.0.1 for one upstream: each connection's request
/// head (GETs only) is forwarded with the peer appended to
/// `x-forwarded-for` (as a proxy that trusts the hop before it does) and
/// `connection: close`, and the answer copied back.
fn front_proxy(upstream: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut client) = conn else { continue };
            let upstream = upstream.clone();
            std::thread::spawn(move || {
                let peer = client.peer_addr().unwrap().ip();
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && client.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
                let mut out = format!("{}\r\n", lines.next().unwrap_or_default());
                let mut chain = Vec::new();
                for line in lines {
                    let name = line
                        .split(':')
                        .next()
                        .unwrap_or_default()
                        .to_ascii_lowercase();
                    match name.as_str() {
                        "x-forwarded-for" => chain.push(line[16..].trim().to_owned()),
                        "connection" => {}
                        _ => out.push_str(&format!("{line}\r\n")),
                    }
                }
                chain.push(peer.to_string());
                out.push_str(&format!(
                    "x-forwarded-for: {}\r\nconnection: close\r\n\r\n",
                    chain.join(", ")
                ));
                let Ok(mut up) = TcpStream::connect(&upstream) else {
                    return;
                };
                use std::io::Write;
                let _ = up.write_all(out.as_bytes());
                let _ = std::io::copy(&mut up, &mut client);
            });
        }
    });
    addr
}

#[test]
fn wasmtime_cli_serves_the_gate_behind_a_front_proxy() {
    let api = recorded_api();
    // The origin echoes the headers it got.
    let origin = Server::start(|seen| {
        let headers: serde_json::Map<String, Value> = seen
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        Action::json(200, &Value::Object(headers).to_string())
    });
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = wasmtime_serve(&api.url(), &addr);
    cmd.arg("-S")
        .arg(format!("config-var=tip_gate_origin={}", origin.url()))
        // The front proxy and its peer are on loopback.
        .args(["-S", "config-var=tip_gate_trusted_proxies=127.0.0.0/8"])
        .arg(host_harness::runtime::GATE_COMPONENT_PATH);
    let mut serve = Running::spawn(cmd, "wasmtime serve");
    wait_listening(&mut serve, &addr);
    let front = front_proxy(addr);
    let get = |xff: &str| {
        let mut conn = TcpStream::connect(&front).unwrap();
        conn.set_read_timeout(Some(BUDGET)).unwrap();
        use std::io::Write;
        write!(
            conn,
            "GET /page HTTP/1.1\r\nhost: gate.test\r\naccept: application/json\r\n\
             x-forwarded-for: {xff}\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        let _ = conn.read_to_string(&mut raw);
        raw
    };

    // Red, the client address the front proxy passed on: 403, nothing forwarded.
    let raw = get("45.9.148.108");
    assert!(raw.starts_with("HTTP/1.1 403"), "{raw}");
    assert!(raw.contains("malicious") && raw.contains("red"), "{raw}");
    assert!(origin.seen().is_empty());
    // Green: forwarded, the chain kept.
    let raw = get("8.8.8.8");
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let seen = origin.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let xff = seen[0].header("x-forwarded-for").unwrap_or_default();
    assert!(xff.starts_with("8.8.8.8, 127.0.0.1"), "{xff}");
    let (stdout, stderr) = (serve.stdout(), serve.stderr());
    drop(serve);
    assert_no_key("wasmtime serve (gate)", &stdout, &stderr);
}
