//! Egress policy: every outgoing request of the component passes through
//! [`Hooks::send_request`], which replays, forwards, or records it.
//!
//! - **replay**: answers from a [`RecordingSet`]; anything unrecorded is denied
//!   (`HttpRequestDenied`) and never reaches the network.
//! - **live**: forwards to the network, only to the authority of the base URL.
//! - **record**: live, and writes each exchange as a recording with every
//!   credential redacted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use tip_enrich::Secrets;

use crate::recordings::{
    RecordedRequest, RecordedResponse, RecordingFile, RecordingSet, write_recording,
};

/// Largest body the record mode will buffer.
const RECORD_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Where requests may go. `Debug` hides the secrets of the record mode.
#[derive(Clone)]
pub enum Egress {
    /// Answer from recordings; deny everything else.
    Replay(Arc<RecordingSet>),
    /// Real network, only to `allowed` (`host[:port]`).
    Live {
        /// The one authority that may be reached.
        allowed: String,
    },
    /// Real network to `allowed`, writing each exchange to `dir`.
    Record {
        /// The one authority that may be reached.
        allowed: String,
        /// Where recordings go.
        dir: PathBuf,
        /// What to scrub from what is written: the secrets of the key.
        secrets: Secrets,
    },
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Egress::Replay(set) => f.debug_tuple("Replay").field(&set.len()).finish(),
            Egress::Live { allowed } => f.debug_struct("Live").field("allowed", allowed).finish(),
            Egress::Record {
                allowed,
                dir,
                secrets,
            } => f
                .debug_struct("Record")
                .field("allowed", allowed)
                .field("dir", dir)
                .field("secrets", secrets)
                .finish(),
        }
    }
}

/// What happened to one request, for tests and diagnostics. Holds no header values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// Method.
    pub method: String,
    /// Full URL.
    pub url: String,
    /// Names of the headers sent (lower-case).
    pub header_names: Vec<String>,
    /// Whether the policy let it through (or answered it).
    pub allowed: bool,
}

/// A shared log of requests seen by every store of a harness.
pub type RequestLog = Arc<Mutex<Vec<SeenRequest>>>;

/// The wasi-http hooks of one store.
#[derive(Debug, Clone)]
pub struct Hooks {
    /// The policy.
    pub egress: Egress,
    /// Where requests are logged.
    pub log: RequestLog,
    /// One more authority (`host[:port]`, as [`normalise_authority`] writes
    /// it) that requests may reach on the real network whatever the
    /// policy: the gate's origin. Its requests and answers are streamed
    /// (nothing is buffered or recorded), with the guest's timeouts.
    pub also_live: Option<String>,
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

fn full_body(bytes: impl Into<Bytes>) -> WasiBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn done() -> Box<dyn Future<Output = Result<(), HttpError>> + Send> {
    Box::new(async { Ok(()) })
}

/// `host[:port]` with the scheme's default port removed, lower-case.
pub fn normalise_authority(authority: &str, https: bool) -> String {
    let a = authority.to_ascii_lowercase();
    match a.rsplit_once(':') {
        Some((host, "443")) if https => host.to_owned(),
        Some((host, "80")) if !https => host.to_owned(),
        _ => a,
    }
}

/// Sends `request` to the network, its answer streamed as it comes.
async fn send_live(
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ),
    HttpError,
> {
    let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
    Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as _))
}

impl Hooks {
    fn record_seen(&self, request: &http::Request<WasiBody>, allowed: bool) {
        let seen = SeenRequest {
            method: request.method().to_string(),
            url: request.uri().to_string(),
            header_names: request
                .headers()
                .keys()
                .map(|k| k.as_str().to_owned())
                .collect(),
            allowed,
        };
        if let Ok(mut log) = self.log.lock() {
            log.push(seen);
        }
    }
}

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _io: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        let https = request.uri().scheme() == Some(&http::uri::Scheme::HTTPS);
        let authority = request
            .uri()
            .authority()
            .map(|a| normalise_authority(a.as_str(), https))
            .unwrap_or_default();
        if self.also_live.as_deref() == Some(authority.as_str()) {
            self.record_seen(&request, true);
            return Box::new(async move {
                let (mut response, io) = send_live(request, options).await?;
                crate::gate::drop_connection_listed(response.headers_mut());
                Ok((response, io))
            });
        }
        match &self.egress {
            Egress::Replay(set) => {
                let found = set
                    .find(request.method().as_str(), &request.uri().to_string())
                    .cloned();
                self.record_seen(&request, found.is_some());
                Box::new(async move {
                    let recording = found.ok_or(HttpError::HttpRequestDenied)?;
                    let mut response = http::Response::builder().status(recording.status);
                    for (name, value) in &recording.headers {
                        response = response.header(name, value);
                    }
                    let response = response.body(full_body(recording.body)).map_err(|e| {
                        HttpError::InternalError(Some(format!("bad recording: {e}")))
                    })?;
                    Ok((response, done()))
                })
            }
            Egress::Live { allowed } | Egress::Record { allowed, .. } => {
                let allowed_here = authority == *allowed;
                self.record_seen(&request, allowed_here);
                let record = match &self.egress {
                    Egress::Record { dir, secrets, .. } => Some((dir.clone(), secrets.clone())),
                    _ => None,
                };
                Box::new(async move {
                    if !allowed_here {
                        return Err(HttpError::HttpRequestDenied);
                    }
                    let Some((dir, secrets)) = record else {
                        return send_live(request, options).await;
                    };
                    let method = request.method().to_string();
                    let url = request.uri().to_string();
                    let sent_headers: BTreeMap<String, String> = request
                        .headers()
                        .iter()
                        .map(|(k, v)| {
                            let value = if tip_enrich::is_auth_header(k.as_str()) {
                                "[redacted]".to_owned()
                            } else {
                                secrets
                                    .scrub(&String::from_utf8_lossy(v.as_bytes()))
                                    .into_owned()
                            };
                            (k.as_str().to_owned(), value)
                        })
                        .collect();
                    let (response, io) =
                        wasmtime_wasi_http::default_send_request(request, options).await?;
                    let driver = tokio::spawn(io);
                    let (parts, body) = response.into_parts();
                    let collected = Limited::new(body, RECORD_BODY_LIMIT)
                        .collect()
                        .await
                        .map_err(|_| HttpError::HttpResponseIncomplete)?
                        .to_bytes();
                    drop(driver);
                    let headers: BTreeMap<String, String> = parts
                        .headers
                        .iter()
                        .filter_map(|(k, v)| {
                            v.to_str()
                                .ok()
                                .map(|v| (k.as_str().to_owned(), secrets.scrub(v).into_owned()))
                        })
                        .collect();
                    let file = RecordingFile {
                        request: RecordedRequest {
                            method,
                            url: secrets.scrub(&url).into_owned(),
                            headers: sent_headers,
                        },
                        response: RecordedResponse {
                            status: parts.status.as_u16(),
                            headers,
                            body_file: None,
                            body: None,
                        },
                    };
                    if let Err(e) =
                        write_recording(&dir, &file, &secrets.scrub_bytes(collected.to_vec()))
                    {
                        eprintln!("tip-enrich: could not write a recording: {e}");
                    }
                    let response = http::Response::from_parts(parts, full_body(collected));
                    Ok((response, done()))
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_normalise_default_ports() {
        assert_eq!(
            normalise_authority("TIP.kaspersky.com:443", true),
            "tip.kaspersky.com"
        );
        assert_eq!(
            normalise_authority("tip.kaspersky.com:443", false),
            "tip.kaspersky.com:443"
        );
        assert_eq!(normalise_authority("127.0.0.1:80", false), "127.0.0.1");
        assert_eq!(normalise_authority("[::1]:8080", false), "[::1]:8080");
    }
}
