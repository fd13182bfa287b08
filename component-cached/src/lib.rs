//! tip-enrich-component-cached: the tip-enrich core as a WebAssembly
//! component of world `enricher-cached` (`wit/enrich.wit`): interface
//! `enrich-ip`, as `component/` exports it, with answers, quota cool-downs
//! and leases kept in a `wasi:keyvalue` bucket (`tip-enrich-keyvalue`) that
//! outlives the instance. Without a bucket it works as `component/` does.
//! Natively it is empty.

#[cfg(target_arch = "wasm32")]
mod component {
    use tip_enrich::bindings::{EnrichError, Guest, Report, Settings, Verdict};
    use tip_enrich::{environment, lookup_in, with_client};
    use tip_enrich_keyvalue::with_bucket;

    struct Component;

    impl Guest for Component {
        fn enrich(ip: String, settings: Settings) -> Result<Verdict, EnrichError> {
            let env = environment();
            let env = lookup_in(&env);
            with_bucket(&env, |store| {
                with_client(&env, store, |c| c.enrich(&ip, &settings))
            })
        }
        fn enrich_batch(ips: Vec<String>, settings: Settings) -> Vec<Result<Verdict, EnrichError>> {
            let env = environment();
            let env = lookup_in(&env);
            with_bucket(&env, |store| {
                with_client(&env, store, |c| c.enrich_batch(&ips, &settings))
            })
        }
        fn lookup(ip: String, settings: Settings) -> Result<Report, EnrichError> {
            let env = environment();
            let env = lookup_in(&env);
            with_bucket(&env, |store| {
                with_client(&env, store, |c| c.lookup(&ip, &settings))
            })
        }
    }

    tip_enrich::bindings::export!(Component);
}
