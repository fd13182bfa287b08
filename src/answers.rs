//! The answer store: found and not-found answers, quota cool-downs and
//! short leases, kept in a key-value store that outlives a call.
//!
//! The store is anything with get, set, delete and an atomic increment
//! ([`KeyValue`]): `wasi:keyvalue` in the components that import it (the
//! host backs it with SQLite, Redis or memory), the instance's own
//! [`MemoryKv`] otherwise. Everything here is pure: the store and the clock
//! are passed in, so the protocol tests natively.
//!
//! **Keys** all start with [`KEY_PREFIX`]; an answer's key holds the address
//! and a digest of the API flavour, the base URL, the sections and a SHA-256
//! of the API key, so another key never reads these answers and no secret is
//! ever stored. **Values** are JSON objects with `fetched_at` and
//! `expires_at` (Unix ms): a host store may expire entries by that field;
//! readers ignore expired ones either way. Only what the API said is kept
//! (the verdict's sections, without `LicenseInfo`, whose figures are of the
//! moment, and of `IpWhoIs` only the AS context, never its `Contacts`; or
//! "not found"), so a changed zone mapping applies to stored answers too. Errors, 429 and quota answers are never stored.
//!
//! **Leases** make an alert storm cost one request: the first lookup of an
//! address takes `lease:…:{w}` by `increment` (1 means it is the holder) and
//! reserves window `w+1`, so it holds at least one lease length. Others
//! that see a count above 1 poll for the answer and, each time the window
//! changes, try to take the lease over (a holder that died is replaced after
//! one to two lease lengths). **Quota**: a 403 quota answer, or
//! `LicenseInfo` at `DayRequests >= DayQuota`, writes the account's quota
//! entry; until its `probe_due` nothing is sent; then the one lookup that
//! wins the probe lease sends one request, and a good answer clears it.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::bindings::{IpStatus, Zone};
use crate::config::Config;
use crate::response::{IpGeneralInfo, IpWhoIs, VerdictSections, parse_answer};
use crate::settings::{api_name, zone_name};

/// What the answer store asks of a key-value store.
pub trait KeyValue {
    /// The value of `key`, if any.
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Sets `key` to `value`.
    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Removes `key` (no error when it is absent).
    fn delete(&mut self, key: &str) -> Result<(), StoreError>;
    /// Adds `delta` to the number at `key` (a new key starts at 0) atomically
    /// for every user of the store, and returns the new value.
    fn increment(&mut self, key: &str, delta: u64) -> Result<u64, StoreError>;
}

/// A store operation failed; the lookup goes on without the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// The start of every key this crate writes.
pub const KEY_PREFIX: &str = "tip-enrich:v1:";
/// The start of answer keys: `…answer:{scope}:{ip}`.
pub const ANSWER_PREFIX: &str = "tip-enrich:v1:answer:";
/// The start of quota keys: `…quota:{account}`.
pub const QUOTA_PREFIX: &str = "tip-enrich:v1:quota:";
/// The start of lease counters: `…lease:{scope}:{ip}:{window}`.
pub const LEASE_PREFIX: &str = "tip-enrich:v1:lease:";
/// The start of probe counters: `…probe:{account}:{window}`.
pub const PROBE_PREFIX: &str = "tip-enrich:v1:probe:";

/// Entries a [`MemoryKv`] holds by default.
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;

/// A key-value store in memory, bounded: when full, the oldest key goes.
/// What an instance uses when it has no `wasi:keyvalue` bucket.
#[derive(Debug, Default)]
pub struct MemoryKv {
    map: HashMap<String, Vec<u8>>,
    order: VecDeque<String>,
    max_entries: usize,
}

impl MemoryKv {
    /// An empty store of at most `max_entries` keys.
    pub fn new(max_entries: usize) -> MemoryKv {
        MemoryKv {
            map: HashMap::new(),
            order: VecDeque::new(),
            max_entries: max_entries.max(1),
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every key and value (for tests that look for secrets).
    pub fn entries(&self) -> impl Iterator<Item = (&String, &Vec<u8>)> {
        self.map.iter()
    }

    fn insert(&mut self, key: &str, value: Vec<u8>) {
        if let Some(slot) = self.map.get_mut(key) {
            *slot = value;
            return;
        }
        while self.map.len() >= self.max_entries {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.map.remove(&oldest);
                }
                None => break,
            }
        }
        // Deleted keys stay in `order` until they reach its front; keep it
        // within a small multiple of the bound.
        if self.order.len() >= self.max_entries.saturating_mul(2) {
            let map = &self.map;
            self.order.retain(|k| map.contains_key(k));
        }
        self.order.push_back(key.to_owned());
        self.map.insert(key.to_owned(), value);
    }
}

impl KeyValue for MemoryKv {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.map.get(key).cloned())
    }

    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.insert(key, value.to_vec());
        Ok(())
    }

    fn delete(&mut self, key: &str) -> Result<(), StoreError> {
        self.map.remove(key);
        Ok(())
    }

    fn increment(&mut self, key: &str, delta: u64) -> Result<u64, StoreError> {
        let current = match self.map.get(key) {
            Some(v) => std::str::from_utf8(v)
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or_else(|| StoreError(format!("{key} does not hold a number")))?,
            None => 0,
        };
        let next = current
            .checked_add(delta)
            .ok_or_else(|| StoreError(format!("{key} would overflow")))?;
        self.insert(key, next.to_string().into_bytes());
        Ok(next)
    }
}

/// Lower-case hex of the first `n` bytes of SHA-256 of `parts`, each part
/// ended by a newline (so no two lists of parts hash alike).
fn digest(parts: &[&str], n: usize) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update(b"\n");
    }
    hasher
        .finalize()
        .iter()
        .take(n)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where one configuration's entries live in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Digest of flavour, base URL, sections and key: the answers' scope.
    answers: String,
    /// Digest of flavour, base URL and key: whose quota.
    account: String,
}

impl Scope {
    /// The scope of `config`. The key enters only as its own SHA-256.
    pub fn of(config: &Config) -> Scope {
        let key = digest(&[config.api_key.as_deref().unwrap_or("")], 32);
        let api = api_name(config.api);
        let base = config.base_url.to_url();
        let sections = config.sections.join(",");
        Scope {
            answers: digest(&["answers", api, &base, &sections, &key], 16),
            account: digest(&["account", api, &base, &key], 16),
        }
    }

    /// The key of an address's answer.
    pub fn answer_key(&self, ip: IpAddr) -> String {
        format!("{ANSWER_PREFIX}{}:{ip}", self.answers)
    }

    fn lease_key(&self, ip: IpAddr, window: u64) -> String {
        format!("{LEASE_PREFIX}{}:{ip}:{window}", self.answers)
    }

    /// The key of the account's quota entry.
    pub fn quota_key(&self) -> String {
        format!("{QUOTA_PREFIX}{}", self.account)
    }

    fn probe_key(&self, window: u64) -> String {
        format!("{PROBE_PREFIX}{}:{window}", self.account)
    }
}

/// The version written in quota entries.
const VERSION: u32 = 1;

/// The version written in answer entries: 2 since they keep `IpWhoIs` (a
/// version 1 entry lacks it even where the API sent it, so it is not read).
const ANSWER_VERSION: u32 = 2;

/// How long a quota entry stays after its probe is due, for stores that
/// expire entries (the probe itself is what clears it).
const QUOTA_ENTRY_SLACK_MS: u64 = 24 * 3600 * 1000;

/// `IpGeneralInfo.Status` as the API writes it.
fn status_text(s: IpStatus) -> &'static str {
    match s {
        IpStatus::Known => "Known",
        IpStatus::Reserved => "Reserved",
        IpStatus::NoInfo => "NoInfo",
    }
}

/// The sections in the API's own shape, so the stored text reads back
/// through the same parser as an answer.
#[derive(Serialize)]
struct ApiSections<'a> {
    #[serde(rename = "Zone", skip_serializing_if = "Option::is_none")]
    zone: Option<&'static str>,
    #[serde(rename = "IpGeneralInfo", skip_serializing_if = "Option::is_none")]
    ip_general_info: Option<ApiGeneralInfo<'a>>,
    #[serde(rename = "IpWhoIs", skip_serializing_if = "Option::is_none")]
    ip_whois: Option<ApiWhoIs<'a>>,
}

/// `IpWhoIs` reduced to what the verdict shows: one `Asn` entry (its number
/// and the name line of its description) and `Net.Name`. `Contacts` (names,
/// e-mail addresses, phone numbers) and the rest are never stored.
#[derive(Serialize)]
struct ApiWhoIs<'a> {
    #[serde(rename = "Asn", skip_serializing_if = "Option::is_none")]
    asn: Option<[ApiAsn<'a>; 1]>,
    #[serde(rename = "Net", skip_serializing_if = "Option::is_none")]
    net: Option<ApiNet<'a>>,
}

#[derive(Serialize)]
struct ApiAsn<'a> {
    #[serde(rename = "Number", skip_serializing_if = "Option::is_none")]
    number: Option<u32>,
    #[serde(rename = "Description", skip_serializing_if = "Option::is_none")]
    description: Option<[&'a str; 1]>,
}

#[derive(Serialize)]
struct ApiNet<'a> {
    #[serde(rename = "Name")]
    name: &'a str,
}

fn api_whois(w: &IpWhoIs) -> ApiWhoIs<'_> {
    ApiWhoIs {
        asn: (w.as_number.is_some() || w.as_organization.is_some()).then(|| {
            [ApiAsn {
                number: w.as_number,
                description: w.as_organization.as_deref().map(|o| [o]),
            }]
        }),
        net: w.network_name.as_deref().map(|name| ApiNet { name }),
    }
}

#[derive(Serialize)]
struct ApiReport<'a> {
    #[serde(rename = "Id")]
    id: &'a str,
    #[serde(rename = "Title", skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
}

#[derive(Serialize)]
struct ApiCategory<'a> {
    #[serde(rename = "Name", skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(rename = "Zone", skip_serializing_if = "Option::is_none")]
    zone: Option<&'static str>,
}

#[derive(Serialize)]
struct ApiGeneralInfo<'a> {
    #[serde(rename = "HitsCount", skip_serializing_if = "Option::is_none")]
    hits_count: Option<u64>,
    #[serde(rename = "FirstSeen", skip_serializing_if = "Option::is_none")]
    first_seen: Option<&'a str>,
    #[serde(rename = "ThreatScore", skip_serializing_if = "Option::is_none")]
    threat_score: Option<u8>,
    #[serde(rename = "Ip", skip_serializing_if = "Option::is_none")]
    ip: Option<&'a str>,
    #[serde(rename = "CountryCode", skip_serializing_if = "Option::is_none")]
    country_code: Option<&'a str>,
    #[serde(rename = "Status", skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(rename = "Categories", skip_serializing_if = "Option::is_none")]
    categories: Option<&'a [String]>,
    #[serde(rename = "CategoriesWithZone", skip_serializing_if = "Option::is_none")]
    categories_with_zone: Option<Vec<ApiCategory<'a>>>,
    #[serde(rename = "HasApt", skip_serializing_if = "Option::is_none")]
    has_apt: Option<bool>,
    #[serde(rename = "RelatedAptReports", skip_serializing_if = "Option::is_none")]
    related_apt_reports: Option<Vec<ApiReport<'a>>>,
}

fn api_zone(z: Zone) -> &'static str {
    zone_name(z)
}

fn api_general_info(i: &IpGeneralInfo) -> ApiGeneralInfo<'_> {
    ApiGeneralInfo {
        hits_count: i.hits_count,
        first_seen: i.first_seen.as_deref(),
        threat_score: i.threat_score,
        ip: i.ip.as_deref(),
        country_code: i.country_code.as_deref(),
        status: i.status.map(status_text),
        categories: i.categories.as_deref(),
        categories_with_zone: i.categories_with_zone.as_ref().map(|l| {
            l.iter()
                .map(|c| ApiCategory {
                    name: c.name.as_deref(),
                    zone: c.zone.map(api_zone),
                })
                .collect()
        }),
        has_apt: i.has_apt,
        related_apt_reports: i.related_apt_reports.as_ref().map(|l| {
            l.iter()
                .map(|r| ApiReport {
                    id: &r.id,
                    title: r.title.as_deref(),
                })
                .collect()
        }),
    }
}

#[derive(Serialize)]
struct AnswerOut<'a> {
    v: u32,
    fetched_at: u64,
    expires_at: u64,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    sections: Option<ApiSections<'a>>,
}

#[derive(Deserialize)]
struct AnswerIn<'a> {
    v: u32,
    fetched_at: u64,
    expires_at: u64,
    status: u16,
    #[serde(borrow, default)]
    sections: Option<&'a RawValue>,
}

#[derive(Serialize, Deserialize)]
struct QuotaEntry {
    v: u32,
    fetched_at: u64,
    expires_at: u64,
    probe_due: u64,
    reason: String,
}

/// An answer read from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The sections of a found answer; `None` for "not found" (404).
    pub sections: Option<Box<VerdictSections>>,
    /// When the API gave it, Unix ms.
    pub fetched_at_ms: u64,
}

/// The quota state of an account, as read before sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaGate {
    /// No cool-down: send.
    Open,
    /// A cool-down is on and nothing may be sent: the message says until when.
    Closed(String),
    /// The cool-down is over and this lookup won the probe: send one request.
    Probe,
}

/// The answer store of one call, over an optional key-value store. After
/// the first failure it is not used again in this call: a store that fails
/// never fails a lookup.
pub struct AnswerStore<'a> {
    kv: Option<&'a mut dyn KeyValue>,
    scope: Scope,
    found_ttl_ms: u64,
    not_found_ttl_ms: u64,
    cooldown_ms: u64,
    lease_ms: u64,
    failure: Option<StoreError>,
}

impl<'a> AnswerStore<'a> {
    /// The store of `config` over `kv` (`None`: nothing is kept).
    pub fn new(kv: Option<&'a mut dyn KeyValue>, config: &Config) -> AnswerStore<'a> {
        AnswerStore {
            kv,
            scope: Scope::of(config),
            found_ttl_ms: u64::from(config.cache_ttl_secs).saturating_mul(1000),
            not_found_ttl_ms: u64::from(config.cache_not_found_ttl_secs).saturating_mul(1000),
            cooldown_ms: u64::from(config.quota_cooldown_secs).saturating_mul(1000),
            lease_ms: u64::from(config.cache_lease_ms.max(1)),
            failure: None,
        }
    }

    /// The first failure of the store in this call, if any.
    pub fn failure(&self) -> Option<&StoreError> {
        self.failure.as_ref()
    }

    /// Whether answers are kept at all (a store, and a TTL above 0).
    pub fn keeps_answers(&self) -> bool {
        self.kv.is_some() && (self.found_ttl_ms > 0 || self.not_found_ttl_ms > 0)
    }

    /// The lease length, ms.
    pub fn lease_ms(&self) -> u64 {
        self.lease_ms
    }

    /// Runs `op` on the store unless it is absent or has failed before.
    fn with<R>(
        &mut self,
        op: impl FnOnce(&mut dyn KeyValue) -> Result<R, StoreError>,
    ) -> Option<R> {
        if self.failure.is_some() {
            return None;
        }
        let kv = self.kv.as_deref_mut()?;
        match op(kv) {
            Ok(r) => Some(r),
            Err(e) => {
                self.failure = Some(e);
                None
            }
        }
    }

    /// A live answer for `ip` at `now_ms` (Unix ms), if the store has one.
    /// An entry that does not parse counts as absent.
    pub fn get(&mut self, ip: IpAddr, now_ms: u64) -> Option<Stored> {
        let key = self.scope.answer_key(ip);
        let bytes = self.with(|kv| kv.get(&key)).flatten()?;
        let entry: AnswerIn<'_> = serde_json::from_slice(&bytes).ok()?;
        if entry.v != ANSWER_VERSION || entry.expires_at <= now_ms {
            return None;
        }
        let sections = match (entry.status, entry.sections) {
            (404, _) => None,
            (200, Some(raw)) => Some(Box::new(
                parse_answer(raw.get().as_bytes())
                    .ok()?
                    .into_verdict_sections(),
            )),
            _ => return None,
        };
        Some(Stored {
            sections,
            fetched_at_ms: entry.fetched_at,
        })
    }

    /// Keeps a found answer (`Some`) or a 404 (`None`) fetched at `now_ms`.
    pub fn put(&mut self, ip: IpAddr, sections: Option<&VerdictSections>, now_ms: u64) {
        let ttl = if sections.is_some() {
            self.found_ttl_ms
        } else {
            self.not_found_ttl_ms
        };
        if ttl == 0 {
            return;
        }
        let entry = AnswerOut {
            v: ANSWER_VERSION,
            fetched_at: now_ms,
            expires_at: now_ms.saturating_add(ttl),
            status: if sections.is_some() { 200 } else { 404 },
            sections: sections.map(|s| ApiSections {
                zone: s.zone.map(api_zone),
                ip_general_info: s.ip_general_info.as_ref().map(api_general_info),
                ip_whois: s.ip_whois.as_ref().map(api_whois),
            }),
        };
        let Ok(bytes) = serde_json::to_vec(&entry) else {
            return;
        };
        let key = self.scope.answer_key(ip);
        self.with(|kv| kv.set(&key, &bytes));
    }

    /// Tries to take the lease on `ip` at `now_ms`: `Some(window)` when this
    /// lookup holds it (release it with that window), `None` when another
    /// does. A store that fails counts as holding it (the lookup just sends).
    pub fn acquire(&mut self, ip: IpAddr, now_ms: u64) -> Option<u64> {
        let window = now_ms / self.lease_ms;
        let key = self.scope.lease_key(ip, window);
        match self.with(|kv| kv.increment(&key, 1)) {
            None => Some(window),
            Some(1) => {
                let next = self.scope.lease_key(ip, window.saturating_add(1));
                self.with(|kv| kv.increment(&next, 1));
                Some(window)
            }
            Some(_) => None,
        }
    }

    /// Gives up the lease taken in `window`.
    pub fn release(&mut self, ip: IpAddr, window: u64) {
        for w in [window, window.saturating_add(1)] {
            let key = self.scope.lease_key(ip, w);
            self.with(|kv| kv.delete(&key));
        }
    }

    /// The account's quota entry, if one is recorded.
    fn quota_entry(&mut self) -> Option<QuotaEntry> {
        let key = self.scope.quota_key();
        let bytes = self.with(|kv| kv.get(&key)).flatten()?;
        serde_json::from_slice::<QuotaEntry>(&bytes)
            .ok()
            .filter(|e| e.v == VERSION)
    }

    /// How the quota ran out, for messages.
    fn recorded(entry: &QuotaEntry) -> String {
        format!(
            "the request quota ran out ({}; recorded {})",
            entry.reason,
            utc_timestamp(entry.fetched_at)
        )
    }

    /// The message of a cool-down still running at `now_ms`, if one is.
    /// Reads only: it never takes the probe.
    pub fn quota_cooling(&mut self, now_ms: u64) -> Option<String> {
        let entry = self.quota_entry().filter(|e| now_ms < e.probe_due)?;
        let secs = (entry.probe_due - now_ms).div_ceil(1000);
        Some(format!(
            "{}; nothing was sent during the cool-down; the next probe is due at {} (in {secs} s)",
            Self::recorded(&entry),
            utc_timestamp(entry.probe_due)
        ))
    }

    /// Whether a lookup may send now, at `now_ms`; when a cool-down is over,
    /// the first caller takes the probe.
    pub fn quota_gate(&mut self, now_ms: u64) -> QuotaGate {
        if let Some(message) = self.quota_cooling(now_ms) {
            return QuotaGate::Closed(message);
        }
        let Some(entry) = self.quota_entry() else {
            return QuotaGate::Open;
        };
        let window = now_ms / self.lease_ms;
        let probe = self.scope.probe_key(window);
        match self.with(|kv| kv.increment(&probe, 1)) {
            Some(1) | None => QuotaGate::Probe,
            Some(_) => QuotaGate::Closed(format!(
                "{}; another lookup is probing whether it is back (the probe was due at {}); nothing was sent",
                Self::recorded(&entry),
                utc_timestamp(entry.probe_due)
            )),
        }
    }

    /// Records that the quota ran out at `now_ms`, for `reason`.
    pub fn record_quota(&mut self, reason: &str, now_ms: u64) {
        let probe_due = now_ms.saturating_add(self.cooldown_ms);
        let entry = QuotaEntry {
            v: VERSION,
            fetched_at: now_ms,
            expires_at: probe_due.saturating_add(QUOTA_ENTRY_SLACK_MS),
            probe_due,
            reason: crate::text::bounded(reason, 200).into_owned(),
        };
        let Ok(bytes) = serde_json::to_vec(&entry) else {
            return;
        };
        let key = self.scope.quota_key();
        self.with(|kv| kv.set(&key, &bytes));
    }

    /// Clears the quota entry (a probe got a good answer).
    pub fn clear_quota(&mut self) {
        let key = self.scope.quota_key();
        self.with(|kv| kv.delete(&key));
    }
}

/// The times of a stored value, for hosts that expire or report entries:
/// `(fetched_at, expires_at)` in Unix ms, when `value` is one of ours.
pub fn entry_times(value: &[u8]) -> Option<(u64, u64)> {
    #[derive(Deserialize)]
    struct Times {
        fetched_at: u64,
        expires_at: u64,
    }
    serde_json::from_slice::<Times>(value)
        .ok()
        .map(|t| (t.fetched_at, t.expires_at))
}

/// A quota entry as `(recorded_at, probe_due, reason)` in Unix ms, for `cache stats`.
pub fn quota_entry(value: &[u8]) -> Option<(u64, u64, String)> {
    serde_json::from_slice::<QuotaEntry>(value)
        .ok()
        .map(|q| (q.fetched_at, q.probe_due, q.reason))
}

/// Unix ms as RFC 3339 UTC to the second: `2026-12-01T09:30:00Z`.
pub fn utc_timestamp(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`, for days ≥ 0).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Purpose;
    use crate::settings::empty;

    fn config(key: Option<&str>, sections: Option<&str>) -> Config {
        let env = |name: &str| match name {
            "TIP_API_KEY" => key.map(str::to_owned),
            "TIP_SECTIONS" => sections.map(str::to_owned),
            _ => None,
        };
        Config::resolve(&empty(), &env, Purpose::Verdict).unwrap()
    }

    fn sections() -> VerdictSections {
        let body = br#"{"LicenseInfo": {"DayRequests": 5, "DayQuota": 2000}, "Zone": "Red",
            "IpGeneralInfo": {"Ip": "45.9.148.108", "ThreatScore": 92, "HitsCount": 10000, "Status": "Known",
            "CountryCode": "NL", "FirstSeen": "2019-03-12T10:20:18.467Z", "Categories": ["CATEGORY_MALWARE"],
            "CategoriesWithZone": [{"Name": "CATEGORY_MALWARE", "Zone": "Red"}, {"Zone": "Gray"}],
            "HasApt": true, "RelatedAptReports": [{"Id": "abc", "Title": "Op \"X\""}, {"Id": "def"}]}}"#;
        parse_answer(body).unwrap().into_verdict_sections()
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(45, 9, 148, 108));

    #[test]
    fn an_answer_reads_back_as_it_was_without_the_licence() {
        let mut kv = MemoryKv::new(100);
        let c = config(Some("k-123456"), None);
        let mut store = AnswerStore::new(Some(&mut kv), &c);
        store.put(IP, Some(&sections()), 1_000);
        let got = store.get(IP, 2_000).unwrap();
        let mut want = sections();
        want.license_info = None;
        assert_eq!(got.sections.as_deref(), Some(&want));
        assert_eq!(got.fetched_at_ms, 1_000);
        store.put(IP, None, 3_000);
        assert_eq!(
            store.get(IP, 4_000),
            Some(Stored {
                sections: None,
                fetched_at_ms: 3_000
            })
        );
    }

    /// A TIP `IpWhoIs` as real answers carry it: the number as a string
    /// beside `Origin`, `Net.Description` one string with CRLF, `Contacts`.
    const WHOIS: &[u8] = br#"{"Zone": "Red", "IpGeneralInfo": {"Ip": "45.9.148.108", "CountryCode": "NL"},
        "IpWhoIs": {"Asn": [{"Number": "57043", "Origin": "AS57043", "Description": ["HOSTKEY-AS", "NL"]}],
        "Net": {"RangeStart": "45.9.148.0", "RangeEnd": "45.9.148.255", "Name": "NL-HOSTKEY-20190612",
            "Description": "HOSTKEY B.V.\r\nAmsterdam"},
        "Contacts": [{"Name": "HOSTKEY B.V.", "ContactRole": "abuse", "Phone": "+31 20 820 1111",
            "Email": "abuse@example.net", "Address": "Amsterdam, Netherlands"}]}}"#;

    #[test]
    fn the_as_context_survives_the_store_and_contacts_are_not_kept() {
        let mut kv = MemoryKv::new(100);
        let c = config(Some("k-123456"), None);
        let mut store = AnswerStore::new(Some(&mut kv), &c);
        let answer = parse_answer(WHOIS).unwrap().into_verdict_sections();
        let whois = answer.ip_whois.clone().unwrap();
        assert_eq!(
            whois,
            IpWhoIs {
                as_number: Some(57043),
                as_organization: Some("HOSTKEY-AS".into()),
                network_name: Some("NL-HOSTKEY-20190612".into()),
            }
        );
        store.put(IP, Some(&answer), 1_000);
        let got = store.get(IP, 2_000).unwrap();
        assert_eq!(got.sections.as_deref(), Some(&answer));
        let ip: IpAddr = IP;
        let v = crate::verdict::from_sections(ip, got.sections.as_deref().unwrap(), &c.verdict_map);
        assert_eq!(
            (
                v.as_number,
                v.as_organization.as_deref(),
                v.network_name.as_deref()
            ),
            (Some(57043), Some("HOSTKEY-AS"), Some("NL-HOSTKEY-20190612"))
        );
        drop(store);
        let (_, stored) = kv.entries().next().unwrap();
        let text = String::from_utf8_lossy(stored);
        assert!(
            text.contains(r#""IpWhoIs":{"Asn":[{"Number":57043,"Description":["HOSTKEY-AS"]}],"Net":{"Name":"NL-HOSTKEY-20190612"}}"#),
            "{text}"
        );
        for personal in [
            "Contacts",
            "abuse@example.net",
            "+31",
            "Amsterdam",
            "RangeStart",
        ] {
            assert!(!text.contains(personal), "{personal} stored: {text}");
        }
    }

    #[test]
    fn partial_as_context_reads_back_as_it_was() {
        let c = config(Some("k-123456"), None);
        for body in [
            &br#"{"Zone": "Grey", "IpWhoIs": {"Asn": [{"Description": "GOOGLE\nUS"}]}}"#[..],
            br#"{"Zone": "Grey", "IpWhoIs": {"Asn": {"Origin": "AS15169"}}}"#,
            br#"{"Zone": "Grey", "IpWhoIs": {"Net": {"Name": "GOGL"}}}"#,
            br#"{"Zone": "Grey", "IpWhoIs": {"Asn": "x", "Net": 7}}"#,
            br#"{"Zone": "Grey", "IpWhoIs": null}"#,
        ] {
            let answer = parse_answer(body).unwrap().into_verdict_sections();
            let mut kv = MemoryKv::new(100);
            let mut store = AnswerStore::new(Some(&mut kv), &c);
            store.put(IP, Some(&answer), 0);
            let got = store.get(IP, 1).unwrap();
            assert_eq!(
                got.sections.as_deref(),
                Some(&answer),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn an_entry_of_version_1_is_not_read() {
        let mut kv = MemoryKv::new(100);
        let c = config(Some("k-123456"), None);
        let key = Scope::of(&c).answer_key(IP);
        kv.set(
            &key,
            br#"{"v":1,"fetched_at":0,"expires_at":9000,"status":200,"sections":{"Zone":"Red"}}"#,
        )
        .unwrap();
        assert!(AnswerStore::new(Some(&mut kv), &c).get(IP, 1).is_none());
        kv.set(
            &key,
            br#"{"v":2,"fetched_at":0,"expires_at":9000,"status":200,"sections":{"Zone":"Red"}}"#,
        )
        .unwrap();
        assert!(AnswerStore::new(Some(&mut kv), &c).get(IP, 1).is_some());
    }

    #[test]
    fn entries_expire_by_their_ttl() {
        let mut kv = MemoryKv::new(100);
        let c = config(Some("k-123456"), None);
        let mut store = AnswerStore::new(Some(&mut kv), &c);
        store.put(IP, Some(&sections()), 0);
        assert!(store.get(IP, 86_400_000 - 1).is_some());
        assert!(store.get(IP, 86_400_000).is_none());
        store.put(IP, None, 0);
        assert!(store.get(IP, 21_600_000 - 1).is_some());
        assert!(store.get(IP, 21_600_000).is_none());
    }

    #[test]
    fn another_key_or_other_sections_never_read_these_answers() {
        let mut kv = MemoryKv::new(100);
        let a = config(Some("key-a-123456"), None);
        AnswerStore::new(Some(&mut kv), &a).put(IP, Some(&sections()), 0);
        let b = config(Some("key-b-123456"), None);
        assert!(AnswerStore::new(Some(&mut kv), &b).get(IP, 1).is_none());
        let s = config(Some("key-a-123456"), Some("Zone"));
        assert!(AnswerStore::new(Some(&mut kv), &s).get(IP, 1).is_none());
        assert!(AnswerStore::new(Some(&mut kv), &a).get(IP, 1).is_some());
    }

    #[test]
    fn no_secret_reaches_the_store() {
        let key = "sekrit-api-key-0123456789";
        let mut kv = MemoryKv::new(100);
        let c = config(Some(key), None);
        let mut store = AnswerStore::new(Some(&mut kv), &c);
        store.put(IP, Some(&sections()), 0);
        store.record_quota("403", 0);
        assert!(store.acquire(IP, 5).is_some());
        let secrets = crate::secrets::Secrets::of_key(Some(key));
        for (k, v) in kv.entries() {
            let text = format!("{k} {}", String::from_utf8_lossy(v));
            assert_eq!(secrets.scrub(&text), text, "{text}");
        }
    }

    #[test]
    fn a_lease_has_one_holder_until_released_or_over() {
        let mut kv = MemoryKv::new(100);
        let c = config(Some("k-123456"), None);
        let mut store = AnswerStore::new(Some(&mut kv), &c);
        let lease = store.lease_ms();
        let w = store.acquire(IP, 5).unwrap();
        assert!(store.acquire(IP, 6).is_none());
        // The reserved next window is still held.
        assert!(store.acquire(IP, lease + 1).is_none());
        // The window after it is free: a dead holder is replaced.
        assert!(store.acquire(IP, 2 * lease + 1).is_some());
        store.release(IP, w);
        assert!(store.acquire(IP, 7).is_some());
    }

    #[test]
    fn the_quota_closes_then_one_probe_goes() {
        let mut kv = MemoryKv::new(100);
        let c = config(Some("k-123456"), None);
        let mut store = AnswerStore::new(Some(&mut kv), &c);
        assert_eq!(store.quota_gate(0), QuotaGate::Open);
        store.record_quota("HTTP 403", 1_000);
        let QuotaGate::Closed(m) = store.quota_gate(2_000) else {
            panic!()
        };
        assert!(m.contains("HTTP 403"), "{m}");
        assert!(m.contains("1970-01-01T00:15:01Z"), "{m}");
        assert!(m.contains("in 899 s"), "{m}");
        assert_eq!(store.quota_gate(901_000), QuotaGate::Probe);
        assert!(matches!(store.quota_gate(901_001), QuotaGate::Closed(m) if m.contains("probing")));
        store.clear_quota();
        assert_eq!(store.quota_gate(901_002), QuotaGate::Open);
    }

    struct Broken(usize);
    impl KeyValue for Broken {
        fn get(&mut self, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.0 += 1;
            Err(StoreError("down".into()))
        }
        fn set(&mut self, _: &str, _: &[u8]) -> Result<(), StoreError> {
            self.0 += 1;
            Err(StoreError("down".into()))
        }
        fn delete(&mut self, _: &str) -> Result<(), StoreError> {
            self.0 += 1;
            Err(StoreError("down".into()))
        }
        fn increment(&mut self, _: &str, _: u64) -> Result<u64, StoreError> {
            self.0 += 1;
            Err(StoreError("down".into()))
        }
    }

    #[test]
    fn a_failing_store_is_tried_once_per_call_and_lets_everything_through() {
        let mut kv = Broken(0);
        let c = config(Some("k-123456"), None);
        let mut store = AnswerStore::new(Some(&mut kv), &c);
        assert!(store.get(IP, 0).is_none());
        assert!(store.acquire(IP, 0).is_some());
        assert_eq!(store.quota_gate(0), QuotaGate::Open);
        store.put(IP, None, 0);
        assert_eq!(store.failure(), Some(&StoreError("down".into())));
        drop(store);
        assert_eq!(kv.0, 1);
    }

    #[test]
    fn memory_is_bounded_oldest_first() {
        let mut kv = MemoryKv::new(3);
        for k in ["a", "b", "c", "d"] {
            kv.set(k, b"1").unwrap();
        }
        assert_eq!(kv.len(), 3);
        assert_eq!(kv.get("a").unwrap(), None);
        assert_eq!(kv.increment("n", 2).unwrap(), 2);
        assert_eq!(kv.increment("n", 1).unwrap(), 3);
        for i in 0..100 {
            kv.set("x", b"1").unwrap();
            kv.delete("x").unwrap();
            kv.set(&format!("y{i}"), b"1").unwrap();
        }
        assert!(kv.order.len() <= 6, "{}", kv.order.len());
    }

    #[test]
    fn timestamps_are_rfc_3339_utc() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(1_796_117_400_999), "2026-12-01T09:30:00Z");
        assert_eq!(utc_timestamp(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(
            entry_times(br#"{"fetched_at":1,"expires_at":2,"x":[]}"#),
            Some((1, 2))
        );
    }
}
