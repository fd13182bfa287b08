//! Tolerant parsing of an IP answer into the typed WIT sections.
//!
//! Every section and field is optional, unknown keys are ignored, and a field
//! of the wrong type reads as absent (see [`crate::lenient`]). Only a body that
//! is not one JSON object fails.

use serde::Deserialize;

use crate::bindings::{
    AptReport, CategoryWithZone, DnsResolution, DownloadedFile, FeedMask, HostedUrl, IpGeneralInfo,
    IpWhois, LicenseInfo, PhishingInfo, RelatedObjects, SpamInfo, WhoisAsn, WhoisContact, WhoisNet,
    Zone,
};
use crate::error::Error;
use crate::lenient::{
    Count, FeedList, Flag, Float, Lenient, Records, Score, Section, StatusField, Text, TextList,
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

raw_record!(LicenseInfoRaw => LicenseInfo {
    access_type: Text = "AccessType",
    day_requests: Count = "DayRequests",
    day_quota: Count = "DayQuota",
    token_expiration_date: Text = "TokenExpirationDate",
});

raw_record!(RelatedObjectsRaw => RelatedObjects {
    has_red_zone: Flag = "HasRedZone",
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

raw_record!(DownloadedFileRaw => DownloadedFile {
    zone: ZoneField = "Zone",
    download_hits_count: Count = "DownloadHitsCount",
    md5: Text = "Md5",
    first_seen: Text = "FirstSeen",
    last_seen: Text = "LastSeen",
    detection_name: Text = "DetectionName",
    url: TextList = "Url",
});

raw_record!(HostedUrlRaw => HostedUrl {
    zone: ZoneField = "Zone",
    url_hits_count: Count = "UrlHitsCount",
    url: Text = "Url",
    is_url_truncated: Flag = "IsUrlTruncated",
    first_seen: Text = "FirstSeen",
    last_seen: Text = "LastSeen",
});

raw_record!(FeedMaskRaw => FeedMask {
    zone: ZoneField = "Zone",
    status: Text = "Status",
    normalized_mask: Text = "NormalizedMask",
    feed_names: TextList = "FeedNames",
    mask_type: Text = "MaskType",
});

raw_record!(WhoisAsnRaw => WhoisAsn {
    number: Text = "Number",
    origin: Text = "Origin",
    description: TextList = "Description",
});

raw_record!(WhoisNetRaw => WhoisNet {
    range_start: Text = "RangeStart",
    range_end: Text = "RangeEnd",
    created: Text = "Created",
    changed: Text = "Changed",
    name: Text = "Name",
    description: TextList = "Description",
});

raw_record!(WhoisContactRaw => WhoisContact {
    address: Text = "Address",
    organization_id: Text = "OrganizationId",
    name: Text = "Name",
    contact_role: Text = "ContactRole",
    contact_type: Text = "ContactType",
    fax: Text = "Fax",
    phone: Text = "Phone",
    email: Text = "Email",
});

raw_record!(IpWhoisRaw => IpWhois {
    asn: Records<WhoisAsnRaw> = "Asn",
    net: Section<WhoisNetRaw> = "Net",
    contacts: Records<WhoisContactRaw> = "Contacts",
});

raw_record!(DnsResolutionRaw => DnsResolution {
    zone: ZoneField = "Zone",
    domain: Text = "Domain",
    first_seen: Text = "FirstSeen",
    last_seen: Text = "LastSeen",
    hits_count: Count = "HitsCount",
    daily_peak: Count = "DailyPeak",
    peak_date: Text = "PeakDate",
    categories: TextList = "Categories",
});

raw_record!(SpamInfoRaw => SpamInfo {
    spam_attacks: Count = "spam_attacks",
    spam_ratio: Float = "spam_ratio",
    last_attack_date: Text = "last_attack_date",
    spam_attack_types: TextList = "spam_attack_types",
});

raw_record!(PhishingInfoRaw => PhishingInfo {
    phishing_attacks: Count = "phishing_attacks",
    last_attack_date: Text = "last_attack_date",
    regions: TextList = "regions",
    phish_kit: TextList = "phish_kit",
    stolen_data_type: TextList = "stolen_data_type",
    attacked_industry: TextList = "attacked_industry",
    attacked_organization: TextList = "attacked_organization",
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

/// A whole IP answer (a 200 body), sections still lenient.
#[derive(Debug, Default, Deserialize)]
pub struct IpAnswer {
    #[serde(rename = "LicenseInfo", default)]
    license_info: Section<LicenseInfoRaw>,
    #[serde(rename = "Zone", default)]
    zone: ZoneField,
    #[serde(rename = "RelatedObjects", default)]
    related_objects: Section<RelatedObjectsRaw>,
    #[serde(rename = "IpGeneralInfo", default)]
    ip_general_info: Section<IpGeneralInfoRaw>,
    #[serde(rename = "FilesDownloadedFromIp", default)]
    files_downloaded_from_ip: Records<DownloadedFileRaw>,
    #[serde(rename = "HostedUrls", default)]
    hosted_urls: Records<HostedUrlRaw>,
    #[serde(rename = "FeedMasks", default)]
    feed_masks: Records<FeedMaskRaw>,
    #[serde(rename = "IpWhoIs", default, alias = "IpWHOIS", alias = "IpWhois")]
    ip_whois: Section<IpWhoisRaw>,
    #[serde(rename = "IpDnsResolutions", default)]
    ip_dns_resolutions: Records<DnsResolutionRaw>,
    #[serde(rename = "IPSpamInfo", default, alias = "IpSpamInfo")]
    ip_spam_info: Section<SpamInfoRaw>,
    #[serde(rename = "IPPhishingInfo", default, alias = "IpPhishingInfo")]
    ip_phishing_info: Section<PhishingInfoRaw>,
    #[serde(rename = "DataFeeds", default)]
    data_feeds: FeedList,
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
}

/// Every section of an answer, typed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sections {
    /// The three the verdict needs.
    pub verdict: VerdictSections,
    /// `RelatedObjects`.
    pub related_objects: Option<RelatedObjects>,
    /// `FilesDownloadedFromIp`.
    pub files_downloaded_from_ip: Option<Vec<DownloadedFile>>,
    /// `HostedUrls`.
    pub hosted_urls: Option<Vec<HostedUrl>>,
    /// `FeedMasks`.
    pub feed_masks: Option<Vec<FeedMask>>,
    /// `IpWhoIs`.
    pub ip_whois: Option<IpWhois>,
    /// `IpDnsResolutions`.
    pub ip_dns_resolutions: Option<Vec<DnsResolution>>,
    /// `IPSpamInfo`.
    pub ip_spam_info: Option<SpamInfo>,
    /// `IPPhishingInfo`.
    pub ip_phishing_info: Option<PhishingInfo>,
    /// `DataFeeds`.
    pub data_feeds: Option<Vec<String>>,
}

impl IpAnswer {
    /// Only the verdict sections (cheaper than [`IpAnswer::into_sections`]).
    pub fn into_verdict_sections(self) -> VerdictSections {
        VerdictSections {
            license_info: self.license_info.into_out(),
            zone: self.zone.into_out(),
            ip_general_info: self.ip_general_info.into_out(),
        }
    }

    /// Every section.
    pub fn into_sections(self) -> Sections {
        Sections {
            verdict: VerdictSections {
                license_info: self.license_info.into_out(),
                zone: self.zone.into_out(),
                ip_general_info: self.ip_general_info.into_out(),
            },
            related_objects: self.related_objects.into_out(),
            files_downloaded_from_ip: self.files_downloaded_from_ip.into_out(),
            hosted_urls: self.hosted_urls.into_out(),
            feed_masks: self.feed_masks.into_out(),
            ip_whois: self.ip_whois.into_out(),
            ip_dns_resolutions: self.ip_dns_resolutions.into_out(),
            ip_spam_info: self.ip_spam_info.into_out(),
            ip_phishing_info: self.ip_phishing_info.into_out(),
            data_feeds: self.data_feeds.into_out(),
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
    use crate::bindings::IpStatus;

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
        let s = parse_answer(body).unwrap().into_sections();
        assert_eq!(s.verdict.zone, Some(Zone::Red));
        let igi = s.verdict.ip_general_info.unwrap();
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
        assert_eq!(s.verdict.license_info.unwrap().day_quota, Some(2000));
        assert_eq!(s.hosted_urls, None);
    }

    #[test]
    fn wrong_types_read_as_absent() {
        let body = br#"{"Zone": 5, "IpGeneralInfo": {"ThreatScore": "high", "HitsCount": -3, "HasApt": "yes",
            "Categories": {"a": 1}, "RelatedAptReports": "none"}, "HostedUrls": {"Url": "http://x"},
            "IpWhoIs": [], "LicenseInfo": "x"}"#;
        let s = parse_answer(body).unwrap().into_sections();
        assert_eq!(s.verdict.zone, None);
        assert_eq!(s.verdict.license_info, None);
        assert_eq!(s.ip_whois, None);
        let igi = s.verdict.ip_general_info.unwrap();
        assert_eq!(
            (igi.threat_score, igi.hits_count, igi.has_apt),
            (None, None, None)
        );
        assert_eq!(igi.categories, None);
        assert_eq!(igi.related_apt_reports, None);
        assert_eq!(s.hosted_urls.unwrap()[0].url.as_deref(), Some("http://x"));
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

    #[test]
    fn opentip_shapes() {
        let body = br#"{"Zone": "Grey", "IpGeneralInfo": {"Status": "known", "Ip": "8.8.8.8", "CountryCode": "US", "HitsCount": 100000},
            "IpWhoIs": {"Asn": [{"Number": 15169, "Description": ["GOOGLE", "US"]}],
                        "Net": {"Name": "GOGL", "Description": "Google LLC\r\nMountain View"}}}"#;
        let s = parse_answer(body).unwrap().into_sections();
        let whois = s.ip_whois.unwrap();
        let asn = &whois.asn.unwrap()[0];
        assert_eq!(asn.number.as_deref(), Some("15169"));
        assert_eq!(
            asn.description.as_deref(),
            Some(&["GOOGLE".to_string(), "US".to_string()][..])
        );
        assert_eq!(
            whois.net.unwrap().description.unwrap(),
            vec!["Google LLC\r\nMountain View".to_string()]
        );
        assert_eq!(s.verdict.ip_general_info.unwrap().threat_score, None);
    }
}
