//! The lookup flow, free of IO: parse the address, answer reserved ones
//! locally, build the request, send it through a [`Transport`], and turn the
//! answer into a verdict or report. The component plugs in wasi-http; tests
//! plug in a fake.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::answers::{AnswerStore, KeyValue, QuotaGate, StoreError, Stored, utc_timestamp};
use crate::bindings::{EnrichError, Report, Settings, Verdict, VerdictSource};
use crate::config::{Config, EnvLookup, Purpose};
use crate::error::{Error, parse_retry_after, status_error};
use crate::ip::{SpecialBlock, parse_ip, special_block};
use crate::request::build_request;
use crate::response::{VerdictSections, parse_answer};
use crate::schedule::NOT_SENT;
use crate::schedule::{self, Next};
use crate::secrets::Secrets;
use crate::settings;
use crate::transport::{HttpResponse, Transport};
use crate::verdict;

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
    /// An answer from the store.
    Stored(Stored),
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

/// Why an answer means the quota ran out, for the quota entry.
fn exhausted_reason(sections: &VerdictSections) -> String {
    let l = sections.license_info.as_ref();
    format!(
        "LicenseInfo: DayRequests {} of DayQuota {}",
        l.and_then(|l| l.day_requests).unwrap_or_default(),
        l.and_then(|l| l.day_quota).unwrap_or_default()
    )
}

fn to_verdict(ip: IpAddr, found: &Found, config: &Config) -> Verdict {
    match found {
        Found::Local(block) => verdict::reserved_locally(ip, *block, &config.verdict_map),
        Found::Missing => verdict::not_found(ip, &config.verdict_map),
        Found::Answer(sections, _) => verdict::from_sections(ip, sections, &config.verdict_map),
        Found::Stored(stored) => {
            let mut v = match &stored.sections {
                Some(sections) => verdict::from_sections(ip, sections, &config.verdict_map),
                None => verdict::not_found(ip, &config.verdict_map),
            };
            v.source = VerdictSource::Cache;
            v.fetched_at = Some(utc_timestamp(stored.fetched_at_ms));
            v
        }
    }
}

/// The lookup entry points over any transport, with settings resolved against
/// an environment and an optional answer store.
pub struct Client<'a> {
    transport: &'a mut dyn Transport,
    env: EnvLookup<'a>,
    store: Option<&'a mut dyn KeyValue>,
    store_failure: Option<StoreError>,
}

/// One distinct address of a call and what became of it.
struct Slot {
    ip: IpAddr,
    result: Option<Result<Found, Error>>,
    /// The lease window this call holds on the address, if any.
    lease: Option<u64>,
}

/// How long a lookup waiting for another's answer sleeps between looks:
/// from the first to the last, doubling.
const POLL_FIRST_MS: u64 = 20;
const POLL_LAST_MS: u64 = 250;

impl<'a> Client<'a> {
    /// A client over `transport`, reading unset settings from `env`, no store.
    pub fn new(transport: &'a mut dyn Transport, env: EnvLookup<'a>) -> Self {
        Client {
            transport,
            env,
            store: None,
            store_failure: None,
        }
    }

    /// Keeps answers, quota cool-downs and leases in `store`.
    pub fn with_store(mut self, store: &'a mut dyn KeyValue) -> Self {
        self.store = Some(store);
        self
    }

    /// The last failure of the store, if a call met one (the calls went on
    /// without it).
    pub fn store_failure(&self) -> Option<&StoreError> {
        self.store_failure.as_ref()
    }

    fn config(&self, settings: &Settings, purpose: Purpose) -> Result<Config, EnrichError> {
        Config::resolve(settings, self.env, purpose).map_err(|e| {
            let key = (self.env)(settings::API_KEY.env);
            e.into_wit(&Secrets::of_key(key.as_deref()))
        })
    }

    /// Looks every input up: invalid ones fail, reserved ones are answered
    /// locally, stored ones from the store, equal addresses once, the rest
    /// through the scheduler (unless the quota is cooling down), one lookup
    /// per address across every user of the store (leases). One result per
    /// input, in order.
    fn fetch_many(
        &mut self,
        config: &Config,
        inputs: &[String],
        purpose: Purpose,
    ) -> Vec<Result<(IpAddr, Found), Error>> {
        let Client {
            transport,
            store,
            store_failure,
            ..
        } = self;
        let transport: &mut dyn Transport = &mut **transport;
        let started_ms = transport.now_ms();
        let wall = transport.now_unix_ms();
        // Without a wall clock, entries cannot be dated: no store.
        let kv = match wall {
            Some(_) => store.as_deref_mut().map(|kv| -> &mut dyn KeyValue { kv }),
            None => None,
        };
        let mut answers = AnswerStore::new(kv, config);
        let keep = purpose == Purpose::Verdict && answers.keeps_answers();

        // One slot per distinct address; each input points at its slot.
        let mut slots: Vec<Slot> = Vec::new();
        let mut slot_of: HashMap<IpAddr, usize> = HashMap::new();
        let mut per_input: Vec<Result<usize, Error>> = Vec::with_capacity(inputs.len());
        for input in inputs {
            per_input.push(parse_ip(input).map_err(Error::from).map(|ip| {
                *slot_of.entry(ip).or_insert_with(|| {
                    slots.push(Slot {
                        ip,
                        result: None,
                        lease: None,
                    });
                    slots.len() - 1
                })
            }));
        }

        let mut open: Vec<usize> = Vec::new();
        for (index, slot) in slots.iter_mut().enumerate() {
            if !config.query_reserved
                && let Some(block) = special_block(slot.ip)
            {
                slot.result = Some(Ok(Found::Local(block)));
                continue;
            }
            if keep && let Some(hit) = answers.get(slot.ip, wall.unwrap_or_default()) {
                slot.result = Some(Ok(Found::Stored(hit)));
                continue;
            }
            open.push(index);
        }

        let mut run = Run {
            transport,
            config,
            purpose,
            answers: &mut answers,
            slots: &mut slots,
            keep,
            started_ms,
        };
        if !open.is_empty() {
            run.resolve(open);
        }
        *store_failure = answers.failure().cloned().or(store_failure.take());

        per_input
            .into_iter()
            .map(|slot| {
                let index = slot?;
                match slots.get(index) {
                    Some(Slot {
                        ip,
                        result: Some(result),
                        ..
                    }) => result.clone().map(|found| (*ip, found)),
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
            Found::Local(_) | Found::Missing | Found::Stored(_) => String::new(),
        };
        Ok(Report {
            verdict,
            sections_json,
        })
    }
}

/// The addresses of one call that the store did not answer, on their way
/// through the quota gate, the leases and the scheduler.
struct Run<'r, 's> {
    transport: &'r mut dyn Transport,
    config: &'r Config,
    purpose: Purpose,
    answers: &'r mut AnswerStore<'s>,
    slots: &'r mut Vec<Slot>,
    keep: bool,
    started_ms: u64,
}

impl Run<'_, '_> {
    fn wall_ms(&mut self) -> u64 {
        self.transport.now_unix_ms().unwrap_or_default()
    }

    fn fail(&mut self, indices: &[usize], error: &Error) {
        for &i in indices {
            if let Some(slot) = self.slots.get_mut(i) {
                slot.result = Some(Err(error.clone()));
            }
        }
    }

    /// The slots of `indices` still without an outcome.
    fn unresolved(&self, indices: &[usize]) -> Vec<usize> {
        indices
            .iter()
            .copied()
            .filter(|&i| self.slots.get(i).is_some_and(|s| s.result.is_none()))
            .collect()
    }

    /// Passes the quota gate, then sends or waits for every slot in `open`.
    fn resolve(&mut self, open: Vec<usize>) {
        let now = self.wall_ms();
        let mut waiting = Vec::new();
        let open = match self.answers.quota_gate(now) {
            QuotaGate::Open => open,
            QuotaGate::Closed(message) => {
                self.fail(&open, &Error::QuotaCooldown(message));
                return;
            }
            QuotaGate::Probe => {
                // One request finds out whether the quota is back.
                let Some((&first, rest)) = open.split_first() else {
                    return;
                };
                waiting = self.lease_and_send(&[first]);
                let back = match self.slots.get(first).and_then(|s| s.result.as_ref()) {
                    Some(Ok(Found::Answer(sections, _))) => !quota_exhausted(sections),
                    Some(Ok(Found::Missing | Found::Stored(_))) => true,
                    _ => false,
                };
                if back {
                    self.answers.clear_quota();
                    rest.to_vec()
                } else {
                    let now = self.wall_ms();
                    let message = self.answers.quota_cooling(now).unwrap_or_else(|| {
                        "the request quota ran out earlier, and the probe of whether it is back got no answer; nothing else was sent; the next lookup probes again".to_owned()
                    });
                    self.fail(rest, &Error::QuotaCooldown(message));
                    Vec::new()
                }
            }
        };
        waiting.extend(self.lease_and_send(&open));
        self.wait_for_others(waiting);
    }

    /// Takes the lease on each slot (when answers are kept), sends those it
    /// holds, and returns those another lookup holds.
    fn lease_and_send(&mut self, indices: &[usize]) -> Vec<usize> {
        let mut mine = Vec::new();
        let mut theirs = Vec::new();
        for &i in indices {
            if !self.keep {
                mine.push(i);
                continue;
            }
            let now = self.wall_ms();
            let Some(slot) = self.slots.get(i) else {
                continue;
            };
            let ip = slot.ip;
            match self.answers.acquire(ip, now) {
                Some(window) => {
                    // Another lookup may have stored the answer just before.
                    if let Some(hit) = self.answers.get(ip, now) {
                        self.answers.release(ip, window);
                        if let Some(slot) = self.slots.get_mut(i) {
                            slot.result = Some(Ok(Found::Stored(hit)));
                        }
                        continue;
                    }
                    if let Some(slot) = self.slots.get_mut(i) {
                        slot.lease = Some(window);
                    }
                    mine.push(i);
                }
                None => theirs.push(i),
            }
        }
        self.send(&mine);
        theirs
    }

    /// Waits for the answers of lookups that others hold, taking a lease
    /// over when its holder's time is up, within this call's deadline.
    fn wait_for_others(&mut self, mut waiting: Vec<usize>) {
        let deadline = self
            .started_ms
            .saturating_add(u64::from(self.config.deadline_ms));
        let mut pause = POLL_FIRST_MS;
        let lease_ms = self.answers.lease_ms();
        let mut window = self.wall_ms() / lease_ms;
        while !waiting.is_empty() {
            let now = self.transport.now_ms();
            if now >= deadline {
                let error = Error::Timeout(format!(
                    "another lookup of this address held its lease and gave no answer within the deadline of {} ms",
                    self.config.deadline_ms
                ));
                self.fail(&waiting, &error);
                return;
            }
            self.transport
                .wait(Some(now.saturating_add(pause).min(deadline)));
            pause = pause.saturating_mul(2).min(POLL_LAST_MS);
            let wall = self.wall_ms();
            for &i in &waiting {
                let Some(ip) = self.slots.get(i).map(|s| s.ip) else {
                    continue;
                };
                if let Some(hit) = self.answers.get(ip, wall)
                    && let Some(slot) = self.slots.get_mut(i)
                {
                    slot.result = Some(Ok(Found::Stored(hit)));
                }
            }
            waiting = self.unresolved(&waiting);
            if waiting.is_empty() {
                return;
            }
            // A holder that ran out of quota stops every waiter too (read
            // only: a waiter never takes the probe).
            if let Some(message) = self.answers.quota_cooling(wall) {
                self.fail(&waiting, &Error::QuotaCooldown(message));
                return;
            }
            let now_window = wall / lease_ms;
            if now_window != window {
                window = now_window;
                // The holder's time may be up: whoever takes the lease sends.
                waiting = self.lease_and_send(&waiting);
                pause = POLL_FIRST_MS;
            }
        }
    }

    /// Sends the slots of `indices` through the scheduler, keeping answers
    /// and quota entries in the store and releasing leases.
    fn send(&mut self, indices: &[usize]) {
        let mut pending: Vec<usize> = Vec::new();
        let mut requests = Vec::new();
        for &i in indices {
            let Some(slot) = self.slots.get_mut(i) else {
                continue;
            };
            match build_request(self.config, slot.ip) {
                Ok(request) => {
                    pending.push(i);
                    requests.push(request);
                }
                Err(e) => slot.result = Some(Err(e)),
            }
        }
        if requests.is_empty() {
            return;
        }
        let now_unix = self.transport.now_unix_secs();
        // What is left of this call's deadline.
        let elapsed = self.transport.now_ms().saturating_sub(self.started_ms);
        let mut policy = self.config.policy();
        policy.deadline_ms =
            u32::try_from(u64::from(policy.deadline_ms).saturating_sub(elapsed).max(1))
                .unwrap_or(policy.deadline_ms);
        let mut outcomes: Vec<(usize, Result<Found, Error>)> = Vec::with_capacity(pending.len());
        let (config, purpose) = (self.config, self.purpose);
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
            outcomes.push((index, found));
            next
        };
        schedule::run(
            self.transport,
            requests,
            self.config.limits(),
            policy,
            &mut on_final,
        );
        let wall = self.wall_ms();
        for (index, found) in outcomes {
            let Some(ip) = self.slots.get(index).map(|s| s.ip) else {
                continue;
            };
            match &found {
                Ok(Found::Answer(sections, _)) => {
                    if self.keep {
                        self.answers.put(ip, Some(sections), wall);
                    }
                    if quota_exhausted(sections) {
                        self.answers.record_quota(&exhausted_reason(sections), wall);
                    }
                }
                Ok(Found::Missing) if self.keep => self.answers.put(ip, None, wall),
                Err(e @ Error::QuotaExceeded { excerpt }) if !excerpt.starts_with(NOT_SENT) => {
                    let reason = self.config.secrets().scrub(&e.to_string()).into_owned();
                    self.answers.record_quota(&reason, wall);
                }
                _ => {}
            }
            if let Some(slot) = self.slots.get_mut(index) {
                if let Some(window) = slot.lease.take() {
                    self.answers.release(ip, window);
                }
                slot.result = Some(found);
            }
        }
        // A lease whose lookup gave no outcome (it cannot happen) is freed too.
        for &i in indices {
            if let Some(slot) = self.slots.get_mut(i)
                && let Some(window) = slot.lease.take()
            {
                let ip = slot.ip;
                self.answers.release(ip, window);
            }
        }
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
