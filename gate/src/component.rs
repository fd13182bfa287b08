//! The gate over WASI: decide with [`crate::policy`], then stream the
//! request to the origin and the origin's answer back.
//!
//! No body is ever held: each one is spliced from its input stream to its
//! output stream in steps of [`CHUNK`] bytes (`output-stream.blocking-splice`,
//! so the bytes stay in the host). The request to the origin is handed to
//! `outgoing-handler.handle` before its body is written, so the host sends
//! while the client still uploads. Nothing here unwraps: every WASI result is
//! handled, and a stream that breaks only ends the copy.

use std::net::IpAddr;

use ::wasi::http::outgoing_handler;
use ::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingRequest,
    OutgoingResponse, RequestOptions, ResponseOutparam, Scheme,
};
use ::wasi::io::streams::{InputStream, OutputStream, StreamError};
use tip_enrich::{environment, lookup_in, respond};

use crate::policy::{
    Answer, Forwarding, GateSettings, Headers, Outcome, bodiless, client_address, origin_path,
    origin_unreachable, request_headers, response_headers,
};

/// Largest splice asked at once.
const CHUNK: u64 = 64 * 1024;
const NS_PER_MS: u64 = 1_000_000;

/// The bindings of one `ip-gate` world; the two differ only in the versions
/// of `wasi:config/store` and `wasi:keyvalue` they import (as the service's).
macro_rules! gate_bindings {
    ($world:literal, $config:literal, $module:ident, $kv_store:literal, $kv_atomics:literal) => {
        wit_bindgen::generate!({
            world: $world,
            path: "../wit",
            with: {
                "wasi:http/types@0.2.12": ::wasi::http::types,
                "wasi:io/streams@0.2.12": ::wasi::io::streams,
                "wasi:io/error@0.2.12": ::wasi::io::error,
                "wasi:io/poll@0.2.12": ::wasi::io::poll,
                "wasi:clocks/monotonic-clock@0.2.12": ::wasi::clocks::monotonic_clock,
                $config: generate,
                $kv_store: tip_enrich_keyvalue::bindings::store,
                $kv_atomics: tip_enrich_keyvalue::bindings::atomics,
            },
        });
        use self::wasi::$module::store as config_store;
    };
}

#[cfg(not(feature = "spin"))]
gate_bindings!(
    "ip-gate",
    "wasi:config/store@0.2.0-rc.1",
    config0_2_0_rc_1,
    "wasi:keyvalue/store@0.2.0-draft",
    "wasi:keyvalue/atomics@0.2.0-draft"
);
#[cfg(feature = "spin")]
gate_bindings!(
    "ip-gate-spin",
    "wasi:config/store@0.2.0-draft-2024-09-27",
    config0_2_0_draft_2024_09_27,
    "wasi:keyvalue/store@0.2.0-draft2",
    "wasi:keyvalue/atomics@0.2.0-draft2"
);

/// The settings of this request: `wasi:config/store` over the environment.
/// A store that fails counts as empty, so the environment still applies.
fn settings() -> Vec<(String, String)> {
    let config = config_store::get_all().unwrap_or_default();
    tip_enrich::settings::merge_settings(config, environment())
}

fn send(out: ResponseOutparam, answer: Answer) {
    respond(out, answer.status, &answer.headers, &answer.body);
}

/// The values of header `name`, in order, as text (others are not addresses).
fn values<'a>(headers: &'a Headers, name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .collect()
}

/// The verdict of `ip` through the core and the answer store, within the
/// decision timeout.
#[cfg(not(feature = "passthrough"))]
fn look_up(
    ip: IpAddr,
    merged: &[(String, String)],
    gate: &GateSettings,
) -> Result<crate::policy::Judged, tip_enrich::bindings::EnrichError> {
    let pairs = crate::policy::lookup_settings(merged.to_vec(), gate.decision_timeout_ms);
    let env = lookup_in(&pairs);
    tip_enrich_keyvalue::with_bucket(&env, |store| {
        tip_enrich::with_client(&env, store, |c| {
            c.enrich(&ip.to_string(), &tip_enrich::settings::empty())
        })
    })
    .map(|v| (v.verdict, v.zone))
}

/// The decision on a request from `client`.
#[cfg(not(feature = "passthrough"))]
fn outcome(client: Option<IpAddr>, merged: &[(String, String)], gate: &GateSettings) -> Outcome {
    crate::policy::decide(client, gate, |ip| look_up(ip, merged, gate))
}

/// The pass-through proxy decides nothing: every request is forwarded.
#[cfg(feature = "passthrough")]
fn outcome(_: Option<IpAddr>, _: &[(String, String)], _: &GateSettings) -> Outcome {
    Outcome::Forward {
        verdict: None,
        fail_open: false,
    }
}

/// What a failure before any response says about the origin; never its URL.
fn unreachable_reason(code: &ErrorCode) -> &'static str {
    match code {
        ErrorCode::ConnectionRefused => "it refused the connection",
        ErrorCode::ConnectionTimeout => "connecting to it timed out",
        ErrorCode::ConnectionReadTimeout | ErrorCode::HttpResponseTimeout => {
            "it did not answer in time"
        }
        ErrorCode::DnsTimeout | ErrorCode::DnsError(_) | ErrorCode::DestinationNotFound => {
            "its name could not be resolved"
        }
        ErrorCode::DestinationUnavailable | ErrorCode::DestinationIpUnroutable => {
            "it is not reachable"
        }
        ErrorCode::HttpRequestDenied => "the host does not allow requests to it",
        ErrorCode::TlsProtocolError
        | ErrorCode::TlsCertificateError
        | ErrorCode::TlsAlertReceived(_) => "TLS with it failed",
        ErrorCode::ConnectionTerminated => "it closed the connection",
        _ => "the request to it failed",
    }
}

/// Copies `input` into `output` until `input` ends (`true`) or either
/// breaks (`false`), a splice of up to [`CHUNK`] bytes at a time.
fn splice_all(input: &InputStream, output: &OutputStream) -> bool {
    loop {
        match output.blocking_splice(input, CHUNK) {
            Ok(_) => {}
            // Closed is the input's end, unless the output is what closed.
            Err(StreamError::Closed) => return output.check_write().is_ok(),
            Err(StreamError::LastOperationFailed(_)) => return false,
        }
    }
}

/// Streams body `from` into body `to` and finishes `to` with `from`'s
/// trailers. A copy that breaks drops `to` unfinished, so the host signals
/// the truncation (an aborted request or answer) instead of a short body
/// that looks complete.
fn pipe(from: IncomingBody, to: OutgoingBody) {
    let complete = match (from.stream(), to.write()) {
        (Ok(input), Ok(output)) => {
            let complete = splice_all(&input, &output) && output.blocking_flush().is_ok();
            // Children before parents: the streams, then the bodies.
            drop(output);
            drop(input);
            complete
        }
        _ => false,
    };
    if !complete {
        drop(from);
        drop(to);
        return;
    }
    let trailers = IncomingBody::finish(from);
    trailers.subscribe().block();
    let trailers = match trailers.get() {
        Some(Ok(Ok(trailers))) => trailers,
        // The body ended with an error after all: do not pretend otherwise.
        Some(Ok(Err(_))) => {
            drop(to);
            return;
        }
        _ => None,
    };
    let _ = OutgoingBody::finish(to, trailers);
}

fn fields(headers: &Headers) -> Fields {
    let fields = Fields::new();
    for (name, value) in headers {
        // A header the host refuses (a forbidden name) is left out.
        let _ = fields.append(name, value);
    }
    fields
}

/// Forwards `request` to the origin and its answer to `out`.
fn forward(
    request: IncomingRequest,
    out: ResponseOutparam,
    gate: &GateSettings,
    headers: Headers,
    accept: Option<&str>,
) {
    let method = request.method();
    let head = matches!(method, Method::Head);
    let outgoing = OutgoingRequest::new(fields(&headers));
    let path = origin_path(
        &gate.origin.path_prefix,
        request.path_with_query().as_deref(),
    );
    let scheme = if gate.origin.https {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let set = outgoing.set_method(&method).is_ok()
        && outgoing.set_scheme(Some(&scheme)).is_ok()
        && outgoing.set_authority(Some(&gate.origin.authority)).is_ok()
        && outgoing.set_path_with_query(Some(&path)).is_ok();
    let body = outgoing.body();
    let (true, Ok(body)) = (set, body) else {
        return send(
            out,
            origin_unreachable("the request could not be built for it", accept),
        );
    };
    let options = RequestOptions::new();
    let timeout = u64::from(gate.origin_timeout_ms).saturating_mul(NS_PER_MS);
    // A host that does not support one of them keeps its own.
    let _ = options.set_connect_timeout(Some(timeout));
    let _ = options.set_first_byte_timeout(Some(timeout));
    let _ = options.set_between_bytes_timeout(Some(timeout));
    // Handed over first, so the host sends while the body is still copied.
    let future = match outgoing_handler::handle(outgoing, Some(options)) {
        Ok(future) => future,
        Err(code) => {
            drop(body);
            return send(out, origin_unreachable(unreachable_reason(&code), accept));
        }
    };
    match request.consume() {
        Ok(incoming) => pipe(incoming, body),
        Err(()) => drop(body),
    }
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => {
            return send(out, origin_unreachable(unreachable_reason(&code), accept));
        }
        _ => return send(out, origin_unreachable("it gave no response", accept)),
    };
    drop(future);
    let status = response.status();
    let origin_headers = response.headers().entries();
    let answer = OutgoingResponse::new(fields(&response_headers(
        &origin_headers,
        bodiless(head, status),
    )));
    let _ = answer.set_status_code(status);
    let Ok(body) = answer.body() else {
        ResponseOutparam::set(out, Ok(answer));
        return;
    };
    ResponseOutparam::set(out, Ok(answer));
    match response.consume() {
        Ok(incoming) => pipe(incoming, body),
        Err(()) => {
            let _ = OutgoingBody::finish(body, None);
        }
    }
    drop(response);
}

fn handle(request: IncomingRequest, out: ResponseOutparam) {
    let headers = request.headers().entries();
    let accept = values(&headers, "accept").join(", ");
    let accept = Some(accept.as_str()).filter(|a| !a.is_empty());
    let merged = settings();
    let env = lookup_in(&merged);
    let gate = match GateSettings::resolve(&env) {
        Ok(gate) => gate,
        Err(message) => return send(out, crate::policy::misconfigured(&message, accept)),
    };
    let client = client_address(
        gate.client_ip_header,
        &values(&headers, gate.client_ip_header.name()),
        &gate.trusted_proxies,
    );
    let (verdict, fail_open) = match outcome(client, &merged, &gate) {
        Outcome::Forward { verdict, fail_open } => (verdict, fail_open),
        Outcome::Block { verdict } => {
            return send(out, crate::policy::blocked(verdict, accept));
        }
        Outcome::FailClosed => return send(out, crate::policy::fail_closed(accept)),
    };
    let authority = request.authority();
    let host = authority
        .as_deref()
        .or_else(|| values(&headers, "host").into_iter().next());
    let proto = match request.scheme() {
        Some(Scheme::Https) => "https",
        _ => "http",
    };
    let forwarded = request_headers(
        &headers,
        &Forwarding {
            client,
            chain_is_the_client_header: gate.client_ip_header
                == crate::policy::ClientIpHeader::XForwardedFor,
            proto,
            host,
            verdict: verdict.filter(|_| gate.verdict_header),
            fail_open,
        },
    );
    let accept = accept.map(str::to_owned);
    forward(request, out, &gate, forwarded, accept.as_deref());
}

struct Gate;

impl exports::wasi::http::incoming_handler::Guest for Gate {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        handle(request, response_out);
    }
}

export!(Gate);
