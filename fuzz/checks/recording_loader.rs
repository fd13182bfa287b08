//! Shared by the `recording_loader` fuzz target and the unit tests of
//! `host-harness/src/recordings.rs`: a recording's TOML text through the
//! loader's parse, the matcher and the writer's serialisation. Panics when an
//! invariant does not hold. Expects the recordings module at `crate::recordings`.

use std::cell::RefCell;
use std::path::{Component, Path, PathBuf};

use crate::recordings::{Recording, RecordingError, RecordingFile, RecordingSet, RequestKey};

/// What a body file read returns.
pub const BODY: &[u8] = br#"{"Zone":"Red"}"#;

/// The same URL as a client might spell it: scheme and authority in upper
/// case, query parameters reversed. `None` when it is not `scheme://a/p`.
fn respelled(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let slash = rest.find('/')?;
    let (authority, path_query) = rest.split_at_checked(slash)?;
    let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
    let mut params: Vec<&str> = query.split('&').collect();
    params.reverse();
    Some(format!(
        "{}://{}{path}?{}",
        scheme.to_ascii_uppercase(),
        authority.to_ascii_uppercase(),
        params.join("&")
    ))
}

/// The whole check for one recording text.
pub fn check_text(text: &str) {
    let dir = Path::new("recs");
    let path = dir.join("fuzz.toml");
    let reads: RefCell<Vec<PathBuf>> = RefCell::new(Vec::new());
    let read = |p: &Path| -> std::io::Result<Vec<u8>> {
        reads.borrow_mut().push(p.to_owned());
        if p.to_string_lossy().contains("missing") {
            Err(std::io::Error::new(std::io::ErrorKind::NotFound, "missing"))
        } else {
            Ok(BODY.to_vec())
        }
    };
    let parsed = Recording::parse(&path, text, &read);
    let reads = reads.into_inner();
    assert!(reads.len() <= 1, "read {} body files", reads.len());
    for p in &reads {
        assert!(
            p.starts_with(dir),
            "read {p:?} outside the recordings directory"
        );
        assert!(
            !p.components().any(|c| matches!(c, Component::ParentDir)),
            "read {p:?} through .."
        );
    }
    let recording = match parsed {
        Ok(r) => r,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert_eq!(recording.path, path);
    assert!((100..=999).contains(&recording.status));
    for (name, value) in &recording.headers {
        assert!(http::HeaderName::from_bytes(name.as_bytes()).is_ok());
        assert!(http::HeaderValue::from_str(value).is_ok());
    }

    // What the loader read is the file the writer would write back.
    let file: RecordingFile = toml::from_str(text).expect("a loaded recording is valid TOML");
    let body: &[u8] = match (&file.response.body_file, &file.response.body) {
        (Some(_), _) => BODY,
        (None, Some(inline)) => inline.as_bytes(),
        (None, None) => b"",
    };
    assert_eq!(recording.body, body);
    assert_eq!(recording.headers.len(), file.response.headers.len());
    let written = toml::to_string_pretty(&file).expect("a loaded recording serialises");
    let reread: RecordingFile = toml::from_str(&written).expect("a written recording re-parses");
    assert_eq!(
        reread, file,
        "the writer's TOML does not read back the same"
    );

    // The matcher: the recording answers its own request however it is spelled,
    // and a second recording of it is refused.
    let (method, url) = (&file.request.method, &file.request.url);
    let key = RequestKey::new(method, url).expect("a loaded recording has a key");
    assert_eq!(key, recording.key);
    let mut set = RecordingSet::default();
    set.insert(recording.clone())
        .expect("the first recording of a request is accepted");
    assert_eq!(set.find(method, url), Some(&recording));
    if let Some(other) = respelled(url) {
        assert_eq!(
            set.find(&method.to_ascii_lowercase(), &other),
            Some(&recording),
            "{url:?} respelled as {other:?} does not match"
        );
    }
    let again = Recording {
        path: dir.join("again.toml"),
        ..recording
    };
    match set.insert(again) {
        Err(e @ RecordingError::Duplicate { .. }) => {
            let message = e.to_string();
            assert!(message.contains("fuzz.toml") && message.contains("again.toml"));
        }
        other => panic!("a duplicate recording was not refused: {other:?}"),
    }
    assert_eq!(set.len(), 1);
}

/// Arbitrary bytes, read as text.
pub fn check(data: &[u8]) {
    check_text(&String::from_utf8_lossy(data));
}
