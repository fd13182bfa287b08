//! Properties of the pure core over generated input: nothing an attacker's
//! address field or a hostile server can send makes it panic, and the verdict
//! rules hold for every score and zone.

#[path = "support/expect.rs"]
mod expect;
#[path = "support/fake.rs"]
mod fake;

use fake::{Fake, response};
use proptest::prelude::*;
use tip_enrich::bindings::{EnrichError, SoarVerdict, Zone};
use tip_enrich::client::Client;
use tip_enrich::config::{VerdictMap, empty_settings};
use tip_enrich::error::{excerpt, parse_retry_after};
use tip_enrich::ip::{parse_ip, special_block};
use tip_enrich::response::parse_answer;
use tip_enrich::verdict::soar_verdict;

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
            Just("NoInfo")
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
            prop_assert_eq!(r.verdict.zone, r.zone.unwrap_or(Zone::Grey));
        }
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
