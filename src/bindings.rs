//! Rust types generated from `wit/enrich.wit` (world `enricher`).
//!
//! The generated records are plain data, so the pure core uses them directly
//! and builds natively; only `export!` (in `lib.rs`) is wasm-specific.

#![allow(missing_docs, clippy::all, unsafe_op_in_unsafe_fn)]

wit_bindgen::generate!({
    world: "enricher",
    path: "wit",
    additional_derives: [PartialEq],
    pub_export_macro: true,
    default_bindings_module: "crate::bindings",
});

pub use exports::tip::enrich::enrich_ip::*;
