//! The pure core, natively: every bundled recording through the real flow
//! (`Client`) over a replaying fake transport, and the flow's edge cases.

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

use expect::{Failure, Observed};
use fake::{Fake as Replay, key};
use tip_enrich::Error;
use tip_enrich::bindings::{
    ApiFlavour, EnrichError, IpStatus, Report, Settings, SoarVerdict, Verdict, VerdictSource, Zone,
};
use tip_enrich::settings::empty as empty_settings;
use tip_enrich::{Client, HttpResponse, SendError};

fn env_with_key(name: &str) -> Option<String> {
    (name == "TIP_API_KEY").then(|| "test-key-0123456789".to_owned())
}

fn zone(z: Zone) -> &'static str {
    match z {
        Zone::Red => "red",
        Zone::Orange => "orange",
        Zone::Yellow => "yellow",
        Zone::Grey => "grey",
        Zone::Green => "green",
    }
}

fn observe(v: &Verdict) -> Observed {
    Observed {
        ip: v.ip.clone(),
        zone: zone(v.zone).into(),
        threat_score: v.threat_score,
        verdict: match v.verdict {
            SoarVerdict::Malicious => "malicious",
            SoarVerdict::Suspicious => "suspicious",
            SoarVerdict::Benign => "benign",
            SoarVerdict::Unknown => "unknown",
        }
        .into(),
        has_apt: v.has_apt,
        report_ids: v.related_reports.iter().map(|r| r.id.clone()).collect(),
        suspicious: v.suspicious,
        found: v.found,
        status: v.status.map(|s| {
            match s {
                IpStatus::Known => "known",
                IpStatus::Reserved => "reserved",
                IpStatus::NoInfo => "no-info",
            }
            .into()
        }),
        country_code: v.country_code.clone(),
        as_number: v.as_number,
        as_organization: v.as_organization.clone(),
        network_name: v.network_name.clone(),
        categories: v.categories.clone(),
        first_seen: v.first_seen.clone(),
        day_requests: v.quota.as_ref().and_then(|q| q.day_requests),
        day_quota: v.quota.as_ref().and_then(|q| q.day_quota),
        has_quota: v.quota.is_some(),
        source: match v.source {
            VerdictSource::Api => "api",
            VerdictSource::Local => "local",
            VerdictSource::Cache => "cache",
        }
        .into(),
        ..Observed::default()
    }
}

fn observe_report(r: &Report) -> Observed {
    let mut o = observe(&r.verdict);
    let sections = if r.sections_json.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&r.sections_json).expect("sections-json is JSON")
    };
    expect::observe_sections(&mut o, &sections);
    o
}

fn failure(e: EnrichError) -> Failure {
    let kind = tip_enrich::error_kind(&e).to_owned();
    let message = tip_enrich::json::error_message(&e).to_owned();
    let (retry_after_secs, status) = match &e {
        EnrichError::RateLimited(r) => (r.retry_after_secs, None),
        EnrichError::Upstream(u) => (None, Some(u.status)),
        _ => (None, None),
    };
    Failure {
        kind,
        message,
        retry_after_secs,
        status,
    }
}

fn settings_for(e: &expect::Expectation) -> Settings {
    let mut s = empty_settings();
    if e.api() == "opentip" {
        s.api = Some(ApiFlavour::Opentip);
    }
    s.query_reserved = Some(e.query_reserved());
    s.sections = e.sections();
    s
}

#[test]
fn every_recording_meets_its_expectation() {
    let expectations = expect::load();
    assert!(expectations.len() >= 20);
    for e in &expectations {
        let mut replay = Replay::bundled();
        let mut client = Client::new(&mut replay, &env_with_key);
        let settings = settings_for(e);
        let outcome = match e.call() {
            "lookup" => client.lookup(e.ip(), &settings).map(|r| observe_report(&r)),
            _ => client.enrich(e.ip(), &settings).map(|v| observe(&v)),
        };
        expect::check(e, outcome.map_err(failure));
        let want = e
            .table
            .get("requests")
            .and_then(|v| v.as_integer())
            .unwrap_or(1) as usize;
        assert_eq!(replay.sent.len(), want, "{}: requests made", e.name);
    }
}

#[test]
fn batch_keeps_order_and_reports_per_entry() {
    let mut replay = Replay::bundled();
    let mut client = Client::new(&mut replay, &env_with_key);
    let ips: Vec<String> = [
        "45.9.148.108",
        "not-an-ip",
        "10.0.0.1",
        "9.9.9.9",
        "7.7.7.7",
        "8.8.8.8",
    ]
    .map(String::from)
    .to_vec();
    let results = client.enrich_batch(&ips, &empty_settings());
    assert_eq!(results.len(), ips.len());
    assert_eq!(results[0].as_ref().unwrap().zone, Zone::Red);
    assert!(matches!(results[1], Err(EnrichError::InvalidIp(_))));
    assert_eq!(results[2].as_ref().unwrap().source, VerdictSource::Local);
    assert!(matches!(results[3], Err(EnrichError::RateLimited(_))));
    assert!(!results[4].as_ref().unwrap().found);
    assert_eq!(results[5].as_ref().unwrap().verdict, SoarVerdict::Benign);
    // The invalid and the reserved address cost no request; the 429 is retried twice.
    assert_eq!(replay.sent.len(), 6);
}

#[test]
fn invalid_input_sends_nothing() {
    for input in [
        "",
        "   ",
        "10.0.0.0/8",
        "1.2.3.4:80",
        "example.com",
        "010.0.0.1",
        "1.2.3.4\n5.6.7.8",
        "[::1]",
    ] {
        let mut replay = Replay::bundled();
        let result = Client::new(&mut replay, &env_with_key).enrich(input, &empty_settings());
        assert!(
            matches!(result, Err(EnrichError::InvalidIp(_))),
            "{input:?}: {result:?}"
        );
        assert!(replay.sent.is_empty(), "{input:?} sent a request");
    }
}

#[test]
fn reserved_addresses_are_local_unless_asked() {
    for input in [
        "10.1.1.1",
        "192.168.0.1",
        "127.0.0.1",
        "100.64.1.1",
        "169.254.1.1",
        "::1",
        "fd00::1",
        "fe80::1",
        "2001:db8::1",
        "255.255.255.255",
    ] {
        let mut replay = Replay::bundled();
        let v = Client::new(&mut replay, &env_with_key)
            .enrich(input, &empty_settings())
            .unwrap();
        assert_eq!(
            (v.source, v.zone, v.status),
            (VerdictSource::Local, Zone::Grey, Some(IpStatus::Reserved)),
            "{input}"
        );
        assert!(v.reserved_block.is_some());
        assert!(replay.sent.is_empty(), "{input} spent quota");
    }
    // Local answers need no key at all.
    let mut replay = Replay::bundled();
    assert!(
        Client::new(&mut replay, &|_| None)
            .enrich("10.0.0.1", &empty_settings())
            .is_ok()
    );
    // query-reserved sends the request.
    let mut replay = Replay::bundled();
    let mut s = empty_settings();
    s.query_reserved = Some(true);
    let v = Client::new(&mut replay, &env_with_key)
        .enrich("10.0.0.1", &s)
        .unwrap();
    assert_eq!(v.source, VerdictSource::Api);
    assert_eq!(replay.sent.len(), 1);
}

#[test]
fn transport_failures_map_to_kinds() {
    let cases = [
        (Error::Timeout("t".into()), "timeout"),
        (Error::Transport("x".into()), "transport"),
        (Error::BodyTooLarge { limit: 10 }, "malformed-response"),
    ];
    for (error, kind) in cases {
        let mut replay = Replay::bundled();
        replay.fail_with = Some(SendError::fatal(error));
        let e = Client::new(&mut replay, &env_with_key)
            .enrich("8.8.8.8", &empty_settings())
            .unwrap_err();
        assert_eq!(failure(e).kind, kind);
    }
}

#[test]
fn body_cap_applies() {
    let mut replay = Replay::bundled();
    let mut s = empty_settings();
    s.max_body_bytes = Some(1024);
    let e = Client::new(&mut replay, &env_with_key)
        .lookup("45.9.148.108", &s)
        .unwrap_err();
    assert!(matches!(e, EnrichError::MalformedResponse(m) if m.contains("1024")));
}

#[test]
fn missing_key_is_a_config_error() {
    let mut replay = Replay::bundled();
    let e = Client::new(&mut replay, &|_| None)
        .enrich("8.8.8.8", &empty_settings())
        .unwrap_err();
    assert!(matches!(e, EnrichError::Config(m) if m.contains("TIP_API_KEY")));
    assert!(replay.sent.is_empty());
}

#[test]
fn a_server_echoing_the_key_cannot_leak_it() {
    const KEY: &str = "s3cret-KEY-value-42";
    let mut replay = Replay::bundled();
    replay.answers.insert(
        key("https://tip.kaspersky.com/api/ip/1.1.1.1?sections=LicenseInfo,Zone,IpGeneralInfo"),
        HttpResponse {
            status: 401,
            headers: vec![],
            body: format!("bad key {KEY}").into_bytes(),
        },
    );
    let env = |name: &str| (name == "TIP_API_KEY").then(|| KEY.to_owned());
    let e = Client::new(&mut replay, &env)
        .enrich("1.1.1.1", &empty_settings())
        .unwrap_err();
    let f = failure(e);
    assert_eq!(f.kind, "unauthorized");
    assert!(!f.message.contains(KEY), "{}", f.message);
    assert!(f.message.contains("[redacted]"));
    assert!(
        !format!("{:?}", replay.sent).contains(KEY),
        "request Debug shows the key"
    );
}

#[test]
fn settings_come_from_the_environment() {
    let mut replay = Replay::bundled();
    let env = |name: &str| match name {
        "TIP_API_KEY" => Some("k-0123".to_owned()),
        "TIP_API" => Some("opentip".to_owned()),
        "TIP_AUTH" => Some("bearer".to_owned()),
        _ => None,
    };
    let v = Client::new(&mut replay, &env)
        .enrich("8.8.8.8", &empty_settings())
        .unwrap();
    assert_eq!(v.threat_score, None, "OpenTIP answer");
    assert_eq!(
        replay.sent[0].url(),
        "https://opentip.kaspersky.com/api/v1/search/ip?request=8.8.8.8"
    );
    assert_eq!(
        replay.sent[0].headers[0],
        ("authorization".to_owned(), "Bearer k-0123".to_owned())
    );
}

#[test]
fn verdict_map_override() {
    let mut replay = Replay::bundled();
    let env = |name: &str| match name {
        "TIP_API_KEY" => Some("k-0123".to_owned()),
        "TIP_VERDICT_MAP" => Some("yellow=malicious".to_owned()),
        _ => None,
    };
    let v = Client::new(&mut replay, &env)
        .enrich("103.224.182.250", &empty_settings())
        .unwrap();
    assert_eq!(v.verdict, SoarVerdict::Malicious);
}

#[test]
fn a_key_echoed_in_a_200_answer_is_scrubbed_from_verdict_and_report() {
    const KEY: &str = "s3cret/KEY+value-42";
    let escaped = KEY.replace('/', "\\/").replace('K', "\\u004B");
    let body = format!(
        r#"{{"Zone":"Red","IpGeneralInfo":{{"Categories":["{KEY}","{escaped}"],"RelatedAptReports":[{{"Id":"{escaped}","Title":"t {KEY}"}}]}},"New":"{escaped}"}}"#
    );
    let mut replay = Replay::bundled();
    replay.answers.insert(
        key("https://tip.kaspersky.com/api/ip/1.1.1.1"),
        HttpResponse {
            status: 200,
            headers: vec![],
            body: body.into_bytes(),
        },
    );
    let env = |name: &str| (name == "TIP_API_KEY").then(|| KEY.to_owned());
    let report = Client::new(&mut replay, &env)
        .lookup("1.1.1.1", &empty_settings())
        .unwrap();
    let shown = format!("{report:?}");
    assert!(!shown.contains(KEY), "{shown}");
    assert!(
        !report.sections_json.contains(&escaped),
        "{}",
        report.sections_json
    );
    assert_eq!(report.verdict.categories, ["[redacted]"]);
    assert_eq!(report.verdict.related_reports[0].id, "[redacted]");
}
