//! IP address parsing, normalisation and special-purpose classification.
//!
//! Input comes from attackers' traffic via SIEM fields, so parsing is strict:
//! exactly one IPv4 or IPv6 address, surrounding whitespace trimmed, nothing
//! else. IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is looked up as the IPv4 address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// Longest input worth parsing: the longest textual IPv6 address is 45 bytes.
const MAX_INPUT_LEN: usize = 64;

/// Why an input is not a single IP address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input} is not a single IP address: {reason}")]
pub struct IpError {
    /// The input, quoted, escaped and shortened for display.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

fn quote(input: &str) -> String {
    let mut shown: String = input.chars().take(48).collect();
    if shown.len() < input.len() {
        shown.push('…');
    }
    format!("{shown:?}")
}

/// Parses one address. On success the address is normalised: IPv4-mapped IPv6
/// becomes IPv4, and its `Display` is the canonical text (RFC 5952 for IPv6).
pub fn parse_ip(input: &str) -> Result<IpAddr, IpError> {
    let err = |reason| IpError {
        input: quote(input),
        reason,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    if s.len() > MAX_INPUT_LEN {
        return Err(err("too long"));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err("contains whitespace or control characters"));
    }
    if s.contains('/') {
        return Err(err("a CIDR range, not an address"));
    }
    if s.starts_with('[') || s.ends_with(']') {
        return Err(err(
            "brackets (and ports) are URL syntax, give the bare address",
        ));
    }
    if s.contains('%') {
        return Err(err("IPv6 zone indexes are not accepted"));
    }
    if s.contains('.') && s.matches(':').count() == 1 {
        return Err(err("a port is not accepted"));
    }
    if has_leading_zero_octet(s) {
        return Err(err("leading zeros in an IPv4 octet are ambiguous (octal?)"));
    }
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => Ok(match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }),
        Ok(v4) => Ok(v4),
        Err(_)
            if s.chars()
                .any(|c| c.is_ascii_alphabetic() && !c.is_ascii_hexdigit()) =>
        {
            Err(err("a hostname or other text, not an address"))
        }
        Err(_) => Err(err("malformed address")),
    }
}

/// Whether the dotted-quad part (of IPv4, or the tail of IPv6) has an octet
/// like `010`.
fn has_leading_zero_octet(s: &str) -> bool {
    let quad = s.rsplit(':').next().unwrap_or(s);
    quad.contains('.')
        && quad
            .split('.')
            .any(|octet| octet.len() > 1 && octet.starts_with('0'))
}

/// A special-purpose block: the network and a short description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialBlock {
    /// The block in CIDR notation.
    pub cidr: &'static str,
    /// What it is for, with its RFC.
    pub name: &'static str,
}

impl std::fmt::Display for SpecialBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.cidr, self.name)
    }
}

/// The "Last Updated" date of the IANA IPv4 and IPv6 Special-Purpose Address
/// Registries (titled "IPv4/IPv6 Special-Purpose Address Space" since that
/// update) that the tables behind [`special_block`] were checked against.
///
/// Trimmed copies of both registries are in `tests/iana/`, and a test checks
/// every entry against the tables. From the registries:
/// - an entry whose "Globally Reachable" is False is answered locally, under
///   its own block and name (the most specific entry decides);
/// - a terminated allocation, which has no flags, is answered locally:
///   192.88.99.0/24 (6to4 relay anycast, deprecated by RFC 7526) and
///   2001:10::/28 (the first ORCHID prefix) are not in use;
/// - an entry whose "Globally Reachable" is True is looked up, and so is one
///   whose value is N/A: Teredo (2001::/32) and 6to4 (2002::/16), addresses of
///   hosts on the IPv4 Internet behind a tunnel (RFC 6890 errata 3921);
/// - IPv4-mapped IPv6 (`::ffff:0:0/96`) is judged as the IPv4 address it maps.
///
/// Beyond the registries, multicast (224.0.0.0/4, RFC 5771; ff00::/8,
/// RFC 4291) is answered locally: a group address names no single host that a
/// verdict could be about.
pub const IANA_REGISTRY_AS_OF: &str = "2025-10-09";

macro_rules! v4 {
    ($a:literal, $b:literal, $c:literal, $d:literal / $len:literal, $name:literal) => {
        (
            Ipv4Net::new_assert(Ipv4Addr::new($a, $b, $c, $d), $len),
            SpecialBlock {
                cidr: concat!($a, ".", $b, ".", $c, ".", $d, "/", $len),
                name: $name,
            },
        )
    };
}

/// IPv4 blocks that are globally reachable although inside a larger special block
/// (IANA: "Globally Reachable: True"). AS112-v4 (192.31.196.0/24), AMT
/// (192.52.193.0/24) and AS112 direct delegation (192.175.48.0/24) are also
/// True, but no table entry covers them.
const V4_GLOBAL_EXCEPTIONS: [Ipv4Net; 2] = [
    Ipv4Net::new_assert(Ipv4Addr::new(192, 0, 0, 9), 32),
    Ipv4Net::new_assert(Ipv4Addr::new(192, 0, 0, 10), 32),
];

/// IPv4 blocks that are not globally reachable: the IANA IPv4 Special-Purpose
/// Address Registry (RFC 6890 and updates) entries marked "Globally Reachable:
/// False" and the terminated 192.88.99.0/24, plus multicast (see
/// [`IANA_REGISTRY_AS_OF`]). Most specific entries first.
///
/// Checked against the IANA IPv4/IPv6 Special-Purpose Address Registries as of
/// 2025-10-09 (their Last Updated dates).
const V4_SPECIAL: [(Ipv4Net, SpecialBlock); 21] = [
    v4!(255, 255, 255, 255 / 32, "limited broadcast, RFC 919"),
    v4!(
        192,
        0,
        0,
        0 / 29,
        "IPv4 service continuity prefix, RFC 7335"
    ),
    v4!(192, 0, 0, 8 / 32, "IPv4 dummy address, RFC 7600"),
    v4!(192, 0, 0, 170 / 31, "NAT64/DNS64 discovery, RFC 8880"),
    v4!(192, 0, 0, 0 / 24, "IETF protocol assignments, RFC 6890"),
    v4!(0, 0, 0, 0 / 32, "\"this host on this network\", RFC 1122"),
    v4!(0, 0, 0, 0 / 8, "\"this network\", RFC 791"),
    v4!(10, 0, 0, 0 / 8, "private use, RFC 1918"),
    v4!(100, 64, 0, 0 / 10, "shared address space (CGNAT), RFC 6598"),
    v4!(127, 0, 0, 0 / 8, "loopback, RFC 1122"),
    v4!(169, 254, 0, 0 / 16, "link-local, RFC 3927"),
    v4!(172, 16, 0, 0 / 12, "private use, RFC 1918"),
    v4!(192, 0, 2, 0 / 24, "documentation TEST-NET-1, RFC 5737"),
    v4!(192, 88, 99, 2 / 32, "6a44-relay anycast address, RFC 6751"),
    v4!(
        192,
        88,
        99,
        0 / 24,
        "deprecated 6to4 relay anycast, RFC 7526"
    ),
    v4!(192, 168, 0, 0 / 16, "private use, RFC 1918"),
    v4!(198, 18, 0, 0 / 15, "benchmarking, RFC 2544"),
    v4!(198, 51, 100, 0 / 24, "documentation TEST-NET-2, RFC 5737"),
    v4!(203, 0, 113, 0 / 24, "documentation TEST-NET-3, RFC 5737"),
    v4!(224, 0, 0, 0 / 4, "multicast, RFC 5771"),
    v4!(240, 0, 0, 0 / 4, "reserved, RFC 1112"),
];

macro_rules! v6 {
    ($addr:expr, $len:literal, $cidr:literal, $name:literal) => {
        (
            Ipv6Net::new_assert($addr, $len),
            SpecialBlock {
                cidr: $cidr,
                name: $name,
            },
        )
    };
}

const fn a6(s0: u16, s1: u16, s2: u16) -> Ipv6Addr {
    Ipv6Addr::new(s0, s1, s2, 0, 0, 0, 0, 0)
}

/// IPv6 blocks inside 2001::/23 whose own registry entry overrides its "False"
/// ("unless allowed by a more specific allocation"): Globally Reachable True,
/// or N/A for Teredo, which is looked up like 6to4 (2002::/16, also N/A): its
/// addresses stand for real hosts on the IPv4 Internet (RFC 4380 section 5).
/// RFC 6890 errata 3921 made Teredo's value N/A, like 6to4's, because its
/// global scope is not false.
const V6_GLOBAL_EXCEPTIONS: [Ipv6Net; 8] = [
    Ipv6Net::new_assert(a6(0x2001, 0, 0), 32),
    Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 1, 0, 0, 0, 0, 0, 1), 128),
    Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 1, 0, 0, 0, 0, 0, 2), 128),
    Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 1, 0, 0, 0, 0, 0, 3), 128),
    Ipv6Net::new_assert(a6(0x2001, 3, 0), 32),
    Ipv6Net::new_assert(a6(0x2001, 4, 0x112), 48),
    Ipv6Net::new_assert(a6(0x2001, 0x20, 0), 28),
    Ipv6Net::new_assert(a6(0x2001, 0x30, 0), 28),
];

/// IPv6 blocks that are not globally reachable: the IANA IPv6 Special-Purpose
/// Address Registry entries marked "Globally Reachable: False" and the
/// terminated 2001:10::/28, plus multicast (see [`IANA_REGISTRY_AS_OF`]). Most
/// specific entries first.
///
/// Checked against the IANA IPv4/IPv6 Special-Purpose Address Registries as of
/// 2025-10-09 (their Last Updated dates).
const V6_SPECIAL: [(Ipv6Net, SpecialBlock); 14] = [
    v6!(
        Ipv6Addr::UNSPECIFIED,
        128,
        "::/128",
        "unspecified address, RFC 4291"
    ),
    v6!(
        Ipv6Addr::LOCALHOST,
        128,
        "::1/128",
        "loopback address, RFC 4291"
    ),
    v6!(
        a6(0x64, 0xff9b, 1),
        48,
        "64:ff9b:1::/48",
        "local-use IPv4/IPv6 translation, RFC 8215"
    ),
    v6!(
        a6(0x100, 0, 0),
        64,
        "100::/64",
        "discard-only address block, RFC 6666"
    ),
    v6!(
        Ipv6Addr::new(0x100, 0, 0, 1, 0, 0, 0, 0),
        64,
        "100:0:0:1::/64",
        "dummy IPv6 prefix, RFC 9780"
    ),
    v6!(
        a6(0x2001, 2, 0),
        48,
        "2001:2::/48",
        "benchmarking, RFC 5180"
    ),
    v6!(
        a6(0x2001, 0xdb8, 0),
        32,
        "2001:db8::/32",
        "documentation, RFC 3849"
    ),
    v6!(
        a6(0x2001, 0x10, 0),
        28,
        "2001:10::/28",
        "deprecated (previously ORCHID), RFC 4843"
    ),
    v6!(
        a6(0x2001, 0, 0),
        23,
        "2001::/23",
        "IETF protocol assignments, RFC 2928"
    ),
    v6!(a6(0x3fff, 0, 0), 20, "3fff::/20", "documentation, RFC 9637"),
    v6!(
        a6(0x5f00, 0, 0),
        16,
        "5f00::/16",
        "segment routing (SRv6) SIDs, RFC 9602"
    ),
    v6!(a6(0xfc00, 0, 0), 7, "fc00::/7", "unique local, RFC 4193"),
    v6!(
        a6(0xfe80, 0, 0),
        10,
        "fe80::/10",
        "link-local unicast, RFC 4291"
    ),
    v6!(a6(0xff00, 0, 0), 8, "ff00::/8", "multicast, RFC 4291"),
];

/// The special-purpose block an address belongs to, if it is not globally
/// reachable. Such addresses are answered locally, without spending quota.
///
/// An IPv4-mapped IPv6 address (`::ffff:0:0/96`, which the registry lists as
/// not globally reachable) is judged as the IPv4 address it maps, as
/// [`parse_ip`] normalises it, so `::ffff:8.8.8.8` is looked up like `8.8.8.8`.
pub fn special_block(ip: IpAddr) -> Option<SpecialBlock> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => special_v4(v4),
            None => special_v6(v6),
        },
    }
}

fn special_v4(v4: Ipv4Addr) -> Option<SpecialBlock> {
    if V4_GLOBAL_EXCEPTIONS.iter().any(|n| n.contains(&v4)) {
        return None;
    }
    V4_SPECIAL
        .iter()
        .find(|(net, _)| net.contains(&v4))
        .map(|(_, b)| *b)
}

fn special_v6(v6: Ipv6Addr) -> Option<SpecialBlock> {
    if V6_GLOBAL_EXCEPTIONS.iter().any(|n| n.contains(&v6)) {
        return None;
    }
    V6_SPECIAL
        .iter()
        .find(|(net, _)| net.contains(&v6))
        .map(|(_, b)| *b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        parse_ip(s).unwrap().to_string()
    }

    fn reason(s: &str) -> &'static str {
        parse_ip(s).unwrap_err().reason
    }

    #[test]
    fn accepts_and_normalises() {
        assert_eq!(ok("45.9.148.108"), "45.9.148.108");
        assert_eq!(ok("  45.9.148.108\t"), "45.9.148.108");
        assert_eq!(ok("2001:0DB8:0000::0001"), "2001:db8::1");
        assert_eq!(ok("::ffff:45.9.148.108"), "45.9.148.108");
        assert_eq!(ok("::FFFF:2d09:946c"), "45.9.148.108");
        assert_eq!(ok("0.0.0.0"), "0.0.0.0");
    }

    #[test]
    fn rejects_everything_that_is_not_one_address() {
        assert_eq!(reason(""), "empty");
        assert_eq!(reason("   "), "empty");
        assert_eq!(reason("10.0.0.0/8"), "a CIDR range, not an address");
        assert_eq!(reason("1.2.3.4:443"), "a port is not accepted");
        assert!(reason("[::1]:443").starts_with("brackets"));
        assert!(reason("[::1]").starts_with("brackets"));
        assert!(reason("example.com").starts_with("a hostname"));
        assert!(reason("010.1.1.1").starts_with("leading zeros"));
        assert!(reason("::ffff:01.2.3.4").starts_with("leading zeros"));
        assert!(reason("1.2.3.4 5.6.7.8").starts_with("contains whitespace"));
        assert!(reason("1.2.3.4\0").starts_with("contains whitespace"));
        assert!(reason("1.2.\n3.4").starts_with("contains whitespace"));
        assert_eq!(reason("fe80::1%eth0"), "IPv6 zone indexes are not accepted");
        assert_eq!(reason("1.2.3"), "malformed address");
        assert_eq!(reason("256.1.1.1"), "malformed address");
        assert_eq!(reason(&"1".repeat(100)), "too long");
    }

    #[test]
    fn error_message_quotes_and_escapes_input() {
        let e = parse_ip("bad\u{1b}[31m").unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"bad\\u{1b}[31m\" is not a single IP address: contains whitespace or control characters"
        );
    }

    #[test]
    fn classifies_special_purpose_blocks() {
        let block = |s: &str| special_block(parse_ip(s).unwrap()).map(|b| b.cidr);
        assert_eq!(block("10.1.2.3"), Some("10.0.0.0/8"));
        assert_eq!(block("172.31.255.255"), Some("172.16.0.0/12"));
        assert_eq!(block("172.32.0.1"), None);
        assert_eq!(block("192.168.1.1"), Some("192.168.0.0/16"));
        assert_eq!(block("127.0.0.1"), Some("127.0.0.0/8"));
        assert_eq!(block("169.254.169.254"), Some("169.254.0.0/16"));
        assert_eq!(block("100.64.0.1"), Some("100.64.0.0/10"));
        assert_eq!(block("100.128.0.1"), None);
        assert_eq!(block("192.0.2.1"), Some("192.0.2.0/24"));
        assert_eq!(block("198.51.100.7"), Some("198.51.100.0/24"));
        assert_eq!(block("203.0.113.9"), Some("203.0.113.0/24"));
        assert_eq!(block("255.255.255.255"), Some("255.255.255.255/32"));
        assert_eq!(block("0.0.0.0"), Some("0.0.0.0/32"));
        assert_eq!(block("0.0.0.1"), Some("0.0.0.0/8"));
        assert_eq!(block("192.88.99.2"), Some("192.88.99.2/32"));
        assert_eq!(block("192.88.99.1"), Some("192.88.99.0/24"));
        assert_eq!(block("224.0.0.251"), Some("224.0.0.0/4"));
        assert_eq!(block("240.0.0.1"), Some("240.0.0.0/4"));
        assert_eq!(
            block("192.0.0.9"),
            None,
            "PCP anycast is globally reachable"
        );
        assert_eq!(block("192.0.0.171"), Some("192.0.0.170/31"));
        assert_eq!(block("8.8.8.8"), None);
        assert_eq!(block("45.9.148.108"), None);
        assert_eq!(block("::1"), Some("::1/128"));
        assert_eq!(block("::"), Some("::/128"));
        assert_eq!(block("fd00::1"), Some("fc00::/7"));
        assert_eq!(block("fe80::1"), Some("fe80::/10"));
        assert_eq!(block("ff02::1"), Some("ff00::/8"));
        assert_eq!(block("2001:db8::1"), Some("2001:db8::/32"));
        assert_eq!(block("3fff::1"), Some("3fff::/20"));
        assert_eq!(block("100:0:0:1::1"), Some("100:0:0:1::/64"));
        assert_eq!(block("100::ffff"), Some("100::/64"));
        assert_eq!(block("100:0:0:2::"), None);
        assert_eq!(block("2001:20::1"), None, "ORCHIDv2 is globally reachable");
        assert_eq!(block("2001:1::1"), None);
        assert_eq!(
            block("2001:1::3"),
            None,
            "DNS-SD SRP anycast (RFC 9665) is globally reachable"
        );
        assert_eq!(block("2001:1::4"), Some("2001::/23"));
        assert_eq!(block("2001:0:4136:e378::1"), None, "Teredo is looked up");
        assert_eq!(block("2001:1::"), Some("2001::/23"));
        assert_eq!(block("2002:c000:0204::1"), None, "6to4 is looked up");
        assert_eq!(block("2a00:1450:4001::200e"), None);
        assert_eq!(block("::ffff:10.0.0.1"), Some("10.0.0.0/8"));
    }

    #[test]
    fn ipv4_mapped_ipv6_is_judged_as_its_ipv4_address_without_parse_ip() {
        let mapped = |s: &str| {
            let v4: Ipv4Addr = s.parse().unwrap();
            special_block(IpAddr::V6(v4.to_ipv6_mapped())).map(|b| b.cidr)
        };
        assert_eq!(mapped("10.0.0.1"), Some("10.0.0.0/8"));
        assert_eq!(mapped("0.0.0.0"), Some("0.0.0.0/32"));
        assert_eq!(mapped("192.0.0.9"), None);
        assert_eq!(mapped("8.8.8.8"), None);
    }

    /// The trimmed IANA registries in tests/iana/ (see their headers).
    const IPV4_REGISTRY: &str = include_str!("../tests/iana/ipv4-special-registry.csv");
    const IPV6_REGISTRY: &str = include_str!("../tests/iana/ipv6-special-registry.csv");

    /// One registry entry: its block(s), name, RFCs and "Globally Reachable".
    #[derive(Debug)]
    struct Entry {
        blocks: Vec<ipnet::IpNet>,
        name: &'static str,
        rfcs: Vec<&'static str>,
        reachable: &'static str,
    }

    /// Blocks the tables answer locally although no registry lists them.
    fn project_additions() -> Vec<Entry> {
        let entry = |block: &str, rfc| Entry {
            blocks: vec![block.parse().unwrap()],
            name: "Multicast",
            rfcs: vec![rfc],
            reachable: "False",
        };
        vec![
            entry("224.0.0.0/4", "RFC5771"),
            entry("ff00::/8", "RFC4291"),
        ]
    }

    /// The registry's Last Updated date and its entries.
    fn registry(csv: &'static str) -> (&'static str, Vec<Entry>) {
        let updated = csv
            .lines()
            .find_map(|l| l.strip_prefix("# Registry Last Updated: "))
            .expect("a Last Updated line");
        let mut lines = csv.lines().filter(|l| !l.starts_with('#'));
        assert_eq!(
            lines.next(),
            Some("address_block,name,rfc,globally_reachable")
        );
        let entries = lines
            .map(|line| {
                let fields: Vec<&str> = line.split(',').collect();
                let [blocks, name, rfcs, reachable] = fields[..] else {
                    panic!("not four fields: {line}");
                };
                let blocks: Vec<ipnet::IpNet> = blocks
                    .split(' ')
                    .map(|b| b.parse().unwrap_or_else(|e| panic!("{b}: {e}")))
                    .collect();
                for b in &blocks {
                    assert_eq!(*b, b.trunc(), "{b} has host bits");
                }
                assert!(
                    ["True", "False", "N/A", ""].contains(&reachable),
                    "{line}: Globally Reachable is {reachable:?}"
                );
                Entry {
                    blocks,
                    name,
                    rfcs: rfcs.split(' ').collect(),
                    reachable,
                }
            })
            .collect();
        (updated, entries)
    }

    /// What the registries say of an address: the most specific entry that
    /// holds it, if it is to be answered locally, or None if it is looked up.
    fn expected(ip: IpAddr, entries: &[Entry]) -> Option<&Entry> {
        if let IpAddr::V6(v6) = ip
            && let Some(v4) = v6.to_ipv4_mapped()
        {
            return expected(IpAddr::V4(v4), entries);
        }
        let (entry, _) = entries
            .iter()
            .flat_map(|e| e.blocks.iter().map(move |b| (e, b)))
            .filter(|(_, b)| b.contains(&ip))
            .max_by_key(|(_, b)| b.prefix_len())?;
        match entry.reachable {
            "False" | "" => Some(entry),
            _ => None,
        }
    }

    fn as_u128(ip: IpAddr) -> u128 {
        match ip {
            IpAddr::V4(v4) => u128::from(v4.to_bits()),
            IpAddr::V6(v6) => v6.to_bits(),
        }
    }

    /// The addresses just before and after a block, where they exist.
    fn neighbours(block: ipnet::IpNet) -> Vec<IpAddr> {
        let from = |ip: IpAddr, n: Option<u128>| -> Option<IpAddr> {
            let n = n?;
            match ip {
                IpAddr::V4(_) => u32::try_from(n).ok().map(|n| Ipv4Addr::from_bits(n).into()),
                IpAddr::V6(_) => Some(Ipv6Addr::from_bits(n).into()),
            }
        };
        let first = block.network();
        let last = block.broadcast();
        [
            from(first, as_u128(first).checked_sub(1)),
            from(last, as_u128(last).checked_add(1)),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Lower-case words of a name; a word IANA abbreviates ("Translat.")
    /// matches any word it begins.
    fn words(name: &str) -> Vec<(String, bool)> {
        let mut words = Vec::new();
        let mut word = String::new();
        for c in name.chars().chain([' ']) {
            if c.is_alphanumeric() {
                word.extend(c.to_lowercase());
            } else if !word.is_empty() {
                words.push((std::mem::take(&mut word), c == '.'));
            }
        }
        words
    }

    /// Whether a network is exactly the (disjoint) blocks of an entry.
    fn is_exactly(net: &ipnet::IpNet, blocks: &[ipnet::IpNet]) -> bool {
        let size = |b: &ipnet::IpNet| 1u128 << (b.max_prefix_len() - b.prefix_len());
        blocks.iter().all(|b| net.contains(b)) && blocks.iter().map(size).sum::<u128>() == size(net)
    }

    /// The table's answer for an address is the registry entry's block(s),
    /// named as the registry names it, citing one of its RFCs.
    fn assert_answers(ip: IpAddr, block: Option<SpecialBlock>, entry: &Entry) {
        let block = block.unwrap_or_else(|| panic!("{ip} ({}) is looked up", entry.name));
        let net: ipnet::IpNet = block.cidr.parse().unwrap();
        assert!(
            is_exactly(&net, &entry.blocks),
            "{ip} is answered as {block}, not as {:?} ({})",
            entry.blocks,
            entry.name
        );
        let rfc = block
            .name
            .rsplit_once(", RFC ")
            .map(|(_, n)| format!("RFC{n}"));
        assert!(
            rfc.as_ref()
                .is_some_and(|r| entry.rfcs.contains(&r.as_str())),
            "{block}: cites {rfc:?}, the registry {:?}",
            entry.rfcs
        );
        let ours = words(block.name);
        for (word, abbreviated) in words(entry.name) {
            assert!(
                ours.iter()
                    .any(|(w, _)| *w == word || (abbreviated && w.starts_with(&word))),
                "{block}: the registry's name is {:?}",
                entry.name
            );
        }
    }

    #[test]
    fn tables_match_the_iana_registries() {
        let (v4_updated, mut entries) = registry(IPV4_REGISTRY);
        let (v6_updated, v6) = registry(IPV6_REGISTRY);
        assert_eq!(
            (v4_updated, v6_updated),
            (IANA_REGISTRY_AS_OF, IANA_REGISTRY_AS_OF)
        );
        assert_eq!(entries.len(), 25, "IPv4 registry entries");
        assert_eq!(v6.len(), 25, "IPv6 registry entries");
        entries.extend(v6);
        entries.extend(project_additions());

        // Every entry's first and last address, and the ones just outside it,
        // are answered as the registry says, and so are a few public hosts.
        let mut samples: Vec<IpAddr> = ["8.8.8.8", "45.9.148.108", "2a00:1450:4001::200e"]
            .map(|s| s.parse().unwrap())
            .to_vec();
        for block in entries.iter().flat_map(|e| &e.blocks) {
            samples.extend([block.network(), block.broadcast()]);
            samples.extend(neighbours(*block));
        }
        for ip in samples {
            match expected(ip, &entries) {
                Some(entry) => assert_answers(ip, special_block(ip), entry),
                None => assert_eq!(special_block(ip), None, "{ip} is answered locally"),
            }
        }

        // Every table entry is a registry entry answered locally (or one of
        // the project's additions), with its CIDR text, and every exception
        // is one the registry marks True or N/A.
        let tables = V4_SPECIAL
            .iter()
            .map(|(net, b)| (ipnet::IpNet::from(*net), *b))
            .chain(V6_SPECIAL.iter().map(|(net, b)| ((*net).into(), *b)));
        for (net, block) in tables {
            assert_eq!(block.cidr, net.to_string());
            assert!(
                entries
                    .iter()
                    .any(|e| matches!(e.reachable, "False" | "") && is_exactly(&net, &e.blocks)),
                "{block} is no registry entry answered locally"
            );
        }
        let exceptions = V4_GLOBAL_EXCEPTIONS
            .iter()
            .map(|n| ipnet::IpNet::from(*n))
            .chain(V6_GLOBAL_EXCEPTIONS.iter().map(|n| (*n).into()));
        for net in exceptions {
            assert!(
                entries
                    .iter()
                    .any(|e| matches!(e.reachable, "True" | "N/A") && e.blocks == [net]),
                "{net} is no registry entry marked globally reachable"
            );
        }
    }
}
