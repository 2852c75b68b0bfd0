//! Write: the sink operator. Buffers each epoch until its input frontier passes it, writes the
//! epoch's documents to every sink, commits the sinks (fsync), records the worker's checkpoint
//! state, and only then lets its output frontier pass the epoch. Its output carries per-epoch
//! statistics, so a probe on it tells when an epoch is durable on every worker.

use crate::checkpoint::{Checkpoints, WorkerState, VERSION};
use crate::dataflow::mine_templates::MinerGauge;
use crate::metrics::Metrics;
use crate::sinks::local_store::LocalStore;
use crate::sinks::{DocKind, DocRef, PipelineSource, Sink, SinkError};
use crate::summary::{EpochStats, LineFacts, StatsBuilder};
use crate::wire::{DocLine, Output, OutputLine};
use std::collections::BTreeMap;
use std::sync::Arc;
use thiserror::Error;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;

#[derive(Debug, Error)]
pub enum WriteError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    #[error("serializing a document: {0}")]
    Json(#[from] serde_json::Error),
}

/// One worker's sinks and checkpoint state.
pub struct Writer {
    pub worker: usize,
    /// The local store: always present, it holds quarantine files and the checkpointed state.
    pub store: LocalStore,
    /// Whether pipeline documents go to the local store (else only to `others`).
    pub store_pipeline: bool,
    pub others: Vec<Box<dyn Sink>>,
    pub checkpoints: Option<Checkpoints>,
    pub metrics: Arc<Metrics>,
}

impl Writer {
    /// Writes one complete epoch, commits, and records the checkpoint state.
    fn write_epoch(
        &mut self,
        epoch: u64,
        items: Vec<Output>,
        stats: &mut StatsBuilder,
    ) -> Result<(), WriteError> {
        let mut renderer = Renderer::default();
        let (mut pipeline, mut quarantined) = (0u64, 0u64);
        for item in items {
            let line = match item {
                Output::Doc(line) => line,
                // Scoring renders every line; one that arrives unrendered is rendered here.
                Output::Line(mut line) => renderer.render(&mut line)?,
                Output::Bad(_, record) => {
                    let json = serde_json::to_string(&record)?;
                    self.store.write(&DocRef {
                        index: "",
                        kind: DocKind::Quarantine,
                        id: &record.id,
                        source: &json,
                    })?;
                    stats.quarantined();
                    quarantined += 1;
                    continue;
                }
            };
            let doc = DocRef {
                index: &line.index,
                kind: DocKind::Pipeline,
                id: &line.doc_id,
                source: &line.source,
            };
            if self.store_pipeline {
                self.store.write(&doc)?;
            }
            for sink in &mut self.others {
                sink.write(&doc)?;
            }
            stats.line(&line.facts);
            pipeline += 1;
        }
        let lengths = self.store.commit()?;
        for sink in &mut self.others {
            sink.commit()?;
            self.metrics.lines_out(sink.name(), pipeline);
        }
        if self.store_pipeline {
            self.metrics.lines_out("local", pipeline);
        }
        self.metrics.lines_out("quarantine", quarantined);
        if let Some(checkpoints) = &self.checkpoints {
            let state = WorkerState {
                version: VERSION,
                epoch: Some(epoch),
                store: lengths,
            };
            checkpoints.write_state(self.worker, &state)?;
        }
        Ok(())
    }
}

/// Renders scored lines as documents ([`DocLine`]), reusing its buffers from line to line.
#[derive(Default)]
pub struct Renderer {
    ingest: IngestClock,
    buf: Vec<u8>,
}

impl Renderer {
    /// Renders `line`, taking its index and id (left empty) once rendering succeeded.
    pub fn render(&mut self, line: &mut OutputLine) -> Result<DocLine, WriteError> {
        let analyzed = &mut line.line.0;
        let view = PipelineSource {
            result: &analyzed.result,
            ingest_timestamp: self.ingest.format(line.ingest_ms),
        };
        self.buf.clear();
        view.write_json(&mut self.buf)?;
        let source = std::str::from_utf8(&self.buf)
            .map_err(|e| WriteError::Json(serde::ser::Error::custom(e)))?
            .to_owned();
        Ok(DocLine {
            key: line.key,
            index: std::mem::take(&mut analyzed.index),
            doc_id: std::mem::take(&mut line.doc_id),
            source,
            facts: LineFacts::of(&analyzed.result),
        })
    }
}

/// Formats ingest times, reusing the last text while the millisecond is the same.
#[derive(Default)]
struct IngestClock {
    ms: Option<i64>,
    text: String,
}

impl IngestClock {
    fn format(&mut self, ms: i64) -> &str {
        if self.ms != Some(ms) {
            self.ms = Some(ms);
            self.text = chrono::DateTime::from_timestamp_millis(ms)
                .map(|t| operators::timestamp::to_rfc3339_millis(&t))
                .unwrap_or_default();
        }
        &self.text
    }
}

/// The write stage.
pub trait Write<'scope> {
    /// Writes complete epochs durably; emits one [`EpochStats`] per epoch with data.
    ///
    /// ```
    /// use logsight_engine::dataflow::write::{Write, Writer};
    /// use logsight_engine::dataflow::mine_templates::MinerGauge;
    /// use logsight_engine::metrics::Metrics;
    /// use logsight_engine::quarantine::{QuarantineRecord, Reason};
    /// use logsight_engine::sinks::local_store::{read_documents, LocalStore, LocalStoreConfig};
    /// use logsight_engine::wire::{Output, SeqKey};
    /// use std::sync::Arc;
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Event;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().to_owned();
    /// let bad = QuarantineRecord::new("f", 0, Reason::InvalidJson, "eof".into(), b"{");
    /// let out = timely::example(move |scope| {
    ///     let writer = Writer {
    ///         worker: 0,
    ///         store: LocalStore::open(&path, 0, LocalStoreConfig::default()).unwrap(),
    ///         store_pipeline: true,
    ///         others: vec![],
    ///         checkpoints: None,
    ///         metrics: Arc::new(Metrics::default()),
    ///     };
    ///     vec![Output::Bad(SeqKey { stream: 0, seq: 0, sub: 0 }, Box::new(bad))].to_stream(scope).container::<Vec<_>>()
    ///         .write(writer, MinerGauge::default())
    ///         .capture()
    /// });
    /// let stats: Vec<_> = out.try_iter().flat_map(|e| match e { Event::Messages(_, d) => d, _ => Vec::new() }).collect();
    /// assert_eq!(stats[0].quarantined, 1);
    /// assert_eq!(read_documents(dir.path(), "quarantine").unwrap().len(), 1);
    /// ```
    fn write(self, writer: Writer, gauge: MinerGauge) -> StreamVec<'scope, u64, EpochStats>;
}

impl<'scope> Write<'scope> for StreamVec<'scope, u64, Output> {
    fn write(self, mut writer: Writer, gauge: MinerGauge) -> StreamVec<'scope, u64, EpochStats> {
        self.unary_frontier(Pipeline, "Write", move |cap, _info| {
            // Held at the oldest epoch not yet durable here: downstream frontiers (the probe)
            // cannot pass an epoch before its documents and state are on disk.
            let mut hold = Some(cap);
            let mut pending: BTreeMap<u64, Vec<Output>> = BTreeMap::new();
            let mut stats = StatsBuilder::default();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    if let Some(time) = cap.least().copied() {
                        pending.entry(time).or_default().append(data);
                    }
                });
                while let Some((&epoch, _)) = pending.first_key_value() {
                    if frontier.less_equal(&epoch) {
                        break;
                    }
                    let items = pending.remove(&epoch).unwrap_or_default();
                    if let Err(e) = writer.write_epoch(epoch, items, &mut stats) {
                        // The store can no longer be trusted to match the checkpoint: stop
                        // here; a restart resumes from the last durable epoch.
                        writer.metrics.error();
                        tracing::error!(
                            "worker {}: writing epoch {epoch} failed: {e}",
                            writer.worker
                        );
                        eprintln!("logsight: writing epoch {epoch} failed: {e}");
                        std::process::exit(2);
                    }
                    let templates = gauge.templates() as u64;
                    let epoch_stats = stats.finish(writer.worker, epoch, templates);
                    if let Some(h) = &hold {
                        output.session(&h.delayed(&epoch)).give(epoch_stats);
                    }
                }
                match frontier.frontier().first() {
                    Some(&f) => {
                        if let Some(h) = hold.as_mut() {
                            if *h.time() < f {
                                h.downgrade(&f);
                            }
                        }
                    }
                    None => hold = None,
                }
            }
        })
    }
}
