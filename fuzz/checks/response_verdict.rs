//! Shared by the `response_verdict` fuzz target and `tests/properties.rs`:
//! one API answer (status, optional `Retry-After`, body) taken from arbitrary
//! bytes, through the core's parse and verdict derivation and through the
//! whole client flow (`Client::enrich` and `Client::lookup`) over a canned
//! transport. Panics when an invariant the core promises does not hold.
//!
//! Input layout: byte 0 picks the status, byte 1 holds flags, byte 2 is the
//! length of the `Retry-After` value that follows; the rest is the body.

use std::net::IpAddr;

use tip_enrich::HttpRequest;
use tip_enrich::VerdictMap;
use tip_enrich::bindings::{
    ApiFlavour, EnrichError, Report, Settings, SoarVerdict, Verdict, VerdictSource, Zone,
    ZoneVerdict,
};
use tip_enrich::json::error_message;
use tip_enrich::parse_answer;
use tip_enrich::settings::empty as empty_settings;
use tip_enrich::{Client, HttpResponse, Limits, MemoryKv, SendError, Ticket, Transport};
use tip_enrich::{SUSPICIOUS_SCORES, from_sections};
use tip_enrich::{error_kind as kind, excerpt};

/// The API key the client holds: it must never come back out.
pub const KEY: &str = "fz-KEY-7c1d2e9";

/// Statuses picked by byte 0 values 192 and up.
const STATUSES: [u16; 24] = [
    400, 401, 403, 404, 414, 429, 500, 502, 503, 504, 100, 101, 199, 201, 204, 206, 301, 302, 304,
    407, 418, 451, 599, 999,
];

/// Addresses looked up (none reserved), picked by flag bits 2-3.
const IPS: [&str; 4] = [
    "45.9.148.108",
    " ::ffff:45.9.148.108 ",
    "2a0e:1c80:1::1",
    "2A0E:1C80:0001:0000::0001",
];

/// One fuzz input, decoded.
#[derive(Debug)]
pub struct Case<'a> {
    pub status: u16,
    pub retry_after: Option<&'a [u8]>,
    pub flavour: ApiFlavour,
    pub ip: &'static str,
    pub retries: u32,
    pub lenient_map: bool,
    pub body: &'a [u8],
}

impl<'a> Case<'a> {
    pub fn decode(data: &'a [u8]) -> Case<'a> {
        let byte = |i: usize| data.get(i).copied().unwrap_or(0);
        let (sel, flags, ra_len) = (byte(0), byte(1), usize::from(byte(2)));
        let status = match sel {
            0..=159 => 200,
            160..=191 => 404,
            s => STATUSES[usize::from(s - 192) % STATUSES.len()],
        };
        let rest = data.get(3..).unwrap_or_default();
        let (retry_after, body) = if flags & 1 == 1 {
            let n = ra_len.min(rest.len());
            (Some(&rest[..n]), &rest[n..])
        } else {
            (None, rest)
        };
        Case {
            status,
            retry_after,
            flavour: if flags & 2 == 0 {
                ApiFlavour::Tip
            } else {
                ApiFlavour::Opentip
            },
            ip: IPS[usize::from((flags >> 2) & 3)],
            retries: u32::from((flags >> 4) & 3) % 3,
            lenient_map: flags & 0x40 != 0,
            body,
        }
    }

    /// The bytes that decode to this case (for seeds built from recordings).
    pub fn encode(status: u16, retry_after: Option<&[u8]>, body: &[u8]) -> Vec<u8> {
        let sel = match status {
            200 => 0,
            404 => 160,
            s => {
                192 + STATUSES
                    .iter()
                    .position(|x| *x == s)
                    .unwrap_or(STATUSES.len() - 1) as u8
            }
        };
        let ra = retry_after.unwrap_or_default();
        let ra = &ra[..ra.len().min(255)];
        let mut out = vec![sel, u8::from(retry_after.is_some()), ra.len() as u8];
        out.extend_from_slice(ra);
        out.extend_from_slice(body);
        out
    }

    fn settings(&self) -> Settings {
        let mut s = empty_settings();
        s.api = Some(self.flavour);
        s.retries = Some(self.retries);
        s.cache_ttl_secs = Some(0);
        if self.lenient_map {
            s.verdict_map = Some(vec![
                ZoneVerdict {
                    zone: Zone::Yellow,
                    verdict: SoarVerdict::Benign,
                },
                ZoneVerdict {
                    zone: Zone::Orange,
                    verdict: SoarVerdict::Benign,
                },
                ZoneVerdict {
                    zone: Zone::Red,
                    verdict: SoarVerdict::Suspicious,
                },
            ]);
        }
        s
    }
}

/// A transport that answers every request at once with one canned response.
pub struct Canned {
    response: HttpResponse,
    pending: Vec<Ticket>,
    next: Ticket,
    clock_ms: u64,
    pub sent: u32,
}

impl Canned {
    pub fn new(response: HttpResponse) -> Canned {
        Canned {
            response,
            pending: Vec::new(),
            next: 0,
            clock_ms: 1_000,
            sent: 0,
        }
    }
}

impl Transport for Canned {
    fn start(&mut self, _: &HttpRequest, limits: &Limits) -> Ticket {
        assert!(limits.total_timeout_ms >= 1, "an attempt with no time");
        self.next += 1;
        self.sent += 1;
        self.pending.push(self.next);
        self.next
    }
    fn wait(&mut self, until_ms: Option<u64>) -> Vec<(Ticket, Result<HttpResponse, SendError>)> {
        if self.pending.is_empty() {
            let until = until_ms.expect("waiting with nothing in flight and no time to wake");
            assert!(
                until > self.clock_ms,
                "asked to wake in the past: a busy wait"
            );
            self.clock_ms = until;
            return Vec::new();
        }
        self.clock_ms += 5;
        let response = self.response.clone();
        self.pending
            .drain(..)
            .map(|t| (t, Ok(response.clone())))
            .collect()
    }
    fn now_ms(&mut self) -> u64 {
        self.clock_ms
    }
    fn now_unix_secs(&mut self) -> Option<u64> {
        Some(1_800_000_000 + self.clock_ms / 1000)
    }
    fn random_u64(&mut self) -> u64 {
        0x9e37_79b9_7f4a_7c15
    }
}

fn env(name: &str) -> Option<String> {
    (name == "TIP_API_KEY").then(|| KEY.to_owned())
}

/// The verdict rules: bounded score, the suspicious band, the score floor.
pub fn check_verdict(v: &Verdict, ip: IpAddr, default_map: bool) {
    assert_eq!(
        v.ip,
        ip.to_string(),
        "the verdict names the normalised address"
    );
    assert!(v.threat_score.is_none_or(|t| t <= 100), "score over 100");
    assert_eq!(
        v.suspicious,
        v.threat_score
            .is_some_and(|t| SUSPICIOUS_SCORES.contains(&t))
    );
    if v.threat_score.is_some_and(|t| t >= 50) {
        assert_ne!(v.verdict, SoarVerdict::Benign, "score floor broken");
    }
    if default_map && v.zone == Zone::Red {
        assert_eq!(v.verdict, SoarVerdict::Malicious);
    }
    if default_map && v.zone == Zone::Grey {
        assert_eq!(v.verdict, SoarVerdict::Unknown);
    }
    assert!(
        v.related_reports.iter().all(|r| !r.id.trim().is_empty()),
        "a related report without an ID"
    );
    for (i, c) in v.categories.iter().enumerate() {
        assert!(!v.categories[..i].contains(c), "duplicate category {c:?}");
    }
    assert!(
        v.country_code
            .as_deref()
            .is_none_or(|c| !c.trim().is_empty()),
        "blank country code"
    );
    assert!(v.reserved_block.is_none(), "a queried address is not local");
    assert_ne!(v.as_number, Some(0), "AS 0 is no AS");
    for (what, text) in [
        ("as_organization", &v.as_organization),
        ("network_name", &v.network_name),
    ] {
        assert!(
            text.as_deref()
                .is_none_or(|t| !t.is_empty() && t.trim() == t && !t.contains(['\r', '\n'])),
            "{what} is not one trimmed line: {text:?}"
        );
    }
    assert!(
        v.as_organization
            .as_deref()
            .is_none_or(|o| !(o.len() == 2 && o.bytes().all(|b| b.is_ascii_alphabetic()))),
        "a country code read as the AS organization"
    );
}

fn check_error(e: &EnrichError, status: u16) {
    let text = format!("{e:?}");
    assert!(!text.contains(KEY), "the key leaked into an error: {text}");
    match e {
        EnrichError::RateLimited(r) => {
            assert!(r.retry_after_secs.is_none_or(|s| s <= 86_400));
        }
        EnrichError::Upstream(u) => {
            assert_eq!(u.status, status, "upstream error names another status");
        }
        _ => {}
    }
    let message = error_message(e);
    assert!(
        !message.chars().any(char::is_control),
        "control characters in an error message: {message:?}"
    );
    assert!(
        message.chars().count() <= 400,
        "error message of {} characters",
        message.chars().count()
    );
    let expected = match status {
        200 => "malformed-response",
        400 | 414 => "bad-request",
        401 => "unauthorized",
        403 => "quota-exceeded",
        429 => "rate-limited",
        _ => "upstream",
    };
    assert_eq!(kind(e), expected, "status {status} gave {e:?}");
}

fn check_report(r: &Report, verdict: &Verdict) {
    assert_eq!(
        &r.verdict, verdict,
        "lookup and enrich disagree on the verdict"
    );
    let text = format!("{r:?}");
    assert!(!text.contains(KEY), "the key leaked into a report");
    if !r.sections_json.is_empty() {
        // The text handed to callers is the body the verdict was read from.
        let again = parse_answer(r.sections_json.as_bytes())
            .expect("sections-json parses as an answer")
            .into_verdict_sections();
        let ip: IpAddr = verdict.ip.parse().expect("an address");
        assert_eq!(
            &from_sections(ip, &again, &VerdictMap::default()).zone,
            &verdict.zone,
            "sections-json and the verdict disagree"
        );
    }
}

/// A found answer kept in the answer store reads back as the same verdict
/// (the AS context included), from the store, without a request.
fn check_stored(verdict: &Verdict, response: &HttpResponse, settings: &Settings, ip: &str) {
    let mut kept = settings.clone();
    kept.cache_ttl_secs = None;
    let mut kv = MemoryKv::new(16);
    let mut t = Canned::new(response.clone());
    let first = Client::new(&mut t, &env)
        .with_store(&mut kv)
        .enrich(ip, &kept)
        .expect("the answer enrich read once");
    assert_eq!(&first, verdict, "the store changed the first verdict");
    let sent = t.sent;
    let again = Client::new(&mut t, &env)
        .with_store(&mut kv)
        .enrich(ip, &kept)
        .expect("a stored answer");
    assert_eq!(t.sent, sent, "a stored answer was asked for again");
    assert_eq!(again.source, VerdictSource::Cache);
    // The store keeps no LicenseInfo: a stored answer has no quota of its own.
    let of_the_api = |v: &Verdict| Verdict {
        source: VerdictSource::Api,
        fetched_at: None,
        quota: None,
        ..v.clone()
    };
    assert_eq!(
        of_the_api(&again),
        of_the_api(verdict),
        "the stored answer reads back as another verdict"
    );
}

/// The whole check for one input.
pub fn check(data: &[u8]) {
    let case = Case::decode(data);

    // The parse and the verdict rules, directly.
    if let Ok(answer) = parse_answer(case.body) {
        let sections = answer.into_verdict_sections();
        let again = parse_answer(case.body)
            .expect("a body parsed once parses again")
            .into_verdict_sections();
        assert_eq!(sections, again, "parsing is not deterministic");
        let ip: IpAddr = "45.9.148.108".parse().expect("an address");
        let v = from_sections(ip, &sections, &VerdictMap::default());
        check_verdict(&v, ip, true);
    }
    let e = excerpt(case.body);
    assert!(e.chars().count() <= 121);
    assert!(!e.chars().any(char::is_control));

    // The whole flow, as the component runs it.
    let mut headers = vec![("content-type".to_owned(), b"application/json".to_vec())];
    if let Some(ra) = case.retry_after {
        headers.push(("retry-after".to_owned(), ra.to_vec()));
    }
    let response = HttpResponse {
        status: case.status,
        headers,
        body: case.body.to_vec(),
    };
    let settings = case.settings();
    let ip = tip_enrich::parse_ip(case.ip).expect("a valid address");
    let retryable = case.status == 429 || (500..=599).contains(&case.status);

    let mut t = Canned::new(response.clone());
    let enriched = Client::new(&mut t, &env).enrich(case.ip, &settings);
    assert!(t.sent >= 1, "no request for a public address");
    assert!(t.sent <= case.retries + 1, "{} requests", t.sent);
    if !retryable {
        assert_eq!(t.sent, 1, "status {} was retried", case.status);
    }
    match &enriched {
        Ok(v) => {
            assert!(
                case.status == 200 || case.status == 404,
                "status {} read as a verdict",
                case.status
            );
            check_verdict(v, ip, !case.lenient_map);
            assert_eq!(v.found, case.status == 200);
            assert!(
                !format!("{v:?}").contains(KEY),
                "the key leaked into a verdict"
            );
        }
        Err(e) => check_error(e, case.status),
    }

    if let (200, Ok(v)) = (case.status, &enriched) {
        check_stored(v, &response, &settings, case.ip);
    }

    let mut t = Canned::new(response);
    let report = Client::new(&mut t, &env).lookup(case.ip, &settings);
    match (&enriched, &report) {
        (Ok(v), Ok(r)) => check_report(r, v),
        (Err(a), Err(b)) => {
            check_error(b, case.status);
            assert_eq!(kind(a), kind(b), "enrich and lookup fail differently");
        }
        (Ok(_), Err(e)) => panic!("enrich succeeded but lookup failed: {e:?}"),
        (Err(e), Ok(_)) => panic!("lookup succeeded but enrich failed: {e:?}"),
    }
}
