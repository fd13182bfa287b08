//! The lookup flow, free of IO: parse the address, answer reserved ones
//! locally, build the request, send it through a [`Transport`], and turn the
//! answer into a verdict or report. The component plugs in wasi-http; tests
//! plug in a fake.

use std::net::IpAddr;

use crate::bindings::{EnrichError, Report, Settings, Verdict};
use crate::config::{Config, EnvLookup, Purpose};
use crate::error::{Error, parse_retry_after, scrub, scrub_bytes, status_error};
use crate::ip::{SpecialBlock, parse_ip, special_block};
use crate::lenient::with_secrets;
use crate::request::{HttpRequest, build_request};
use crate::response::{Sections, parse_answer};
use crate::verdict;

/// Time and size limits of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connect timeout, ms.
    pub connect_timeout_ms: u32,
    /// Time to response headers, ms.
    pub first_byte_timeout_ms: u32,
    /// Longest pause between body chunks, ms.
    pub between_bytes_timeout_ms: u32,
    /// End-to-end limit, headers and whole body, ms.
    pub total_timeout_ms: u32,
    /// Body cap, bytes.
    pub max_body_bytes: u32,
}

impl Config {
    /// The limits of one request.
    pub fn limits(&self) -> Limits {
        Limits {
            connect_timeout_ms: self.connect_timeout_ms.min(self.total_timeout_ms),
            first_byte_timeout_ms: self.first_byte_timeout_ms.min(self.total_timeout_ms),
            between_bytes_timeout_ms: self.between_bytes_timeout_ms.min(self.total_timeout_ms),
            total_timeout_ms: self.total_timeout_ms,
            max_body_bytes: self.max_body_bytes,
        }
    }
}

/// A received response: status, headers, and the whole body (within the cap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// HTTP status.
    pub status: u16,
    /// Header names (lower-case) and values.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First value of a header, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Sends one request. Implementations enforce every limit and return only
/// [`Error::Timeout`], [`Error::Transport`], [`Error::BodyTooLarge`] or
/// [`Error::Config`].
pub trait Transport {
    /// Sends `request` and reads the whole response.
    fn send(&mut self, request: &HttpRequest, limits: &Limits) -> Result<HttpResponse, Error>;
    /// Current Unix time in seconds, for `Retry-After` dates.
    fn now_unix_secs(&mut self) -> Option<u64>;
}

/// What a lookup found before it is shaped into a verdict or report.
#[derive(Debug)]
enum Found {
    /// A reserved address, answered locally.
    Local(SpecialBlock),
    /// HTTP 404.
    Missing,
    /// A 200 answer: the sections and the verbatim body.
    Answer(Box<Sections>, String),
}

/// Looks one address up.
fn fetch(
    transport: &mut dyn Transport,
    config: &Config,
    input: &str,
    purpose: Purpose,
) -> Result<(IpAddr, Found), Error> {
    let ip = parse_ip(input)?;
    if !config.query_reserved
        && let Some(block) = special_block(ip)
    {
        return Ok((ip, Found::Local(block)));
    }
    let request = build_request(config, ip)?;
    let response = transport.send(&request, &config.limits())?;
    match response.status {
        200 => {
            // A hostile server may echo the key: scrub it from the body, and
            // (JSON-escaped) from every string the parse reads.
            let secrets = config.secrets();
            let body = scrub_bytes(response.body, &secrets);
            let answer = with_secrets(&secrets, || parse_answer(&body))?;
            let sections = match purpose {
                Purpose::Verdict => Sections {
                    verdict: answer.into_verdict_sections(),
                    ..Sections::default()
                },
                Purpose::Report => answer.into_sections(),
            };
            let raw = match purpose {
                Purpose::Verdict => String::new(),
                Purpose::Report => raw_json(body, &secrets)?,
            };
            Ok((ip, Found::Answer(Box::new(sections), raw)))
        }
        404 => Ok((ip, Found::Missing)),
        status => {
            let retry_after = response
                .header("retry-after")
                .and_then(|v| parse_retry_after(v, transport.now_unix_secs()));
            Err(status_error(status, &response.body, retry_after))
        }
    }
}

/// The verbatim body as text. When it holds JSON escapes (which could spell
/// the key in a way the byte scrub cannot see) it is re-serialised from the
/// parsed value with every string scrubbed instead.
fn raw_json(body: Vec<u8>, secrets: &[&str]) -> Result<String, Error> {
    let text = String::from_utf8(body)
        .map_err(|_| Error::Malformed("the API answer is not UTF-8".into()))?;
    if secrets.is_empty() || !(text.contains("\\u") || text.contains("\\/")) {
        return Ok(text);
    }
    fn walk(v: &mut serde_json::Value, secrets: &[&str]) {
        match v {
            serde_json::Value::String(s) => *s = scrub(s, secrets),
            serde_json::Value::Array(items) => items.iter_mut().for_each(|i| walk(i, secrets)),
            serde_json::Value::Object(map) => {
                let entries = std::mem::take(map);
                for (k, mut val) in entries {
                    walk(&mut val, secrets);
                    map.insert(scrub(&k, secrets), val);
                }
            }
            _ => {}
        }
    }
    let mut value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|_| Error::Malformed("the API answer is not valid JSON".into()))?;
    walk(&mut value, secrets);
    Ok(value.to_string())
}

fn to_verdict(ip: IpAddr, found: &Found, config: &Config) -> Verdict {
    match found {
        Found::Local(block) => verdict::reserved_locally(ip, *block, &config.verdict_map),
        Found::Missing => verdict::not_found(ip, &config.verdict_map),
        Found::Answer(sections, _) => {
            verdict::from_sections(ip, &sections.verdict, &config.verdict_map)
        }
    }
}

/// The lookup entry points over any transport, with settings resolved against an environment.
pub struct Client<'a> {
    transport: &'a mut dyn Transport,
    env: EnvLookup<'a>,
}

impl<'a> Client<'a> {
    /// A client over `transport`, reading unset settings from `env`.
    pub fn new(transport: &'a mut dyn Transport, env: EnvLookup<'a>) -> Self {
        Client { transport, env }
    }

    fn config(&self, settings: &Settings, purpose: Purpose) -> Result<Config, EnrichError> {
        Config::resolve(settings, self.env, purpose).map_err(|e| {
            let key = settings
                .api_key
                .clone()
                .or_else(|| (self.env)("TIP_API_KEY"));
            e.into_wit(&key.as_deref().into_iter().collect::<Vec<_>>())
        })
    }

    fn verdict_with(&mut self, config: &Config, ip: &str) -> Result<Verdict, EnrichError> {
        fetch(self.transport, config, ip, Purpose::Verdict)
            .map(|(addr, found)| to_verdict(addr, &found, config))
            .map_err(|e| e.into_wit(&config.secrets()))
    }

    /// `enrich-with`.
    pub fn enrich(&mut self, ip: &str, settings: &Settings) -> Result<Verdict, EnrichError> {
        let config = self.config(settings, Purpose::Verdict)?;
        self.verdict_with(&config, ip)
    }

    /// `enrich-batch-with`: one result per input, in input order.
    pub fn enrich_batch(
        &mut self,
        ips: &[String],
        settings: &Settings,
    ) -> Vec<Result<Verdict, EnrichError>> {
        match self.config(settings, Purpose::Verdict) {
            Ok(config) => ips
                .iter()
                .map(|ip| self.verdict_with(&config, ip))
                .collect(),
            Err(e) => ips.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    /// `lookup-with`.
    pub fn lookup(&mut self, ip: &str, settings: &Settings) -> Result<Report, EnrichError> {
        let config = self.config(settings, Purpose::Report)?;
        let (addr, found) = fetch(self.transport, &config, ip, Purpose::Report)
            .map_err(|e| e.into_wit(&config.secrets()))?;
        let verdict = to_verdict(addr, &found, &config);
        let (sections, raw_json) = match found {
            Found::Answer(sections, raw) => (*sections, raw),
            Found::Local(_) | Found::Missing => (Sections::default(), String::new()),
        };
        Ok(Report {
            verdict,
            license_info: sections.verdict.license_info,
            zone: sections.verdict.zone,
            related_objects: sections.related_objects,
            ip_general_info: sections.verdict.ip_general_info,
            files_downloaded_from_ip: sections.files_downloaded_from_ip,
            hosted_urls: sections.hosted_urls,
            feed_masks: sections.feed_masks,
            ip_whois: sections.ip_whois,
            ip_dns_resolutions: sections.ip_dns_resolutions,
            ip_spam_info: sections.ip_spam_info,
            ip_phishing_info: sections.ip_phishing_info,
            data_feeds: sections.data_feeds,
            raw_json,
        })
    }
}
