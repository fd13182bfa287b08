//! Rust types generated from `wit/enrich.wit` (world `enricher`).
//!
//! The generated records are plain data, so the pure core uses them directly
//! and builds natively; only `export!` (called by the component crate,
//! `component/`) is wasm-specific.

#![allow(missing_docs, clippy::all, unsafe_op_in_unsafe_fn)]

wit_bindgen::generate!({
    world: "enricher",
    path: "wit",
    additional_derives: [PartialEq],
    pub_export_macro: true,
    // `export!` is used by the component crate (component/), so it must
    // be public and name this module by its full path.
    default_bindings_module: "tip_enrich::bindings",
});

pub use exports::tip::enrich::enrich_ip::*;
