//! Field deserializers that never fail on a wrong type.
//!
//! The API documents no schema guarantees: any field may be missing, null, or
//! (from a hostile or broken server) of another type. Each wrapper here accepts
//! any JSON value and keeps it only when it fits; anything else reads as absent.
//! Only malformed JSON itself (or JSON nested deeper than serde_json's recursion
//! limit) fails the parse.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::bindings::{IpStatus, Zone};

/// Any JSON value, with objects dropped (their contents are never needed by a
/// scalar field) and arrays kept for text lists.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Any {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(String),
    Seq(Vec<Any>),
    Map,
}

impl<'de> Deserialize<'de> for Any {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AnyVisitor)
    }
}

struct AnyVisitor;

impl<'de> Visitor<'de> for AnyVisitor {
    type Value = Any;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Any, E> {
        Ok(Any::Null)
    }
    fn visit_none<E>(self) -> Result<Any, E> {
        Ok(Any::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Any, D::Error> {
        Any::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Any, E> {
        Ok(Any::Bool(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Any, E> {
        Ok(Any::U64(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Any, E> {
        Ok(Any::I64(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Any, E> {
        Ok(Any::F64(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Any, E> {
        Ok(Any::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Any, E> {
        Ok(Any::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Any, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Any>()? {
            items.push(item);
        }
        Ok(Any::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Any, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Any::Map)
    }
}

impl Any {
    /// Text of a scalar: strings as they are, whole numbers and booleans
    /// spelled out. A fractional number is no text any field of the verdict
    /// holds, so it reads as absent (and no float formatting is linked).
    fn scalar_text(&self) -> Option<String> {
        match self {
            Any::Str(s) => Some(s.clone()),
            Any::U64(n) => Some(n.to_string()),
            Any::I64(n) => Some(n.to_string()),
            Any::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// A whole number >= 0 from a number or a numeric string.
    fn count(&self) -> Option<u64> {
        match self {
            Any::U64(n) => Some(*n),
            Any::I64(n) => u64::try_from(*n).ok(),
            Any::F64(f) => float_to_count(*f),
            Any::Str(s) => {
                let s = s.trim();
                s.parse::<u64>()
                    .ok()
                    .or_else(|| parse_f64(s).and_then(float_to_count))
            }
            _ => None,
        }
    }

    fn float(&self) -> Option<f64> {
        let f = match self {
            Any::U64(n) => *n as f64,
            Any::I64(n) => *n as f64,
            Any::F64(f) => *f,
            Any::Str(s) => parse_f64(s.trim())?,
            _ => return None,
        };
        f.is_finite().then_some(f)
    }
}

/// A number written as a string (`"92"`, `"1e3"`), read with serde_json's own
/// float parser: the component then links one float parser, not two.
fn parse_f64(s: &str) -> Option<f64> {
    serde_json::from_str::<f64>(s).ok()
}

fn float_to_count(f: f64) -> Option<u64> {
    // `as` saturates; the range check keeps nonsense (negative, NaN, 1e300) out.
    (0.0..18_446_744_073_709_551_615.0)
        .contains(&f)
        .then(|| f.trunc() as u64)
}

/// Parses a zone name case-insensitively; `Gray` is grey.
pub fn parse_zone(s: &str) -> Option<Zone> {
    let s = s.trim();
    [
        ("red", Zone::Red),
        ("orange", Zone::Orange),
        ("yellow", Zone::Yellow),
        ("grey", Zone::Grey),
        ("gray", Zone::Grey),
        ("green", Zone::Green),
    ]
    .into_iter()
    .find(|(name, _)| s.eq_ignore_ascii_case(name))
    .map(|(_, zone)| zone)
}

/// Parses `IpGeneralInfo.Status` case-insensitively (`Known`, `known`, `NoInfo`, `no-info`, ...).
pub fn parse_status(s: &str) -> Option<IpStatus> {
    let folded: String = s
        .trim()
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    match folded.as_str() {
        "known" => Some(IpStatus::Known),
        "reserved" => Some(IpStatus::Reserved),
        "noinfo" => Some(IpStatus::NoInfo),
        _ => None,
    }
}

/// A lenient field: accepts any JSON and converts to `Out`.
pub(crate) trait Lenient {
    type Out;
    fn into_out(self) -> Self::Out;
}

macro_rules! scalar_field {
    ($(#[$doc:meta])* $name:ident, $out:ty, |$a:ident| $conv:expr) => {
        $(#[$doc])*
        #[derive(Debug, Default)]
        pub(crate) struct $name(pub Option<$out>);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let $a = Any::deserialize(d)?;
                Ok($name($conv))
            }
        }

        impl Lenient for $name {
            type Out = Option<$out>;
            fn into_out(self) -> Option<$out> {
                self.0
            }
        }
    };
}

scalar_field!(
    /// Text: a string, or a number or boolean spelled out; an array of those is
    /// joined with newlines (WHOIS fields come both ways).
    Text, String, |a| match &a {
        Any::Seq(items) => {
            let parts: Vec<String> = items.iter().filter_map(Any::scalar_text).collect();
            (!parts.is_empty()).then(|| parts.join("\n"))
        }
        other => other.scalar_text(),
    }
);

scalar_field!(
    /// A list of texts: an array (non-text entries dropped) or a single text.
    TextList, Vec<String>, |a| match &a {
        Any::Seq(items) => Some(items.iter().filter_map(Any::scalar_text).collect()),
        Any::Null | Any::Map => None,
        other => other.scalar_text().map(|s| vec![s]),
    }
);

scalar_field!(
    /// Lines of text: one string split at its line breaks (CRLF, LF or CR),
    /// or an array of them (non-text entries dropped); each line trimmed,
    /// empty ones dropped. No line at all reads as absent. (WHOIS
    /// descriptions come both ways.)
    Lines, Vec<String>, |a| {
        let texts: Vec<String> = match &a {
            Any::Seq(items) => items.iter().filter_map(Any::scalar_text).collect(),
            other => other.scalar_text().into_iter().collect(),
        };
        let lines: Vec<String> = texts
            .iter()
            .flat_map(|t| t.split(['\r', '\n']))
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        (!lines.is_empty()).then_some(lines)
    }
);

scalar_field!(
    /// An autonomous system number: 1 to 4294967295 (ASNs are 32-bit; AS 0
    /// means "no AS", RFC 7607), from a whole number, a numeric string, or
    /// `AS57043` (any case, as `Asn.Origin` writes it).
    AsNumber, u32, |a| match &a {
        Any::U64(n) => u32::try_from(*n).ok(),
        Any::Str(s) => {
            let s = s.trim();
            let digits = match s.get(..2) {
                Some(prefix) if prefix.eq_ignore_ascii_case("as") => s.get(2..).unwrap_or_default().trim_start(),
                _ => s,
            };
            (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse::<u32>().ok())
                .flatten()
        }
        _ => None,
    }
    .filter(|n| *n != 0)
);

scalar_field!(
    /// A count: a whole number >= 0, from a number or numeric string.
    Count, u64, |a| a.count()
);

scalar_field!(
    /// A threat score: 0 to 100 inclusive; anything else is unknown.
    Score, u8, |a| a.float().filter(|f| (0.0..=100.0).contains(f)).map(|f| f.round() as u8)
);

scalar_field!(
    /// A boolean: `true`/`false`, their strings, or 0/1.
    Flag, bool, |a| match &a {
        Any::Bool(b) => Some(*b),
        Any::U64(0) | Any::I64(0) => Some(false),
        Any::U64(1) | Any::I64(1) => Some(true),
        Any::Str(s) if s.trim().eq_ignore_ascii_case("true") => Some(true),
        Any::Str(s) if s.trim().eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
);

scalar_field!(
    /// A zone name, case-insensitive, `Gray` accepted.
    ZoneField, Zone, |a| match &a {
        Any::Str(s) => parse_zone(s),
        _ => None,
    }
);

scalar_field!(
    /// An address status, case-insensitive.
    StatusField, IpStatus, |a| match &a {
        Any::Str(s) => parse_status(s),
        _ => None,
    }
);

/// A nested object read with `R`'s own (lenient) fields; anything but an
/// object reads as absent.
#[derive(Debug)]
pub(crate) struct Section<R>(pub Option<R>);

impl<R> Default for Section<R> {
    fn default() -> Self {
        Section(None)
    }
}

impl<'de, R: Deserialize<'de>> Deserialize<'de> for Section<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SectionVisitor(PhantomData))
    }
}

struct SectionVisitor<R>(PhantomData<R>);

impl<'de, R: Deserialize<'de>> Visitor<'de> for SectionVisitor<R> {
    type Value = Section<R>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        R::deserialize(MapAccessDeserializer::new(map)).map(|r| Section(Some(r)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Section(None))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Section::deserialize(d)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Section(None))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Section(None))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Section(None))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Section(None))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Section(None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Section(None))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Section(None))
    }
}

impl<R: Lenient> Lenient for Section<R> {
    type Out = Option<R::Out>;
    fn into_out(self) -> Self::Out {
        self.0.map(Lenient::into_out)
    }
}

/// A list of objects; entries that are not objects are dropped, and a single
/// object stands for a list of one.
#[derive(Debug)]
pub(crate) struct Records<R>(pub Option<Vec<R>>);

impl<R> Default for Records<R> {
    fn default() -> Self {
        Records(None)
    }
}

impl<'de, R: Deserialize<'de>> Deserialize<'de> for Records<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RecordsVisitor(PhantomData))
    }
}

struct RecordsVisitor<R>(PhantomData<R>);

impl<'de, R: Deserialize<'de>> Visitor<'de> for RecordsVisitor<R> {
    type Value = Records<R>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of objects")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(Section(item)) = seq.next_element::<Section<R>>()? {
            out.extend(item);
        }
        Ok(Records(Some(out)))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        R::deserialize(MapAccessDeserializer::new(map)).map(|r| Records(Some(vec![r])))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Records::deserialize(d)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Records(None))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Records(None))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Records(None))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Records(None))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Records(None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Records(None))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Records(None))
    }
}

impl<R: Lenient> Lenient for Records<R> {
    type Out = Option<Vec<R::Out>>;
    fn into_out(self) -> Self::Out {
        self.0
            .map(|v| v.into_iter().map(Lenient::into_out).collect())
    }
}

/// Deserializes a top-level JSON object only (derived structs would also take
/// an array positionally, which is never what the API means).
pub(crate) fn object_only<'de, R: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<R, D::Error> {
    struct ObjectVisitor<R>(PhantomData<R>);
    impl<'de, R: Deserialize<'de>> Visitor<'de> for ObjectVisitor<R> {
        type Value = R;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<R, A::Error> {
            R::deserialize(MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_map(ObjectVisitor(PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read<T: for<'de> Deserialize<'de>>(json: &str) -> T {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn text_accepts_scalars_and_joins_arrays() {
        assert_eq!(read::<Text>(r#""a""#).0.as_deref(), Some("a"));
        assert_eq!(read::<Text>("12").0.as_deref(), Some("12"));
        assert_eq!(read::<Text>(r#"["a", 1, {}]"#).0.as_deref(), Some("a\n1"));
        assert_eq!(read::<Text>("null").0, None);
        assert_eq!(read::<Text>(r#"{"x": [1, 2]}"#).0, None);
    }

    #[test]
    fn count_rejects_negative_and_nonsense() {
        assert_eq!(read::<Count>("10").0, Some(10));
        assert_eq!(read::<Count>(r#"" 42 ""#).0, Some(42));
        assert_eq!(read::<Count>("1e3").0, Some(1000));
        assert_eq!(read::<Count>("-1").0, None);
        assert_eq!(read::<Count>("1e300").0, None);
        assert_eq!(read::<Count>(r#""many""#).0, None);
        assert_eq!(read::<Count>("[1]").0, None);
    }

    #[test]
    fn score_is_bounded() {
        assert_eq!(read::<Score>("0").0, Some(0));
        assert_eq!(read::<Score>("100").0, Some(100));
        assert_eq!(read::<Score>(r#""75""#).0, Some(75));
        assert_eq!(read::<Score>("101").0, None);
        assert_eq!(read::<Score>("-5").0, None);
        assert_eq!(read::<Score>("true").0, None);
    }

    #[test]
    fn zone_and_status_are_case_insensitive() {
        assert_eq!(read::<ZoneField>(r#""RED""#).0, Some(Zone::Red));
        assert_eq!(read::<ZoneField>(r#""Gray""#).0, Some(Zone::Grey));
        assert_eq!(read::<ZoneField>(r#""purple""#).0, None);
        assert_eq!(read::<StatusField>(r#""known""#).0, Some(IpStatus::Known));
        assert_eq!(read::<StatusField>(r#""NoInfo""#).0, Some(IpStatus::NoInfo));
        assert_eq!(
            read::<StatusField>(r#""no_info""#).0,
            Some(IpStatus::NoInfo)
        );
    }

    #[derive(serde::Deserialize, Debug, Default)]
    struct Inner {
        #[serde(rename = "A", default)]
        a: Count,
    }

    #[test]
    fn sections_and_records_drop_what_is_not_an_object() {
        assert!(read::<Section<Inner>>(r#""text""#).0.is_none());
        assert!(read::<Section<Inner>>("[1,2]").0.is_none());
        assert_eq!(
            read::<Section<Inner>>(r#"{"A": 3}"#).0.unwrap().a.0,
            Some(3)
        );
        let recs = read::<Records<Inner>>(r#"[{"A": 1}, 7, "x", {"A": "2"}, null]"#);
        let got: Vec<_> = recs.0.unwrap().into_iter().map(|i| i.a.0).collect();
        assert_eq!(got, vec![Some(1), Some(2)]);
        assert_eq!(read::<Records<Inner>>(r#"{"A": 5}"#).0.unwrap().len(), 1);
    }
}
