//! Batches through the wasm component against a real HTTP server on
//! 127.0.0.1: concurrency, retries (429 with Retry-After, 5xx bursts, resets),
//! stalls, quota stops, the instance cache, and the CLI over stdin. Counts and
//! order are asserted; speed is measured in the benchmark, not here.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use common::{Action, Server, runtime};
use host_harness::egress::Egress;
use host_harness::output::error_kind;
use host_harness::runtime::{Instance, InstanceOptions, Settings, empty_settings};

const BUDGET: Duration = Duration::from_secs(60);
const GREEN: &str = r#"{"LicenseInfo":{"DayRequests":41,"DayQuota":1000},"Zone":"Green","IpGeneralInfo":{"ThreatScore":3}}"#;

fn live(server: &Server) -> (Instance, Settings) {
    let options = InstanceOptions::new(Egress::Live {
        allowed: server.addr.clone(),
    })
    .with_key("batch-key-0123");
    let instance = runtime().instantiate(&options).unwrap();
    let mut s = empty_settings();
    s.base_url = Some(server.url());
    (instance, s)
}

fn addresses(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("45.9.148.{i}")).collect()
}

/// Counts attempts per path, for scripted failures.
struct Attempts(Mutex<HashMap<String, u32>>);

impl Attempts {
    fn new() -> Attempts {
        Attempts(Mutex::new(HashMap::new()))
    }
    fn next(&self, target: &str) -> u32 {
        let mut map = self.0.lock().unwrap();
        let n = map.entry(target.to_owned()).or_insert(0);
        *n += 1;
        *n
    }
}

#[test]
fn requests_run_concurrently_up_to_the_limit_and_stay_in_order() {
    let server = Server::start(|_| {
        Action::Delay(
            Duration::from_millis(200),
            Box::new(Action::json(200, GREEN)),
        )
    });
    let (mut instance, mut s) = live(&server);
    s.concurrency = Some(4);
    let inputs = addresses(12);
    let results = instance.enrich_batch(&inputs, &s, BUDGET).unwrap();
    assert_eq!(server.seen().len(), 12);
    let max = server.max_concurrent();
    assert!(
        (2..=4).contains(&max),
        "{max} requests were in flight at once; want 2..=4"
    );
    for (r, ip) in results.iter().zip(&inputs) {
        assert_eq!(&r.as_ref().unwrap().ip, ip);
    }
}

#[test]
fn a_429_with_retry_after_is_retried_after_the_wait() {
    let attempts = Attempts::new();
    let server = Server::start(move |seen| match attempts.next(&seen.target) {
        1 => Action::Respond {
            status: 429,
            headers: vec![("retry-after".into(), "1".into())],
            body: b"slow".to_vec(),
        },
        _ => Action::json(200, GREEN),
    });
    let (mut instance, s) = live(&server);
    let v = instance.enrich("8.8.8.8", &s, BUDGET).unwrap().unwrap();
    assert_eq!(v.threat_score, Some(3));
    assert_eq!(server.seen().len(), 2);
}

#[test]
fn a_5xx_burst_is_ridden_out_and_retries_are_bounded() {
    let attempts = Attempts::new();
    let server = Server::start(move |seen| match attempts.next(&seen.target) {
        1 | 2 => Action::Respond {
            status: 503,
            headers: vec![],
            body: b"<html><title>busy</title></html>".to_vec(),
        },
        _ => Action::json(200, GREEN),
    });
    let (mut instance, s) = live(&server);
    assert!(instance.enrich("8.8.8.8", &s, BUDGET).unwrap().is_ok());
    assert_eq!(server.seen().len(), 3);

    let always = Server::start(|_| Action::Respond {
        status: 500,
        headers: vec![],
        body: vec![],
    });
    let (mut instance, s) = live(&always);
    let e = instance.enrich("8.8.8.8", &s, BUDGET).unwrap().unwrap_err();
    assert_eq!(error_kind(&e), "upstream");
    assert_eq!(always.seen().len(), 3, "one attempt and two retries");
}

#[test]
fn a_reset_before_the_response_is_retried() {
    let attempts = Attempts::new();
    let server = Server::start(move |seen| match attempts.next(&seen.target) {
        1 => Action::Close,
        _ => Action::json(200, GREEN),
    });
    let (mut instance, s) = live(&server);
    assert!(instance.enrich("8.8.8.8", &s, BUDGET).unwrap().is_ok());
    assert_eq!(server.seen().len(), 2);
}

#[test]
fn client_errors_are_not_retried() {
    let status_for = |target: &str| -> u16 {
        [
            ("8.8.8.1", 400),
            ("8.8.8.2", 401),
            ("8.8.8.3", 403),
            ("8.8.8.4", 404),
            ("8.8.8.5", 414),
        ]
        .iter()
        .find(|(ip, _)| target.contains(ip))
        .map_or(200, |(_, status)| *status)
    };
    let server = Server::start(move |seen| Action::Respond {
        status: status_for(&seen.target),
        headers: vec![],
        body: b"no".to_vec(),
    });
    let (mut instance, s) = live(&server);
    // The quota answer last: after it the instance sends nothing during the
    // cool-down (tests/answer_store.rs).
    for (ip, kind) in [
        ("8.8.8.1", "bad-request"),
        ("8.8.8.2", "unauthorized"),
        ("8.8.8.5", "bad-request"),
    ] {
        let e = instance.enrich(ip, &s, BUDGET).unwrap().unwrap_err();
        assert_eq!(error_kind(&e), kind, "{ip}");
    }
    assert!(
        !instance
            .enrich("8.8.8.4", &s, BUDGET)
            .unwrap()
            .unwrap()
            .found
    );
    let e = instance.enrich("8.8.8.3", &s, BUDGET).unwrap().unwrap_err();
    assert_eq!(error_kind(&e), "quota-exceeded");
    assert_eq!(server.seen().len(), 5, "one request each");
}

#[test]
fn a_stalled_server_times_out_within_bounded_retries() {
    let server = Server::start(|_| Action::Stall(Duration::from_secs(10)));
    let (mut instance, mut s) = live(&server);
    s.timeout_ms = Some(200);
    s.deadline_ms = Some(5_000);
    let e = instance.enrich("8.8.8.8", &s, BUDGET).unwrap().unwrap_err();
    assert_eq!(error_kind(&e), "timeout");
    assert_eq!(
        server.seen().len(),
        3,
        "a timeout before the response is retried twice"
    );
}

#[test]
fn headers_then_a_stall_time_out() {
    // The head and one byte arrive at once; the rest would take 10 s a byte.
    let server = Server::start(|_| Action::Drip {
        body: br#"{"Zone":"Red"}"#.to_vec(),
        interval: Duration::from_secs(10),
    });
    let (mut instance, mut s) = live(&server);
    s.timeout_ms = Some(400);
    s.retries = Some(0);
    let e = instance.enrich("8.8.8.8", &s, BUDGET).unwrap().unwrap_err();
    assert_eq!(
        error_kind(&e),
        "timeout",
        "{}",
        host_harness::output::error_message(&e)
    );
    assert_eq!(
        server.seen().len(),
        1,
        "a failure after the response began is not retried"
    );
}

#[test]
fn a_quota_answer_stops_the_batch() {
    let server = Server::start(|seen| {
        if seen.target.contains("45.9.148.3") {
            Action::Respond {
                status: 403,
                headers: vec![],
                body: b"quota".to_vec(),
            }
        } else {
            Action::json(200, GREEN)
        }
    });
    let (mut instance, mut s) = live(&server);
    s.concurrency = Some(1);
    let results = instance.enrich_batch(&addresses(6), &s, BUDGET).unwrap();
    assert_eq!(server.seen().len(), 3, "no request after the 403");
    let kinds: Vec<&str> = results
        .iter()
        .map(|r| r.as_ref().map_or_else(error_kind, |_| "ok"))
        .collect();
    assert_eq!(
        kinds,
        [
            "ok",
            "ok",
            "quota-exceeded",
            "quota-exceeded",
            "quota-exceeded",
            "quota-exceeded"
        ]
    );
}

#[test]
fn duplicates_and_repeats_cost_one_request_per_instance() {
    let server = Server::start(|_| Action::json(200, GREEN));
    let (mut instance, s) = live(&server);
    let batch: Vec<String> = ["8.8.8.8", " 8.8.8.8", "::ffff:8.8.8.8", "1.1.1.1"]
        .map(String::from)
        .to_vec();
    let results = instance.enrich_batch(&batch, &s, BUDGET).unwrap();
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(server.seen().len(), 2);
    // The next call on the same instance is served from its cache.
    instance.enrich("8.8.8.8", &s, BUDGET).unwrap().unwrap();
    instance.enrich_batch(&batch, &s, BUDGET).unwrap();
    assert_eq!(server.seen().len(), 2);
}

#[test]
fn the_cli_streams_stdin_with_one_request_per_distinct_address() {
    let server = Server::start(|_| {
        Action::Delay(
            Duration::from_millis(20),
            Box::new(Action::json(200, GREEN)),
        )
    });
    // 3000 lines, 30 distinct addresses, repeats spread across chunks.
    let lines: Vec<String> = (0..3000)
        .map(|i| format!("45.9.148.{}", i % 30 + 1))
        .collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tip-enrich"))
        .env("TIP_ENRICH_CACHE", "off")
        .env("TIP_API_KEY", "batch-key-0123")
        .args(["--base-url", &server.url(), "--concurrency", "16"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = lines.join("\n");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let got: Vec<&str> = stdout.lines().collect();
    assert_eq!(got.len(), lines.len());
    for (line, ip) in got.iter().zip(&lines) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["ip"], ip.as_str());
    }
    assert_eq!(
        server.seen().len(),
        30,
        "one request per distinct address for the whole run"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("quota: 41 of 1000 requests used today, 959 left"),
        "{stderr}"
    );
}
