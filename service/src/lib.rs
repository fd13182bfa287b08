//! tip-enrich-service: the tip-enrich core behind `wasi:http/incoming-handler`
//! (world `enrich-service` in `wit/enrich.wit`).
//!
//! [`http`] is the pure part (routing, bodies, statuses, answers) and tests
//! natively; `component` (wasm32 only) is the one module that touches WASI on
//! the incoming side. Outgoing requests go through the core's own transport
//! (`tip_enrich::WasiHttp`), so the service looks up addresses exactly as
//! the `enricher` component does.

// The no-panic lints come from [workspace.lints] (root Cargo.toml).

pub mod http;

#[cfg(target_arch = "wasm32")]
mod component;
