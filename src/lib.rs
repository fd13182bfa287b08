//! tip-enrich: the core of IP enrichment from the Kaspersky Threat
//! Intelligence Portal. The components link it: `component/` (world
//! `enricher`) and `service/` (world `enrich-service`).
//!
//! Layout (see ARCHITECTURE.md): a pure core with no IO —
//! [`ip`] (parsing, special-purpose blocks), [`config`] (settings resolution),
//! [`request`] (request building), [`response`] + [`lenient`] (tolerant
//! parsing), [`verdict`] (verdict derivation), [`error`] (errors and the one
//! mapping to WIT), [`client`] (the flow over a `Transport`) — and one module,
//! `wasi_http`, that touches WASI, compiled for wasm32 only.

// Input, API data and the host can reach every line outside tests: no panics.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable,
        clippy::todo
    )
)]

pub mod bindings;
pub mod cache;
pub mod client;
pub mod config;
pub mod error;
pub mod ip;
pub mod json;
pub(crate) mod lenient;
pub mod request;
pub mod response;
pub mod schedule;
pub mod transport;
pub mod verdict;
#[cfg(target_arch = "wasm32")]
pub mod wasi_http;

pub use lenient::{parse_status, parse_zone};
