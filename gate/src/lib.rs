//! tip-enrich-gate: an IP-reputation gate for `wasi:http` proxies (world
//! `ip-gate` in `wit/enrich.wit`, issue #12).
//!
//! [`policy`] is the pure part (settings, the client address, the decision,
//! the refusals, the headers forwarded) and tests natively; `component`
//! (wasm32 only) is the one module that touches WASI: it streams the request
//! to the origin and the origin's answer back, never holding a whole body.
//! Lookups go through the core (`tip_enrich::with_client`) and its answer
//! store (`tip_enrich_keyvalue::with_bucket`), as the service's do.

// The no-panic lints come from [workspace.lints] (root Cargo.toml).

pub mod policy;

#[cfg(target_arch = "wasm32")]
mod component;
