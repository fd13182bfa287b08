//! Host harness for the tip-enrich component: a wasmtime embedding with
//! replay / live / record egress, and the pieces of the `tip-enrich` CLI.
//!
//! - [`runtime`]: engine, component, stores with limits, trap recovery.
//! - [`egress`]: the wasi-http hooks that enforce the egress policy.
//! - [`recordings`]: the recording format, loader, matcher and writer.
//! - [`output`]: the CLI's JSON Lines.

pub mod egress;
pub mod output;
pub mod recordings;
pub mod runtime;

/// Directory of the bundled recordings (the README's demo).
pub const BUNDLED_RECORDINGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/recordings");

/// Splits an `http(s)://host[:port]/...` URL into (https, normalised authority).
pub fn url_authority(url: &str) -> Option<(bool, String)> {
    let lower = url.trim().to_ascii_lowercase();
    let (https, rest) = if let Some(rest) = lower.strip_prefix("https://") {
        (true, rest)
    } else {
        (false, lower.strip_prefix("http://")?)
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some((https, egress::normalise_authority(authority, https)))
}
