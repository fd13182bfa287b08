//! Recorded API exchanges: a human-editable format, a loader, a matcher and a
//! writer.
//!
//! A recording is one TOML file (any name ending in `.toml`) in a directory:
//!
//! ```toml
//! # What this exchange shows (free text).
//! [request]
//! method = "GET"
//! url = "https://tip.kaspersky.com/api/ip/45.9.148.108?sections=LicenseInfo,Zone,IpGeneralInfo"
//!
//! [response]
//! status = 200
//! headers = { "content-type" = "application/json" }
//! body_file = "bodies/45.9.148.108.json"   # relative to this file; or `body = "inline text"`
//! ```
//!
//! A request matches a recording when the method is the same (any case) and
//! the URL has the same scheme, authority (any case), path, and the same query
//! parameters in any order. Request headers play no part in matching, so no
//! credential is ever needed in, or written to, a recording.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why a recording could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// The directory or a file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// A recording is not valid TOML or lacks a field.
    #[error("{path}: {message}")]
    Invalid {
        /// The recording file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Two recordings answer the same request.
    #[error("{first} and {second} both record {key}")]
    Duplicate {
        /// One file.
        first: PathBuf,
        /// The other file.
        second: PathBuf,
        /// The request.
        key: String,
    },
}

/// The file format of a recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingFile {
    /// The request it answers.
    pub request: RecordedRequest,
    /// The response to give.
    pub response: RecordedResponse,
}

/// The request side of a recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedRequest {
    /// HTTP method.
    #[serde(default = "get")]
    pub method: String,
    /// Full URL with query.
    pub url: String,
    /// Headers that were sent (informational; auth values are always `[redacted]`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

fn get() -> String {
    "GET".to_owned()
}

/// The response side of a recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedResponse {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Body file, relative to the recording.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_file: Option<String>,
    /// Inline body (used when there is no body file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// A loaded recording, ready to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    /// Where it came from.
    pub path: PathBuf,
    /// Match key.
    pub key: RequestKey,
    /// Status to answer.
    pub status: u16,
    /// Headers to answer.
    pub headers: Vec<(String, String)>,
    /// Body to answer.
    pub body: Vec<u8>,
}

/// What a request is matched on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestKey {
    method: String,
    scheme: String,
    authority: String,
    path: String,
    query: Vec<String>,
}

impl RequestKey {
    /// Builds a key from a method and a full URL (`scheme://authority/path?query`).
    pub fn new(method: &str, url: &str) -> Result<RequestKey, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("{url:?} is not an absolute URL"))?;
        let (authority, path_query) = match rest.find('/').and_then(|i| rest.split_at_checked(i)) {
            Some(parts) => parts,
            None => (rest, "/"),
        };
        let authority = authority.to_ascii_lowercase();
        let scheme = scheme.to_ascii_lowercase();
        let authority = match (scheme.as_str(), authority.rsplit_once(':')) {
            ("https", Some((host, "443"))) | ("http", Some((host, "80"))) => host.to_owned(),
            _ => authority,
        };
        let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
        let mut query: Vec<String> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        query.sort();
        Ok(RequestKey {
            method: method.to_ascii_uppercase(),
            scheme,
            authority,
            path: path.to_owned(),
            query,
        })
    }
}

impl fmt::Display for RequestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}://{}{}",
            self.method, self.scheme, self.authority, self.path
        )?;
        if !self.query.is_empty() {
            write!(f, "?{}", self.query.join("&"))?;
        }
        Ok(())
    }
}

impl Recording {
    /// Parses one recording's text; `dir` resolves `body_file`, `read` reads it.
    pub fn parse(
        path: &Path,
        text: &str,
        read: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
    ) -> Result<Recording, RecordingError> {
        let invalid = |message: String| RecordingError::Invalid {
            path: path.to_owned(),
            message,
        };
        let file: RecordingFile =
            toml::from_str(text).map_err(|e| invalid(e.message().to_owned()))?;
        let key = RequestKey::new(&file.request.method, &file.request.url).map_err(invalid)?;
        if !(100..=999).contains(&file.response.status) {
            return Err(invalid(format!(
                "status {} is not an HTTP status",
                file.response.status
            )));
        }
        let body = match (&file.response.body_file, &file.response.body) {
            (Some(_), Some(_)) => return Err(invalid("give body or body_file, not both".into())),
            (Some(rel), None) => {
                let rel_path = Path::new(rel);
                if rel_path.is_absolute()
                    || rel_path
                        .components()
                        .any(|c| matches!(c, std::path::Component::ParentDir))
                {
                    return Err(invalid(format!(
                        "body_file {rel:?} must stay inside the recordings directory"
                    )));
                }
                let body_path = path.parent().unwrap_or(Path::new(".")).join(rel_path);
                read(&body_path).map_err(|source| RecordingError::Io {
                    path: body_path,
                    source,
                })?
            }
            (None, Some(inline)) => inline.as_bytes().to_vec(),
            (None, None) => Vec::new(),
        };
        let mut headers = Vec::new();
        for (name, value) in file.response.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || http::HeaderValue::from_str(&value).is_err()
            {
                return Err(invalid(format!(
                    "header {name:?} is not a valid HTTP header"
                )));
            }
            headers.push((name, value));
        }
        Ok(Recording {
            path: path.to_owned(),
            key,
            status: file.response.status,
            headers,
            body,
        })
    }
}

/// All recordings of a directory.
#[derive(Debug, Clone, Default)]
pub struct RecordingSet {
    recordings: BTreeMap<RequestKey, Recording>,
}

impl RecordingSet {
    /// Loads every `*.toml` in `dir` (not recursive). Fails on any bad file or
    /// on two recordings of one request, naming the files.
    pub fn load(dir: &Path) -> Result<RecordingSet, RecordingError> {
        let io = |source| RecordingError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
            .collect();
        paths.sort();
        let mut set = RecordingSet::default();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|source| RecordingError::Io {
                path: path.clone(),
                source,
            })?;
            set.insert(Recording::parse(&path, &text, &|p| std::fs::read(p))?)?;
        }
        Ok(set)
    }

    /// Adds one recording.
    pub fn insert(&mut self, recording: Recording) -> Result<(), RecordingError> {
        if let Some(existing) = self.recordings.get(&recording.key) {
            return Err(RecordingError::Duplicate {
                first: existing.path.clone(),
                second: recording.path,
                key: recording.key.to_string(),
            });
        }
        self.recordings.insert(recording.key.clone(), recording);
        Ok(())
    }

    /// The recording that answers `method url`, if any.
    pub fn find(&self, method: &str, url: &str) -> Option<&Recording> {
        let key = RequestKey::new(method, url).ok()?;
        self.recordings.get(&key)
    }

    /// Number of recordings.
    pub fn len(&self) -> usize {
        self.recordings.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.recordings.is_empty()
    }

    /// Every recording, in key order.
    pub fn iter(&self) -> impl Iterator<Item = &Recording> {
        self.recordings.values()
    }
}

/// A file-name stem for a recording of `url`: readable, and unique per URL.
pub fn file_stem(url: &str) -> String {
    let readable: String = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    // FNV-1a: stable across runs and Rust versions, unlike DefaultHasher.
    let hash = url.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{readable}-{:08x}", hash as u32)
}

/// Writes a recording (TOML plus a body file beside it) and returns the TOML path.
pub fn write_recording(
    dir: &Path,
    file: &RecordingFile,
    body: &[u8],
) -> Result<PathBuf, RecordingError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| RecordingError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let stem = file_stem(&file.request.url);
    let is_json = file
        .response
        .headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("content-type") && v.contains("json"));
    let body_name = format!("{stem}.body.{}", if is_json { "json" } else { "txt" });
    let mut file = file.clone();
    file.response.body_file = Some(body_name.clone());
    file.response.body = None;
    let text = toml::to_string_pretty(&file).map_err(|e| RecordingError::Invalid {
        path: dir.join(&stem),
        message: e.to_string(),
    })?;
    let body_path = dir.join(&body_name);
    std::fs::write(&body_path, body).map_err(io(&body_path))?;
    let toml_path = dir.join(format!("{stem}.toml"));
    std::fs::write(
        &toml_path,
        format!("# Recorded by tip-enrich --record.\n{text}"),
    )
    .map_err(io(&toml_path))?;
    Ok(toml_path)
}

/// The `recording_loader` fuzz target's check, shared with the tests below.
#[cfg(test)]
#[path = "../../fuzz/checks/recording_loader.rs"]
mod fuzz_check;

#[cfg(test)]
mod tests {
    use super::*;

    fn no_files(_: &Path) -> std::io::Result<Vec<u8>> {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no files here",
        ))
    }

    #[test]
    fn keys_ignore_query_order_case_and_default_ports() {
        let a = RequestKey::new(
            "get",
            "https://TIP.kaspersky.com:443/api/ip/1.2.3.4?b=2&a=1",
        )
        .unwrap();
        let b = RequestKey::new("GET", "https://tip.kaspersky.com/api/ip/1.2.3.4?a=1&b=2").unwrap();
        assert_eq!(a, b);
        let c = RequestKey::new("GET", "https://tip.kaspersky.com/api/ip/1.2.3.4?a=1").unwrap();
        assert_ne!(a, c);
        let d = RequestKey::new("GET", "http://tip.kaspersky.com/api/ip/1.2.3.4?a=1&b=2").unwrap();
        assert_ne!(b, d);
    }

    #[test]
    fn parses_inline_and_rejects_bad_files() {
        let ok = r#"
            [request]
            url = "http://127.0.0.1:1/api/ip/1.2.3.4"
            [response]
            status = 404
            body = "not found"
        "#;
        let r = Recording::parse(Path::new("x.toml"), ok, &no_files).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"not found"[..]));

        for bad in [
            "not toml [",
            "[request]\nurl = \"x\"\n[response]\nstatus = 200",
            "[request]\nurl = \"http://h/\"\n[response]\nstatus = 20",
            "[request]\nurl = \"http://h/\"\n[response]\nstatus = 200\nbody_file = \"../secret\"",
            "[request]\nurl = \"http://h/\"\n[response]\nstatus = 200\nbody_file = \"missing.json\"",
            "[request]\nurl = \"http://h/\"\n[response]\nstatus = 200\nheaders = { \"bad name\" = \"v\" }",
            "[request]\nurl = \"http://h/\"\nextra = 1\n[response]\nstatus = 200",
        ] {
            assert!(
                Recording::parse(Path::new("x.toml"), bad, &no_files).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn duplicates_are_refused() {
        let text = "[request]\nurl = \"http://h/a?x=1&y=2\"\n[response]\nstatus = 200";
        let mut set = RecordingSet::default();
        set.insert(Recording::parse(Path::new("a.toml"), text, &no_files).unwrap())
            .unwrap();
        let other = "[request]\nurl = \"http://h/a?y=2&x=1\"\n[response]\nstatus = 500";
        let err = set
            .insert(Recording::parse(Path::new("b.toml"), other, &no_files).unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("a.toml"));
        assert!(set.find("GET", "http://h/a?y=2&x=1").is_some());
        assert!(set.find("GET", "http://h/a?x=1").is_none());
    }

    #[test]
    fn writes_what_it_loads() {
        let dir = tempfile::tempdir().unwrap();
        let file = RecordingFile {
            request: RecordedRequest {
                method: "GET".into(),
                url: "http://127.0.0.1:9/api/ip/8.8.8.8?sections=Zone".into(),
                headers: BTreeMap::from([("x-api-key".into(), "[redacted]".into())]),
            },
            response: RecordedResponse {
                status: 200,
                headers: BTreeMap::from([("content-type".into(), "application/json".into())]),
                body_file: None,
                body: None,
            },
        };
        let path = write_recording(dir.path(), &file, br#"{"Zone":"Green"}"#).unwrap();
        assert!(path.to_string_lossy().ends_with(".toml"));
        let set = RecordingSet::load(dir.path()).unwrap();
        let r = set
            .find("GET", "http://127.0.0.1:9/api/ip/8.8.8.8?sections=Zone")
            .unwrap();
        assert_eq!(r.body, br#"{"Zone":"Green"}"#);
    }

    /// The recording_loader seeds: the bundled recordings and fuzz/seeds.
    fn fuzz_seeds() -> Vec<String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut seeds = Vec::new();
        for dir in ["tests/recordings", "fuzz/seeds/recording_loader"] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "toml") {
                    seeds.push(std::fs::read_to_string(path).unwrap());
                }
            }
        }
        seeds
    }

    #[test]
    fn fuzz_seeds_pass_the_recording_loader_check() {
        let seeds = fuzz_seeds();
        assert!(seeds.len() > 20);
        for seed in seeds {
            super::fuzz_check::check_text(&seed);
        }
    }

    /// The fuzz target's check over seeds mutated the way libFuzzer does
    /// (bytes changed, tokens inserted, ranges dropped), from a fixed seed so
    /// a failure reproduces.
    #[test]
    fn fuzz_target_recording_loader_mutations() {
        const TOKENS: [&str; 14] = [
            "\"",
            "'",
            "\\\\",
            "\\u0041",
            "[",
            "]",
            "=",
            "\n",
            "://",
            ":443",
            "?",
            "&",
            "../",
            "status = 999\n",
        ];
        let seeds = fuzz_seeds();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n.max(1) as u64) as usize
        };
        for _ in 0..3000 {
            let mut data = seeds[next(seeds.len())].clone().into_bytes();
            for _ in 0..1 + next(4) {
                let at = next(data.len() + 1);
                match next(3) {
                    0 if at < data.len() => data[at] = b" \"'=[]:/?&.\\\n#a0"[next(16)],
                    1 => {
                        let token = TOKENS[next(TOKENS.len())].as_bytes();
                        data.splice(at..at, token.iter().copied());
                    }
                    _ => {
                        let end = (at + next(8)).min(data.len());
                        data.drain(at..end);
                    }
                }
            }
            super::fuzz_check::check(&data);
        }
    }
}
