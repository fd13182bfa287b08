//! Host harness for the tip-enrich component: a wasmtime embedding with
//! replay / live / record egress, and the pieces of the `tip-enrich` CLI.
//!
//! - [`runtime`]: engine, component, stores with limits, trap recovery.
//! - [`egress`]: the wasi-http hooks that enforce the egress policy.
//! - [`recordings`]: the recording format, loader, matcher and writer.
//! - [`output`]: the CLI's JSON Lines.
//! - [`serve`]: `tip-enrich serve`, the service component over HTTP.
//! - [`store`]: the answer store's backends (SQLite, Redis, memory).
//! - [`bounded`]: deadlines and a cap on an incoming body (for `serve`, and
//!   any later proxy that streams bodies).

pub mod bounded;
pub mod egress;
pub mod output;
pub mod recordings;
pub mod runtime;
pub mod serve;
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
