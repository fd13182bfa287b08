//! The lookup flow, free of IO: parse the address, answer reserved ones
//! locally, build the request, send it through a [`Transport`], and turn the
//! answer into a verdict or report. The component plugs in wasi-http; tests
//! plug in a fake.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::bindings::{EnrichError, Report, Settings, Verdict};
use crate::cache::{Cache, Cached};
use crate::config::{Config, EnvLookup, Purpose};
use crate::error::{Error, parse_retry_after, status_error};
use crate::ip::{SpecialBlock, parse_ip, special_block};
use crate::request::build_request;
use crate::response::{VerdictSections, parse_answer};
use crate::schedule::{self, Next};
use crate::secrets::Secrets;
use crate::settings::{self, api_name};
use crate::transport::{HttpResponse, Transport};
use crate::verdict;

impl Config {
    fn cache_key(&self, ip: IpAddr) -> String {
        Cache::key(
            api_name(self.api),
            &self.base_url.to_url(),
            &ip.to_string(),
            &self.sections,
        )
    }
}

/// What a lookup found before it is shaped into a verdict or report.
#[derive(Debug, Clone)]
enum Found {
    /// A reserved address, answered locally.
    Local(SpecialBlock),
    /// HTTP 404.
    Missing,
    /// A 200 answer: the verdict's sections, and for a report the body as
    /// text (scrubbed; empty for a verdict).
    Answer(Box<VerdictSections>, String),
}

/// Turns a lookup's final outcome into what was found.
fn interpret(
    config: &Config,
    purpose: Purpose,
    outcome: Result<HttpResponse, Error>,
    now_unix: Option<u64>,
) -> Result<Found, Error> {
    let response = outcome?;
    match response.status {
        200 => {
            // A hostile server may echo the key, even JSON-escaped: the body
            // is scrubbed once, before it is parsed, so the verdict and the
            // report's JSON text are both clean.
            let body = config.secrets().scrub_body(response.body)?;
            let sections = parse_answer(&body)?.into_verdict_sections();
            // For a report, the body as one line of JSON text. Bytes that are
            // not UTF-8 (skipped by the parse inside strings it ignores) read
            // as U+FFFD.
            let raw = match purpose {
                Purpose::Verdict => String::new(),
                Purpose::Report => crate::json::compact(&String::from_utf8_lossy(&body)),
            };
            Ok(Found::Answer(Box::new(sections), raw))
        }
        404 => Ok(Found::Missing),
        status => {
            let retry_after = response
                .header("retry-after")
                .and_then(|v| parse_retry_after(v, now_unix));
            // Scrubbed before the excerpt is cut, so no `Error` ever holds
            // an echoed key (not even before `into_wit`).
            let body = config.secrets().scrub_bytes(response.body);
            Err(status_error(status, &body, retry_after))
        }
    }
}

/// Whether an answer says the day's quota is used up.
fn quota_exhausted(sections: &VerdictSections) -> bool {
    sections.license_info.as_ref().is_some_and(|l| {
        matches!((l.day_requests, l.day_quota), (Some(used), Some(quota)) if quota > 0 && used >= quota)
    })
}

fn to_verdict(ip: IpAddr, found: &Found, config: &Config) -> Verdict {
    match found {
        Found::Local(block) => verdict::reserved_locally(ip, *block, &config.verdict_map),
        Found::Missing => verdict::not_found(ip, &config.verdict_map),
        Found::Answer(sections, _) => verdict::from_sections(ip, sections, &config.verdict_map),
    }
}

/// The lookup entry points over any transport, with settings resolved against
/// an environment and an optional verdict cache.
pub struct Client<'a> {
    transport: &'a mut dyn Transport,
    env: EnvLookup<'a>,
    cache: Option<&'a mut Cache>,
}

impl<'a> Client<'a> {
    /// A client over `transport`, reading unset settings from `env`, no cache.
    pub fn new(transport: &'a mut dyn Transport, env: EnvLookup<'a>) -> Self {
        Client {
            transport,
            env,
            cache: None,
        }
    }

    /// Uses `cache` for verdict answers.
    pub fn with_cache(mut self, cache: &'a mut Cache) -> Self {
        self.cache = Some(cache);
        self
    }

    fn config(&self, settings: &Settings, purpose: Purpose) -> Result<Config, EnrichError> {
        Config::resolve(settings, self.env, purpose).map_err(|e| {
            let key = (self.env)(settings::API_KEY.env);
            e.into_wit(&Secrets::of_key(key.as_deref()))
        })
    }

    /// Looks every input up: invalid ones fail, reserved ones are answered
    /// locally, cached ones from the cache, equal addresses once, the rest
    /// through the scheduler. One result per input, in order.
    fn fetch_many(
        &mut self,
        config: &Config,
        inputs: &[String],
        purpose: Purpose,
    ) -> Vec<Result<(IpAddr, Found), Error>> {
        let Client {
            transport, cache, ..
        } = self;
        let now_ms = transport.now_ms();
        let now_unix = transport.now_unix_secs();
        let use_cache = purpose == Purpose::Verdict && config.cache_ttl_secs > 0;

        // One slot per distinct address; each input points at its slot.
        let mut slots: Vec<(IpAddr, Option<Result<Found, Error>>)> = Vec::new();
        let mut slot_of: HashMap<IpAddr, usize> = HashMap::new();
        let mut per_input: Vec<Result<usize, Error>> = Vec::with_capacity(inputs.len());
        for input in inputs {
            per_input.push(parse_ip(input).map_err(Error::from).map(|ip| {
                *slot_of.entry(ip).or_insert_with(|| {
                    slots.push((ip, None));
                    slots.len() - 1
                })
            }));
        }

        let mut pending: Vec<usize> = Vec::new();
        let mut requests = Vec::new();
        for (index, (ip, result)) in slots.iter_mut().enumerate() {
            if !config.query_reserved
                && let Some(block) = special_block(*ip)
            {
                *result = Some(Ok(Found::Local(block)));
                continue;
            }
            if use_cache
                && let Some(hit) = cache
                    .as_deref()
                    .and_then(|c| c.get(&config.cache_key(*ip), now_ms))
            {
                *result = Some(Ok(match hit {
                    Cached::Answer(sections) => Found::Answer(sections.clone(), String::new()),
                    Cached::NotFound => Found::Missing,
                }));
                continue;
            }
            match build_request(config, *ip) {
                Ok(request) => {
                    pending.push(index);
                    requests.push(request);
                }
                Err(e) => *result = Some(Err(e)),
            }
        }

        if !requests.is_empty() {
            let ttl_ms = u64::from(config.cache_ttl_secs) * 1000;
            let mut on_final = |job: usize, outcome: Result<HttpResponse, Error>| -> Next {
                let Some(&index) = pending.get(job) else {
                    return Next::Continue;
                };
                let found = interpret(config, purpose, outcome, now_unix);
                let next = match &found {
                    Err(Error::QuotaExceeded { .. }) => Next::StopQuota,
                    Ok(Found::Answer(sections, _)) if quota_exhausted(sections) => Next::StopQuota,
                    _ => Next::Continue,
                };
                if let Some((ip, slot)) = slots.get_mut(index) {
                    if use_cache && let Some(cache) = cache.as_deref_mut() {
                        let value = match &found {
                            Ok(Found::Answer(sections, _)) => {
                                Some(Cached::Answer(sections.clone()))
                            }
                            Ok(Found::Missing) => Some(Cached::NotFound),
                            _ => None,
                        };
                        if let Some(value) = value {
                            cache.put(config.cache_key(*ip), value, now_ms, ttl_ms);
                        }
                    }
                    *slot = Some(found);
                }
                next
            };
            schedule::run(
                &mut **transport,
                requests,
                config.limits(),
                config.policy(),
                &mut on_final,
            );
        }

        per_input
            .into_iter()
            .map(|slot| {
                let index = slot?;
                match slots.get(index) {
                    Some((ip, Some(result))) => result.clone().map(|found| (*ip, found)),
                    _ => Err(Error::Internal("a lookup ended without an outcome")),
                }
            })
            .collect()
    }

    /// `enrich`.
    pub fn enrich(&mut self, ip: &str, settings: &Settings) -> Result<Verdict, EnrichError> {
        let mut results = self.enrich_batch(std::slice::from_ref(&ip.to_owned()), settings);
        results.pop().unwrap_or_else(|| {
            Err(Error::Internal("a batch of one gave no result").into_wit(&Secrets::default()))
        })
    }

    /// `enrich-batch`: one result per input, in input order.
    pub fn enrich_batch(
        &mut self,
        ips: &[String],
        settings: &Settings,
    ) -> Vec<Result<Verdict, EnrichError>> {
        let config = match self.config(settings, Purpose::Verdict) {
            Ok(config) => config,
            Err(e) => return ips.iter().map(|_| Err(e.clone())).collect(),
        };
        self.fetch_many(&config, ips, Purpose::Verdict)
            .into_iter()
            .map(|r| {
                r.map(|(addr, found)| to_verdict(addr, &found, &config))
                    .map_err(|e| e.into_wit(config.secrets()))
            })
            .collect()
    }

    /// `lookup`: the verdict and the answer's JSON text.
    pub fn lookup(&mut self, ip: &str, settings: &Settings) -> Result<Report, EnrichError> {
        let config = self.config(settings, Purpose::Report)?;
        let (addr, found) = self
            .fetch_many(
                &config,
                std::slice::from_ref(&ip.to_owned()),
                Purpose::Report,
            )
            .pop()
            .unwrap_or(Err(Error::Internal("a lookup of one gave no result")))
            .map_err(|e| e.into_wit(config.secrets()))?;
        let verdict = to_verdict(addr, &found, &config);
        let sections_json = match found {
            Found::Answer(_, raw) => raw,
            Found::Local(_) | Found::Missing => String::new(),
        };
        Ok(Report {
            verdict,
            sections_json,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::empty as empty_settings;

    #[test]
    fn error_excerpts_are_scrubbed_before_any_error_holds_them() {
        const KEY: &str = "client-secret-key-5e6f7a8b";
        let env = |name: &str| (name == "TIP_API_KEY").then(|| KEY.to_owned());
        let config = Config::resolve(&empty_settings(), &env, Purpose::Verdict).unwrap();
        for status in [400, 401, 403, 429, 500] {
            let response = HttpResponse {
                status,
                headers: vec![],
                body: format!("rejected key {KEY}").into_bytes(),
            };
            let e = interpret(&config, Purpose::Verdict, Ok(response), None).unwrap_err();
            let text = format!("{e:?} {e}");
            assert!(!text.contains(KEY), "{status}: {text}");
            assert!(text.contains("rejected key"), "{status}: {text}");
        }
    }
}
