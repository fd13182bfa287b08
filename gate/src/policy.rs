//! The gate's pure part: its settings, the client address, the decision,
//! the refusals and the headers forwarded either way. No IO; the component
//! (`component.rs`) feeds it the request's headers and the lookup's result.
//!
//! Order of a decision ([`decide`]): no client address is a failed decision
//! (`fail` says open or closed); then the deny list (403, no lookup), then
//! the allow list (forward, no lookup), then reserved and private addresses
//! (forward, no lookup: the API knows nothing of them), then the verdict of
//! the lookup against the `block` set. Deny comes first so that an operator
//! can refuse a range the other rules would pass, private ones included.

use std::net::IpAddr;

use ipnet::IpNet;
use tip_enrich::bindings::{SoarVerdict, Zone};
use tip_enrich::settings::{
    self as table, GATE_ALLOW, GATE_BLOCK, GATE_CLIENT_IP_HEADER, GATE_DECISION_TIMEOUT_MS,
    GATE_DENY, GATE_FAIL, GATE_ORIGIN, GATE_ORIGIN_TIMEOUT_MS, GATE_TRUSTED_PROXIES,
    GATE_VERDICT_HEADER, Setting, verdict_name, zone_name,
};
use tip_enrich::{BaseUrl, EnvLookup, bounded, json, parse_ip, special_block};

/// The header the gate adds when it forwards without a decision (fail open).
pub const GATE_HEADER: &str = "x-tip-gate";
/// The header the gate adds with the verdict (`verdict-header` setting).
pub const VERDICT_HEADER: &str = "x-tip-verdict";

/// Where the client address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientIpHeader {
    /// Spin's own `spin-client-addr` (`ip:port`, `[v6]:port`).
    SpinClientAddr,
    /// `x-forwarded-for`: the rightmost entry not in `trusted-proxies`.
    XForwardedFor,
    /// RFC 7239 `forwarded`: the rightmost `for=` not in `trusted-proxies`.
    Forwarded,
    /// `x-real-ip`: one address.
    XRealIp,
    /// `true-client-ip`: one address.
    TrueClientIp,
}

impl ClientIpHeader {
    const ALL: [ClientIpHeader; 5] = [
        ClientIpHeader::SpinClientAddr,
        ClientIpHeader::XForwardedFor,
        ClientIpHeader::Forwarded,
        ClientIpHeader::XRealIp,
        ClientIpHeader::TrueClientIp,
    ];

    /// The header's name, lower case (also the setting's value).
    pub fn name(self) -> &'static str {
        match self {
            ClientIpHeader::SpinClientAddr => "spin-client-addr",
            ClientIpHeader::XForwardedFor => "x-forwarded-for",
            ClientIpHeader::Forwarded => "forwarded",
            ClientIpHeader::XRealIp => "x-real-ip",
            ClientIpHeader::TrueClientIp => "true-client-ip",
        }
    }
}

/// What a failed decision does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Forward, marked `x-tip-gate: fail-open`.
    Open,
    /// Answer 503.
    Closed,
}

/// The gate's settings ([`table::GATE_SETTINGS`]), resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct GateSettings {
    /// Where allowed requests go.
    pub origin: BaseUrl,
    /// Where the client address comes from.
    pub client_ip_header: ClientIpHeader,
    /// Proxies skipped in `x-forwarded-for` and `forwarded`.
    pub trusted_proxies: Vec<IpNet>,
    /// Verdicts refused with 403.
    pub block: Vec<SoarVerdict>,
    /// Forwarded without a lookup.
    pub allow: Vec<IpNet>,
    /// Refused without a lookup (checked before `allow`).
    pub deny: Vec<IpNet>,
    /// What a failed decision does.
    pub fail: FailMode,
    /// Limit of one lookup, in ms.
    pub decision_timeout_ms: u32,
    /// Whether forwarded requests carry `x-tip-verdict`.
    pub verdict_header: bool,
    /// Connect, first-byte and between-bytes timeouts towards the origin, in ms.
    pub origin_timeout_ms: u32,
}

/// A setting's value: the environment (`wasi:config` keys arrive as their
/// variable), else the table's default; empty counts as unset.
fn value(env: EnvLookup<'_>, s: &Setting) -> Option<String> {
    env(s.env)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .or_else(|| s.default.map(str::to_owned))
}

fn invalid(s: &Setting, why: &str) -> String {
    format!("{} ({}) is not valid: {why}", s.env, s.key)
}

/// A comma-separated list of CIDR ranges or single addresses.
pub fn parse_cidrs(s: &Setting, text: &str) -> Result<Vec<IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.parse::<IpNet>()
                .map(|n| match n {
                    // Normalise as parse_ip does: IPv4-mapped ranges as IPv4.
                    IpNet::V6(v6) if v6.prefix_len() >= 96 => v6
                        .network()
                        .to_ipv4_mapped()
                        .and_then(|a| ipnet::Ipv4Net::new(a, v6.prefix_len() - 96).ok())
                        .map_or(n, IpNet::V4),
                    n => n,
                })
                .or_else(|_| parse_ip(e).map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| {
                    invalid(
                        s,
                        &format!("{:?} is not an address or CIDR range", bounded(e, 64)),
                    )
                })
        })
        .collect()
}

fn parse_verdicts(s: &Setting, text: &str) -> Result<Vec<SoarVerdict>, String> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let all = [
        SoarVerdict::Malicious,
        SoarVerdict::Suspicious,
        SoarVerdict::Benign,
        SoarVerdict::Unknown,
    ];
    text.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            all.into_iter()
                .find(|v| verdict_name(*v).eq_ignore_ascii_case(e))
                .ok_or_else(|| {
                    invalid(
                        s,
                        &format!(
                            "{:?} is not one of malicious, suspicious, benign, unknown (or none)",
                            bounded(e, 32)
                        ),
                    )
                })
        })
        .collect()
}

fn parse_ms(s: &Setting, text: &str) -> Result<u32, String> {
    text.parse::<u32>()
        .ok()
        .filter(|ms| *ms > 0)
        .ok_or_else(|| invalid(s, "not a number of milliseconds from 1 to 4294967295"))
}

impl GateSettings {
    /// Resolves every gate setting from `env` (merged `wasi:config` over the
    /// environment). The error names the setting, never a value that could be
    /// a secret (the origin URL is not echoed).
    pub fn resolve(env: EnvLookup<'_>) -> Result<GateSettings, String> {
        let get = |s: &Setting| value(env, s).unwrap_or_default();
        let origin_text = value(env, &GATE_ORIGIN).ok_or_else(|| {
            format!(
                "{} ({}) is not set: the gate needs the origin to forward to",
                GATE_ORIGIN.env, GATE_ORIGIN.key
            )
        })?;
        let origin = BaseUrl::parse_as(&origin_text, &format!("the origin ({})", GATE_ORIGIN.env))
            .map_err(|e| e.to_string())?;
        let header_text = get(&GATE_CLIENT_IP_HEADER);
        let client_ip_header = ClientIpHeader::ALL
            .into_iter()
            .find(|h| h.name().eq_ignore_ascii_case(&header_text))
            .ok_or_else(|| {
                invalid(
                    &GATE_CLIENT_IP_HEADER,
                    &format!(
                        "use one of {}",
                        GATE_CLIENT_IP_HEADER.value.replace('|', ", ")
                    ),
                )
            })?;
        let fail = match get(&GATE_FAIL).to_ascii_lowercase().as_str() {
            "open" => FailMode::Open,
            "closed" => FailMode::Closed,
            _ => return Err(invalid(&GATE_FAIL, "use open or closed")),
        };
        let verdict_header = match get(&GATE_VERDICT_HEADER).to_ascii_lowercase().as_str() {
            "true" => true,
            "false" => false,
            _ => return Err(invalid(&GATE_VERDICT_HEADER, "use true or false")),
        };
        Ok(GateSettings {
            origin,
            client_ip_header,
            trusted_proxies: parse_cidrs(&GATE_TRUSTED_PROXIES, &get(&GATE_TRUSTED_PROXIES))?,
            block: parse_verdicts(&GATE_BLOCK, &get(&GATE_BLOCK))?,
            allow: parse_cidrs(&GATE_ALLOW, &get(&GATE_ALLOW))?,
            deny: parse_cidrs(&GATE_DENY, &get(&GATE_DENY))?,
            fail,
            decision_timeout_ms: parse_ms(
                &GATE_DECISION_TIMEOUT_MS,
                &get(&GATE_DECISION_TIMEOUT_MS),
            )?,
            verdict_header,
            origin_timeout_ms: parse_ms(&GATE_ORIGIN_TIMEOUT_MS, &get(&GATE_ORIGIN_TIMEOUT_MS))?,
        })
    }
}

/// The lookup settings of one decision: `pairs` (merged settings) with the
/// lookup's deadline set to the decision timeout, and each attempt's
/// timeouts, the longest `Retry-After` waited for and the lease capped at it,
/// so no lookup outlives the decision. A value that does not parse is left
/// as it is: the core then reports it as a `config` error.
pub fn lookup_settings(
    mut pairs: Vec<(String, String)>,
    decision_ms: u32,
) -> Vec<(String, String)> {
    let capped = [
        table::TIMEOUT_MS,
        table::CONNECT_TIMEOUT_MS,
        table::FIRST_BYTE_TIMEOUT_MS,
        table::BETWEEN_BYTES_TIMEOUT_MS,
        table::RETRY_AFTER_CAP_MS,
        table::CACHE_LEASE_MS,
    ];
    for s in capped {
        let current = pairs
            .iter()
            .find(|(k, _)| k == s.env)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .or_else(|| s.default.map(str::to_owned));
        let Some(Ok(ms)) = current.map(|v| v.parse::<u32>()) else {
            continue;
        };
        set(&mut pairs, s.env, ms.min(decision_ms).to_string());
    }
    set(&mut pairs, table::DEADLINE_MS.env, decision_ms.to_string());
    pairs
}

fn set(pairs: &mut Vec<(String, String)>, name: &str, value: String) {
    pairs.retain(|(k, _)| k != name);
    pairs.push((name.to_owned(), value));
}

/// One address as proxies write it: bare, `ip:port`, `[v6]` or `[v6]:port`,
/// optionally in double quotes.
pub fn parse_addr(text: &str) -> Option<IpAddr> {
    let s = text.trim();
    let s = s
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(s);
    let port_ok = |p: &str| p.parse::<u16>().is_ok();
    let host = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(port_ok)) {
            return None;
        }
        host
    } else if s.matches(':').count() == 1 {
        let (host, port) = s.split_once(':')?;
        if !port_ok(port) {
            return None;
        }
        host
    } else {
        s
    };
    parse_ip(host).ok()
}

/// Splits `s` at `sep` outside double-quoted strings (`\` escapes in them).
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(s.get(start..i).unwrap_or_default());
            start = i + c.len_utf8();
        }
    }
    parts.push(s.get(start..).unwrap_or_default());
    parts
}

/// The `for=` values of a `forwarded` header, left to right: `None` for one
/// that is not an address; `unknown` and obfuscated (`_x`) ones left out.
fn forwarded_for(value: &str) -> Vec<Option<IpAddr>> {
    split_unquoted(value, ',')
        .into_iter()
        .filter_map(|element| {
            split_unquoted(element, ';').into_iter().find_map(|pair| {
                let (name, v) = pair.split_once('=')?;
                name.trim().eq_ignore_ascii_case("for").then_some(v.trim())
            })
        })
        .filter_map(|v| {
            let bare = v.trim_matches('"');
            if bare.eq_ignore_ascii_case("unknown") || bare.starts_with('_') {
                None
            } else {
                Some(parse_addr(v))
            }
        })
        .collect()
}

/// The client address from the values (in order) of the header `header`
/// names; `None` when there is none or it does not parse.
///
/// For `x-forwarded-for` and `forwarded`: walking from the right, entries in
/// `trusted` are skipped and the first other entry is the client, so a client
/// cannot pick its address by sending the header itself; if that entry is
/// not an address, there is no client address (the gate does not guess
/// further left). When every entry is trusted, the leftmost is the client.
/// For the one-address headers, the last value counts.
pub fn client_address(
    header: ClientIpHeader,
    values: &[&str],
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let entries: Vec<Option<IpAddr>> = match header {
        ClientIpHeader::XForwardedFor => values
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(parse_addr)
            .collect(),
        ClientIpHeader::Forwarded => values.iter().flat_map(|v| forwarded_for(v)).collect(),
        ClientIpHeader::SpinClientAddr | ClientIpHeader::XRealIp | ClientIpHeader::TrueClientIp => {
            return values.last().and_then(|v| parse_addr(v));
        }
    };
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    for entry in entries.iter().rev() {
        match entry {
            Some(ip) if is_trusted(ip) => continue,
            other => return *other,
        }
    }
    entries.first().copied().flatten()
}

/// A verdict with its zone.
pub type Judged = (SoarVerdict, Zone);

/// What the gate does with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Forward to the origin.
    Forward {
        /// The lookup's verdict, when one was made.
        verdict: Option<Judged>,
        /// No decision was made and `fail` is open.
        fail_open: bool,
    },
    /// Answer 403.
    Block {
        /// The lookup's verdict; `None` for the deny list.
        verdict: Option<Judged>,
    },
    /// No decision and `fail` is closed: answer 503.
    FailClosed,
}

/// Decides on a request from `addr` ([module docs](self) for the order);
/// `lookup` is asked only when the lists and the reserved ranges do not
/// decide, and its `Err` is a failed decision (API failure or timeout).
pub fn decide<E>(
    addr: Option<IpAddr>,
    settings: &GateSettings,
    lookup: impl FnOnce(IpAddr) -> Result<Judged, E>,
) -> Outcome {
    let failed = || match settings.fail {
        FailMode::Open => Outcome::Forward {
            verdict: None,
            fail_open: true,
        },
        FailMode::Closed => Outcome::FailClosed,
    };
    let pass = Outcome::Forward {
        verdict: None,
        fail_open: false,
    };
    let Some(ip) = addr else {
        return failed();
    };
    if settings.deny.iter().any(|n| n.contains(&ip)) {
        return Outcome::Block { verdict: None };
    }
    if settings.allow.iter().any(|n| n.contains(&ip)) || special_block(ip).is_some() {
        return pass;
    }
    match lookup(ip) {
        Ok(judged) if settings.block.contains(&judged.0) => Outcome::Block {
            verdict: Some(judged),
        },
        Ok(judged) => Outcome::Forward {
            verdict: Some(judged),
            fail_open: false,
        },
        Err(_) => failed(),
    }
}

/// An answer the gate gives itself (a refusal or a problem).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Headers, `content-type` first.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// How well `accept` takes `ty/sub`: the q of its most specific matching range.
fn quality(accept: &str, ty: &str, sub: &str) -> f32 {
    let mut best = (0u8, 0.0f32);
    for range in accept.split(',') {
        let mut params = range.split(';');
        let media = params.next().unwrap_or_default().trim();
        let Some((t, s)) = media.split_once('/') else {
            continue;
        };
        let specificity = match (t.trim(), s.trim()) {
            (t, s) if t.eq_ignore_ascii_case(ty) && s.eq_ignore_ascii_case(sub) => 3,
            (t, "*") if t.eq_ignore_ascii_case(ty) => 2,
            ("*", "*") => 1,
            _ => continue,
        };
        let q = params
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .and_then(|(_, v)| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if specificity > best.0 {
            best = (specificity, q);
        }
    }
    best.1
}

/// Whether `accept` prefers `text/html` over `application/json` (a browser);
/// JSON otherwise, and when there is no `Accept`.
pub fn prefers_html(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| quality(a, "text", "html") > quality(a, "application", "json"))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn answer(status: u16, html: bool, json_body: Vec<u8>, title: &str, text: &str) -> Answer {
    let (content_type, body) = if html {
        (
            "text/html; charset=utf-8",
            format!(
                "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{status} {t}</title></head>\n<body><h1>{t}</h1><p>{x}</p></body></html>\n",
                t = html_escape(title),
                x = html_escape(text)
            )
            .into_bytes(),
        )
    } else {
        ("application/json", json_body)
    };
    Answer {
        status,
        headers: vec![
            ("content-type".into(), content_type.into()),
            ("cache-control".into(), "no-store".into()),
        ],
        body,
    }
}

fn problem(status: u16, accept: Option<&str>, kind: &str, title: &str, message: &str) -> Answer {
    answer(
        status,
        prefers_html(accept),
        json::to_vec(&json::problem(kind, message)),
        title,
        message,
    )
}

/// The 403 of a blocked request: the verdict and zone (when a lookup
/// decided) and nothing else, as JSON or, when `accept` prefers it, HTML.
pub fn blocked(verdict: Option<Judged>, accept: Option<&str>) -> Answer {
    let names = verdict.map(|(v, z)| (verdict_name(v), zone_name(z)));
    let message = match names {
        Some((v, z)) => {
            format!("requests from this address are refused: its verdict is {v} (zone {z})")
        }
        None => "requests from this address are refused".to_owned(),
    };
    answer(
        403,
        prefers_html(accept),
        json::to_vec(&json::blocked(
            &message,
            names.map(|n| n.0),
            names.map(|n| n.1),
        )),
        "Forbidden",
        &message,
    )
}

/// The 503 of a failed decision with `fail` closed.
pub fn fail_closed(accept: Option<&str>) -> Answer {
    problem(
        503,
        accept,
        "decision-failed",
        "Service Unavailable",
        "the client address could not be checked; try again later",
    )
}

/// The 500 of a gate whose settings do not resolve.
pub fn misconfigured(message: &str, accept: Option<&str>) -> Answer {
    problem(500, accept, "config", "Internal Server Error", message)
}

/// The 502 of an origin that gave no response; `why` says what happened
/// (never the origin's URL).
pub fn origin_unreachable(why: &str, accept: Option<&str>) -> Answer {
    problem(
        502,
        accept,
        "origin-unreachable",
        "Bad Gateway",
        &format!("the origin could not be reached: {why}"),
    )
}

/// Hop-by-hop headers (RFC 9110 7.6.1), never forwarded either way, with
/// the non-standard `proxy-connection`. `trailer` is not one: it declares
/// the trailer fields end to end, and HTTP/1.1 servers (hyper) send only the
/// trailers it declares, so dropping it would drop the origin's trailers.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
];

/// Whether the request's `te` lists `trailers`.
fn accepts_trailers(headers: &[(String, Vec<u8>)]) -> bool {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("te"))
        .flat_map(|(_, v)| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|t| {
                    t.split(';')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_ascii_lowercase()
                })
                .collect::<Vec<_>>()
        })
        .any(|t| t == "trailers")
}

/// A header list from wasi (`fields.entries()`).
pub type Headers = Vec<(String, Vec<u8>)>;

/// `headers` without the hop-by-hop ones and those `connection` names.
pub fn end_to_end(headers: &[(String, Vec<u8>)]) -> Headers {
    let named: Vec<String> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .filter(|t| !t.is_empty())
        .collect();
    headers
        .iter()
        .filter(|(n, _)| {
            let n = n.to_ascii_lowercase();
            !HOP_BY_HOP.contains(&n.as_str()) && !named.contains(&n)
        })
        .cloned()
        .collect()
}

/// What the gate knows of a request it forwards.
#[derive(Debug, Clone, Default)]
pub struct Forwarding<'a> {
    /// The client address, when there is one.
    pub client: Option<IpAddr>,
    /// Whether `x-forwarded-for` is the client-address header: then its
    /// chain already ends with the gate's own peer (the host or the front
    /// proxy appended it), and the gate forwards it as it came instead of
    /// appending the client a second time.
    pub chain_is_the_client_header: bool,
    /// `http` or `https`: the incoming scheme.
    pub proto: &'a str,
    /// The incoming authority (else its `host` header).
    pub host: Option<&'a str>,
    /// The verdict, when `verdict-header` is on and a lookup decided.
    pub verdict: Option<Judged>,
    /// Forwarded without a decision (`x-tip-gate: fail-open`).
    pub fail_open: bool,
}

/// The headers of the request to the origin: the end-to-end headers of the
/// incoming one minus `host` (the origin's authority is the request's) and
/// any `x-tip-verdict` or `x-tip-gate` the client sent, with the client
/// appended to `x-forwarded-for` (unless that header is the client-address
/// header, whose chain already ends with the gate's peer) and `x-forwarded-proto` and
/// `x-forwarded-host` set. The configured client-address header is kept as
/// it came (the origin may log it; the gate's own decision is in
/// `x-tip-verdict`).
pub fn request_headers(incoming: &[(String, Vec<u8>)], f: &Forwarding<'_>) -> Headers {
    let own = [
        "host",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        VERDICT_HEADER,
        GATE_HEADER,
    ];
    let earlier: Vec<String> = incoming
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
        .map(|(_, v)| String::from_utf8_lossy(v).trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect();
    let mut out: Headers = end_to_end(incoming)
        .into_iter()
        .filter(|(n, _)| !own.iter().any(|o| n.eq_ignore_ascii_case(o)))
        .collect();
    let mut chain = earlier.join(", ");
    if let Some(client) = f.client.filter(|_| !f.chain_is_the_client_header) {
        if !chain.is_empty() {
            chain.push_str(", ");
        }
        chain.push_str(&client.to_string());
    }
    let mut add = |name: &str, value: String| out.push((name.to_owned(), value.into_bytes()));
    if !chain.is_empty() {
        add("x-forwarded-for", chain);
    }
    // `te` is hop-by-hop, but its `trailers` token says the client takes
    // trailers; the gate passes the origin's through, so it says the same
    // to the origin (HTTP/1.1 servers send trailers only when asked).
    if accepts_trailers(incoming) {
        add("te", "trailers".to_owned());
    }
    add("x-forwarded-proto", f.proto.to_owned());
    if let Some(host) = f.host.filter(|h| !h.is_empty()) {
        add("x-forwarded-host", host.to_owned());
    }
    if let Some((v, z)) = f.verdict {
        add(
            VERDICT_HEADER,
            format!("{}; zone={}", verdict_name(v), zone_name(z)),
        );
    }
    if f.fail_open {
        add(GATE_HEADER, "fail-open".to_owned());
    }
    out
}

/// The headers of the answer to the client: the origin's end-to-end ones;
/// without `content-length` when the answer has no body whatever it says
/// (`HEAD`, 204, 304), since the host checks the length against the bytes.
pub fn response_headers(origin: &[(String, Vec<u8>)], bodiless: bool) -> Headers {
    end_to_end(origin)
        .into_iter()
        .filter(|(n, _)| !(bodiless && n.eq_ignore_ascii_case("content-length")))
        .collect()
}

/// Whether an answer with `status` to a `method` request has no body.
pub fn bodiless(head: bool, status: u16) -> bool {
    head || status == 204 || status == 304 || (100..200).contains(&status)
}

/// The path and query of the request to the origin: its path prefix joined
/// with the incoming path and query.
pub fn origin_path(prefix: &str, path_with_query: Option<&str>) -> String {
    match path_with_query.unwrap_or("/") {
        "*" if prefix.is_empty() => "*".to_owned(),
        p if p.starts_with('/') => format!("{prefix}{p}"),
        p => format!("{prefix}/{p}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn resolve(pairs: &[(&str, &str)]) -> Result<GateSettings, String> {
        let map = env(pairs);
        GateSettings::resolve(&|k| map.get(k).cloned())
    }

    fn settings(pairs: &[(&str, &str)]) -> GateSettings {
        let mut all = vec![("TIP_GATE_ORIGIN", "http://origin:8080")];
        all.extend_from_slice(pairs);
        resolve(&all).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(s: &str) -> Vec<IpNet> {
        parse_cidrs(&GATE_TRUSTED_PROXIES, s).unwrap()
    }

    #[test]
    fn defaults_follow_the_table() {
        let s = settings(&[]);
        assert_eq!(s.origin.authority, "origin:8080");
        assert!(!s.origin.https);
        assert_eq!(s.client_ip_header, ClientIpHeader::XForwardedFor);
        assert!(s.trusted_proxies.is_empty() && s.allow.is_empty() && s.deny.is_empty());
        assert_eq!(s.block, vec![SoarVerdict::Malicious]);
        assert_eq!(s.fail, FailMode::Open);
        assert_eq!(s.decision_timeout_ms, 2000);
        assert!(!s.verdict_header);
        assert_eq!(s.origin_timeout_ms, 30000);
        // Every header the table's placeholder names parses, and no other.
        let names: Vec<&str> = ClientIpHeader::ALL.iter().map(|h| h.name()).collect();
        assert_eq!(names.join("|"), GATE_CLIENT_IP_HEADER.value);
    }

    #[test]
    fn settings_parse() {
        let s = settings(&[
            ("TIP_GATE_ORIGIN", "https://app.example/base/"),
            ("TIP_GATE_CLIENT_IP_HEADER", "Spin-Client-Addr"),
            (
                "TIP_GATE_TRUSTED_PROXIES",
                "10.0.0.0/8, 2001:db8::/32 ,192.0.2.1",
            ),
            ("TIP_GATE_BLOCK", "malicious,Suspicious"),
            ("TIP_GATE_FAIL", "closed"),
            ("TIP_GATE_DECISION_TIMEOUT_MS", "500"),
            ("TIP_GATE_VERDICT_HEADER", "true"),
            ("TIP_GATE_ORIGIN_TIMEOUT_MS", "1000"),
        ]);
        assert!(s.origin.https);
        assert_eq!(s.origin.path_prefix, "/base");
        assert_eq!(s.client_ip_header, ClientIpHeader::SpinClientAddr);
        assert_eq!(s.trusted_proxies.len(), 3);
        assert!(
            s.trusted_proxies
                .iter()
                .any(|n| n.contains(&ip("192.0.2.1")))
        );
        assert_eq!(
            s.block,
            vec![SoarVerdict::Malicious, SoarVerdict::Suspicious]
        );
        assert_eq!(s.fail, FailMode::Closed);
        assert_eq!(s.decision_timeout_ms, 500);
        assert!(s.verdict_header);
        assert_eq!(s.origin_timeout_ms, 1000);
        assert!(settings(&[("TIP_GATE_BLOCK", "none")]).block.is_empty());
        // Empty values take the default (Spin's variables default to "").
        assert_eq!(
            settings(&[("TIP_GATE_BLOCK", "")]).block,
            vec![SoarVerdict::Malicious]
        );
        // An IPv4-mapped range reads as IPv4, as addresses do.
        assert!(
            nets("::ffff:198.51.100.0/120")
                .iter()
                .any(|n| n.contains(&ip("198.51.100.7")))
        );
    }

    #[test]
    fn settings_errors_name_the_setting_not_the_origin() {
        let missing = resolve(&[]).unwrap_err();
        assert!(
            missing.contains("TIP_GATE_ORIGIN") && missing.contains("not set"),
            "{missing}"
        );
        let bad = resolve(&[("TIP_GATE_ORIGIN", "ftp://secret-token@host")]).unwrap_err();
        assert!(
            bad.contains("TIP_GATE_ORIGIN") && !bad.contains("secret-token"),
            "{bad}"
        );
        let creds = resolve(&[("TIP_GATE_ORIGIN", "http://user:pw@host")]).unwrap_err();
        assert!(!creds.contains("pw@"), "{creds}");
        for (name, value) in [
            ("TIP_GATE_CLIENT_IP_HEADER", "x-client"),
            ("TIP_GATE_TRUSTED_PROXIES", "10.0.0.0/33"),
            ("TIP_GATE_ALLOW", "not-an-ip"),
            ("TIP_GATE_DENY", "1.2.3.4/8/8"),
            ("TIP_GATE_BLOCK", "malicious,evil"),
            ("TIP_GATE_FAIL", "sometimes"),
            ("TIP_GATE_DECISION_TIMEOUT_MS", "0"),
            ("TIP_GATE_ORIGIN_TIMEOUT_MS", "-1"),
            ("TIP_GATE_VERDICT_HEADER", "yes"),
        ] {
            let e = resolve(&[("TIP_GATE_ORIGIN", "http://o"), (name, value)]).unwrap_err();
            assert!(e.contains(name), "{name}: {e}");
        }
    }

    #[test]
    fn the_decision_caps_every_lookup_limit() {
        let pairs = lookup_settings(
            vec![
                ("TIP_API_KEY".into(), "k".into()),
                ("TIP_TIMEOUT_MS".into(), "100".into()),
                ("TIP_DEADLINE_MS".into(), "999999".into()),
                ("TIP_CONNECT_TIMEOUT_MS".into(), "nonsense".into()),
            ],
            2000,
        );
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("TIP_API_KEY"), Some("k"));
        assert_eq!(get("TIP_DEADLINE_MS"), Some("2000"));
        assert_eq!(get("TIP_TIMEOUT_MS"), Some("100"));
        assert_eq!(get("TIP_FIRST_BYTE_TIMEOUT_MS"), Some("2000"));
        assert_eq!(get("TIP_BETWEEN_BYTES_TIMEOUT_MS"), Some("2000"));
        assert_eq!(get("TIP_RETRY_AFTER_CAP_MS"), Some("2000"));
        assert_eq!(get("TIP_CACHE_LEASE_MS"), Some("2000"));
        // Left for the core to report as a config error.
        assert_eq!(get("TIP_CONNECT_TIMEOUT_MS"), Some("nonsense"));
        assert_eq!(
            pairs.iter().filter(|(n, _)| n == "TIP_DEADLINE_MS").count(),
            1
        );
    }

    fn client(h: ClientIpHeader, values: &[&str], trusted: &str) -> Option<IpAddr> {
        client_address(h, values, &nets(trusted))
    }

    #[test]
    fn spin_client_addr_with_ports() {
        let h = ClientIpHeader::SpinClientAddr;
        assert_eq!(
            client(h, &["203.0.113.7:51234"], ""),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(
            client(h, &["[2001:db8::1]:443"], ""),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            client(h, &["[::ffff:203.0.113.7]:1"], ""),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(client(h, &["203.0.113.7"], ""), Some(ip("203.0.113.7")));
        assert_eq!(client(h, &["2001:db8::1"], ""), Some(ip("2001:db8::1")));
        for bad in [
            "203.0.113.7:99999",
            "[2001:db8::1]x",
            "[2001:db8::1",
            "",
            "host:80",
        ] {
            assert_eq!(client(h, &[bad], ""), None, "{bad}");
        }
        assert_eq!(client(h, &[], ""), None);
    }

    #[test]
    fn x_forwarded_for_takes_the_rightmost_untrusted() {
        let h = ClientIpHeader::XForwardedFor;
        // A client-sent entry on the left cannot win.
        assert_eq!(
            client(
                h,
                &["1.1.1.1,  203.0.113.7 , 10.0.0.2,10.0.0.1"],
                "10.0.0.0/8"
            ),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(
            client(h, &["1.1.1.1, 203.0.113.7"], ""),
            Some(ip("203.0.113.7"))
        );
        // Several header lines are one list, in order.
        assert_eq!(
            client(h, &["1.1.1.1", "203.0.113.7, 10.0.0.1"], "10.0.0.0/8"),
            Some(ip("203.0.113.7"))
        );
        // Garbage left of the client is never read; garbage where the client
        // should be is no address, not a guess further left.
        assert_eq!(
            client(h, &["garbage, 203.0.113.7, 10.0.0.1"], "10.0.0.0/8"),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(
            client(h, &["203.0.113.7, garbage, 10.0.0.1"], "10.0.0.0/8"),
            None
        );
        // Empty entries are skipped; ports and brackets are understood.
        assert_eq!(
            client(h, &[" , 203.0.113.7:8080,, "], ""),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(
            client(h, &["[2001:db8::7]:1, 10.0.0.1"], "10.0.0.0/8"),
            Some(ip("2001:db8::7"))
        );
        // Every entry trusted: the leftmost.
        assert_eq!(
            client(h, &["10.0.0.3, 10.0.0.2"], "10.0.0.0/8"),
            Some(ip("10.0.0.3"))
        );
        assert_eq!(client(h, &[""], ""), None);
        assert_eq!(client(h, &[], ""), None);
    }

    #[test]
    fn forwarded_reads_for_values() {
        let h = ClientIpHeader::Forwarded;
        assert_eq!(
            client(h, &[r#"for="[2001:db8:cafe::17]:4711";proto=https"#], ""),
            Some(ip("2001:db8:cafe::17"))
        );
        assert_eq!(
            client(
                h,
                &["for=192.0.2.43, for=198.51.100.17;by=203.0.113.60;proto=http;host=example.com"],
                ""
            ),
            Some(ip("198.51.100.17"))
        );
        assert_eq!(
            client(h, &["For=\"192.0.2.43:80\", for=10.0.0.1"], "10.0.0.0/8"),
            Some(ip("192.0.2.43"))
        );
        // Obfuscated identifiers and `unknown` are left out.
        assert_eq!(
            client(h, &["for=192.0.2.43, for=_hidden, for=unknown"], ""),
            Some(ip("192.0.2.43"))
        );
        assert_eq!(client(h, &["for=_hidden"], ""), None);
        // A comma or semicolon inside quotes does not split.
        assert_eq!(
            client(h, &[r#"by="a,b;c";for=192.0.2.9"#], ""),
            Some(ip("192.0.2.9"))
        );
        // Elements without for=, and several lines.
        assert_eq!(
            client(
                h,
                &["proto=https", "for=192.0.2.1;proto=http, by=10.0.0.1"],
                ""
            ),
            Some(ip("192.0.2.1"))
        );
        assert_eq!(client(h, &["for=192.0.2.1, for=bogus"], ""), None);
    }

    #[test]
    fn one_address_headers() {
        for h in [ClientIpHeader::XRealIp, ClientIpHeader::TrueClientIp] {
            assert_eq!(client(h, &[" 203.0.113.7 "], ""), Some(ip("203.0.113.7")));
            assert_eq!(
                client(h, &["1.1.1.1", "203.0.113.7"], ""),
                Some(ip("203.0.113.7"))
            );
            assert_eq!(client(h, &["1.1.1.1, 203.0.113.7"], ""), None);
        }
    }

    fn judged(v: SoarVerdict) -> Result<Judged, ()> {
        Ok((v, Zone::Red))
    }

    #[test]
    fn deny_then_allow_then_reserved_then_the_verdict() {
        let s = settings(&[
            ("TIP_GATE_DENY", "203.0.113.0/24, 10.9.0.0/16"),
            ("TIP_GATE_ALLOW", "203.0.113.0/25, 198.51.100.0/24"),
        ]);
        let no_lookup = |_: IpAddr| -> Result<Judged, ()> { panic!("looked up") };
        let pass = Outcome::Forward {
            verdict: None,
            fail_open: false,
        };
        // Deny wins over allow, and over the reserved ranges.
        assert_eq!(
            decide(Some(ip("203.0.113.5")), &s, no_lookup),
            Outcome::Block { verdict: None }
        );
        assert_eq!(
            decide(Some(ip("10.9.1.1")), &s, no_lookup),
            Outcome::Block { verdict: None }
        );
        assert_eq!(decide(Some(ip("198.51.100.5")), &s, no_lookup), pass);
        assert_eq!(decide(Some(ip("10.1.1.1")), &s, no_lookup), pass);
        assert_eq!(decide(Some(ip("::1")), &s, no_lookup), pass);
        assert_eq!(
            decide(Some(ip("8.8.8.8")), &s, |_| judged(SoarVerdict::Malicious)),
            Outcome::Block {
                verdict: Some((SoarVerdict::Malicious, Zone::Red))
            }
        );
        assert_eq!(
            decide(Some(ip("8.8.8.8")), &s, |_| judged(SoarVerdict::Suspicious)),
            Outcome::Forward {
                verdict: Some((SoarVerdict::Suspicious, Zone::Red)),
                fail_open: false
            }
        );
    }

    #[test]
    fn block_sets_and_failures() {
        let s = settings(&[("TIP_GATE_BLOCK", "suspicious,unknown")]);
        let at = Some(ip("8.8.8.8"));
        assert!(matches!(
            decide(at, &s, |_| judged(SoarVerdict::Unknown)),
            Outcome::Block { .. }
        ));
        assert!(matches!(
            decide(at, &s, |_| judged(SoarVerdict::Suspicious)),
            Outcome::Block { .. }
        ));
        assert!(matches!(
            decide(at, &s, |_| judged(SoarVerdict::Malicious)),
            Outcome::Forward { .. }
        ));
        let open = Outcome::Forward {
            verdict: None,
            fail_open: true,
        };
        assert_eq!(decide(at, &s, |_| Err::<Judged, _>("timeout")), open);
        assert_eq!(decide(None, &s, |_| judged(SoarVerdict::Benign)), open);
        let closed = settings(&[("TIP_GATE_FAIL", "closed")]);
        assert_eq!(
            decide(at, &closed, |_| Err::<Judged, _>(())),
            Outcome::FailClosed
        );
        assert_eq!(
            decide(None, &closed, |_| judged(SoarVerdict::Benign)),
            Outcome::FailClosed
        );
    }

    #[test]
    fn accept_negotiation() {
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert!(prefers_html(Some(browser)));
        assert!(prefers_html(Some("text/*")));
        assert!(!prefers_html(None));
        assert!(!prefers_html(Some("*/*")));
        assert!(!prefers_html(Some("application/json, text/html;q=0.5")));
        assert!(!prefers_html(Some("text/html;q=0.5, application/json")));
        assert!(prefers_html(Some("text/html, application/json;q=0.9")));
        assert!(!prefers_html(Some("TEXT/HTML;q=0, */*")));
        assert!(!prefers_html(Some("garbage")));
    }

    #[test]
    fn refusals_name_the_verdict_and_nothing_else() {
        let a = blocked(Some((SoarVerdict::Malicious, Zone::Red)), None);
        assert_eq!(a.status, 403);
        assert_eq!(a.headers.first().unwrap().1, "application/json");
        let body = String::from_utf8(a.body).unwrap();
        assert_eq!(
            body,
            r#"{"error":{"kind":"blocked","message":"requests from this address are refused: its verdict is malicious (zone red)","verdict":"malicious","zone":"red"}}"#
        );
        let deny = String::from_utf8(blocked(None, None).body).unwrap();
        assert_eq!(
            deny,
            r#"{"error":{"kind":"blocked","message":"requests from this address are refused"}}"#
        );
        let html = blocked(
            Some((SoarVerdict::Suspicious, Zone::Orange)),
            Some("text/html"),
        );
        assert!(html.headers.first().unwrap().1.starts_with("text/html"));
        let page = String::from_utf8(html.body).unwrap();
        assert!(
            page.contains("suspicious") && page.contains("zone orange") && page.contains("403"),
            "{page}"
        );
        let closed = fail_closed(None);
        assert_eq!(closed.status, 503);
        assert!(
            String::from_utf8(closed.body)
                .unwrap()
                .contains(r#""kind":"decision-failed""#)
        );
        assert_eq!(misconfigured("x", None).status, 500);
        let down = origin_unreachable("the connection was refused", Some("text/html"));
        assert_eq!(down.status, 502);
        assert!(
            String::from_utf8(down.body)
                .unwrap()
                .contains("could not be reached")
        );
        assert!(
            String::from_utf8(origin_unreachable("<x>", None).body)
                .unwrap()
                .contains(r#""kind":"origin-unreachable""#)
        );
    }

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn names(headers: &Headers) -> Vec<&str> {
        headers.iter().map(|(n, _)| n.as_str()).collect()
    }

    fn get<'a>(headers: &'a Headers, name: &str) -> Vec<&'a str> {
        headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| std::str::from_utf8(v).unwrap())
            .collect()
    }

    #[test]
    fn hop_by_hop_headers_stay_behind() {
        let incoming = h(&[
            ("connection", "keep-alive, X-Foo"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("Transfer-Encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-authenticate", "Basic"),
            ("trailer", "x-sum"),
            ("x-foo", "gone"),
            ("x-bar", "kept"),
            ("content-length", "12"),
            ("accept", "*/*"),
        ]);
        // `trailer` declares end-to-end trailer fields: it goes through.
        assert_eq!(
            names(&end_to_end(&incoming)),
            ["trailer", "x-bar", "content-length", "accept"]
        );
        assert_eq!(
            names(&response_headers(&incoming, false)),
            ["trailer", "x-bar", "content-length", "accept"]
        );
        assert_eq!(
            names(&response_headers(&incoming, true)),
            ["trailer", "x-bar", "accept"]
        );
        assert!(bodiless(true, 200) && bodiless(false, 204) && bodiless(false, 304));
        assert!(!bodiless(false, 200));
    }

    #[test]
    fn forwarded_headers_are_built() {
        let incoming = h(&[
            ("host", "gate.example"),
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "ftp"),
            ("x-forwarded-host", "spoofed"),
            ("x-tip-verdict", "benign; zone=green"),
            ("x-tip-gate", "fail-open"),
            ("connection", "close"),
            ("cookie", "a=b"),
        ]);
        let f = Forwarding {
            client: Some(ip("203.0.113.7")),
            chain_is_the_client_header: false,
            proto: "https",
            host: Some("gate.example"),
            verdict: Some((SoarVerdict::Benign, Zone::Green)),
            fail_open: false,
        };
        let out = request_headers(&incoming, &f);
        assert_eq!(
            get(&out, "x-forwarded-for"),
            ["1.1.1.1, 10.0.0.1, 203.0.113.7"]
        );
        assert_eq!(get(&out, "x-forwarded-proto"), ["https"]);
        assert_eq!(get(&out, "x-forwarded-host"), ["gate.example"]);
        assert_eq!(get(&out, "x-tip-verdict"), ["benign; zone=green"]);
        assert!(get(&out, "x-tip-gate").is_empty());
        assert!(get(&out, "host").is_empty() && get(&out, "connection").is_empty());
        assert_eq!(get(&out, "cookie"), ["a=b"]);
        // Fail open, no address: the client's own chain is kept as it came.
        let f = Forwarding {
            client: None,
            chain_is_the_client_header: false,
            proto: "http",
            host: None,
            verdict: None,
            fail_open: true,
        };
        let out = request_headers(
            &h(&[("x-forwarded-for", "1.1.1.1"), ("x-tip-verdict", "benign")]),
            &f,
        );
        assert_eq!(get(&out, "x-forwarded-for"), ["1.1.1.1"]);
        assert_eq!(get(&out, "x-tip-gate"), ["fail-open"]);
        assert!(get(&out, "x-tip-verdict").is_empty() && get(&out, "x-forwarded-host").is_empty());
        let out = request_headers(
            &[],
            &Forwarding {
                client: Some(ip("2001:db8::1")),
                proto: "http",
                ..Default::default()
            },
        );
        assert_eq!(get(&out, "x-forwarded-for"), ["2001:db8::1"]);
        // Regression (issue 12): when x-forwarded-for is the client-address
        // header, the chain already ends with the gate's peer; the client it
        // decided on is not appended again.
        let out = request_headers(
            &h(&[("x-forwarded-for", "8.8.8.8, 127.0.0.2")]),
            &Forwarding {
                client: Some(ip("8.8.8.8")),
                chain_is_the_client_header: true,
                proto: "http",
                ..Default::default()
            },
        );
        assert_eq!(get(&out, "x-forwarded-for"), ["8.8.8.8, 127.0.0.2"]);
        // `te: trailers` is passed on as itself; any other `te` stays behind.
        let f = Forwarding::default();
        let with = request_headers(&h(&[("te", "gzip, Trailers;q=1")]), &f);
        assert_eq!(get(&with, "te"), ["trailers"]);
        assert!(get(&request_headers(&h(&[("te", "gzip")]), &f), "te").is_empty());
    }

    #[test]
    fn origin_paths_join_the_prefix() {
        assert_eq!(origin_path("", Some("/a/b?x=1&y")), "/a/b?x=1&y");
        assert_eq!(origin_path("/base", Some("/a?x=1")), "/base/a?x=1");
        assert_eq!(origin_path("/base", Some("/")), "/base/");
        assert_eq!(origin_path("/base", None), "/base/");
        assert_eq!(origin_path("", None), "/");
        assert_eq!(origin_path("/base", Some("?q")), "/base/?q");
        assert_eq!(origin_path("", Some("*")), "*");
        let s = settings(&[("TIP_GATE_ORIGIN", "http://o/base/")]);
        assert_eq!(origin_path(&s.origin.path_prefix, Some("/x")), "/base/x");
    }
}
