//! Batches natively, on a simulated clock: concurrency and round trips,
//! de-duplication, retries and backoff, Retry-After, deadlines, quota stops
//! and the verdict cache. Times here are simulated, so they are exact.

// Test code may unwrap and index (what the workspace lints forbid in the core).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unreachable,
    clippy::string_slice
)]

#[path = "support/expect.rs"]
mod expect;
#[path = "support/fake.rs"]
mod fake;

use fake::{Fake, response};
use tip_enrich::MemoryKv;
use tip_enrich::bindings::{EnrichError, Settings, SoarVerdict, Zone};
use tip_enrich::settings::empty as empty_settings;
use tip_enrich::{Client, HttpResponse, SendError};
use tip_enrich::{Error, error_kind as kind};

fn env(name: &str) -> Option<String> {
    (name == "TIP_API_KEY").then(|| "batch-key-0123".to_owned())
}

fn ips(n: usize) -> Vec<String> {
    (1..=n)
        .map(|i| format!("45.9.{}.{}", i / 250, i % 250 + 1))
        .collect()
}

fn settings(concurrency: u32) -> Settings {
    let mut s = empty_settings();
    s.concurrency = Some(concurrency);
    s
}

fn green() -> Fake {
    Fake::responding(|_, _| {
        Ok(response(
            200,
            r#"{"Zone":"Green","IpGeneralInfo":{"ThreatScore":1}}"#,
        ))
    })
}

fn with_header(mut r: HttpResponse, name: &str, value: &str) -> HttpResponse {
    r.headers.push((name.to_owned(), value.as_bytes().to_vec()));
    r
}

#[test]
fn a_batch_takes_ceil_n_over_concurrency_round_trips() {
    for (concurrency, rounds) in [(1u32, 40u64), (8, 5), (32, 2), (64, 1)] {
        let mut t = green();
        t.latency_ms = 50;
        let start = t.clock_ms;
        let inputs = ips(40);
        let results = Client::new(&mut t, &env).enrich_batch(&inputs, &settings(concurrency));
        assert_eq!(
            t.max_in_flight,
            (concurrency as usize).min(40),
            "c={concurrency}"
        );
        assert_eq!(t.clock_ms - start, rounds * 50, "c={concurrency}");
        assert_eq!(t.sent.len(), 40);
        for (result, ip) in results.iter().zip(&inputs) {
            assert_eq!(
                &result.as_ref().unwrap().ip,
                ip,
                "results stay in input order"
            );
        }
    }
}

#[test]
fn inputs_that_normalise_alike_are_looked_up_once() {
    let mut t = green();
    let inputs: Vec<String> = [
        "8.8.8.8",
        " 8.8.8.8",
        "::ffff:8.8.8.8",
        "8.8.4.4",
        "2001:DB8::1",
        "2001:db8:0::1",
        "2a00::1",
        "2A00:0::1",
    ]
    .map(String::from)
    .to_vec();
    let results = Client::new(&mut t, &env).enrich_batch(&inputs, &settings(8));
    assert_eq!(
        t.sent.len(),
        3,
        "8.8.8.8, 8.8.4.4 and 2a00::1 (2001:db8::1 is reserved)"
    );
    let got: Vec<&str> = results
        .iter()
        .map(|r| r.as_ref().unwrap().ip.as_str())
        .collect();
    assert_eq!(
        got,
        [
            "8.8.8.8",
            "8.8.8.8",
            "8.8.8.8",
            "8.8.4.4",
            "2001:db8::1",
            "2001:db8::1",
            "2a00::1",
            "2a00::1"
        ]
    );
}

#[test]
fn retry_after_seconds_is_honoured() {
    let mut t = Fake::responding(|_, attempt| {
        Ok(match attempt {
            1 => with_header(response(429, "slow down"), "retry-after", "3"),
            _ => response(200, r#"{"Zone":"Red"}"#),
        })
    });
    let start = t.clock_ms;
    let v = Client::new(&mut t, &env)
        .enrich("8.8.8.8", &empty_settings())
        .unwrap();
    assert_eq!(v.zone, Zone::Red);
    assert_eq!(t.sent.len(), 2);
    assert_eq!(
        t.clock_ms - start,
        10 + 3_000 + 10,
        "latency, Retry-After, latency"
    );
}

#[test]
fn retry_after_http_date_is_honoured() {
    // The fake's wall clock is 1_800_000_000 + clock/1000 seconds.
    let mut t = Fake::responding(|_, attempt| {
        Ok(match attempt {
            1 => {
                let at =
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000 + 1 + 5);
                with_header(
                    response(429, ""),
                    "retry-after",
                    &httpdate::fmt_http_date(at),
                )
            }
            _ => response(200, r#"{"Zone":"Red"}"#),
        })
    });
    let start = t.clock_ms;
    Client::new(&mut t, &env)
        .enrich("8.8.8.8", &empty_settings())
        .unwrap();
    assert_eq!(t.sent.len(), 2);
    assert_eq!(t.clock_ms - start, 10 + 5_000 + 10);
}

#[test]
fn a_retry_after_beyond_the_cap_ends_the_lookup_at_once() {
    let mut t = Fake::responding(|_, _| Ok(with_header(response(429, ""), "retry-after", "3600")));
    let e = Client::new(&mut t, &env)
        .enrich("8.8.8.8", &empty_settings())
        .unwrap_err();
    assert!(
        matches!(&e, EnrichError::RateLimited(r) if r.retry_after_secs == Some(3600)),
        "{e:?}"
    );
    assert_eq!(t.sent.len(), 1);
}

#[test]
fn five_xx_is_retried_with_growing_backoff_then_reported() {
    let mut t = Fake::responding(|_, _| Ok(response(503, "busy")));
    let start = t.clock_ms;
    let e = Client::new(&mut t, &env)
        .enrich("8.8.8.8", &empty_settings())
        .unwrap_err();
    assert!(
        matches!(&e, EnrichError::Upstream(u) if u.status == 503),
        "{e:?}"
    );
    assert_eq!(t.sent.len(), 3, "the first attempt and two retries");
    // Backoffs of 125..=250 and 250..=500 ms (equal jitter) between three 10 ms attempts.
    let elapsed = t.clock_ms - start;
    assert!(
        (30 + 125 + 250..=30 + 250 + 500).contains(&elapsed),
        "{elapsed}"
    );

    let mut t = Fake::responding(|_, _| Ok(response(503, "busy")));
    let mut s = empty_settings();
    s.retries = Some(0);
    Client::new(&mut t, &env).enrich("8.8.8.8", &s).unwrap_err();
    assert_eq!(t.sent.len(), 1, "retries = 0");
}

#[test]
fn client_errors_are_never_retried() {
    for (status, want) in [
        (400, "bad-request"),
        (401, "unauthorized"),
        (403, "quota-exceeded"),
        (414, "bad-request"),
    ] {
        let mut t = Fake::responding(move |_, _| Ok(response(status, "no")));
        let e = Client::new(&mut t, &env)
            .enrich("8.8.8.8", &empty_settings())
            .unwrap_err();
        assert_eq!(kind(&e), want);
        assert_eq!(t.sent.len(), 1, "{status} retried");
    }
    let mut t = Fake::responding(|_, _| Ok(response(404, "")));
    assert!(
        !Client::new(&mut t, &env)
            .enrich("8.8.8.8", &empty_settings())
            .unwrap()
            .found
    );
    assert_eq!(t.sent.len(), 1);
}

#[test]
fn failures_before_a_response_are_retried_others_are_not() {
    let mut t = Fake::responding(|_, attempt| match attempt {
        1 => Err(SendError::before_response(Error::Transport("reset".into()))),
        _ => Ok(response(200, r#"{"Zone":"Green"}"#)),
    });
    assert!(
        Client::new(&mut t, &env)
            .enrich("8.8.8.8", &empty_settings())
            .is_ok()
    );
    assert_eq!(t.sent.len(), 2);

    let mut t = Fake::responding(|_, _| Err(SendError::fatal(Error::Transport("denied".into()))));
    let e = Client::new(&mut t, &env)
        .enrich("8.8.8.8", &empty_settings())
        .unwrap_err();
    assert_eq!(kind(&e), "transport");
    assert_eq!(t.sent.len(), 1);
}

#[test]
fn one_deadline_covers_a_lookup_and_all_its_retries() {
    let mut t = Fake::responding(|_, _| Ok(response(503, "")));
    t.latency_ms = 400;
    let mut s = empty_settings();
    s.deadline_ms = Some(1_000);
    s.retries = Some(10);
    let start = t.clock_ms;
    let e = Client::new(&mut t, &env).enrich("8.8.8.8", &s).unwrap_err();
    assert!(matches!(kind(&e), "upstream" | "timeout"), "{e:?}");
    assert!(
        t.clock_ms - start <= 1_000,
        "ran {} ms past a 1000 ms deadline",
        t.clock_ms - start
    );
    assert!(t.sent.len() < 11, "the deadline cut the retries short");
    // Each attempt's own limit never reaches past the deadline.
    let mut at = start;
    for limits in &t.limits_seen {
        assert!(u64::from(limits.total_timeout_ms) <= 1_000 - (at - start).min(1_000));
        at += 400;
    }
}

#[test]
fn timeouts_are_reported_and_retried_within_bounds() {
    let mut t = green();
    t.latency_ms = 5_000;
    let mut s = empty_settings();
    s.timeout_ms = Some(300);
    let e = Client::new(&mut t, &env).enrich("8.8.8.8", &s).unwrap_err();
    assert_eq!(kind(&e), "timeout");
    assert_eq!(t.sent.len(), 3);
}

#[test]
fn a_403_stops_the_batch() {
    let mut t = Fake::responding(|r, _| {
        Ok(if r.url().contains("45.9.0.4") {
            response(403, "quota exceeded")
        } else {
            response(200, r#"{"Zone":"Green"}"#)
        })
    });
    let inputs = ips(6);
    let results = Client::new(&mut t, &env).enrich_batch(&inputs, &settings(1));
    assert_eq!(t.sent.len(), 3, "nothing is sent after the 403");
    let kinds: Vec<&str> = results
        .iter()
        .map(|r| r.as_ref().map_or_else(kind, |_| "ok"))
        .collect();
    assert_eq!(
        kinds,
        [
            "ok",
            "ok",
            "quota-exceeded",
            "quota-exceeded",
            "quota-exceeded",
            "quota-exceeded"
        ]
    );
    let EnrichError::QuotaExceeded(m) = results[4].as_ref().unwrap_err() else {
        unreachable!()
    };
    assert!(m.contains("not sent"), "{m}");
}

#[test]
fn an_exhausted_licence_stops_the_batch() {
    let mut t = Fake::responding(|_, _| {
        Ok(response(
            200,
            r#"{"LicenseInfo":{"DayRequests":500,"DayQuota":500},"Zone":"Green"}"#,
        ))
    });
    let results = Client::new(&mut t, &env).enrich_batch(&ips(4), &settings(1));
    assert_eq!(t.sent.len(), 1);
    assert!(
        results[0].is_ok(),
        "the answer that reported the quota is still a verdict"
    );
    assert!(
        results[1..]
            .iter()
            .all(|r| matches!(r, Err(EnrichError::QuotaExceeded(_))))
    );
}

#[test]
fn the_cache_serves_repeats_and_never_keeps_errors() {
    let mut cache = MemoryKv::new(100);
    let mut t = Fake::responding(|r, _| {
        Ok(if r.url().contains("9.9.9.9") {
            response(429, "")
        } else {
            response(
                200,
                r#"{"Zone":"Yellow","IpGeneralInfo":{"ThreatScore":10}}"#,
            )
        })
    });
    let mut s = empty_settings();
    s.retries = Some(0);
    for _ in 0..3 {
        Client::new(&mut t, &env)
            .with_store(&mut cache)
            .enrich("8.8.8.8", &s)
            .unwrap();
        Client::new(&mut t, &env)
            .with_store(&mut cache)
            .enrich("9.9.9.9", &s)
            .unwrap_err();
    }
    let sent = |t: &Fake, ip: &str| t.sent.iter().filter(|r| r.url().contains(ip)).count();
    assert_eq!(sent(&t, "8.8.8.8"), 1, "repeats come from the cache");
    assert_eq!(
        sent(&t, "9.9.9.9"),
        3,
        "a rate-limited answer is never cached"
    );

    // The mapping applies to cached answers too.
    let mut mapped = s.clone();
    mapped.verdict_map = Some(vec![tip_enrich::bindings::ZoneVerdict {
        zone: Zone::Yellow,
        verdict: SoarVerdict::Benign,
    }]);
    let v = Client::new(&mut t, &env)
        .with_store(&mut cache)
        .enrich("8.8.8.8", &mapped)
        .unwrap();
    assert_eq!((v.verdict, sent(&t, "8.8.8.8")), (SoarVerdict::Benign, 1));

    // Other sections, another key; after the TTL, asked again.
    let mut other = s.clone();
    other.sections = Some(vec!["Zone".into()]);
    Client::new(&mut t, &env)
        .with_store(&mut cache)
        .enrich("8.8.8.8", &other)
        .unwrap();
    assert_eq!(sent(&t, "8.8.8.8"), 2);
    t.clock_ms += 86_400_001;
    Client::new(&mut t, &env)
        .with_store(&mut cache)
        .enrich("8.8.8.8", &s)
        .unwrap();
    assert_eq!(sent(&t, "8.8.8.8"), 3, "expired");

    let mut off = s.clone();
    off.cache_ttl_secs = Some(0);
    Client::new(&mut t, &env)
        .with_store(&mut cache)
        .enrich("1.0.0.1", &off)
        .unwrap();
    Client::new(&mut t, &env)
        .with_store(&mut cache)
        .enrich("1.0.0.1", &off)
        .unwrap();
    assert_eq!(sent(&t, "1.0.0.1"), 2, "ttl 0 turns the cache off");
}
