//! `tip-enrich serve`: runs the service component (world `enrich-service`)
//! behind an HTTP/1.1 listener, one fresh instance per request, as
//! `wasmtime serve` does, with the harness's egress policy, a memory cap and
//! an epoch deadline on every instance.
//!
//! Settings reach the component through `wasi:config/store` (keys `tip_*`),
//! never through the host's own environment.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::egress::{Egress, Hooks, RequestLog};
use crate::runtime::{Runtime, Ticker, load_component, ticks};

/// The service component built from this checkout by `build.rs`.
pub const SERVICE_COMPONENT: &[u8] = include_bytes!(env!("TIP_ENRICH_SERVICE_COMPONENT_PATH"));

/// How the server runs. `Debug` shows the `wasi:config` keys, never their values.
#[derive(Clone)]
pub struct ServeOptions {
    /// Egress policy of every instance.
    pub egress: Egress,
    /// `wasi:config/store` values (`tip_api_key`, `tip_base_url`, ...).
    pub config: Vec<(String, String)>,
    /// Linear-memory cap of each instance, in bytes.
    pub max_memory_bytes: usize,
    /// Epoch budget of one request, instantiation to last body byte.
    pub request_budget: Duration,
    /// Requests handled at once; more wait for a slot.
    pub max_in_flight: usize,
    /// Log one line per request on stderr.
    pub log_requests: bool,
    /// Requests the instances made (for tests).
    pub log: RequestLog,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("egress", &self.egress)
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
    slots: Semaphore,
    _ticker: Ticker,
}

impl Service {
    /// Loads `wasm` (through the precompiled cache) and links WASI, wasi-http
    /// and wasi:config for it.
    pub fn new(wasm: &[u8], options: ServeOptions) -> wasmtime::Result<Service> {
        let engine = Runtime::engine()?;
        let component: Component = load_component(&engine, wasm)?;
        let mut linker: Linker<ServeState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        wasmtime_wasi_config::add_to_linker(&mut linker, |s: &mut ServeState| {
            WasiConfig::from(&*s.config)
        })?;
        let pre = ProxyPre::new(linker.instantiate_pre(&component)?)?;
        let config = Arc::new(options.config.iter().cloned().collect());
        Ok(Service {
            _ticker: Ticker::start(engine.clone()),
            engine,
            pre,
            slots: Semaphore::new(options.max_in_flight.max(1)),
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
            },
            limits: StoreLimitsBuilder::new()
                .memory_size(self.options.max_memory_bytes)
                .instances(4)
                .tables(16)
                .memories(4)
                .build(),
            config: self.config.clone(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(ticks(self.options.request_budget));
        store.epoch_deadline_trap();
        store
    }

    /// Runs one request on a fresh instance. A trap, or a guest that never
    /// answers, becomes a 500 with a JSON body; the server goes on.
    pub async fn handle(
        self: &Arc<Self>,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<HyperOutgoingBody> {
        let _slot = self.slots.acquire().await;
        match self.run(request).await {
            Ok(response) => response,
            Err(e) => {
                let body = serde_json::json!({
                    "error": { "kind": "trap", "message": format!("the component failed: {e}") }
                });
                let mut response = hyper::Response::new(
                    Full::new(Bytes::from(body.to_string()))
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                );
                *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                if let Ok(v) = hyper::header::HeaderValue::from_str("application/json") {
                    response
                        .headers_mut()
                        .insert(hyper::header::CONTENT_TYPE, v);
                }
                response
            }
        }
    }

    async fn run(
        self: &Arc<Self>,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> wasmtime::Result<hyper::Response<HyperOutgoingBody>> {
        let mut store = self.store();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let pre = self.pre.clone();
        // The handler keeps running after the head is sent, writing the body.
        let task = tokio::task::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        });
        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(wasmtime::format_err!("the component answered {code:?}")),
            Err(_) => match task.await {
                Ok(Ok(())) => Err(wasmtime::format_err!(
                    "the component returned without an answer"
                )),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(wasmtime::format_err!("the request task failed: {e}")),
            },
        }
    }
}

/// Accepts connections on `listener` until `shutdown` resolves; each request
/// runs on a fresh instance of `service`.
pub async fn serve(
    listener: TcpListener,
    service: Arc<Service>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        let service = service.clone();
        tokio::task::spawn(async move {
            let log = service.options.log_requests;
            let handler = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let service = service.clone();
                async move {
                    let started = Instant::now();
                    let line = format!("{} {}", request.method(), request.uri().path());
                    let response = service.handle(request).await;
                    if log {
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

    #[test]
    fn serve_options_debug_hides_config_values() {
        let options = ServeOptions {
            egress: Egress::Live {
                allowed: "127.0.0.1:1".into(),
            },
            config: vec![("tip_api_key".into(), "sekrit-key-value".into())],
            max_memory_bytes: 1,
            request_budget: Duration::from_secs(1),
            max_in_flight: 1,
            log_requests: false,
            log: RequestLog::default(),
        };
        let text = format!("{options:?}");
        assert!(text.contains("tip_api_key"), "{text}");
        assert!(!text.contains("sekrit"), "{text}");
    }
}
