//! tip-enrich-component: the tip-enrich core as a WebAssembly component of
//! world `enricher` (`wit/enrich.wit`), exporting interface `enrich-ip`.
//!
//! The whole crate is the `Guest` impl: each export reads the environment once
//! and runs the core's `Client` through `tip_enrich::with_client` (the wasi-http
//! transport, answers kept in the instance's memory), then the core's
//! generated `export!` macro. `component-cached/` is the same with a
//! `wasi:keyvalue` answer store. Natively it is empty, so the workspace builds and tests on the host.
//! The no-panic lints come from `[workspace.lints]` (root `Cargo.toml`).

#[cfg(target_arch = "wasm32")]
mod component {
    use tip_enrich::bindings::{EnrichError, Guest, Report, Settings, Verdict};
    use tip_enrich::{environment, lookup_in, with_client};

    struct Component;

    impl Guest for Component {
        fn enrich(ip: String, settings: Settings) -> Result<Verdict, EnrichError> {
            let env = environment();
            with_client(&lookup_in(&env), None, |c| c.enrich(&ip, &settings))
        }
        fn enrich_batch(ips: Vec<String>, settings: Settings) -> Vec<Result<Verdict, EnrichError>> {
            let env = environment();
            with_client(&lookup_in(&env), None, |c| c.enrich_batch(&ips, &settings))
        }
        fn lookup(ip: String, settings: Settings) -> Result<Report, EnrichError> {
            let env = environment();
            with_client(&lookup_in(&env), None, |c| c.lookup(&ip, &settings))
        }
    }

    tip_enrich::bindings::export!(Component);
}
