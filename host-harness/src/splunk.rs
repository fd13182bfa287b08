//! `tip-enrich splunk-lookup`: Splunk's external lookup protocol.
//!
//! Splunk runs the lookup's `external_cmd` with the field names as arguments
//! and writes CSV on its stdin: a header naming every field of the lookup's
//! `fields_list`, then one row per lookup with the input field filled. The
//! command answers the same header (same columns, same order) and one row per
//! input row, in order, with the output fields filled.
//!
//! - Output fields are the verdict's own names ([`VERDICT_FIELDS`]), taken
//!   from the core's JSON writer (`tip_enrich::json::verdict_line`), so the
//!   values are the JSON lines' values: booleans `true`/`false`, `null` as an
//!   empty cell, a list as its items one per line in one quoted cell (how
//!   Splunk writes a multivalue field to CSV), an object (a `related_reports`
//!   item) as compact JSON.
//! - `error`, when in the header: `kind: message` for a row whose lookup
//!   failed, else empty. A failed row keeps its output fields empty.
//! - The input column and every other column are echoed byte for byte.
//! - A row with an empty input passes through with its output fields empty.
//! - Rows are read `chunk_rows` at a time and each chunk's distinct addresses
//!   are looked up once, so memory stays flat and repeats cost nothing.

use std::collections::HashMap;
use std::io::{Read, Write};

use serde_json::Value;
use tip_enrich::json::{self, VERDICT_FIELDS};

use crate::output::{error_kind, error_message, verdict_to_core};
use crate::runtime::{EnrichError, Verdict};

/// The column for a failed row's error, when the header has it.
pub const ERROR_FIELD: &str = "error";

/// The answer for one address: a verdict, an error, or a trap (its message).
pub type Outcome = Result<Result<Verdict, EnrichError>, String>;

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Rows answered.
    pub rows: usize,
    /// Rows whose lookup failed (an error or a trap).
    pub failed: usize,
    /// Addresses looked up (distinct within each chunk).
    pub looked_up: usize,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum SplunkError {
    /// The header has no input column.
    #[error(
        "the CSV header ({header}) has no {field:?} column: name the input column with --input-field"
    )]
    NoInputColumn { field: String, header: String },
    /// The input is not CSV.
    #[error("reading the CSV on stdin: {0}")]
    Read(csv::Error),
    /// stdout failed.
    #[error("writing the CSV to stdout: {0}")]
    Write(#[source] std::io::Error),
}

impl SplunkError {
    /// True when the reader of stdout has gone (a closed pipe).
    pub fn is_closed_pipe(&self) -> bool {
        matches!(self, SplunkError::Write(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

fn write_error(e: csv::Error) -> SplunkError {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => SplunkError::Write(e),
        other => SplunkError::Write(std::io::Error::other(format!("{other:?}"))),
    }
}

/// What a column of the header is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    /// The input column, or a column that is none of ours: echoed.
    Echo,
    /// A verdict field, filled from the verdict.
    Field(&'static str),
    /// The error column.
    Error,
}

fn columns(header: &csv::ByteRecord, input_field: &str) -> Vec<Column> {
    header
        .iter()
        .map(|name| {
            let name = String::from_utf8_lossy(name);
            let name = name.trim();
            if name == input_field {
                Column::Echo
            } else if name == ERROR_FIELD {
                Column::Error
            } else if let Some(field) = VERDICT_FIELDS.iter().find(|f| **f == name) {
                Column::Field(field)
            } else {
                Column::Echo
            }
        })
        .collect()
}

/// Separator of a multivalue cell: Splunk writes a multivalue field to CSV
/// (`outputlookup`, `outputcsv`) as its values one per line in one cell.
pub const MULTIVALUE_SEPARATOR: &str = "\n";

/// A JSON value as a CSV cell.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => s.clone(),
                Value::Object(_) | Value::Array(_) => json::to_string(item),
                other => cell(other),
            })
            .collect::<Vec<_>>()
            .join(MULTIVALUE_SEPARATOR),
        Value::Object(_) => json::to_string(value),
    }
}

/// The verdict's fields as the core's JSON writer writes them.
fn verdict_fields(v: &Verdict) -> serde_json::Map<String, Value> {
    let core = verdict_to_core(v);
    let text = json::to_string(&json::verdict_line(&core));
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}

/// `kind: message` of a failed lookup.
fn error_cell(outcome: &Outcome) -> Option<String> {
    match outcome {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(format!("{}: {}", error_kind(e), error_message(e))),
        Err(trap) => Some(format!("trap: the component trapped: {trap}")),
    }
}

/// Answers Splunk's CSV on `input` to `output`; `enrich` looks up distinct
/// addresses and answers one outcome per address, in order.
pub fn lookup_csv<R: Read, W: Write>(
    input: R,
    output: W,
    input_field: &str,
    chunk_rows: usize,
    mut enrich: impl FnMut(&[String]) -> Vec<Outcome>,
) -> Result<Summary, SplunkError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(input);
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(output);
    let header = reader.byte_headers().map_err(SplunkError::Read)?.clone();
    let mut summary = Summary::default();
    if header.is_empty() {
        // No input at all: nothing to answer.
        return Ok(summary);
    }
    let input_at = header
        .iter()
        .position(|name| String::from_utf8_lossy(name).trim() == input_field)
        .ok_or_else(|| SplunkError::NoInputColumn {
            field: input_field.to_owned(),
            header: String::from_utf8_lossy(header.as_slice()).into_owned(),
        })?;
    let columns = columns(&header, input_field);
    writer.write_byte_record(&header).map_err(write_error)?;
    writer.flush().map_err(SplunkError::Write)?;

    let mut records = reader.into_byte_records();
    let chunk_rows = chunk_rows.max(1);
    loop {
        let mut chunk: Vec<csv::ByteRecord> = Vec::with_capacity(chunk_rows);
        for record in records.by_ref() {
            chunk.push(record.map_err(SplunkError::Read)?);
            if chunk.len() == chunk_rows {
                break;
            }
        }
        if chunk.is_empty() {
            break;
        }
        // Each row's address (None when empty), and the distinct ones.
        let mut distinct: Vec<String> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let row_ips: Vec<Option<usize>> = chunk
            .iter()
            .map(|row| {
                let ip = String::from_utf8_lossy(row.get(input_at).unwrap_or_default());
                let ip = ip.trim();
                if ip.is_empty() {
                    return None;
                }
                Some(*index.entry(ip.to_owned()).or_insert_with(|| {
                    distinct.push(ip.to_owned());
                    distinct.len() - 1
                }))
            })
            .collect();
        let outcomes = if distinct.is_empty() {
            Vec::new()
        } else {
            enrich(&distinct)
        };
        summary.looked_up += distinct.len();
        let fields: Vec<Option<serde_json::Map<String, Value>>> = outcomes
            .iter()
            .map(|o| match o {
                Ok(Ok(v)) => Some(verdict_fields(v)),
                _ => None,
            })
            .collect();
        let errors: Vec<Option<String>> = outcomes.iter().map(error_cell).collect();

        for (row, at) in chunk.iter().zip(row_ips) {
            let verdict = at.and_then(|i| fields.get(i)).and_then(Option::as_ref);
            let error = at.and_then(|i| match errors.get(i) {
                Some(e) => e.clone(),
                // No answer for this address (a wrong-length answer).
                None => Some("trap: no answer for this address".to_owned()),
            });
            if error.is_some() {
                summary.failed += 1;
            }
            let mut out = csv::ByteRecord::new();
            for (i, column) in columns.iter().enumerate() {
                match column {
                    Column::Echo => out.push_field(row.get(i).unwrap_or_default()),
                    Column::Field(name) => {
                        let value = verdict
                            .and_then(|v| v.get(*name))
                            .map(cell)
                            .unwrap_or_default();
                        out.push_field(value.as_bytes());
                    }
                    Column::Error => {
                        out.push_field(error.as_deref().unwrap_or_default().as_bytes())
                    }
                }
            }
            // Cells past the header's width are echoed too.
            for extra in row.iter().skip(columns.len()) {
                out.push_field(extra);
            }
            writer.write_byte_record(&out).map_err(write_error)?;
            summary.rows += 1;
        }
        writer.flush().map_err(SplunkError::Write)?;
    }
    writer.flush().map_err(SplunkError::Write)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cells() {
        assert_eq!(cell(&json!(null)), "");
        assert_eq!(cell(&json!(true)), "true");
        assert_eq!(cell(&json!(false)), "false");
        assert_eq!(cell(&json!(42)), "42");
        assert_eq!(cell(&json!(["a", "b"])), "a\nb");
        assert_eq!(cell(&json!([])), "");
        assert_eq!(
            cell(&json!([{"id": "r1", "title": null}])),
            r#"{"id":"r1","title":null}"#
        );
    }

    #[test]
    fn missing_input_column_is_an_error() {
        let mut out = Vec::new();
        let e = lookup_csv(&b"zone,verdict\n"[..], &mut out, "ip", 4, |_| Vec::new()).unwrap_err();
        assert!(matches!(e, SplunkError::NoInputColumn { .. }), "{e}");
    }

    #[test]
    fn empty_rows_are_not_looked_up() {
        let mut out = Vec::new();
        let mut calls = 0;
        let s = lookup_csv(&b"ip,zone\n,\n\"\",x\n"[..], &mut out, "ip", 4, |_| {
            calls += 1;
            Vec::new()
        })
        .unwrap();
        assert_eq!(calls, 0);
        assert_eq!(s.rows, 2);
        assert_eq!(String::from_utf8(out).unwrap(), "ip,zone\r\n,\r\n,\r\n");
    }
}
