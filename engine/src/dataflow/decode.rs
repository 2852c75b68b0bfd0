//! Decode: raw chunks → masked lines ready for mining (or quarantine records). Stateless, so
//! chunks are spread over all workers first; the expensive header parsing and masking then run
//! in parallel whatever worker read the source.

use crate::metrics::Metrics;
use crate::quarantine::{QuarantineRecord, Reason};
use crate::sinks::{valid_index, DocId};
use crate::wire::{Decoded, Packed, PreparedItem, RawChunk, RawLine, SeqKey};
use operators::analyze::Preparer;
use operators::format::{to_record_owned, FormatSet};
use operators::model::{LogBatch, LogRecord};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;

/// How input lines are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DecodeMode {
    /// Raw log lines, split by `--format` when given.
    #[default]
    Lines,
    /// One logsight batch JSON (`{"index","logs":[…]}`) per line.
    Batch,
}

/// Everything decoding needs; shared by the workers of a process.
#[derive(Debug, Clone)]
pub struct Decoder {
    pub mode: DecodeMode,
    pub formats: Option<FormatSet>,
    /// Index of raw lines (batches carry their own).
    pub index: String,
    pub preparer: Preparer,
}

impl Decoder {
    /// Decodes every line of a chunk, handing each result to `emit`.
    pub fn decode_chunk(&self, chunk: RawChunk, metrics: &Metrics, emit: &mut impl FnMut(Decoded)) {
        let RawChunk {
            source,
            first_pos,
            stream,
            first_seq,
            lines,
            ingest_ms,
            reader: _,
        } = chunk;
        for (i, line) in lines.into_iter().enumerate() {
            let at = Place {
                source: &source,
                pos: first_pos + i as u64,
                stream,
                seq: first_seq + i as u64,
                ingest_ms,
            };
            match self.decode_line(&at, line, metrics, emit) {
                Ok(()) => {}
                Err(bad) => {
                    metrics.quarantined(bad.reason);
                    emit(Decoded::Bad(
                        SeqKey {
                            stream: at.stream,
                            seq: at.seq,
                            sub: 0,
                        },
                        Box::new(bad),
                    ));
                }
            }
        }
    }

    fn decode_line(
        &self,
        at: &Place<'_>,
        line: RawLine,
        metrics: &Metrics,
        emit: &mut impl FnMut(Decoded),
    ) -> Result<(), QuarantineRecord> {
        if let Some(len) = line.oversize {
            let detail = format!("line has {len} bytes, above the cap");
            return Err(at.bad(Reason::LineTooLong, detail, &line.bytes, len));
        }
        // Owned: a line that is its own message keeps its buffer, without a copy.
        let text = match String::from_utf8(line.bytes) {
            Ok(t) => t,
            Err(e) => {
                let detail = e.utf8_error().to_string();
                return Err(at.bad(Reason::InvalidUtf8, detail, e.as_bytes(), 0));
            }
        };
        if text.trim().is_empty() {
            metrics.blank_line();
            return Ok(());
        }
        match self.mode {
            DecodeMode::Lines => {
                let decoded = to_record_owned(self.formats.as_ref(), text);
                if decoded.format_mismatch {
                    metrics.format_mismatch();
                }
                let id = DocId::of_position(at.source, at.pos, 0);
                emit(self.prepare(at, 0, &self.index, decoded.record, id));
                Ok(())
            }
            DecodeMode::Batch => self.decode_batch(at, &text, emit),
        }
    }

    fn decode_batch(
        &self,
        at: &Place<'_>,
        text: &str,
        emit: &mut impl FnMut(Decoded),
    ) -> Result<(), QuarantineRecord> {
        let batch: LogBatch = serde_json::from_str(text).map_err(|e| {
            let reason = match e.classify() {
                serde_json::error::Category::Data => Reason::InvalidBatch,
                _ => Reason::InvalidJson,
            };
            at.bad(reason, e.to_string(), text.as_bytes(), 0)
        })?;
        if !valid_index(&batch.index) {
            let detail = format!("index {:?} is not a valid index name", batch.index);
            return Err(at.bad(Reason::InvalidIndex, detail, text.as_bytes(), 0));
        }
        for (sub, record) in batch.logs.into_iter().enumerate() {
            let sub = u32::try_from(sub).unwrap_or(u32::MAX);
            let id = match &record.id {
                Some(log_id) => DocId::of_log(&batch.index, log_id),
                None => DocId::of_position(at.source, at.pos, sub),
            };
            emit(self.prepare(at, sub, &batch.index, record, id));
        }
        Ok(())
    }

    fn prepare(
        &self,
        at: &Place<'_>,
        sub: u32,
        index: &str,
        record: LogRecord,
        doc_id: DocId,
    ) -> Decoded {
        Decoded::Line(Box::new(PreparedItem {
            key: SeqKey {
                stream: at.stream,
                seq: at.seq,
                sub,
            },
            doc_id,
            ingest_ms: at.ingest_ms,
            line: Packed(self.preparer.prepare(index, record)),
        }))
    }
}

/// Where a line came from.
struct Place<'a> {
    source: &'a str,
    pos: u64,
    stream: u32,
    seq: u64,
    ingest_ms: i64,
}

impl Place<'_> {
    fn bad(&self, reason: Reason, detail: String, raw: &[u8], len: u64) -> QuarantineRecord {
        let len = if len == 0 { raw.len() as u64 } else { len };
        QuarantineRecord::with_len(self.source, self.pos, reason, detail, raw, len)
    }
}

/// Spreads a sequence number over workers (consecutive chunks land on different ones).
pub fn spread(seq: u64) -> u64 {
    // splitmix64 finaliser.
    let mut z = seq.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The decode stage.
pub trait Decode<'scope> {
    /// Spreads chunks over the workers and decodes them (a chunk with a `reader` stays with
    /// that worker).
    ///
    /// ```
    /// use logsight_engine::dataflow::decode::{Decode, DecodeMode, Decoder};
    /// use logsight_engine::metrics::Metrics;
    /// use logsight_engine::wire::{Decoded, RawChunk, RawLine};
    /// use operators::analyze::{AnalyticsConfig, Preparer};
    /// use std::sync::Arc;
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Event;
    ///
    /// let decoder = Decoder {
    ///     mode: DecodeMode::Lines,
    ///     formats: None,
    ///     index: "app".into(),
    ///     preparer: Preparer::new(&AnalyticsConfig::default()).unwrap(),
    /// };
    /// let chunk = RawChunk {
    ///     source: "f.log".into(),
    ///     first_pos: 0,
    ///     stream: 0,
    ///     first_seq: 0,
    ///     ingest_ms: 0,
    ///     reader: None,
    ///     lines: vec![RawLine { bytes: b"user 7 logged in".to_vec(), oversize: None }],
    /// };
    /// let out = timely::example(move |scope| {
    ///     vec![chunk].to_stream(scope).container::<Vec<_>>()
    ///         .decode(Arc::new(decoder), Arc::new(Metrics::default()))
    ///         .capture()
    /// });
    /// let lines = out.try_iter().flat_map(|e| match e { Event::Messages(_, d) => d, _ => Vec::new() }).collect::<Vec<_>>();
    /// assert!(matches!(&lines[0], Decoded::Line(l) if l.line.0.masked.masked.contains("<*>")));
    /// ```
    fn decode(
        self,
        decoder: Arc<Decoder>,
        metrics: Arc<Metrics>,
    ) -> StreamVec<'scope, u64, Decoded>;
}

impl<'scope> Decode<'scope> for StreamVec<'scope, u64, RawChunk> {
    fn decode(
        self,
        decoder: Arc<Decoder>,
        metrics: Arc<Metrics>,
    ) -> StreamVec<'scope, u64, Decoded> {
        let pact = Exchange::new(|chunk: &RawChunk| {
            chunk
                .reader
                .map_or_else(|| spread(chunk.first_seq), u64::from)
        });
        self.unary(pact, "Decode", move |_cap, _info| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let mut session = output.session(&cap);
                    for chunk in data.drain(..) {
                        decoder.decode_chunk(chunk, &metrics, &mut |d| session.give(d));
                    }
                });
            }
        })
    }
}
