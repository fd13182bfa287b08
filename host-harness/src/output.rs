//! The CLI's JSON Lines: one object per input, a verdict, a report or an error.

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::runtime::bindings::exports::tip::enrich::enrich_ip as wit;
use crate::runtime::{EnrichError, IpStatus, Report, SoarVerdict, Verdict, VerdictSource, Zone};

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

fn verdict_name(v: SoarVerdict) -> &'static str {
    match v {
        SoarVerdict::Malicious => "malicious",
        SoarVerdict::Suspicious => "suspicious",
        SoarVerdict::Benign => "benign",
        SoarVerdict::Unknown => "unknown",
    }
}

fn status_name(s: IpStatus) -> &'static str {
    match s {
        IpStatus::Known => "known",
        IpStatus::Reserved => "reserved",
        IpStatus::NoInfo => "no-info",
    }
}

/// The kind of an error, spelled as its WIT case.
pub fn error_kind(e: &EnrichError) -> &'static str {
    match e {
        EnrichError::InvalidIp(_) => "invalid-ip",
        EnrichError::BadRequest(_) => "bad-request",
        EnrichError::Unauthorized(_) => "unauthorized",
        EnrichError::QuotaExceeded(_) => "quota-exceeded",
        EnrichError::RateLimited(_) => "rate-limited",
        EnrichError::Upstream(_) => "upstream",
        EnrichError::Timeout(_) => "timeout",
        EnrichError::Transport(_) => "transport",
        EnrichError::MalformedResponse(_) => "malformed-response",
        EnrichError::Config(_) => "config",
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

/// A verdict line, fields in the documented order.
#[derive(Serialize)]
struct VerdictLine<'a> {
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

/// A verdict as a JSON object.
pub fn verdict_json(v: &Verdict) -> Value {
    let line = VerdictLine {
        ip: &v.ip,
        zone: zone_name(v.zone),
        threat_score: v.threat_score,
        has_apt: v.has_apt,
        related_report_ids: v.related_reports.iter().map(|r| r.id.as_str()).collect(),
        suspicious: v.suspicious,
        verdict: verdict_name(v.verdict),
        found: v.found,
        source: match v.source {
            VerdictSource::Api => "api",
            VerdictSource::Local => "local",
        },
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
    };
    serde_json::to_value(line).unwrap_or(Value::Null)
}

/// An error line: the input as given, and the error.
pub fn error_json(input: &str, e: &EnrichError) -> Value {
    let mut error = Map::new();
    error.insert("kind".into(), error_kind(e).into());
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
    json!({ "ip": input, "error": error })
}

/// A host-side failure (the component trapped), as an error line of kind `trap`.
pub fn trap_json(input: &str, message: &str) -> Value {
    json!({ "ip": input, "error": { "kind": "trap", "message": message } })
}

/// Converts WIT records to JSON with snake_case keys and lower-case enums.
trait ToJson {
    fn to_json(&self) -> Value;
}

impl ToJson for String {
    fn to_json(&self) -> Value {
        Value::String(self.clone())
    }
}
impl ToJson for u64 {
    fn to_json(&self) -> Value {
        json!(self)
    }
}
impl ToJson for u8 {
    fn to_json(&self) -> Value {
        json!(self)
    }
}
impl ToJson for f64 {
    fn to_json(&self) -> Value {
        json!(self)
    }
}
impl ToJson for bool {
    fn to_json(&self) -> Value {
        json!(self)
    }
}
impl ToJson for Zone {
    fn to_json(&self) -> Value {
        zone_name(*self).into()
    }
}
impl ToJson for IpStatus {
    fn to_json(&self) -> Value {
        status_name(*self).into()
    }
}
impl<T: ToJson> ToJson for Option<T> {
    fn to_json(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToJson::to_json)
    }
}
impl<T: ToJson> ToJson for Vec<T> {
    fn to_json(&self) -> Value {
        Value::Array(self.iter().map(ToJson::to_json).collect())
    }
}

/// Implements [`ToJson`] for a record; the destructuring has no `..`, so a
/// field added to the WIT record fails to compile until it is listed here.
macro_rules! record_json {
    ($($ty:ident { $($field:ident),* $(,)? })*) => {$(
        impl ToJson for wit::$ty {
            fn to_json(&self) -> Value {
                let wit::$ty { $($field),* } = self;
                let mut map = Map::new();
                $(map.insert(stringify!($field).to_owned(), $field.to_json());)*
                Value::Object(map)
            }
        }
    )*};
}

record_json! {
    AptReport { id, title }
    LicenseInfo { access_type, day_requests, day_quota, token_expiration_date }
    RelatedObjects { has_red_zone }
    CategoryWithZone { name, zone }
    IpGeneralInfo { hits_count, first_seen, threat_score, ip, country_code, status, categories,
        categories_with_zone, has_apt, related_apt_reports }
    DownloadedFile { zone, download_hits_count, md5, first_seen, last_seen, detection_name, url }
    HostedUrl { zone, url_hits_count, url, is_url_truncated, first_seen, last_seen }
    FeedMask { zone, status, normalized_mask, feed_names, mask_type }
    WhoisAsn { number, origin, description }
    WhoisNet { range_start, range_end, created, changed, name, description }
    WhoisContact { address, organization_id, name, contact_role, contact_type, fax, phone, email }
    IpWhois { asn, net, contacts }
    DnsResolution { zone, domain, first_seen, last_seen, hits_count, daily_peak, peak_date, categories }
    SpamInfo { spam_attacks, spam_ratio, last_attack_date, spam_attack_types }
    PhishingInfo { phishing_attacks, last_attack_date, regions, phish_kit, stolen_data_type,
        attacked_industry, attacked_organization }
}

/// A full report: the verdict line's fields, then `sections` (typed, snake_case)
/// and `raw` (the API's JSON as it came, or null).
pub fn report_json(r: &Report) -> Value {
    let Report {
        verdict,
        license_info,
        zone,
        related_objects,
        ip_general_info,
        files_downloaded_from_ip,
        hosted_urls,
        feed_masks,
        ip_whois,
        ip_dns_resolutions,
        ip_spam_info,
        ip_phishing_info,
        data_feeds,
        raw_json,
    } = r;
    let mut out = match verdict_json(verdict) {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let mut sections = Map::new();
    for (name, value) in [
        ("license_info", license_info.to_json()),
        ("zone", zone.to_json()),
        ("related_objects", related_objects.to_json()),
        ("ip_general_info", ip_general_info.to_json()),
        (
            "files_downloaded_from_ip",
            files_downloaded_from_ip.to_json(),
        ),
        ("hosted_urls", hosted_urls.to_json()),
        ("feed_masks", feed_masks.to_json()),
        ("ip_whois", ip_whois.to_json()),
        ("ip_dns_resolutions", ip_dns_resolutions.to_json()),
        ("ip_spam_info", ip_spam_info.to_json()),
        ("ip_phishing_info", ip_phishing_info.to_json()),
        ("data_feeds", data_feeds.to_json()),
    ] {
        sections.insert(name.to_owned(), value);
    }
    out.insert("sections".into(), Value::Object(sections));
    let raw = if raw_json.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(raw_json).unwrap_or_else(|_| Value::String(raw_json.clone()))
    };
    out.insert("raw".into(), raw);
    Value::Object(out)
}
