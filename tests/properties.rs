//! Properties of the pure core over generated input: nothing an attacker's
//! address field or a hostile server can send makes it panic, and the verdict
//! rules hold for every score and zone.

// Test code may unwrap and index (what the workspace lints forbid in the core).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unreachable,
    clippy::string_slice
)]

#[path = "support/expect.rs"]
mod expect;
#[path = "support/fake.rs"]
mod fake;
// The fuzz targets' checks (fuzz/fuzz_targets/): the same assertions run here
// on stable, so `cargo test` smokes every target (HARDENING.md, Fuzzing).
#[path = "../fuzz/checks/ip_parse.rs"]
mod ip_parse_check;
#[path = "../fuzz/checks/response_verdict.rs"]
mod response_verdict_check;

use fake::{Fake, response};
use proptest::prelude::*;
use response_verdict_check::{Case, KEY};
use tip_enrich::Client;
use tip_enrich::VerdictMap;
use tip_enrich::bindings::{EnrichError, SoarVerdict, Zone};
use tip_enrich::parse_answer;
use tip_enrich::settings::empty as empty_settings;
use tip_enrich::soar_verdict;
use tip_enrich::{excerpt, parse_retry_after};
use tip_enrich::{parse_ip, special_block};

fn env(name: &str) -> Option<String> {
    (name == "TIP_API_KEY").then(|| "prop-key-0123".to_owned())
}

/// JSON values shaped like API answers, with wrong types mixed in.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        "[A-Za-z0-9 _:.\\-]{0,12}".prop_map(serde_json::Value::from),
        prop_oneof![
            Just("Red"),
            Just("gray"),
            Just("GREEN"),
            Just("known"),
            Just("NoInfo"),
            Just("AS57043"),
            Just("57043"),
            Just("NL"),
            Just("HOSTKEY-AS\r\nNL"),
            Just(" \r\n "),
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        let keys = prop_oneof![
            Just("Zone"),
            Just("IpGeneralInfo"),
            Just("ThreatScore"),
            Just("HasApt"),
            Just("RelatedAptReports"),
            Just("Id"),
            Just("Title"),
            Just("Categories"),
            Just("CategoriesWithZone"),
            Just("Name"),
            Just("Status"),
            Just("LicenseInfo"),
            Just("DayRequests"),
            Just("DayQuota"),
            Just("HostedUrls"),
            Just("Url"),
            Just("IpWhoIs"),
            Just("Asn"),
            Just("Number"),
            Just("Description"),
            Just("Net"),
            Just("Origin"),
            Just("Contacts"),
            Just("IpWHOIS"),
            Just("DataFeeds"),
            Just("Unknown"),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::vec((keys, inner), 0..8).prop_map(|kv| serde_json::Value::Object(
                kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            )),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn ip_parsing_never_panics_and_normalises(input in "\\PC{0,60}") {
        if let Ok(ip) = parse_ip(&input) {
            let text = ip.to_string();
            prop_assert_eq!(parse_ip(&text).ok(), Some(ip), "normal form parses to itself");
            let _ = special_block(ip);
        }
    }

    #[test]
    fn any_ipv4_round_trips(a in any::<[u8; 4]>()) {
        let text = format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3]);
        let ip = parse_ip(&text).unwrap();
        prop_assert_eq!(ip.to_string(), text.clone());
        prop_assert_eq!(parse_ip(&format!("::ffff:{text}")).unwrap(), ip);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_parser(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_answer(&body);
        let e = excerpt(&body);
        prop_assert!(e.chars().count() <= 121);
        prop_assert!(!e.chars().any(char::is_control));
    }

    #[test]
    fn hostile_json_gives_a_sound_verdict_or_a_typed_error(value in json_value(), status in prop_oneof![Just(200u16), Just(404), 100u16..600]) {
        let body = value.to_string();
        let mut t = Fake::responding(move |_, _| Ok(response(status, &body)));
        let mut s = empty_settings();
        s.retries = Some(0);
        match Client::new(&mut t, &env).enrich("45.9.148.108", &s) {
            Ok(v) => {
                prop_assert!(v.threat_score.is_none_or(|t| t <= 100));
                prop_assert_eq!(v.suspicious, v.threat_score.is_some_and(|t| (50..=74).contains(&t)));
                if v.threat_score.is_some_and(|t| t >= 50) {
                    prop_assert_ne!(v.verdict, SoarVerdict::Benign);
                }
                prop_assert!(v.related_reports.iter().all(|r| !r.id.trim().is_empty()));
            }
            Err(EnrichError::Config(m)) | Err(EnrichError::InvalidIp(m)) => prop_assert!(false, "unexpected: {}", m),
            Err(_) => {}
        }
        let report = Client::new(&mut t, &env).lookup("45.9.148.108", &s);
        if let Ok(r) = report {
            let zone = serde_json::from_str::<serde_json::Value>(&r.sections_json)
                .ok()
                .and_then(|v| v.get("Zone").and_then(|z| z.as_str()).and_then(|z| {
                    [("red", Zone::Red), ("orange", Zone::Orange), ("yellow", Zone::Yellow), ("grey", Zone::Grey), ("gray", Zone::Grey), ("green", Zone::Green)]
                        .into_iter()
                        .find(|(n, _)| z.trim().eq_ignore_ascii_case(n))
                        .map(|(_, zone)| zone)
                }));
            prop_assert_eq!(r.verdict.zone, zone.unwrap_or(Zone::Grey));
        }
    }

    /// `Asn` numbers: exactly the whole numbers 1 to 2^32-1, whether a JSON
    /// number, a numeric string or `AS…`; anything else is no number.
    #[test]
    fn as_numbers_are_the_32_bit_ones_however_written(n in any::<i64>(), form in 0u8..4) {
        let asn = match form {
            0 => format!(r#"{{"Number": {n}}}"#),
            1 => format!(r#"{{"Number": "{n}"}}"#),
            2 => format!(r#"{{"Origin": "AS{n}"}}"#),
            _ => format!(r#"{{"Number": [{n}], "Origin": "as {n}"}}"#),
        };
        let body = format!(r#"{{"IpWhoIs": {{"Asn": [{{"Number": null}}, {asn}]}}}}"#);
        let got = parse_answer(body.as_bytes()).unwrap().into_verdict_sections()
            .ip_whois.and_then(|w| w.as_number);
        let want = u32::try_from(n).ok().filter(|n| *n != 0);
        prop_assert_eq!(got, want);
    }

    #[test]
    fn score_floor_holds_for_every_zone_and_score(score in proptest::option::of(0u8..=100), zone in 0usize..5) {
        let zone = [Zone::Red, Zone::Orange, Zone::Yellow, Zone::Grey, Zone::Green][zone];
        let v = soar_verdict(zone, score, &VerdictMap::default());
        if score.is_some_and(|s| s >= 50) {
            prop_assert_ne!(v, SoarVerdict::Benign);
        }
        if zone == Zone::Red {
            prop_assert_eq!(v, SoarVerdict::Malicious);
        }
    }

    #[test]
    fn retry_after_is_bounded(value in "\\PC{0,40}", now in any::<u64>()) {
        if let Some(secs) = parse_retry_after(&value, Some(now)) {
            prop_assert!(secs <= 86_400);
        }
    }
}

/// Every response_verdict seed: the bundled recordings (as `fuzz/seed.sh`
/// converts them) and the hand-written and regression seeds.
fn response_verdict_seeds() -> Vec<(String, Vec<u8>)> {
    let tests = expect::tests_dir();
    let mut seeds = Vec::new();
    for entry in std::fs::read_dir(tests.join("recordings")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let t: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let resp = t["response"].as_table().unwrap();
        let Some(body_file) = resp.get("body_file").and_then(|b| b.as_str()) else {
            continue;
        };
        let body = std::fs::read(tests.join("recordings").join(body_file)).unwrap();
        let retry = resp
            .get("headers")
            .and_then(|h| h.get("retry-after"))
            .and_then(|v| v.as_str());
        let status = resp["status"].as_integer().unwrap() as u16;
        seeds.push((
            path.display().to_string(),
            Case::encode(status, retry.map(str::as_bytes), &body),
        ));
    }
    let dir = tests.join("../fuzz/seeds/response_verdict");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        seeds.push((path.display().to_string(), std::fs::read(&path).unwrap()));
    }
    seeds
}

#[test]
fn fuzz_seeds_pass_the_response_verdict_check() {
    let seeds = response_verdict_seeds();
    assert!(seeds.len() > 20, "{} seeds", seeds.len());
    for (name, data) in seeds {
        eprintln!("{name}");
        response_verdict_check::check(&data);
    }
}

#[test]
fn fuzz_seeds_pass_the_ip_parse_check() {
    let dir = expect::tests_dir().join("../fuzz/seeds/ip_parse");
    for entry in std::fs::read_dir(dir).unwrap() {
        ip_parse_check::check(&std::fs::read(entry.unwrap().path()).unwrap());
    }
}

/// A 200 answer that `enrich` reads: `lookup` must read it too, with the
/// same verdict and the key scrubbed from the raw JSON.
fn lookup_reads_what_enrich_reads(body: &[u8]) -> tip_enrich::bindings::Report {
    let body = body.to_vec();
    let env = |name: &str| (name == "TIP_API_KEY").then(|| KEY.to_owned());
    let mut s = empty_settings();
    s.retries = Some(0);
    let b = body.clone();
    let mut t = Fake::responding(move |_, _| {
        Ok(tip_enrich::HttpResponse {
            status: 200,
            headers: vec![],
            body: b.clone(),
        })
    });
    let verdict = Client::new(&mut t, &env)
        .enrich("45.9.148.108", &s)
        .unwrap();
    let report = Client::new(&mut t, &env)
        .lookup("45.9.148.108", &s)
        .unwrap();
    assert_eq!(report.verdict, verdict);
    assert!(
        !report.sections_json.contains(KEY),
        "{}",
        report.sections_json
    );
    report
}

/// Finding 1 (response_verdict): bytes that are not UTF-8 inside a string the
/// parse skips made `lookup` fail with malformed-response while `enrich`
/// succeeded on the same answer.
#[test]
fn fuzz_response_verdict_invalid_utf8_in_skipped_string() {
    let report = lookup_reads_what_enrich_reads(b"{\"X\":\"a\xffb\",\"Zone\":\"Red\"}");
    assert_eq!(
        report.sections_json,
        "{\"X\":\"a\u{fffd}b\",\"Zone\":\"Red\"}"
    );
    assert_eq!(report.verdict.zone, Zone::Red);
    response_verdict_check::check(b"\0\0\0{\"X\":\"\xff\"}");
}

/// Finding 2 (response_verdict, same root cause): with an escape in the body,
/// the raw JSON was re-parsed into a `serde_json::Value` to scrub the key,
/// which fails past 128 levels of nesting that the parse had skipped.
#[test]
fn fuzz_response_verdict_deep_nesting_with_escapes() {
    let nest = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let body = format!("{{\"X\":{nest},\"Y\":\"fz-KEY\\u002d7c1d2e9\",\"Zone\":\"Red\"}}");
    let report = lookup_reads_what_enrich_reads(body.as_bytes());
    assert_eq!(
        report.sections_json,
        format!("{{\"X\":{nest},\"Y\":\"[redacted]\",\"Zone\":\"Red\"}}")
    );
}

/// Finding 3 (response_verdict, same root cause): a number out of f64 range
/// that the parse skipped failed the re-parse.
#[test]
fn fuzz_response_verdict_out_of_range_number_with_escapes() {
    let body = br#"{"X":1e400,"Y":"\/","Zone":"Red"}"#;
    let report = lookup_reads_what_enrich_reads(body);
    assert_eq!(report.sections_json.as_bytes(), body, "kept verbatim");
}

/// Finding 4 (response_verdict, same root cause, in the first fix too): a
/// lone surrogate escape in a string the parse skipped is refused by a strict
/// decoder, so scrubbing that string failed `lookup`; it now reads as U+FFFD.
#[test]
fn fuzz_response_verdict_lone_surrogate_in_skipped_string() {
    let body = br#"{"X":"\udc00\ud800x","Y":"fz-KEY\u002d7c1d2e9\ud800","Zone":"Red"}"#;
    let report = lookup_reads_what_enrich_reads(body);
    assert_eq!(
        report.sections_json,
        "{\"X\":\"\\udc00\\ud800x\",\"Y\":\"[redacted]\u{fffd}\",\"Zone\":\"Red\"}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    /// The ip_parse fuzz target's check, over arbitrary bytes.
    #[test]
    fn fuzz_target_ip_parse_bytes(data in prop::collection::vec(any::<u8>(), 0..80)) {
        ip_parse_check::check(&data);
    }

    /// The ip_parse fuzz target's check, over text made of address characters.
    #[test]
    fn fuzz_target_ip_parse_text(text in "[0-9a-fA-F:.]{0,45}|[ \t]?(::[fF]{4}:)?[0-9]{1,3}(\\.[0-9]{1,4}){0,4}[ %/:\\]]?") {
        ip_parse_check::check_text(&text);
    }

    /// The response_verdict fuzz target's check, over arbitrary bytes.
    #[test]
    fn fuzz_target_response_verdict_bytes(data in prop::collection::vec(any::<u8>(), 0..300)) {
        response_verdict_check::check(&data);
    }

    /// The response_verdict fuzz target's check, over hostile JSON answers.
    #[test]
    fn fuzz_target_response_verdict_json(head in any::<[u8; 3]>(), mut value in json_value(), escape in any::<bool>()) {
        let mut data = head.to_vec();
        // Mostly a 200 answer with no Retry-After, so the body is what is read.
        if data[0] % 4 != 0 {
            data[0] %= 160;
            data[1] &= !1;
        }
        // A server echoing the key, where a verdict or report would show it.
        if let serde_json::Value::Object(map) = &mut value {
            map.insert("Echo".into(), KEY.into());
            if let Some(serde_json::Value::Object(general)) = map.get_mut("IpGeneralInfo") {
                general.insert("Ip".into(), KEY.into());
                general.insert("CountryCode".into(), KEY.into());
            }
        }
        let mut body = value.to_string();
        if escape {
            // JSON escapes, which the byte scrub cannot see through.
            body = body.replace('_', "\\u005f").replace("fz-KEY-", "fz-KEY\\u002d");
        }
        data.extend_from_slice(body.as_bytes());
        response_verdict_check::check(&data);
    }
}

/// A verdict for every address the events hold (unknown, admitted by `all`).
fn any_verdicts(ips: &[String]) -> Vec<tip_enrich::events::Lookup> {
    ips.iter()
        .map(|ip| match parse_ip(ip) {
            Ok(addr) => Ok(tip_enrich::from_sections(
                addr,
                &tip_enrich::VerdictSections::default(),
                &VerdictMap::default(),
            )),
            Err(_) => Err(tip_enrich::events::LookupError {
                kind: "invalid-ip".into(),
                message: "not an address".into(),
            }),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    /// Issue 13: whatever a line holds, `events` gives one line back; a line
    /// that is not an object comes back byte for byte.
    #[test]
    fn events_never_panic_and_keep_non_objects(lines in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..8)) {
        let options = tip_enrich::events::Options {
            only: tip_enrich::events::Only::parse("all").unwrap(),
            ..Default::default()
        };
        let (out, tally) = tip_enrich::events::enrich_lines(&lines, &options, any_verdicts);
        prop_assert_eq!(out.len(), lines.len());
        for (line, got) in lines.iter().zip(&out) {
            if serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(line).is_err() {
                prop_assert_eq!(got.as_ref(), line.as_slice());
            }
        }
        prop_assert_eq!(tally.lines, lines.len() as u64);
    }

    /// Issue 13: an event with hostile values at and around its fields comes
    /// back as one JSON object whose other keys hold the same values.
    #[test]
    fn events_keep_every_other_value(source in json_value(), threat in json_value(), kaspersky in json_value(), other in json_value(), ip in prop_oneof![Just("45.9.148.108".to_owned()), Just("::1".to_owned()), "[0-9.:a-z]{0,20}"]) {
        let mut event = serde_json::Map::new();
        event.insert("other".into(), other);
        event.insert("source".into(), serde_json::json!({"ip": ip, "geo": source}));
        event.insert("related.ip".into(), serde_json::json!([ip.clone(), 7, null]));
        event.insert("threat".into(), threat);
        event.insert("kaspersky".into(), kaspersky);
        let line = serde_json::to_vec(&event).unwrap();
        let options = tip_enrich::events::Options {
            only: tip_enrich::events::Only::parse("all").unwrap(),
            ..Default::default()
        };
        let lines = [line];
        let (out, tally) = tip_enrich::events::enrich_lines(&lines, &options, any_verdicts);
        let got: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&out[0]).unwrap();
        // Read back by the same parser as the output (serde_json's float
        // reading is not exact, the bytes are).
        let event: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&lines[0]).unwrap();
        for key in ["other", "source", "related.ip"] {
            prop_assert_eq!(&got[key], &event[key]);
        }
        if tally.unwritable == 0 && !ip.trim().is_empty() {
            prop_assert!(tally.enrichments + tally.errors >= 2, "{:?}", tally);
        }
        if tally.enrichments > 0 {
            let enrichments = &got["threat"]["enrichments"];
            prop_assert!(enrichments.as_array().is_some_and(|a| a.len() as u64 >= tally.enrichments));
        }
    }
}
