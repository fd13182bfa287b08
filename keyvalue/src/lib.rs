//! tip-enrich-keyvalue: the answer store ([`tip_enrich::KeyValue`]) over a
//! `wasi:keyvalue` bucket, for the components that import it
//! (`enricher-cached`, the `enrich-service` worlds). The one place that
//! touches `wasi:keyvalue`; natively it is empty.
//!
//! The bucket is opened once per instance: the one named by
//! `TIP_STORE_BUCKET` (`tip_store_bucket` in `wasi:config`), else `default`
//! (Spin's default store), else the empty name (wasmtime's); `off` opens
//! none (for hosts whose keyvalue calls trap without a store, as wasmCloud
//! without a link does). When none opens, [`with_bucket`] passes `None` and the instance keeps answers in
//! its own memory. A store that fails later is reported once per instance
//! on stderr; the lookups go on without it.

#[cfg(target_arch = "wasm32")]
mod bucket;

#[cfg(target_arch = "wasm32")]
pub use bucket::with_bucket;

/// The generated `wasi:keyvalue` bindings, for worlds that import them too
/// (the service maps its imports here with `with:`).
#[cfg(target_arch = "wasm32")]
pub mod bindings {
    pub use crate::bucket::{atomics, store};
}
