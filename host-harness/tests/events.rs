//! `tip-enrich events` and `POST /v1/events` (issue 13): NDJSON events in,
//! the same events out, in order, one line per line, with ECS
//! `threat.enrichments[]` appended; every other byte kept.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::serving::Serving;
use common::{Action, Server};
use serde_json::Value;

fn recordings() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/recordings")
}

/// `events` on the test recordings, no store.
fn events() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tip-enrich"));
    cmd.env_remove("TIP_API_KEY")
        .env("TIP_ENRICH_CACHE", "off")
        .arg("events")
        .arg("--replay")
        .arg(recordings());
    cmd
}

fn run(cmd: &mut Command, stdin: &[u8]) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    // Written from a thread: a large input must not block on a full stdout.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn lines(bytes: &[u8]) -> Vec<&[u8]> {
    bytes.split(|b| *b == b'\n').collect()
}

fn json(line: &[u8]) -> Value {
    serde_json::from_slice(line)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(line)))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// (matched.field, matched.atomic, indicator verdict) of each enrichment.
fn enrichments(event: &Value) -> Vec<(String, String, String)> {
    event["threat"]["enrichments"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e.get("kaspersky").is_some())
                .map(|e| {
                    (
                        e["matched"]["field"].as_str().unwrap().to_owned(),
                        e["matched"]["atomic"].as_str().unwrap().to_owned(),
                        e["kaspersky"]["tip"]["verdict"]
                            .as_str()
                            .unwrap()
                            .to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn triple(field: &str, atomic: &str, verdict: &str) -> (String, String, String) {
    (field.into(), atomic.into(), verdict.into())
}

#[test]
fn issue_13_events_appends_enrichments_and_keeps_every_other_byte() {
    let input = concat!(
        // Nested fields; a benign destination (not admitted by default).
        r#"{"@timestamp":"2026-12-01T10:00:00.123Z","event":{"id":"a1"},"source":{"ip":"45.9.148.108","port":4444},"destination":{"ip":"8.8.8.8"},"n":12345678901234567890,"f":1.50e1,"s":"caf\u00e9 \"q\""}"#,
        "\n",
        // Dotted keys, an array, an address at two fields, an enrichment already there.
        r#"{"source.ip":"194.165.16.11","related":{"ip":["194.165.16.11","45.9.148.108"]},"threat":{"enrichments":[{"indicator":{"provider":"other"}}]}}"#,
        "\n",
        // Whitespace and key order as a pretty printer left them, and IPv6.
        r#"{ "z" : 1 , "client" : { "ip" : "2a0e:1c80:1::1" } , "a" : [ ] }"#,
        "\n",
        // Reserved and benign only: nothing to add.
        r#"{"host":{"ip":["10.0.0.1","8.8.8.8"]}}"#,
        "\n",
    );
    let out = run(&mut events(), input.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = lines(&out.stdout);
    let want = lines(input.as_bytes());
    assert_eq!(
        got.len(),
        want.len(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(got.last(), Some(&&b""[..]), "the last newline is kept");

    // 1: everything before the closing brace is the input's own bytes.
    let first = want[0];
    assert!(got[0].starts_with(&first[..first.len() - 1]));
    assert!(got[0].ends_with(b"}}"));
    let v = json(got[0]);
    assert_eq!(
        enrichments(&v),
        [triple("source.ip", "45.9.148.108", "malicious")]
    );
    let e = &v["threat"]["enrichments"][0];
    assert_eq!(e["indicator"]["type"], "ipv4-addr");
    assert_eq!(e["indicator"]["ip"], "45.9.148.108");
    assert_eq!(
        e["indicator"]["provider"],
        "Kaspersky Threat Intelligence Portal"
    );
    assert_eq!(e["indicator"]["confidence"], "High");
    assert_eq!(e["matched"]["type"], "enrichment");
    assert_eq!(e["kaspersky"]["tip"]["zone"], "red");
    assert!(
        e["kaspersky"]["tip"]["related_report_ids"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    );
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "@timestamp",
            "event",
            "source",
            "destination",
            "n",
            "f",
            "s",
            "threat"
        ]
    );

    // 2: the enrichment already there stays first; one entry per address and field.
    let v = json(got[1]);
    let all = v["threat"]["enrichments"].as_array().unwrap();
    assert_eq!(
        all[0],
        serde_json::json!({"indicator":{"provider":"other"}})
    );
    assert_eq!(
        enrichments(&v),
        [
            triple("source.ip", "194.165.16.11", "malicious"),
            triple("related.ip", "194.165.16.11", "malicious"),
            triple("related.ip", "45.9.148.108", "malicious"),
        ]
    );

    // 3: spacing kept; IPv6 looked up (the recording is red).
    assert!(
        got[2].starts_with(br#"{ "z" : 1 , "client" : { "ip" : "2a0e:1c80:1::1" } , "a" : [ ] "#)
    );
    let v = json(got[2]);
    assert_eq!(enrichments(&v).len(), 1);
    assert_eq!(
        v["threat"]["enrichments"][0]["indicator"]["type"],
        "ipv6-addr"
    );

    // 4: nothing admitted, so the line is the input's.
    assert_eq!(got[3], want[3]);
    assert!(stderr(&out).contains("4 events, 3 enriched (5 enrichments), 0 failed lookups"));
}

#[test]
fn issue_13_events_lines_that_are_not_objects_pass_through_byte_for_byte_and_are_counted() {
    let mut input: Vec<u8> = Vec::new();
    for part in [
        &b"not json at all\n"[..],
        b"[\"45.9.148.108\"]\n",
        b"{\"source\":{\"ip\":\"45.9.148.108\"}\n",
        b"\xff\xfe{}\n",
        b"\n",
        b"   \n",
        b"{\"source\":{\"ip\":\"45.9.148.108\"}}\r\n",
        b"null\n",
        b"{\"source\":{\"ip\":\"194.165.16.11\"}}",
    ] {
        input.extend_from_slice(part);
    }
    let out = run(&mut events(), &input);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = lines(&out.stdout);
    let want = lines(&input);
    assert_eq!(got.len(), want.len());
    for i in [0, 1, 2, 3, 4, 5, 7] {
        assert_eq!(got[i], want[i], "line {i}");
    }
    // A CRLF line keeps its \r after the enrichment; the last line gets no newline.
    assert!(got[6].ends_with(b"}\r"));
    assert_eq!(enrichments(&json(got[6])).len(), 1);
    assert!(!out.stdout.ends_with(b"\n"));
    assert_eq!(enrichments(&json(got[8])).len(), 1);
    assert!(
        stderr(&out).contains("5 lines not JSON objects passed through unchanged"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn issue_13_events_field_and_only_choose_what_is_looked_up_and_added() {
    let input = concat!(
        r#"{"user":{"ip":"103.224.182.250"},"source":{"ip":"45.9.148.108"},"observer.ip":["8.8.8.8"]}"#,
        "\n"
    );
    // --field replaces the defaults; --only all admits every verdict.
    let out = run(
        events().args([
            "--field",
            "user.ip",
            "--field",
            "observer.ip",
            "--only",
            "all",
        ]),
        input.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        enrichments(&json(lines(&out.stdout)[0])),
        [
            triple("user.ip", "103.224.182.250", "suspicious"),
            triple("observer.ip", "8.8.8.8", "benign"),
        ]
    );
    // --only suspicious leaves the malicious one out; a comma list works too.
    let out = run(
        events().args(["--field", "source.ip,user.ip", "--only", "suspicious"]),
        input.as_bytes(),
    );
    assert_eq!(
        enrichments(&json(lines(&out.stdout)[0])),
        [triple("user.ip", "103.224.182.250", "suspicious")]
    );
    // Bad values are usage errors before anything is read.
    for args in [
        &["--only", "evil"][..],
        &["--field", "source..ip"],
        &["--field", ""],
    ] {
        let out = run(events().args(args), input.as_bytes());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn issue_13_events_failed_lookups_are_listed_under_kaspersky_tip_errors() {
    let input = concat!(
        r#"{"source":{"ip":"not-an-ip"},"destination":{"ip":"5.5.5.5"},"kaspersky":{"tip":{"note":"kept"}}}"#,
        "\n",
        r#"{"source":{"ip":"45.9.148.108"}}"#,
        "\n",
    );
    let out = run(&mut events(), input.as_bytes());
    assert_eq!(out.status.code(), Some(1), "a failed lookup exits 1");
    let got = lines(&out.stdout);
    let v = json(got[0]);
    assert!(
        enrichments(&v).is_empty(),
        "a failed lookup adds no enrichment"
    );
    assert!(v.get("threat").is_none());
    assert_eq!(v["kaspersky"]["tip"]["note"], "kept");
    let errors = v["kaspersky"]["tip"]["errors"].as_array().unwrap();
    let listed: Vec<(&str, &str, &str)> = errors
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap(),
                e["address"].as_str().unwrap(),
                e["field"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("invalid-ip", "not-an-ip", "source.ip"),
            ("unauthorized", "5.5.5.5", "destination.ip"),
        ]
    );
    assert!(
        errors
            .iter()
            .all(|e| !e["message"].as_str().unwrap().is_empty())
    );
    assert_eq!(enrichments(&json(got[1])).len(), 1);
    assert!(stderr(&out).contains("2 failed lookups"));
}

#[test]
fn issue_13_events_repeats_cost_one_request_per_address_through_the_store() {
    let server = Server::start(|_| {
        Action::json(
            200,
            r#"{"Zone":"Red","IpGeneralInfo":{"ThreatScore":90,"Status":"Known"}}"#,
        )
    });
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("answers.sqlite");
    // 10 000 events (more than one chunk) over 5 addresses.
    let mut input = String::new();
    for i in 0..10_000 {
        input.push_str(&format!(
            "{{\"n\":{i},\"source\":{{\"ip\":\"45.9.148.{}\"}}}}\n",
            100 + i % 5
        ));
    }
    let cli = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tip-enrich"));
        cmd.env("TIP_API_KEY", "events-test-key")
            .args(["events", "--quiet", "--base-url", &server.url()])
            .arg("--cache")
            .arg(&store);
        cmd
    };
    let out = run(&mut cli(), input.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = lines(&out.stdout);
    assert_eq!(got.len(), 10_001);
    for (i, line) in got.iter().take(10_000).enumerate() {
        let v = json(line);
        assert_eq!(v["n"], i, "order kept");
        assert_eq!(enrichments(&v).len(), 1);
    }
    assert_eq!(server.seen().len(), 5);
    // A second run answers from the store: no request at all.
    let out = run(&mut cli(), input.as_bytes());
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(server.seen().len(), 5);
    let v = json(lines(&out.stdout)[0]);
    assert_eq!(
        v["threat"]["enrichments"][0]["kaspersky"]["tip"]["source"],
        "cache"
    );
}

#[test]
fn issue_13_events_a_line_over_the_limit_passes_through_unchanged() {
    let long = format!(
        "{{\"source\":{{\"ip\":\"45.9.148.108\"}},\"pad\":\"{}\"}}",
        "x".repeat(3 << 20)
    );
    let input = format!("{long}\n{{\"source\":{{\"ip\":\"45.9.148.108\"}}}}\n");
    let out = run(
        events().args(["--max-event-bytes", "65536"]),
        input.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = lines(&out.stdout);
    assert_eq!(got[0], long.as_bytes());
    assert_eq!(enrichments(&json(got[1])).len(), 1);
    assert!(stderr(&out).contains("1 lines over --max-event-bytes passed through unchanged"));
}

#[test]
fn issue_13_events_answers_each_event_as_it_arrives() {
    let mut child = events()
        .arg("--quiet")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    for ip in ["45.9.148.108", "194.165.16.11"] {
        writeln!(stdin, "{{\"source\":{{\"ip\":\"{ip}\"}}}}").unwrap();
        stdin.flush().unwrap();
        // stdin stays open: the answer must come before the input ends.
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["threat"]["enrichments"][0]["matched"]["atomic"], ip);
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[test]
fn issue_13_post_v1_events_on_the_service() {
    let serving = Serving::start(&["--replay", recordings().to_str().unwrap()], &[]);
    let body = concat!(
        r#"{"source":{"ip":"45.9.148.108"},"user":{"ip":"8.8.8.8"}}"#,
        "\n",
        "not json\n",
        r#"{"source":{"ip":"bad"}}"#,
    );
    let a = serving.request("POST", "/v1/events", body);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("content-type"), Some("application/x-ndjson"));
    let got: Vec<&str> = a.body.split('\n').collect();
    assert_eq!(got.len(), 3);
    assert_eq!(
        enrichments(&json(got[0].as_bytes())),
        [triple("source.ip", "45.9.148.108", "malicious")]
    );
    assert_eq!(got[1], "not json");
    assert_eq!(
        json(got[2].as_bytes())["kaspersky"]["tip"]["errors"][0]["kind"],
        "invalid-ip"
    );
    // ?field= and ?only= as the CLI's flags.
    let a = serving.request("POST", "/v1/events?field=user.ip&only=all", body);
    assert_eq!(
        enrichments(&json(a.body.split('\n').next().unwrap().as_bytes())),
        [triple("user.ip", "8.8.8.8", "benign")]
    );
    let a = serving.request("POST", "/v1/events?only=evil", body);
    assert_eq!(a.status, 400);
    assert!(a.body.contains("bad-query"), "{}", a.body);
    let a = serving.request("GET", "/v1/events", "");
    assert_eq!((a.status, a.header("allow")), (405, Some("POST")));
}
