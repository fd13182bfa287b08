//! tip-enrich-component: the tip-enrich core as a WebAssembly component of
//! world `enricher` (`wit/enrich.wit`), exporting interface `enrich-ip`.
//!
//! The whole crate is the `Guest` impl: it wires the core's `Client` to the
//! core's `WasiHttp` transport and the instance's cache, and calls the core's
//! generated `export!` macro. Natively it is empty, so the workspace builds
//! and tests on the host.

// The host and its callers reach every line: no panics.
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

#[cfg(target_arch = "wasm32")]
mod component {
    use std::cell::RefCell;

    use tip_enrich::bindings::{EnrichError, Guest, Report, Settings, Verdict};
    use tip_enrich::cache::{Cache, DEFAULT_MAX_ENTRIES};
    use tip_enrich::client::Client;
    use tip_enrich::config::empty_settings;
    use tip_enrich::wasi_http::{WasiHttp, environment};

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

    tip_enrich::bindings::export!(Component);
}
