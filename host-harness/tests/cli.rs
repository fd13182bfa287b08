//! The `tip-enrich` command as playbooks call it: JSON Lines on stdout, exit
//! codes, stdin, replay/live/record, and no key in any output.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Action, Server};
use serde_json::Value;

const KEY: &str = "cli-secret-key-9f8e7d6c5b4a";

fn tip_enrich() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tip-enrich"));
    // Each test starts with no answer store; the store's own tests say where.
    cmd.env_remove("TIP_API_KEY").env("TIP_ENRICH_CACHE", "off");
    cmd
}

fn run(cmd: &mut Command, stdin: Option<&str>) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        pipe.write_all(text.as_bytes()).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn all_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn demo_replays_bundled_recordings_and_says_so() {
    let out = run(
        tip_enrich().args(["45.9.148.108", "8.8.8.8", "10.0.0.1"]),
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", all_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("demo mode"));
    let lines = lines(&out);
    assert_eq!(lines.len(), 3);
    let first = &lines[0];
    assert_eq!(first["ip"], "45.9.148.108");
    assert_eq!(first["zone"], "red");
    assert_eq!(first["threat_score"], 92);
    assert_eq!(first["has_apt"], true);
    assert_eq!(first["related_report_ids"].as_array().unwrap().len(), 3);
    assert_eq!(first["verdict"], "malicious");
    assert_eq!(first["found"], true);
    assert_eq!(first["source"], "api");
    assert_eq!(first["suspicious"], false);
    let keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let fields = tip_enrich::json::VERDICT_FIELDS;
    assert_eq!(
        keys,
        fields[..fields.len() - 1],
        "every field but reserved_block"
    );
    assert_eq!(lines[2]["source"], "local");
    assert_eq!(lines[2]["zone"], "grey");
}

#[test]
fn stdin_lines_in_order_skipping_blanks_and_comments() {
    let input = "# alert 4711\n45.9.148.108\n\n   \n  # another comment\n9.9.9.9\nnot-an-ip\n2a0e:1c80:1::1\r\n";
    let out = run(&mut tip_enrich(), Some(input));
    assert_eq!(out.status.code(), Some(1), "an error line means exit 1");
    let lines = lines(&out);
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["ip"], "45.9.148.108");
    assert_eq!(lines[1]["ip"], "9.9.9.9");
    assert_eq!(lines[1]["error"]["kind"], "rate-limited");
    assert_eq!(lines[1]["error"]["retry_after_secs"], 1);
    assert_eq!(
        lines[2]["ip"], "not-an-ip",
        "errors echo the input as given"
    );
    assert_eq!(lines[2]["error"]["kind"], "invalid-ip");
    assert_eq!(lines[3]["ip"], "2a0e:1c80:1::1");
    assert_eq!(lines[3]["zone"], "orange");
}

#[test]
fn many_inputs_keep_one_line_each_in_order() {
    // More than one chunk of 64, mixing local and replayed answers.
    let ips: Vec<String> = (0..150)
        .map(|i| {
            if i % 3 == 0 {
                "8.8.8.8".to_owned()
            } else {
                format!("10.0.{}.{}", i / 256, i % 256)
            }
        })
        .collect();
    let out = run(&mut tip_enrich(), Some(&ips.join("\n")));
    assert_eq!(out.status.code(), Some(0), "{}", all_text(&out));
    let lines = lines(&out);
    assert_eq!(lines.len(), ips.len());
    for (line, ip) in lines.iter().zip(&ips) {
        assert_eq!(line["ip"], ip.as_str());
    }
}

#[test]
fn exit_codes() {
    let upstream = run(tip_enrich().arg("11.11.11.11"), None);
    assert_eq!(upstream.status.code(), Some(1));
    assert_eq!(lines(&upstream)[0]["error"]["status"], 500);

    let usage = run(tip_enrich().args(["--api", "virustotal", "8.8.8.8"]), None);
    assert_eq!(usage.status.code(), Some(2));
    let both = run(
        tip_enrich().args(["--replay", ".", "--record", ".", "8.8.8.8"]),
        None,
    );
    assert_eq!(both.status.code(), Some(2));
    let config = run(
        tip_enrich().args(["--sections", "Zone&x=1", "8.8.8.8"]),
        None,
    );
    assert_eq!(config.status.code(), Some(2));
    assert_eq!(lines(&config)[0]["error"]["kind"], "config");
    let missing = run(
        tip_enrich().args(["--replay", "/nonexistent/recordings", "8.8.8.8"]),
        None,
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/recordings"));
}

#[test]
fn full_prints_every_section_and_the_raw_answer() {
    let out = run(tip_enrich().args(["--full", "45.9.148.108"]), None);
    assert_eq!(out.status.code(), Some(0), "{}", all_text(&out));
    let line = &lines(&out)[0];
    assert_eq!(line["verdict"], "malicious");
    // `sections` is the API's answer, compacted onto the line, keys as the API spells them.
    let sections = &line["sections"];
    assert_eq!(sections["HostedUrls"].as_array().unwrap().len(), 1000);
    assert_eq!(sections["IpWhoIs"]["Asn"][0]["Number"], "57043");
    assert_eq!(
        sections["IpGeneralInfo"]["CategoriesWithZone"][0]["Zone"],
        "Red"
    );
    assert_eq!(sections["IPSpamInfo"]["spam_attacks"], 1200);
    let local = run(tip_enrich().args(["--full", "10.0.0.1"]), None);
    assert_eq!(lines(&local)[0]["sections"], serde_json::Value::Null);
}

#[test]
fn live_run_against_loopback_with_key_file_and_timeout() {
    let server = Server::start(|seen| match seen.target.as_str() {
        t if t.contains("1.1.1.1") => {
            Action::json(200, r#"{"Zone":"Green","IpGeneralInfo":{"ThreatScore":1}}"#)
        }
        _ => Action::Stall(Duration::from_secs(5)),
    });
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("alice:{KEY}\n")).unwrap();
    let out = run(
        tip_enrich()
            .args([
                "--base-url",
                &server.url(),
                "--auth",
                "basic",
                "--timeout-ms",
                "400",
                "--api-key-file",
            ])
            .arg(&key_file)
            .args(["1.1.1.1", "1.0.0.1"]),
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", all_text(&out));
    let lines = lines(&out);
    assert_eq!(lines[0]["verdict"], "benign");
    assert_eq!(lines[1]["error"]["kind"], "timeout");
    assert!(
        server.seen()[0]
            .header("authorization")
            .unwrap()
            .starts_with("Basic ")
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("demo"));
}

#[test]
fn the_key_never_appears_in_output_or_recordings() {
    // A hostile server echoes the key back in headers and in the body.
    let server = Server::start(|seen| {
        let echoed = seen.header("x-api-key").unwrap_or("none").to_owned();
        if seen.target.contains("5.5.5.5") {
            Action::Respond {
                status: 401,
                headers: vec![("x-echo".into(), echoed.clone())],
                body: format!("bad key {echoed}").into_bytes(),
            }
        } else if seen.target.contains("6.6.6.6") {
            Action::Respond {
                status: 500,
                headers: vec![],
                body: format!("<html><title>error for {echoed}</title></html>").into_bytes(),
            }
        } else {
            Action::Respond {
                status: 200,
                headers: vec![("x-echo".into(), echoed.clone())],
                body: format!(r#"{{"Zone":"Red","IpGeneralInfo":{{"Categories":["{echoed}"]}}}}"#)
                    .into_bytes(),
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        tip_enrich()
            .env("TIP_API_KEY", KEY)
            .args(["--retries", "0", "--base-url", &server.url(), "--record"])
            .arg(dir.path())
            .args(["5.5.5.5", "6.6.6.6", "7.7.7.7"]),
        None,
    );
    assert_eq!(server.seen().len(), 3, "{}", all_text(&out));
    assert!(
        server
            .seen()
            .iter()
            .all(|s| s.header("x-api-key") == Some(KEY))
    );
    let text = all_text(&out);
    assert!(
        !text.contains(KEY),
        "the key leaked to stdout/stderr:\n{text}"
    );
    assert!(text.contains("[redacted]"));
    let mut recorded = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let content = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(
            !content.contains(KEY),
            "the key leaked to a recording:\n{content}"
        );
        recorded += 1;
    }
    assert_eq!(recorded, 6);
}

#[test]
fn another_component_build_can_be_given() {
    let out = run(
        tip_enrich().args([
            "--component",
            host_harness::runtime::COMPONENT_PATH,
            "8.8.8.8",
        ]),
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", all_text(&out));
    assert_eq!(lines(&out)[0]["verdict"], "benign");
    let bad = run(
        tip_enrich().args(["--component", "/nonexistent.wasm", "8.8.8.8"]),
        None,
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/nonexistent.wasm"));
}

/// Issue #10: a 20 MB input line came back whole in its error line.
#[test]
fn issue_10_an_error_line_echoes_a_bounded_excerpt_of_a_huge_input() {
    let huge = format!("{}\n8.8.8.8\n", "x".repeat(20 * 1024 * 1024));
    let out = run(tip_enrich().arg("--quiet"), Some(&huge));
    assert_eq!(out.status.code(), Some(1), "{}", all_text(&out));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let first = text.lines().next().unwrap();
    assert!(first.len() < 1024, "{} bytes", first.len());
    let lines = lines(&out);
    assert_eq!(lines.len(), 2, "one line per input");
    assert_eq!(lines[0]["error"]["kind"], "invalid-ip");
    let echoed = lines[0]["ip"].as_str().unwrap();
    assert_eq!(echoed.chars().count(), tip_enrich::json::MAX_ECHO_CHARS + 1);
    assert!(echoed.ends_with('…'));
    assert_eq!(lines[1]["zone"], "green");
}

/// Issue #10: `tip-enrich < big.txt | head -1` printed "Broken pipe".
#[test]
fn issue_10_a_closed_stdout_ends_the_run_quietly() {
    use std::io::{BufRead, BufReader};
    let mut child = tip_enrich()
        .arg("--quiet")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Enough addresses (answered locally, so fast) to outlast the reader.
    let writer = std::thread::spawn(move || {
        for i in 0..200_000u32 {
            let line = format!("10.{}.{}.{}\n", i >> 16, (i >> 8) & 255, i & 255);
            if stdin.write_all(line.as_bytes()).is_err() {
                break;
            }
        }
    });
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("\"10.0.0.0\""), "{first}");
    // Like `head -1`: the reader goes away.
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.to_lowercase().contains("broken pipe"), "{stderr}");
    assert!(
        stderr.trim().is_empty() || stderr.contains("demo mode"),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
