//! The only module that touches WASI: a [`Transport`] over
//! `wasi:http/outgoing-handler`, the environment from `wasi:cli/environment`,
//! and the clock.
//!
//! Every wasi call that can fail maps to a typed [`Error`]; nothing here
//! unwraps. Waiting is done with `wasi:io/poll` on the response or body
//! pollable together with a monotonic-clock deadline, so the end-to-end limit
//! fires even when a server drips bytes slowly enough to dodge the
//! between-bytes timeout.

use wasi::clocks::monotonic_clock;
use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingRequest, RequestOptions, Scheme,
};
use wasi::io::poll::{Pollable, poll};
use wasi::io::streams::StreamError;

use crate::client::{HttpResponse, Limits, Transport};
use crate::error::Error;
use crate::request::HttpRequest;

const MS: u64 = 1_000_000;
/// Largest read asked of the body stream at once.
const READ_CHUNK: u64 = 64 * 1024;

/// wasi-http transport.
#[derive(Debug, Default)]
pub struct WasiHttp;

/// Reads one environment variable through wasi:cli/environment.
pub fn env_var(name: &str) -> Option<String> {
    wasi::cli::environment::get_environment()
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Blocks until `pollable` is ready or `deadline` passes; false on timeout.
fn wait_until(pollable: &Pollable, deadline: u64) -> bool {
    if monotonic_clock::now() >= deadline {
        return pollable.ready();
    }
    let timer = monotonic_clock::subscribe_instant(deadline);
    let ready = poll(&[pollable, &timer]);
    ready.contains(&0)
}

fn map_error_code(code: &ErrorCode, authority: &str) -> Error {
    match code {
        ErrorCode::ConnectionTimeout => {
            Error::Timeout(format!("connecting to {authority} timed out"))
        }
        ErrorCode::ConnectionReadTimeout | ErrorCode::HttpResponseTimeout => {
            Error::Timeout(format!("{authority} did not answer in time"))
        }
        ErrorCode::DnsTimeout => Error::Timeout(format!("DNS lookup of {authority} timed out")),
        ErrorCode::HttpRequestDenied => Error::Transport(format!(
            "the host denied the request to {authority} (no recording for it, or egress not allowed)"
        )),
        ErrorCode::DnsError(_) | ErrorCode::DestinationNotFound => {
            Error::Transport(format!("DNS lookup of {authority} failed"))
        }
        ErrorCode::ConnectionRefused => {
            Error::Transport(format!("{authority} refused the connection"))
        }
        ErrorCode::ConnectionTerminated => {
            Error::Transport(format!("{authority} closed the connection"))
        }
        ErrorCode::TlsProtocolError
        | ErrorCode::TlsCertificateError
        | ErrorCode::TlsAlertReceived(_) => {
            Error::Transport(format!("TLS with {authority} failed"))
        }
        ErrorCode::HttpResponseBodySize(_) => {
            Error::Malformed("the response body was too large".into())
        }
        other => {
            let mut name = format!("{other:?}");
            name.truncate(160);
            Error::Transport(format!("request to {authority} failed: {name}"))
        }
    }
}

impl Transport for WasiHttp {
    fn send(&mut self, request: &HttpRequest, limits: &Limits) -> Result<HttpResponse, Error> {
        let authority = request.authority.as_str();
        let start = monotonic_clock::now();
        let deadline = start.saturating_add(u64::from(limits.total_timeout_ms) * MS);
        let timed_out = || {
            Error::Timeout(format!(
                "no complete answer from {authority} within {} ms",
                limits.total_timeout_ms
            ))
        };

        let headers = Fields::new();
        for (name, value) in &request.headers {
            headers
                .append(name, value.as_bytes())
                .map_err(|_| Error::Config(format!("the host refused the {name} header")))?;
        }
        let outgoing = OutgoingRequest::new(headers);
        let rejected = |what: &str| Error::Config(format!("the host refused the request {what}"));
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

        // A setter returning Err means the host does not support that option;
        // the end-to-end deadline below still bounds the request.
        let options = RequestOptions::new();
        let _ = options.set_connect_timeout(Some(u64::from(limits.connect_timeout_ms) * MS));
        let _ = options.set_first_byte_timeout(Some(u64::from(limits.first_byte_timeout_ms) * MS));
        let _ = options
            .set_between_bytes_timeout(Some(u64::from(limits.between_bytes_timeout_ms) * MS));

        let future = outgoing_handler::handle(outgoing, Some(options))
            .map_err(|e| map_error_code(&e, authority))?;
        let response = loop {
            if let Some(result) = future.get() {
                break result;
            }
            let pollable = future.subscribe();
            if !wait_until(&pollable, deadline) {
                return Err(timed_out());
            }
        };
        let response = match response {
            Ok(Ok(response)) => response,
            Ok(Err(code)) => return Err(map_error_code(&code, authority)),
            Err(()) => return Err(Error::Transport("the response was already taken".into())),
        };

        let status = response.status();
        let headers: Vec<(String, Vec<u8>)> = response
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        let max = u64::from(limits.max_body_bytes);
        let declared = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|len| len > max) {
            return Err(Error::BodyTooLarge { limit: max });
        }

        let body = response
            .consume()
            .map_err(|()| Error::Transport("the response body was already taken".into()))?;
        let bytes = read_body(&body, max, deadline, authority, &timed_out)?;
        drop(IncomingBody::finish(body));
        Ok(HttpResponse {
            status,
            headers,
            body: bytes,
        })
    }

    fn now_unix_secs(&mut self) -> Option<u64> {
        Some(wasi::clocks::wall_clock::now().seconds)
    }
}

/// Reads the whole body within `max` bytes and the deadline. The stream is
/// dropped before returning, so the caller can finish the body.
fn read_body(
    body: &IncomingBody,
    max: u64,
    deadline: u64,
    authority: &str,
    timed_out: &dyn Fn() -> Error,
) -> Result<Vec<u8>, Error> {
    let stream = body
        .stream()
        .map_err(|()| Error::Transport("the response body stream was already taken".into()))?;
    let mut bytes: Vec<u8> = Vec::new();
    loop {
        let room = max.saturating_sub(bytes.len() as u64).saturating_add(1);
        match stream.read(room.min(READ_CHUNK)) {
            Ok(chunk) if chunk.is_empty() => {
                let pollable = stream.subscribe();
                if !wait_until(&pollable, deadline) {
                    return Err(timed_out());
                }
            }
            Ok(chunk) => {
                bytes.extend_from_slice(&chunk);
                if bytes.len() as u64 > max {
                    return Err(Error::BodyTooLarge { limit: max });
                }
                if monotonic_clock::now() >= deadline {
                    return Err(timed_out());
                }
            }
            Err(StreamError::Closed) => return Ok(bytes),
            Err(StreamError::LastOperationFailed(err)) => {
                return Err(match wasi::http::types::http_error_code(&err) {
                    Some(code) => map_error_code(&code, authority),
                    None => Error::Transport(format!("reading the answer from {authority} failed")),
                });
            }
        }
    }
}
