//! The only module that touches WASI: a [`Transport`] over
//! `wasi:http/outgoing-handler` that keeps many requests in flight, the
//! environment from `wasi:cli/environment`, and the clocks.
//!
//! Every wasi call that can fail maps to a typed [`Error`]; nothing here
//! unwraps. [`WasiHttp::wait`] blocks in `wasi:io/poll` on every in-flight
//! response or body pollable together with a monotonic-clock timer for the
//! nearest deadline, so there is no busy waiting, and the end-to-end limit of
//! each request fires even when a server drips bytes slowly enough to dodge
//! the between-bytes timeout.

use wasi::clocks::monotonic_clock;
use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingBody, Method, OutgoingBody, OutgoingRequest,
    OutgoingResponse, RequestOptions, ResponseOutparam, Scheme,
};
use wasi::io::poll::{Pollable, poll};
use wasi::io::streams::{InputStream, StreamError};

use crate::answers::{DEFAULT_MAX_ENTRIES, KeyValue, MemoryKv};
use crate::client::Client;
use crate::config::EnvLookup;
use crate::error::Error;
use crate::request::HttpRequest;
use crate::transport::{HttpResponse, Limits, SendError, Ticket, Transport};

const NS_PER_MS: u64 = 1_000_000;
/// Largest read asked of a body stream at once.
const READ_CHUNK: u64 = 64 * 1024;

/// The component's environment, through wasi:cli/environment.
pub fn environment() -> Vec<(String, String)> {
    wasi::cli::environment::get_environment()
}

thread_local! {
    /// The instance's own answer store, for instances without a
    /// `wasi:keyvalue` bucket: it lives as long as the instance. Hosts that
    /// make an instance per request start each with an empty one.
    static MEMORY: std::cell::RefCell<MemoryKv> = std::cell::RefCell::new(MemoryKv::new(DEFAULT_MAX_ENTRIES));
}

/// Runs `f` with a [`Client`] over wasi-http, reading unset settings from
/// `env`, keeping answers in `store` (a `wasi:keyvalue` bucket), else in the
/// instance's memory (none if it is in use: calls do not nest).
pub fn with_client<R>(
    env: EnvLookup<'_>,
    store: Option<&mut dyn KeyValue>,
    f: impl FnOnce(&mut Client<'_>) -> R,
) -> R {
    let mut transport = WasiHttp::default();
    if let Some(store) = store {
        return f(&mut Client::new(&mut transport, env).with_store(store));
    }
    MEMORY.with(|memory| match memory.try_borrow_mut() {
        Ok(mut memory) => f(&mut Client::new(&mut transport, env).with_store(&mut *memory)),
        Err(_) => f(&mut Client::new(&mut transport, env)),
    })
}

/// Answers an incoming request with `status`, `headers` and the whole of
/// `body` (the service's answers, the gate's own refusals). A client that
/// goes away mid-answer only ends the write early; a header the host
/// refuses is left out.
pub fn respond(out: ResponseOutparam, status: u16, headers: &[(String, String)], body: &[u8]) {
    let fields = Fields::new();
    for (name, value) in headers {
        let _ = fields.append(name, value.as_bytes());
    }
    let response = OutgoingResponse::new(fields);
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else {
        ResponseOutparam::set(out, Ok(response));
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    if let Ok(stream) = outgoing.write() {
        // `blocking-write-and-flush` takes at most 4096 bytes at a time.
        for chunk in body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                break;
            }
        }
        drop(stream);
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

/// Where one request is.
enum Stage {
    /// Waiting for the response head.
    Head(FutureIncomingResponse),
    /// Reading the body. Field order matters: the stream (a child of the body)
    /// is dropped first.
    Body {
        stream: InputStream,
        body: IncomingBody,
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        bytes: Vec<u8>,
    },
}

struct InFlight {
    ticket: Ticket,
    authority: String,
    deadline_ns: u64,
    total_ms: u32,
    max_body: u64,
    /// Taken out while stepped; always `Some` between steps.
    stage: Option<Stage>,
}

/// What one step of a request came to.
enum Step {
    Pending(Stage),
    Done(Result<HttpResponse, SendError>),
}

/// wasi-http transport.
#[derive(Default)]
pub struct WasiHttp {
    next_ticket: Ticket,
    in_flight: Vec<InFlight>,
    done: Vec<(Ticket, Result<HttpResponse, SendError>)>,
}

fn map_error_code(code: &ErrorCode, authority: &str) -> SendError {
    let before = SendError::before_response;
    match code {
        ErrorCode::ConnectionTimeout => before(Error::Timeout(format!(
            "connecting to {authority} timed out"
        ))),
        ErrorCode::ConnectionReadTimeout | ErrorCode::HttpResponseTimeout => before(
            Error::Timeout(format!("{authority} did not answer in time")),
        ),
        ErrorCode::DnsTimeout => before(Error::Timeout(format!(
            "DNS lookup of {authority} timed out"
        ))),
        ErrorCode::HttpRequestDenied => SendError::fatal(Error::Transport(format!(
            "the host denied the request to {authority} (no recording for it, or egress not allowed)"
        ))),
        ErrorCode::DnsError(_) | ErrorCode::DestinationNotFound => before(Error::Transport(
            format!("DNS lookup of {authority} failed"),
        )),
        ErrorCode::ConnectionRefused => before(Error::Transport(format!(
            "{authority} refused the connection"
        ))),
        ErrorCode::ConnectionTerminated => before(Error::Transport(format!(
            "{authority} closed the connection"
        ))),
        ErrorCode::TlsProtocolError
        | ErrorCode::TlsCertificateError
        | ErrorCode::TlsAlertReceived(_) => {
            SendError::fatal(Error::Transport(format!("TLS with {authority} failed")))
        }
        ErrorCode::HttpResponseBodySize(_) => {
            SendError::fatal(Error::Malformed("the response body was too large".into()))
        }
        other => before(Error::Transport(format!(
            "request to {authority} failed: {}",
            error_code_name(other)
        ))),
    }
}

/// A fixed description of a host `error-code`, with the host's own text
/// (`internal-error`) cut on characters: no `Debug` string, no byte cut.
fn error_code_name(code: &ErrorCode) -> std::borrow::Cow<'static, str> {
    let name = match code {
        ErrorCode::DnsTimeout => "DNS timeout",
        ErrorCode::DnsError(_) => "DNS error",
        ErrorCode::DestinationNotFound => "destination not found",
        ErrorCode::DestinationUnavailable => "destination unavailable",
        ErrorCode::DestinationIpProhibited => "destination IP prohibited",
        ErrorCode::DestinationIpUnroutable => "destination IP unroutable",
        ErrorCode::ConnectionRefused => "connection refused",
        ErrorCode::ConnectionTerminated => "connection terminated",
        ErrorCode::ConnectionTimeout => "connection timeout",
        ErrorCode::ConnectionReadTimeout => "connection read timeout",
        ErrorCode::ConnectionWriteTimeout => "connection write timeout",
        ErrorCode::ConnectionLimitReached => "connection limit reached",
        ErrorCode::TlsProtocolError => "TLS protocol error",
        ErrorCode::TlsCertificateError => "TLS certificate error",
        ErrorCode::TlsAlertReceived(_) => "TLS alert received",
        ErrorCode::HttpRequestDenied => "request denied",
        ErrorCode::HttpRequestLengthRequired => "request length required",
        ErrorCode::HttpRequestBodySize(_) => "request body size",
        ErrorCode::HttpRequestMethodInvalid => "request method invalid",
        ErrorCode::HttpRequestUriInvalid => "request URI invalid",
        ErrorCode::HttpRequestUriTooLong => "request URI too long",
        ErrorCode::HttpRequestHeaderSectionSize(_) => "request header section size",
        ErrorCode::HttpRequestHeaderSize(_) => "request header size",
        ErrorCode::HttpRequestTrailerSectionSize(_) => "request trailer section size",
        ErrorCode::HttpRequestTrailerSize(_) => "request trailer size",
        ErrorCode::HttpResponseIncomplete => "response incomplete",
        ErrorCode::HttpResponseHeaderSectionSize(_) => "response header section size",
        ErrorCode::HttpResponseHeaderSize(_) => "response header size",
        ErrorCode::HttpResponseBodySize(_) => "response body size",
        ErrorCode::HttpResponseTrailerSectionSize(_) => "response trailer section size",
        ErrorCode::HttpResponseTrailerSize(_) => "response trailer size",
        ErrorCode::HttpResponseTransferCoding(_) => "response transfer coding",
        ErrorCode::HttpResponseContentCoding(_) => "response content coding",
        ErrorCode::HttpResponseTimeout => "response timeout",
        ErrorCode::HttpUpgradeFailed => "upgrade failed",
        ErrorCode::HttpProtocolError => "HTTP protocol error",
        ErrorCode::LoopDetected => "loop detected",
        ErrorCode::ConfigurationError => "host configuration error",
        ErrorCode::InternalError(Some(text)) => {
            return format!("internal error ({})", crate::error::host_detail(text)).into();
        }
        ErrorCode::InternalError(None) => "internal error",
    };
    name.into()
}

fn build(request: &HttpRequest, limits: &Limits) -> Result<FutureIncomingResponse, SendError> {
    let authority = request.authority.as_str();
    let headers = Fields::new();
    for (name, value) in &request.headers {
        headers.append(name, value.as_bytes()).map_err(|_| {
            SendError::fatal(Error::Config(format!("the host refused the {name} header")))
        })?;
    }
    let outgoing = OutgoingRequest::new(headers);
    let rejected = |what: &str| {
        SendError::fatal(Error::Config(format!(
            "the host refused the request {what}"
        )))
    };
    outgoing
        .set_method(&Method::Get)
        .map_err(|()| rejected("method"))?;
    let scheme = if request.https {
        Scheme::Https
    } else {
        Scheme::Http
    };
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|()| rejected("scheme"))?;
    outgoing
        .set_authority(Some(authority))
        .map_err(|()| rejected("authority"))?;
    outgoing
        .set_path_with_query(Some(&request.path_with_query))
        .map_err(|()| rejected("path"))?;
    // A setter returning Err means the host does not support that option; the
    // end-to-end deadline still bounds the request.
    let options = RequestOptions::new();
    let _ = options.set_connect_timeout(Some(u64::from(limits.connect_timeout_ms) * NS_PER_MS));
    let _ =
        options.set_first_byte_timeout(Some(u64::from(limits.first_byte_timeout_ms) * NS_PER_MS));
    let _ = options
        .set_between_bytes_timeout(Some(u64::from(limits.between_bytes_timeout_ms) * NS_PER_MS));
    outgoing_handler::handle(outgoing, Some(options)).map_err(|e| map_error_code(&e, authority))
}

impl InFlight {
    /// Advances as far as possible without blocking.
    fn step(&self, stage: Stage) -> Step {
        let stage = match stage {
            Stage::Head(future) => match future.get() {
                None => return Step::Pending(Stage::Head(future)),
                Some(Err(())) => {
                    return Step::Done(Err(SendError::fatal(Error::Transport(
                        "the response was already taken".into(),
                    ))));
                }
                Some(Ok(Err(code))) => {
                    return Step::Done(Err(map_error_code(&code, &self.authority)));
                }
                Some(Ok(Ok(response))) => {
                    let status = response.status();
                    let headers: Vec<(String, Vec<u8>)> = response
                        .headers()
                        .entries()
                        .into_iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), v))
                        .collect();
                    let declared = headers
                        .iter()
                        .find(|(k, _)| k == "content-length")
                        .and_then(|(_, v)| std::str::from_utf8(v).ok())
                        .and_then(|v| v.trim().parse::<u64>().ok());
                    if declared.is_some_and(|len| len > self.max_body) {
                        return Step::Done(Err(SendError::fatal(Error::BodyTooLarge {
                            limit: self.max_body,
                        })));
                    }
                    let taken = || {
                        SendError::fatal(Error::Transport(
                            "the response body was already taken".into(),
                        ))
                    };
                    let Ok(body) = response.consume() else {
                        return Step::Done(Err(taken()));
                    };
                    let Ok(stream) = body.stream() else {
                        return Step::Done(Err(taken()));
                    };
                    Stage::Body {
                        stream,
                        body,
                        status,
                        headers,
                        bytes: Vec::new(),
                    }
                }
            },
            body @ Stage::Body { .. } => body,
        };
        self.read(stage)
    }

    /// Reads what the body stream has now.
    fn read(&self, stage: Stage) -> Step {
        let Stage::Body {
            stream,
            body,
            status,
            headers,
            mut bytes,
        } = stage
        else {
            return Step::Pending(stage);
        };
        let outcome = loop {
            let room = self
                .max_body
                .saturating_sub(bytes.len() as u64)
                .saturating_add(1);
            match stream.read(room.min(READ_CHUNK)) {
                Ok(chunk) if chunk.is_empty() => {
                    return Step::Pending(Stage::Body {
                        stream,
                        body,
                        status,
                        headers,
                        bytes,
                    });
                }
                Ok(chunk) => {
                    bytes.extend_from_slice(&chunk);
                    if bytes.len() as u64 > self.max_body {
                        break Err(SendError::fatal(Error::BodyTooLarge {
                            limit: self.max_body,
                        }));
                    }
                }
                Err(StreamError::Closed) => break Ok(()),
                Err(StreamError::LastOperationFailed(err)) => {
                    let error = match wasi::http::types::http_error_code(&err) {
                        Some(code) => map_error_code(&code, &self.authority).error,
                        // wasmtime reports its between-bytes timeout on the body
                        // stream as a plain I/O error, not an `error-code`: its
                        // text is all there is to tell a timeout from a failure.
                        None => {
                            let detail = crate::error::host_detail(&err.to_debug_string());
                            if detail.to_ascii_lowercase().contains("timeout") {
                                Error::Timeout(format!(
                                    "{} stopped sending the answer ({detail})",
                                    self.authority
                                ))
                            } else {
                                Error::Transport(format!(
                                    "reading the answer from {} failed ({detail})",
                                    self.authority
                                ))
                            }
                        }
                    };
                    break Err(SendError::fatal(error));
                }
            }
        };
        // The stream is a child of the body: it must go first, or the host traps.
        drop(stream);
        drop(IncomingBody::finish(body));
        Step::Done(outcome.map(|()| HttpResponse {
            status,
            headers,
            body: bytes,
        }))
    }

    fn timed_out(&self, stage: &Stage) -> SendError {
        let error = Error::Timeout(format!(
            "no complete answer from {} within {} ms",
            self.authority, self.total_ms
        ));
        match stage {
            Stage::Head(_) => SendError::before_response(error),
            Stage::Body { .. } => SendError::fatal(error),
        }
    }
}

impl WasiHttp {
    /// Steps every request once; finished ones move to `done`.
    fn progress(&mut self) {
        let now = monotonic_clock::now();
        let mut still = Vec::with_capacity(self.in_flight.len());
        for mut request in self.in_flight.drain(..) {
            let Some(stage) = request.stage.take() else {
                continue;
            };
            match request.step(stage) {
                Step::Done(outcome) => self.done.push((request.ticket, outcome)),
                Step::Pending(stage) => {
                    if now >= request.deadline_ns {
                        let error = request.timed_out(&stage);
                        // Dropping the stage cancels the request (stream before body).
                        drop(stage);
                        self.done.push((request.ticket, Err(error)));
                    } else {
                        request.stage = Some(stage);
                        still.push(request);
                    }
                }
            }
        }
        self.in_flight = still;
    }
}

impl Transport for WasiHttp {
    fn start(&mut self, request: &HttpRequest, limits: &Limits) -> Ticket {
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        match build(request, limits) {
            Ok(future) => self.in_flight.push(InFlight {
                ticket,
                authority: request.authority.clone(),
                deadline_ns: monotonic_clock::now()
                    .saturating_add(u64::from(limits.total_timeout_ms) * NS_PER_MS),
                total_ms: limits.total_timeout_ms,
                max_body: u64::from(limits.max_body_bytes),
                stage: Some(Stage::Head(future)),
            }),
            Err(e) => self.done.push((ticket, Err(e))),
        }
        ticket
    }

    fn wait(&mut self, until_ms: Option<u64>) -> Vec<(Ticket, Result<HttpResponse, SendError>)> {
        let until_ns = until_ms.map(|ms| ms.saturating_mul(NS_PER_MS));
        loop {
            self.progress();
            if !self.done.is_empty() {
                return std::mem::take(&mut self.done);
            }
            let now = monotonic_clock::now();
            if until_ns.is_some_and(|u| now >= u) {
                return Vec::new();
            }
            let nearest = self
                .in_flight
                .iter()
                .map(|r| r.deadline_ns)
                .chain(until_ns)
                .min();
            let Some(wake) = nearest else {
                // Nothing in flight and nothing to wait for.
                return Vec::new();
            };
            let pollables: Vec<Pollable> = self
                .in_flight
                .iter()
                .filter_map(|r| r.stage.as_ref())
                .map(|stage| match stage {
                    Stage::Head(future) => future.subscribe(),
                    Stage::Body { stream, .. } => stream.subscribe(),
                })
                .collect();
            let timer = monotonic_clock::subscribe_instant(wake);
            let mut refs: Vec<&Pollable> = pollables.iter().collect();
            refs.push(&timer);
            let _ready = poll(&refs);
            drop(refs);
            drop(timer);
            drop(pollables);
        }
    }

    fn now_ms(&mut self) -> u64 {
        monotonic_clock::now() / NS_PER_MS
    }

    fn now_unix_secs(&mut self) -> Option<u64> {
        Some(wasi::clocks::wall_clock::now().seconds)
    }

    fn now_unix_ms(&mut self) -> Option<u64> {
        let now = wasi::clocks::wall_clock::now();
        Some(
            now.seconds
                .saturating_mul(1000)
                .saturating_add(u64::from(now.nanoseconds / 1_000_000)),
        )
    }

    fn random_u64(&mut self) -> u64 {
        wasi::random::insecure::get_insecure_random_u64()
    }
}
