//! Types that travel between dataflow stages, and the [`Packed`] wrapper that lets analytics
//! records cross process boundaries.
//!
//! Timely serializes exchanged data with bincode, which cannot encode `serde(flatten)` or
//! `serde_json::Value` (they need a self-describing format). [`Packed`] writes a record as its
//! plain fields in order, with only the `serde_json::Value` maps (metadata and unknown fields)
//! as JSON text, empty when the map is: several times cheaper than the whole record as JSON.
//! Within one process nothing is serialized at all.

use operators::analyze::{AnalyzedLine, PreparedLine};
use operators::mask::MaskedMessage;
use operators::model::{
    default_log_tags, is_default_tags, HeaderFields, LogRecord, Params, ResultRecord, Tags,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::borrow::Cow;

use crate::quarantine::QuarantineRecord;
use crate::sinks::DocId;
use crate::summary::LineFacts;

/// An analytics record in its compact wire form (see the module documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct Packed<T>(pub T);

/// A JSON object as text, empty for an empty map.
fn map_text<E: serde::ser::Error>(map: &Map<String, Value>) -> Result<String, E> {
    if map.is_empty() {
        return Ok(String::new());
    }
    serde_json::to_string(map).map_err(E::custom)
}

fn map_from_text<E: serde::de::Error>(text: &str) -> Result<Map<String, Value>, E> {
    if text.is_empty() {
        return Ok(Map::new());
    }
    serde_json::from_str(text).map_err(E::custom)
}

/// The fields of a [`LogRecord`] in order: maps as text, tags `None` when they are the
/// defaults, header fields as their packed parts.
type LogFields = (
    String,
    Option<String>,
    Option<Cow<'static, str>>,
    Option<String>,
    String,
    Option<Tags>,
    (String, Vec<u32>),
    String,
);

/// [`LogFields`] by reference, for writing.
type LogFieldRefs<'a> = (
    &'a str,
    &'a Option<String>,
    &'a Option<Cow<'static, str>>,
    &'a Option<String>,
    String,
    Option<&'a Tags>,
    (&'a str, &'a [u32]),
    String,
);

fn log_fields<E: serde::ser::Error>(log: &LogRecord) -> Result<LogFieldRefs<'_>, E> {
    let tags: &Tags = &log.tags;
    Ok((
        &log.message,
        &log.timestamp,
        &log.level,
        &log.id,
        map_text(&log.metadata)?,
        (!is_default_tags(tags)).then_some(tags),
        log.header.as_parts(),
        map_text(&log.extra)?,
    ))
}

fn log_from_fields<E: serde::de::Error>(fields: LogFields) -> Result<LogRecord, E> {
    let (message, timestamp, level, id, metadata, tags, (header_text, header_ends), extra) = fields;
    let header = HeaderFields::from_parts(header_text, &header_ends)
        .ok_or_else(|| E::custom("header field offsets do not fit their text"))?;
    Ok(LogRecord {
        message,
        timestamp,
        level,
        id,
        metadata: map_from_text(&metadata)?,
        tags: tags.map_or_else(default_log_tags, Cow::Owned),
        header,
        extra: map_from_text(&extra)?,
    })
}

impl Serialize for Packed<PreparedLine> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let p = &self.0;
        (&p.index, log_fields(&p.record)?, &p.masked, p.shard).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Packed<PreparedLine> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (index, log, masked, shard): (String, LogFields, MaskedMessage, u64) =
            Deserialize::deserialize(deserializer)?;
        Ok(Packed(PreparedLine {
            index,
            record: log_from_fields(log)?,
            masked,
            shard,
        }))
    }
}

/// The analytics fields of a [`ResultRecord`] after its log.
type ResultFields = (
    String,
    String,
    (String, Vec<u32>),
    u8,
    f64,
    u32,
    u8,
    Option<String>,
);

impl Serialize for Packed<AnalyzedLine> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let a = &self.0;
        let r = &a.result;
        let fields = (
            &r.template,
            &r.template_id,
            r.params.as_parts(),
            r.prediction,
            r.anomaly_score,
            r.risk_score,
            r.added_state,
            &r.ingest_timestamp,
        );
        (&a.index, log_fields(&r.log)?, fields).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Packed<AnalyzedLine> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (index, log, f): (String, LogFields, ResultFields) =
            Deserialize::deserialize(deserializer)?;
        Ok(Packed(AnalyzedLine {
            index,
            result: ResultRecord {
                log: log_from_fields(log)?,
                template: f.0.into(),
                template_id: f.1.into(),
                params: Params::from_parts(f.2 .0, &f.2 .1).ok_or_else(|| {
                    serde::de::Error::custom("param offsets do not fit their text")
                })?,
                prediction: f.3,
                anomaly_score: f.4,
                risk_score: f.5,
                added_state: f.6,
                ingest_timestamp: f.7,
            },
        }))
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
    /// The worker that read the chunk when sources are spread over all workers (Kafka
    /// partitions): it decodes the chunk itself, since moving raw lines to another worker,
    /// let alone another process, costs more than the load it would balance. `None` for the
    /// sources worker 0 reads alone, whose chunks are spread over all workers.
    #[serde(default)]
    pub reader: Option<u32>,
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
    /// Boxed: items are moved many times on their way (buffers, exchange, the epoch's sort),
    /// and a pointer moves far cheaper than the whole line.
    Line(Box<PreparedItem>),
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
    /// Deterministic document id (see [`DocId::of_log`] and [`DocId::of_position`]).
    pub doc_id: DocId,
    pub ingest_ms: i64,
    pub line: Packed<PreparedLine>,
}

/// A mined (and later scored) line, or a quarantined input passed through to the sinks.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Output {
    /// Mined; scoring turns it into a [`Output::Doc`]. Boxed like [`Decoded::Line`].
    Line(Box<OutputLine>),
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
    pub doc_id: DocId,
    pub ingest_ms: i64,
    pub line: Packed<AnalyzedLine>,
}

/// A scored line as its stored document. Rendered right after scoring, while the result is
/// still in cache: an epoch waits whole before it is written, and writing thousands of
/// scattered records then cost more in cache misses than the rendering itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocLine {
    pub key: SeqKey,
    pub index: String,
    pub doc_id: DocId,
    /// The document's `_source` JSON.
    pub source: String,
    pub facts: LineFacts,
}

#[cfg(test)]
mod tests {
    use super::*;
    use operators::mask::Masker;
    use operators::model::LogRecord;

    #[test]
    fn packed_lines_round_trip_through_bincode() {
        use operators::analyze::{AnalyticsConfig, Preparer, ShardMiner};
        let mut record = LogRecord::from_message("took 15 ms from 10.0.0.1");
        record
            .extra
            .insert("host".into(), serde_json::json!("web-1"));
        record.header.push("Pid", "42");
        record.header.push("Component", "dfs.DataNode");
        record.tags.to_mut().insert("service".into(), "db".into());
        record
            .metadata
            .insert("k".into(), serde_json::json!({"n": [1, 2]}));
        record.timestamp = Some("2021-01-01T00:00:00.000Z".into());
        // bincode is what timely uses between processes; it rejects `flatten` on its own.
        assert!(bincode::serialize(&record)
            .and_then(|b| bincode::deserialize::<LogRecord>(&b))
            .is_err());
        let cfg = AnalyticsConfig::default();
        let prepared = Preparer::new(&cfg).unwrap().prepare("app", record);
        let bytes = bincode::serialize(&Packed(prepared.clone())).unwrap();
        let back: Packed<PreparedLine> = bincode::deserialize(&bytes).unwrap();
        assert_eq!(back.0, prepared);
        let mut analyzed = ShardMiner::new(&cfg).mine(prepared);
        analyzed.result.anomaly_score = 0.25;
        analyzed.result.ingest_timestamp = Some("now".into());
        let bytes = bincode::serialize(&Packed(analyzed.clone())).unwrap();
        let back: Packed<AnalyzedLine> = bincode::deserialize(&bytes).unwrap();
        assert_eq!(back.0, analyzed);
        // Empty maps stay empty (they travel as empty text).
        let plain = Preparer::new(&cfg)
            .unwrap()
            .prepare("app", LogRecord::from_message("x"));
        let bytes = bincode::serialize(&Packed(plain.clone())).unwrap();
        let back = bincode::deserialize::<Packed<PreparedLine>>(&bytes)
            .unwrap()
            .0;
        assert_eq!(back, plain);
        // Default tags stay shared rather than rebuilt per line.
        assert!(matches!(back.record.tags, Cow::Borrowed(_)));
    }

    #[test]
    fn masked_ranges_that_do_not_fit_are_an_error_not_a_panic() {
        let good = Masker::default_masks().mask("took 15 ms");
        let bytes = bincode::serialize(&good).unwrap();
        assert_eq!(bincode::deserialize::<MaskedMessage>(&bytes).unwrap(), good);
        // Laid out as the message's fields: text, masked, token count, ranges.
        let corrupt = |tokens: u32, parts: Vec<[u32; 4]>| {
            let fields = ("tök 15".to_owned(), "tök <*>".to_owned(), tokens, parts);
            bincode::deserialize::<MaskedMessage>(&bincode::serialize(&fields).unwrap())
        };
        assert!(corrupt(2, vec![[0, 4, 0, 4], [5, 7, 5, 8], [1, 5, 7, 0]]).is_ok());
        // More tokens than ranges, a range past the text, one inside a character, a value
        // of a token that does not exist, a token range past the masked text.
        assert!(corrupt(4, vec![[0, 4, 0, 4], [5, 7, 5, 8], [1, 5, 7, 0]]).is_err());
        assert!(corrupt(2, vec![[0, 4, 0, 4], [5, 9, 5, 8]]).is_err());
        assert!(corrupt(2, vec![[0, 2, 0, 4], [5, 7, 5, 8]]).is_err());
        assert!(corrupt(2, vec![[0, 4, 0, 4], [5, 7, 5, 8], [2, 5, 7, 0]]).is_err());
        assert!(corrupt(2, vec![[0, 4, 0, 4], [5, 7, 5, 9]]).is_err());
        assert!(corrupt(1, vec![[4, 0, 0, 4]]).is_err());
        // Truncated input.
        assert!(bincode::deserialize::<MaskedMessage>(&bytes[..bytes.len() - 3]).is_err());
    }

    #[test]
    fn header_offsets_that_do_not_fit_are_an_error_not_a_panic() {
        let fields: LogFields = (
            "m".into(),
            None,
            None,
            None,
            String::new(),
            None,
            ("Pidü".into(), vec![3, 4]),
            String::new(),
        );
        let bytes = bincode::serialize(&fields).unwrap();
        let err = bincode::deserialize::<LogFields>(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|f| log_from_fields::<bincode::Error>(f).map_err(|e| e.to_string()));
        assert!(err.is_err_and(|e| e.contains("header field offsets")));
    }
}
