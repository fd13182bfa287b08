//! `tip-enrich --format ecs`: every native field lands where README's ECS
//! mapping says, for every kind of line the bundled recordings give.

use std::process::Command;

use serde_json::Value;

fn lines(args: &[&str]) -> (Option<i32>, Vec<Value>) {
    let out = Command::new(env!("CARGO_BIN_EXE_tip-enrich"))
        .env("TIP_ENRICH_CACHE", "off")
        .env_remove("TIP_API_KEY")
        .arg("--quiet")
        .args(args)
        .output()
        .unwrap();
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out.status.code(), lines)
}

#[test]
fn ecs_lines_carry_the_native_fields() {
    // Red with APT reports, green, reserved (local), IPv6, an error.
    let ips = [
        "45.9.148.108",
        "8.8.8.8",
        "10.0.0.1",
        "2a0e:1c80:1::1",
        "nope",
    ];
    let (native_code, native) = lines(&ips);
    let mut args = vec!["--format", "ecs", "--ecs-matched-field", "source.ip"];
    args.extend(ips);
    let (ecs_code, ecs) = lines(&args);
    assert_eq!(
        native_code, ecs_code,
        "the exit status does not depend on the format"
    );
    assert_eq!(native.len(), ecs.len());

    for (n, e) in native.iter().zip(&ecs) {
        let enrichment = &e["threat"]["enrichments"][0];
        assert_eq!(enrichment["matched"]["field"], "source.ip");
        if let Some(error) = n.get("error") {
            assert_eq!(e["event"]["kind"], "pipeline_error");
            assert_eq!(e["error"]["type"], error["kind"]);
            assert_eq!(e["error"]["message"], error["message"]);
            assert_eq!(enrichment["matched"]["atomic"], n["ip"]);
            continue;
        }
        let indicator = &enrichment["indicator"];
        let ip = n["ip"].as_str().unwrap();
        assert_eq!(e["event"]["kind"], "enrichment");
        assert_eq!(indicator["ip"], ip);
        assert_eq!(enrichment["matched"]["atomic"], ip);
        let family = if ip.contains(':') {
            "ipv6-addr"
        } else {
            "ipv4-addr"
        };
        assert_eq!(indicator["type"], family);
        assert_eq!(
            indicator["provider"],
            "Kaspersky Threat Intelligence Portal"
        );
        let confidence = match n["threat_score"].as_u64() {
            None => "Not Specified",
            Some(0) => "None",
            Some(1..=49) => "Low",
            Some(50..=74) => "Medium",
            Some(_) => "High",
        };
        assert_eq!(indicator["confidence"], confidence, "{ip}");
        // Optional native fields appear exactly when set.
        for (native_field, ecs_value) in [
            ("hits_count", &indicator["sightings"]),
            ("first_seen", &indicator["first_seen"]),
            ("country_code", &indicator["geo"]["country_iso_code"]),
        ] {
            assert_eq!(&n[native_field], ecs_value, "{ip} {native_field}");
        }
        let tip = &e["kaspersky"]["tip"];
        for field in [
            "zone",
            "threat_score",
            "has_apt",
            "related_report_ids",
            "verdict",
            "suspicious",
            "found",
            "status",
            "categories",
            "source",
        ] {
            assert_eq!(tip[field], n[field], "{ip} {field}");
        }
    }
    // The APT line really has reports, so the mapping above compared something.
    assert!(
        !ecs[0]["kaspersky"]["tip"]["related_report_ids"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn ecs_and_full_do_not_mix() {
    let (code, out) = lines(&["--format", "ecs", "--full", "8.8.8.8"]);
    assert_eq!(code, Some(2));
    assert!(out.is_empty());
}
