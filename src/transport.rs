//! The IO boundary: what the core asks of an HTTP transport. The component
//! implements it over wasi-http (`wasi_http.rs`); tests implement it with a
//! simulated clock.

use crate::error::Error;
use crate::request::HttpRequest;

/// Time and size limits of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connect timeout, ms.
    pub connect_timeout_ms: u32,
    /// Time to response headers, ms.
    pub first_byte_timeout_ms: u32,
    /// Longest pause between body chunks, ms.
    pub between_bytes_timeout_ms: u32,
    /// End-to-end limit, headers and whole body, ms.
    pub total_timeout_ms: u32,
    /// Body cap, bytes.
    pub max_body_bytes: u32,
}

impl Limits {
    /// The same limits, with every timeout capped at `ms` (what is left of a deadline).
    pub fn capped(self, ms: u32) -> Limits {
        let ms = ms.max(1);
        Limits {
            connect_timeout_ms: self.connect_timeout_ms.min(ms),
            first_byte_timeout_ms: self.first_byte_timeout_ms.min(ms),
            between_bytes_timeout_ms: self.between_bytes_timeout_ms.min(ms),
            total_timeout_ms: self.total_timeout_ms.min(ms),
            max_body_bytes: self.max_body_bytes,
        }
    }
}

/// A received response: status, headers, and the whole body (within the cap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// HTTP status.
    pub status: u16,
    /// Header names (lower-case) and values.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First value of a header, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// A failed attempt: the error, and whether it failed before any response
/// byte arrived (only those are worth retrying).
#[derive(Debug, Clone, PartialEq)]
pub struct SendError {
    /// [`Error::Timeout`], [`Error::Transport`], [`Error::BodyTooLarge`],
    /// [`Error::Malformed`] or [`Error::Config`].
    pub error: Error,
    /// True when nothing of a response had arrived (connect, DNS, reset before
    /// headers, first-byte timeout); false for denials and body failures.
    pub retryable: bool,
}

impl SendError {
    /// A failure before any response byte.
    pub fn before_response(error: Error) -> SendError {
        SendError {
            error,
            retryable: true,
        }
    }

    /// A failure that retrying would not fix (denied, body failed, bad config).
    pub fn fatal(error: Error) -> SendError {
        SendError {
            error,
            retryable: false,
        }
    }
}

/// Identifies a started request.
pub type Ticket = u64;

/// An HTTP transport that can keep several requests in flight.
pub trait Transport {
    /// Starts `request`; its outcome comes back from [`Transport::wait`].
    fn start(&mut self, request: &HttpRequest, limits: &Limits) -> Ticket;
    /// Blocks (without spinning) until at least one started request is done or
    /// the monotonic clock reaches `until_ms`; returns what is done.
    fn wait(&mut self, until_ms: Option<u64>) -> Vec<(Ticket, Result<HttpResponse, SendError>)>;
    /// Monotonic clock, ms.
    fn now_ms(&mut self) -> u64;
    /// Wall clock, Unix seconds, for `Retry-After` dates.
    fn now_unix_secs(&mut self) -> Option<u64>;
    /// Wall clock, Unix milliseconds, for the answer store's dates.
    fn now_unix_ms(&mut self) -> Option<u64> {
        self.now_unix_secs().map(|s| s.saturating_mul(1000))
    }
    /// Randomness for backoff jitter.
    fn random_u64(&mut self) -> u64;
}
