//! The service's HTTP surface, free of IO: routing, request-body parsing,
//! the status of each error kind, and the answers. `component` (wasm32 only)
//! moves bytes between these functions and `wasi:http`.

use tip_enrich::bindings::{ApiFlavour, EnrichError, Verdict};
use tip_enrich::events::{self, Options as EventOptions};
use tip_enrich::json::{self, EcsError, EcsVerdict, ErrorLine, VerdictLine};
use tip_enrich::stix::{self, StixBundle};

/// Largest request body read (a batch of addresses).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// How long the guest waits for a whole request body from its host. Hosts
/// other than ours (`wasmtime serve`, Spin) hand the body over as the client
/// sends it, so a client that stalls would otherwise keep the instance
/// waiting for ever; `tip-enrich serve` reads the body itself first, with its
/// own `--body-timeout-secs`, so there the body is already in memory.
pub const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);
/// Most addresses in one `POST /v1/ip`.
pub const MAX_BATCH: usize = 10_000;

/// The shape of verdicts in an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The fields of a CLI line (the default).
    Native,
    /// Elastic Common Schema threat-enrichment fields (`?format=ecs`).
    Ecs,
    /// A STIX 2.1 bundle per verdict (`?format=stix`); errors keep the
    /// native error object. [`route`] leaves [`StixAt`] at its default; the
    /// component stamps it ([`Format::stamped`]) before answering.
    Stix(StixAt),
}

/// What a STIX bundle needs besides the verdict: the portal its references
/// point to and the time of writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StixAt {
    /// The API flavour of the service's settings.
    pub api: ApiFlavour,
    /// The wall clock, Unix ms.
    pub now_unix_ms: u64,
}

impl Default for StixAt {
    fn default() -> StixAt {
        StixAt {
            api: ApiFlavour::Tip,
            now_unix_ms: 0,
        }
    }
}

impl Format {
    /// `self`, with a STIX format's portal and time from `at` (called only
    /// for STIX, so the others read no clock and no settings).
    pub fn stamped(self, at: impl FnOnce() -> StixAt) -> Format {
        match self {
            Format::Stix(_) => Format::Stix(at()),
            other => other,
        }
    }
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /v1/ip/{ip}`: the address as given (percent-decoded).
    Verdict { ip: String, format: Format },
    /// `POST /v1/ip`: a JSON array of addresses in the body.
    Batch { format: Format },
    /// `POST /v1/events`: NDJSON events in the body (`?field=` repeatable,
    /// `?only=`).
    Events { options: EventOptions },
    /// `GET /healthz`.
    Health,
    /// A request the service answers without a lookup.
    Refused(Refusal),
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A path the service does not have.
    NotFound,
    /// A known path with another method; `allow` lists the methods it takes.
    MethodNotAllowed { allow: &'static str },
    /// `?format=` with a value other than `native`, `ecs` or `stix`.
    BadFormat(String),
    /// `?field=` or `?only=` of `POST /v1/events` that does not parse; the
    /// message says why.
    BadQuery(String),
}

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// `content-type`: `application/json`, or `application/x-ndjson` for events.
    pub content_type: &'static str,
    /// Headers besides `content-type`.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    fn json(status: u16, body: &impl serde::Serialize) -> Answer {
        Answer {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: json::to_vec(body),
        }
    }

    /// A service-level problem (no address involved): `{"error": {kind, message}}`.
    pub fn problem(status: u16, kind: &str, message: &str) -> Answer {
        Answer::json(status, &json::problem(kind, message))
    }
}

/// Decodes `%XX` escapes; `None` when the result is not UTF-8. A `%` not
/// followed by two hex digits is kept as it is.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |j: usize| bytes.get(j).and_then(|c| (*c as char).to_digit(16));
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                // Two hex digits make at most 0xff.
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn format_of(query: Option<&str>) -> Result<Format, String> {
    let mut format = Format::Native;
    for pair in query.unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "format" {
            format = match value {
                "ecs" => Format::Ecs,
                "stix" => Format::Stix(StixAt::default()),
                "native" | "" => Format::Native,
                other => return Err(other.chars().take(40).collect()),
            };
        }
    }
    Ok(format)
}

/// The options of `POST /v1/events`: `field` (repeatable, or a
/// comma-separated list; percent-encoded) and `only`.
fn event_options(query: Option<&str>) -> Result<EventOptions, String> {
    let mut fields = Vec::new();
    let mut only = None;
    for pair in query.unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(&value.replace('+', " "))
            .ok_or_else(|| format!("{key} is not UTF-8"))?;
        match key {
            "field" => fields.push(value),
            "only" => only = Some(value),
            _ => {}
        }
    }
    Ok(EventOptions {
        fields: events::parse_fields(&fields).map_err(|e| format!("field {e}"))?,
        only: match only {
            Some(list) => events::Only::parse(&list).map_err(|e| format!("only {e}"))?,
            None => events::Only::default(),
        },
    })
}

/// Routes a request by method and path-with-query.
pub fn route(method: &str, path_with_query: &str) -> Route {
    let (path, query) = match path_with_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_with_query, None),
    };
    let format = match format_of(query) {
        Ok(f) => f,
        Err(bad) => return Route::Refused(Refusal::BadFormat(bad)),
    };
    let get = method.eq_ignore_ascii_case("GET");
    let allow = |allow| Route::Refused(Refusal::MethodNotAllowed { allow });
    match path.trim_end_matches('/') {
        "/healthz" if get => Route::Health,
        "/healthz" => allow("GET"),
        "/v1/ip" if method.eq_ignore_ascii_case("POST") => Route::Batch { format },
        "/v1/ip" => allow("POST"),
        "/v1/events" if method.eq_ignore_ascii_case("POST") => match event_options(query) {
            Ok(options) => Route::Events { options },
            Err(why) => Route::Refused(Refusal::BadQuery(why)),
        },
        "/v1/events" => allow("POST"),
        p => match p.strip_prefix("/v1/ip/") {
            Some(ip) if !ip.contains('/') && !ip.is_empty() => {
                if !get {
                    return allow("GET");
                }
                match percent_decode(ip) {
                    Some(ip) => Route::Verdict { ip, format },
                    // Not UTF-8: pass it on as is, the core calls it invalid.
                    None => Route::Verdict {
                        ip: ip.to_owned(),
                        format,
                    },
                }
            }
            _ => Route::Refused(Refusal::NotFound),
        },
    }
}

impl Refusal {
    /// The answer: 404, 405 with `Allow`, or 400.
    pub fn answer(&self) -> Answer {
        match self {
            Refusal::NotFound => Answer::problem(
                404,
                "not-found",
                "no such route: try GET /v1/ip/{ip}, POST /v1/ip, POST /v1/events or GET /healthz",
            ),
            Refusal::MethodNotAllowed { allow } => {
                let mut a = Answer::problem(
                    405,
                    "method-not-allowed",
                    &format!("this route takes {allow}"),
                );
                a.headers.push(("allow".into(), (*allow).into()));
                a
            }
            Refusal::BadFormat(bad) => Answer::problem(
                400,
                "bad-format",
                &format!(
                    "format must be native, ecs or stix, not {}",
                    json::to_string(bad)
                ),
            ),
            Refusal::BadQuery(why) => Answer::problem(400, "bad-query", why),
        }
    }
}

/// The HTTP status for an error kind: 400 for a bad address, 429 when rate
/// limited, 504 on timeout, 500 when the service is misconfigured, and 502
/// when the API refused (401/403 included: the caller's request was fine,
/// the service's upstream credentials or quota were not) or failed.
pub fn status_for(e: &EnrichError) -> u16 {
    match e {
        EnrichError::InvalidIp(_) => 400,
        EnrichError::RateLimited(_) => 429,
        EnrichError::Timeout(_) => 504,
        EnrichError::Config(_) => 500,
        EnrichError::BadRequest(_)
        | EnrichError::Unauthorized(_)
        | EnrichError::QuotaExceeded(_)
        | EnrichError::Upstream(_)
        | EnrichError::Transport(_)
        | EnrichError::MalformedResponse(_) => 502,
    }
}

/// One element of an answer: the same shapes, from the same writer, as a
/// CLI line.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Item<'a> {
    Verdict(Box<VerdictLine<'a>>),
    Error(ErrorLine<'a>),
    EcsVerdict(Box<EcsVerdict<'a>>),
    EcsError(Box<EcsError<'a>>),
    Stix(Box<StixBundle<'a>>),
}

fn item<'a>(input: &'a str, result: &'a Result<Verdict, EnrichError>, format: Format) -> Item<'a> {
    match (result, format) {
        (Ok(v), Format::Native) => Item::Verdict(Box::new(json::verdict_line(v))),
        (Ok(v), Format::Ecs) => Item::EcsVerdict(Box::new(json::ecs_verdict(v, None))),
        (Ok(v), Format::Stix(at)) => {
            Item::Stix(Box::new(stix::stix_bundle(v, at.api, at.now_unix_ms)))
        }
        (Err(e), Format::Native | Format::Stix(_)) => Item::Error(json::error_line(input, e)),
        (Err(e), Format::Ecs) => Item::EcsError(Box::new(json::ecs_error(input, e, None))),
    }
}

/// The answer to `GET /v1/ip/{ip}`.
pub fn verdict_answer(
    input: &str,
    result: &Result<Verdict, EnrichError>,
    format: Format,
) -> Answer {
    let body = item(input, result, format);
    match result {
        Ok(_) => Answer::json(200, &body),
        Err(e) => {
            let mut a = Answer::json(status_for(e), &body);
            if let EnrichError::RateLimited(r) = e
                && let Some(secs) = r.retry_after_secs
            {
                a.headers.push(("retry-after".into(), secs.to_string()));
            }
            a
        }
    }
}

/// Reads the body of `POST /v1/ip`: a JSON array of strings, at most
/// [`MAX_BATCH`] of them. The error is the answer to give.
pub fn parse_batch(body: &[u8]) -> Result<Vec<String>, Answer> {
    let bad = |message: &str| Answer::problem(400, "bad-body", message);
    let items: Vec<Box<serde_json::value::RawValue>> = serde_json::from_slice(body)
        .map_err(|_| bad("the body must be a JSON array of IP address strings"))?;
    if items.len() > MAX_BATCH {
        return Err(Answer::problem(
            413,
            "too-many",
            &format!("at most {MAX_BATCH} addresses per request"),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            serde_json::from_str::<String>(item.get())
                .map_err(|_| bad(&format!("element {i} is not a string")))
        })
        .collect()
}

/// The answer to `POST /v1/ip`: 200 and one element per input, in order;
/// each element is a verdict or an error object like a CLI line.
pub fn batch_answer(
    inputs: &[String],
    results: &[Result<Verdict, EnrichError>],
    format: Format,
) -> Answer {
    let items: Vec<Item<'_>> = inputs
        .iter()
        .zip(results)
        .map(|(input, result)| item(input, result, format))
        .collect();
    Answer::json(200, &items)
}

/// The answer to `POST /v1/events`: 200 and the body's lines, in order, one
/// per line, each event with its enrichments (`tip_enrich::events`); the
/// distinct addresses of the whole body go to `lookup` at once.
pub fn events_answer(
    body: &[u8],
    options: &EventOptions,
    lookup: impl FnOnce(&[String]) -> Vec<events::Lookup>,
) -> Answer {
    let (lines, newlines): (Vec<&[u8]>, Vec<&[u8]>) = events::split_lines(body).unzip();
    let (outputs, _) = events::enrich_lines(&lines, options, lookup);
    let mut out = Vec::with_capacity(body.len() + body.len() / 2);
    for (line, newline) in outputs.iter().zip(&newlines) {
        out.extend_from_slice(line);
        out.extend_from_slice(newline);
    }
    Answer {
        status: 200,
        content_type: "application/x-ndjson",
        headers: Vec::new(),
        body: out,
    }
}

/// The answer to a body over [`MAX_BODY_BYTES`].
pub fn body_too_large() -> Answer {
    Answer::problem(
        413,
        "too-large",
        &format!("the body must be at most {MAX_BODY_BYTES} bytes"),
    )
}

/// The answer to a body not complete within [`BODY_DEADLINE`].
/// (No `connection: close` here: wasi-http hosts forbid a guest that header
/// and manage the connection themselves.)
pub fn body_timed_out() -> Answer {
    Answer::problem(
        408,
        "body-timeout",
        &format!(
            "the body was not complete within {} s",
            BODY_DEADLINE.as_secs()
        ),
    )
}

/// The answer to `GET /healthz`: always 200 while the service runs;
/// `configured` says whether the settings resolve (an API key is set and
/// every `TIP_*` value is valid), and `problem` why not. No request is made.
pub fn health_answer(config: Result<(), EnrichError>) -> Answer {
    Answer::json(200, &json::health(env!("CARGO_PKG_VERSION"), &config))
}

/// Merges runtime configuration (`wasi:config/store` pairs, keys `tip_*`)
/// over the environment (the core's, shared with the IP gate).
pub use tip_enrich::settings::merge_settings;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use tip_enrich::bindings::{RateLimit, SoarVerdict, UpstreamError, VerdictSource, Zone};
    use tip_enrich::error_kind as kind;

    fn verdict(ip: &str) -> Verdict {
        Verdict {
            ip: ip.into(),
            zone: Zone::Green,
            threat_score: Some(0),
            has_apt: false,
            related_reports: vec![],
            suspicious: false,
            verdict: SoarVerdict::Benign,
            found: true,
            status: None,
            country_code: None,
            as_number: None,
            as_organization: None,
            network_name: None,
            categories: vec![],
            hits_count: None,
            first_seen: None,
            quota: None,
            source: VerdictSource::Api,
            fetched_at: None,
            reserved_block: None,
        }
    }

    fn body(a: &Answer) -> Value {
        serde_json::from_slice(&a.body).unwrap()
    }

    #[test]
    fn routes() {
        assert_eq!(
            route("GET", "/v1/ip/1.2.3.4"),
            Route::Verdict {
                ip: "1.2.3.4".into(),
                format: Format::Native
            }
        );
        assert_eq!(
            route("get", "/v1/ip/2a0e%3A1c80%3a1::1?format=ecs"),
            Route::Verdict {
                ip: "2a0e:1c80:1::1".into(),
                format: Format::Ecs
            }
        );
        assert_eq!(
            route("POST", "/v1/ip/"),
            Route::Batch {
                format: Format::Native
            }
        );
        assert_eq!(route("GET", "/healthz"), Route::Health);
        assert_eq!(
            route("DELETE", "/v1/ip/1.2.3.4"),
            Route::Refused(Refusal::MethodNotAllowed { allow: "GET" })
        );
        assert_eq!(
            route("GET", "/v1/ip"),
            Route::Refused(Refusal::MethodNotAllowed { allow: "POST" })
        );
        assert_eq!(
            route("GET", "/v1/ip/a/b"),
            Route::Refused(Refusal::NotFound)
        );
        assert_eq!(route("GET", "/"), Route::Refused(Refusal::NotFound));
        assert_eq!(
            route("GET", "/v1/ip/1.2.3.4?format=xml"),
            Route::Refused(Refusal::BadFormat("xml".into()))
        );
        assert_eq!(
            route("POST", "/v1/ip?format=stix"),
            Route::Batch {
                format: Format::Stix(StixAt::default())
            }
        );
    }

    #[test]
    fn stix_answers_are_bundles_and_errors_stay_native() {
        let at = StixAt {
            api: ApiFlavour::Opentip,
            now_unix_ms: 1_796_146_902_123,
        };
        let format = Format::Stix(StixAt::default()).stamped(|| at);
        assert_eq!(format, Format::Stix(at));
        let mut read = false;
        let ecs = Format::Ecs.stamped(|| {
            read = true;
            at
        });
        assert_eq!((ecs, read), (Format::Ecs, false), "no clock read for ecs");
        let v = verdict("1.2.3.4");
        let a = verdict_answer("1.2.3.4", &Ok(v.clone()), format);
        assert_eq!(a.status, 200);
        assert_eq!(
            a.body,
            json::to_vec(&stix::stix_bundle(&v, at.api, at.now_unix_ms))
        );
        assert_eq!(body(&a)["type"], "bundle");
        let inputs = vec!["1.2.3.4".to_string(), "nope".to_string()];
        let results = vec![Ok(v), Err(EnrichError::InvalidIp("nope".into()))];
        let b = body(&batch_answer(&inputs, &results, format));
        assert_eq!(b[0]["type"], "bundle");
        assert_eq!(b[1]["error"]["kind"], "invalid-ip");
        assert_eq!(b[1]["ip"], "nope");
        let bad = route("GET", "/v1/ip/1.2.3.4?format=xml");
        let Route::Refused(refusal) = bad else {
            panic!("{bad:?}")
        };
        let message = body(&refusal.answer())["error"]["message"].clone();
        assert_eq!(message, "format must be native, ecs or stix, not \"xml\"");
    }

    #[test]
    fn percent_decoding_keeps_stray_percents_and_rejects_non_utf8() {
        assert_eq!(
            percent_decode("fe80::1%25eth0").as_deref(),
            Some("fe80::1%eth0")
        );
        assert_eq!(percent_decode("100%").as_deref(), Some("100%"));
        assert_eq!(percent_decode("%zz").as_deref(), Some("%zz"));
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(
            route("GET", "/v1/ip/%ff"),
            Route::Verdict {
                ip: "%ff".into(),
                format: Format::Native
            }
        );
    }

    #[test]
    fn error_statuses() {
        let cases = [
            (EnrichError::InvalidIp("x".into()), 400),
            (EnrichError::Unauthorized("x".into()), 502),
            (EnrichError::QuotaExceeded("x".into()), 502),
            (EnrichError::Timeout("x".into()), 504),
            (EnrichError::Config("x".into()), 500),
            (
                EnrichError::Upstream(UpstreamError {
                    status: 500,
                    message: "x".into(),
                }),
                502,
            ),
        ];
        for (e, status) in cases {
            let a = verdict_answer("1.2.3.4", &Err(e.clone()), Format::Native);
            assert_eq!(a.status, status, "{e:?}");
            assert_eq!(body(&a)["error"]["kind"], kind(&e));
            assert_eq!(body(&a)["ip"], "1.2.3.4");
        }
    }

    #[test]
    fn rate_limited_answers_429_with_retry_after() {
        let e = EnrichError::RateLimited(RateLimit {
            retry_after_secs: Some(30),
            message: "slow down".into(),
        });
        let a = verdict_answer("1.2.3.4", &Err(e), Format::Native);
        assert_eq!(a.status, 429);
        assert_eq!(
            a.headers,
            vec![("retry-after".to_string(), "30".to_string())]
        );
        assert_eq!(body(&a)["error"]["retry_after_secs"], 30);
    }

    #[test]
    fn verdict_answer_is_the_cli_line() {
        let v = verdict("1.2.3.4");
        let a = verdict_answer("1.2.3.4", &Ok(v.clone()), Format::Native);
        assert_eq!(a.status, 200);
        assert_eq!(
            a.body,
            tip_enrich::json::to_vec(&tip_enrich::json::verdict_line(&v))
        );
        let ecs = verdict_answer("1.2.3.4", &Ok(v), Format::Ecs);
        assert_eq!(
            body(&ecs)["threat"]["enrichments"][0]["indicator"]["ip"],
            "1.2.3.4"
        );
    }

    #[test]
    fn batch_body_rules() {
        assert_eq!(
            parse_batch(br#"["1.2.3.4", "::1"]"#).unwrap(),
            vec!["1.2.3.4", "::1"]
        );
        for bad in [&b"{}"[..], b"[1]", b"not json", b""] {
            let a = parse_batch(bad).unwrap_err();
            assert_eq!(a.status, 400, "{}", String::from_utf8_lossy(bad));
        }
        let many = serde_json::to_vec(&vec!["1.1.1.1"; MAX_BATCH + 1]).unwrap();
        assert_eq!(parse_batch(&many).unwrap_err().status, 413);
    }

    #[test]
    fn events_route_takes_field_and_only() {
        let Route::Events { options } = route(
            "POST",
            "/v1/events?field=user.ip&field=a.ip%2Cb.ip&only=all",
        ) else {
            panic!()
        };
        let fields: Vec<&str> = options.fields.iter().map(|f| f.as_str()).collect();
        assert_eq!(fields, ["user.ip", "a.ip", "b.ip"]);
        assert!(options.only.admits(SoarVerdict::Benign));
        assert_eq!(
            route("POST", "/v1/events/"),
            Route::Events {
                options: EventOptions::default()
            }
        );
        assert_eq!(
            route("PUT", "/v1/events"),
            Route::Refused(Refusal::MethodNotAllowed { allow: "POST" })
        );
        let Route::Refused(refusal) = route("POST", "/v1/events?only=evil") else {
            panic!()
        };
        let a = refusal.answer();
        assert_eq!(
            (a.status, &body(&a)["error"]["kind"]),
            (400, &Value::from("bad-query"))
        );
    }

    #[test]
    fn events_answer_is_ndjson_line_for_line() {
        let body = b"{\"source\":{\"ip\":\"1.2.3.4\"}}\r\nnot json\n\n{\"a\":1}";
        let mut asked = Vec::new();
        let a = events_answer(body, &EventOptions::default(), |ips| {
            asked = ips.to_vec();
            ips.iter()
                .map(|ip| {
                    let mut v = verdict(ip);
                    v.verdict = SoarVerdict::Malicious;
                    Ok(v)
                })
                .collect()
        });
        assert_eq!(asked, ["1.2.3.4"]);
        assert_eq!((a.status, a.content_type), (200, "application/x-ndjson"));
        let text = String::from_utf8(a.body).unwrap();
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with(r#"{"source":{"ip":"1.2.3.4"},"threat":{"enrichments":[{"#));
        assert!(lines[0].ends_with('\r'));
        assert_eq!(&lines[1..], ["not json", "", r#"{"a":1}"#]);
    }

    #[test]
    fn a_body_too_large_or_too_slow_is_a_problem_answer() {
        for (answer, status, kind) in [
            (body_too_large(), 413, "too-large"),
            (body_timed_out(), 408, "body-timeout"),
        ] {
            assert_eq!(answer.status, status);
            let v: Value = serde_json::from_slice(&answer.body).unwrap();
            assert_eq!(v["error"]["kind"], kind, "{v}");
        }
        assert!(BODY_DEADLINE.as_secs() >= 1, "a deadline in seconds");
    }

    #[test]
    fn batch_answer_keeps_order_and_mixes_errors() {
        let inputs = vec!["1.2.3.4".to_string(), "nope".to_string()];
        let results = vec![
            Ok(verdict("1.2.3.4")),
            Err(EnrichError::InvalidIp("nope".into())),
        ];
        let a = batch_answer(&inputs, &results, Format::Native);
        assert_eq!(a.status, 200);
        let b = body(&a);
        assert_eq!(b[0]["ip"], "1.2.3.4");
        // Native verdicts keep the documented field order.
        let text = String::from_utf8(a.body.clone()).unwrap();
        assert!(
            text.starts_with(r#"[{"ip":"1.2.3.4","zone":"green","threat_score":0"#),
            "{text}"
        );
        assert_eq!(b[1]["error"]["kind"], "invalid-ip");
    }

    #[test]
    fn health_reports_configuration_without_secrets() {
        let a = health_answer(Ok(()));
        assert_eq!(body(&a)["configured"], true);
        let a = health_answer(Err(EnrichError::Config("no API key".into())));
        assert_eq!(a.status, 200);
        assert_eq!(body(&a)["configured"], false);
        assert_eq!(body(&a)["problem"]["kind"], "config");
    }
}
