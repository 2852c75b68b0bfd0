//! Sinks: where documents go. The [`Sink`] trait is what every destination implements
//! (the local store and stdout here; Kafka, Elasticsearch and ZeroMQ in the connectors issue).
//!
//! Documents are stored exactly as Elasticsearch returns them from a search:
//! `{"_index": "<index>_pipeline", "_id": "<id>", "_source": {...}}`, one per line. Ids are
//! deterministic ([`doc_id_for_log`], [`doc_id_for_position`]), so reprocessing the same input
//! produces the same ids: an Elasticsearch sink overwrites, and readers of the local store keep
//! the last document of an id.

pub mod elasticsearch;
pub mod kafka;
pub mod local_store;
pub mod stdout;

use operators::miner::Fnv64;
use operators::model::{ResultRecord, RESULT_FIELDS};
use operators::swar;
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

/// Errors of a sink.
#[derive(Debug, Error)]
pub enum SinkError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sink state is not valid: {0}")]
    BadState(String),
}

impl SinkError {
    pub fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        SinkError::Io {
            path: path.to_string(),
            source,
        }
    }
}

/// What kind of document: the part after the index in `<index>_<kind>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocKind {
    Pipeline,
    Incidents,
    LogAgg,
    Quarantine,
}

impl DocKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DocKind::Pipeline => "pipeline",
            DocKind::Incidents => "incidents",
            DocKind::LogAgg => "log_agg",
            DocKind::Quarantine => "quarantine",
        }
    }

    /// The Elasticsearch index name of this kind for `index` (`quarantine` has no prefix).
    pub fn es_index(self, index: &str) -> String {
        match self {
            DocKind::Quarantine => "quarantine".to_owned(),
            kind => format!("{index}_{}", kind.as_str()),
        }
    }
}

/// One document handed to a sink.
#[derive(Debug, Clone, Copy)]
pub struct DocRef<'a> {
    /// The logical index (tenant), e.g. `default`.
    pub index: &'a str,
    pub kind: DocKind,
    pub id: &'a str,
    /// The `_source` object, serialized.
    pub source: &'a str,
}

impl DocRef<'_> {
    /// The stored line: `{"_index":…,"_id":…,"_source":…}` (no newline).
    pub fn envelope(&self) -> String {
        let index = serde_json::Value::String(self.kind.es_index(self.index));
        let id = serde_json::Value::String(self.id.to_owned());
        format!(
            "{{\"_index\":{index},\"_id\":{id},\"_source\":{}}}",
            self.source
        )
    }
}

/// Checkpointed state of a sink, opaque to the engine (the local store keeps file lengths).
pub type SinkState = BTreeMap<String, u64>;

/// A destination for documents. Writes may be buffered; [`Sink::commit`] is called when an
/// epoch is complete and must make everything written so far durable before it returns.
pub trait Sink {
    /// Short name for metrics and logs (`local`, `stdout`, `kafka`, …).
    fn name(&self) -> &str;
    fn write(&mut self, doc: &DocRef<'_>) -> Result<(), SinkError>;
    /// Flushes durably and returns the state to store in the checkpoint.
    fn commit(&mut self) -> Result<SinkState, SinkError>;
    /// Rolls back to a checkpointed state on restart (`None`: a fresh start).
    fn restore(&mut self, state: Option<&SinkState>) -> Result<(), SinkError>;
}

/// A document id: a hash, kept as a number on its way through the dataflow and rendered as
/// its 16 hex digits only where a sink needs the text (one allocation less per line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DocId(pub u64);

impl DocId {
    /// Id of a log that carries its own id: a hash of index and log id.
    pub fn of_log(index: &str, log_id: &str) -> Self {
        let mut h = Fnv64::new();
        h.write(index.as_bytes());
        h.write(&[0]);
        h.write(log_id.as_bytes());
        DocId(h.finish())
    }

    /// Id of a log without its own id: a hash of its source, line number and place in the
    /// batch.
    pub fn of_position(source: &str, position: u64, sub: u32) -> Self {
        let mut h = Fnv64::new();
        h.write(source.as_bytes());
        h.write(&[0]);
        h.write(&position.to_le_bytes());
        h.write(&sub.to_le_bytes());
        DocId(h.finish())
    }

    /// The id as text, on the stack.
    pub fn text(self) -> DocIdText {
        DocIdText(operators::miner::hex16_digits(self.0))
    }
}

/// The 16 hex digits of a [`DocId`].
#[derive(Debug, Clone, Copy)]
pub struct DocIdText([u8; 16]);

impl DocIdText {
    pub fn as_str(&self) -> &str {
        // Hex digits are ASCII, so this never takes the fallback.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Display for DocId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text().as_str())
    }
}

/// Id of a log that carries its own id, as text (see [`DocId::of_log`]).
pub fn doc_id_for_log(index: &str, log_id: &str) -> String {
    DocId::of_log(index, log_id).to_string()
}

/// Id of a log without its own id, as text (see [`DocId::of_position`]).
pub fn doc_id_for_position(source: &str, position: u64, sub: u32) -> String {
    DocId::of_position(source, position, sub).to_string()
}

/// The `_source` of a pipeline document. Unlike `ResultRecord`'s own serde, absent
/// `timestamp`, `level` and `ingest_timestamp` are written as `null`, so every document has
/// every field the dashboards query.
pub struct PipelineSource<'a> {
    pub result: &'a ResultRecord,
    pub ingest_timestamp: &'a str,
}

impl Serialize for PipelineSource<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let r = self.result;
        let log = &r.log;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("message", &log.message)?;
        map.serialize_entry("timestamp", &log.timestamp)?;
        map.serialize_entry("level", &log.level)?;
        if let Some(id) = &log.id {
            map.serialize_entry("id", id)?;
        }
        map.serialize_entry("metadata", &log.metadata)?;
        map.serialize_entry("tags", &log.tags)?;
        for (k, v) in log.header.iter() {
            if !RESULT_FIELDS.contains(&k) {
                map.serialize_entry(k, v)?;
            }
        }
        for (k, v) in &log.extra {
            if !RESULT_FIELDS.contains(&k.as_str()) {
                map.serialize_entry(k, v)?;
            }
        }
        map.serialize_entry("template", &r.template)?;
        map.serialize_entry("template_id", &r.template_id)?;
        map.serialize_entry("params", &r.params)?;
        map.serialize_entry("prediction", &r.prediction)?;
        map.serialize_entry("anomaly_score", &r.anomaly_score)?;
        map.serialize_entry("risk_score", &r.risk_score)?;
        map.serialize_entry("added_state", &r.added_state)?;
        let ingest = r
            .ingest_timestamp
            .as_deref()
            .unwrap_or(self.ingest_timestamp);
        map.serialize_entry("ingest_timestamp", ingest)?;
        map.end()
    }
}

/// `,"name":` (`"name":` for the first key), as one literal: key names here need no escaping.
macro_rules! key {
    ($out:expr, first $name:literal) => {
        $out.push_str(concat!("\"", $name, "\":"))
    };
    ($out:expr, $name:literal) => {
        $out.push_str(concat!(",\"", $name, "\":"))
    };
}

impl PipelineSource<'_> {
    /// Appends the same text as `serde_json::to_string(self)`, faster: strings that need no
    /// escaping (nearly all) are copied as they are instead of going byte by byte through
    /// serde_json's escaper, which was the largest single cost of writing documents. Written
    /// into a `String`, so the document needs no UTF-8 check afterwards.
    pub fn write_json(&self, out: &mut String) -> serde_json::Result<()> {
        let r = self.result;
        let log = &r.log;
        out.push('{');
        key!(out, first "message");
        string(out, &log.message)?;
        key!(out, "timestamp");
        opt_string(out, log.timestamp.as_deref())?;
        key!(out, "level");
        opt_string(out, log.level.as_deref())?;
        if let Some(id) = &log.id {
            key!(out, "id");
            string(out, id)?;
        }
        key!(out, "metadata");
        if log.metadata.is_empty() {
            out.push_str("{}");
        } else {
            out.push_str(&serde_json::to_string(&log.metadata)?);
        }
        key!(out, "tags");
        out.push('{');
        for (i, (k, v)) in log.tags.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            string(out, k)?;
            out.push(':');
            string(out, v)?;
        }
        out.push('}');
        for (k, v) in log.header.iter() {
            if !RESULT_FIELDS.contains(&k) {
                out.push(',');
                string(out, k)?;
                out.push(':');
                string(out, v)?;
            }
        }
        for (k, v) in &log.extra {
            if !RESULT_FIELDS.contains(&k.as_str()) {
                out.push(',');
                string(out, k)?;
                out.push(':');
                out.push_str(&serde_json::to_string(v)?);
            }
        }
        key!(out, "template");
        string(out, &r.template)?;
        key!(out, "template_id");
        string(out, &r.template_id)?;
        key!(out, "params");
        out.push('[');
        for (i, p) in r.params.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            string(out, p)?;
        }
        out.push(']');
        key!(out, "prediction");
        integer(out, r.prediction.into());
        key!(out, "anomaly_score");
        float(out, r.anomaly_score)?;
        key!(out, "risk_score");
        integer(out, r.risk_score.into());
        key!(out, "added_state");
        integer(out, r.added_state.into());
        key!(out, "ingest_timestamp");
        let ingest = r
            .ingest_timestamp
            .as_deref()
            .unwrap_or(self.ingest_timestamp);
        string(out, ingest)?;
        out.push('}');
        Ok(())
    }
}

/// A JSON string: copied between quotes when nothing in it needs escaping, else serde_json's
/// escaping (same text either way).
#[inline]
fn string(out: &mut String, s: &str) -> serde_json::Result<()> {
    if needs_escape(s.as_bytes()) {
        out.push_str(&serde_json::to_string(s)?);
        return Ok(());
    }
    out.push('"');
    out.push_str(s);
    out.push('"');
    Ok(())
}

/// Whether JSON needs any byte of `bytes` escaped (control characters, `"`, `\\`), eight bytes
/// per step with no branch per word: every byte of every document passes here. The tail is
/// the last eight bytes (overlapping the words before), or the whole string padded with
/// spaces when shorter, so no byte goes through a byte loop.
#[inline]
fn needs_escape(bytes: &[u8]) -> bool {
    let word = |chunk: &[u8; 8]| u64::from_le_bytes(*chunk);
    let tail = match bytes.last_chunk::<8>() {
        Some(last) => word(last),
        None => {
            // Shorter than a word: the only variable-length copy, padded with spaces.
            let mut padded = [b' '; 8];
            padded[..bytes.len()].copy_from_slice(bytes);
            word(&padded)
        }
    };
    // Fixed-size loads: a copy of a variable length would be a `memcpy` call per word.
    let (words, _) = bytes.as_chunks::<8>();
    let flags = words
        .iter()
        .fold(escape_flags(tail), |acc, w| acc | escape_flags(word(w)));
    flags != 0
}

/// Nonzero when a byte of `word` is below 0x20, `"` or `\\`.
#[inline]
fn escape_flags(word: u64) -> u64 {
    swar::below(word, 0x20) | swar::equal(word, b'"') | swar::equal(word, b'\\')
}

fn opt_string(out: &mut String, s: Option<&str>) -> serde_json::Result<()> {
    match s {
        Some(s) => string(out, s),
        None => {
            out.push_str("null");
            Ok(())
        }
    }
}

/// An integer as JSON writes it (plain decimal digits), without `fmt`'s machinery, which
/// cost more than the rest of the number fields together.
fn integer(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        // A digit, so the cast is lossless.
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        out.push(char::from(d));
    }
}

/// A float exactly as serde_json writes it (its shortest round-trip form; `null` when not
/// finite), through a stack buffer instead of an allocation.
fn float(out: &mut String, x: f64) -> serde_json::Result<()> {
    let mut buf = [0u8; 32];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    serde_json::to_writer(&mut cursor, &x)?;
    // At most 24 bytes, so the position fits.
    let len = cursor.position() as usize;
    let text = std::str::from_utf8(&buf[..len]).map_err(serde::ser::Error::custom)?;
    out.push_str(text);
    Ok(())
}

/// Whether `index` can name a store file and an Elasticsearch index: lower-case ASCII letters,
/// digits, `_`, `-`, `.`, not starting with `_`, `-` or `.`, at most 200 bytes.
pub fn valid_index(index: &str) -> bool {
    !index.is_empty()
        && index.len() <= 200
        && !index.starts_with(['_', '-', '.'])
        && index
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use operators::model::LogRecord;

    #[test]
    fn escape_detection_sees_every_position() {
        for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 40] {
            assert!(!needs_escape("a".repeat(len).as_bytes()), "{len}");
            for at in 0..len {
                for special in [b'"', b'\\', b'\n', 0x01, 0x1f] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special;
                    assert!(needs_escape(&bytes), "len {len} at {at} byte {special}");
                }
            }
        }
        assert!(!needs_escape("ü € / <>".as_bytes()));
        // Every byte value, at every lane of a word, next to high and low neighbours.
        for fill in [b'a', 0xff, 0x80, 0x20] {
            for at in 0..9 {
                for b in 0..=255u8 {
                    let mut bytes = vec![fill; 9];
                    bytes[at] = b;
                    let expect = b < 0x20 || b == b'"' || b == b'\\';
                    assert_eq!(needs_escape(&bytes), expect, "fill {fill} at {at} byte {b}");
                }
            }
        }
    }

    #[test]
    fn integers_are_written_as_display_writes_them() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            255,
            1_000_007,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = String::from("x");
            integer(&mut out, n);
            assert_eq!(out, format!("x{n}"));
        }
    }

    #[test]
    fn the_escape_check_flags_exactly_the_bytes_json_escapes() {
        // Every byte value at every position of words and of the tail, next to neighbours that
        // stress the bit tricks' borrows (bytes just above the flagged ones, and high bytes).
        for neighbour in [b'a', 0x20, 0x21, 0x23, 0x5B, 0x5D, 0x80, 0xFF] {
            for b in 0..=255u8 {
                for at in 0..21 {
                    let mut bytes = vec![b'a'; 21];
                    bytes[at] = b;
                    if at + 1 < bytes.len() {
                        bytes[at + 1] = neighbour;
                    }
                    let expected = bytes.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
                    assert_eq!(needs_escape(&bytes), expected, "{bytes:?}");
                }
            }
        }
    }

    #[test]
    fn the_fast_writer_writes_what_serde_json_writes() {
        let mut plain = result();
        plain.params = ["7", "blk_1"].into_iter().collect();
        let mut tricky = result();
        tricky.log.message = "quote \" backslash \\ tab\t nl\n bell\u{7} ü € 😀 </>".into();
        tricky.log.timestamp = Some("2015-10-18T18:01:47.978Z".into());
        tricky.log.level = Some("ERROR".into());
        tricky.log.id = Some("id-\"1\"".into());
        tricky
            .log
            .tags
            .to_mut()
            .insert("svc\n".into(), "a\"b".into());
        tricky
            .log
            .metadata
            .insert("k".into(), serde_json::json!({"n": [1, 2.5, null]}));
        tricky.log.header.push("Component", "dfs.\"DataNode\"\t");
        tricky.log.header.push("Pid", "");
        tricky
            .log
            .header
            .push("level", "shadowed by the record's own key, dropped");
        tricky.log.extra.insert("host".into(), "web-\u{1}".into());
        tricky
            .log
            .extra
            .insert("template".into(), "shadowed, dropped".into());
        tricky.params = ["x\u{1}", ""].into_iter().collect();
        tricky.anomaly_score = 0.1 + 0.2;
        tricky.ingest_timestamp = Some("2026-01-01T00:00:00.000Z".into());
        for r in [plain, tricky] {
            let view = PipelineSource {
                result: &r,
                ingest_timestamp: "2026-11-27T00:00:00.000Z",
            };
            let mut fast = String::new();
            view.write_json(&mut fast).unwrap();
            assert_eq!(fast, serde_json::to_string(&view).unwrap());
            let doc: serde_json::Value = serde_json::from_str(&fast).unwrap();
            for (k, v) in r.log.header.iter().filter(|(k, _)| *k != "level") {
                assert_eq!(doc[k], v, "header field {k} in {fast}");
            }
            assert_eq!(fast.matches("\"level\"").count(), 1, "{fast}");
        }
    }

    fn result() -> ResultRecord {
        ResultRecord {
            log: LogRecord::from_message("disk failed"),
            template: "disk failed".into(),
            template_id: "00000000000000ab".into(),
            params: Default::default(),
            prediction: 1,
            anomaly_score: 0.9,
            risk_score: 80,
            added_state: 1,
            ingest_timestamp: None,
        }
    }

    #[test]
    fn pipeline_documents_carry_every_field_even_when_absent() {
        let r = result();
        let src = PipelineSource {
            result: &r,
            ingest_timestamp: "2024-01-01T00:00:00.000Z",
        };
        let v: serde_json::Value = serde_json::to_value(&src).unwrap();
        for key in [
            "message",
            "timestamp",
            "level",
            "tags",
            "template",
            "template_id",
            "params",
            "prediction",
            "anomaly_score",
            "risk_score",
            "added_state",
            "ingest_timestamp",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert!(v["timestamp"].is_null());
        let doc = DocRef {
            index: "app",
            kind: DocKind::Pipeline,
            id: "x",
            source: &serde_json::to_string(&src).unwrap(),
        };
        let env: serde_json::Value = serde_json::from_str(&doc.envelope()).unwrap();
        assert_eq!(env["_index"], "app_pipeline");
        assert_eq!(env["_source"]["risk_score"], 80);
    }

    #[test]
    fn a_log_carrying_its_own_ingest_timestamp_gets_the_key_once() {
        let mut r = result();
        r.log.extra.insert(
            "ingest_timestamp".into(),
            serde_json::json!("1999-01-01T00:00:00.000Z"),
        );
        r.log
            .extra
            .insert("host".into(), serde_json::json!("web-1"));
        let src = PipelineSource {
            result: &r,
            ingest_timestamp: "2024-01-01T00:00:00.000Z",
        };
        let text = serde_json::to_string(&src).unwrap();
        assert_eq!(text.matches("\"ingest_timestamp\"").count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["ingest_timestamp"], "2024-01-01T00:00:00.000Z");
        assert_eq!(v["host"], "web-1");
    }

    #[test]
    fn ids_are_deterministic_and_distinct() {
        assert_eq!(
            doc_id_for_position("a", 1, 0),
            doc_id_for_position("a", 1, 0)
        );
        assert_ne!(
            doc_id_for_position("a", 1, 0),
            doc_id_for_position("a", 2, 0)
        );
        assert_ne!(
            doc_id_for_position("a", 1, 0),
            doc_id_for_position("a", 1, 1)
        );
        assert_ne!(doc_id_for_log("a", "1"), doc_id_for_log("b", "1"));
        assert_eq!(doc_id_for_log("a", "1").len(), 16);
        // The text is the hash's 16 hex digits, as stored ids have always been written.
        let id = DocId::of_log("a", "1");
        assert_eq!(id.to_string(), format!("{:016x}", id.0));
        assert_eq!(id.text().as_str(), doc_id_for_log("a", "1"));
    }

    #[test]
    fn index_names_are_checked() {
        assert!(valid_index("default"));
        assert!(valid_index("app-1.x_y"));
        assert!(!valid_index("App"));
        assert!(!valid_index("_x"));
        assert!(!valid_index("a/b"));
        assert!(!valid_index(""));
    }
}
