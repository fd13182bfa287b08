//! AS context in the verdict (issue 13): `as_number`, `as_organization` and
//! `network_name` from `IpWhoIs`, end to end through the `tip-enrich` CLI on
//! the bundled recordings: TIP with `IpWhoIs` asked for (`--sections`,
//! `TIP_SECTIONS`), TIP by default (not asked, so none), OpenTIP (always
//! sent), in native lines, `--full`, ECS, `events`, the answer store and `serve`.

mod common;

use std::process::{Command, Output};

use common::serving::Serving;
use serde_json::{Value, json};

/// The default verdict sections and `IpWhoIs`.
const WITH_WHOIS: &str = "LicenseInfo,Zone,IpGeneralInfo,IpWhoIs";
const IP: &str = "45.9.148.108";

fn tip_enrich() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tip-enrich"));
    cmd.env_remove("TIP_API_KEY")
        .env_remove("TIP_SECTIONS")
        .env("TIP_ENRICH_CACHE", "off")
        .arg("--quiet");
    cmd
}

fn lines(out: &Output) -> Vec<Value> {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn one(cmd: &mut Command) -> Value {
    let mut all = lines(&cmd.output().unwrap());
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

/// The three fields of a native line.
fn as_context(line: &Value) -> (Value, Value, Value) {
    (
        line["as_number"].clone(),
        line["as_organization"].clone(),
        line["network_name"].clone(),
    )
}

fn hostkey_tip() -> (Value, Value, Value) {
    (
        json!(57043),
        json!("HOSTKEY-AS"),
        json!("NL-HOSTKEY-20190612"),
    )
}

#[test]
fn tip_verdicts_have_as_context_when_ipwhois_is_asked_for() {
    // The flag and the variable: the recording answers only the URL that
    // asks for IpWhoIs, so a line at all shows the setting reached the request.
    let flag = one(tip_enrich().args(["--sections", WITH_WHOIS, IP]));
    let env = one(tip_enrich().env("TIP_SECTIONS", WITH_WHOIS).arg(IP));
    for line in [&flag, &env] {
        assert_eq!(as_context(line), hostkey_tip(), "{line}");
        assert_eq!(line["zone"], "red");
        assert_eq!(line["day_requests"], 18, "the IpWhoIs recording: {line}");
    }
    // After country_code, in this order.
    let text = String::from_utf8(
        tip_enrich()
            .args(["--sections", WITH_WHOIS, IP])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        text.contains(r#""country_code":"NL","as_number":57043,"as_organization":"HOSTKEY-AS","network_name":"NL-HOSTKEY-20190612","categories":"#),
        "{text}"
    );
    // No contact of the WHOIS record is shown.
    assert!(!text.contains("example.net"), "{text}");
}

#[test]
fn tip_verdicts_by_default_have_none() {
    // The default request asks LicenseInfo,Zone,IpGeneralInfo only.
    let line = one(tip_enrich().arg(IP));
    assert_eq!(line["day_requests"], 17, "the default recording: {line}");
    assert_eq!(as_context(&line), (Value::Null, Value::Null, Value::Null));
    // The fields are there, null, on every kind of verdict.
    for ip in ["10.0.0.1", "7.7.7.7"] {
        let line = one(tip_enrich().arg(ip));
        for key in ["as_number", "as_organization", "network_name"] {
            assert!(line.get(key).is_some(), "{ip}: no {key} in {line}");
        }
        assert_eq!(
            as_context(&line),
            (Value::Null, Value::Null, Value::Null),
            "{ip}"
        );
    }
}

#[test]
fn opentip_verdicts_have_as_context() {
    let line = one(tip_enrich().args(["--api", "opentip", IP]));
    assert_eq!(
        as_context(&line),
        (json!(57043), json!("HOSTKEY-AS"), json!("HOSTKEY-NET"))
    );
    let line = one(tip_enrich().args(["--api", "opentip", "8.8.8.8"]));
    assert_eq!(
        as_context(&line),
        (json!(15169), json!("GOOGLE"), json!("GOGL"))
    );
}

#[test]
fn full_reports_and_ecs_carry_it() {
    // --full: the verdict's fields, then the answer (with its IpWhoIs as sent).
    let full = one(tip_enrich().args(["--full", "--sections", WITH_WHOIS, IP]));
    assert_eq!(as_context(&full), hostkey_tip());
    assert_eq!(full["sections"]["IpWhoIs"]["Asn"][0]["Origin"], "AS57043");

    let ecs = one(tip_enrich().args(["--format", "ecs", "--sections", WITH_WHOIS, IP]));
    let indicator = &ecs["threat"]["enrichments"][0]["indicator"];
    assert_eq!(indicator["as"]["number"], 57043, "{ecs}");
    assert_eq!(indicator["as"]["organization"]["name"], "HOSTKEY-AS");
    assert_eq!(
        ecs["kaspersky"]["tip"]["network_name"],
        "NL-HOSTKEY-20190612"
    );

    let ecs = one(tip_enrich().args(["--format", "ecs", "--api", "opentip", "8.8.8.8"]));
    let indicator = &ecs["threat"]["enrichments"][0]["indicator"];
    assert_eq!(
        indicator["as"],
        json!({"number": 15169, "organization": {"name": "GOOGLE"}})
    );
    assert_eq!(ecs["kaspersky"]["tip"]["network_name"], "GOGL");

    // Without AS context ECS has no `as` at all.
    let ecs = one(tip_enrich().args(["--format", "ecs", IP]));
    let indicator = &ecs["threat"]["enrichments"][0]["indicator"];
    assert!(indicator.get("as").is_none(), "{ecs}");
    assert_eq!(ecs["kaspersky"]["tip"]["network_name"], Value::Null);
}

#[test]
fn event_enrichments_carry_it() {
    let mut cmd = tip_enrich();
    cmd.args(["--api", "opentip", "events"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(format!("{{\"source\":{{\"ip\":\"{IP}\"}}}}\n").as_bytes())
            .unwrap();
    }
    let event = &lines(&child.wait_with_output().unwrap())[0];
    let entry = &event["threat"]["enrichments"][0];
    assert_eq!(
        entry["indicator"]["as"],
        json!({"number": 57043, "organization": {"name": "HOSTKEY-AS"}}),
        "{event}"
    );
    assert_eq!(entry["kaspersky"]["tip"]["network_name"], "HOSTKEY-NET");
}

#[test]
fn a_stored_answer_keeps_the_as_context() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("answers.sqlite");
    let run = || {
        one(tip_enrich()
            .env("TIP_ENRICH_CACHE", &cache)
            .args(["--sections", WITH_WHOIS, IP]))
    };
    let first = run();
    let again = run();
    assert_eq!(first["source"], "api");
    assert_eq!(again["source"], "cache", "{again}");
    assert_eq!(as_context(&again), hostkey_tip());
    // What the file holds: the AS context, never the WHOIS contacts.
    let bytes = std::fs::read(&cache).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("NL-HOSTKEY-20190612"));
    assert!(!text.contains("abuse@example.net") && !text.contains("noc@example.net"));
}

#[test]
fn serve_answers_with_it() {
    let tip = Serving::start(&["--sections", WITH_WHOIS], &[]);
    let (status, line) = tip.get_json(&format!("/v1/ip/{IP}"));
    assert_eq!(status, 200, "{line}");
    assert_eq!(as_context(&line), hostkey_tip());
    let (_, ecs) = tip.get_json(&format!("/v1/ip/{IP}?format=ecs"));
    assert_eq!(
        ecs["threat"]["enrichments"][0]["indicator"]["as"]["number"],
        57043
    );
    // Byte for byte the CLI's line.
    let a = tip.request("GET", &format!("/v1/ip/{IP}"), "");
    let cli = tip_enrich()
        .args(["--sections", WITH_WHOIS, IP])
        .output()
        .unwrap();
    assert_eq!(a.body, String::from_utf8(cli.stdout).unwrap().trim_end());
    drop(tip);

    let opentip = Serving::start(&["--api", "opentip"], &[]);
    let (status, line) = opentip.get_json("/v1/ip/8.8.8.8");
    assert_eq!(status, 200, "{line}");
    assert_eq!(
        as_context(&line),
        (json!(15169), json!("GOOGLE"), json!("GOGL"))
    );
}
