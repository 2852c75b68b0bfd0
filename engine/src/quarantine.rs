//! Bad input: why a line was rejected, and the record kept for it in the quarantine file.
//!
//! Bad input never stops the pipeline: it is counted, written with its reason next to the
//! store (`quarantine-…ndjson`), and the run goes on.

use serde::{Deserialize, Serialize};

/// Why a line was quarantined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    InvalidUtf8,
    InvalidJson,
    /// Valid JSON that is not a logsight batch (e.g. missing `logs` or `index`).
    InvalidBatch,
    LineTooLong,
    /// A batch index that cannot name a store file or an Elasticsearch index.
    InvalidIndex,
}

impl Reason {
    pub const ALL: [Reason; 5] = [
        Reason::InvalidUtf8,
        Reason::InvalidJson,
        Reason::InvalidBatch,
        Reason::LineTooLong,
        Reason::InvalidIndex,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::InvalidJson => "invalid_json",
            Reason::InvalidBatch => "invalid_batch",
            Reason::LineTooLong => "line_too_long",
            Reason::InvalidIndex => "invalid_index",
        }
    }
}

/// Longest prefix of a bad line kept in its quarantine record.
pub const MAX_SAMPLE_BYTES: usize = 4096;

/// One quarantined input line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    /// Deterministic id: source + position, like pipeline documents.
    pub id: String,
    pub source: String,
    /// 0-based line number within the source.
    pub position: u64,
    pub reason: Reason,
    /// Human-readable detail, e.g. the JSON error.
    pub detail: String,
    /// The line (at most [`MAX_SAMPLE_BYTES`], invalid UTF-8 replaced by U+FFFD).
    pub line: String,
    /// Length of the original line in bytes.
    pub bytes: u64,
}

impl QuarantineRecord {
    pub fn new(source: &str, position: u64, reason: Reason, detail: String, raw: &[u8]) -> Self {
        Self::with_len(source, position, reason, detail, raw, raw.len() as u64)
    }

    /// A record whose original line had `len` bytes, of which `raw` is a prefix.
    pub fn with_len(
        source: &str,
        position: u64,
        reason: Reason,
        detail: String,
        raw: &[u8],
        len: u64,
    ) -> Self {
        let sample = &raw[..raw.len().min(MAX_SAMPLE_BYTES)];
        QuarantineRecord {
            id: crate::sinks::doc_id_for_position(source, position, 0),
            source: source.to_owned(),
            position,
            reason,
            detail,
            line: String::from_utf8_lossy(sample).into_owned(),
            bytes: len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_a_lossy_bounded_sample() {
        let raw = [b'a'; MAX_SAMPLE_BYTES + 10];
        let r = QuarantineRecord::new("f", 3, Reason::LineTooLong, String::new(), &raw);
        assert_eq!(r.line.len(), MAX_SAMPLE_BYTES);
        assert_eq!(r.bytes, (MAX_SAMPLE_BYTES + 10) as u64);
        let bad = QuarantineRecord::new("f", 4, Reason::InvalidUtf8, String::new(), b"a\xffb");
        assert_eq!(bad.line, "a\u{fffd}b");
        assert_eq!(serde_json::to_value(bad.reason).unwrap(), "invalid_utf8");
    }
}
