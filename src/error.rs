//! Errors inside the component, the status-code mapping, and the one mapping
//! to the WIT `enrich-error` variant (which also scrubs secrets).

use crate::bindings::{EnrichError, RateLimit, UpstreamError};
use crate::ip::IpError;
use crate::secrets::Secrets;
use crate::text;

/// Longest excerpt of an error body quoted in a message.
const EXCERPT_CHARS: usize = 120;

/// Longest host error detail quoted in a message.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
const DETAIL_CHARS: usize = 160;

/// Everything that can go wrong in one lookup.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The input is not one IP address.
    #[error(transparent)]
    InvalidIp(#[from] IpError),
    /// 400 or 414.
    #[error("the API rejected the query (HTTP {status}){}", excerpt_suffix(.excerpt))]
    BadRequest {
        /// The status.
        status: u16,
        /// A short excerpt of the body.
        excerpt: String,
    },
    /// 401.
    #[error("authentication failed (HTTP 401): check the API key and auth scheme, and that the terms were accepted in the portal{}", excerpt_suffix(.excerpt))]
    Unauthorized {
        /// A short excerpt of the body.
        excerpt: String,
    },
    /// 403.
    #[error("quota or request limit exceeded, or no API access (HTTP 403){}", excerpt_suffix(.excerpt))]
    QuotaExceeded {
        /// A short excerpt of the body.
        excerpt: String,
    },
    /// 429.
    #[error("rate limited (HTTP 429){}{}", retry_suffix(*.retry_after_secs), excerpt_suffix(.excerpt))]
    RateLimited {
        /// The parsed `Retry-After`.
        retry_after_secs: Option<u32>,
        /// A short excerpt of the body.
        excerpt: String,
    },
    /// Any other non-success status.
    #[error("unexpected HTTP {status} from the API{}", excerpt_suffix(.excerpt))]
    Upstream {
        /// The status.
        status: u16,
        /// A short excerpt of the body.
        excerpt: String,
    },
    /// The quota ran out earlier (the answer store's record): nothing sent.
    #[error("{0}")]
    QuotaCooldown(String),
    /// A timeout fired.
    #[error("{0}")]
    Timeout(String),
    /// Sending or reading failed.
    #[error("{0}")]
    Transport(String),
    /// The body was larger than allowed.
    #[error("response body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The cap, in bytes.
        limit: u64,
    },
    /// The body was not the JSON object expected.
    #[error("{0}")]
    Malformed(String),
    /// Settings or environment unusable.
    #[error("{0}")]
    Config(String),
    /// A state the flow cannot reach (a bug): reported, never a trap.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

fn excerpt_suffix(excerpt: &str) -> String {
    if excerpt.is_empty() {
        String::new()
    } else {
        format!(": \"{excerpt}\"")
    }
}

fn retry_suffix(secs: Option<u32>) -> String {
    secs.map(|s| format!(", retry after {s} s"))
        .unwrap_or_default()
}

impl Error {
    /// The one mapping to the WIT variant. Every secret is replaced in the
    /// message, so a server that echoes the key cannot leak it.
    pub fn into_wit(self, secrets: &Secrets) -> EnrichError {
        let message = secrets.scrub(&self.to_string()).into_owned();
        match self {
            Error::InvalidIp(_) => EnrichError::InvalidIp(message),
            Error::BadRequest { .. } => EnrichError::BadRequest(message),
            Error::Unauthorized { .. } => EnrichError::Unauthorized(message),
            Error::QuotaExceeded { .. } | Error::QuotaCooldown(_) => {
                EnrichError::QuotaExceeded(message)
            }
            Error::RateLimited {
                retry_after_secs, ..
            } => EnrichError::RateLimited(RateLimit {
                retry_after_secs,
                message,
            }),
            Error::Upstream { status, .. } => {
                EnrichError::Upstream(UpstreamError { status, message })
            }
            Error::Timeout(_) => EnrichError::Timeout(message),
            Error::Transport(_) | Error::Internal(_) => EnrichError::Transport(message),
            Error::BodyTooLarge { .. } | Error::Malformed(_) => {
                EnrichError::MalformedResponse(message)
            }
            Error::Config(_) => EnrichError::Config(message),
        }
    }
}

/// The kind of an error, spelled as its WIT case (`rate-limited`, ...).
pub fn kind(e: &EnrichError) -> &'static str {
    match e {
        EnrichError::InvalidIp(_) => "invalid-ip",
        EnrichError::BadRequest(_) => "bad-request",
        EnrichError::Unauthorized(_) => "unauthorized",
        EnrichError::QuotaExceeded(_) => "quota-exceeded",
        EnrichError::RateLimited(_) => "rate-limited",
        EnrichError::Upstream(_) => "upstream",
        EnrichError::Timeout(_) => "timeout",
        EnrichError::Transport(_) => "transport",
        EnrichError::MalformedResponse(_) => "malformed-response",
        EnrichError::Config(_) => "config",
    }
}

/// What a non-200, non-404 status means. `retry_after_secs` is the parsed
/// `Retry-After` header, if any.
pub fn status_error(status: u16, body: &[u8], retry_after_secs: Option<u32>) -> Error {
    let excerpt = excerpt(body);
    match status {
        400 | 414 => Error::BadRequest { status, excerpt },
        401 => Error::Unauthorized { excerpt },
        403 => Error::QuotaExceeded { excerpt },
        429 => Error::RateLimited {
            retry_after_secs,
            excerpt,
        },
        _ => Error::Upstream { status, excerpt },
    }
}

/// A short, single-line, printable excerpt of an error body: the `<title>` of
/// an HTML page or its text without tags, whitespace collapsed.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let lower = text.to_ascii_lowercase();
    let looks_html =
        lower.contains("<html") || lower.contains("<!doctype") || lower.contains("<body");
    let source: String = if looks_html {
        match title_of(&text, &lower) {
            Some(title) => title.to_owned(),
            None => strip_tags(&text),
        }
    } else {
        text.into_owned()
    };
    // Words joined by single spaces, control characters dropped, `"` as `'`.
    let mut normalised = source
        .split_whitespace()
        .map(|word| word.chars().filter(|c| !c.is_control()).collect::<String>())
        .filter(|word| !word.is_empty())
        .flat_map(|word| std::iter::once(' ').chain(word.chars().collect::<Vec<_>>()))
        .skip(1)
        .map(|c| if c == '"' { '\'' } else { c });
    let mut out: String = normalised.by_ref().take(EXCERPT_CHARS).collect();
    if normalised.next().is_some() {
        out.push('…');
    }
    out
}

/// A host's error text (`wasi:io/error.to-debug-string`) fit for a message:
/// the error and its causes without the host's backtrace (wasmtime appends
/// one when `RUST_BACKTRACE` is set), on one line, at most [`DETAIL_CHARS`]
/// characters plus an ellipsis. Cuts on characters, never inside one.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) fn host_detail(debug: &str) -> String {
    let text = debug.split("Stack backtrace:").next().unwrap_or_default();
    let one_line: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    text::bounded(&one_line, DETAIL_CHARS).into_owned()
}

fn title_of<'a>(text: &'a str, lower: &str) -> Option<&'a str> {
    let open = lower.find("<title")?;
    let start = open + lower.get(open..)?.find('>')? + 1;
    let end = start + lower.get(start..)?.find("</title")?;
    text.get(start..end).filter(|t| !t.trim().is_empty())
}

fn strip_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(4096));
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// Parses `Retry-After`: delta-seconds, or an HTTP date given the current Unix
/// time. Past dates read as 0; absurd values are capped at a day.
pub fn parse_retry_after(value: &str, now_unix_secs: Option<u64>) -> Option<u32> {
    const CAP: u64 = 86_400;
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return u32::try_from(secs.min(CAP)).ok();
    }
    let now = now_unix_secs?;
    let at = httpdate::parse_http_date(value).ok()?;
    let at = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    u32::try_from(at.saturating_sub(now).min(CAP)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_kinds() {
        assert!(matches!(
            status_error(400, b"", None),
            Error::BadRequest { status: 400, .. }
        ));
        assert!(matches!(
            status_error(414, b"", None),
            Error::BadRequest { status: 414, .. }
        ));
        assert!(matches!(
            status_error(401, b"", None),
            Error::Unauthorized { .. }
        ));
        assert!(matches!(
            status_error(403, b"", None),
            Error::QuotaExceeded { .. }
        ));
        assert!(matches!(
            status_error(429, b"", Some(7)),
            Error::RateLimited {
                retry_after_secs: Some(7),
                ..
            }
        ));
        assert!(matches!(
            status_error(500, b"", None),
            Error::Upstream { status: 500, .. }
        ));
        assert!(matches!(
            status_error(302, b"", None),
            Error::Upstream { status: 302, .. }
        ));
    }

    #[test]
    fn excerpt_of_html_is_its_title() {
        let html = b"<!DOCTYPE html><html><head><title>503 Service\n Unavailable</title></head><body><h1>x</h1></body></html>";
        assert_eq!(excerpt(html), "503 Service Unavailable");
        let untitled = b"<html><body><h1>Forbidden</h1><p>No access</p></body></html>";
        assert_eq!(excerpt(untitled), "Forbidden No access");
    }

    #[test]
    fn excerpt_is_short_single_line_and_printable() {
        let long = "word ".repeat(100);
        let e = excerpt(long.as_bytes());
        assert!(e.chars().count() <= EXCERPT_CHARS + 1);
        assert!(e.ends_with('…'));
        assert_eq!(excerpt(b"a\r\nb\x1b[31m\"q\""), "a b[31m'q'");
        assert_eq!(excerpt(b"\xff\xfe bad utf8"), "\u{fffd}\u{fffd} bad utf8");
    }

    #[test]
    fn excerpt_bound_holds_when_a_word_ends_at_the_limit() {
        // Found by tests/properties.rs: 120 characters ending a word, then
        // another word, gave 122 (a space and the ellipsis past the limit).
        let body = "! ".repeat(200);
        let e = excerpt(body.as_bytes());
        assert_eq!(e.chars().count(), EXCERPT_CHARS + 1);
        assert!(e.ends_with('…'));
        assert_eq!(
            excerpt("x".repeat(EXCERPT_CHARS).as_bytes())
                .chars()
                .count(),
            EXCERPT_CHARS
        );
    }

    #[test]
    fn host_detail_cuts_on_a_char_boundary() {
        // The body-stream error detail was cut with `String::truncate(160)`,
        // which panics (a trap: the component aborts on panic) when byte 160
        // falls inside a character, e.g. in a backtrace path under /home/josé.
        let head = "hyper error: error reading a body from connection\n\nStack backtrace:\n   0: capture\n             at /home/";
        let user = format!("{}jos", "x".repeat(159 - head.len() - 3));
        let debug = format!("{head}{user}é/.cargo/registry/src/lib.rs:24:9");
        assert!(!debug.is_char_boundary(160));
        assert_eq!(
            host_detail(&debug),
            "hyper error: error reading a body from connection"
        );
        let long = format!("{}é{}", "a".repeat(159), "ü".repeat(300));
        assert!(!long.is_char_boundary(160));
        let detail = host_detail(&long);
        assert_eq!(detail.chars().count(), DETAIL_CHARS + 1);
        assert!(detail.ends_with("aé…"), "{detail}");
    }

    #[test]
    fn host_detail_drops_the_backtrace_and_keeps_one_line() {
        let debug = "hyper error: error reading a body from connection\n\nCaused by:\n    0: connection reset\n\nStack backtrace:\n   0: wasmtime_internal_core::error::backtrace::capture\n             at /root/.cargo/registry/src/x.rs:24:9\n";
        assert_eq!(
            host_detail(debug),
            "hyper error: error reading a body from connection Caused by: 0: connection reset"
        );
        assert_eq!(host_detail("timeout\r\n"), "timeout");
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("30", None), Some(30));
        assert_eq!(parse_retry_after(" 99999999 ", None), Some(86_400));
        // Sun, 06 Nov 1994 08:49:37 GMT = 784111777
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", Some(784_111_700)),
            Some(77)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", Some(784_111_800)),
            Some(0)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", None),
            None
        );
        assert_eq!(parse_retry_after("soon", Some(0)), None);
    }

    #[test]
    fn wit_mapping_scrubs_secrets() {
        let e = Error::Unauthorized {
            excerpt: "bad key s3cr3t-key-value".into(),
        };
        let EnrichError::Unauthorized(msg) = e.into_wit(&Secrets::of_key(Some("s3cr3t-key-value")))
        else {
            panic!("wrong kind");
        };
        assert!(!msg.contains("s3cr3t"));
        assert!(msg.contains("[redacted]"));
    }
}
