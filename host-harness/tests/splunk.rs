//! `tip-enrich splunk-lookup` against Splunk's external lookup protocol:
//! Splunk runs `external_cmd` with the field names as arguments, writes CSV
//! (a header naming every `fields_list` field, then rows with the input
//! filled), and reads back the same header and one row per input row, in
//! order. The bundled recordings answer (no key), or a loopback server.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{Action, Server};

fn tip_enrich() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tip-enrich"));
    cmd.env_remove("TIP_API_KEY").env("TIP_ENRICH_CACHE", "off");
    cmd
}

fn run(cmd: &mut Command, stdin: &str) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.as_bytes()).unwrap();
    drop(pipe);
    child.wait_with_output().unwrap()
}

/// `splunk-lookup` on the bundled recordings: (exit code, parsed CSV rows
/// with the header first, stderr).
fn lookup(args: &[&str], stdin: &str) -> (i32, Vec<Vec<String>>, String) {
    let out = run(tip_enrich().arg("splunk-lookup").args(args), stdin);
    (out.status.code().unwrap(), parse(&out.stdout), stderr(&out))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Parses CSV as Splunk does (RFC 4180), independently of the writer.
fn parse(bytes: &[u8]) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes)
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect()
}

fn col(rows: &[Vec<String>], name: &str) -> usize {
    rows[0]
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", rows[0]))
}

fn cell<'a>(rows: &'a [Vec<String>], row: usize, name: &str) -> &'a str {
    &rows[row][col(rows, name)]
}

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/splunk")
}

#[test]
fn issue_13_splunk_header_order_is_kept_with_a_subset_of_fields_in_odd_order() {
    let header =
        "threat_score,categories,ip,found,zone,has_apt,related_report_ids,verdict,country_code";
    let input = format!("{header}\n,,45.9.148.108,,,,,,\n,,8.8.8.8,,,,,,\n");
    let (code, rows, err) = lookup(&[], &input);
    assert_eq!(code, 0, "{err}");
    assert_eq!(rows[0].join(","), header);
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.len() == rows[0].len()));
    assert_eq!(cell(&rows, 1, "ip"), "45.9.148.108");
    assert_eq!(cell(&rows, 1, "zone"), "red");
    assert_eq!(cell(&rows, 1, "verdict"), "malicious");
    assert_eq!(cell(&rows, 1, "has_apt"), "true");
    assert_eq!(cell(&rows, 1, "found"), "true");
    assert!(!cell(&rows, 1, "threat_score").is_empty());
    // Lists: one value per line in one cell (a Splunk multivalue field).
    let categories: Vec<&str> = cell(&rows, 1, "categories").split('\n').collect();
    assert!(categories.len() >= 2, "{categories:?}");
    assert!(cell(&rows, 1, "related_report_ids").contains('\n'));
    assert_eq!(cell(&rows, 2, "ip"), "8.8.8.8");
    assert_eq!(cell(&rows, 2, "zone"), "green");
    assert_eq!(cell(&rows, 2, "has_apt"), "false");
    assert_eq!(cell(&rows, 2, "related_report_ids"), "");
}

#[test]
fn issue_13_splunk_as_context_fields_are_output_fields() {
    let input =
        "ip,as_number,as_organization,network_name\n45.9.148.108,,,\n10.0.0.1,1,stale,stale\n";
    let out = run(
        tip_enrich().args(["--api", "opentip", "splunk-lookup"]),
        input,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = parse(&out.stdout);
    assert_eq!(
        rows[0],
        ["ip", "as_number", "as_organization", "network_name"]
    );
    assert_eq!(
        rows[1],
        ["45.9.148.108", "57043", "HOSTKEY-AS", "HOSTKEY-NET"]
    );
    // A local answer has none: the stale cells are emptied.
    assert_eq!(rows[2], ["10.0.0.1", "", "", ""]);
}

#[test]
fn issue_13_splunk_unknown_columns_are_echoed_untouched() {
    let input = "host,ip,zone,note\nweb-1,8.8.8.8,stale,\"keep, this\"\n";
    let (code, rows, err) = lookup(&[], input);
    assert_eq!(code, 0, "{err}");
    assert_eq!(rows[0], ["host", "ip", "zone", "note"]);
    assert_eq!(rows[1], ["web-1", "8.8.8.8", "green", "keep, this"]);
}

#[test]
fn issue_13_splunk_quoted_fields_and_crlf_input() {
    let input = "\"ip\",\"zone\",\"verdict\",\"comment\"\r\n\"8.8.8.8\",\"\",\"\",\"say \"\"hi\"\"\r\nsecond line\"\r\n\"45.9.148.108\",,,\r\n";
    let out = run(tip_enrich().arg("splunk-lookup"), input);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = parse(&out.stdout);
    assert_eq!(rows[0], ["ip", "zone", "verdict", "comment"]);
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows[1],
        ["8.8.8.8", "green", "benign", "say \"hi\"\r\nsecond line"]
    );
    assert_eq!(rows[2][..3], ["45.9.148.108", "red", "malicious"]);
    // The answer is RFC 4180: CRLF line ends, quotes doubled.
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("ip,zone,verdict,comment\r\n"), "{text}");
    assert!(text.contains("\"say \"\"hi\"\"\r\nsecond line\""), "{text}");
}

#[test]
fn issue_13_splunk_an_empty_ip_row_passes_through_with_outputs_empty() {
    let input = "ip,zone,verdict,error,host\n,red,stale,,h1\n8.8.8.8,,,,h2\n\"\",,,,h3\n";
    let (code, rows, err) = lookup(&[], input);
    assert_eq!(code, 0, "{err}");
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[1], ["", "", "", "", "h1"]);
    assert_eq!(rows[2][..3], ["8.8.8.8", "green", "benign"]);
    assert_eq!(rows[3], ["", "", "", "", "h3"]);
}

#[test]
fn issue_13_splunk_an_invalid_ip_fills_error_when_that_column_is_there() {
    let input = "ip,zone,verdict,error\nnot-an-ip,,,\n8.8.8.8,,,\n";
    let (code, rows, err) = lookup(&[], input);
    assert_eq!(code, 0, "a failed row is still exit 0: {err}");
    assert_eq!(rows[1][..3], ["not-an-ip", "", ""]);
    assert!(
        cell(&rows, 1, "error").starts_with("invalid-ip: "),
        "{:?}",
        rows[1]
    );
    assert_eq!(rows[2], ["8.8.8.8", "green", "benign", ""]);
}

#[test]
fn issue_13_splunk_an_invalid_ip_without_an_error_column_keeps_outputs_empty() {
    let input = "ip,zone,verdict\nnot-an-ip,orange,stale\n8.8.8.8,,\n";
    let (code, rows, err) = lookup(&[], input);
    assert_eq!(code, 0, "{err}");
    assert_eq!(rows[1], ["not-an-ip", "", ""]);
    assert_eq!(rows[2], ["8.8.8.8", "green", "benign"]);
    assert!(err.contains("1 of 2 rows failed"), "{err}");
}

#[test]
fn issue_13_splunk_repeated_addresses_are_sent_once() {
    let server = Server::start(|_| {
        Action::json(
            200,
            r#"{"Zone":"Red","IpGeneralInfo":{"Ip":"1.1.1.1","Status":"Known","ThreatScore":90,"HasApt":false,"CountryCode":"NL"}}"#,
        )
    });
    let mut input = String::from("ip,zone,threat_score,country_code\n");
    for _ in 0..5 {
        input.push_str("1.1.1.1,,,\n");
    }
    let out = run(
        tip_enrich()
            .env("TIP_API_KEY", "splunk-test-key")
            .arg("--base-url")
            .arg(server.url())
            .arg("splunk-lookup"),
        &input,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = parse(&out.stdout);
    assert_eq!(rows.len(), 6);
    for row in &rows[1..] {
        assert_eq!(row, &["1.1.1.1", "red", "90", "NL"]);
    }
    assert_eq!(server.seen().len(), 1, "{:?}", server.seen());
}

/// The `[tip_enrich]` stanza of deploy/splunk/transforms.conf as key/value pairs.
fn stanza(text: &str, name: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut pairs = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            inside = line == format!("[{name}]");
            continue;
        }
        if inside && let Some((k, v)) = line.split_once('=') {
            pairs.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    pairs
}

fn value<'a>(pairs: &'a [(String, String)], key: &str) -> &'a str {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in {pairs:?}"))
}

#[test]
fn issue_13_splunk_transforms_conf_names_the_script_and_fields_the_command_accepts() {
    let text = std::fs::read_to_string(deploy().join("transforms.conf")).unwrap();
    let pairs = stanza(&text, "tip_enrich");
    assert_eq!(value(&pairs, "external_type"), "executable");
    let cmd: Vec<&str> = value(&pairs, "external_cmd").split_whitespace().collect();
    let fields: Vec<&str> = value(&pairs, "fields_list")
        .split([',', ' '])
        .filter(|f| !f.is_empty())
        .collect();
    assert_eq!(cmd[0], "tip_enrich_lookup.sh");
    assert!(deploy().join(cmd[0]).is_file());
    assert_eq!(
        cmd[1..],
        fields[..],
        "external_cmd's arguments are fields_list"
    );
    assert_eq!(fields[0], "ip");
    for f in &fields {
        assert!(
            *f == "error" || tip_enrich::json::VERDICT_FIELDS.contains(f),
            "{f} is not a field of the verdict"
        );
    }
    // props.conf's automatic lookup uses this stanza and its fields.
    let props = std::fs::read_to_string(deploy().join("props.conf")).unwrap();
    let lookup = props
        .lines()
        .find(|l| l.starts_with("LOOKUP-"))
        .expect("a LOOKUP- line");
    let words: Vec<&str> = lookup.split_whitespace().collect();
    assert_eq!(words[2], "tip_enrich");
    let outputs = &words[words.iter().position(|w| *w == "OUTPUT").unwrap() + 1..];
    for (i, w) in outputs.iter().enumerate() {
        if i % 3 == 0 {
            assert!(
                fields.contains(w),
                "props.conf outputs {w}, not in fields_list"
            );
        }
    }
}

#[test]
fn issue_13_splunk_style_invocation_with_field_names_as_args() {
    // As Splunk does it: the wrapper script of transforms.conf, its
    // external_cmd arguments, and a header of every fields_list field.
    let text = std::fs::read_to_string(deploy().join("transforms.conf")).unwrap();
    let pairs = stanza(&text, "tip_enrich");
    let cmd: Vec<&str> = value(&pairs, "external_cmd").split_whitespace().collect();
    let header = cmd[1..].join(",");
    let empty = ",".repeat(cmd.len() - 2);
    let input = format!("{header}\r\n45.9.148.108{empty}\r\n{empty}\r\n10.0.0.1{empty}\r\n");
    let out = run(
        Command::new("sh")
            .arg(deploy().join(cmd[0]))
            .args(&cmd[1..])
            .env("TIP_ENRICH", env!("CARGO_BIN_EXE_tip-enrich"))
            .env("TIP_API_KEY_FILE", "/nonexistent/tip_api_key")
            .env_remove("TIP_API_KEY")
            .env("TIP_ENRICH_CACHE", "off"),
        &input,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = parse(&out.stdout);
    assert_eq!(rows[0].join(","), header);
    assert_eq!(rows.len(), 4);
    assert_eq!(cell(&rows, 1, "zone"), "red");
    assert_eq!(cell(&rows, 1, "source"), "api");
    assert_eq!(cell(&rows, 1, "error"), "");
    assert!(rows[2].iter().all(String::is_empty), "{:?}", rows[2]);
    assert_eq!(cell(&rows, 3, "status"), "reserved");
    assert_eq!(cell(&rows, 3, "source"), "local");
    // Extra positional arguments are accepted and ignored, and --quiet
    // leaves only the demo notice on stderr.
    let err = stderr(&out);
    assert!(!err.contains("rows failed"), "{err}");
}

#[test]
fn issue_13_splunk_input_field_names_another_column() {
    let input = "src,ip,zone\n8.8.8.8,,\n";
    let (code, rows, err) = lookup(&["--input-field", "src"], input);
    assert_eq!(code, 0, "{err}");
    assert_eq!(rows[1], ["8.8.8.8", "8.8.8.8", "green"]);
}

#[test]
fn issue_13_splunk_config_errors_exit_2() {
    let (code, rows, err) = lookup(&[], "zone,verdict\nx,y\n");
    assert_eq!(code, 2);
    assert!(rows.is_empty());
    assert!(err.contains("no \"ip\" column"), "{err}");
    let out = run(
        tip_enrich().args(["--timeout-ms", "0", "splunk-lookup"]),
        "ip,zone\n8.8.8.8,\n",
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}
