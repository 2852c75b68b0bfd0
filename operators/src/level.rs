//! Log levels: parsing the many spellings found in logs into one canonical set.
//!
//! Parsing runs twice per log line, so it upper-cases the word into one integer with word
//! operations and looks that up in a hash table built at compile time; it never allocates.

use crate::swar;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A canonical log level. The order is by severity, `Unknown` last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Trace,
    Debug,
    Info,
    Notice,
    Warning,
    Error,
    Critical,
    Fatal,
    Fault,
    Unknown,
}

/// Spellings recognised by [`Level::parse`], compared ASCII case-insensitively.
/// Single letters are the Android/logcat ones (V D I W E F) only: others are too ambiguous.
const SPELLINGS: &[(&str, Level)] = &[
    ("INFO", Level::Info),
    ("WARN", Level::Warning),
    ("ERROR", Level::Error),
    ("DEBUG", Level::Debug),
    ("WARNING", Level::Warning),
    ("I", Level::Info),
    ("W", Level::Warning),
    ("E", Level::Error),
    ("D", Level::Debug),
    ("V", Level::Debug),
    ("F", Level::Fatal),
    ("TRACE", Level::Trace),
    ("NOTICE", Level::Notice),
    ("ERR", Level::Error),
    ("FATAL", Level::Fatal),
    ("CRITICAL", Level::Critical),
    ("CRIT", Level::Critical),
    ("FAULT", Level::Fault),
    ("SEVERE", Level::Error),
    ("INFORMATION", Level::Info),
    ("INFORMATIONAL", Level::Info),
    ("DBG", Level::Debug),
    ("VERBOSE", Level::Debug),
    ("FINE", Level::Debug),
    ("FINER", Level::Debug),
    ("FINEST", Level::Debug),
    ("EMERG", Level::Fatal),
    ("EMERGENCY", Level::Fatal),
    ("ALERT", Level::Fatal),
    ("PANIC", Level::Fatal),
];

/// A word of at most 15 bytes, ASCII upper-cased, as one number: the bytes in the low 15
/// bytes, the length in the top one (so `"INFO"` and `"INFO\0"` differ). Comparing a word with
/// a spelling is then one integer comparison, instead of a case-folding byte loop.
const fn key(word: &[u8]) -> Option<u128> {
    if word.len() > 15 {
        return None;
    }
    let mut bytes = [0u8; 16];
    let mut i = 0;
    while i < word.len() {
        bytes[i] = word[i].to_ascii_uppercase();
        i += 1;
    }
    bytes[15] = word.len() as u8;
    Some(u128::from_le_bytes(bytes))
}

/// [`key`] with word loads and a word-wide upper-casing instead of a byte loop: it runs on
/// every line (twice). Equal to `key` for every input (see the tests).
#[inline]
fn fast_key(word: &[u8]) -> Option<u128> {
    let len = word.len();
    let (low, high) = match len {
        0 => (0, 0),
        1..=3 => {
            // First, middle and last byte cover all of 1 to 3 bytes.
            let byte = |i: usize| u64::from(word.get(i).copied().unwrap_or(0)) << (8 * i);
            (byte(0) | byte(len / 2) | byte(len - 1), 0)
        }
        4..=7 => {
            // Two overlapping 4-byte loads: overlapped bytes are equal, so `|` keeps them.
            let first = u32_at(word, 0);
            let last = u32_at(word, len - 4);
            (first | (last << (8 * (len - 4))), 0)
        }
        8..=15 => {
            let first = swar::word_at(word, 0)?;
            // The last 8 bytes, shifted down to drop those already in `first`.
            let last = swar::word_at(word, len - 8)?
                .checked_shr(8 * (16 - len as u32))
                .unwrap_or(0);
            (first, upper(last))
        }
        _ => return None,
    };
    // `high` is upper-cased above, only where it can hold letters.
    let high = high | (len as u64) << 56;
    Some(u128::from(upper(low)) | u128::from(high) << 64)
}

/// Four bytes of `word` from `at` (little-endian) in a `u64`, 0 if there are fewer.
#[inline]
fn u32_at(word: &[u8], at: usize) -> u64 {
    word.get(at..)
        .and_then(|rest| rest.first_chunk::<4>())
        .map_or(0, |chunk| u64::from(u32::from_le_bytes(*chunk)))
}

/// `u8::to_ascii_uppercase` on each byte of `word`.
#[inline]
fn upper(word: u64) -> u64 {
    // Per byte on its low 7 bits (no carry between bytes): bit 7 set from `a`, and from
    // past `z`; non-ASCII bytes are left alone.
    let seven = word & !swar::splat(0x80);
    let from_a = seven.wrapping_add(swar::splat(0x80 - b'a'));
    let past_z = seven.wrapping_add(swar::splat(0x80 - b'z' - 1));
    let lower = from_a & !past_z & !word & swar::splat(0x80);
    word ^ (lower >> 2)
}

/// Slots of the hash table over [`SPELLINGS`]: a power of two.
const TABLE_BITS: u32 = 6;

/// The table slot of a key.
#[inline]
const fn slot(key: u128, multiplier: u64) -> usize {
    let folded = (key as u64) ^ ((key >> 64) as u64);
    (folded.wrapping_mul(multiplier) >> (64 - TABLE_BITS)) as usize
}

/// A multiplier under which the keys of [`SPELLINGS`] all land in different slots, searched at
/// compile time (a build error if none is found, e.g. after adding many spellings).
const MULTIPLIER: u64 = {
    let mut candidate: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut tries = 0;
    loop {
        let mut used = 0u64;
        let mut ok = true;
        let mut i = 0;
        while i < SPELLINGS.len() {
            let Some(key) = key(SPELLINGS[i].0.as_bytes()) else {
                panic!("a spelling is longer than 15 bytes");
            };
            let bit = 1u64 << slot(key, candidate);
            if used & bit != 0 {
                ok = false;
                break;
            }
            used |= bit;
            i += 1;
        }
        if ok {
            break candidate;
        }
        tries += 1;
        assert!(
            tries < 100_000,
            "no collision-free multiplier for SPELLINGS"
        );
        candidate = candidate.wrapping_add(0x6A09_E667_F3BC_C908) | 1;
    }
};

/// [`SPELLINGS`] by slot: (key, level), key 0 (no word's key) in empty slots.
const TABLE: [(u128, Level); 1 << TABLE_BITS] = {
    let mut table = [(0, Level::Unknown); 1 << TABLE_BITS];
    let mut i = 0;
    while i < SPELLINGS.len() {
        let (spelling, level) = SPELLINGS[i];
        if let Some(key) = key(spelling.as_bytes()) {
            table[slot(key, MULTIPLIER)] = (key, level);
        }
        i += 1;
    }
    table
};

/// Whether `c` surrounds a level word without being part of it.
#[inline]
fn is_padding(c: char) -> bool {
    c.is_whitespace() || matches!(c, '[' | ']' | '(' | ')' | '<' | '>' | ':')
}

/// Bytes that end a word as they are: printable ASCII other than padding. A table, as the
/// usual bare word is decided by its two end bytes alone.
const SETTLED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0x21;
    while b < 0x80 {
        table[b] = !matches!(b as u8, b'[' | b']' | b'(' | b')' | b'<' | b'>' | b':');
        b += 1;
    }
    table
};

impl Level {
    /// Parses a level as written in a log header (`INFO`, `[warn]`, `E:`, `Severe`...).
    /// Surrounding whitespace, brackets and colons are ignored; anything else is `Unknown`.
    pub fn parse(raw: &str) -> Level {
        let settled = |b: &u8| SETTLED[usize::from(*b)];
        let bytes = raw.as_bytes();
        // `trim_ends`, with the end bytes looked up instead of tested.
        let word = if bytes.first().is_some_and(settled) && bytes.last().is_some_and(settled) {
            raw
        } else {
            raw.trim_matches(is_padding)
        };
        let Some(key) = fast_key(word.as_bytes()) else {
            return Level::Unknown;
        };
        // The empty word's key is 0, the same as an empty slot's: both are `Unknown`.
        match TABLE.get(slot(key, MULTIPLIER)) {
            Some(&(spelling, level)) if spelling == key => level,
            _ => Level::Unknown,
        }
    }

    /// The canonical upper-case name, as stored in records and aggregates.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Notice => "NOTICE",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
            Level::Fatal => "FATAL",
            Level::Fault => "FAULT",
            Level::Unknown => "UNKNOWN",
        }
    }

    /// Whether the level counts as a fault for risk scoring (logsight's ERROR/ERR/CRITICAL/FAULT,
    /// plus FATAL, which logsight missed).
    pub fn is_fault(self) -> bool {
        matches!(
            self,
            Level::Error | Level::Critical | Level::Fatal | Level::Fault
        )
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_spellings_case_insensitively() {
        let cases = [
            ("INFO", Level::Info),
            ("info", Level::Info),
            ("Information", Level::Info),
            ("notice", Level::Notice),
            ("WARN", Level::Warning),
            ("Warning", Level::Warning),
            ("error", Level::Error),
            ("ERR", Level::Error),
            ("SEVERE", Level::Error),
            ("crit", Level::Critical),
            ("CRITICAL", Level::Critical),
            ("fatal", Level::Fatal),
            ("EMERG", Level::Fatal),
            ("emergency", Level::Fatal),
            ("alert", Level::Fatal),
            ("panic", Level::Fatal),
            ("FAULT", Level::Fault),
            ("trace", Level::Trace),
            ("debug", Level::Debug),
            ("DBG", Level::Debug),
            ("fine", Level::Debug),
            ("FINER", Level::Debug),
            ("finest", Level::Debug),
            ("verbose", Level::Debug),
        ];
        for (raw, want) in cases {
            assert_eq!(Level::parse(raw), want, "{raw}");
        }
    }

    #[test]
    fn single_letters_are_the_logcat_ones_only() {
        let cases = [
            ("D", Level::Debug),
            ("i", Level::Info),
            ("W", Level::Warning),
            ("e", Level::Error),
            ("V", Level::Debug),
            ("F", Level::Fatal),
            ("T", Level::Unknown),
            ("C", Level::Unknown),
            ("A", Level::Unknown),
        ];
        for (raw, want) in cases {
            assert_eq!(Level::parse(raw), want, "{raw}");
        }
    }

    #[test]
    fn trims_brackets_colons_and_whitespace() {
        assert_eq!(Level::parse("[error]"), Level::Error);
        assert_eq!(Level::parse("  WARN: "), Level::Warning);
        assert_eq!(Level::parse("<info>"), Level::Info);
        assert_eq!(Level::parse("(E)"), Level::Error);
    }

    #[test]
    fn bare_word_fast_path_equals_trimming() {
        let reference = |raw: &str| {
            let word = raw.trim_matches(|c: char| {
                c.is_whitespace() || matches!(c, '[' | ']' | '(' | ')' | '<' | '>' | ':')
            });
            SPELLINGS
                .iter()
                .find(|(spelling, _)| spelling.eq_ignore_ascii_case(word))
                .map_or(Level::Unknown, |&(_, level)| level)
        };
        for raw in [
            "INFO",
            "info",
            " INFO",
            "INFO ",
            "[INFO]",
            "<E>",
            "I",
            "W:",
            "i",
            "x",
            "",
            " ",
            "é",
            "INFOé",
            "éINFO",
            "ERR0R",
            "9",
            "WARN\u{a0}",
            "(Fault)",
            "e:",
            "2",
            "INFO\0",
            "\0INFO",
            "informational",
            "INFORMATIONALS",
            "informationalinformational",
            "Emergency",
            "ınfo",
            "WARNİNG",
            "fınest",
        ] {
            assert_eq!(Level::parse(raw), reference(raw), "{raw:?}");
        }
    }

    #[test]
    fn settled_bytes_are_those_trim_ends_keeps() {
        for b in 0..=255u8 {
            let want = (0x21..=0x7F).contains(&b) && !is_padding(char::from(b));
            assert_eq!(SETTLED[usize::from(b)], want, "{b:#x}");
        }
    }

    /// The byte loop `key` was, for every byte value at every position of every length.
    #[test]
    fn fast_key_equals_byte_loop() {
        for len in 0..=17 {
            for fill in [
                b'a', b'Z', b'`', b'{', b'@', b'[', 0x00, 0x7F, 0x80, 0xE1, 0xFA, 0xFF,
            ] {
                for at in 0..len.max(1) {
                    for b in 0..=255u8 {
                        let mut word = vec![fill; len];
                        if let Some(byte) = word.get_mut(at) {
                            *byte = b;
                        }
                        assert_eq!(fast_key(&word), key(&word), "{word:?}");
                    }
                }
            }
        }
    }

    /// Every upper/lower-case mix of every spelling, bare and padded.
    #[test]
    fn every_case_mix_of_every_spelling() {
        for &(spelling, level) in SPELLINGS {
            let bytes = spelling.as_bytes();
            for mask in 0..1u32 << bytes.len() {
                let mixed: String = bytes
                    .iter()
                    .enumerate()
                    .map(|(i, &b)| {
                        let c = char::from(b);
                        if mask >> i & 1 == 1 {
                            c.to_ascii_lowercase()
                        } else {
                            c
                        }
                    })
                    .collect();
                assert_eq!(Level::parse(&mixed), level, "{mixed}");
                assert_eq!(Level::parse(&format!("[{mixed}]:")), level, "{mixed}");
                // One byte more is another word.
                assert_eq!(
                    Level::parse(&format!("{mixed}x")),
                    Level::Unknown,
                    "{mixed}"
                );
            }
        }
    }

    #[test]
    fn unknown_for_anything_else() {
        for raw in [
            "", "[]", "INFOO", "ERRORS", "IN FO", "état", "错误", "0", "RAS",
        ] {
            assert_eq!(Level::parse(raw), Level::Unknown, "{raw}");
        }
    }

    #[test]
    fn canonical_names_round_trip() {
        let all = [
            Level::Trace,
            Level::Debug,
            Level::Info,
            Level::Notice,
            Level::Warning,
            Level::Error,
            Level::Critical,
            Level::Fatal,
            Level::Fault,
        ];
        for level in all {
            assert_eq!(Level::parse(level.as_str()), level);
            assert_eq!(
                serde_json::to_string(&level).ok(),
                Some(format!("\"{}\"", level.as_str()))
            );
        }
        assert_eq!(Level::Unknown.as_str(), "UNKNOWN");
        assert_eq!(Level::Warning.to_string(), "WARNING");
    }

    #[test]
    fn fault_levels() {
        let faults: Vec<Level> = [
            "trace", "debug", "info", "notice", "warn", "error", "crit", "fatal", "fault", "x",
        ]
        .iter()
        .map(|raw| Level::parse(raw))
        .filter(|level| level.is_fault())
        .collect();
        assert_eq!(
            faults,
            vec![Level::Error, Level::Critical, Level::Fatal, Level::Fault]
        );
    }

    #[test]
    fn ordered_by_severity() {
        assert!(Level::Debug < Level::Info);
        assert!(Level::Warning < Level::Error);
        assert!(Level::Fatal < Level::Fault);
    }
}
