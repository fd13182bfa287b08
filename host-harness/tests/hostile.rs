//! The hostile-server table of HARDENING.md: the real component, in wasmtime
//! with live egress, against a loopback server that misbehaves on purpose.
//!
//! Every case checks the same four things: the outcome (a typed error of the
//! expected kind, or a sound verdict), no trap (the runner's trap count stays
//! 0), no hang (the call runs on its own thread and must finish within the
//! lookup's deadline plus a generous margin: a hang guard, not a speed test),
//! and guest memory under the store's cap (`Instance::peak_memory`).

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Action, Ending, Seen, Server, runtime};
use host_harness::egress::Egress;
use host_harness::output::{error_kind, error_message};
use host_harness::runtime::{
    EnrichError, InstanceOptions, Runner, Settings, SoarVerdict, Verdict, VerdictSource, Zone,
    empty_settings,
};

const KEY: &str = "hostile-key-5f4e3d2c1b0a";
/// End-to-end limit of one request.
const TOTAL_TIMEOUT_MS: u32 = 2_000;
/// Limit of one lookup with its retries.
const DEADLINE_MS: u32 = 6_000;
/// Response body cap.
const MAX_BODY: u32 = 256 * 1024;
/// The store's linear-memory cap: far below what buffering a hostile body would need.
const MAX_MEMORY: usize = 32 * 1024 * 1024;
/// The epoch budget of a call: past the deadline, so only a runaway guest meets it.
const BUDGET: Duration = Duration::from_secs(60);
/// Hang guard: the deadline plus a generous margin.
const HANG_GUARD: Duration = Duration::from_millis(DEADLINE_MS as u64 + 10_000);

/// One hostile call, as observed.
struct Outcome {
    result: Result<Verdict, EnrichError>,
    traps: usize,
    peak_memory: usize,
    elapsed: Duration,
    requests: usize,
}

fn settings(server: &Server) -> Settings {
    let mut s = empty_settings();
    s.base_url = Some(server.url());
    s.timeout_ms = Some(TOTAL_TIMEOUT_MS);
    s.deadline_ms = Some(DEADLINE_MS);
    s.max_body_bytes = Some(MAX_BODY);
    s.cache_ttl_secs = Some(0);
    s
}

/// Enriches `ip` once against a server that answers with `handler`.
fn hostile(ip: &str, handler: impl Fn(&Seen) -> Action + Send + Sync + 'static) -> Outcome {
    let server = Server::start(handler);
    let outcome = call(&server, ip, settings(&server));
    assert_bounded(&outcome);
    outcome
}

/// One call on a fresh runner, on its own thread, with the hang guard.
fn call(server: &Server, ip: &str, settings: Settings) -> Outcome {
    let mut options = InstanceOptions::new(Egress::Live {
        allowed: server.addr.clone(),
    })
    .with_key(KEY);
    options.max_memory_bytes = MAX_MEMORY;
    let ip = ip.to_owned();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut runner = Runner::new(runtime(), options);
        let mut peak_memory = 0;
        let started = Instant::now();
        let result = runner.call(|i| {
            let r = i.enrich(&ip, &settings, BUDGET);
            peak_memory = i.peak_memory();
            r
        });
        let elapsed = started.elapsed();
        let result = match result {
            Ok(r) => r,
            Err(trap) => Err(EnrichError::Transport(format!("TRAP: {trap:?}"))),
        };
        let _ = tx.send((result, runner.traps(), peak_memory, elapsed));
    });
    let (result, traps, peak_memory, elapsed) = rx
        .recv_timeout(HANG_GUARD)
        .unwrap_or_else(|_| panic!("the call did not finish within {HANG_GUARD:?}: a hang"));
    let outcome = Outcome {
        result,
        traps,
        peak_memory,
        elapsed,
        requests: server.seen().len(),
    };
    eprintln!(
        "observed: {} | traps {} | peak memory {} KiB | {} ms | {} request(s)",
        match &outcome.result {
            Ok(v) => format!("verdict {:?} score {:?}", v.zone, v.threat_score),
            Err(e) => format!("{}: {}", error_kind(e), error_message(e)),
        },
        outcome.traps,
        outcome.peak_memory / 1024,
        outcome.elapsed.as_millis(),
        outcome.requests
    );
    outcome
}

/// No trap, no hang, memory under the cap.
fn assert_bounded(o: &Outcome) {
    assert_eq!(
        o.traps,
        0,
        "the guest trapped: {:?}",
        o.result.as_ref().err()
    );
    assert!(o.elapsed < HANG_GUARD, "took {:?}", o.elapsed);
    assert!(o.peak_memory > 0 && o.peak_memory <= MAX_MEMORY);
}

fn assert_error(o: &Outcome, kind: &str) -> String {
    match &o.result {
        Err(e) => {
            assert_eq!(error_kind(e), kind, "{}", error_message(e));
            let message = error_message(e).to_owned();
            assert!(!message.contains(KEY), "{message}");
            message
        }
        Ok(v) => panic!("expected {kind}, got a verdict: {v:?}"),
    }
}

/// A verdict that obeys the contract: score 0–100, `suspicious` exactly for
/// 50–74, never `benign` from 50 up, the zone's default verdict otherwise.
fn assert_sound(ip: &str, v: &Verdict) {
    assert_eq!(v.ip, ip);
    assert!(matches!(v.source, VerdictSource::Api));
    if let Some(score) = v.threat_score {
        assert!(score <= 100, "score {score}");
    }
    let score = v.threat_score.unwrap_or(0);
    assert_eq!(v.suspicious, (50..=74).contains(&score), "{v:?}");
    let by_zone = match v.zone {
        Zone::Red => SoarVerdict::Malicious,
        Zone::Orange | Zone::Yellow => SoarVerdict::Suspicious,
        Zone::Grey => SoarVerdict::Unknown,
        Zone::Green => SoarVerdict::Benign,
    };
    let expected = if score >= 50 && matches!(by_zone, SoarVerdict::Benign) {
        SoarVerdict::Suspicious
    } else {
        by_zone
    };
    assert_eq!(v.verdict, expected, "{v:?}");
    assert!(v.related_reports.iter().all(|r| !r.id.trim().is_empty()));
    assert!(!format!("{v:?}").contains(KEY));
}

fn sound(o: &Outcome, ip: &str) -> Verdict {
    match &o.result {
        Ok(v) => {
            assert_sound(ip, v);
            v.clone()
        }
        Err(e) => panic!(
            "expected a verdict, got {}: {}",
            error_kind(e),
            error_message(e)
        ),
    }
}

fn head(content_length: usize) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {content_length}\r\n\r\n"
    )
}

const ANSWER: &str = r#"{"LicenseInfo":{"DayRequests":1,"DayQuota":1000},"Zone":"Red","IpGeneralInfo":{"ThreatScore":80,"HasApt":true,"RelatedAptReports":[{"Id":"r1","Title":"t"}],"Categories":["CATEGORY_MALWARE"],"Status":"Known","CountryCode":"NL"}}"#;

// ---- the body ends early ----

#[test]
fn truncated_body_is_a_transport_error() {
    let o = hostile("8.8.8.8", |_| Action::Raw {
        bytes: [head(ANSWER.len()).as_bytes(), &ANSWER.as_bytes()[..40]].concat(),
        then: Ending::Close,
    });
    let message = assert_error(&o, "transport");
    // No host backtrace in a message, whatever RUST_BACKTRACE says (error::host_detail).
    assert!(!message.contains('\n'), "{message}");
    assert_eq!(o.requests, 1, "bytes had arrived: not retried");
}

#[test]
fn connection_reset_mid_body_is_a_transport_error() {
    let o = hostile("8.8.8.8", |_| Action::Raw {
        bytes: [head(ANSWER.len()).as_bytes(), &ANSWER.as_bytes()[..40]].concat(),
        then: Ending::Reset,
    });
    let message = assert_error(&o, "transport");
    // No host backtrace in a message, whatever RUST_BACKTRACE says (error::host_detail).
    assert!(!message.contains('\n'), "{message}");
    assert_eq!(o.requests, 1, "bytes had arrived: not retried");
}

#[test]
fn content_length_promised_and_never_delivered_times_out() {
    let o = hostile("8.8.8.8", |_| Action::Raw {
        bytes: [head(ANSWER.len()).as_bytes(), &ANSWER.as_bytes()[..40]].concat(),
        then: Ending::Hold(Duration::from_secs(30)),
    });
    assert_error(&o, "timeout");
    assert_eq!(o.requests, 1, "bytes had arrived: not retried");
}

// ---- too much ----

#[test]
fn declared_body_far_over_the_cap_is_refused_before_reading() {
    // Content-Length says 1 GiB; the server then holds the connection open.
    let o = hostile("8.8.8.8", |_| Action::Raw {
        bytes: [head(1 << 30).as_bytes(), b"{\"Zone\":"].concat(),
        then: Ending::Hold(Duration::from_secs(30)),
    });
    let message = assert_error(&o, "malformed-response");
    assert!(message.contains(&MAX_BODY.to_string()), "{message}");
}

#[test]
fn streamed_body_far_over_the_cap_stops_at_the_cap() {
    // No Content-Length: 256 MiB offered in 64 KiB chunks, 1024 times the cap
    // and 8 times the guest's whole memory cap.
    let o = hostile("8.8.8.8", |_| Action::Chunked {
        headers: vec![("content-type".into(), "application/json".into())],
        chunk: vec![b' '; 64 * 1024],
        count: 4096,
    });
    let message = assert_error(&o, "malformed-response");
    assert!(message.contains(&MAX_BODY.to_string()), "{message}");
}

#[test]
fn huge_header_is_a_typed_error() {
    // One 1 MiB header value: past hyper's limit on a response head.
    let o = hostile("8.8.8.8", |_| Action::Respond {
        status: 200,
        headers: vec![("x-huge".into(), "a".repeat(1 << 20))],
        body: ANSWER.as_bytes().to_vec(),
    });
    assert_error(&o, "transport");
}

#[test]
fn thousands_of_headers_are_a_typed_error() {
    let o = hostile("8.8.8.8", |_| Action::Respond {
        status: 200,
        headers: (0..5_000)
            .map(|i| (format!("x-h{i}"), "v".into()))
            .collect(),
        body: ANSWER.as_bytes().to_vec(),
    });
    assert_error(&o, "transport");
}

// ---- too slow ----

#[test]
fn one_byte_per_second_drip_times_out() {
    // The whole response, head included, one byte a second: each byte is well
    // within the between-bytes timeout, so only the end-to-end limit can fire.
    let o = hostile("8.8.8.8", |_| Action::DripRaw {
        bytes: [head(ANSWER.len()).as_bytes(), ANSWER.as_bytes()].concat(),
        interval: Duration::from_secs(1),
    });
    assert_error(&o, "timeout");
}

#[test]
fn one_byte_per_second_body_drip_times_out() {
    let o = hostile("8.8.8.8", |_| Action::Drip {
        body: ANSWER.as_bytes().to_vec(),
        interval: Duration::from_secs(1),
    });
    assert_error(&o, "timeout");
    assert_eq!(o.requests, 1, "bytes had arrived: not retried");
}

// ---- not the JSON object expected ----

#[test]
fn invalid_utf8_is_malformed() {
    let body = [
        &br#"{"Zone":"Red","IpGeneralInfo":{"ThreatScore":90,"CountryCode":""#[..],
        b"\xff\xfe\xc3",
        br#""}}"#,
    ]
    .concat();
    let o = hostile("8.8.8.8", move |_| Action::Respond {
        status: 200,
        headers: vec![],
        body: body.clone(),
    });
    assert_error(&o, "malformed-response");
}

#[test]
fn deeply_nested_json_is_malformed() {
    // 100 000 levels inside a section: past serde_json's recursion limit.
    let depth = 100_000;
    let body = format!(
        r#"{{"Zone":"Red","IpGeneralInfo":{{"ThreatScore":90,"Categories":{}{}}}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let o = hostile("8.8.8.8", move |_| Action::json(200, &body));
    let message = assert_error(&o, "malformed-response");
    assert!(message.contains("not valid JSON"), "{message}");
}

#[test]
fn deeply_nested_unknown_key_is_skipped() {
    // 100 000 levels in a key nothing reads: serde_json skips an ignored value
    // without recursing, so the answer stands (and no stack overflows).
    let depth = 100_000;
    let body = format!(
        r#"{{"Zone":"Red","Unknown":{}{},"IpGeneralInfo":{{"ThreatScore":90}}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let o = hostile("8.8.8.8", move |_| Action::json(200, &body));
    let v = sound(&o, "8.8.8.8");
    assert_eq!(v.threat_score, Some(90));
}

#[test]
fn html_with_status_200_is_malformed() {
    let o = hostile("8.8.8.8", |_| Action::Respond {
        status: 200,
        headers: vec![("content-type".into(), "text/html".into())],
        body: b"<!doctype html><html><head><title>Sign in</title></head><body>portal</body></html>"
            .to_vec(),
    });
    assert_error(&o, "malformed-response");
}

#[test]
fn json_array_instead_of_an_object_is_malformed() {
    let o = hostile("8.8.8.8", |_| Action::json(200, &format!("[{ANSWER}]")));
    assert_error(&o, "malformed-response");
}

#[test]
fn redirect_to_another_host_is_not_followed() {
    let other = Server::start(|_| Action::json(200, ANSWER));
    let location = format!("{}/api/ip/8.8.8.8", other.url());
    for status in [301, 302, 303, 307, 308] {
        let location = location.clone();
        let o = hostile("8.8.8.8", move |_| Action::redirect(status, &location));
        let message = assert_error(&o, "upstream");
        assert!(message.contains(&status.to_string()), "{message}");
        assert!(
            matches!(&o.result, Err(EnrichError::Upstream(u)) if u.status == status),
            "{status}"
        );
    }
    assert_eq!(other.connections(), 0, "a redirect reached another host");
}

// ---- wrong types ----

#[test]
fn string_score_is_dropped() {
    let o = hostile("8.8.8.8", |_| {
        Action::json(
            200,
            r#"{"Zone":"Green","IpGeneralInfo":{"ThreatScore":"high"}}"#,
        )
    });
    let v = sound(&o, "8.8.8.8");
    assert_eq!(v.threat_score, None);
    assert_eq!(v.verdict, SoarVerdict::Benign);
}

#[test]
fn numeric_string_score_reads_as_its_number_and_still_floors_the_verdict() {
    // Lenient by design: "90" is read as 90, so a green zone cannot read benign.
    let o = hostile("8.8.8.8", |_| {
        Action::json(
            200,
            r#"{"Zone":"Green","IpGeneralInfo":{"ThreatScore":"90"}}"#,
        )
    });
    let v = sound(&o, "8.8.8.8");
    assert_eq!(v.threat_score, Some(90));
    assert_eq!(v.verdict, SoarVerdict::Suspicious);
}

#[test]
fn negative_score_is_dropped() {
    let o = hostile("8.8.8.8", |_| {
        Action::json(
            200,
            r#"{"Zone":"Green","IpGeneralInfo":{"ThreatScore":-5}}"#,
        )
    });
    assert_eq!(sound(&o, "8.8.8.8").threat_score, None);
}

#[test]
fn score_over_100_is_dropped() {
    let o = hostile("8.8.8.8", |_| {
        Action::json(
            200,
            r#"{"Zone":"Green","IpGeneralInfo":{"ThreatScore":250}}"#,
        )
    });
    assert_eq!(sound(&o, "8.8.8.8").threat_score, None);
}

#[test]
fn object_where_a_list_is_expected_reads_as_empty_or_a_list_of_one() {
    // A list of texts given an object is empty; a list of records given one
    // record reads as a list of one (lenient.rs `Records`, by design).
    let o = hostile("8.8.8.8", |_| {
        Action::json(
            200,
            r#"{"Zone":"Red","IpGeneralInfo":{"HasApt":true,"Categories":{"a":1},"RelatedAptReports":{"Id":"r1"}}}"#,
        )
    });
    let v = sound(&o, "8.8.8.8");
    assert!(v.categories.is_empty(), "{v:?}");
    assert_eq!(v.related_reports.len(), 1, "{v:?}");
    assert_eq!(v.related_reports[0].id, "r1");
    let o = hostile("8.8.8.8", |_| {
        Action::json(
            200,
            r#"{"Zone":"Red","IpGeneralInfo":{"Categories":{"a":1},"RelatedAptReports":{"Title":"no id"},"CategoriesWithZone":{"Zone":"Red"}}}"#,
        )
    });
    let v = sound(&o, "8.8.8.8");
    assert!(v.categories.is_empty(), "{v:?}");
    assert!(v.related_reports.is_empty(), "{v:?}");
}

/// Values of the wrong type (or out of range) for every field a verdict reads.
const WRONG: &[&str] = &[
    r#""90""#,
    "-5",
    "250",
    "99.5",
    "18446744073709551616",
    "1e999",
    "true",
    "null",
    r#"{"a":[1]}"#,
    r#"[1,"x",null]"#,
    r#""""#,
    r#""\u0000\ud800""#,
];

/// Where each wrong value goes: a path into [`ANSWER`].
const FIELDS: &[&[&str]] = &[
    &["LicenseInfo"],
    &["LicenseInfo", "AccessType"],
    &["LicenseInfo", "DayRequests"],
    &["LicenseInfo", "DayQuota"],
    &["LicenseInfo", "TokenExpirationDate"],
    &["Zone"],
    &["RelatedObjects"],
    &["IpGeneralInfo"],
    &["IpGeneralInfo", "HitsCount"],
    &["IpGeneralInfo", "FirstSeen"],
    &["IpGeneralInfo", "ThreatScore"],
    &["IpGeneralInfo", "Ip"],
    &["IpGeneralInfo", "CountryCode"],
    &["IpGeneralInfo", "Status"],
    &["IpGeneralInfo", "Categories"],
    &["IpGeneralInfo", "CategoriesWithZone"],
    &["IpGeneralInfo", "HasApt"],
    &["IpGeneralInfo", "RelatedAptReports"],
];

fn with_field(path: &[&str], raw_value: &str) -> String {
    // Splice the raw text in, so values serde_json itself would refuse (1e999,
    // lone surrogates) reach the component as a server would send them.
    const MARK: &str = "\"__WRONG__\"";
    let mut answer: serde_json::Value = serde_json::from_str(ANSWER).unwrap();
    let mut at = &mut answer;
    for key in &path[..path.len() - 1] {
        at = &mut at[*key];
    }
    at[path[path.len() - 1]] = serde_json::Value::String("__WRONG__".into());
    answer.to_string().replace(MARK, raw_value)
}

#[test]
fn wrong_types_for_every_field_give_sound_verdicts() {
    let bodies: Vec<String> = FIELDS
        .iter()
        .flat_map(|path| WRONG.iter().map(|w| with_field(path, w)))
        .collect();
    let count = bodies.len();
    // The address says which body to send: 1.2.<i / 256>.<i % 256>.
    let server = Server::start(move |seen| {
        let ip = seen.target.trim_start_matches("/api/ip/");
        let ip = ip.split('?').next().unwrap_or_default();
        let octets: Vec<usize> = ip.split('.').filter_map(|o| o.parse().ok()).collect();
        let i = octets[2] * 256 + octets[3];
        Action::json(200, &bodies[i])
    });
    let mut malformed = Vec::new();
    for i in 0..count {
        let ip = format!("1.2.{}.{}", i / 256, i % 256);
        let o = call(&server, &ip, settings(&server));
        assert_bounded(&o);
        let (path, wrong) = (FIELDS[i / WRONG.len()], WRONG[i % WRONG.len()]);
        match &o.result {
            Ok(v) => assert_sound(&ip, v),
            // Only what serde_json cannot represent (an infinite number, a
            // lone surrogate) may fail the whole parse.
            Err(e)
                if error_kind(e) == "malformed-response"
                    && (wrong == "1e999" || wrong.contains("\\ud800")) =>
            {
                malformed.push(path.join("."))
            }
            Err(e) => panic!(
                "{path:?} = {wrong}: {}: {}",
                error_kind(e),
                error_message(e)
            ),
        }
    }
    eprintln!("{count} bodies; malformed-response (the rest sound verdicts): {malformed:?}");
}
