//! Shared by the native core tests and the component tests: loads
//! `tests/expected.toml` and checks an observed outcome against it, so both
//! layers are held to the same expectations for every recording.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The workspace's `tests/` directory.
pub fn tests_dir() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    if here.join("tests/expected.toml").exists() {
        here.join("tests")
    } else {
        here.join("../tests")
    }
}

/// One expectation: the recording's name and its table.
pub struct Expectation {
    pub name: String,
    pub table: toml::Table,
}

impl Expectation {
    pub fn str(&self, key: &str) -> Option<&str> {
        self.table.get(key).and_then(|v| v.as_str())
    }
    pub fn bool(&self, key: &str) -> Option<bool> {
        self.table.get(key).and_then(|v| v.as_bool())
    }
    pub fn call(&self) -> &str {
        self.str("call").unwrap_or("enrich")
    }
    pub fn ip(&self) -> &str {
        self.str("ip").expect("every expectation names an ip")
    }
    pub fn api(&self) -> &str {
        self.str("api").unwrap_or("tip")
    }
    pub fn query_reserved(&self) -> bool {
        self.bool("query_reserved").unwrap_or(false)
    }
    /// The `sections` setting, when the expectation gives one.
    pub fn sections(&self) -> Option<Vec<String>> {
        self.str("sections")
            .map(|s| s.split(',').map(str::to_owned).collect())
    }
}

/// Every expectation, after checking that each recording has one and each
/// expectation has a recording.
pub fn load() -> Vec<Expectation> {
    let dir = tests_dir();
    let text =
        std::fs::read_to_string(dir.join("expected.toml")).expect("read tests/expected.toml");
    let table: toml::Table = toml::from_str(&text).expect("parse tests/expected.toml");
    let recordings: Vec<String> = std::fs::read_dir(dir.join("recordings"))
        .expect("read tests/recordings")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    for name in &recordings {
        assert!(
            table.contains_key(name),
            "recording {name} has no entry in tests/expected.toml"
        );
    }
    for name in table.keys() {
        assert!(
            recordings.contains(name),
            "tests/expected.toml names {name}, which is not a recording"
        );
    }
    table
        .into_iter()
        .map(|(name, v)| Expectation {
            name,
            table: v.as_table().cloned().expect("each entry is a table"),
        })
        .collect()
}

/// A verdict or report, reduced to what expectations can name.
#[derive(Debug, Default)]
pub struct Observed {
    pub ip: String,
    pub zone: String,
    pub threat_score: Option<u8>,
    pub verdict: String,
    pub has_apt: bool,
    pub report_ids: Vec<String>,
    pub suspicious: bool,
    pub found: bool,
    pub status: Option<String>,
    pub country_code: Option<String>,
    pub as_number: Option<u32>,
    pub as_organization: Option<String>,
    pub network_name: Option<String>,
    pub categories: Vec<String>,
    pub first_seen: Option<String>,
    pub day_requests: Option<u64>,
    pub day_quota: Option<u64>,
    pub has_quota: bool,
    pub source: String,
    /// For reports: section name -> present.
    pub sections: BTreeMap<&'static str, bool>,
    /// For reports: lengths of the four list sections that can be long.
    pub list_lengths: Vec<usize>,
    pub asn_number: Option<String>,
    pub asn_description: Option<Vec<String>>,
}

/// A failure, reduced likewise.
#[derive(Debug)]
pub struct Failure {
    pub kind: String,
    pub message: String,
    pub retry_after_secs: Option<u32>,
    pub status: Option<u16>,
}

/// Checks `outcome` against `e`, panicking with the recording's name.
pub fn check(e: &Expectation, outcome: Result<Observed, Failure>) {
    let name = &e.name;
    let t = &e.table;
    if let Some(kind) = e.str("error") {
        let f = match outcome {
            Err(f) => f,
            Ok(o) => panic!("{name}: expected error {kind}, got verdict {o:?}"),
        };
        assert_eq!(f.kind, kind, "{name}: error kind ({})", f.message);
        if let Some(s) = e.str("message_contains") {
            assert!(
                f.message.contains(s),
                "{name}: message {:?} lacks {s:?}",
                f.message
            );
        }
        if let Some(v) = t.get("retry_after_secs").and_then(|v| v.as_integer()) {
            assert_eq!(f.retry_after_secs, Some(v as u32), "{name}: retry-after");
        }
        if let Some(v) = t.get("status_code").and_then(|v| v.as_integer()) {
            assert_eq!(f.status, Some(v as u16), "{name}: status");
        }
        return;
    }
    let o = match outcome {
        Ok(o) => o,
        Err(f) => panic!("{name}: expected a verdict, got {f:?}"),
    };
    let want_ip = e.str("normalised").map(str::to_owned).unwrap_or_else(|| {
        let ip = e.ip().trim();
        ip.strip_prefix("::ffff:").unwrap_or(ip).to_owned()
    });
    assert_eq!(o.ip, want_ip, "{name}: ip");
    let strs = |key: &str| -> Option<Vec<String>> {
        t.get(key)
            .and_then(|v| v.as_array())
            .map(|a| a.iter().map(|x| x.as_str().unwrap().to_owned()).collect())
    };
    if let Some(v) = e.str("zone") {
        assert_eq!(o.zone, v, "{name}: zone");
    }
    if let Some(v) = t.get("threat_score").and_then(|v| v.as_integer()) {
        assert_eq!(o.threat_score, Some(v as u8), "{name}: threat_score");
    }
    if e.bool("no_threat_score") == Some(true) {
        assert_eq!(o.threat_score, None, "{name}: threat_score");
    }
    if let Some(v) = e.str("verdict") {
        assert_eq!(o.verdict, v, "{name}: verdict");
    }
    if let Some(v) = e.bool("has_apt") {
        assert_eq!(o.has_apt, v, "{name}: has_apt");
    }
    if let Some(v) = strs("report_ids") {
        assert_eq!(o.report_ids, v, "{name}: report ids");
    }
    if let Some(v) = e.bool("suspicious") {
        assert_eq!(o.suspicious, v, "{name}: suspicious");
    }
    if let Some(v) = e.bool("found") {
        assert_eq!(o.found, v, "{name}: found");
    }
    if let Some(v) = e.str("status") {
        assert_eq!(o.status.as_deref(), Some(v), "{name}: status");
    }
    if e.bool("no_status") == Some(true) {
        assert_eq!(o.status, None, "{name}: status");
    }
    if let Some(v) = e.str("country_code") {
        assert_eq!(o.country_code.as_deref(), Some(v), "{name}: country");
    }
    if e.bool("no_country_code") == Some(true) {
        assert_eq!(o.country_code, None, "{name}: country");
    }
    // The AS context: what the expectation names, else none.
    let as_number = t
        .get("as_number")
        .and_then(|v| v.as_integer())
        .map(|n| u32::try_from(n).expect("an AS number"));
    assert_eq!(o.as_number, as_number, "{name}: as_number");
    assert_eq!(
        o.as_organization.as_deref(),
        e.str("as_organization"),
        "{name}: as_organization"
    );
    assert_eq!(
        o.network_name.as_deref(),
        e.str("network_name"),
        "{name}: network_name"
    );
    if let Some(v) = strs("categories") {
        assert_eq!(o.categories, v, "{name}: categories");
    }
    if let Some(v) = e.str("first_seen") {
        assert_eq!(o.first_seen.as_deref(), Some(v), "{name}: first_seen");
    }
    if let Some(v) = t.get("day_requests").and_then(|v| v.as_integer()) {
        assert_eq!(o.day_requests, Some(v as u64), "{name}: day_requests");
    }
    if let Some(v) = t.get("day_quota").and_then(|v| v.as_integer()) {
        assert_eq!(o.day_quota, Some(v as u64), "{name}: day_quota");
    }
    if e.bool("no_quota") == Some(true) {
        assert!(!o.has_quota, "{name}: quota");
    }
    assert_eq!(o.source, e.str("source").unwrap_or("api"), "{name}: source");
    for s in strs("sections_present").unwrap_or_default() {
        assert_eq!(
            o.sections.get(s.as_str()),
            Some(&true),
            "{name}: section {s} present"
        );
    }
    for s in strs("sections_absent").unwrap_or_default() {
        assert_eq!(
            o.sections.get(s.as_str()),
            Some(&false),
            "{name}: section {s} absent"
        );
    }
    if let Some(n) = t.get("list_lengths").and_then(|v| v.as_integer()) {
        assert_eq!(o.list_lengths, vec![n as usize; 4], "{name}: list lengths");
    }
    if let Some(v) = e.str("asn_number") {
        assert_eq!(o.asn_number.as_deref(), Some(v), "{name}: asn number");
    }
    if let Some(v) = strs("asn_description") {
        assert_eq!(o.asn_description, Some(v), "{name}: asn description");
    }
}

/// The sections of a report as the expectations name them, with the API's
/// spellings of each (the first is what the API sends today).
pub const SECTIONS: [(&str, &[&str]); 12] = [
    ("license_info", &["LicenseInfo"]),
    ("zone", &["Zone"]),
    ("related_objects", &["RelatedObjects"]),
    ("ip_general_info", &["IpGeneralInfo"]),
    ("files_downloaded_from_ip", &["FilesDownloadedFromIp"]),
    ("hosted_urls", &["HostedUrls"]),
    ("feed_masks", &["FeedMasks"]),
    ("ip_whois", &["IpWhoIs", "IpWHOIS", "IpWhois"]),
    ("ip_dns_resolutions", &["IpDnsResolutions"]),
    ("ip_spam_info", &["IPSpamInfo", "IpSpamInfo"]),
    ("ip_phishing_info", &["IPPhishingInfo", "IpPhishingInfo"]),
    ("data_feeds", &["DataFeeds"]),
];

/// Fills the report part of `o` from a report's sections: the API's answer
/// as JSON (`sections-json`, or the `sections` of a `--full` line).
pub fn observe_sections(o: &mut Observed, sections: &serde_json::Value) {
    let get = |spellings: &[&str]| {
        spellings
            .iter()
            .find_map(|k| sections.get(*k))
            .filter(|v| !v.is_null())
    };
    for (name, spellings) in SECTIONS {
        o.sections.insert(name, get(spellings).is_some());
    }
    o.list_lengths = [
        "FilesDownloadedFromIp",
        "HostedUrls",
        "FeedMasks",
        "IpDnsResolutions",
    ]
    .iter()
    .map(|k| get(&[k]).and_then(|v| v.as_array()).map_or(0, Vec::len))
    .collect();
    let asn = get(&["IpWhoIs", "IpWHOIS", "IpWhois"])
        .and_then(|w| w.get("Asn"))
        .and_then(|a| a.get(0));
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    o.asn_number = asn.and_then(|a| a.get("Number")).and_then(text);
    o.asn_description = asn.and_then(|a| a.get("Description")).map(|d| match d {
        serde_json::Value::Array(items) => items.iter().filter_map(text).collect(),
        other => text(other).into_iter().collect(),
    });
}
