//! `tip-enrich serve`: runs the service component (world `enrich-service`)
//! behind an HTTP/1.1 listener, one fresh instance per request, as
//! `wasmtime serve` does, with the harness's egress policy, a memory cap and
//! an epoch deadline on every instance.
//!
//! What a client sends is bounded before it costs a request slot: hyper
//! drops a connection whose request head is not complete within
//! [`ServeOptions::header_timeout`] (from the connection's start, or from the
//! previous answer on a kept-alive connection), and the host reads the whole
//! request body, at most [`MAX_BODY_BYTES`], within
//! [`ServeOptions::body_timeout`] ([`crate::bounded`]) before it waits for a
//! slot or makes an instance; the guest gets that body from memory. A body
//! over the cap is answered 413, one not complete in time 408, both with
//! `connection: close`. The wait for the guest, instantiation to last body
//! byte, is bounded on the wall clock by the request budget too, since the
//! epoch deadline cannot interrupt a guest blocked in a host call.
//!
//! Settings reach the component through `wasi:config/store` (keys `tip_*`),
//! never through the host's own environment. Every instance shares the one
//! answer store ([`ServeOptions::store`], `--cache`) through
//! `wasi:keyvalue`, so answers outlive the request, and with Redis are shared
//! with every replica.
//!
//! Instances come from wasmtime's pooling allocator ([`engine`]), as under
//! `wasmtime serve`: a request's linear memory, tables and async stack are
//! slots reserved once, reset (copy-on-write) when its store is dropped,
//! instead of being mapped and unmapped per request. A request holds its
//! slot of [`ServeOptions::max_in_flight`] for as long as its store lives,
//! so the pool, sized for that many stores at their limits, is never short.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::bounded::{self, BodyError, Limits, TokioTimer};
use crate::egress::{Egress, Hooks, RequestLog};
use crate::keyvalue::{KvCtx, KvView};
use crate::runtime::{Runtime, STORE_LIMITS, Ticker, load_component, ticks};

/// The service component built from this checkout by `build.rs`.
pub const SERVICE_COMPONENT: &[u8] = include_bytes!(env!("TIP_ENRICH_SERVICE_COMPONENT_PATH"));

/// Largest request body the host reads for the guest: the service's own
/// limit (`tip_enrich_service::http::MAX_BODY_BYTES`), so a body the guest
/// would refuse is refused before an instance is made.
pub const MAX_BODY_BYTES: u64 = 1 << 20;

/// How the server runs. `Debug` shows the `wasi:config` keys, never their values.
#[derive(Clone)]
pub struct ServeOptions {
    /// Egress policy of every instance.
    pub egress: Egress,
    /// One more authority reached live whatever the policy (the gate's
    /// origin; [`Hooks::also_live`]); `None` for the service.
    pub also_live: Option<String>,
    /// `wasi:config/store` values (`tip_api_key`, `tip_base_url`, ...).
    pub config: Vec<(String, String)>,
    /// Linear-memory cap of each instance, in bytes.
    pub max_memory_bytes: usize,
    /// Budget of one request, instantiation to last body byte: the epoch
    /// deadline of its store, and a wall-clock limit on the task running it.
    pub request_budget: Duration,
    /// A request head (line and headers) must be complete within this long
    /// from the connection's start or the previous answer; else the
    /// connection is closed.
    pub header_timeout: Duration,
    /// The request body must be complete within this long after its head.
    pub body_timeout: Duration,
    /// Requests handled at once; more wait for a slot.
    pub max_in_flight: usize,
    /// Log one line per request on stderr.
    pub log_requests: bool,
    /// Requests the instances made (for tests).
    pub log: RequestLog,
    /// The answer store every request's instance shares (`wasi:keyvalue`).
    pub store: KvCtx,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("egress", &self.egress)
            .field("also_live", &self.also_live)
            .field(
                "config",
                &self
                    .config
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("max_memory_bytes", &self.max_memory_bytes)
            .field("request_budget", &self.request_budget)
            .field("header_timeout", &self.header_timeout)
            .field("body_timeout", &self.body_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("log_requests", &self.log_requests)
            .finish_non_exhaustive()
    }
}

/// Store data of one request's instance.
struct ServeState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: Hooks,
    limits: StoreLimits,
    config: Arc<WasiConfigVariables>,
    kv: KvCtx,
}

impl WasiView for ServeState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for ServeState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// A compiled service component, linked and pre-instantiated.
pub struct Service {
    engine: Engine,
    pre: ProxyPre<ServeState>,
    options: ServeOptions,
    config: Arc<WasiConfigVariables>,
    slots: Arc<Semaphore>,
    _ticker: Ticker,
}

/// The engine of `serve`: [`Runtime::config`] (epoch interruption included)
/// with two changes for one short-lived instance per request:
///
/// - the pooling allocator, sized for `max_in_flight` stores at the limits
///   of [`crate::runtime::store_limits`] (instances, memories, tables), each
///   memory capped at `max_memory_bytes` too; tables are reset with a
///   `memset` (their size is all they cost) and freed memories are
///   `madvise`d in batches of [`DECOMMIT_BATCH`], fewer TLB shootdowns. No
///   `pagemap_scan`: wasmtime 48 misses dirty pages that were swapped out
///   (bytecodealliance/wasmtime#14357), and a request must never see the
///   last one's memory;
/// - no concurrency support (`Config::concurrency_support(false)`): the
///   service world is a WASIp2 proxy; the component-model-async state of
///   every store cost time on each request and an error (with a backtrace
///   under `RUST_BACKTRACE=1`) at each store's drop.
///
/// The allocator is no part of the engine's compatibility hash, the
/// concurrency setting is (a tunable), so the precompiled cache keeps
/// `serve`'s artefact in a file of its own beside the CLI's and stays
/// correct. Where the pool cannot be reserved (a small address space,
/// `ulimit -v`), the on-demand allocator.
pub fn engine(max_in_flight: usize, max_memory_bytes: usize) -> wasmtime::Result<Engine> {
    let slots = u32::try_from(max_in_flight.max(1)).unwrap_or(u32::MAX);
    let per_store = |n: usize| slots.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX));
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        .total_core_instances(per_store(STORE_LIMITS.instances))
        .total_memories(per_store(STORE_LIMITS.memories))
        .total_tables(per_store(STORE_LIMITS.tables))
        // One fiber at a time per store; the rest is headroom, address
        // space only until used.
        .total_stacks(per_store(2))
        // At most the table's own size is reset by hand, the rest (none for
        // ours) by `madvise`.
        .table_keep_resident(1 << 20)
        .decommit_batch_size(DECOMMIT_BATCH);
    let mut capped = pool.clone();
    capped.max_memory_size(max_memory_bytes);
    // Capped if the cap fits the memory reservation (4 GiB on 64-bit hosts),
    // else the store limiter alone caps memory.
    let config = |strategy| {
        let mut config = Runtime::config();
        config.concurrency_support(false);
        config.allocation_strategy(strategy);
        config
    };
    for pool in [capped, pool] {
        if let Ok(engine) = Engine::new(&config(InstanceAllocationStrategy::Pooling(pool))) {
            return Ok(engine);
        }
    }
    Engine::new(&config(InstanceAllocationStrategy::OnDemand))
}

/// Freed linear memories `madvise`d at once (wasmtime's default is 1); an
/// allocation that finds the pool short flushes the queue first.
const DECOMMIT_BATCH: usize = 16;

impl Service {
    /// Loads `wasm` (through the precompiled cache) and links WASI, wasi-http
    /// and wasi:config for it.
    pub fn new(wasm: &[u8], options: ServeOptions) -> wasmtime::Result<Service> {
        let engine = engine(options.max_in_flight, options.max_memory_bytes)?;
        let component: Component = load_component(&engine, wasm)?;
        let mut linker: Linker<ServeState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        wasmtime_wasi_config::add_to_linker(&mut linker, |s: &mut ServeState| {
            WasiConfig::from(&*s.config)
        })?;
        crate::keyvalue::add_to_linker(&mut linker, |s: &mut ServeState| KvView {
            ctx: &s.kv,
            table: &mut s.table,
        })?;
        let pre = ProxyPre::new(linker.instantiate_pre(&component)?)?;
        let config = Arc::new(options.config.iter().cloned().collect());
        Ok(Service {
            _ticker: Ticker::start(engine.clone()),
            engine,
            pre,
            slots: Arc::new(Semaphore::new(options.max_in_flight.max(1))),
            config,
            options,
        })
    }

    fn store(&self) -> Store<ServeState> {
        let state = ServeState {
            // Nothing of the host's: no environment, no stdio, no files.
            wasi: WasiCtx::builder().build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: Hooks {
                egress: self.options.egress.clone(),
                log: self.options.log.clone(),
                also_live: self.options.also_live.clone(),
            },
            limits: crate::runtime::store_limits(self.options.max_memory_bytes),
            config: self.config.clone(),
            kv: self.options.store.clone(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(ticks(self.options.request_budget));
        store.epoch_deadline_trap();
        store
    }

    /// Runs one request on a fresh instance, once its body is in. A body
    /// over the cap or not complete in time is answered without an
    /// instance; a trap, or a guest that does not answer within the request
    /// budget, becomes a 500 with a JSON body; the server goes on.
    pub async fn handle(
        self: &Arc<Self>,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<HyperOutgoingBody> {
        let (parts, body) = request.into_parts();
        let limits = Limits {
            total: Some(self.options.body_timeout),
            idle: None,
            max_bytes: Some(MAX_BODY_BYTES),
        };
        // Before the slot: a client that stalls holds only its connection.
        let body = match bounded::collect(body, limits).await {
            Ok(body) => body,
            Err(e) => return refused(&e),
        };
        let slot = self.slot().await;
        let answer = self
            .run(hyper::Request::from_parts(parts, Full::new(body)), slot)
            .await;
        self.answer(answer)
    }

    /// The guest's answer, or the host's 500 for a request it did not answer.
    pub(crate) fn answer(
        &self,
        answer: Result<hyper::Response<HyperOutgoingBody>, Failed>,
    ) -> hyper::Response<HyperOutgoingBody> {
        match answer {
            Ok(response) => response,
            Err(Failed::Budget) => problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "budget",
                &format!(
                    "the component did not answer within the request budget of {} ms",
                    self.options.request_budget.as_millis()
                ),
                false,
            ),
            Err(Failed::Guest(e)) => problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "trap",
                &format!("the component failed: {e}"),
                false,
            ),
        }
    }

    /// The options it runs with.
    pub fn options(&self) -> &ServeOptions {
        &self.options
    }

    /// A slot of [`ServeOptions::max_in_flight`], waited for.
    pub(crate) async fn slot(&self) -> OwnedSemaphorePermit {
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            unreachable!("the semaphore is never closed")
        };
        slot
    }

    /// Runs `request` on a fresh instance; `slot` is released once its store
    /// is dropped (after the body is written, or at the budget).
    pub(crate) async fn run<B>(
        self: &Arc<Self>,
        request: hyper::Request<B>,
        slot: OwnedSemaphorePermit,
    ) -> Result<hyper::Response<HyperOutgoingBody>, Failed>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let mut store = self.store();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let pre = self.pre.clone();
        let budget = self.options.request_budget;
        // The handler keeps running after the head is sent, writing the body.
        // At the budget the task's future is dropped, and with it the store
        // and the response outparam, wherever the guest is waiting.
        let task = tokio::task::spawn(async move {
            let answer = tokio::time::timeout(budget, async move {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await
            })
            .await;
            // The store went with the timeout's future: its pool slots are free.
            drop(slot);
            answer
        });
        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(wasmtime::format_err!("the component answered {code:?}").into()),
            Err(_) => match task.await {
                Ok(Ok(Ok(()))) => {
                    Err(wasmtime::format_err!("the component returned without an answer").into())
                }
                Ok(Ok(Err(e))) => Err(e.into()),
                Ok(Err(_elapsed)) => Err(Failed::Budget),
                Err(e) => Err(wasmtime::format_err!("the request task failed: {e}").into()),
            },
        }
    }
}

/// Why a request got no answer from the guest.
pub(crate) enum Failed {
    /// The request budget ran out first.
    Budget,
    /// The guest trapped, or returned without an answer.
    Guest(wasmtime::Error),
}

impl From<wasmtime::Error> for Failed {
    fn from(e: wasmtime::Error) -> Failed {
        Failed::Guest(e)
    }
}

/// The host's answer to a request body it would not hand to the guest. The
/// body was not read to its end, so the connection is closed after it.
fn refused(e: &BodyError<hyper::Error>) -> hyper::Response<HyperOutgoingBody> {
    let (status, kind, message) = match e {
        BodyError::TooLarge(max) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("the body must be at most {max} bytes"),
        ),
        BodyError::Deadline(_) | BodyError::Idle(_) => {
            (StatusCode::REQUEST_TIMEOUT, "body-timeout", e.to_string())
        }
        BodyError::Read(_) => (
            StatusCode::BAD_REQUEST,
            "bad-body",
            "the request body could not be read".to_owned(),
        ),
    };
    problem(status, kind, &message, true)
}

/// A JSON problem answer of the host's own: `{"error": {"kind", "message"}}`,
/// the shape of the service's own problem answers. With `close`, the
/// connection ends after it.
pub(crate) fn problem(
    status: StatusCode,
    kind: &str,
    message: &str,
    close: bool,
) -> hyper::Response<HyperOutgoingBody> {
    // The service's own problem shape, from the core's one JSON writer.
    let body = tip_enrich::json::to_vec(&tip_enrich::json::problem(kind, message));
    let mut response = hyper::Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    if close {
        headers.insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    response
}

/// Accepts connections on `listener` until `shutdown` resolves; each request
/// runs on a fresh instance of `service`.
pub async fn serve(
    listener: TcpListener,
    service: Arc<Service>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    accept(
        listener,
        service,
        shutdown,
        |service, request, _peer| async move { service.handle(request).await },
    )
    .await
}

/// The accept loop of `serve` and `gate`: HTTP/1.1 with keep-alive, the
/// header-read deadline of [`ServeOptions::header_timeout`], TCP_NODELAY,
/// one line per request on stderr with [`ServeOptions::log_requests`];
/// `handle` answers each request, given the connection's peer.
pub(crate) async fn accept<H, F>(
    listener: TcpListener,
    service: Arc<Service>,
    shutdown: impl std::future::Future<Output = ()>,
    handle: H,
) -> std::io::Result<()>
where
    H: Fn(Arc<Service>, hyper::Request<hyper::body::Incoming>, std::net::SocketAddr) -> F
        + Clone
        + Send
        + Sync
        + 'static,
    F: std::future::Future<Output = hyper::Response<HyperOutgoingBody>> + Send + 'static,
{
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        // An answer is a head and body chunks written as the guest makes
        // them; Nagle's algorithm would hold the small ones back.
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let handle = handle.clone();
        tokio::task::spawn(async move {
            let log = service.options.log_requests;
            let header_timeout = service.options.header_timeout;
            let handler = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let service = service.clone();
                let handle = handle.clone();
                async move {
                    let started = Instant::now();
                    let line =
                        log.then(|| format!("{} {}", request.method(), request.uri().path()));
                    let response = handle(service, request, peer).await;
                    if let Some(line) = line {
                        eprintln!(
                            "tip-enrich: {line} -> {} in {} ms",
                            response.status().as_u16(),
                            started.elapsed().as_millis()
                        );
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            if let Err(e) = http1::Builder::new()
                .keep_alive(true)
                .timer(TokioTimer)
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), handler)
                .await
                && log
            {
                eprintln!("tip-enrich: connection from {peer}: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::Egress;

    /// `serve`'s engine differs from the CLI's in a tunable, so its
    /// precompiled artefact has a cache file of its own: one file for both
    /// would be rewritten by each in turn, since neither can load the other's.
    #[test]
    fn serve_engine_has_a_cache_file_of_its_own() {
        let wasm = b"(component)";
        let serve = engine(4, 1 << 20).unwrap();
        let cli = Runtime::engine().unwrap();
        let hash = |engine: &Engine| {
            use std::hash::{Hash, Hasher};
            let mut h = std::hash::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut h);
            h.finish()
        };
        assert_ne!(hash(&serve), hash(&cli));
        let compiled = serve.precompile_component(wasm).unwrap();
        // SAFETY: produced just above by a wasmtime engine of this build.
        assert!(unsafe { Component::deserialize(&serve, &compiled) }.is_ok());
        assert!(unsafe { Component::deserialize(&cli, &compiled) }.is_err());
    }

    #[test]
    fn serve_options_debug_hides_config_values() {
        let options = ServeOptions {
            egress: Egress::Live {
                allowed: "127.0.0.1:1".into(),
            },
            also_live: None,
            config: vec![("tip_api_key".into(), "sekrit-key-value".into())],
            max_memory_bytes: 1,
            request_budget: Duration::from_secs(1),
            header_timeout: Duration::from_secs(1),
            body_timeout: Duration::from_secs(1),
            max_in_flight: 1,
            log_requests: false,
            log: RequestLog::default(),
            store: KvCtx::default(),
        };
        let text = format!("{options:?}");
        assert!(text.contains("tip_api_key"), "{text}");
        assert!(!text.contains("sekrit"), "{text}");
    }
}
