//! Types that travel between dataflow stages, and the [`Json`] wrapper that lets records with
//! `serde(flatten)` maps cross process boundaries.
//!
//! Timely serializes exchanged data with bincode, which cannot encode `serde(flatten)` or
//! `serde_json::Value` (they need a self-describing format). [`Json`] encodes its payload as a
//! JSON string inside the bincode stream. Within one process nothing is serialized at all.

use operators::analyze::{AnalyzedLine, PreparedLine};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::quarantine::QuarantineRecord;
use crate::summary::LineFacts;

/// A value serialized as a JSON string whatever the outer format.
#[derive(Debug, Clone, PartialEq)]
pub struct Json<T>(pub T);

impl<T: Serialize> Serialize for Json<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(&self.0).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&text)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Json<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        serde_json::from_str(&text)
            .map(Json)
            .map_err(serde::de::Error::custom)
    }
}

/// Where a line sits in the input: the mining order within an epoch, compared field by field.
///
/// `stream` names the ordered stream the line belongs to: 0 for the sources worker 0 reads in
/// arrival order (files, stdin, TCP, ZeroMQ), whose `seq` is a counter over all of them; a
/// Kafka partition for the position-placed sources, whose `seq` is the message offset (see
/// `pipeline.rs`). Both parts come from the input alone, so any worker can produce the key and
/// sorting an epoch by it gives the same order for any number of workers or processes.
/// `sub` is the position inside a batch (0 for raw lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SeqKey {
    pub stream: u32,
    pub seq: u64,
    pub sub: u32,
}

/// A run of consecutive lines of one source, all in the same epoch: the unit the source hands
/// to the dataflow, spread round-robin over the workers for decoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawChunk {
    /// Source name (file path, `stdin`, `tcp:<peer>`), part of document ids.
    pub source: String,
    /// Position (0-based line number) of the first line within its source.
    pub first_pos: u64,
    /// Ordered stream of the lines (see [`SeqKey::stream`]).
    pub stream: u32,
    /// Sequence number of the first line within its stream (see [`SeqKey`]).
    pub first_seq: u64,
    pub lines: Vec<RawLine>,
    /// When the chunk was read (ms since the Unix epoch): the documents' `ingest_timestamp`.
    pub ingest_ms: i64,
}

/// One line as read, without its line terminator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawLine {
    pub bytes: Vec<u8>,
    /// Set when the line was longer than the cap: `bytes` then holds only a prefix.
    pub oversize: Option<u64>,
}

/// What decoding produces: a line ready for mining, or a quarantined input.
// The large variant is the common one: boxing it would cost an allocation per line.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Decoded {
    Line(PreparedItem),
    /// Boxed: bad lines are rare, and the record would bloat every good one.
    Bad(SeqKey, Box<QuarantineRecord>),
}

impl Decoded {
    /// The exchange key of the mining stage: the miner shard, or the sequence for bad input.
    pub fn route(&self) -> u64 {
        match self {
            Decoded::Line(item) => item.line.0.shard,
            Decoded::Bad(key, _) => key.seq,
        }
    }

    pub fn key(&self) -> SeqKey {
        match self {
            Decoded::Line(item) => item.key,
            Decoded::Bad(key, _) => *key,
        }
    }
}

/// A masked line with its identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreparedItem {
    pub key: SeqKey,
    /// Deterministic document id (see [`crate::sinks::doc_id`]).
    pub doc_id: String,
    pub ingest_ms: i64,
    pub line: Json<PreparedLine>,
}

/// A mined (and later scored) line, or a quarantined input passed through to the sinks.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Output {
    /// Mined; scoring turns it into a [`Output::Doc`].
    Line(OutputLine),
    /// Scored and rendered as the document the sinks store.
    Doc(DocLine),
    Bad(SeqKey, Box<QuarantineRecord>),
}

impl Output {
    pub fn key(&self) -> SeqKey {
        match self {
            Output::Line(l) => l.key,
            Output::Doc(d) => d.key,
            Output::Bad(key, _) => *key,
        }
    }
}

/// A line with its analytics result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputLine {
    pub key: SeqKey,
    pub doc_id: String,
    pub ingest_ms: i64,
    pub line: Json<AnalyzedLine>,
}

/// A scored line as its stored document. Rendered right after scoring, while the result is
/// still in cache: an epoch waits whole before it is written, and writing thousands of
/// scattered records then cost more in cache misses than the rendering itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocLine {
    pub key: SeqKey,
    pub index: String,
    pub doc_id: String,
    /// The document's `_source` JSON.
    pub source: String,
    pub facts: LineFacts,
}

#[cfg(test)]
mod tests {
    use super::*;
    use operators::model::LogRecord;

    #[test]
    fn json_wrapper_round_trips_flattened_records_through_bincode_like_formats() {
        let mut record = LogRecord::from_message("hello");
        record.extra.insert("Pid".into(), serde_json::json!("42"));
        // bincode is what timely uses between processes; it rejects `flatten` on its own.
        assert!(bincode::serialize(&record)
            .and_then(|b| bincode::deserialize::<LogRecord>(&b))
            .is_err());
        let bytes = bincode::serialize(&Json(record.clone())).unwrap();
        let back: Json<LogRecord> = bincode::deserialize(&bytes).unwrap();
        assert_eq!(back.0, record);
    }
}
