//! tip-enrich: IP enrichment from the Kaspersky Threat Intelligence Portal as a
//! WebAssembly component.
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

#[cfg(all(target_arch = "wasm32", feature = "enricher"))]
mod component {
    use std::cell::RefCell;

    use crate::bindings::{EnrichError, Guest, Report, Settings, Verdict};
    use crate::cache::{Cache, DEFAULT_MAX_ENTRIES};
    use crate::client::Client;
    use crate::config::empty_settings;
    use crate::wasi_http::{WasiHttp, environment};

    thread_local! {
        /// The instance's verdict cache: it lives as long as the instance.
        static CACHE: RefCell<Cache> = RefCell::new(Cache::new(DEFAULT_MAX_ENTRIES));
    }

    struct Component;

    fn with_client<R>(f: impl FnOnce(&mut Client<'_>) -> R) -> R {
        let mut transport = WasiHttp::default();
        // One trip across the boundary for the whole environment per call.
        let environment = environment();
        let env = |name: &str| {
            environment
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        CACHE.with(|cache| match cache.try_borrow_mut() {
            Ok(mut cache) => f(&mut Client::new(&mut transport, &env).with_cache(&mut cache)),
            Err(_) => f(&mut Client::new(&mut transport, &env)),
        })
    }

    impl Guest for Component {
        fn enrich(ip: String) -> Result<Verdict, EnrichError> {
            with_client(|c| c.enrich(&ip, &empty_settings()))
        }
        fn enrich_with(ip: String, settings: Settings) -> Result<Verdict, EnrichError> {
            with_client(|c| c.enrich(&ip, &settings))
        }
        fn enrich_batch(ips: Vec<String>) -> Vec<Result<Verdict, EnrichError>> {
            with_client(|c| c.enrich_batch(&ips, &empty_settings()))
        }
        fn enrich_batch_with(
            ips: Vec<String>,
            settings: Settings,
        ) -> Vec<Result<Verdict, EnrichError>> {
            with_client(|c| c.enrich_batch(&ips, &settings))
        }
        fn lookup(ip: String) -> Result<Report, EnrichError> {
            with_client(|c| c.lookup(&ip, &empty_settings()))
        }
        fn lookup_with(ip: String, settings: Settings) -> Result<Report, EnrichError> {
            with_client(|c| c.lookup(&ip, &settings))
        }
    }

    crate::bindings::export!(Component);
}
