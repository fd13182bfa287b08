//! tip-enrich-service: the tip-enrich core behind `wasi:http/incoming-handler`
//! (world `enrich-service` in `wit/enrich.wit`).
//!
//! [`http`] is the pure part (routing, bodies, statuses, answers) and tests
//! natively; `component` (wasm32 only) is the one module that touches WASI on
//! the incoming side. Outgoing requests go through the core's own transport
//! (`tip_enrich::wasi_http`), so the service looks up addresses exactly as
//! the `enricher` component does.

// A hostile client or server can reach every line outside tests: no panics.
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

pub mod http;

#[cfg(target_arch = "wasm32")]
mod component;
