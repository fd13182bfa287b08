//! The answer store's protocol natively, on a simulated clock (issue 11):
//! stored answers say `cache` and when they were fetched, quota cool-downs
//! stop sending and then probe once, leases make equal lookups wait for one
//! answer and take over from a holder that died, and a failing store never
//! fails a lookup.

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
use tip_enrich::bindings::{EnrichError, Settings, VerdictSource};
use tip_enrich::settings::empty as empty_settings;
use tip_enrich::{Client, KeyValue, LEASE_PREFIX, MemoryKv, StoreError, error_kind as kind};

const KEY: &str = "store-key-0123456789";

fn env(name: &str) -> Option<String> {
    (name == "TIP_API_KEY").then(|| KEY.to_owned())
}

fn red() -> Fake {
    Fake::responding(|r, _| {
        Ok(if r.url().contains("9.9.9.9") {
            response(404, "")
        } else {
            response(
                200,
                r#"{"LicenseInfo":{"DayRequests":7,"DayQuota":2000},"Zone":"Red","IpGeneralInfo":{"ThreatScore":90,"Status":"Known"}}"#,
            )
        })
    })
}

fn sent(t: &Fake, ip: &str) -> usize {
    t.sent.iter().filter(|r| r.url().contains(ip)).count()
}

fn settings() -> Settings {
    let mut s = empty_settings();
    s.retries = Some(0);
    s
}

#[test]
fn issue_11_a_stored_answer_says_cache_and_when_it_was_fetched() {
    let mut kv = MemoryKv::new(100);
    let mut t = red();
    let first = Client::new(&mut t, &env)
        .with_store(&mut kv)
        .enrich("45.9.148.108", &settings())
        .unwrap();
    assert_eq!(
        (first.source, first.fetched_at.as_deref()),
        (VerdictSource::Api, None)
    );
    assert!(first.quota.is_some());
    t.clock_ms += 5_000;
    let again = Client::new(&mut t, &env)
        .with_store(&mut kv)
        .enrich("45.9.148.108", &settings())
        .unwrap();
    assert_eq!(sent(&t, "45.9.148.108"), 1);
    assert_eq!(again.source, VerdictSource::Cache);
    // The fake's wall clock starts at 1_800_000_001 s (its clock at 1 s).
    assert_eq!(again.fetched_at.as_deref(), Some("2027-01-15T08:00:01Z"));
    assert_eq!(
        (again.zone, again.threat_score, again.verdict),
        (first.zone, first.threat_score, first.verdict)
    );
    assert_eq!(
        again.quota, None,
        "a stored answer carries no quota figures of its own"
    );

    // 404s are kept too (6 h), and read back as not found.
    for _ in 0..2 {
        let v = Client::new(&mut t, &env)
            .with_store(&mut kv)
            .enrich("9.9.9.9", &settings())
            .unwrap();
        assert!(!v.found);
    }
    assert_eq!(sent(&t, "9.9.9.9"), 1);
    t.clock_ms += 6 * 3600 * 1000;
    Client::new(&mut t, &env)
        .with_store(&mut kv)
        .enrich("9.9.9.9", &settings())
        .unwrap();
    assert_eq!(sent(&t, "9.9.9.9"), 2, "the 404 expired after 6 h");
}

#[test]
fn issue_11_the_ttls_are_settings() {
    let mut kv = MemoryKv::new(100);
    let mut t = red();
    let mut s = settings();
    s.cache_ttl_secs = Some(60);
    s.cache_not_found_ttl_secs = Some(0);
    for ip in ["45.9.148.108", "9.9.9.9"] {
        for _ in 0..2 {
            Client::new(&mut t, &env)
                .with_store(&mut kv)
                .enrich(ip, &s)
                .unwrap();
        }
    }
    assert_eq!((sent(&t, "45.9.148.108"), sent(&t, "9.9.9.9")), (1, 2));
    t.clock_ms += 60_000;
    Client::new(&mut t, &env)
        .with_store(&mut kv)
        .enrich("45.9.148.108", &s)
        .unwrap();
    assert_eq!(sent(&t, "45.9.148.108"), 2);
}

#[test]
fn issue_11_a_different_key_never_reads_another_keys_answers() {
    let mut kv = MemoryKv::new(100);
    let mut t = red();
    Client::new(&mut t, &env)
        .with_store(&mut kv)
        .enrich("45.9.148.108", &settings())
        .unwrap();
    let other = |name: &str| (name == "TIP_API_KEY").then(|| "another-key-987654".to_owned());
    let v = Client::new(&mut t, &other)
        .with_store(&mut kv)
        .enrich("45.9.148.108", &settings())
        .unwrap();
    assert_eq!(v.source, VerdictSource::Api);
    assert_eq!(sent(&t, "45.9.148.108"), 2);
    for (k, v) in kv.entries() {
        let text = format!("{k}{}", String::from_utf8_lossy(v));
        assert!(
            !text.contains(KEY) && !text.contains("another-key"),
            "{text}"
        );
    }
}

fn quota_fake() -> Fake {
    Fake::responding(|_, _| Ok(response(403, r#"{"error":"DayQuota exceeded"}"#)))
}

#[test]
fn issue_11_a_quota_answer_stops_every_lookup_for_the_cool_down_then_one_probes() {
    let mut kv = MemoryKv::new(100);
    let mut t = quota_fake();
    let e = Client::new(&mut t, &env)
        .with_store(&mut kv)
        .enrich("1.1.1.1", &settings())
        .unwrap_err();
    assert_eq!(kind(&e), "quota-exceeded");
    assert_eq!(t.sent.len(), 1);

    // During the cool-down: nothing is sent, and the error says until when.
    t.clock_ms += 60_000;
    let batch = Client::new(&mut t, &env)
        .with_store(&mut kv)
        .enrich_batch(&["2.2.2.2".into(), "3.3.3.3".into()], &settings());
    assert_eq!(t.sent.len(), 1);
    for r in &batch {
        let Err(EnrichError::QuotaExceeded(m)) = r else {
            panic!("{r:?}")
        };
        assert!(
            m.contains("next probe is due at 2027-01-15T08:15:01Z"),
            "{m}"
        );
        assert!(m.contains("in 840 s"), "{m}");
        assert!(!m.contains(KEY), "{m}");
    }

    // After 15 minutes one request probes; still out: closed again.
    t.clock_ms += 840_000;
    let batch = Client::new(&mut t, &env)
        .with_store(&mut kv)
        .enrich_batch(&["2.2.2.2".into(), "3.3.3.3".into()], &settings());
    assert_eq!(t.sent.len(), 2, "one probe");
    assert!(
        batch
            .iter()
            .all(|r| matches!(r, Err(EnrichError::QuotaExceeded(_))))
    );

    // The next probe finds the quota back: everything flows again.
    t.clock_ms += 900_000;
    t.responder = Some(Box::new(|_, _| Ok(response(200, r#"{"Zone":"Green"}"#))));
    let batch = Client::new(&mut t, &env)
        .with_store(&mut kv)
        .enrich_batch(&["2.2.2.2".into(), "3.3.3.3".into()], &settings());
    assert!(batch.iter().all(Result::is_ok), "{batch:?}");
    assert_eq!(t.sent.len(), 4);
    Client::new(&mut t, &env)
        .with_store(&mut kv)
        .enrich("4.4.4.4", &settings())
        .unwrap();
    assert_eq!(t.sent.len(), 5);
}

#[test]
fn issue_11_licence_info_at_the_day_quota_starts_the_cool_down() {
    let mut kv = MemoryKv::new(100);
    let mut t = Fake::responding(|_, _| {
        Ok(response(
            200,
            r#"{"LicenseInfo":{"DayRequests":2000,"DayQuota":2000},"Zone":"Green"}"#,
        ))
    });
    let v = Client::new(&mut t, &env)
        .with_store(&mut kv)
        .enrich("1.1.1.1", &settings())
        .unwrap();
    assert_eq!(v.source, VerdictSource::Api);
    let e = Client::new(&mut t, &env)
        .with_store(&mut kv)
        .enrich("5.5.5.5", &settings())
        .unwrap_err();
    let EnrichError::QuotaExceeded(m) = e else {
        panic!("{e:?}")
    };
    assert!(m.contains("DayRequests 2000 of DayQuota 2000"), "{m}");
    assert_eq!(t.sent.len(), 1);
    // The answer itself was good, and is served from the store.
    let v = Client::new(&mut t, &env)
        .with_store(&mut kv)
        .enrich("1.1.1.1", &settings())
        .unwrap();
    assert_eq!(v.source, VerdictSource::Cache);
}

/// A store shared with a simulated other process: it holds the lease on
/// `45.9.148.108` and, when `answer_after` gets of the answer have been
/// made, stores its answer (or never, when `None`: it died).
struct Shared {
    inner: MemoryKv,
    other: MemoryKv,
    gets: usize,
    answer_after: Option<usize>,
}

impl KeyValue for Shared {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if key.contains(":answer:") {
            self.gets += 1;
            if self.answer_after == Some(self.gets) {
                let theirs = self.other.get(key)?;
                if let Some(v) = theirs {
                    self.inner.set(key, &v)?;
                }
            }
        }
        self.inner.get(key)
    }
    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.inner.set(key, value)
    }
    fn delete(&mut self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key)
    }
    fn increment(&mut self, key: &str, delta: u64) -> Result<u64, StoreError> {
        // The other process took every lease of the first window.
        let extra = u64::from(key.starts_with(LEASE_PREFIX) && key.ends_with(":180000000"));
        Ok(self.inner.increment(key, delta)? + extra)
    }
}

fn shared(answer_after: Option<usize>) -> Shared {
    // The other process's answer, as it would store it.
    let mut other = MemoryKv::new(10);
    let mut t = red();
    Client::new(&mut t, &env)
        .with_store(&mut other)
        .enrich("45.9.148.108", &settings())
        .unwrap();
    Shared {
        inner: MemoryKv::new(100),
        other,
        gets: 0,
        answer_after,
    }
}

#[test]
fn issue_11_a_lookup_waits_for_the_lease_holders_answer() {
    let mut store = shared(Some(4));
    let mut t = red();
    let v = Client::new(&mut t, &env)
        .with_store(&mut store)
        .enrich("45.9.148.108", &settings())
        .unwrap();
    assert_eq!(t.sent.len(), 0, "the holder's answer was used");
    assert_eq!(v.source, VerdictSource::Cache);
    assert!(t.clock_ms > 0 && t.clock_ms < 10_000, "{}", t.clock_ms);
}

#[test]
fn issue_11_a_holder_that_died_is_taken_over_after_its_lease() {
    let mut store = shared(None);
    let mut t = red();
    let v = Client::new(&mut t, &env)
        .with_store(&mut store)
        .enrich("45.9.148.108", &settings())
        .unwrap();
    assert_eq!(t.sent.len(), 1, "taken over");
    assert_eq!(v.source, VerdictSource::Api);
    // The fake's clock starts at a window's start: the next one begins after 10 s.
    assert!(
        t.clock_ms >= 10_000 && t.clock_ms < 20_000,
        "{}",
        t.clock_ms
    );
    // The lease was given back.
    assert!(
        store
            .inner
            .entries()
            .all(|(k, _)| !k.starts_with(LEASE_PREFIX) || k.ends_with(":180000000"))
    );
}

#[test]
fn issue_11_waiting_ends_at_the_lookups_own_deadline() {
    // Every window is taken by the other process.
    struct Always(Shared);
    impl KeyValue for Always {
        fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.0.get(key)
        }
        fn set(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
            self.0.set(key, value)
        }
        fn delete(&mut self, key: &str) -> Result<(), StoreError> {
            self.0.delete(key)
        }
        fn increment(&mut self, key: &str, delta: u64) -> Result<u64, StoreError> {
            Ok(self.0.increment(key, delta)? + 1)
        }
    }
    let mut always = Always(shared(None));
    let mut t = red();
    let mut s = settings();
    s.deadline_ms = Some(3_000);
    let e = Client::new(&mut t, &env)
        .with_store(&mut always)
        .enrich("45.9.148.108", &s)
        .unwrap_err();
    assert_eq!(kind(&e), "timeout");
    assert_eq!(t.sent.len(), 0);
    assert!(t.clock_ms >= 4_000 && t.clock_ms < 5_000, "{}", t.clock_ms); // it starts at 1 s
}

struct Down(usize);
impl KeyValue for Down {
    fn get(&mut self, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.0 += 1;
        Err(StoreError("connection refused".into()))
    }
    fn set(&mut self, _: &str, _: &[u8]) -> Result<(), StoreError> {
        self.0 += 1;
        Err(StoreError("connection refused".into()))
    }
    fn delete(&mut self, _: &str) -> Result<(), StoreError> {
        self.0 += 1;
        Err(StoreError("connection refused".into()))
    }
    fn increment(&mut self, _: &str, _: u64) -> Result<u64, StoreError> {
        self.0 += 1;
        Err(StoreError("connection refused".into()))
    }
}

#[test]
fn issue_11_a_store_that_fails_never_fails_a_lookup() {
    let mut down = Down(0);
    let mut t = red();
    let ips: Vec<String> = (1..=20).map(|i| format!("45.9.148.{i}")).collect();
    let mut client = Client::new(&mut t, &env).with_store(&mut down);
    let results = client.enrich_batch(&ips, &settings());
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(
        client.store_failure().map(|e| e.0.as_str()),
        Some("connection refused")
    );
    drop(client);
    assert_eq!(t.sent.len(), 20);
    assert_eq!(down.0, 1, "tried once in the call, then left alone");
}

#[test]
fn issue_11_reports_are_not_served_from_the_store_but_respect_the_quota() {
    let mut kv = MemoryKv::new(100);
    let mut t = red();
    for _ in 0..2 {
        let r = Client::new(&mut t, &env)
            .with_store(&mut kv)
            .lookup("45.9.148.108", &settings())
            .unwrap();
        assert_eq!(r.verdict.source, VerdictSource::Api);
        assert!(!r.sections_json.is_empty());
    }
    assert_eq!(t.sent.len(), 2);
    let mut q = quota_fake();
    Client::new(&mut q, &env)
        .with_store(&mut kv)
        .lookup("45.9.148.108", &settings())
        .unwrap_err();
    Client::new(&mut q, &env)
        .with_store(&mut kv)
        .lookup("45.9.148.108", &settings())
        .unwrap_err();
    assert_eq!(q.sent.len(), 1, "the cool-down covers reports too");
}

#[test]
fn issue_11_a_probe_that_gets_no_answer_sends_nothing_else_and_the_next_lookup_probes_again() {
    let mut kv = MemoryKv::new(100);
    let mut t = quota_fake();
    let mut s = settings();
    s.quota_cooldown_secs = Some(60);
    Client::new(&mut t, &env)
        .with_store(&mut kv)
        .enrich("1.1.1.1", &s)
        .unwrap_err();
    t.clock_ms += 60_000;
    t.responder = Some(Box::new(|_, _| {
        Err(tip_enrich::SendError::fatal(tip_enrich::Error::Transport(
            "connection refused".into(),
        )))
    }));
    let batch = Client::new(&mut t, &env)
        .with_store(&mut kv)
        .enrich_batch(&["2.2.2.2".into(), "3.3.3.3".into()], &s);
    assert_eq!(t.sent.len(), 2, "one probe");
    assert_eq!(kind(batch[0].as_ref().unwrap_err()), "transport");
    let EnrichError::QuotaExceeded(m) = batch[1].as_ref().unwrap_err() else {
        panic!("{batch:?}")
    };
    assert!(
        m.contains("probe of whether it is back got no answer"),
        "{m}"
    );
    // The next lookup, in the next lease window, probes again and finds it back.
    t.clock_ms += 10_000;
    t.responder = Some(Box::new(|_, _| Ok(response(200, r#"{"Zone":"Green"}"#))));
    let v = Client::new(&mut t, &env)
        .with_store(&mut kv)
        .enrich("3.3.3.3", &s);
    assert!(v.is_ok(), "{v:?}");
    assert_eq!(t.sent.len(), 3);
}

/// The stored entry of one bundled recording's answer, read through the
/// client with a fresh store: its size in bytes and its text.
fn stored_entry(recording: &str, ip: &str, sections: Option<&str>) -> (usize, String) {
    let body =
        std::fs::read(expect::tests_dir().join(format!("recordings/bodies/{recording}.json")))
            .unwrap();
    let mut t = Fake::responding(move |_, _| {
        Ok(tip_enrich::HttpResponse {
            status: 200,
            headers: vec![],
            body: body.clone(),
        })
    });
    let mut kv = MemoryKv::new(100);
    let mut s = settings();
    s.sections = sections.map(|l| l.split(',').map(str::to_owned).collect());
    Client::new(&mut t, &env)
        .with_store(&mut kv)
        .enrich(ip, &s)
        .unwrap();
    let (_, value) = kv
        .entries()
        .find(|(k, _)| k.starts_with(tip_enrich::ANSWER_PREFIX))
        .expect("the answer was stored");
    (value.len(), String::from_utf8(value.clone()).unwrap())
}

/// What `IpWhoIs` adds to a stored entry: its AS context, a few dozen
/// bytes, never the WHOIS contacts (BENCHMARKS.md, "AS context").
#[test]
fn issue_13_ipwhois_adds_its_as_context_to_a_stored_entry_and_nothing_else() {
    let (without, _) = stored_entry("tip-red-apt-45.9.148.108", "45.9.148.108", None);
    let (with, text) = stored_entry(
        "tip-whois-45.9.148.108",
        "45.9.148.108",
        Some("LicenseInfo,Zone,IpGeneralInfo,IpWhoIs"),
    );
    eprintln!("stored entry: {without} B without IpWhoIs, {with} B with it");
    assert!(
        text.contains(r#""IpWhoIs":{"Asn":[{"Number":57043,"Description":["HOSTKEY-AS"]}],"Net":{"Name":"NL-HOSTKEY-20190612"}}"#),
        "{text}"
    );
    // The two answers differ only in IpWhoIs (and LicenseInfo, never stored).
    assert_eq!(with - without, r#","IpWhoIs":{"Asn":[{"Number":57043,"Description":["HOSTKEY-AS"]}],"Net":{"Name":"NL-HOSTKEY-20190612"}}"#.len());
    for personal in [
        "Contacts",
        "example.net",
        "+31",
        "Amsterdam",
        "ORG-HB123-RIPE",
    ] {
        assert!(!text.contains(personal), "{personal} stored: {text}");
    }
}
