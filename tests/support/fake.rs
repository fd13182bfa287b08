//! A simulated transport for native tests: answers from the bundled
//! recordings or a responder closure, with a simulated clock and latency, so
//! concurrency, backoff and deadlines are tested exactly and without sleeping.

#![allow(dead_code)]

use std::collections::HashMap;

use tip_enrich::Error;
use tip_enrich::HttpRequest;
use tip_enrich::{HttpResponse, Limits, SendError, Ticket, Transport};

type Responder = Box<dyn FnMut(&HttpRequest, u32) -> Result<HttpResponse, SendError>>;

pub struct Fake {
    pub answers: HashMap<String, HttpResponse>,
    pub responder: Option<Responder>,
    pub fail_with: Option<SendError>,
    /// Every request started, in order.
    pub sent: Vec<HttpRequest>,
    pub limits_seen: Vec<Limits>,
    /// Simulated time to answer.
    pub latency_ms: u64,
    pub clock_ms: u64,
    pub max_in_flight: usize,
    in_flight: Vec<(Ticket, u64, Result<HttpResponse, SendError>)>,
    next: Ticket,
    attempts: HashMap<String, u32>,
}

/// Matching key: URL with query parameters sorted.
pub fn key(url: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    params.sort();
    format!("{base}?{}", params.join("&"))
}

pub fn response(status: u16, body: &str) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![],
        body: body.as_bytes().to_vec(),
    }
}

impl Fake {
    pub fn empty() -> Fake {
        Fake {
            answers: HashMap::new(),
            responder: None,
            fail_with: None,
            sent: Vec::new(),
            limits_seen: Vec::new(),
            latency_ms: 10,
            clock_ms: 1_000,
            max_in_flight: 0,
            in_flight: Vec::new(),
            next: 0,
            attempts: HashMap::new(),
        }
    }

    /// Answers from tests/recordings.
    pub fn bundled() -> Fake {
        let dir = super::expect::tests_dir().join("recordings");
        let mut fake = Fake::empty();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let t: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let url = t["request"]["url"].as_str().unwrap();
            let resp = t["response"].as_table().unwrap();
            let body = match resp.get("body_file").and_then(|b| b.as_str()) {
                Some(f) => std::fs::read(dir.join(f)).unwrap(),
                None => resp
                    .get("body")
                    .and_then(|b| b.as_str())
                    .unwrap_or("")
                    .as_bytes()
                    .to_vec(),
            };
            let headers = resp
                .get("headers")
                .and_then(|h| h.as_table())
                .map(|h| {
                    h.iter()
                        .map(|(k, v)| (k.to_lowercase(), v.as_str().unwrap().as_bytes().to_vec()))
                        .collect()
                })
                .unwrap_or_default();
            let status = resp["status"].as_integer().unwrap() as u16;
            fake.answers.insert(
                key(url),
                HttpResponse {
                    status,
                    headers,
                    body,
                },
            );
        }
        fake
    }

    /// Answers every request with `f(request, attempt)` (attempt counts from 1 per URL).
    pub fn responding(
        f: impl FnMut(&HttpRequest, u32) -> Result<HttpResponse, SendError> + 'static,
    ) -> Fake {
        Fake {
            responder: Some(Box::new(f)),
            ..Fake::empty()
        }
    }

    fn answer(
        &mut self,
        request: &HttpRequest,
        limits: &Limits,
    ) -> Result<HttpResponse, SendError> {
        if let Some(e) = self.fail_with.clone() {
            return Err(e);
        }
        let url = request.url();
        let attempt = {
            let n = self.attempts.entry(url.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let response = match &mut self.responder {
            Some(f) => f(request, attempt)?,
            None => self.answers.get(&key(&url)).cloned().ok_or_else(|| {
                SendError::fatal(Error::Transport(format!("denied: no recording for {url}")))
            })?,
        };
        if response.body.len() as u64 > u64::from(limits.max_body_bytes) {
            return Err(SendError::fatal(Error::BodyTooLarge {
                limit: u64::from(limits.max_body_bytes),
            }));
        }
        Ok(response)
    }
}

impl Transport for Fake {
    fn start(&mut self, request: &HttpRequest, limits: &Limits) -> Ticket {
        self.next += 1;
        self.sent.push(request.clone());
        self.limits_seen.push(*limits);
        let total = u64::from(limits.total_timeout_ms);
        let (done_at, outcome) = if self.latency_ms > total {
            let timeout = Error::Timeout(format!("no answer within {total} ms"));
            (
                self.clock_ms + total,
                Err(SendError::before_response(timeout)),
            )
        } else {
            (
                self.clock_ms + self.latency_ms,
                self.answer(request, limits),
            )
        };
        self.in_flight.push((self.next, done_at, outcome));
        self.max_in_flight = self.max_in_flight.max(self.in_flight.len());
        self.next
    }

    fn wait(&mut self, until_ms: Option<u64>) -> Vec<(Ticket, Result<HttpResponse, SendError>)> {
        let Some(next_done) = self.in_flight.iter().map(|(_, at, _)| *at).min() else {
            if let Some(until) = until_ms {
                self.clock_ms = self.clock_ms.max(until);
            }
            return Vec::new();
        };
        if let Some(until) = until_ms.filter(|u| *u < next_done) {
            self.clock_ms = self.clock_ms.max(until);
            return Vec::new();
        }
        self.clock_ms = self.clock_ms.max(next_done);
        let now = self.clock_ms;
        let (done, rest): (Vec<_>, Vec<_>) =
            self.in_flight.drain(..).partition(|(_, at, _)| *at <= now);
        self.in_flight = rest;
        done.into_iter().map(|(t, _, o)| (t, o)).collect()
    }

    fn now_ms(&mut self) -> u64 {
        self.clock_ms
    }

    fn now_unix_secs(&mut self) -> Option<u64> {
        Some(1_800_000_000 + self.clock_ms / 1000)
    }

    fn now_unix_ms(&mut self) -> Option<u64> {
        Some(1_800_000_000_000 + self.clock_ms)
    }

    fn random_u64(&mut self) -> u64 {
        0x9e37_79b9_7f4a_7c15
    }
}
