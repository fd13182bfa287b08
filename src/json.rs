//! JSON forms of verdicts and errors, shared by every front end: the CLI's
//! JSON Lines (`host-harness`, after converting its wasmtime types) and the
//! service world's HTTP answers (`service/`). Two shapes:
//!
//! - **native**: the verdict's fields in snake_case, enums lower-case, in the
//!   documented order (README, "Output");
//! - **ECS**: Elastic Common Schema threat-enrichment fields
//!   (`threat.enrichments[].indicator.*`, `threat.enrichments[].matched.*`),
//!   with Kaspersky's own fields under `kaspersky.tip.*` (README, "ECS").

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::bindings::{EnrichError, IpStatus, SoarVerdict, Verdict, VerdictSource, Zone};
use crate::error::kind;

/// Who answered, as ECS `indicator.provider` and `threat.feed.name`.
pub const PROVIDER: &str = "Kaspersky Threat Intelligence Portal";

/// Lower-case zone name (`grey`, never `gray`).
pub fn zone_name(zone: Zone) -> &'static str {
    match zone {
        Zone::Red => "red",
        Zone::Orange => "orange",
        Zone::Yellow => "yellow",
        Zone::Grey => "grey",
        Zone::Green => "green",
    }
}

/// Lower-case verdict name.
pub fn verdict_name(v: SoarVerdict) -> &'static str {
    match v {
        SoarVerdict::Malicious => "malicious",
        SoarVerdict::Suspicious => "suspicious",
        SoarVerdict::Benign => "benign",
        SoarVerdict::Unknown => "unknown",
    }
}

/// `IpGeneralInfo.Status`, spelled as its WIT case.
pub fn status_name(s: IpStatus) -> &'static str {
    match s {
        IpStatus::Known => "known",
        IpStatus::Reserved => "reserved",
        IpStatus::NoInfo => "no-info",
    }
}

fn source_name(s: VerdictSource) -> &'static str {
    match s {
        VerdictSource::Api => "api",
        VerdictSource::Local => "local",
    }
}

/// The message of an error.
pub fn error_message(e: &EnrichError) -> &str {
    match e {
        EnrichError::InvalidIp(m)
        | EnrichError::BadRequest(m)
        | EnrichError::Unauthorized(m)
        | EnrichError::QuotaExceeded(m)
        | EnrichError::Timeout(m)
        | EnrichError::Transport(m)
        | EnrichError::MalformedResponse(m)
        | EnrichError::Config(m) => m,
        EnrichError::RateLimited(r) => &r.message,
        EnrichError::Upstream(u) => &u.message,
    }
}

#[derive(Serialize)]
struct ReportRef<'a> {
    id: &'a str,
    title: Option<&'a str>,
}

/// A verdict in its native shape, fields in the documented order. Serialize it
/// directly to keep that order (a `serde_json::Value` keeps it only with
/// serde_json's `preserve_order`, which the host enables and the guests do not).
#[derive(Serialize)]
pub struct VerdictLine<'a> {
    ip: &'a str,
    zone: &'static str,
    threat_score: Option<u8>,
    has_apt: bool,
    related_report_ids: Vec<&'a str>,
    suspicious: bool,
    verdict: &'static str,
    found: bool,
    source: &'static str,
    status: Option<&'static str>,
    country_code: Option<&'a str>,
    categories: &'a [String],
    hits_count: Option<u64>,
    first_seen: Option<&'a str>,
    related_reports: Vec<ReportRef<'a>>,
    day_requests: Option<u64>,
    day_quota: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reserved_block: Option<&'a str>,
}

fn report_ids(v: &Verdict) -> Vec<&str> {
    v.related_reports.iter().map(|r| r.id.as_str()).collect()
}

/// A verdict as a JSON object (the native shape).
pub fn verdict_json(v: &Verdict) -> Value {
    serde_json::to_value(verdict_line(v)).unwrap_or(Value::Null)
}

/// A verdict in the native shape, ready to serialize.
pub fn verdict_line(v: &Verdict) -> VerdictLine<'_> {
    VerdictLine {
        ip: &v.ip,
        zone: zone_name(v.zone),
        threat_score: v.threat_score,
        has_apt: v.has_apt,
        related_report_ids: report_ids(v),
        suspicious: v.suspicious,
        verdict: verdict_name(v.verdict),
        found: v.found,
        source: source_name(v.source),
        status: v.status.map(status_name),
        country_code: v.country_code.as_deref(),
        categories: &v.categories,
        hits_count: v.hits_count,
        first_seen: v.first_seen.as_deref(),
        related_reports: v
            .related_reports
            .iter()
            .map(|r| ReportRef {
                id: &r.id,
                title: r.title.as_deref(),
            })
            .collect(),
        day_requests: v.quota.as_ref().and_then(|q| q.day_requests),
        day_quota: v.quota.as_ref().and_then(|q| q.day_quota),
        reserved_block: v.reserved_block.as_deref(),
    }
}

/// The `error` object of an error answer: kind, message, and the status or
/// `Retry-After` where the kind has one.
pub fn error_object(e: &EnrichError) -> Value {
    let mut error = Map::new();
    error.insert("kind".into(), kind(e).into());
    error.insert("message".into(), error_message(e).into());
    match e {
        EnrichError::RateLimited(r) => {
            error.insert("retry_after_secs".into(), json!(r.retry_after_secs));
        }
        EnrichError::Upstream(u) => {
            error.insert("status".into(), json!(u.status));
        }
        _ => {}
    }
    Value::Object(error)
}

/// An error for one input, in the native shape: the input as given, and the error.
pub fn error_json(input: &str, e: &EnrichError) -> Value {
    json!({ "ip": input, "error": error_object(e) })
}

/// ECS `indicator.confidence` from the threat score: `High` from 75 (Kaspersky's
/// dangerous band), `Medium` for 50-74 (suspicious), `Low` below, `None` at 0
/// and `Not Specified` when the API gave no score.
fn confidence(score: Option<u8>) -> &'static str {
    match score {
        None => "Not Specified",
        Some(0) => "None",
        Some(1..=49) => "Low",
        Some(50..=74) => "Medium",
        Some(_) => "High",
    }
}

/// A verdict as Elastic Common Schema threat-enrichment fields.
///
/// `indicator.*` describes what Kaspersky knows of the address;
/// `matched.atomic` is the address, `matched.field` the event field it came
/// from when the caller knows it (e.g. `source.ip`).
pub fn ecs_verdict(v: &Verdict, matched_field: Option<&str>) -> Value {
    let indicator_type = if v.ip.contains(':') {
        "ipv6-addr"
    } else {
        "ipv4-addr"
    };
    let mut indicator = Map::new();
    indicator.insert("type".into(), indicator_type.into());
    indicator.insert("ip".into(), v.ip.as_str().into());
    indicator.insert("provider".into(), PROVIDER.into());
    indicator.insert("confidence".into(), confidence(v.threat_score).into());
    indicator.insert(
        "description".into(),
        format!(
            "Kaspersky zone {}, verdict {}{}",
            zone_name(v.zone),
            verdict_name(v.verdict),
            v.threat_score
                .map(|s| format!(", threat score {s}"))
                .unwrap_or_default()
        )
        .into(),
    );
    if let Some(first_seen) = &v.first_seen {
        indicator.insert("first_seen".into(), first_seen.as_str().into());
    }
    if let Some(hits) = v.hits_count {
        indicator.insert("sightings".into(), hits.into());
    }
    if let Some(cc) = &v.country_code {
        indicator.insert("geo".into(), json!({ "country_iso_code": cc }));
    }
    let mut matched = Map::new();
    matched.insert("atomic".into(), v.ip.as_str().into());
    matched.insert("type".into(), "enrichment".into());
    if let Some(field) = matched_field {
        matched.insert("field".into(), field.into());
    }
    json!({
        "event": { "kind": "enrichment", "category": ["threat"], "type": ["indicator"] },
        "threat": {
            "feed": { "name": PROVIDER },
            "enrichments": [{ "indicator": indicator, "matched": matched }],
        },
        "kaspersky": { "tip": {
            "zone": zone_name(v.zone),
            "threat_score": v.threat_score,
            "has_apt": v.has_apt,
            "related_report_ids": report_ids(v),
            "verdict": verdict_name(v.verdict),
            "suspicious": v.suspicious,
            "found": v.found,
            "status": v.status.map(status_name),
            "categories": v.categories,
            "source": source_name(v.source),
            "reserved_block": v.reserved_block,
        }},
    })
}

/// An error for one input as an ECS document: `event.kind: pipeline_error`,
/// `error.type` the kind, `error.message` the message.
pub fn ecs_error(input: &str, e: &EnrichError, matched_field: Option<&str>) -> Value {
    let mut matched = Map::new();
    matched.insert("atomic".into(), input.into());
    if let Some(field) = matched_field {
        matched.insert("field".into(), field.into());
    }
    let mut error = Map::new();
    error.insert("type".into(), kind(e).into());
    error.insert("message".into(), error_message(e).into());
    if let EnrichError::Upstream(u) = e {
        error.insert("code".into(), u.status.to_string().into());
    }
    json!({
        "event": { "kind": "pipeline_error", "category": ["threat"], "type": ["indicator"] },
        "error": error,
        "threat": { "enrichments": [{ "matched": matched }] },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::{AptReport, Quota, RateLimit, UpstreamError};

    fn verdict() -> Verdict {
        Verdict {
            ip: "45.9.148.108".into(),
            zone: Zone::Red,
            threat_score: Some(100),
            has_apt: true,
            related_reports: vec![AptReport {
                id: "r1".into(),
                title: Some("Op".into()),
            }],
            suspicious: false,
            verdict: SoarVerdict::Malicious,
            found: true,
            status: Some(IpStatus::Known),
            country_code: Some("NL".into()),
            categories: vec!["CATEGORY_MALWARE".into()],
            hits_count: Some(12),
            first_seen: Some("2020-01-01T00:00:00Z".into()),
            quota: Some(Quota {
                day_requests: Some(3),
                day_quota: Some(2000),
            }),
            source: VerdictSource::Api,
            reserved_block: None,
        }
    }

    #[test]
    fn native_fields_in_documented_order() {
        let text = serde_json::to_string(&verdict_line(&verdict())).unwrap();
        let mut at = 0;
        for key in [
            "ip",
            "zone",
            "threat_score",
            "has_apt",
            "related_report_ids",
            "suspicious",
            "verdict",
            "found",
            "source",
            "status",
            "country_code",
            "categories",
            "hits_count",
            "first_seen",
            "related_reports",
            "day_requests",
            "day_quota",
        ] {
            let found = text[at..].find(&format!("\"{key}\":")).map(|i| i + at);
            at = found.unwrap_or_else(|| panic!("{key} missing or out of order in {text}"));
        }
        let v = verdict_json(&verdict());
        assert_eq!(v["related_report_ids"], json!(["r1"]));
        assert_eq!(v["related_reports"][0]["title"], "Op");
        assert_eq!(v["day_quota"], 2000);
    }

    #[test]
    fn errors_carry_status_or_retry_after() {
        let e = EnrichError::Upstream(UpstreamError {
            status: 503,
            message: "busy".into(),
        });
        assert_eq!(
            error_json("x", &e),
            json!({"ip": "x", "error": {"kind": "upstream", "message": "busy", "status": 503}})
        );
        let e = EnrichError::RateLimited(RateLimit {
            retry_after_secs: Some(7),
            message: "slow down".into(),
        });
        assert_eq!(error_object(&e)["retry_after_secs"], 7);
        assert_eq!(ecs_error("x", &e, None)["error"]["type"], "rate-limited");
    }

    #[test]
    fn ecs_maps_indicator_and_matched() {
        let e = ecs_verdict(&verdict(), Some("source.ip"));
        let enrichment = &e["threat"]["enrichments"][0];
        assert_eq!(enrichment["indicator"]["type"], "ipv4-addr");
        assert_eq!(enrichment["indicator"]["ip"], "45.9.148.108");
        assert_eq!(enrichment["indicator"]["confidence"], "High");
        assert_eq!(enrichment["indicator"]["sightings"], 12);
        assert_eq!(enrichment["indicator"]["geo"]["country_iso_code"], "NL");
        assert_eq!(enrichment["matched"]["atomic"], "45.9.148.108");
        assert_eq!(enrichment["matched"]["field"], "source.ip");
        assert_eq!(e["kaspersky"]["tip"]["related_report_ids"], json!(["r1"]));
        assert_eq!(e["event"]["kind"], "enrichment");

        let mut v6 = verdict();
        v6.ip = "2a0e:1c80:1::1".into();
        v6.threat_score = None;
        v6.country_code = None;
        let e = ecs_verdict(&v6, None);
        let indicator = &e["threat"]["enrichments"][0]["indicator"];
        assert_eq!(indicator["type"], "ipv6-addr");
        assert_eq!(indicator["confidence"], "Not Specified");
        assert!(indicator.get("geo").is_none());
        assert!(
            e["threat"]["enrichments"][0]["matched"]
                .get("field")
                .is_none()
        );
    }

    #[test]
    fn confidence_follows_the_score_bands() {
        assert_eq!(confidence(Some(0)), "None");
        assert_eq!(confidence(Some(49)), "Low");
        assert_eq!(confidence(Some(50)), "Medium");
        assert_eq!(confidence(Some(74)), "Medium");
        assert_eq!(confidence(Some(75)), "High");
    }
}
