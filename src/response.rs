//! Tolerant parsing of an IP answer into the sections a verdict needs
//! (`LicenseInfo`, `Zone`, `IpGeneralInfo`, and the AS context of `IpWhoIs`).
//!
//! Every section and field is optional, unknown keys (every other section
//! included) are skipped without being kept, and a field of the wrong type
//! reads as absent (see [`crate::lenient`]). Only a body that is not one JSON
//! object fails. `lookup` hands the other sections to callers as the answer's
//! JSON text, not typed (BENCHMARKS.md, "The report's sections").

use serde::Deserialize;

use crate::bindings::{AptReport, IpStatus, Zone};
use crate::error::Error;
use crate::lenient::{
    AsNumber, Count, Flag, Lenient, Lines, Records, Score, Section, StatusField, Text, TextList,
    ZoneField, object_only,
};

/// Declares a raw serde struct of lenient fields and its conversion to the WIT record.
macro_rules! raw_record {
    ($raw:ident => $wit:ident { $($field:ident : $ty:ty = $key:literal $(| $alias:literal)?),* $(,)? }) => {
        #[derive(Debug, Default, Deserialize)]
        pub(crate) struct $raw {
            $(
                #[serde(rename = $key, default $(, alias = $alias)?)]
                $field: $ty,
            )*
        }

        impl Lenient for $raw {
            type Out = $wit;
            fn into_out(self) -> $wit {
                $wit { $($field: self.$field.into_out(),)* }
            }
        }
    };
}

/// `LicenseInfo`: the licence used.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LicenseInfo {
    /// `Commercial` or `Trial`.
    pub access_type: Option<String>,
    /// Requests made today.
    pub day_requests: Option<u64>,
    /// Daily request limit.
    pub day_quota: Option<u64>,
    /// When the API token expires.
    pub token_expiration_date: Option<String>,
}

/// One `CategoriesWithZone` entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CategoryWithZone {
    /// Category name (`Name`, or `Category` in older answers).
    pub name: Option<String>,
    /// The category's zone.
    pub zone: Option<Zone>,
}

/// `IpGeneralInfo`: what the API knows of the address itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IpGeneralInfo {
    /// Popularity.
    pub hits_count: Option<u64>,
    /// First seen (UTC), as the API wrote it.
    pub first_seen: Option<String>,
    /// Threat score 0-100.
    pub threat_score: Option<u8>,
    /// The address as the API wrote it.
    pub ip: Option<String>,
    /// ISO 3166-1 alpha-2 country code.
    pub country_code: Option<String>,
    /// `Status`.
    pub status: Option<IpStatus>,
    /// `Categories`.
    pub categories: Option<Vec<String>>,
    /// `CategoriesWithZone`.
    pub categories_with_zone: Option<Vec<CategoryWithZone>>,
    /// `HasApt`.
    pub has_apt: Option<bool>,
    /// `RelatedAptReports` with a non-empty ID.
    pub related_apt_reports: Option<Vec<AptReport>>,
}

raw_record!(LicenseInfoRaw => LicenseInfo {
    access_type: Text = "AccessType",
    day_requests: Count = "DayRequests",
    day_quota: Count = "DayQuota",
    token_expiration_date: Text = "TokenExpirationDate",
});

raw_record!(CategoryWithZoneRaw => CategoryWithZone {
    name: Text = "Name" | "Category",
    zone: ZoneField = "Zone",
});

raw_record!(IpGeneralInfoRaw => IpGeneralInfo {
    hits_count: Count = "HitsCount",
    first_seen: Text = "FirstSeen",
    threat_score: Score = "ThreatScore",
    ip: Text = "Ip",
    country_code: Text = "CountryCode",
    status: StatusField = "Status",
    categories: TextList = "Categories",
    categories_with_zone: Records<CategoryWithZoneRaw> = "CategoriesWithZone",
    has_apt: Flag = "HasApt",
    related_apt_reports: AptReports = "RelatedAptReports",
});

/// One `RelatedAptReports` entry before validation: entries without an ID are dropped.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AptReportRaw {
    #[serde(rename = "Id", default, alias = "ID")]
    id: Text,
    #[serde(rename = "Title", default)]
    title: Text,
}

/// `RelatedAptReports`: a list of reports, each with a non-empty ID.
#[derive(Debug, Default, Deserialize)]
#[serde(transparent)]
pub(crate) struct AptReports(Records<AptReportRaw>);

impl Lenient for AptReports {
    type Out = Option<Vec<AptReport>>;
    fn into_out(self) -> Self::Out {
        self.0.0.map(|reports| {
            reports
                .into_iter()
                .filter_map(|r| {
                    let id = r.id.0.filter(|id| !id.trim().is_empty())?;
                    Some(AptReport {
                        id,
                        title: r.title.0,
                    })
                })
                .collect()
        })
    }
}

/// The AS context of `IpWhoIs`: what a verdict shows of it (its `Contacts`,
/// personal data, are never read).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IpWhoIs {
    /// The AS number: of the first `Asn` entry with a usable `Number` (or,
    /// failing that, `Origin`, `AS57043`).
    pub as_number: Option<u32>,
    /// The AS's name: the first line of that entry's `Description` that is
    /// not a two-letter country code (`["HOSTKEY-AS", "NL"]`: `HOSTKEY-AS`).
    pub as_organization: Option<String>,
    /// The first line of `Net.Name`.
    pub network_name: Option<String>,
}

/// One `Asn` entry.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AsnRaw {
    #[serde(rename = "Number", default)]
    number: AsNumber,
    #[serde(rename = "Origin", default)]
    origin: AsNumber,
    #[serde(rename = "Description", default)]
    description: Lines,
}

impl AsnRaw {
    fn number(&self) -> Option<u32> {
        self.number.0.or(self.origin.0)
    }
}

/// `Net`: only its name is read.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct NetRaw {
    #[serde(rename = "Name", default)]
    name: Lines,
}

/// `IpWhoIs`: `Asn` a list of entries (or one), `Net` an object (or a list).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct IpWhoIsRaw {
    #[serde(rename = "Asn", default)]
    asn: Records<AsnRaw>,
    #[serde(rename = "Net", default)]
    net: Records<NetRaw>,
}

/// Whether a description line is a country code (`NL`), not a name.
fn is_country_code(line: &str) -> bool {
    line.len() == 2 && line.bytes().all(|b| b.is_ascii_alphabetic())
}

fn first_line(lines: Lines) -> Option<String> {
    lines.0.and_then(|l| l.into_iter().next())
}

impl Lenient for IpWhoIsRaw {
    type Out = IpWhoIs;
    fn into_out(self) -> IpWhoIs {
        let entries = self.asn.0.unwrap_or_default();
        // The first entry with a number; with none, the first entry (its name).
        let at = entries
            .iter()
            .position(|e| e.number().is_some())
            .unwrap_or(0);
        let entry = entries.into_iter().nth(at);
        IpWhoIs {
            as_number: entry.as_ref().and_then(AsnRaw::number),
            as_organization: entry.and_then(|e| {
                e.description
                    .0?
                    .into_iter()
                    .find(|line| !is_country_code(line))
            }),
            network_name: self
                .net
                .0
                .unwrap_or_default()
                .into_iter()
                .find_map(|n| first_line(n.name)),
        }
    }
}

/// A whole IP answer (a 200 body), sections still lenient.
#[derive(Debug, Default, Deserialize)]
pub struct IpAnswer {
    #[serde(rename = "LicenseInfo", default)]
    license_info: Section<LicenseInfoRaw>,
    #[serde(rename = "Zone", default)]
    zone: ZoneField,
    #[serde(rename = "IpGeneralInfo", default)]
    ip_general_info: Section<IpGeneralInfoRaw>,
    #[serde(rename = "IpWhoIs", default, alias = "IpWHOIS", alias = "IpWhois")]
    ip_whois: Section<IpWhoIsRaw>,
}

/// The sections a verdict is derived from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VerdictSections {
    /// `LicenseInfo`.
    pub license_info: Option<LicenseInfo>,
    /// `Zone`.
    pub zone: Option<Zone>,
    /// `IpGeneralInfo`.
    pub ip_general_info: Option<IpGeneralInfo>,
    /// `IpWhoIs` (OpenTIP always sends it; TIP when it is requested).
    pub ip_whois: Option<IpWhoIs>,
}

impl IpAnswer {
    /// The sections, converted.
    pub fn into_verdict_sections(self) -> VerdictSections {
        VerdictSections {
            license_info: self.license_info.into_out(),
            zone: self.zone.into_out(),
            ip_general_info: self.ip_general_info.into_out(),
            ip_whois: self.ip_whois.into_out(),
        }
    }
}

/// Parses a 200 body. Fails only when it is not exactly one JSON object.
pub fn parse_answer(body: &[u8]) -> Result<IpAnswer, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::Malformed(
            "the API answered 200 with an empty body".into(),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let answer = object_only::<IpAnswer, _>(&mut de)
        .and_then(|a| de.end().map(|()| a))
        .map_err(|e| Error::Malformed(describe_json_error(&e, body)))?;
    Ok(answer)
}

/// A message that says what was wrong without quoting the body.
fn describe_json_error(e: &serde_json::Error, body: &[u8]) -> String {
    use serde_json::error::Category;
    let looks_html = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .and_then(|i| body.get(i))
        == Some(&b'<');
    let what = match e.classify() {
        _ if looks_html => "an HTML page, not JSON",
        Category::Syntax => "not valid JSON",
        Category::Eof => "truncated JSON",
        Category::Data => "JSON, but not an object of sections",
        Category::Io => "unreadable",
    };
    format!(
        "the API answer is {what} (line {}, column {})",
        e.line(),
        e.column()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_typical_answer() {
        let body = br#"{
            "LicenseInfo": {"AccessType": "Commercial", "DayRequests": 12, "DayQuota": 2000, "TokenExpirationDate": null},
            "Zone": "Red",
            "IpGeneralInfo": {"Ip": "45.9.148.108", "ThreatScore": 92, "HitsCount": 10000, "Status": "Known",
                "CountryCode": "NL", "FirstSeen": "2019-03-12T10:20:18.467Z",
                "Categories": ["CATEGORY_MALWARE"], "CategoriesWithZone": [{"Name": "CATEGORY_MALWARE", "Zone": "Red"}],
                "HasApt": true, "RelatedAptReports": [{"Id": "abc", "Title": "Op X"}, {"Title": "no id"}],
                "SomethingNew": {"nested": [1, 2]}},
            "FutureSection": [1, 2, 3]
        }"#;
        let s = parse_answer(body).unwrap().into_verdict_sections();
        assert_eq!(s.zone, Some(Zone::Red));
        let igi = s.ip_general_info.unwrap();
        assert_eq!(igi.threat_score, Some(92));
        assert_eq!(igi.status, Some(IpStatus::Known));
        assert_eq!(
            igi.related_apt_reports.unwrap(),
            vec![AptReport {
                id: "abc".into(),
                title: Some("Op X".into())
            }]
        );
        assert_eq!(igi.categories_with_zone.unwrap()[0].zone, Some(Zone::Red));
        assert_eq!(s.license_info.unwrap().day_quota, Some(2000));
    }

    #[test]
    fn wrong_types_read_as_absent() {
        let body = br#"{"Zone": 5, "IpGeneralInfo": {"ThreatScore": "high", "HitsCount": -3, "HasApt": "yes",
            "Categories": {"a": 1}, "RelatedAptReports": "none"}, "HostedUrls": {"Url": "http://x"},
            "IpWhoIs": [], "LicenseInfo": "x"}"#;
        let s = parse_answer(body).unwrap().into_verdict_sections();
        assert_eq!(s.zone, None);
        assert_eq!(s.license_info, None);
        let igi = s.ip_general_info.unwrap();
        assert_eq!(
            (igi.threat_score, igi.hits_count, igi.has_apt),
            (None, None, None)
        );
        assert_eq!(igi.categories, None);
        assert_eq!(igi.related_apt_reports, None);
    }

    #[test]
    fn not_an_object_is_malformed() {
        for body in [
            &b""[..],
            b"  ",
            b"[]",
            b"\"Red\"",
            b"{\"Zone\": \"Red\"",
            b"{} {}",
            b"<html><title>x</title></html>",
            b"null",
        ] {
            assert!(
                matches!(parse_answer(body), Err(Error::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        // Under an unknown key the value is skipped without recursion.
        let unknown = format!("{{\"X\": {}, \"Zone\": \"Red\"}}", nest(100_000));
        let s = parse_answer(unknown.as_bytes())
            .unwrap()
            .into_verdict_sections();
        assert_eq!(s.zone, Some(Zone::Red));
        // Under a known field serde_json's recursion limit turns it into an error.
        let known = format!(
            "{{\"IpGeneralInfo\": {{\"Categories\": {}}}}}",
            nest(100_000)
        );
        assert!(matches!(
            parse_answer(known.as_bytes()),
            Err(Error::Malformed(_))
        ));
    }

    fn whois(json: &str) -> Option<IpWhoIs> {
        let body = format!(r#"{{"Zone": "Red", "IpWhoIs": {json}}}"#);
        parse_answer(body.as_bytes())
            .unwrap()
            .into_verdict_sections()
            .ip_whois
    }

    fn as_number(asn: &str) -> Option<u32> {
        whois(&format!(r#"{{"Asn": [{asn}]}}"#)).and_then(|w| w.as_number)
    }

    fn organization(description: &str) -> Option<String> {
        whois(&format!(
            r#"{{"Asn": [{{"Number": 1, "Description": {description}}}]}}"#
        ))
        .and_then(|w| w.as_organization)
    }

    #[test]
    fn as_numbers_are_read_tolerantly_within_32_bits() {
        assert_eq!(as_number(r#"{"Number": 57043}"#), Some(57043));
        assert_eq!(as_number(r#"{"Number": "57043"}"#), Some(57043));
        assert_eq!(as_number(r#"{"Number": " 57043 "}"#), Some(57043));
        assert_eq!(as_number(r#"{"Origin": "AS57043"}"#), Some(57043));
        assert_eq!(as_number(r#"{"Origin": "as 57043"}"#), Some(57043));
        assert_eq!(as_number(r#"{"Number": "AS57043"}"#), Some(57043));
        assert_eq!(
            as_number(r#"{"Number": "x", "Origin": "AS57043"}"#),
            Some(57043)
        );
        assert_eq!(as_number(r#"{"Number": 4294967295}"#), Some(u32::MAX));
        for bad in [
            r#"{"Number": 4294967296}"#,
            r#"{"Number": "4294967296"}"#,
            r#"{"Number": -57043}"#,
            r#"{"Number": "-57043"}"#,
            r#"{"Number": "+57043"}"#,
            r#"{"Number": 0}"#,
            r#"{"Origin": "AS0"}"#,
            r#"{"Number": 57043.5}"#,
            r#"{"Number": true}"#,
            r#"{"Number": [57043]}"#,
            r#"{"Number": {"Value": 57043}}"#,
            r#"{"Number": null}"#,
            r#"{"Origin": "AS"}"#,
            r#"{"Origin": "ASN-57043"}"#,
            r#"{"Origin": "AS57043 AS1"}"#,
            r#"{"Origin": "١٢"}"#,
            r#"{}"#,
        ] {
            assert_eq!(as_number(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_organization_is_the_first_description_line_not_a_country_code() {
        assert_eq!(
            organization(r#"["HOSTKEY-AS", "NL"]"#).as_deref(),
            Some("HOSTKEY-AS")
        );
        assert_eq!(
            organization(r#"["NL", " HOSTKEY-AS "]"#).as_deref(),
            Some("HOSTKEY-AS")
        );
        assert_eq!(
            organization(r#""HOSTKEY-AS\r\nNL""#).as_deref(),
            Some("HOSTKEY-AS")
        );
        assert_eq!(
            organization(r#""\r\n  \nGOOGLE LLC\rUS""#).as_deref(),
            Some("GOOGLE LLC")
        );
        assert_eq!(organization(r#"["", "A\r\nB", 7]"#).as_deref(), Some("A"));
        for none in [
            r#"["NL"]"#,
            "[]",
            r#""""#,
            r#"" \r\n ""#,
            "{}",
            "null",
            "[{}]",
        ] {
            assert_eq!(organization(none), None, "{none}");
        }
    }

    #[test]
    fn asn_and_net_shapes() {
        // An object instead of an array; entries without a number are passed over.
        let w = whois(r#"{"Asn": {"Number": 15169, "Description": ["GOOGLE", "US"]}}"#).unwrap();
        assert_eq!(
            (w.as_number, w.as_organization.as_deref()),
            (Some(15169), Some("GOOGLE"))
        );
        let w = whois(
            r#"{"Asn": [7, {"Description": ["NONUMBER"]}, {"Number": "3", "Description": "THREE"}, {"Number": 4}]}"#,
        )
        .unwrap();
        assert_eq!(
            (w.as_number, w.as_organization.as_deref()),
            (Some(3), Some("THREE"))
        );
        // No entry with a number: the first entry still names the AS.
        let w = whois(r#"{"Asn": [{"Description": ["NONUMBER"]}, {"Description": "B"}]}"#).unwrap();
        assert_eq!(
            (w.as_number, w.as_organization.as_deref()),
            (None, Some("NONUMBER"))
        );
        // Net: an object, or a list of them; the name's first line.
        let name = |net: &str| whois(&format!(r#"{{"Net": {net}}}"#)).and_then(|w| w.network_name);
        assert_eq!(
            name(r#"{"Name": "NL-HOSTKEY-20190612", "Description": "HOSTKEY B.V.\r\nAmsterdam"}"#)
                .as_deref(),
            Some("NL-HOSTKEY-20190612")
        );
        assert_eq!(
            name(r#"[{"Name": ""}, {"Name": ["GOGL", "x"]}]"#).as_deref(),
            Some("GOGL")
        );
        assert_eq!(name(r#"{"Name": " "}"#), None);
        assert_eq!(name(r#""GOGL""#), None);
        assert_eq!(name(r#"{"Name": {"x": 1}}"#), None);
        // Wrong types throughout read as absent, never as an error.
        for json in [
            r#"{"Asn": "AS1", "Net": 5}"#,
            r#"{"Asn": [[1]], "Net": [[]]}"#,
            "{}",
        ] {
            assert_eq!(whois(json), Some(IpWhoIs::default()), "{json}");
        }
        for json in ["[]", "\"x\"", "7", "null"] {
            assert_eq!(whois(json), None, "{json}");
        }
        // The documented spelling of the section, too.
        let body = br#"{"IpWHOIS": {"Asn": [{"Number": 1}]}}"#;
        let s = parse_answer(body).unwrap().into_verdict_sections();
        assert_eq!(s.ip_whois.and_then(|w| w.as_number), Some(1));
    }

    #[test]
    fn opentip_shapes() {
        let body = br#"{"Zone": "Grey", "IpGeneralInfo": {"Status": "known", "Ip": "8.8.8.8", "CountryCode": "US", "HitsCount": 100000},
            "IpWhoIs": {"Asn": [{"Number": 15169, "Description": ["GOOGLE", "US"]}]}}"#;
        let s = parse_answer(body).unwrap().into_verdict_sections();
        let igi = s.ip_general_info.unwrap();
        assert_eq!(igi.status, Some(IpStatus::Known));
        assert_eq!(igi.hits_count, Some(100000));
        assert_eq!(igi.threat_score, None);
        let w = s.ip_whois.unwrap();
        assert_eq!(
            (w.as_number, w.as_organization.as_deref(), w.network_name),
            (Some(15169), Some("GOOGLE"), None)
        );
    }
}
