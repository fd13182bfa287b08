//! The secrets an API key makes, and the one way they leave text.
//!
//! A hostile or broken server may echo what it was sent: the key, for basic
//! auth its password, or the `Authorization` header's base64 token, plain or
//! JSON-escaped. [`Secrets`] derives all of them from the key once, and every
//! path that turns an answer or an error into WIT or JSON scrubs with it:
//! bodies before they are parsed ([`Secrets::scrub_body`]), messages in
//! [`crate::error::Error::into_wit`], and the host's recordings.

use std::borrow::Cow;

use crate::error::Error;

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";

/// Shorter strings are not treated as secrets: replacing every `ab` in a
/// message would mangle it and protect nothing.
const MIN_SECRET_LEN: usize = 4;

/// The secrets of one key. `Debug` shows how many, never what.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    list: Vec<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} redacted)", self.list.len())
    }
}

impl Secrets {
    /// The secrets of `key` (none for `None`): the key, for `user:password`
    /// the password alone, and the key in base64 as basic auth sends it.
    pub fn of_key(key: Option<&str>) -> Secrets {
        let Some(key) = key.map(str::trim).filter(|k| !k.is_empty()) else {
            return Secrets::default();
        };
        let mut list = vec![key.to_owned()];
        if let Some((_, password)) = key.split_once(':') {
            list.push(password.to_owned());
        }
        list.push(basic_token(key));
        list.retain(|s| s.len() >= MIN_SECRET_LEN);
        list.dedup();
        Secrets { list }
    }

    /// True when there is nothing to scrub.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// `text` with every secret replaced by [`REDACTED`].
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for secret in &self.list {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), REDACTED));
            }
        }
        out
    }

    /// Byte-level [`Secrets::scrub`], for bodies that may not be UTF-8.
    pub fn scrub_bytes(&self, body: Vec<u8>) -> Vec<u8> {
        let mut out = body;
        for secret in self.list.iter().map(String::as_bytes) {
            if !out.windows(secret.len()).any(|w| w == secret) {
                continue;
            }
            let mut scrubbed = Vec::with_capacity(out.len());
            let mut rest = out.as_slice();
            while !rest.is_empty() {
                if let Some(after) = rest.strip_prefix(secret) {
                    scrubbed.extend_from_slice(REDACTED.as_bytes());
                    rest = after;
                } else if let Some((first, after)) = rest.split_first() {
                    scrubbed.push(*first);
                    rest = after;
                }
            }
            out = scrubbed;
        }
        out
    }

    /// A JSON body made safe to parse and to pass on, once, before it is
    /// parsed: the secrets are replaced byte for byte, and then every string
    /// literal with an escape (which could spell a secret the byte pass
    /// cannot see, e.g. `\u0073ecret`) is decoded, scrubbed, and re-encoded
    /// if that changed it. Everything else stays verbatim, so the typed
    /// verdict and the JSON text handed to callers agree by construction.
    /// A literal that does not decode fails (the parse would fail too).
    pub fn scrub_body(&self, body: Vec<u8>) -> Result<Vec<u8>, Error> {
        if self.is_empty() {
            return Ok(body);
        }
        let body = self.scrub_bytes(body);
        if !body.contains(&b'\\') {
            return Ok(body);
        }
        // Escapes only matter in text: invalid UTF-8 reads as U+FFFD here.
        let text = match String::from_utf8(body) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        self.scrub_json_strings(&text).map(String::into_bytes)
    }

    fn scrub_json_strings(&self, json: &str) -> Result<String, Error> {
        let bad = || Error::Malformed("the API answer has an unreadable JSON string".into());
        let mut out = String::with_capacity(json.len());
        let mut rest = json;
        while let Some(open) = rest.find('"') {
            out.push_str(rest.get(..open).ok_or_else(bad)?);
            let literal_on = rest.get(open..).ok_or_else(bad)?;
            let bytes = literal_on.as_bytes();
            let (mut i, mut escaped) = (1, false);
            let end = loop {
                match bytes.get(i) {
                    None => return Err(bad()),
                    Some(b'\\') => (i, escaped) = (i + 2, true),
                    Some(b'"') => break i + 1,
                    Some(_) => i += 1,
                }
            };
            let literal = literal_on.get(..end).ok_or_else(bad)?;
            let decoded = if escaped {
                let inner = literal.get(1..end - 1).ok_or_else(bad)?;
                decode_json_string(inner).ok_or_else(bad)?
            } else {
                String::new()
            };
            match self.scrub(&decoded) {
                Cow::Borrowed(_) => out.push_str(literal),
                Cow::Owned(scrubbed) => {
                    out.push_str(&serde_json::to_string(&scrubbed).map_err(|_| bad())?);
                }
            }
            rest = literal_on.get(end..).ok_or_else(bad)?;
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// Credentials as the basic auth scheme sends them: standard base64 of
/// `user:password`.
pub(crate) fn basic_token(credentials: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(credentials)
}

/// Decodes the inside of a JSON string literal. A lone surrogate escape
/// (which serde_json refuses, yet skips in a value it ignores, and which
/// lenient readers accept) reads as U+FFFD; `None` for an unknown escape.
fn decode_json_string(inner: &str) -> Option<String> {
    let mut out = String::with_capacity(inner.len());
    let mut units: Vec<u16> = Vec::new();
    let flush = |units: &mut Vec<u16>, out: &mut String| {
        out.extend(char::decode_utf16(units.iter().copied()).map(|c| c.unwrap_or('\u{fffd}')));
        units.clear();
    };
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            flush(&mut units, &mut out);
            out.push(c);
            continue;
        }
        let plain = match chars.next()? {
            'u' => {
                let hex: String = chars.by_ref().take(4).collect();
                if hex.len() != 4 || !hex.chars().all(|h| h.is_ascii_hexdigit()) {
                    return None;
                }
                units.push(u16::from_str_radix(&hex, 16).ok()?);
                continue;
            }
            '"' => '"',
            '\\' => '\\',
            '/' => '/',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            _ => return None,
        };
        flush(&mut units, &mut out);
        out.push(plain);
    }
    flush(&mut units, &mut out);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_makes_its_password_and_basic_token() {
        let s = Secrets::of_key(Some("user:pa ss"));
        assert_eq!(s.list, ["user:pa ss", "pa ss", "dXNlcjpwYSBzcw=="]);
        assert!(Secrets::of_key(None).is_empty());
        assert!(Secrets::of_key(Some("  ")).is_empty());
        // Too short to scrub safely.
        assert_eq!(Secrets::of_key(Some("k:ab")).list, ["k:ab", "azphYg=="]);
        assert_eq!(format!("{s:?}"), "Secrets(3 redacted)");
    }

    #[test]
    fn scrub_text_and_bytes() {
        let s = Secrets::of_key(Some("hunter2-key"));
        assert_eq!(s.scrub("a hunter2-key b"), "a [redacted] b");
        assert!(matches!(s.scrub("clean"), Cow::Borrowed(_)));
        assert_eq!(
            s.scrub_bytes(b"\xffhunter2-key\xfe".to_vec()),
            b"\xff[redacted]\xfe"
        );
    }

    #[test]
    fn scrub_body_sees_through_json_escapes() {
        let s = Secrets::of_key(Some("hunter2-key"));
        let body = br#"{"a":"\u0068unter2-key","b":"x\"y","c":"hunter2-key"}"#.to_vec();
        let out = String::from_utf8(s.scrub_body(body).unwrap()).unwrap();
        assert_eq!(out, r#"{"a":"[redacted]","b":"x\"y","c":"[redacted]"}"#);
        assert!(s.scrub_body(br#"{"a":"\q"}"#.to_vec()).is_err());
        // Without secrets the body is not touched at all.
        let raw = br#"{"a":"\q"}"#.to_vec();
        assert_eq!(Secrets::default().scrub_body(raw.clone()).unwrap(), raw);
    }

    #[test]
    fn json_strings_scrubbed_lexically_rest_verbatim() {
        let secrets = Secrets::of_key(Some("s3cr3t-key"));
        let deep = format!("{}{}", "[".repeat(500), "]".repeat(500));
        let json = format!(
            r#"{{"a":"s3cr3t\u002dkey","b\/":"x\"y","n":1e400,"d":{deep},"k\u0073":"s3cr3t\u002dkey!"}}"#
        );
        assert_eq!(
            secrets.scrub_json_strings(&json).unwrap(),
            format!(
                r#"{{"a":"[redacted]","b\/":"x\"y","n":1e400,"d":{deep},"k\u0073":"[redacted]!"}}"#
            )
        );
        assert!(secrets.scrub_json_strings(r#"{"a":"open"#).is_err());
        assert!(secrets.scrub_json_strings(r#"{"a":"\x"}"#).is_err());
        // Lone surrogates read as U+FFFD; a literal is kept unless scrubbed.
        assert_eq!(
            secrets
                .scrub_json_strings(r#"["\ud800","s3cr3t\u002dkey\udc00","\ud83d\ude00"]"#)
                .unwrap(),
            "[\"\\ud800\",\"[redacted]\u{fffd}\",\"\\ud83d\\ude00\"]"
        );
        assert_eq!(
            decode_json_string(r#"a\ud83d\ude00\n\u0041\/\\\""#).as_deref(),
            Some("a\u{1f600}\nA/\\\"")
        );
    }
}
