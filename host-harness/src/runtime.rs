//! The wasmtime embedding: compile the component once ([`Runtime`]), give each
//! [`Instance`] its own store with a memory cap, an epoch deadline per call and
//! the egress hooks, and re-instantiate after a trap ([`Runner`]).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::egress::{Egress, Hooks, RequestLog};
use crate::keyvalue::{KvCtx, KvView};

/// Generated host bindings of `wit/enrich.wit`, world `enricher-cached`:
/// the exports, and the `wasi:keyvalue` imports [`crate::keyvalue`] serves.
pub mod bindings {
    wasmtime::component::bindgen!({
        world: "enricher-cached",
        path: "../wit",
        imports: { default: trappable },
        with: {
            "wasi:keyvalue/store.bucket": crate::keyvalue::Bucket,
        },
        trappable_error_type: {
            "wasi:keyvalue/store.error" => crate::keyvalue::KvError,
        },
    });
}

pub use bindings::exports::tip::enrich::enrich_ip::{
    ApiFlavour, AptReport, AuthScheme, EnrichError, IpStatus, Quota, RateLimit, Report, Settings,
    SoarVerdict, UpstreamError, Verdict, VerdictSource, Zone, ZoneVerdict,
};

/// Store limits besides memory: a component instantiates a handful of core
/// instances (the module, the WASI adapter shims), tables and memories; a
/// few times what ours need, far below what could exhaust the host.
pub(crate) fn store_limits(max_memory_bytes: usize) -> StoreLimits {
    StoreLimitsBuilder::new()
        .memory_size(max_memory_bytes)
        .instances(STORE_LIMITS.instances)
        .tables(STORE_LIMITS.tables)
        .memories(STORE_LIMITS.memories)
        .build()
}

/// The counts of [`store_limits`] (`serve` sizes its instance pool by them).
pub(crate) struct StoreCounts {
    pub(crate) instances: usize,
    pub(crate) tables: usize,
    pub(crate) memories: usize,
}

/// See [`store_limits`].
pub(crate) const STORE_LIMITS: StoreCounts = StoreCounts {
    instances: 4,
    tables: 16,
    memories: 4,
};

/// The component the CLI runs (world `enricher-cached`), built from this
/// checkout by `build.rs`.
pub const COMPONENT: &[u8] = include_bytes!(env!("TIP_ENRICH_COMPONENT_PATH"));

/// Path of the bundled component on the build machine.
pub const COMPONENT_PATH: &str = env!("TIP_ENRICH_COMPONENT_PATH");

/// Where the plain component (world `enricher`, no `wasi:keyvalue`) was
/// built: what hosts without keyvalue load (jco, `wasmtime run`).
pub const PLAIN_COMPONENT_PATH: &str = env!("TIP_ENRICH_PLAIN_COMPONENT_PATH");

/// Where the service component (world `enrich-service`, `service/`) was built.
pub const SERVICE_COMPONENT_PATH: &str = env!("TIP_ENRICH_SERVICE_COMPONENT_PATH");

/// Where the IP gate component (world `ip-gate`, `gate/`) was built.
pub const GATE_COMPONENT_PATH: &str = env!("TIP_ENRICH_GATE_COMPONENT_PATH");

/// Where the gate built with feature `passthrough` (the same forwarding, no
/// decision: the benchmark's baseline) was built.
pub const PASSTHROUGH_COMPONENT_PATH: &str = env!("TIP_ENRICH_PASSTHROUGH_COMPONENT_PATH");

/// Where the precompiled form of `wasm` for `engine` is cached: in
/// [`crate::store::cache_dir`] (`$TIP_ENRICH_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/tip-enrich`, else `$HOME/.cache/tip-enrich`); the name
/// holds a hash of the component and of the engine's compatibility (wasmtime
/// version, settings, target). `TIP_ENRICH_CACHE_DIR=` (empty) turns the
/// cache off.
pub fn cache_path(engine: &Engine, wasm: &[u8]) -> Option<std::path::PathBuf> {
    use std::hash::{Hash, Hasher};
    let dir = crate::store::cache_dir()?;
    let mut component = std::hash::DefaultHasher::new();
    wasm.hash(&mut component);
    let mut compat = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut compat);
    Some(dir.join(format!(
        "component-{:016x}-wasmtime-{}-{:016x}.cwasm",
        component.finish(),
        WASMTIME_VERSION,
        compat.finish()
    )))
}

/// The wasmtime version this harness embeds.
pub const WASMTIME_VERSION: &str = "48.0.8";

/// Epoch tick length.
const TICK: Duration = Duration::from_millis(10);

/// Default memory cap of one store.
pub const DEFAULT_MAX_MEMORY: usize = 256 * 1024 * 1024;

/// Store data: WASI, wasi-http, the egress hooks and the limits.
pub struct State {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: Hooks,
    limits: PeakLimits,
    kv: KvCtx,
}

/// `StoreLimits` that also remember the largest linear memory asked for.
struct PeakLimits {
    inner: StoreLimits,
    peak_memory: usize,
}

impl wasmtime::ResourceLimiter for PeakLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum)?;
        if allowed {
            self.peak_memory = self.peak_memory.max(desired);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Increments the engine's epoch every [`TICK`] until dropped.
pub(crate) struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    pub(crate) fn start(engine: Engine) -> Ticker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("tip-enrich-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            })
            .ok();
        Ticker { stop, thread }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A compiled component and its linker, shared by every instance.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    pre: bindings::EnricherCachedPre<State>,
    _ticker: Arc<Ticker>,
}

/// Per-instance settings. `Debug` shows the environment's names, not its
/// values (`TIP_API_KEY` may be one).
#[derive(Clone)]
pub struct InstanceOptions {
    /// Egress policy.
    pub egress: Egress,
    /// Environment variables the component sees (nothing of the host's by default).
    pub env: Vec<(String, String)>,
    /// Linear-memory cap in bytes.
    pub max_memory_bytes: usize,
    /// Log of requests.
    pub log: RequestLog,
    /// Fuel for the instance's whole life (instantiation included); `None`: not
    /// metered. Needs an engine with fuel ([`Runtime::fuel_engine`]); running
    /// out traps with `Trap::OutOfFuel`. For tests of runaway guests.
    pub fuel: Option<u64>,
    /// The answer store behind `wasi:keyvalue` (none by default: the
    /// component then keeps answers in its own memory).
    pub store: KvCtx,
}

impl std::fmt::Debug for InstanceOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("InstanceOptions")
            .field("egress", &self.egress)
            .field("env", &env)
            .field("max_memory_bytes", &self.max_memory_bytes)
            .field("fuel", &self.fuel)
            .finish_non_exhaustive()
    }
}

impl InstanceOptions {
    /// These options with `TIP_API_KEY` set in the component's environment.
    pub fn with_key(mut self, key: &str) -> InstanceOptions {
        self.env.retain(|(k, _)| k != "TIP_API_KEY");
        self.env.push(("TIP_API_KEY".into(), key.into()));
        self
    }

    /// Options with the given egress, no environment, the default memory cap.
    pub fn new(egress: Egress) -> InstanceOptions {
        InstanceOptions {
            egress,
            env: Vec::new(),
            max_memory_bytes: DEFAULT_MAX_MEMORY,
            log: RequestLog::default(),
            fuel: None,
            store: KvCtx::default(),
        }
    }
}

/// `wasm` compiled for `engine`, through the precompiled cache (see [`cache_path`]).
pub fn load_component(engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Component> {
    load_component_at(engine, wasm, cache_path(engine, wasm).as_deref())
}

/// [`load_component`] with an explicit cache file (`None`: no cache). Any
/// cache problem falls back to compiling.
pub fn load_component_at(
    engine: &Engine,
    wasm: &[u8],
    path: Option<&Path>,
) -> wasmtime::Result<Component> {
    let Some(path) = path else {
        return Component::new(engine, wasm);
    };
    if path.is_file() {
        // SAFETY: the file was written by `precompile_component` of an
        // engine with the same compatibility hash (it is in the name), in
        // the user's own cache directory; wasmtime still checks the header.
        if let Ok(component) = unsafe { Component::deserialize_file(engine, path) } {
            return Ok(component);
        }
    }
    let compiled = engine.precompile_component(wasm)?;
    if let Some(dir) = path.parent() {
        // A name no other writer uses, then an atomic rename: readers see
        // either no file or a whole one.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITES.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp-{}-{n}", std::process::id()));
        if std::fs::create_dir_all(dir).is_ok() && std::fs::write(&tmp, &compiled).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }
    // SAFETY: these bytes were produced just now by this engine.
    unsafe { Component::deserialize(engine, &compiled) }
}

impl Runtime {
    /// The bundled component, from the precompiled cache when it is there.
    pub fn bundled() -> wasmtime::Result<Runtime> {
        Runtime::cached(COMPONENT)
    }

    /// A component from a file, through the precompiled cache.
    pub fn from_file(path: &Path) -> wasmtime::Result<Runtime> {
        let bytes = std::fs::read(path)
            .map_err(|e| wasmtime::format_err!("reading component {}: {e}", path.display()))?;
        Runtime::cached(&bytes)
    }

    /// The engine every runtime uses (the precompiled cache depends on it).
    pub fn engine() -> wasmtime::Result<Engine> {
        Engine::new(&Runtime::config())
    }

    /// The configuration of [`Runtime::engine`], which `serve`'s engine
    /// starts from ([`crate::serve::engine`]). The instance allocator is no
    /// part of `Engine::precompile_compatibility_hash`; any tunable is (such
    /// as `concurrency_support`), and with it the name of the cache file.
    pub fn config() -> Config {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        config
    }

    /// [`Runtime::engine`] that also meters fuel (see [`InstanceOptions::fuel`]).
    /// Metering slows every call, so only tests use it.
    pub fn fuel_engine() -> wasmtime::Result<Engine> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        config.consume_fuel(true);
        Engine::new(&config)
    }

    /// Compiles a component from bytes (no cache).
    pub fn new(wasm: &[u8]) -> wasmtime::Result<Runtime> {
        let engine = Runtime::engine()?;
        let component = Component::new(&engine, wasm)?;
        Runtime::from_component(engine, &component)
    }

    /// Loads `wasm` from the precompiled cache (see [`cache_path`]), or compiles
    /// it and stores the result there. Any cache problem falls back to compiling.
    pub fn cached(wasm: &[u8]) -> wasmtime::Result<Runtime> {
        let engine = Runtime::engine()?;
        let path = cache_path(&engine, wasm);
        Runtime::cached_at(engine, wasm, path.as_deref())
    }

    /// [`Runtime::cached`] with an explicit cache file (`None`: no cache).
    pub fn cached_at(
        engine: Engine,
        wasm: &[u8],
        path: Option<&Path>,
    ) -> wasmtime::Result<Runtime> {
        let component = load_component_at(&engine, wasm, path)?;
        Runtime::from_component(engine, &component)
    }

    /// Links WASI and wasi-http and pre-instantiates `component`.
    pub fn from_component(engine: Engine, component: &Component) -> wasmtime::Result<Runtime> {
        let mut linker: Linker<State> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker)?;
        crate::keyvalue::add_to_linker(&mut linker, |s: &mut State| KvView {
            ctx: &s.kv,
            table: &mut s.table,
        })?;
        let pre = bindings::EnricherCachedPre::new(linker.instantiate_pre(component)?)?;
        let ticker = Arc::new(Ticker::start(engine.clone()));
        Ok(Runtime {
            engine,
            pre,
            _ticker: ticker,
        })
    }

    /// A fresh instance in its own store.
    pub fn instantiate(&self, options: &InstanceOptions) -> wasmtime::Result<Instance> {
        let mut wasi = WasiCtx::builder();
        wasi.envs(&options.env);
        let state = State {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: Hooks {
                egress: options.egress.clone(),
                log: options.log.clone(),
                also_live: None,
            },
            limits: PeakLimits {
                inner: store_limits(options.max_memory_bytes),
                peak_memory: 0,
            },
            kv: options.store.clone(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(u64::MAX / 2);
        store.epoch_deadline_trap();
        if let Some(fuel) = options.fuel {
            store.set_fuel(fuel)?;
        }
        let enricher = self.pre.instantiate(&mut store)?;
        Ok(Instance { store, enricher })
    }
}

/// One instantiated component. After a trap, drop it and make another.
pub struct Instance {
    store: Store<State>,
    enricher: bindings::EnricherCached,
}

/// Epoch ticks for `budget`, rounded up, plus slack.
pub(crate) fn ticks(budget: Duration) -> u64 {
    (budget.as_millis() / TICK.as_millis()).saturating_add(2) as u64
}

impl Instance {
    /// The largest linear memory the component has asked for, in bytes.
    pub fn peak_memory(&self) -> usize {
        self.store.data().limits.peak_memory
    }

    /// `enrich`; `budget` bounds the whole call (epoch deadline).
    pub fn enrich(
        &mut self,
        ip: &str,
        settings: &Settings,
        budget: Duration,
    ) -> wasmtime::Result<Result<Verdict, EnrichError>> {
        self.store.set_epoch_deadline(ticks(budget));
        self.enricher
            .tip_enrich_enrich_ip()
            .call_enrich(&mut self.store, ip, settings)
    }

    /// `enrich` with an empty settings record (`{:}`): every setting from
    /// the component's environment or its default.
    pub fn enrich_env(
        &mut self,
        ip: &str,
        budget: Duration,
    ) -> wasmtime::Result<Result<Verdict, EnrichError>> {
        self.enrich(ip, &empty_settings(), budget)
    }

    /// `enrich-batch`.
    pub fn enrich_batch(
        &mut self,
        ips: &[String],
        settings: &Settings,
        budget: Duration,
    ) -> wasmtime::Result<Vec<Result<Verdict, EnrichError>>> {
        self.store.set_epoch_deadline(ticks(budget));
        self.enricher
            .tip_enrich_enrich_ip()
            .call_enrich_batch(&mut self.store, ips, settings)
    }

    /// `lookup`.
    pub fn lookup(
        &mut self,
        ip: &str,
        settings: &Settings,
        budget: Duration,
    ) -> wasmtime::Result<Result<Report, EnrichError>> {
        self.store.set_epoch_deadline(ticks(budget));
        self.enricher
            .tip_enrich_enrich_ip()
            .call_lookup(&mut self.store, ip, settings)
    }
}

/// An instance that is replaced after a trap: a trap in one call is returned
/// as an error, and the next call runs on a fresh instance.
pub struct Runner {
    runtime: Runtime,
    options: InstanceOptions,
    current: Option<Instance>,
    traps: usize,
}

impl Runner {
    /// A runner over `runtime` with `options`.
    pub fn new(runtime: Runtime, options: InstanceOptions) -> Runner {
        Runner {
            runtime,
            options,
            current: None,
            traps: 0,
        }
    }

    /// Traps seen so far.
    pub fn traps(&self) -> usize {
        self.traps
    }

    /// Runs `f` on the current instance (made if needed); drops it on a trap.
    pub fn call<R>(
        &mut self,
        f: impl FnOnce(&mut Instance) -> wasmtime::Result<R>,
    ) -> wasmtime::Result<R> {
        let instance = match &mut self.current {
            Some(instance) => instance,
            slot => slot.insert(self.runtime.instantiate(&self.options)?),
        };
        let result = f(instance);
        if result.is_err() {
            self.current = None;
            self.traps += 1;
        }
        result
    }
}

/// Settings with every field unset (WAVE `{:}`). The struct literal names
/// every field, so a field added to the WIT record fails to compile here;
/// `tip_enrich::settings` tests that the record matches the settings table.
pub fn empty_settings() -> Settings {
    Settings {
        api: None,
        base_url: None,
        auth: None,
        connect_timeout_ms: None,
        first_byte_timeout_ms: None,
        between_bytes_timeout_ms: None,
        timeout_ms: None,
        sections: None,
        count: None,
        max_body_bytes: None,
        query_reserved: None,
        verdict_map: None,
        concurrency: None,
        retries: None,
        deadline_ms: None,
        retry_after_cap_ms: None,
        cache_ttl_secs: None,
        cache_not_found_ttl_secs: None,
        quota_cooldown_secs: None,
        cache_lease_ms: None,
    }
}
