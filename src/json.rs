//! The one JSON writer: every JSON shape any front end writes is a borrowed
//! `Serialize` struct here, so its keys come out in the order written below
//! whatever serde_json features a build unifies, with no `serde_json::Value`
//! in the guests. The CLI (after converting its wasmtime types), the service
//! and the host scripts' documented shapes all come from these.
//!
//! - **native**: a verdict's fields in snake_case, enums lower-case, in the
//!   documented order (README, "Output"); an error line `{"ip", "error"}`;
//! - **ECS**: Elastic Common Schema threat-enrichment documents
//!   (`threat.enrichments[].indicator.*`, `matched.*`), Kaspersky's own fields
//!   under `kaspersky.tip.*` (README, "ECS");
//! - the **report** line of `--full`, and the service's own **problem** and
//!   **health** answers;
//! - **STIX 2.1** bundles: their structs are in [`crate::stix`], written by
//!   the functions here.

use std::borrow::Cow;

use serde::Serialize;

use crate::bindings::{EnrichError, IpStatus, Verdict, VerdictSource};
use crate::error::kind;
pub use crate::settings::{verdict_name, zone_name};
use crate::text::bounded;

/// Who answered, as ECS `indicator.provider` and `threat.feed.name`.
pub const PROVIDER: &str = "Kaspersky Threat Intelligence Portal";

/// Longest echo of an input in an error line or document, in characters
/// (an address is at most 45; a 20 MB line must not come back whole).
pub const MAX_ECHO_CHARS: usize = 128;

/// The fields of a native verdict line, in their order (README, "Output").
pub const VERDICT_FIELDS: [&str; 22] = [
    "ip",
    "zone",
    "threat_score",
    "has_apt",
    "related_report_ids",
    "suspicious",
    "verdict",
    "found",
    "source",
    "fetched_at",
    "status",
    "country_code",
    "as_number",
    "as_organization",
    "network_name",
    "categories",
    "hits_count",
    "first_seen",
    "related_reports",
    "day_requests",
    "day_quota",
    "reserved_block",
];

/// `value` as JSON bytes. Our shapes have string keys only, so this cannot
/// fail; an empty vector would stand for it if it ever did.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// `value` as one JSON line (no trailing newline).
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Writes `value` and a newline.
pub fn write_line<W: std::io::Write + ?Sized, T: Serialize + ?Sized>(
    out: &mut W,
    value: &T,
) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(std::io::Error::from)?;
    out.write_all(b"\n")
}

/// `IpGeneralInfo.Status`, spelled as its WIT case.
pub fn status_name(s: IpStatus) -> &'static str {
    match s {
        IpStatus::Known => "known",
        IpStatus::Reserved => "reserved",
        IpStatus::NoInfo => "no-info",
    }
}

/// `api` or `local`.
pub fn source_name(s: VerdictSource) -> &'static str {
    match s {
        VerdictSource::Api => "api",
        VerdictSource::Local => "local",
        VerdictSource::Cache => "cache",
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

/// An input as echoed: at most [`MAX_ECHO_CHARS`] characters.
fn echo(input: &str) -> Cow<'_, str> {
    bounded(input, MAX_ECHO_CHARS)
}

#[derive(Serialize)]
struct ReportRef<'a> {
    id: &'a str,
    title: Option<&'a str>,
}

/// A verdict in its native shape, fields in [`VERDICT_FIELDS`] order.
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
    fetched_at: Option<&'a str>,
    status: Option<&'static str>,
    country_code: Option<&'a str>,
    as_number: Option<u32>,
    as_organization: Option<&'a str>,
    network_name: Option<&'a str>,
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

/// A verdict in the native shape.
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
        fetched_at: v.fetched_at.as_deref(),
        status: v.status.map(status_name),
        country_code: v.country_code.as_deref(),
        as_number: v.as_number,
        as_organization: v.as_organization.as_deref(),
        network_name: v.network_name.as_deref(),
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

/// The `error` object of an error line: kind, message, and `retry_after_secs`
/// (rate-limited; null when the API gave none) or `status` (upstream).
#[derive(Serialize)]
pub struct ErrorObject<'a> {
    kind: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_secs: Option<Option<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
}

/// The error object of `e`.
pub fn error_object(e: &EnrichError) -> ErrorObject<'_> {
    ErrorObject {
        kind: kind(e),
        message: error_message(e),
        retry_after_secs: match e {
            EnrichError::RateLimited(r) => Some(r.retry_after_secs),
            _ => None,
        },
        status: match e {
            EnrichError::Upstream(u) => Some(u.status),
            _ => None,
        },
    }
}

/// An error for one input: the input as given (at most [`MAX_ECHO_CHARS`]
/// characters), and the error.
#[derive(Serialize)]
pub struct ErrorLine<'a> {
    ip: Cow<'a, str>,
    error: ErrorObject<'a>,
}

/// The error line of `input`.
pub fn error_line<'a>(input: &'a str, e: &'a EnrichError) -> ErrorLine<'a> {
    ErrorLine {
        ip: echo(input),
        error: error_object(e),
    }
}

/// An error line of a kind outside the WIT variant, from the host: `trap`
/// when the component trapped.
pub fn host_error_line<'a>(input: &'a str, kind: &'a str, message: &'a str) -> ErrorLine<'a> {
    ErrorLine {
        ip: echo(input),
        error: ErrorObject {
            kind,
            message,
            retry_after_secs: None,
            status: None,
        },
    }
}

/// A `--full` line: the verdict's fields, then `sections`, the API's answer
/// as JSON (scrubbed of the key; `null` for local and 404 answers).
#[derive(Serialize)]
pub struct ReportLine<'a> {
    #[serde(flatten)]
    verdict: VerdictLine<'a>,
    sections: Option<&'a serde_json::value::RawValue>,
}

/// The report line of a verdict and the `sections-json` text that came with
/// it. Text that is not one JSON value (it always is: the core parsed it)
/// reads as `null`.
pub fn report_line<'a>(
    verdict: &'a Verdict,
    sections: &'a Option<Box<serde_json::value::RawValue>>,
) -> ReportLine<'a> {
    ReportLine {
        verdict: verdict_line(verdict),
        sections: sections.as_deref(),
    }
}

/// JSON text without the whitespace between its tokens (string contents kept
/// as they are): the API pretty-prints its answers, and a JSON line must be
/// one line. Lexical, so it keeps every number and key exactly.
pub fn compact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

/// `sections-json` text checked as one JSON value, for [`report_line`].
pub fn raw_sections(text: &str) -> Option<Box<serde_json::value::RawValue>> {
    if text.trim().is_empty() {
        return None;
    }
    serde_json::value::RawValue::from_string(text.to_owned()).ok()
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

#[derive(Serialize)]
struct EcsEvent {
    kind: &'static str,
    category: [&'static str; 1],
    #[serde(rename = "type")]
    kind_of: [&'static str; 1],
}

impl EcsEvent {
    fn of(kind: &'static str) -> EcsEvent {
        EcsEvent {
            kind,
            category: ["threat"],
            kind_of: ["indicator"],
        }
    }
}

#[derive(Serialize)]
struct EcsGeo<'a> {
    country_iso_code: &'a str,
}

/// ECS `as.*`: `as.number` and `as.organization.name`.
#[derive(Serialize)]
struct EcsAs<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    number: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    organization: Option<EcsOrganization<'a>>,
}

#[derive(Serialize)]
struct EcsOrganization<'a> {
    name: &'a str,
}

impl<'a> EcsAs<'a> {
    /// The AS fields of `v`, when it has any.
    fn of(v: &'a Verdict) -> Option<EcsAs<'a>> {
        (v.as_number.is_some() || v.as_organization.is_some()).then(|| EcsAs {
            number: v.as_number,
            organization: v
                .as_organization
                .as_deref()
                .map(|name| EcsOrganization { name }),
        })
    }
}

#[derive(Serialize)]
struct EcsIndicator<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    ip: &'a str,
    provider: &'static str,
    confidence: &'static str,
    description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_seen: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sightings: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    geo: Option<EcsGeo<'a>>,
    #[serde(rename = "as", skip_serializing_if = "Option::is_none")]
    autonomous_system: Option<EcsAs<'a>>,
}

#[derive(Serialize)]
struct EcsMatched<'a> {
    atomic: Cow<'a, str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

#[derive(Serialize)]
struct EcsEnrichment<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    indicator: Option<EcsIndicator<'a>>,
    matched: EcsMatched<'a>,
}

#[derive(Serialize)]
struct EcsFeed {
    name: &'static str,
}

#[derive(Serialize)]
struct EcsThreat<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    feed: Option<EcsFeed>,
    enrichments: [EcsEnrichment<'a>; 1],
}

#[derive(Serialize)]
struct KasperskyTip<'a> {
    zone: &'static str,
    threat_score: Option<u8>,
    has_apt: bool,
    related_report_ids: Vec<&'a str>,
    verdict: &'static str,
    suspicious: bool,
    found: bool,
    status: Option<&'static str>,
    categories: &'a [String],
    network_name: Option<&'a str>,
    source: &'static str,
    fetched_at: Option<&'a str>,
    reserved_block: Option<&'a str>,
}

#[derive(Serialize)]
struct Kaspersky<'a> {
    tip: KasperskyTip<'a>,
}

/// A verdict as an ECS threat-enrichment document.
#[derive(Serialize)]
pub struct EcsVerdict<'a> {
    event: EcsEvent,
    threat: EcsThreat<'a>,
    kaspersky: Kaspersky<'a>,
}

/// `indicator.*`: what Kaspersky knows of the address.
fn ecs_indicator(v: &Verdict) -> EcsIndicator<'_> {
    EcsIndicator {
        kind: if v.ip.contains(':') {
            "ipv6-addr"
        } else {
            "ipv4-addr"
        },
        ip: &v.ip,
        provider: PROVIDER,
        confidence: confidence(v.threat_score),
        description: format!(
            "Kaspersky zone {}, verdict {}{}",
            zone_name(v.zone),
            verdict_name(v.verdict),
            v.threat_score
                .map(|s| format!(", threat score {s}"))
                .unwrap_or_default()
        ),
        first_seen: v.first_seen.as_deref(),
        sightings: v.hits_count,
        geo: v.country_code.as_deref().map(|cc| EcsGeo {
            country_iso_code: cc,
        }),
        autonomous_system: EcsAs::of(v),
    }
}

/// `kaspersky.tip.*`: Kaspersky's own fields under their own names.
fn kaspersky_tip(v: &Verdict) -> Kaspersky<'_> {
    Kaspersky {
        tip: KasperskyTip {
            zone: zone_name(v.zone),
            threat_score: v.threat_score,
            has_apt: v.has_apt,
            related_report_ids: report_ids(v),
            verdict: verdict_name(v.verdict),
            suspicious: v.suspicious,
            found: v.found,
            status: v.status.map(status_name),
            categories: &v.categories,
            network_name: v.network_name.as_deref(),
            source: source_name(v.source),
            fetched_at: v.fetched_at.as_deref(),
            reserved_block: v.reserved_block.as_deref(),
        },
    }
}

/// A verdict as Elastic Common Schema threat-enrichment fields.
///
/// `indicator.*` describes what Kaspersky knows of the address;
/// `matched.atomic` is the address, `matched.field` the event field it came
/// from when the caller knows it (e.g. `source.ip`).
pub fn ecs_verdict<'a>(v: &'a Verdict, matched_field: Option<&'a str>) -> EcsVerdict<'a> {
    EcsVerdict {
        event: EcsEvent::of("enrichment"),
        threat: EcsThreat {
            feed: Some(EcsFeed { name: PROVIDER }),
            enrichments: [EcsEnrichment {
                indicator: Some(ecs_indicator(v)),
                matched: EcsMatched {
                    atomic: Cow::Borrowed(&v.ip),
                    kind: Some("enrichment"),
                    field: matched_field,
                },
            }],
        },
        kaspersky: kaspersky_tip(v),
    }
}

/// One `threat.enrichments[]` entry that `events` appends to an event: the
/// indicator, what matched (the address as the event has it, and its field),
/// and Kaspersky's own fields under `kaspersky.tip`.
#[derive(Serialize)]
pub struct EventEnrichment<'a> {
    indicator: EcsIndicator<'a>,
    matched: EcsMatched<'a>,
    kaspersky: Kaspersky<'a>,
}

/// The enrichment of the address `atomic` (as written in the event) at
/// `field`, from its verdict.
pub fn event_enrichment<'a>(
    v: &'a Verdict,
    atomic: &'a str,
    field: &'a str,
) -> EventEnrichment<'a> {
    EventEnrichment {
        indicator: ecs_indicator(v),
        matched: EcsMatched {
            atomic: echo(atomic),
            kind: Some("enrichment"),
            field: Some(field),
        },
        kaspersky: kaspersky_tip(v),
    }
}

/// One `kaspersky.tip.errors[]` entry of an event: a lookup that failed, so
/// the address got no enrichment.
#[derive(Serialize)]
pub struct EventError<'a> {
    kind: &'a str,
    address: Cow<'a, str>,
    field: &'a str,
    message: &'a str,
}

/// The error entry of the address `address` (bounded) at `field`.
pub fn event_error<'a>(
    kind: &'a str,
    address: &'a str,
    field: &'a str,
    message: &'a str,
) -> EventError<'a> {
    EventError {
        kind,
        address: echo(address),
        field,
        message,
    }
}

#[derive(Serialize)]
struct EcsErrorFields<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
}

/// An error as an ECS document.
#[derive(Serialize)]
pub struct EcsError<'a> {
    event: EcsEvent,
    error: EcsErrorFields<'a>,
    threat: EcsThreat<'a>,
}

/// An error for one input as an ECS document: `event.kind: pipeline_error`,
/// `error.type` the kind, `error.message` the message, `error.code` the
/// HTTP status of an upstream error.
pub fn ecs_error<'a>(
    input: &'a str,
    e: &'a EnrichError,
    matched_field: Option<&'a str>,
) -> EcsError<'a> {
    let code = match e {
        EnrichError::Upstream(u) => Some(u.status.to_string()),
        _ => None,
    };
    ecs_error_document(input, kind(e), error_message(e), code, matched_field)
}

/// [`ecs_error`] for a host error kind (`trap`).
pub fn ecs_host_error<'a>(
    input: &'a str,
    kind: &'a str,
    message: &'a str,
    matched_field: Option<&'a str>,
) -> EcsError<'a> {
    ecs_error_document(input, kind, message, None, matched_field)
}

fn ecs_matched_only<'a>(input: &'a str, matched_field: Option<&'a str>) -> EcsThreat<'a> {
    EcsThreat {
        feed: None,
        enrichments: [EcsEnrichment {
            indicator: None,
            matched: EcsMatched {
                atomic: echo(input),
                kind: None,
                field: matched_field,
            },
        }],
    }
}

fn ecs_error_document<'a>(
    input: &'a str,
    kind: &'a str,
    message: &'a str,
    code: Option<String>,
    matched_field: Option<&'a str>,
) -> EcsError<'a> {
    EcsError {
        event: EcsEvent::of("pipeline_error"),
        error: EcsErrorFields {
            kind,
            message,
            code,
        },
        threat: ecs_matched_only(input, matched_field),
    }
}

/// The service's own problem (no address involved): `{"error": {kind, message}}`.
#[derive(Serialize)]
pub struct Problem<'a> {
    error: ProblemFields<'a>,
}

#[derive(Serialize)]
struct ProblemFields<'a> {
    kind: &'a str,
    message: &'a str,
}

/// A problem answer's body.
pub fn problem<'a>(kind: &'a str, message: &'a str) -> Problem<'a> {
    Problem {
        error: ProblemFields { kind, message },
    }
}

/// The IP gate's refusal: `{"error": {"kind": "blocked", message, verdict, zone}}`;
/// `verdict` and `zone` only when a lookup decided.
#[derive(Serialize)]
pub struct Blocked<'a> {
    error: BlockedFields<'a>,
}

#[derive(Serialize)]
struct BlockedFields<'a> {
    kind: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    verdict: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    zone: Option<&'a str>,
}

/// A refusal's body.
pub fn blocked<'a>(
    message: &'a str,
    verdict: Option<&'a str>,
    zone: Option<&'a str>,
) -> Blocked<'a> {
    Blocked {
        error: BlockedFields {
            kind: "blocked",
            message,
            verdict,
            zone,
        },
    }
}

/// The service's health answer: `status`, `service`, `version`, `configured`,
/// and `problem` (kind, message) when the settings do not resolve.
#[derive(Serialize)]
pub struct Health<'a> {
    status: &'static str,
    service: &'static str,
    version: &'a str,
    configured: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<ProblemFields<'a>>,
}

/// The health answer for a service of `version` whose settings resolve (or
/// not, and why).
pub fn health<'a>(version: &'a str, config: &'a Result<(), EnrichError>) -> Health<'a> {
    Health {
        status: "ok",
        service: "tip-enrich",
        version,
        configured: config.is_ok(),
        problem: config.as_ref().err().map(|e| ProblemFields {
            kind: kind(e),
            message: error_message(e),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::{AptReport, Quota, RateLimit, SoarVerdict, UpstreamError, Zone};
    use serde_json::{Value, json};

    fn value(v: &impl Serialize) -> Value {
        serde_json::from_str(&to_string(v)).unwrap()
    }

    fn verdict() -> Verdict {
        use crate::bindings::{IpStatus, VerdictSource};
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
            as_number: Some(57043),
            as_organization: Some("HOSTKEY-AS".into()),
            network_name: Some("NL-HOSTKEY-20190612".into()),
            categories: vec!["CATEGORY_MALWARE".into()],
            hits_count: Some(12),
            first_seen: Some("2020-01-01T00:00:00Z".into()),
            quota: Some(Quota {
                day_requests: Some(3),
                day_quota: Some(2000),
            }),
            source: VerdictSource::Api,
            fetched_at: None,
            reserved_block: None,
        }
    }

    #[test]
    fn native_fields_in_documented_order() {
        let text = serde_json::to_string(&verdict_line(&verdict())).unwrap();
        let mut at = 0;
        for key in VERDICT_FIELDS.iter().filter(|k| **k != "reserved_block") {
            let found = text
                .get(at..)
                .unwrap()
                .find(&format!("\"{key}\":"))
                .map(|i| i + at);
            at = found.unwrap_or_else(|| panic!("{key} missing or out of order in {text}"));
        }
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["related_report_ids"], json!(["r1"]));
        assert_eq!(v["related_reports"][0]["title"], "Op");
        assert_eq!(v["day_quota"], 2000);
        assert_eq!(v["as_number"], 57043);
        assert_eq!(v["as_organization"], "HOSTKEY-AS");
        assert_eq!(v["network_name"], "NL-HOSTKEY-20190612");
        assert!(
            text.contains(r#""country_code":"NL","as_number":57043,"as_organization":"HOSTKEY-AS","network_name":"NL-HOSTKEY-20190612","categories":"#),
            "{text}"
        );
        // Without AS context the fields are there, null.
        let mut bare = verdict();
        (bare.as_number, bare.as_organization, bare.network_name) = (None, None, None);
        let v = value(&verdict_line(&bare));
        for key in ["as_number", "as_organization", "network_name"] {
            assert_eq!(v[key], Value::Null, "{key}");
        }
    }

    #[test]
    fn errors_carry_status_or_retry_after() {
        let e = EnrichError::Upstream(UpstreamError {
            status: 503,
            message: "busy".into(),
        });
        assert_eq!(
            to_string(&error_line("x", &e)),
            r#"{"ip":"x","error":{"kind":"upstream","message":"busy","status":503}}"#
        );
        let e = EnrichError::RateLimited(RateLimit {
            retry_after_secs: Some(7),
            message: "slow down".into(),
        });
        assert_eq!(value(&error_object(&e))["retry_after_secs"], 7);
        assert_eq!(
            value(&ecs_error("x", &e, None))["error"]["type"],
            "rate-limited"
        );
        let none = EnrichError::RateLimited(RateLimit {
            retry_after_secs: None,
            message: "m".into(),
        });
        assert_eq!(
            to_string(&error_object(&none)),
            r#"{"kind":"rate-limited","message":"m","retry_after_secs":null}"#
        );
    }

    #[test]
    fn an_error_line_echoes_a_bounded_excerpt_of_its_input() {
        let huge = "x".repeat(20 * 1024 * 1024);
        let e = EnrichError::InvalidIp("not an address".into());
        let line = to_string(&error_line(&huge, &e));
        assert!(line.len() < 1024, "{} bytes", line.len());
        let echoed = value(&error_line(&huge, &e))["ip"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(echoed.chars().count(), MAX_ECHO_CHARS + 1);
        assert!(echoed.ends_with('…'));
        let ecs = to_string(&ecs_error(&huge, &e, None));
        assert!(ecs.len() < 1024);
    }

    #[test]
    fn key_order_is_fixed_for_every_shape() {
        let e = EnrichError::Upstream(UpstreamError {
            status: 500,
            message: "m".into(),
        });
        assert_eq!(
            to_string(&ecs_error("1.2.3.4", &e, Some("source.ip"))),
            r#"{"event":{"kind":"pipeline_error","category":["threat"],"type":["indicator"]},"error":{"type":"upstream","message":"m","code":"500"},"threat":{"enrichments":[{"matched":{"atomic":"1.2.3.4","field":"source.ip"}}]}}"#
        );
        let text = to_string(&ecs_verdict(&verdict(), None));
        let (event, threat, kaspersky) = (
            text.find(r#""event":"#).unwrap(),
            text.find(r#""threat":"#).unwrap(),
            text.find(r#""kaspersky":"#).unwrap(),
        );
        assert!(event < threat && threat < kaspersky, "{text}");
        assert_eq!(
            to_string(&problem("not-found", "no")),
            r#"{"error":{"kind":"not-found","message":"no"}}"#
        );
        let bad = Err(EnrichError::Config("no key".into()));
        assert_eq!(
            to_string(&health("1.0", &bad)),
            r#"{"status":"ok","service":"tip-enrich","version":"1.0","configured":false,"problem":{"kind":"config","message":"no key"}}"#
        );
        assert_eq!(
            to_string(&health("1.0", &Ok(()))),
            r#"{"status":"ok","service":"tip-enrich","version":"1.0","configured":true}"#
        );
    }

    #[test]
    fn compact_drops_whitespace_between_tokens_only() {
        let text = "{\n  \"a b\": [1, 2.50e3],\r\n\t\"c\": \"x \\\" y\\\\\" , \"d\" : null }";
        assert_eq!(
            compact(text),
            r#"{"a b":[1,2.50e3],"c":"x \" y\\","d":null}"#
        );
        let v: Value = serde_json::from_str(text).unwrap();
        assert_eq!(v, serde_json::from_str::<Value>(&compact(text)).unwrap());
    }

    #[test]
    fn report_line_is_the_verdict_then_the_sections() {
        let v = verdict();
        let sections = raw_sections(r#"{"Zone":"Red","IpWhoIs":{"Net":{"Name":"X"}}}"#);
        let text = to_string(&report_line(&v, &sections));
        assert!(
            text.starts_with(r#"{"ip":"45.9.148.108","zone":"red""#),
            "{text}"
        );
        assert!(
            text.ends_with(r#","sections":{"Zone":"Red","IpWhoIs":{"Net":{"Name":"X"}}}}"#),
            "{text}"
        );
        assert!(to_string(&report_line(&v, &raw_sections(""))).ends_with(r#","sections":null}"#));
    }

    #[test]
    fn ecs_maps_indicator_and_matched() {
        let e = value(&ecs_verdict(&verdict(), Some("source.ip")));
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
        assert_eq!(
            enrichment["indicator"]["as"],
            json!({"number": 57043, "organization": {"name": "HOSTKEY-AS"}})
        );
        assert_eq!(e["kaspersky"]["tip"]["network_name"], "NL-HOSTKEY-20190612");
        assert!(
            enrichment["indicator"].get("network_name").is_none(),
            "the network name is Kaspersky's field only"
        );

        let mut v6 = verdict();
        v6.ip = "2a0e:1c80:1::1".into();
        v6.threat_score = None;
        v6.country_code = None;
        (v6.as_number, v6.as_organization, v6.network_name) = (None, None, None);
        let e = value(&ecs_verdict(&v6, None));
        let indicator = &e["threat"]["enrichments"][0]["indicator"];
        assert_eq!(indicator["type"], "ipv6-addr");
        assert_eq!(indicator["confidence"], "Not Specified");
        assert!(indicator.get("geo").is_none());
        assert!(indicator.get("as").is_none());
        assert_eq!(e["kaspersky"]["tip"]["network_name"], Value::Null);
        // A number alone, or a name alone.
        v6.as_number = Some(15169);
        let e = value(&ecs_verdict(&v6, None));
        assert_eq!(
            e["threat"]["enrichments"][0]["indicator"]["as"],
            json!({"number": 15169})
        );
        (v6.as_number, v6.as_organization) = (None, Some("GOOGLE".into()));
        let e = value(&ecs_verdict(&v6, None));
        assert_eq!(
            e["threat"]["enrichments"][0]["indicator"]["as"],
            json!({"organization": {"name": "GOOGLE"}})
        );
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
