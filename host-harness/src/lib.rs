//! Host harness for the tip-enrich component: a wasmtime embedding with
//! replay / live / record egress, and the pieces of the `tip-enrich` CLI.
//!
//! - [`runtime`]: engine, component, stores with limits, trap recovery.
//! - [`egress`]: the wasi-http hooks that enforce the egress policy.
//! - [`recordings`]: the recording format, loader, matcher and writer.
//! - [`output`]: the CLI's JSON Lines.
//! - [`serve`]: `tip-enrich serve`, the service component over HTTP.
//! - [`gate`]: `tip-enrich gate`, an IP-reputation gate component in front
//!   of an origin (streamed bodies, the client address written by the host).
//! - [`splunk`]: `tip-enrich splunk-lookup`, Splunk's external lookup protocol.
//! - [`store`]: the answer store's backends (SQLite, Redis, memory).
//! - [`bounded`]: deadlines and a cap on an incoming body (for `serve`, and
//!   any later proxy that streams bodies).
//! - [`store`]: the answer store's backends (SQLite, Redis, memory), and
//!   [`keyvalue`]: `wasi:keyvalue` over them for the components.

pub mod bounded;
pub mod egress;
pub mod gate;
pub mod keyvalue;
pub mod output;
pub mod recordings;
pub mod runtime;
pub mod serve;
pub mod splunk;
pub mod store;

/// Directory of the bundled recordings (the README's demo).
pub const BUNDLED_RECORDINGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/recordings");

/// Splits an `http(s)://host[:port]/...` URL into (https, normalised
/// authority), with the component's own base-URL rules.
pub fn url_authority(url: &str) -> Option<(bool, String)> {
    let base = tip_enrich::BaseUrl::parse(url).ok()?;
    Some((
        base.https,
        egress::normalise_authority(&base.authority, base.https),
    ))
}

/// `tip-enrich cache stats` as one JSON line: the store, its entries and
/// bytes, the oldest entry (RFC 3339 UTC), the answers kept, and each
/// account's quota state (`cooling-down` until `probe_due`, or `probe-due`).
pub fn cache_stats(backend: &dyn store::Backend) -> anyhow::Result<String> {
    use tip_enrich::{ANSWER_PREFIX, QUOTA_PREFIX, quota_entry, utc_timestamp};
    let stats = backend.stats()?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default();
    let answers = backend.scan_prefix(ANSWER_PREFIX, usize::MAX)?;
    // Only the entry's `status` is read, not its sections.
    #[derive(serde::Deserialize)]
    struct Status {
        status: u16,
    }
    let not_found = answers
        .iter()
        .filter(|(_, v)| serde_json::from_slice::<Status>(v).is_ok_and(|e| e.status == 404))
        .count();
    let quota: Vec<serde_json::Value> = backend
        .scan_prefix(QUOTA_PREFIX, 1000)?
        .into_iter()
        .filter_map(|(key, value)| {
            let (recorded, due, reason) = quota_entry(&value)?;
            Some(serde_json::json!({
                "account": key.strip_prefix(QUOTA_PREFIX).unwrap_or(&key),
                "state": if now_ms < due { "cooling-down" } else { "probe-due" },
                "recorded_at": utc_timestamp(recorded),
                "probe_due": utc_timestamp(due),
                "reason": reason,
            }))
        })
        .collect();
    Ok(serde_json::json!({
        "store": stats.backend,
        "entries": stats.entries,
        "bytes": stats.bytes,
        "oldest_entry": stats.oldest_stored_at_ms.map(utc_timestamp),
        "answers": answers.len(),
        "not_found_answers": not_found,
        "quota": quota,
    })
    .to_string())
}
