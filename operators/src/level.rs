//! Log levels: parsing the many spellings found in logs into one canonical set.
//!
//! Parsing runs once per log line, so it upper-cases the word into one integer and compares
//! that against a fixed table of keys built at compile time; it never allocates.

use crate::text::trim_ends;
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
/// every spelling is then one integer comparison each, instead of a case-folding byte loop.
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

/// [`SPELLINGS`] as keys, same order.
const KEYS: [(u128, Level); SPELLINGS.len()] = {
    let mut keys = [(0, Level::Unknown); SPELLINGS.len()];
    let mut i = 0;
    while i < SPELLINGS.len() {
        let (spelling, level) = SPELLINGS[i];
        keys[i] = match key(spelling.as_bytes()) {
            Some(key) => (key, level),
            None => panic!("a spelling is longer than 15 bytes"),
        };
        i += 1;
    }
    keys
};

impl Level {
    /// Parses a level as written in a log header (`INFO`, `[warn]`, `E:`, `Severe`...).
    /// Surrounding whitespace, brackets and colons are ignored; anything else is `Unknown`.
    pub fn parse(raw: &str) -> Level {
        let word = trim_ends(raw, |c| {
            c.is_whitespace() || matches!(c, '[' | ']' | '(' | ')' | '<' | '>' | ':')
        });
        let Some(key) = key(word.as_bytes()) else {
            return Level::Unknown;
        };
        KEYS.iter()
            .find(|&&(spelling, _)| spelling == key)
            .map_or(Level::Unknown, |&(_, level)| level)
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
