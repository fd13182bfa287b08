//! STIX 2.1 bundles (`--format stix`, `?format=stix`): one bundle per
//! verdict, as borrowed `Serialize` structs with their keys in a fixed
//! order, written by [`crate::json`]'s writer functions like every other
//! shape. Pure: the caller passes the time (the CLI's host clock, the
//! service's `wasi:clocks/wall-clock`).
//!
//! What a bundle holds (README, "STIX"):
//!
//! - the `identity` of Kaspersky Threat Intelligence Portal, which every
//!   object of ours names as `created_by_ref`;
//! - the address, an `ipv4-addr` or `ipv6-addr` object with the id STIX 2.1
//!   §2.9 derives from its value;
//! - **malicious or suspicious**: an `indicator` whose pattern matches the
//!   address, `confidence` the threat score, `labels` the categories,
//!   `external_references` the address's portal page and each related APT
//!   report, and a `based-on` `relationship` from it to the address;
//! - the address's `autonomous-system` (number and name) when the answer
//!   carried `IpWhoIs`, and a `belongs-to` `relationship` from the address
//!   to it;
//! - **benign or unknown** (green, grey, not found, reserved): no indicator
//!   (consumers turn an indicator into a detection rule), but a `note` on the
//!   address saying what Kaspersky knows of it.
//!
//! STIX allows neither `null` nor an empty list: an absent value is an absent
//! key. Every id other than the address's is a UUIDv5 in tip-enrich's own
//! namespace over the object's JSON with an empty id, so the same answer at
//! the same time always gives the same bundle, and objects that differ in
//! anything have different ids.

use std::fmt::Write as _;

use serde::Serialize;
use sha1::{Digest, Sha1};

use crate::answers::utc_timestamp;
use crate::bindings::{ApiFlavour, SoarVerdict, Verdict, VerdictSource};
use crate::json::{PROVIDER, status_name, to_string};
use crate::settings::{verdict_name, zone_name};

/// The STIX 2.1 namespace of deterministic SCO ids (§2.9),
/// `00abedb4-aa42-466c-9c01-fed23315a9b7`.
const STIX_NAMESPACE: [u8; 16] = [
    0x00, 0xab, 0xed, 0xb4, 0xaa, 0x42, 0x46, 0x6c, 0x9c, 0x01, 0xfe, 0xd2, 0x33, 0x15, 0xa9, 0xb7,
];

/// tip-enrich's namespace for the ids of the objects it creates,
/// `b759a2f0-62ea-4d9e-97cd-dfb90ded7a8c` (a random UUID, fixed once).
const TIP_ENRICH_NAMESPACE: [u8; 16] = [
    0xb7, 0x59, 0xa2, 0xf0, 0x62, 0xea, 0x4d, 0x9e, 0x97, 0xcd, 0xdf, 0xb9, 0x0d, 0xed, 0x7a, 0x8c,
];

const SPEC_VERSION: &str = "2.1";

/// When the Kaspersky identity object was defined: its `created` and
/// `modified`, the same in every bundle, so it is one object everywhere.
const IDENTITY_CREATED: &str = "2026-12-01T00:00:00.000Z";

/// `source_name` of the references to related reports (the portal's
/// Reporting section).
const REPORT_SOURCE: &str = "Kaspersky Threat Intelligence Portal Reporting";

/// The UUIDv5 (RFC 9562 §5.5) of `name` in `namespace`, lower-case hex.
fn uuid5(namespace: &[u8; 16], name: &str) -> String {
    let mut hasher = Sha1::new();
    hasher.update(namespace);
    hasher.update(name.as_bytes());
    let mut bytes = [0u8; 16];
    for (b, d) in bytes.iter_mut().zip(hasher.finalize().iter()) {
        *b = *d;
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x50;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut text = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        let _ = write!(text, "{b:02x}");
    }
    text
}

/// The id of an object of ours: `{kind}--` and the UUIDv5 of its JSON
/// (written with an empty id) in tip-enrich's namespace.
fn content_id(kind: &str, object: &impl Serialize) -> String {
    format!(
        "{kind}--{}",
        uuid5(&TIP_ENRICH_NAMESPACE, &to_string(object))
    )
}

/// `ipv4-addr` or `ipv6-addr`.
fn address_type(ip: &str) -> &'static str {
    if ip.contains(':') {
        "ipv6-addr"
    } else {
        "ipv4-addr"
    }
}

/// The deterministic id of the address object (STIX 2.1 §2.9): UUIDv5 in
/// the STIX namespace over the JSON of its only ID contributing property,
/// `{"value":"…"}` (RFC 8785 canonical: one key, and a normalised address
/// has no character JSON escapes).
pub fn address_id(ip: &str) -> String {
    let name = to_string(&ValueOnly { value: ip });
    format!("{}--{}", address_type(ip), uuid5(&STIX_NAMESPACE, &name))
}

#[derive(Serialize)]
struct ValueOnly<'a> {
    value: &'a str,
}

/// The STIX pattern matching exactly `ip`: `[ipv4-addr:value = '…']`.
pub fn pattern(ip: &str) -> String {
    let literal = ip.replace('\\', "\\\\").replace('\'', "\\'");
    format!("[{}:value = '{literal}']", address_type(ip))
}

/// `text` percent-encoded for a URL's path segment or query value: the
/// unreserved characters and `:` (allowed in both) stay, every other byte is
/// `%XX`. An address comes out unchanged.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The web page of `ip` on the portal of `api`: the commercial portal's
/// search, or OpenTIP's page of the address. (The public portal, not the
/// configured base URL, which may be a proxy.)
pub fn address_page(api: ApiFlavour, ip: &str) -> String {
    match api {
        ApiFlavour::Tip => format!(
            "https://tip.kaspersky.com/search?searchString={}",
            percent_encode(ip)
        ),
        ApiFlavour::Opentip => format!("https://opentip.kaspersky.com/{}/", percent_encode(ip)),
    }
}

/// The page of an APT report (a publication id) in the commercial portal's
/// Reporting section, where the reports live.
pub fn report_page(id: &str) -> String {
    format!(
        "https://tip.kaspersky.com/reporting?id={}",
        percent_encode(id)
    )
}

/// `unix_ms` as a STIX timestamp with millisecond precision
/// (`2026-12-01T17:41:42.123Z`), as `created` and `modified` require.
pub fn timestamp_ms(unix_ms: u64) -> String {
    let seconds = utc_timestamp(unix_ms);
    let whole = seconds.strip_suffix('Z').unwrap_or(&seconds);
    format!("{whole}.{:03}Z", unix_ms % 1000)
}

/// Whether `text` is a STIX timestamp: `YYYY-MM-DDTHH:MM:SS[.s+]Z`.
fn is_timestamp(text: &str) -> bool {
    const SHAPE: &[u8] = b"0000-00-00T00:00:00";
    let Some((head, tail)) = text.as_bytes().split_at_checked(SHAPE.len()) else {
        return false;
    };
    let head_fits = head.iter().zip(SHAPE).all(|(c, s)| match s {
        b'0' => c.is_ascii_digit(),
        _ => c == s,
    });
    let tail_fits = match tail {
        [b'Z'] => true,
        [b'.', fraction @ .., b'Z'] => {
            !fraction.is_empty() && fraction.iter().all(u8::is_ascii_digit)
        }
        _ => false,
    };
    head_fits && tail_fits
}

#[derive(Serialize)]
struct ExternalReference<'a> {
    source_name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_id: Option<&'a str>,
}

/// The address's portal page, then one reference per related APT report
/// (its id, its title when given, its page).
fn references(v: &Verdict, api: ApiFlavour) -> Vec<ExternalReference<'_>> {
    let page = ExternalReference {
        source_name: PROVIDER,
        description: Some("the address's report in the portal"),
        url: Some(address_page(api, &v.ip)),
        external_id: None,
    };
    let reports = v
        .related_reports
        .iter()
        .filter(|r| !r.id.is_empty())
        .map(|r| ExternalReference {
            source_name: REPORT_SOURCE,
            description: r.title.as_deref().filter(|t| !t.is_empty()),
            url: Some(report_page(&r.id)),
            external_id: Some(&r.id),
        });
    std::iter::once(page).chain(reports).collect()
}

/// The categories, as STIX labels (empty ones dropped).
fn labels(v: &Verdict) -> Vec<&str> {
    v.categories
        .iter()
        .map(String::as_str)
        .filter(|c| !c.is_empty())
        .collect()
}

/// What Kaspersky said of the address, as sentences: the indicator's
/// `description` and the note's `content`.
fn facts(v: &Verdict) -> Vec<String> {
    let mut facts = vec![format!(
        "{PROVIDER}: zone {}, verdict {}{}.",
        zone_name(v.zone),
        verdict_name(v.verdict),
        v.threat_score
            .map(|s| format!(", threat score {s}"))
            .unwrap_or_default()
    )];
    if let Some(block) = &v.reserved_block {
        facts.push(format!(
            "Reserved address, {block}: answered without asking the API."
        ));
    } else if !v.found {
        facts.push("The API has no data on this address (HTTP 404).".to_owned());
    }
    if let Some(status) = v.status {
        facts.push(format!("Status: {}.", status_name(status)));
    }
    if let Some(country) = &v.country_code {
        facts.push(format!("Country: {country}."));
    }
    if let Some(hits) = v.hits_count {
        facts.push(format!("Hits: {hits}."));
    }
    if let Some(first_seen) = &v.first_seen {
        facts.push(format!("First seen: {first_seen}."));
    }
    match (v.as_number, &v.as_organization) {
        (Some(n), Some(org)) => facts.push(format!("AS{n} {org}.")),
        (Some(n), None) => facts.push(format!("AS{n}.")),
        _ => {}
    }
    if let Some(network) = &v.network_name {
        facts.push(format!("Network: {network}."));
    }
    let labels = labels(v);
    if !labels.is_empty() {
        facts.push(format!("Categories: {}.", labels.join(", ")));
    }
    if !v.related_reports.is_empty() {
        facts.push(format!("Related APT reports: {}.", v.related_reports.len()));
    }
    if let (VerdictSource::Cache, Some(at)) = (v.source, &v.fetched_at) {
        facts.push(format!("Answer kept from {at}."));
    }
    facts
}

/// The properties every object of ours begins with. `id` is empty until
/// [`content_id`] fills it in from the rest.
#[derive(Serialize)]
struct Common {
    #[serde(rename = "type")]
    kind: &'static str,
    spec_version: &'static str,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_by_ref: Option<String>,
    created: String,
    modified: String,
}

impl Common {
    /// An object of `kind` by `by`, created (and last modified) `at`.
    fn new(kind: &'static str, by: Option<&str>, at: &str) -> Common {
        Common {
            kind,
            spec_version: SPEC_VERSION,
            id: String::new(),
            created_by_ref: by.map(str::to_owned),
            created: at.to_owned(),
            modified: at.to_owned(),
        }
    }
}

/// The Kaspersky Threat Intelligence Portal `identity`.
#[derive(Serialize)]
pub struct Identity {
    #[serde(flatten)]
    common: Common,
    name: &'static str,
    identity_class: &'static str,
}

fn identity() -> Identity {
    let mut identity = Identity {
        common: Common::new("identity", None, IDENTITY_CREATED),
        name: PROVIDER,
        identity_class: "organization",
    };
    identity.common.id = content_id("identity", &identity);
    identity
}

/// The address: an `ipv4-addr` or `ipv6-addr` cyber-observable.
#[derive(Serialize)]
pub struct Address<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    spec_version: &'static str,
    id: String,
    value: &'a str,
}

/// The address's autonomous system, when the answer named it
/// (`IpWhoIs.Asn`): an `autonomous-system` cyber-observable with the id STIX
/// derives from its `number`.
#[derive(Serialize)]
pub struct AutonomousSystem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    spec_version: &'static str,
    id: String,
    number: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

#[derive(Serialize)]
struct NumberOnly {
    number: u32,
}

/// The deterministic id of an autonomous system (STIX 2.1 §2.9): UUIDv5 in
/// the STIX namespace over `{"number":…}`, its ID contributing property.
pub fn autonomous_system_id(number: u32) -> String {
    let name = to_string(&NumberOnly { number });
    format!("autonomous-system--{}", uuid5(&STIX_NAMESPACE, &name))
}

/// An `indicator` of a malicious or suspicious address.
#[derive(Serialize)]
pub struct Indicator<'a> {
    #[serde(flatten)]
    common: Common,
    name: String,
    description: String,
    indicator_types: [&'static str; 1],
    pattern: String,
    pattern_type: &'static str,
    pattern_version: &'static str,
    valid_from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    confidence: Option<u8>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    labels: Vec<&'a str>,
    external_references: Vec<ExternalReference<'a>>,
}

/// `based-on` from the indicator to the address.
#[derive(Serialize)]
pub struct Relationship {
    #[serde(flatten)]
    common: Common,
    relationship_type: &'static str,
    source_ref: String,
    target_ref: String,
}

/// A `note` on a benign or unknown address.
#[derive(Serialize)]
pub struct Note<'a> {
    #[serde(flatten)]
    common: Common,
    #[serde(rename = "abstract")]
    summary: String,
    content: String,
    object_refs: [String; 1],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    labels: Vec<&'a str>,
    external_references: Vec<ExternalReference<'a>>,
}

/// One object of a bundle.
#[derive(Serialize)]
#[serde(untagged)]
pub enum StixObject<'a> {
    /// Kaspersky Threat Intelligence Portal.
    Identity(Identity),
    /// The address.
    Address(Address<'a>),
    /// A malicious or suspicious address's indicator.
    Indicator(Box<Indicator<'a>>),
    /// The address's autonomous system.
    AutonomousSystem(AutonomousSystem<'a>),
    /// Indicator `based-on` address, or address `belongs-to` autonomous system.
    Relationship(Relationship),
    /// A benign or unknown address's note.
    Note(Box<Note<'a>>),
}

/// A STIX 2.1 bundle: `type`, `id`, `objects`.
#[derive(Serialize)]
pub struct StixBundle<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: String,
    objects: Vec<StixObject<'a>>,
}

/// The bundle of one verdict. `api` picks the portal the references point
/// to; `now_unix_ms` is the time of writing (`created`, `modified`, and
/// `valid_from` unless the answer came from the answer store, whose
/// `fetched_at` it is then).
pub fn stix_bundle(v: &Verdict, api: ApiFlavour, now_unix_ms: u64) -> StixBundle<'_> {
    let now = timestamp_ms(now_unix_ms);
    let identity = identity();
    let address = Address {
        kind: address_type(&v.ip),
        spec_version: SPEC_VERSION,
        id: address_id(&v.ip),
        value: &v.ip,
    };
    let address_ref = address.id.clone();
    let mut objects = Vec::with_capacity(4);
    let by = identity.common.id.clone();
    let by = Some(by.as_str());
    objects.push(StixObject::Identity(identity));
    objects.push(StixObject::Address(address));
    if let Some(number) = v.as_number {
        let system = AutonomousSystem {
            kind: "autonomous-system",
            spec_version: SPEC_VERSION,
            id: autonomous_system_id(number),
            number,
            name: v.as_organization.as_deref().filter(|n| !n.is_empty()),
        };
        let mut belongs = Relationship {
            common: Common::new("relationship", by, &now),
            relationship_type: "belongs-to",
            source_ref: address_ref.clone(),
            target_ref: system.id.clone(),
        };
        belongs.common.id = content_id("relationship", &belongs);
        objects.push(StixObject::AutonomousSystem(system));
        objects.push(StixObject::Relationship(belongs));
    }
    let indicator_type = match v.verdict {
        SoarVerdict::Malicious => Some("malicious-activity"),
        SoarVerdict::Suspicious => Some("anomalous-activity"),
        SoarVerdict::Benign | SoarVerdict::Unknown => None,
    };
    if let Some(indicator_type) = indicator_type {
        let valid_from = match (v.source, &v.fetched_at) {
            (VerdictSource::Cache, Some(at)) if is_timestamp(at) => at.clone(),
            _ => now.clone(),
        };
        let mut indicator = Indicator {
            common: Common::new("indicator", by, &now),
            name: format!(
                "{} {} (Kaspersky zone {})",
                verdict_name(v.verdict),
                v.ip,
                zone_name(v.zone)
            ),
            description: facts(v).join(" "),
            indicator_types: [indicator_type],
            pattern: pattern(&v.ip),
            pattern_type: "stix",
            pattern_version: SPEC_VERSION,
            valid_from,
            confidence: v.threat_score.map(|s| s.min(100)),
            labels: labels(v),
            external_references: references(v, api),
        };
        indicator.common.id = content_id("indicator", &indicator);
        let mut relationship = Relationship {
            common: Common::new("relationship", by, &now),
            relationship_type: "based-on",
            source_ref: indicator.common.id.clone(),
            target_ref: address_ref,
        };
        relationship.common.id = content_id("relationship", &relationship);
        objects.push(StixObject::Indicator(Box::new(indicator)));
        objects.push(StixObject::Relationship(relationship));
    } else {
        let mut note = Note {
            common: Common::new("note", by, &now),
            summary: format!(
                "Kaspersky TIP: {} (zone {})",
                verdict_name(v.verdict),
                zone_name(v.zone)
            ),
            content: facts(v).join("\n"),
            object_refs: [address_ref],
            labels: labels(v),
            external_references: references(v, api),
        };
        note.common.id = content_id("note", &note);
        objects.push(StixObject::Note(Box::new(note)));
    }
    let mut bundle = StixBundle {
        kind: "bundle",
        id: String::new(),
        objects,
    };
    bundle.id = content_id("bundle", &bundle);
    bundle
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::{AptReport, IpStatus, Zone};
    use crate::config::VerdictMap;
    use serde_json::Value;

    /// 2026-12-01T17:41:42.123Z.
    const NOW: u64 = 1_796_146_902_123;

    fn bundle(v: &Verdict, api: ApiFlavour) -> Value {
        serde_json::from_str(&to_string(&stix_bundle(v, api, NOW))).unwrap()
    }

    fn types(b: &Value) -> Vec<&str> {
        b["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["type"].as_str().unwrap())
            .collect()
    }

    fn object<'a>(b: &'a Value, kind: &str) -> &'a Value {
        b["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {b}"))
    }

    /// A verdict built from the core's own constructor, so a field added to
    /// the WIT record needs no change here.
    fn verdict(ip: &str, zone: Zone, score: Option<u8>, verdict: SoarVerdict) -> Verdict {
        let mut v = crate::verdict::not_found(ip.parse().unwrap(), &VerdictMap::default());
        v.zone = zone;
        v.threat_score = score;
        v.verdict = verdict;
        v.found = true;
        v.status = Some(IpStatus::Known);
        v
    }

    fn red() -> Verdict {
        let mut v = verdict("45.9.148.108", Zone::Red, Some(92), SoarVerdict::Malicious);
        v.has_apt = true;
        v.related_reports = vec![
            AptReport {
                id: "7aQ1bKX1S0KHGtJ2aJ9S3w".into(),
                title: Some("Operation X".into()),
            },
            AptReport {
                id: "a b/c".into(),
                title: None,
            },
        ];
        v.categories = vec!["CATEGORY_MALWARE".into(), "CATEGORY_BOTNET_CNC".into()];
        v.country_code = Some("NL".into());
        v
    }

    /// Every value in `v`, recursively, is neither null nor an empty list.
    fn assert_no_nulls_or_empty_lists(v: &Value, at: &str) {
        match v {
            Value::Null => panic!("null at {at}"),
            Value::Array(items) => {
                assert!(!items.is_empty(), "empty list at {at}");
                for (i, item) in items.iter().enumerate() {
                    assert_no_nulls_or_empty_lists(item, &format!("{at}[{i}]"));
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    assert_no_nulls_or_empty_lists(item, &format!("{at}.{k}"));
                }
            }
            _ => {}
        }
    }

    #[test]
    fn uuid5_matches_known_values() {
        // RFC 9562, Appendix A.4: "www.example.com" in the DNS namespace.
        let dns = [
            0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4,
            0x30, 0xc8,
        ];
        assert_eq!(
            uuid5(&dns, "www.example.com"),
            "2ed6657d-e927-568b-95e1-2665a8aea6a2"
        );
    }

    #[test]
    fn address_ids_are_the_ones_stix2_computes() {
        // python -c 'import stix2; print(stix2.IPv4Address(value="45.9.148.108").id)'
        // with stix2 3.0.2 (tests/stix/requirements.txt).
        assert_eq!(
            address_id("45.9.148.108"),
            "ipv4-addr--42a1fbc1-e5d2-5819-97b4-fd0c3f11a260"
        );
        assert_eq!(
            address_id("2a0e:1c80:1::1"),
            "ipv6-addr--92c41649-48cc-5f6f-aabf-f3c44d101056"
        );
    }

    #[test]
    fn patterns_for_both_families() {
        assert_eq!(
            pattern("45.9.148.108"),
            "[ipv4-addr:value = '45.9.148.108']"
        );
        assert_eq!(
            pattern("2a0e:1c80:1::1"),
            "[ipv6-addr:value = '2a0e:1c80:1::1']"
        );
        assert_eq!(pattern("a'b\\"), "[ipv4-addr:value = 'a\\'b\\\\']");
    }

    #[test]
    fn portal_pages_per_flavour() {
        assert_eq!(
            address_page(ApiFlavour::Tip, "45.9.148.108"),
            "https://tip.kaspersky.com/search?searchString=45.9.148.108"
        );
        assert_eq!(
            address_page(ApiFlavour::Tip, "2a0e:1c80:1::1"),
            "https://tip.kaspersky.com/search?searchString=2a0e:1c80:1::1"
        );
        assert_eq!(
            address_page(ApiFlavour::Opentip, "8.8.8.8"),
            "https://opentip.kaspersky.com/8.8.8.8/"
        );
        assert_eq!(
            report_page("a b/c&d"),
            "https://tip.kaspersky.com/reporting?id=a%20b%2Fc%26d"
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamp_ms(NOW), "2026-12-01T17:41:42.123Z");
        assert_eq!(timestamp_ms(5), "1970-01-01T00:00:00.005Z");
        for good in ["2026-12-01T17:41:42Z", "2026-12-01T17:41:42.5Z"] {
            assert!(is_timestamp(good), "{good}");
        }
        for bad in [
            "2026-12-01T17:41Z",
            "2026-12-01T17:41:42",
            "2026-12-01T17:41:42.Z",
            "2026-12-01 17:41:42Z",
            "2026-12-01T17:41:42+00:00",
            "",
        ] {
            assert!(!is_timestamp(bad), "{bad}");
        }
    }

    #[test]
    fn malicious_gives_an_indicator_based_on_the_address() {
        let b = bundle(&red(), ApiFlavour::Tip);
        assert_no_nulls_or_empty_lists(&b, "bundle");
        assert_eq!(
            types(&b),
            ["identity", "ipv4-addr", "indicator", "relationship"]
        );
        let identity = object(&b, "identity");
        assert_eq!(identity["identity_class"], "organization");
        assert_eq!(identity["name"], PROVIDER);
        let address = object(&b, "ipv4-addr");
        assert_eq!(address["value"], "45.9.148.108");
        assert_eq!(address["id"], address_id("45.9.148.108"));
        let indicator = object(&b, "indicator");
        assert_eq!(indicator["created_by_ref"], identity["id"]);
        assert_eq!(indicator["indicator_types"][0], "malicious-activity");
        assert_eq!(indicator["pattern"], "[ipv4-addr:value = '45.9.148.108']");
        assert_eq!(indicator["pattern_type"], "stix");
        assert_eq!(indicator["confidence"], 92);
        assert_eq!(indicator["created"], "2026-12-01T17:41:42.123Z");
        assert_eq!(indicator["valid_from"], "2026-12-01T17:41:42.123Z");
        assert_eq!(
            indicator["labels"],
            serde_json::json!(["CATEGORY_MALWARE", "CATEGORY_BOTNET_CNC"])
        );
        let refs = indicator["external_references"].as_array().unwrap();
        assert_eq!(refs.len(), 3);
        assert_eq!(
            refs[0]["url"],
            "https://tip.kaspersky.com/search?searchString=45.9.148.108"
        );
        assert_eq!(refs[1]["external_id"], "7aQ1bKX1S0KHGtJ2aJ9S3w");
        assert_eq!(refs[1]["description"], "Operation X");
        assert_eq!(
            refs[1]["url"],
            "https://tip.kaspersky.com/reporting?id=7aQ1bKX1S0KHGtJ2aJ9S3w"
        );
        assert!(refs[2].get("description").is_none());
        let description = indicator["description"].as_str().unwrap();
        assert!(
            description.contains("zone red, verdict malicious, threat score 92"),
            "{description}"
        );
        let relationship = object(&b, "relationship");
        assert_eq!(relationship["relationship_type"], "based-on");
        assert_eq!(relationship["source_ref"], indicator["id"]);
        assert_eq!(relationship["target_ref"], address["id"]);
    }

    #[test]
    fn suspicious_ipv6_without_score_or_categories_omits_them() {
        let v = verdict(
            "2a0e:1c80:1::1",
            Zone::Orange,
            None,
            SoarVerdict::Suspicious,
        );
        let b = bundle(&v, ApiFlavour::Opentip);
        assert_no_nulls_or_empty_lists(&b, "bundle");
        assert_eq!(
            types(&b),
            ["identity", "ipv6-addr", "indicator", "relationship"]
        );
        let indicator = object(&b, "indicator");
        assert_eq!(indicator["indicator_types"][0], "anomalous-activity");
        assert_eq!(indicator["pattern"], "[ipv6-addr:value = '2a0e:1c80:1::1']");
        assert!(indicator.get("confidence").is_none());
        assert!(indicator.get("labels").is_none());
        assert_eq!(
            indicator["external_references"][0]["url"],
            "https://opentip.kaspersky.com/2a0e:1c80:1::1/"
        );
    }

    #[test]
    fn benign_and_unknown_give_a_note_and_no_indicator() {
        let green = verdict("8.8.8.8", Zone::Green, Some(0), SoarVerdict::Benign);
        let not_found =
            crate::verdict::not_found("7.7.7.7".parse().unwrap(), &VerdictMap::default());
        let block = crate::special_block("10.0.0.1".parse().unwrap()).unwrap();
        let reserved = crate::verdict::reserved_locally(
            "10.0.0.1".parse().unwrap(),
            block,
            &VerdictMap::default(),
        );
        for (v, abstract_, fact) in [
            (
                &green,
                "Kaspersky TIP: benign (zone green)",
                "threat score 0",
            ),
            (&not_found, "Kaspersky TIP: unknown (zone grey)", "HTTP 404"),
            (
                &reserved,
                "Kaspersky TIP: unknown (zone grey)",
                "10.0.0.0/8",
            ),
        ] {
            let b = bundle(v, ApiFlavour::Tip);
            assert_no_nulls_or_empty_lists(&b, "bundle");
            assert_eq!(types(&b), ["identity", "ipv4-addr", "note"], "{}", v.ip);
            let note = object(&b, "note");
            assert_eq!(note["abstract"], abstract_);
            assert!(note["content"].as_str().unwrap().contains(fact), "{note}");
            assert_eq!(note["object_refs"][0], address_id(&v.ip));
            assert_eq!(note["created_by_ref"], object(&b, "identity")["id"]);
            assert!(note.get("confidence").is_none());
        }
    }

    #[test]
    fn a_cached_answer_is_valid_from_when_it_was_fetched() {
        let mut v = red();
        v.source = VerdictSource::Cache;
        v.fetched_at = Some("2026-11-30T08:00:00Z".into());
        let b = bundle(&v, ApiFlavour::Tip);
        let indicator = object(&b, "indicator");
        assert_eq!(indicator["valid_from"], "2026-11-30T08:00:00Z");
        assert_eq!(indicator["created"], "2026-12-01T17:41:42.123Z");
        // A fetched_at that is not a STIX timestamp never reaches the bundle.
        v.fetched_at = Some("yesterday".into());
        let b = bundle(&v, ApiFlavour::Tip);
        assert_eq!(
            object(&b, "indicator")["valid_from"],
            "2026-12-01T17:41:42.123Z"
        );
    }

    #[test]
    fn ids_are_deterministic_and_follow_the_content() {
        let v = red();
        let a = to_string(&stix_bundle(&v, ApiFlavour::Tip, NOW));
        assert_eq!(a, to_string(&stix_bundle(&v, ApiFlavour::Tip, NOW)));
        let later: Value =
            serde_json::from_str(&to_string(&stix_bundle(&v, ApiFlavour::Tip, NOW + 1))).unwrap();
        let a: Value = serde_json::from_str(&a).unwrap();
        assert_ne!(a["id"], later["id"]);
        assert_ne!(
            object(&a, "indicator")["id"],
            object(&later, "indicator")["id"]
        );
        // The identity and the address are the same objects in every bundle.
        assert_eq!(object(&a, "identity"), object(&later, "identity"));
        assert_eq!(object(&a, "ipv4-addr"), object(&later, "ipv4-addr"));
        for o in a["objects"].as_array().unwrap() {
            let id = o["id"].as_str().unwrap();
            let (kind, uuid) = id.split_once("--").unwrap();
            assert_eq!(kind, o["type"]);
            assert_eq!(uuid.len(), 36);
            assert_eq!(uuid.as_bytes()[14], b'5', "version 5: {id}");
        }
    }

    #[test]
    fn keys_come_out_in_a_fixed_order() {
        let text = to_string(&stix_bundle(&red(), ApiFlavour::Tip, NOW));
        assert!(
            text.starts_with(r#"{"type":"bundle","id":"bundle--"#),
            "{text}"
        );
        let indicator = text.find(r#"{"type":"indicator","spec_version":"2.1","id":"indicator--"#);
        assert!(indicator.is_some(), "{text}");
    }
}
