//! `--format stix` and `?format=stix`: every bundle the CLI and the service
//! write for the bundled recordings is checked by `tests/stix/check.py` with
//! the OASIS `stix2` library (strict), `stix2-patterns`, and against the
//! native line of the same answer (README, "STIX"). The script also proves
//! it rejects broken bundles. Its Python environment, pinned by
//! `tests/stix/requirements.txt`, is installed into
//! `~/.cache/tip-enrich/venv-stix` when missing (`.ci/run` installs it first).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use common::serving::Serving;
use host_harness::BUNDLED_RECORDINGS;
use serde_json::{Value, json};

const KEY: &str = "stix-secret-key-5f4e3d2c1b0a";

fn stix_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/stix")
}

/// The venv's python, with the pinned packages: created and installed once
/// per test binary when the venv is missing or its pins changed.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let home = std::env::var_os("HOME").expect("HOME is not set");
        let venv = Path::new(&home).join(".cache/tip-enrich/venv-stix");
        let python = venv.join("bin/python");
        let requirements = stix_dir().join("requirements.txt");
        let wanted = std::fs::read_to_string(&requirements).unwrap();
        let stamp = venv.join("tip-enrich-requirements.txt");
        if python.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&wanted) {
            return python;
        }
        let run = |cmd: &mut Command, what: &str| {
            let out = cmd.output().unwrap_or_else(|e| {
                panic!("{what}: cannot run it ({e}); the STIX tests need Python 3.9+ with venv")
            });
            assert!(
                out.status.success(),
                "{what} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        if !python.exists() {
            run(
                Command::new("python3").args(["-m", "venv"]).arg(&venv),
                "python3 -m venv ~/.cache/tip-enrich/venv-stix",
            );
        }
        run(
            Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "--disable-pip-version-check", "-r"])
                .arg(&requirements),
            "pip install -r tests/stix/requirements.txt",
        );
        std::fs::write(&stamp, wanted).unwrap();
        python
    })
}

/// Runs check.py over `pairs` ({api, verdict, bundle}); fails with its
/// message. Returns its summary line.
fn check(pairs: &[Value]) -> String {
    let mut input = String::new();
    for p in pairs {
        input.push_str(&p.to_string());
        input.push('\n');
    }
    let mut child = Command::new(python())
        .arg(stix_dir().join("check.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "tests/stix/check.py rejected the bundles:\n{}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The summary says `indicators` bundles with an indicator, `notes` with a
/// note, and that the broken copies were rejected.
fn assert_summary(summary: &str, total: usize, indicators: usize, notes: usize) {
    let want = format!(
        "checked {total} bundles ({indicators} with an indicator, {notes} with a note); self-check: "
    );
    assert!(summary.starts_with(&want), "{summary}");
    let counts: Vec<usize> = summary
        .trim_end()
        .trim_end_matches(" broken bundles rejected")
        .rsplit("self-check: ")
        .next()
        .unwrap()
        .split(" of ")
        .map(|n| n.parse().unwrap())
        .collect();
    let (rejected, tried) = (counts[0], counts[1]);
    // 13 broken copies of an indicator bundle, 10 of a note bundle, and 2
    // more of each whose answer names an autonomous system.
    let least = if indicators > 0 { 13 } else { 0 } + if notes > 0 { 10 } else { 0 };
    assert!(tried >= least, "{summary}");
    assert_eq!(rejected, tried, "{summary}");
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` as Unix ms.
fn parse_ms(ts: &str) -> u64 {
    let n = |r: std::ops::Range<usize>| ts[r].parse::<u64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from civil (H. Hinnant), for years after 1970.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)) * 1000) + n(20..23)
}

/// The CLI's lines for `args` (with `--quiet`), and its exit status.
fn cli(args: &[&str], cache: Option<&Path>) -> (Option<i32>, Vec<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tip-enrich"));
    cmd.env("TIP_API_KEY", KEY).arg("--quiet");
    match cache {
        Some(path) => cmd.env_remove("TIP_ENRICH_CACHE").arg("--cache").arg(path),
        None => cmd.env("TIP_ENRICH_CACHE", "off"),
    };
    let out = cmd.args(args).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains(KEY), "the key is in the output");
    (out.status.code(), text.lines().map(str::to_owned).collect())
}

/// Native and STIX lines for the same inputs paired for check.py; error
/// lines must be the same bytes in both (a bundle cannot carry an error).
fn pair(api: &str, native: &[String], stix: &[String]) -> Vec<Value> {
    assert_eq!(native.len(), stix.len());
    let mut pairs = Vec::new();
    for (n, s) in native.iter().zip(stix) {
        let verdict: Value = serde_json::from_str(n).unwrap();
        if verdict.get("error").is_some() {
            assert_eq!(s, n, "an error is the native error line in STIX output too");
            continue;
        }
        let bundle: Value = serde_json::from_str(s).unwrap();
        pairs.push(json!({"api": api, "verdict": verdict, "bundle": bundle}));
    }
    pairs
}

/// Every object's `created` lies within [from, to] (ms).
fn assert_created_within(pairs: &[Value], from: u64, to: u64) {
    for p in pairs {
        for o in p["bundle"]["objects"].as_array().unwrap() {
            if o["type"] == "identity" {
                continue;
            }
            if let Some(created) = o["created"].as_str() {
                let at = parse_ms(created);
                assert!(
                    (from..=to).contains(&at),
                    "{created} is not within the run ({from}..{to})"
                );
            }
        }
    }
}

#[test]
fn cli_bundles_for_every_kind_of_answer_pass_stix2() {
    // Red with APT reports, red 100, orange, yellow, green, grey (no info),
    // 404, reserved (local), IPv6 (normalised), nulls, a first-seen without
    // seconds, the score floor (green 74 reads suspicious), and two errors.
    let ips = [
        "45.9.148.108",
        "194.165.16.11",
        "185.220.101.1",
        "103.224.182.250",
        "8.8.8.8",
        "5.255.255.5",
        "7.7.7.7",
        "10.0.0.1",
        "2A0E:1C80:0001:0000::1",
        "77.88.55.242",
        "62.210.16.6",
        "::ffff:151.101.1.69",
        "nope",
        "4.4.4.4",
    ];
    let replay = ["--replay", BUNDLED_RECORDINGS];
    let (native_code, native) = cli(&[&replay[..], &ips[..]].concat(), None);
    let from = now_ms();
    let (stix_code, stix) = cli(
        &[&replay[..], &["--format", "stix"], &ips[..]].concat(),
        None,
    );
    let to = now_ms();
    assert_eq!(native_code, Some(1), "two inputs are errors");
    assert_eq!(
        stix_code, native_code,
        "the exit status does not depend on the format"
    );
    let pairs = pair("tip", &native, &stix);
    assert_eq!(pairs.len(), ips.len() - 2);
    assert_created_within(&pairs, from, to);
    // Red x2, orange, yellow, IPv6 (orange), green 74: indicators; green,
    // grey, 404, reserved, nulls, lowercase grey: notes.
    assert_summary(&check(&pairs), 12, 6, 6);
    // The APT line really carries its reports as references.
    let refs = pairs[0]["bundle"]["objects"][2]["external_references"]
        .as_array()
        .unwrap();
    assert_eq!(refs.len(), 4, "the portal page and three reports");
}

#[test]
fn issue_13_stix_bundles_carry_the_autonomous_system() {
    let sections = ["--sections", "LicenseInfo,Zone,IpGeneralInfo,IpWhoIs"];
    let args = [
        &["--replay", BUNDLED_RECORDINGS][..],
        &sections,
        &["45.9.148.108"],
    ]
    .concat();
    let (code, native) = cli(&args, None);
    assert_eq!(code, Some(0));
    let (_, stix) = cli(&[&args[..], &["--format", "stix"]].concat(), None);
    let pairs = pair("tip", &native, &stix);
    // check.py holds the autonomous-system object to the verdict's AS fields
    // and to stix2's own id, and wants its belongs-to relationship.
    assert_summary(&check(&pairs), 1, 1, 0);
    let objects = pairs[0]["bundle"]["objects"].as_array().unwrap();
    let system = objects
        .iter()
        .find(|o| o["type"] == "autonomous-system")
        .expect("an autonomous-system object");
    assert_eq!(system["number"], 57043);
    assert_eq!(system["name"], "HOSTKEY-AS");
    assert!(
        objects
            .iter()
            .any(|o| o["relationship_type"] == "belongs-to" && o["target_ref"] == system["id"])
    );
    // Without IpWhoIs (TIP's default sections) there is none.
    let (_, plain) = cli(
        &[
            "--replay",
            BUNDLED_RECORDINGS,
            "--format",
            "stix",
            "45.9.148.108",
        ],
        None,
    );
    assert!(!plain[0].contains("autonomous-system"));
}

#[test]
fn opentip_bundles_point_to_opentip() {
    let args = [
        "--replay",
        BUNDLED_RECORDINGS,
        "--api",
        "opentip",
        "--format",
        "stix",
        "45.9.148.108",
        "8.8.8.8",
    ];
    let (code, stix) = cli(&args, None);
    assert_eq!(code, Some(0));
    let mut native_args = args.to_vec();
    native_args.retain(|a| *a != "--format" && *a != "stix");
    let (_, native) = cli(&native_args, None);
    let pairs = pair("opentip", &native, &stix);
    // check.py compares each first reference with OpenTIP's page.
    assert_summary(&check(&pairs), 2, 1, 1);
    assert!(stix[0].contains("https://opentip.kaspersky.com/45.9.148.108/"));
    assert!(
        !stix[0].contains("\"confidence\""),
        "OpenTIP gives no threat score"
    );
}

#[test]
fn a_stored_answer_is_valid_from_its_fetched_at() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("answers.sqlite");
    let ips = ["45.9.148.108", "185.220.101.1", "8.8.8.8"];
    let replay = ["--replay", BUNDLED_RECORDINGS];
    let stix_args = [&replay[..], &["--format", "stix"], &ips[..]].concat();
    // The first run asks the API (the recordings) and keeps the answers.
    let (code, first) = cli(&stix_args, Some(&store));
    assert_eq!(code, Some(0));
    let (_, native) = cli(&[&replay[..], &ips[..]].concat(), Some(&store));
    let (_, second) = cli(&stix_args, Some(&store));
    for line in &native {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["source"], "cache", "{line}");
        assert!(v["fetched_at"].is_string(), "{line}");
    }
    // check.py requires valid_from = fetched_at for each stored answer.
    let pairs = pair("tip", &native, &second);
    assert_summary(&check(&pairs), 3, 2, 1);
    assert_ne!(
        first, second,
        "new objects for a new writing, same address id"
    );
    let first: Value = serde_json::from_str(&first[0]).unwrap();
    assert_eq!(
        first["objects"][1]["id"],
        pairs[0]["bundle"]["objects"][1]["id"]
    );
}

#[test]
fn stix_and_full_do_not_mix() {
    let (code, out) = cli(&["--format", "stix", "--full", "8.8.8.8"], None);
    assert_eq!(code, Some(2));
    assert!(out.is_empty());
}

#[test]
fn the_service_answers_bundles_for_get_and_post() {
    let serving = Serving::start(&["--replay", BUNDLED_RECORDINGS], &[("TIP_API_KEY", KEY)]);
    let mut pairs = Vec::new();
    let from = now_ms();
    for ip in ["45.9.148.108", "8.8.8.8", "2a0e:1c80:1::1", "10.0.0.1"] {
        let a = serving.request("GET", &format!("/v1/ip/{ip}?format=stix"), "");
        assert_eq!(a.status, 200, "{ip}: {}", a.body);
        assert_eq!(a.header("content-type"), Some("application/json"));
        let (_, native) = serving.get_json(&format!("/v1/ip/{ip}"));
        pairs.push(json!({
            "api": "tip",
            "verdict": native,
            "bundle": serde_json::from_str::<Value>(&a.body).unwrap(),
        }));
    }
    let batch = r#"["185.220.101.1","7.7.7.7","nope"]"#;
    let a = serving.request("POST", "/v1/ip?format=stix", batch);
    assert_eq!(a.status, 200, "{}", a.body);
    let bundles: Vec<Value> = serde_json::from_str(&a.body).unwrap();
    let (_, natives) = {
        let n = serving.request("POST", "/v1/ip", batch);
        (
            n.status,
            serde_json::from_str::<Vec<Value>>(&n.body).unwrap(),
        )
    };
    assert_eq!(bundles.len(), 3);
    assert_eq!(
        bundles[2], natives[2],
        "an error stays the native error object"
    );
    assert_eq!(bundles[2]["error"]["kind"], "invalid-ip");
    for (bundle, native) in bundles.iter().zip(&natives).take(2) {
        pairs.push(json!({"api": "tip", "verdict": native, "bundle": bundle}));
    }
    let to = now_ms();
    // The guest's wall clock stamped them.
    assert_created_within(&pairs, from, to);
    assert_summary(&check(&pairs), 6, 3, 3);

    let a = serving.request("GET", "/v1/ip/nope?format=stix", "");
    assert_eq!(a.status, 400);
    let e: Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(e["error"]["kind"], "invalid-ip");
    let a = serving.request("GET", "/v1/ip/8.8.8.8?format=stux", "");
    assert_eq!(a.status, 400);
    assert!(a.body.contains("native, ecs or stix"), "{}", a.body);
    assert!(!serving.stderr().contains(KEY));
}

#[test]
fn the_service_points_to_the_portal_of_its_settings() {
    let serving = Serving::start(
        &["--replay", BUNDLED_RECORDINGS, "--api", "opentip"],
        &[("TIP_API_KEY", KEY)],
    );
    let a = serving.request("GET", "/v1/ip/45.9.148.108?format=stix", "");
    assert_eq!(a.status, 200, "{}", a.body);
    let (_, native) = serving.get_json("/v1/ip/45.9.148.108");
    let pairs = [json!({
        "api": "opentip",
        "verdict": native,
        "bundle": serde_json::from_str::<Value>(&a.body).unwrap(),
    })];
    assert_summary(&check(&pairs), 1, 1, 0);
}
