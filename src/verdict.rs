//! Verdict derivation: from API sections, for a 404, and for a reserved
//! address answered locally.

use std::net::IpAddr;

use crate::bindings::{IpStatus, Quota, SoarVerdict, Verdict, VerdictSource, Zone};
use crate::config::VerdictMap;
use crate::ip::SpecialBlock;
use crate::response::VerdictSections;

/// Kaspersky's "suspicious" band of threat scores.
pub const SUSPICIOUS_SCORES: std::ops::RangeInclusive<u8> = 50..=74;

/// The SOAR verdict: the zone's mapping, except that a threat score of 50 or
/// more never reads benign (it reads suspicious instead).
pub fn soar_verdict(zone: Zone, threat_score: Option<u8>, map: &VerdictMap) -> SoarVerdict {
    let mapped = map.get(zone);
    match (mapped, threat_score) {
        (SoarVerdict::Benign, Some(score)) if score >= *SUSPICIOUS_SCORES.start() => {
            SoarVerdict::Suspicious
        }
        _ => mapped,
    }
}

/// Verdict from the sections of a 200 answer.
pub fn from_sections(ip: IpAddr, sections: &VerdictSections, map: &VerdictMap) -> Verdict {
    let zone = sections.zone.unwrap_or(Zone::Grey);
    let general = sections.ip_general_info.as_ref();
    let whois = sections.ip_whois.as_ref();
    let threat_score = general.and_then(|g| g.threat_score);
    let mut categories: Vec<String> = Vec::new();
    if let Some(g) = general {
        let plain = g.categories.iter().flatten().cloned();
        let zoned = g
            .categories_with_zone
            .iter()
            .flatten()
            .filter_map(|c| c.name.clone());
        for name in plain.chain(zoned) {
            if !categories.contains(&name) {
                categories.push(name);
            }
        }
    }
    let quota = sections.license_info.as_ref().and_then(|l| {
        (l.day_requests.is_some() || l.day_quota.is_some()).then_some(Quota {
            day_requests: l.day_requests,
            day_quota: l.day_quota,
        })
    });
    Verdict {
        ip: ip.to_string(),
        zone,
        threat_score,
        has_apt: general.and_then(|g| g.has_apt).unwrap_or(false),
        related_reports: general
            .and_then(|g| g.related_apt_reports.clone())
            .unwrap_or_default(),
        suspicious: threat_score.is_some_and(|s| SUSPICIOUS_SCORES.contains(&s)),
        verdict: soar_verdict(zone, threat_score, map),
        found: true,
        status: general.and_then(|g| g.status),
        country_code: general
            .and_then(|g| g.country_code.clone())
            .filter(|c| !c.trim().is_empty()),
        as_number: whois.and_then(|w| w.as_number),
        as_organization: whois.and_then(|w| w.as_organization.clone()),
        network_name: whois.and_then(|w| w.network_name.clone()),
        categories,
        hits_count: general.and_then(|g| g.hits_count),
        first_seen: general.and_then(|g| g.first_seen.clone()),
        quota,
        source: VerdictSource::Api,
        fetched_at: None,
        reserved_block: None,
    }
}

fn empty(ip: IpAddr, map: &VerdictMap, status: IpStatus, source: VerdictSource) -> Verdict {
    Verdict {
        ip: ip.to_string(),
        zone: Zone::Grey,
        threat_score: None,
        has_apt: false,
        related_reports: Vec::new(),
        suspicious: false,
        verdict: soar_verdict(Zone::Grey, None, map),
        found: false,
        status: Some(status),
        country_code: None,
        as_number: None,
        as_organization: None,
        network_name: None,
        categories: Vec::new(),
        hits_count: None,
        first_seen: None,
        quota: None,
        source,
        fetched_at: None,
        reserved_block: None,
    }
}

/// Verdict for a 404: grey, not found.
pub fn not_found(ip: IpAddr, map: &VerdictMap) -> Verdict {
    empty(ip, map, IpStatus::NoInfo, VerdictSource::Api)
}

/// Verdict for a reserved address answered without a request.
pub fn reserved_locally(ip: IpAddr, block: SpecialBlock, map: &VerdictMap) -> Verdict {
    Verdict {
        reserved_block: Some(block.to_string()),
        ..empty(ip, map, IpStatus::Reserved, VerdictSource::Local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::ZoneVerdict;

    #[test]
    fn default_mapping_and_score_floor() {
        let map = VerdictMap::default();
        assert_eq!(
            soar_verdict(Zone::Red, Some(100), &map),
            SoarVerdict::Malicious
        );
        assert_eq!(
            soar_verdict(Zone::Orange, None, &map),
            SoarVerdict::Suspicious
        );
        assert_eq!(
            soar_verdict(Zone::Yellow, None, &map),
            SoarVerdict::Suspicious
        );
        assert_eq!(soar_verdict(Zone::Grey, None, &map), SoarVerdict::Unknown);
        assert_eq!(
            soar_verdict(Zone::Green, Some(0), &map),
            SoarVerdict::Benign
        );
        assert_eq!(
            soar_verdict(Zone::Green, Some(49), &map),
            SoarVerdict::Benign
        );
        assert_eq!(
            soar_verdict(Zone::Green, Some(50), &map),
            SoarVerdict::Suspicious
        );
        assert_eq!(
            soar_verdict(Zone::Green, Some(74), &map),
            SoarVerdict::Suspicious
        );
        assert_eq!(
            soar_verdict(Zone::Green, Some(75), &map),
            SoarVerdict::Suspicious
        );
        assert_eq!(
            soar_verdict(Zone::Grey, Some(60), &map),
            SoarVerdict::Unknown
        );
    }

    #[test]
    fn score_floor_applies_after_an_override() {
        let mut map = VerdictMap::default();
        map.by_zone[crate::config::zone_index(Zone::Yellow)] = SoarVerdict::Benign;
        let _ = ZoneVerdict {
            zone: Zone::Yellow,
            verdict: SoarVerdict::Benign,
        };
        assert_eq!(
            soar_verdict(Zone::Yellow, Some(10), &map),
            SoarVerdict::Benign
        );
        assert_eq!(
            soar_verdict(Zone::Yellow, Some(55), &map),
            SoarVerdict::Suspicious
        );
    }

    #[test]
    fn local_and_not_found() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let block = crate::ip::special_block(ip).unwrap();
        let v = reserved_locally(ip, block, &VerdictMap::default());
        assert_eq!(
            (v.zone, v.source, v.status, v.found),
            (
                Zone::Grey,
                VerdictSource::Local,
                Some(IpStatus::Reserved),
                false
            )
        );
        assert_eq!(
            v.reserved_block.as_deref(),
            Some("10.0.0.0/8 (private use, RFC 1918)")
        );
        let n = not_found(ip, &VerdictMap::default());
        assert_eq!(
            (n.found, n.source, n.verdict),
            (false, VerdictSource::Api, SoarVerdict::Unknown)
        );
    }
}
