//! Small string helpers shared by the per-line parsers.

/// `raw` without the leading and trailing chars `trimmed` accepts. When both end bytes are
/// printable ASCII that `trimmed` rejects (the usual line or header field), nothing would be
/// trimmed, and `raw` comes back without a char being decoded.
#[inline]
pub(crate) fn trim_ends(raw: &str, trimmed: impl Fn(char) -> bool) -> &str {
    let settled = |b: u8| (0x21..=0x7F).contains(&b) && !trimmed(char::from(b));
    match raw.as_bytes() {
        [first, .., last] if settled(*first) && settled(*last) => raw,
        [only] if settled(*only) => raw,
        _ => raw.trim_matches(trimmed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_path_equals_trim_matches() {
        let brackets = |c: char| c.is_whitespace() || c == '[' || c == ']';
        for raw in [
            "", " ", "a", "[", "ab", " a", "a ", "[a]", "a]", "\u{a0}a", "a\u{a0}", "é", "aé",
            "\u{7f}", "a\u{7f}", "\t[x] ", "x y",
        ] {
            assert_eq!(trim_ends(raw, char::is_whitespace), raw.trim(), "{raw:?}");
            assert_eq!(
                trim_ends(raw, brackets),
                raw.trim_matches(brackets),
                "{raw:?}"
            );
        }
    }
}
