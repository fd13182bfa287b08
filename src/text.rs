//! Bounded text: the one place that cuts a string.
//!
//! Cutting a `str` at a byte index panics when the index falls inside a
//! character, and in the component a panic is a trap. Host error text, API
//! bodies and user input all reach messages, so every cut goes through
//! [`prefix`], which counts characters. `clippy.toml` disallows the byte-index
//! cutters (`String::truncate`, `str::split_at`, `String::split_off`, ...)
//! everywhere else, and `clippy::indexing_slicing` forbids `&s[a..b]`.

/// The longest prefix of `s` with at most `max_chars` characters, and
/// whether anything was cut off.
pub fn prefix(s: &str, max_chars: usize) -> (&str, bool) {
    match s.char_indices().nth(max_chars) {
        Some((at, _)) => (s.get(..at).unwrap_or_default(), true),
        None => (s, false),
    }
}

/// `s` cut to at most `max_chars` characters, with `…` appended when cut.
pub fn bounded(s: &str, max_chars: usize) -> std::borrow::Cow<'_, str> {
    match prefix(s, max_chars) {
        (whole, false) => std::borrow::Cow::Borrowed(whole),
        (head, true) => std::borrow::Cow::Owned(format!("{head}…")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_on_characters_never_inside_one() {
        // Byte 3 falls inside 'é' (bytes 2-3): a byte cut there would panic.
        assert_eq!(prefix("aaé€z", 3), ("aaé", true));
        assert_eq!(prefix("aaé", 3), ("aaé", false));
        assert_eq!(prefix("", 0), ("", false));
        assert_eq!(prefix("x", 0), ("", true));
        let s = "€".repeat(200);
        for n in 0..210 {
            let (head, cut) = prefix(&s, n);
            assert_eq!(head.chars().count(), n.min(200));
            assert_eq!(cut, n < 200);
        }
    }

    #[test]
    fn bounded_marks_a_cut() {
        assert_eq!(bounded("hello", 5), "hello");
        assert_eq!(bounded("hello!", 5), "hello…");
    }
}
