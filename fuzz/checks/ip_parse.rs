//! Shared by the `ip_parse` fuzz target and `tests/properties.rs`: address
//! parsing, normalisation and the special-purpose lookup over arbitrary text.
//! Panics when an invariant does not hold.

use std::net::IpAddr;

use tip_enrich::{parse_ip, special_block};

/// Whether `ip` lies in the block written as `cidr` (`a.b.c.d/n` or `x::/n`).
fn cidr_contains(cidr: &str, ip: IpAddr) -> bool {
    let (net, len) = cidr.split_once('/').expect("a CIDR with a prefix length");
    let net: IpAddr = net.parse().expect("the CIDR's network parses");
    let len: u32 = len.parse().expect("the CIDR's prefix length parses");
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            assert!(len <= 32);
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            assert_eq!(u32::from(n) & !mask, 0, "host bits set in {cidr}");
            u32::from(a) & mask == u32::from(n)
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            assert!(len <= 128);
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            assert_eq!(u128::from(n) & !mask, 0, "host bits set in {cidr}");
            u128::from(a) & mask == u128::from(n)
        }
        _ => false,
    }
}

/// The whole check for one input.
pub fn check_text(input: &str) {
    match parse_ip(input) {
        Ok(ip) => {
            let trimmed = input.trim();
            assert!(!trimmed.is_empty() && trimmed.len() <= 64);
            // Exactly what the standard parser reads, mapped IPv6 folded to IPv4.
            let std_ip: IpAddr = trimmed.parse().expect("accepted text is an address");
            let folded = match std_ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(std_ip, IpAddr::V4),
                v4 => v4,
            };
            assert_eq!(ip, folded);
            if let IpAddr::V6(v6) = ip {
                assert!(v6.to_ipv4_mapped().is_none(), "mapped IPv6 not normalised");
            }
            // The normal form is a fixed point, in lower case, and survives padding.
            let text = ip.to_string();
            assert_eq!(parse_ip(&text), Ok(ip), "normal form does not re-parse");
            assert_eq!(parse_ip(&format!(" \t{text}\r\n")), Ok(ip));
            assert_eq!(text, text.to_ascii_lowercase());
            assert_eq!(parse_ip(&text.to_ascii_uppercase()), Ok(ip));
            if let IpAddr::V4(v4) = ip {
                assert_eq!(parse_ip(&format!("::ffff:{v4}")), Ok(ip));
                assert_eq!(parse_ip(&v4.to_ipv6_mapped().to_string()), Ok(ip));
            }
            // The special-purpose table: its CIDR text is the block it matched.
            if let Some(block) = special_block(ip) {
                assert!(
                    cidr_contains(block.cidr, ip),
                    "{ip} is not in {}",
                    block.cidr
                );
                assert_eq!(
                    block.to_string(),
                    format!("{} ({})", block.cidr, block.name)
                );
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                !message.chars().any(char::is_control),
                "control characters in {message:?}"
            );
            assert!(message.chars().count() <= 600, "message too long");
            assert!(e.input.starts_with('"'), "input not quoted");
        }
    }
}

/// Arbitrary bytes, read as text.
pub fn check(data: &[u8]) {
    check_text(&String::from_utf8_lossy(data));
}
