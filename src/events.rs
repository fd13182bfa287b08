//! Event enrichment, free of IO: the addresses at the configured fields of an
//! NDJSON event, and the event with ECS `threat.enrichments[]` entries (and
//! `kaspersky.tip.errors[]`) appended.
//!
//! The event is edited as text: new entries are spliced in before the closing
//! bracket of the array (or object) they join, so every byte of the event
//! that is not added stays as it was: key order, number spelling, escapes
//! and whitespace. Nothing is re-serialised. A line that is not one JSON
//! object is reported as such and left to the caller to pass through.
//!
//! Used by `tip-enrich events` (the host) and `POST /v1/events` (the
//! service), each with its own lookup: [`enrich_lines`] sends the distinct
//! addresses of a chunk of lines to it at once.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::bindings::{EnrichError, SoarVerdict, Verdict};
use crate::json;

/// The fields searched when none are given: every ECS field that holds an
/// address of a party to the event.
pub const DEFAULT_FIELDS: [&str; 6] = [
    "source.ip",
    "destination.ip",
    "client.ip",
    "server.ip",
    "host.ip",
    "related.ip",
];

/// Where the enrichments go.
const ENRICHMENTS: [&str; 2] = ["threat", "enrichments"];
/// Where failed lookups are listed.
const ERRORS: [&str; 3] = ["kaspersky", "tip", "errors"];

/// A field of an event, as a dotted path (`source.ip`). Nested objects and
/// dotted keys both match it: `{"source":{"ip":…}}`, `{"source.ip":…}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    text: String,
    /// The names between the dots, split once here rather than per event.
    segments: Vec<String>,
}

impl FieldPath {
    /// A path of non-empty dot-separated names.
    pub fn parse(text: &str) -> Result<FieldPath, String> {
        let text = text.trim();
        if text.is_empty() || text.split('.').any(str::is_empty) {
            return Err(format!(
                "{}: a field is a dotted path such as source.ip",
                json::to_string(text)
            ));
        }
        Ok(FieldPath {
            text: text.to_owned(),
            segments: text.split('.').map(str::to_owned).collect(),
        })
    }

    /// The path as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Parses a list of fields, each given once or as a comma-separated list;
/// an empty list means [`DEFAULT_FIELDS`].
pub fn parse_fields<S: AsRef<str>>(given: &[S]) -> Result<Vec<FieldPath>, String> {
    let mut fields: Vec<FieldPath> = Vec::new();
    for list in given {
        for one in list.as_ref().split(',') {
            let field = FieldPath::parse(one)?;
            if !fields.contains(&field) {
                fields.push(field);
            }
        }
    }
    if fields.is_empty() {
        return DEFAULT_FIELDS.iter().map(|f| FieldPath::parse(f)).collect();
    }
    Ok(fields)
}

/// Which verdicts become enrichments (`--only`): by default malicious and
/// suspicious ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Only {
    malicious: bool,
    suspicious: bool,
    benign: bool,
    unknown: bool,
}

impl Default for Only {
    fn default() -> Only {
        Only {
            malicious: true,
            suspicious: true,
            benign: false,
            unknown: false,
        }
    }
}

impl Only {
    /// `all`, or a comma-separated list of `malicious`, `suspicious`,
    /// `benign`, `unknown`.
    pub fn parse(list: &str) -> Result<Only, String> {
        let mut only = Only {
            malicious: false,
            suspicious: false,
            benign: false,
            unknown: false,
        };
        for name in list.split(',').map(str::trim) {
            match name.to_ascii_lowercase().as_str() {
                "all" => {
                    only = Only {
                        malicious: true,
                        suspicious: true,
                        benign: true,
                        unknown: true,
                    }
                }
                "malicious" => only.malicious = true,
                "suspicious" => only.suspicious = true,
                "benign" => only.benign = true,
                "unknown" => only.unknown = true,
                _ => {
                    return Err(format!(
                        "{}: use all, or a list of malicious, suspicious, benign, unknown",
                        json::to_string(name)
                    ));
                }
            }
        }
        Ok(only)
    }

    /// Whether a verdict of this class becomes an enrichment.
    pub fn admits(&self, verdict: SoarVerdict) -> bool {
        match verdict {
            SoarVerdict::Malicious => self.malicious,
            SoarVerdict::Suspicious => self.suspicious,
            SoarVerdict::Benign => self.benign,
            SoarVerdict::Unknown => self.unknown,
        }
    }
}

/// How events are enriched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The fields whose addresses are looked up.
    pub fields: Vec<FieldPath>,
    /// Which verdicts become enrichments.
    pub only: Only,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            fields: parse_fields::<&str>(&[]).unwrap_or_default(),
            only: Only::default(),
        }
    }
}

/// A lookup that failed, as `kaspersky.tip.errors[]` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupError {
    /// The WIT error case (`invalid-ip`, `timeout`, ...) or a host's own
    /// kind (`trap`).
    pub kind: Cow<'static, str>,
    /// What went wrong.
    pub message: String,
}

impl From<&EnrichError> for LookupError {
    fn from(e: &EnrichError) -> LookupError {
        LookupError {
            kind: Cow::Borrowed(crate::error::kind(e)),
            message: json::error_message(e).to_owned(),
        }
    }
}

/// The outcome of one address's lookup.
pub type Lookup = Result<Verdict, LookupError>;

/// One line, scanned.
#[derive(Debug)]
pub enum Scanned<'a> {
    /// Only whitespace: passed through, not counted.
    Blank,
    /// Not one JSON object: passed through byte for byte, and counted.
    NotAnObject,
    /// An event, and the addresses at its fields.
    Event(Event<'a>),
}

/// An event: its text and the addresses found at the configured fields.
#[derive(Debug)]
pub struct Event<'a> {
    text: &'a str,
    /// (index into the options' fields, the address as the event has it),
    /// each pair once, in the order of the fields and then of the event.
    found: Vec<(usize, String)>,
}

impl Event<'_> {
    /// The addresses found, in order (an address at two fields twice).
    pub fn addresses(&self) -> impl Iterator<Item = &str> {
        self.found.iter().map(|(_, a)| a.as_str())
    }
}

/// An object's entries in order, values unparsed.
type Entries<'a> = Vec<(Cow<'a, str>, &'a RawValue)>;

/// A key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// An object's entries, in order (duplicates kept).
struct Object<'a>(Entries<'a>);

impl<'de> de::Deserialize<'de> for Object<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Object<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object<'de>, A::Error> {
                let mut entries = Vec::new();
                while let Some((Key(k), v)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    entries.push((k, v));
                }
                Ok(Object(entries))
            }
        }
        d.deserialize_map(V)
    }
}

/// An array's elements, unparsed.
struct Array<'a>(Vec<&'a RawValue>);

impl<'de> de::Deserialize<'de> for Array<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Array<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Array<'de>, A::Error> {
                let mut items = Vec::new();
                while let Some(v) = seq.next_element::<&'de RawValue>()? {
                    items.push(v);
                }
                Ok(Array(items))
            }
        }
        d.deserialize_seq(V)
    }
}

/// The entries of `text` when it is exactly one JSON object (surrounding
/// whitespace allowed).
fn entries(text: &str) -> Option<Entries<'_>> {
    let mut de = serde_json::Deserializer::from_str(text);
    let object = de::Deserialize::deserialize(&mut de).ok()?;
    de.end().ok()?;
    let Object(entries) = object;
    Some(entries)
}

fn elements(text: &str) -> Option<Vec<&RawValue>> {
    serde_json::from_str::<Array<'_>>(text).ok().map(|a| a.0)
}

/// `text` after a leading UTF-8 byte-order mark, if any.
fn without_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// JSON whitespace only (not Unicode's).
fn trim_json(text: &str) -> &str {
    text.trim_matches([' ', '\t', '\n', '\r'])
}

/// What is left of `path` after `key`, when `key` names its first segments
/// (`source.ip` names both of `[source, ip]`; `source` the first).
fn after_key<'p>(key: &str, path: &'p [String]) -> Option<&'p [String]> {
    let mut n = 0;
    for part in key.split('.') {
        if path.get(n).map(String::as_str) != Some(part) {
            return None;
        }
        n += 1;
    }
    path.get(n..)
}

/// Every value at `path` below an object's entries.
fn values_at<'a>(
    entries: &[(Cow<'a, str>, &'a RawValue)],
    path: &[String],
    out: &mut Vec<&'a RawValue>,
) {
    for (key, value) in entries {
        let Some(rest) = after_key(key, path) else {
            continue;
        };
        if rest.is_empty() {
            out.push(value);
        } else if let Some(inner) = entries_of_object(value) {
            values_at(&inner, rest, out);
        }
    }
}

fn entries_of_object(value: &RawValue) -> Option<Entries<'_>> {
    value
        .get()
        .starts_with('{')
        .then(|| entries(value.get()))
        .flatten()
}

/// The addresses a field's value holds: a string, or the strings of an array.
fn addresses_in(value: &RawValue, out: &mut Vec<String>) {
    let text = value.get();
    if text.starts_with('"') {
        if let Ok(s) = serde_json::from_str::<String>(text) {
            out.push(s);
        }
    } else if text.starts_with('[') {
        for item in elements(text).unwrap_or_default() {
            if item.get().starts_with('"')
                && let Ok(s) = serde_json::from_str::<String>(item.get())
            {
                out.push(s);
            }
        }
    }
}

/// Scans one line (without its line terminator) for the addresses at
/// `fields`.
pub fn scan<'a>(line: &'a [u8], fields: &[FieldPath]) -> Scanned<'a> {
    if line
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
    {
        return Scanned::Blank;
    }
    let Ok(text) = std::str::from_utf8(line) else {
        return Scanned::NotAnObject;
    };
    // A byte-order mark (a file saved on Windows) is kept, not parsed.
    let json = without_bom(text);
    if !trim_json(json).starts_with('{') {
        return Scanned::NotAnObject;
    }
    let Some(top) = entries(json) else {
        return Scanned::NotAnObject;
    };
    let mut found: Vec<(usize, String)> = Vec::new();
    let mut values = Vec::new();
    let mut addresses = Vec::new();
    for (i, field) in fields.iter().enumerate() {
        values.clear();
        values_at(&top, &field.segments, &mut values);
        addresses.clear();
        for value in &values {
            addresses_in(value, &mut addresses);
        }
        for address in addresses.drain(..) {
            if address.trim().is_empty() {
                continue;
            }
            if !found.iter().any(|(f, a)| *f == i && *a == address) {
                found.push((i, address));
            }
        }
    }
    Scanned::Event(Event { text, found })
}

/// An edit of a document: `text` replaces the bytes `start..end`
/// (`start == end` inserts).
struct Edit {
    start: usize,
    end: usize,
    text: String,
}

impl Edit {
    fn apply(&self, doc: &str) -> Option<String> {
        let (head, tail) = (doc.get(..self.start)?, doc.get(self.end..)?);
        Some([head, self.text.as_str(), tail].concat())
    }
}

/// Where `part`, a slice of `doc`, starts in it.
fn offset_in(doc: &str, part: &str) -> Option<usize> {
    let start = (part.as_ptr() as usize).checked_sub(doc.as_ptr() as usize)?;
    (start.checked_add(part.len())? <= doc.len()).then_some(start)
}

/// The JSON value that `path` leads to when it has to be created: the array
/// of `items` under objects for each remaining name.
fn created(path: &[&str], items: &str) -> String {
    match path.split_first() {
        None => format!("[{items}]"),
        Some((first, rest)) => format!("{{{}:{}}}", json::to_string(first), created(rest, items)),
    }
}

/// The edit that appends `items` (JSON texts joined by commas) to the array
/// at `path` in the object `object` (a slice of `doc`), creating what is
/// missing. A key naming the whole rest of the path (`"threat.enrichments"`)
/// is used first, then nested objects, longest key first. `None` when the
/// path runs into a value that is neither an object nor null.
fn append_edit(doc: &str, object: &str, path: &[&str], items: &str) -> Option<Edit> {
    let found = entries(object)?;
    let span = |value: &RawValue| -> Option<(usize, usize)> {
        let start = offset_in(doc, value.get())?;
        Some((start, start + value.get().len()))
    };
    for take in (1..=path.len()).rev() {
        let key = path.get(..take)?.join(".");
        let rest = path.get(take..)?;
        // The last of duplicate keys is the one JSON parsers keep.
        let Some((_, value)) = found.iter().rev().find(|(k, _)| *k == key) else {
            continue;
        };
        let (start, end) = span(value)?;
        let text = value.get();
        if text == "null" {
            return Some(Edit {
                start,
                end,
                text: created(rest, items),
            });
        }
        if !rest.is_empty() {
            return if text.starts_with('{') {
                append_edit(doc, text, rest, items)
            } else {
                None
            };
        }
        if text.starts_with('[') {
            let empty = elements(text)?.is_empty();
            let at = end.checked_sub(1)?;
            return Some(Edit {
                start: at,
                end: at,
                text: if empty {
                    items.to_owned()
                } else {
                    format!(",{items}")
                },
            });
        }
        // One value where an array belongs: it becomes the first element.
        return Some(Edit {
            start,
            end,
            text: format!("[{text},{items}]"),
        });
    }
    let (first, rest) = path.split_first()?;
    let object = trim_json(object);
    let close = offset_in(doc, object)?
        .checked_add(object.len())?
        .checked_sub(1)?;
    let comma = if found.is_empty() { "" } else { "," };
    Some(Edit {
        start: close,
        end: close,
        text: format!("{comma}{}:{}", json::to_string(first), created(rest, items)),
    })
}

/// `doc` with `items` appended to the array at `path`.
fn append(doc: &str, path: &[&str], items: &[String]) -> Option<String> {
    append_edit(doc, without_bom(doc), path, &items.join(","))?.apply(doc)
}

/// What became of an event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rendered {
    /// The new text, or `None` when nothing was added (the line stays as it was).
    pub text: Option<String>,
    /// Enrichments added.
    pub enrichments: usize,
    /// Failed lookups listed.
    pub errors: usize,
    /// Whether entries could not be added because the event's `threat` or
    /// `kaspersky` is a value other than an object.
    pub unwritable: bool,
}

/// The event with an enrichment per admitted verdict and an error entry per
/// failed lookup; `result_of` gives the lookup of each address.
pub fn render<'r>(
    event: &Event<'_>,
    options: &Options,
    result_of: impl Fn(&str) -> Option<&'r Lookup>,
) -> Rendered {
    let mut enrichments = Vec::new();
    let mut errors = Vec::new();
    for (index, address) in &event.found {
        let Some(field) = options.fields.get(*index) else {
            continue;
        };
        let field = field.as_str();
        match result_of(address) {
            Some(Ok(v)) if options.only.admits(v.verdict) => {
                enrichments.push(json::to_string(&json::event_enrichment(v, address, field)));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => errors.push(json::to_string(&json::event_error(
                &e.kind, address, field, &e.message,
            ))),
            None => errors.push(json::to_string(&json::event_error(
                "transport",
                address,
                field,
                "the lookup gave no answer for this address",
            ))),
        }
    }
    let mut rendered = Rendered {
        text: None,
        enrichments: enrichments.len(),
        errors: errors.len(),
        unwritable: false,
    };
    let mut text: Cow<'_, str> = Cow::Borrowed(event.text);
    if !enrichments.is_empty() {
        match append(&text, &ENRICHMENTS, &enrichments) {
            Some(new) => text = Cow::Owned(new),
            None => {
                rendered.enrichments = 0;
                rendered.unwritable = true;
            }
        }
    }
    if !errors.is_empty() {
        match append(&text, &ERRORS, &errors) {
            Some(new) => text = Cow::Owned(new),
            None => {
                rendered.errors = 0;
                rendered.unwritable = true;
            }
        }
    }
    if let Cow::Owned(new) = text {
        rendered.text = Some(new);
    }
    rendered
}

/// Counts of a run of lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    /// Lines read.
    pub lines: u64,
    /// Lines that were JSON objects.
    pub events: u64,
    /// Events that gained at least one enrichment.
    pub enriched: u64,
    /// Enrichments added.
    pub enrichments: u64,
    /// Failed lookups listed under `kaspersky.tip.errors`.
    pub errors: u64,
    /// Non-blank lines that were not one JSON object (passed through).
    pub not_objects: u64,
    /// Events whose `threat` or `kaspersky` is not an object, so entries
    /// could not be added.
    pub unwritable: u64,
}

impl Tally {
    /// Adds another tally's counts.
    pub fn add(&mut self, other: &Tally) {
        self.lines += other.lines;
        self.events += other.events;
        self.enriched += other.enriched;
        self.enrichments += other.enrichments;
        self.errors += other.errors;
        self.not_objects += other.not_objects;
        self.unwritable += other.unwritable;
    }
}

/// Enriches a chunk of lines (each without its line terminator). The
/// distinct addresses of the whole chunk go to `lookup` at once, in the
/// order first seen; it answers one lookup per address, in that order. Each
/// output is the line's new text, or the line itself when nothing was added.
pub fn enrich_lines<'a, L: AsRef<[u8]>>(
    lines: &'a [L],
    options: &Options,
    lookup: impl FnOnce(&[String]) -> Vec<Lookup>,
) -> (Vec<Cow<'a, [u8]>>, Tally) {
    let scanned: Vec<Scanned<'a>> = lines
        .iter()
        .map(|l| scan(l.as_ref(), &options.fields))
        .collect();
    let mut distinct: Vec<String> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for event in scanned.iter().filter_map(|s| match s {
        Scanned::Event(e) => Some(e),
        _ => None,
    }) {
        for address in event.addresses() {
            if !index.contains_key(address) {
                index.insert(address, distinct.len());
                distinct.push(address.to_owned());
            }
        }
    }
    let results = if distinct.is_empty() {
        Vec::new()
    } else {
        lookup(&distinct)
    };
    let mut tally = Tally::default();
    let outputs = lines
        .iter()
        .zip(&scanned)
        .map(|(line, scanned)| {
            tally.lines += 1;
            let event = match scanned {
                Scanned::Blank => return Cow::Borrowed(line.as_ref()),
                Scanned::NotAnObject => {
                    tally.not_objects += 1;
                    return Cow::Borrowed(line.as_ref());
                }
                Scanned::Event(event) => event,
            };
            tally.events += 1;
            let rendered = render(event, options, |address| {
                index.get(address).and_then(|i| results.get(*i))
            });
            tally.enrichments += rendered.enrichments as u64;
            tally.errors += rendered.errors as u64;
            tally.enriched += u64::from(rendered.enrichments > 0);
            tally.unwritable += u64::from(rendered.unwritable);
            match rendered.text {
                Some(text) => Cow::Owned(text.into_bytes()),
                None => Cow::Borrowed(line.as_ref()),
            }
        })
        .collect();
    (outputs, tally)
}

/// Splits a body into lines: (the line without its `\n`, the `\n` or
/// nothing for a last line without one). A `\r` before the `\n` stays in
/// the line (JSON reads it as whitespace), so lines come back byte for byte.
pub fn split_lines(body: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut rest = body;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (line, terminator, next) = match rest.iter().position(|b| *b == b'\n') {
            Some(at) => (rest.get(..at)?, rest.get(at..=at)?, rest.get(at + 1..)?),
            None => (rest, &b""[..], &b""[..]),
        };
        rest = next;
        Some((line, terminator))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::{IpStatus, Zone};
    use serde_json::{Value, json};

    /// A verdict from the core's own constructor, so a field added to the
    /// WIT record needs no change here.
    fn verdict(ip: &str, verdict: SoarVerdict) -> Verdict {
        let mut v =
            crate::verdict::not_found(ip.parse().unwrap(), &crate::config::VerdictMap::default());
        v.zone = match verdict {
            SoarVerdict::Malicious => Zone::Red,
            SoarVerdict::Suspicious => Zone::Orange,
            SoarVerdict::Benign => Zone::Green,
            SoarVerdict::Unknown => Zone::Grey,
        };
        v.threat_score = Some(80);
        v.verdict = verdict;
        v.found = true;
        v.status = Some(IpStatus::Known);
        v
    }

    fn addresses(line: &str, fields: &[&str]) -> Vec<(String, String)> {
        let fields = parse_fields(fields).unwrap();
        match scan(line.as_bytes(), &fields) {
            Scanned::Event(e) => e
                .found
                .iter()
                .map(|(i, a)| (fields[*i].as_str().to_owned(), a.clone()))
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    fn pair(field: &str, address: &str) -> (String, String) {
        (field.to_owned(), address.to_owned())
    }

    #[test]
    fn nested_objects_dotted_keys_and_arrays_all_count() {
        let line = r#"{"source":{"ip":"1.1.1.1","port":1},"destination.ip":"2.2.2.2","related":{"ip":["3.3.3.3","1.1.1.1",7,null,"3.3.3.3"]},"host":{"ip":[]},"client.ip":5,"server":{"ip":null}}"#;
        assert_eq!(
            addresses(line, &[]),
            vec![
                pair("source.ip", "1.1.1.1"),
                pair("destination.ip", "2.2.2.2"),
                pair("related.ip", "3.3.3.3"),
                pair("related.ip", "1.1.1.1"),
            ]
        );
        // A dotted key at any depth, and both spellings of one field at once.
        let mixed =
            r#"{"a":{"b.c":{"ip":"4.4.4.4"}},"a.b":{"c.ip":"5.5.5.5"},"a.b.c.ip":"6.6.6.6"}"#;
        assert_eq!(
            addresses(mixed, &["a.b.c.ip"]),
            vec![
                pair("a.b.c.ip", "4.4.4.4"),
                pair("a.b.c.ip", "5.5.5.5"),
                pair("a.b.c.ip", "6.6.6.6"),
            ]
        );
        // `source.ip` does not match `source.ipx` or `sourcex.ip`.
        assert!(
            addresses(
                r#"{"source":{"ipx":"1.1.1.1"},"sourcex.ip":"2.2.2.2"}"#,
                &[]
            )
            .is_empty()
        );
    }

    #[test]
    fn lines_that_are_not_one_object() {
        let fields = parse_fields::<&str>(&[]).unwrap();
        for line in [
            &b"[1,2]"[..],
            b"\"x\"",
            b"{\"a\":1",
            b"{\"a\":1} {}",
            b"not json",
            b"\xff{}",
            b"null",
        ] {
            assert!(
                matches!(scan(line, &fields), Scanned::NotAnObject),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        assert!(matches!(scan(b"  \r", &fields), Scanned::Blank));
        assert!(matches!(scan(b"", &fields), Scanned::Blank));
        assert!(matches!(scan(b" {} \r", &fields), Scanned::Event(_)));
        // A byte-order mark before the first event is kept, and the event enriched.
        let line = "\u{feff}{\"source\":{\"ip\":\"1.1.1.1\"}}";
        let Scanned::Event(event) = scan(line.as_bytes(), &fields) else {
            panic!()
        };
        assert_eq!(event.addresses().collect::<Vec<_>>(), ["1.1.1.1"]);
        assert_eq!(
            appended(line, &ENRICHMENTS).as_deref(),
            Some(
                "\u{feff}{\"source\":{\"ip\":\"1.1.1.1\"},\"threat\":{\"enrichments\":[{\"n\":1},{\"n\":2}]}}"
            )
        );
    }

    fn appended(doc: &str, path: &[&str]) -> Option<String> {
        append(doc, path, &["{\"n\":1}".to_owned(), "{\"n\":2}".to_owned()])
    }

    #[test]
    fn appending_keeps_every_other_byte() {
        let path = &ENRICHMENTS;
        let cases = [
            (r#"{}"#, r#"{"threat":{"enrichments":[{"n":1},{"n":2}]}}"#),
            (
                r#"{ "b" : 1.50e1, "a":"x\u0041" }"#,
                r#"{ "b" : 1.50e1, "a":"x\u0041" ,"threat":{"enrichments":[{"n":1},{"n":2}]}}"#,
            ),
            (
                r#"{"threat":{"framework":"MITRE"},"z":1}"#,
                r#"{"threat":{"framework":"MITRE","enrichments":[{"n":1},{"n":2}]},"z":1}"#,
            ),
            (
                r#"{"threat":{"enrichments":[ ]}}"#,
                r#"{"threat":{"enrichments":[ {"n":1},{"n":2}]}}"#,
            ),
            (
                r#"{"threat":{"enrichments":[{"old":true}]}}"#,
                r#"{"threat":{"enrichments":[{"old":true},{"n":1},{"n":2}]}}"#,
            ),
            (
                r#"{"threat.enrichments":[{"old":true}],"threat":{}}"#,
                r#"{"threat.enrichments":[{"old":true},{"n":1},{"n":2}],"threat":{}}"#,
            ),
            (
                r#"{"threat":{"enrichments":{"old":true}}}"#,
                r#"{"threat":{"enrichments":[{"old":true},{"n":1},{"n":2}]}}"#,
            ),
            (
                r#"{"threat":null}"#,
                r#"{"threat":{"enrichments":[{"n":1},{"n":2}]}}"#,
            ),
            (
                r#"{"threat":{"enrichments":null}}"#,
                r#"{"threat":{"enrichments":[{"n":1},{"n":2}]}}"#,
            ),
            (
                " {\"a\":1}\r",
                " {\"a\":1,\"threat\":{\"enrichments\":[{\"n\":1},{\"n\":2}]}}\r",
            ),
        ];
        for (doc, want) in cases {
            assert_eq!(appended(doc, path).as_deref(), Some(want), "{doc}");
            let _: Value = serde_json::from_str(want).unwrap();
        }
        // A `threat` that is not an object cannot take enrichments.
        assert_eq!(appended(r#"{"threat":"x"}"#, path), None);
        assert_eq!(appended(r#"{"threat":[1]}"#, path), None);
        // Deeper paths create what is missing, in an existing object too.
        assert_eq!(
            appended(r#"{"kaspersky":{"other":1}}"#, &ERRORS).as_deref(),
            Some(r#"{"kaspersky":{"other":1,"tip":{"errors":[{"n":1},{"n":2}]}}}"#)
        );
        assert_eq!(
            appended(r#"{"kaspersky.tip":{"errors":[]}}"#, &ERRORS).as_deref(),
            Some(r#"{"kaspersky.tip":{"errors":[{"n":1},{"n":2}]}}"#)
        );
    }

    #[test]
    fn render_adds_admitted_verdicts_and_lists_failures() {
        let options = Options::default();
        let line = br#"{"@timestamp":"2026-12-01T00:00:00Z","source":{"ip":"45.9.148.108"},"destination":{"ip":"8.8.8.8"},"related":{"ip":["45.9.148.108","bad"]}}"#;
        let Scanned::Event(event) = scan(line, &options.fields) else {
            panic!()
        };
        let results: HashMap<&str, Lookup> = HashMap::from([
            (
                "45.9.148.108",
                Ok(verdict("45.9.148.108", SoarVerdict::Malicious)),
            ),
            ("8.8.8.8", Ok(verdict("8.8.8.8", SoarVerdict::Benign))),
            (
                "bad",
                Err(LookupError {
                    kind: "invalid-ip".into(),
                    message: "not an IP address".into(),
                }),
            ),
        ]);
        let rendered = render(&event, &options, |a| results.get(a));
        assert_eq!((rendered.enrichments, rendered.errors), (2, 1));
        let text = rendered.text.unwrap();
        assert!(text.starts_with(
            r#"{"@timestamp":"2026-12-01T00:00:00Z","source":{"ip":"45.9.148.108"},"#
        ));
        let v: Value = serde_json::from_str(&text).unwrap();
        let enrichments = v["threat"]["enrichments"].as_array().unwrap();
        let matched: Vec<(&str, &str)> = enrichments
            .iter()
            .map(|e| {
                (
                    e["matched"]["field"].as_str().unwrap(),
                    e["matched"]["atomic"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            matched,
            [
                ("source.ip", "45.9.148.108"),
                ("related.ip", "45.9.148.108")
            ]
        );
        assert_eq!(enrichments[0]["indicator"]["ip"], "45.9.148.108");
        assert_eq!(enrichments[0]["kaspersky"]["tip"]["verdict"], "malicious");
        assert_eq!(
            v["kaspersky"]["tip"]["errors"],
            json!([{"kind":"invalid-ip","address":"bad","field":"related.ip","message":"not an IP address"}])
        );

        // `--only all` adds the benign one too; an event with nothing to add stays as it is.
        let all = Options {
            only: Only::parse("all").unwrap(),
            ..Options::default()
        };
        assert_eq!(render(&event, &all, |a| results.get(a)).enrichments, 3);
        let Scanned::Event(quiet) = scan(br#"{"destination":{"ip":"8.8.8.8"}}"#, &options.fields)
        else {
            panic!()
        };
        assert_eq!(
            render(&quiet, &options, |a| results.get(a)),
            Rendered::default()
        );
    }

    #[test]
    fn enrich_lines_looks_up_each_distinct_address_once_and_keeps_lines() {
        let lines: Vec<&[u8]> = vec![
            br#"{"source":{"ip":"1.1.1.1"}}"#,
            b"not json",
            b"",
            br#"{"source":{"ip":"2.2.2.2"},"destination":{"ip":"1.1.1.1"}}"#,
            b"\xfe\xff",
            br#"{"threat":"x","source":{"ip":"1.1.1.1"}}"#,
        ];
        let mut asked = Vec::new();
        let (out, tally) = enrich_lines(&lines, &Options::default(), |ips| {
            asked = ips.to_vec();
            ips.iter()
                .map(|ip| Ok(verdict(ip, SoarVerdict::Malicious)))
                .collect()
        });
        assert_eq!(asked, ["1.1.1.1", "2.2.2.2"]);
        assert_eq!(out.len(), lines.len());
        assert_eq!(out[1].as_ref(), b"not json");
        assert_eq!(out[2].as_ref(), b"");
        assert_eq!(out[4].as_ref(), b"\xfe\xff");
        assert_eq!(out[5].as_ref(), lines[5]);
        let second: Value = serde_json::from_slice(&out[3]).unwrap();
        assert_eq!(second["threat"]["enrichments"].as_array().unwrap().len(), 2);
        assert_eq!(
            tally,
            Tally {
                lines: 6,
                events: 3,
                enriched: 2,
                enrichments: 3,
                errors: 0,
                not_objects: 2,
                unwritable: 1,
            }
        );
        // Fewer answers than addresses: the missing ones are failures, not a crash.
        let (out, tally) = enrich_lines(&lines, &Options::default(), |_| Vec::new());
        assert_eq!(tally.errors, 4);
        let first: Value = serde_json::from_slice(&out[0]).unwrap();
        assert_eq!(first["kaspersky"]["tip"]["errors"][0]["address"], "1.1.1.1");
    }

    #[test]
    fn a_huge_address_is_listed_cut_to_the_echo_bound() {
        let huge = "9".repeat(1 << 20);
        let line = format!("{{\"source\":{{\"ip\":\"{huge}\"}}}}");
        let lines = [line.as_bytes()];
        let (out, tally) = enrich_lines(&lines, &Options::default(), |ips| {
            ips.iter()
                .map(|_| {
                    Err(LookupError {
                        kind: "invalid-ip".into(),
                        message: "not an address".into(),
                    })
                })
                .collect()
        });
        assert_eq!(tally.errors, 1);
        let v: Value = serde_json::from_slice(&out[0]).unwrap();
        let echoed = v["kaspersky"]["tip"]["errors"][0]["address"]
            .as_str()
            .unwrap();
        assert_eq!(echoed.chars().count(), json::MAX_ECHO_CHARS + 1);
        assert!(out[0].len() < line.len() + 1024);
    }

    #[test]
    fn options_parse() {
        assert_eq!(
            Only::parse("malicious,suspicious").unwrap(),
            Only::default()
        );
        assert!(Only::parse("ALL").unwrap().admits(SoarVerdict::Benign));
        let benign = Only::parse("benign").unwrap();
        assert!(benign.admits(SoarVerdict::Benign) && !benign.admits(SoarVerdict::Malicious));
        assert!(Only::parse("evil").is_err());
        assert!(Only::parse("").is_err());
        let fields = parse_fields(&["source.ip,client.ip", "source.ip"]).unwrap();
        assert_eq!(
            fields.iter().map(FieldPath::as_str).collect::<Vec<_>>(),
            ["source.ip", "client.ip"]
        );
        assert_eq!(
            parse_fields::<&str>(&[]).unwrap().len(),
            DEFAULT_FIELDS.len()
        );
        assert!(parse_fields(&["source..ip"]).is_err());
        assert!(parse_fields(&[""]).is_err());
    }

    #[test]
    fn split_lines_gives_every_byte_back() {
        let body = b"a\r\n\nb\nlast";
        let lines: Vec<(&[u8], &[u8])> = split_lines(body).collect();
        assert_eq!(
            lines,
            [
                (&b"a\r"[..], &b"\n"[..]),
                (b"", b"\n"),
                (b"b", b"\n"),
                (b"last", b"")
            ]
        );
        let joined: Vec<u8> = lines.iter().flat_map(|(l, t)| [*l, *t].concat()).collect();
        assert_eq!(joined, body);
        assert_eq!(split_lines(b"").count(), 0);
    }
}
