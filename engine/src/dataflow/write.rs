//! Write: the sink operator. Buffers each epoch until its input frontier passes it, writes the
//! epoch's documents to every sink, commits the sinks, has the durability thread fsync the
//! store and record the worker's checkpoint state, and only then lets its output frontier pass
//! the epoch. Its output carries per-epoch statistics, so a probe on it tells when an epoch is
//! durable on every worker.

use crate::checkpoint::{Checkpoints, WorkerState, VERSION};
use crate::dataflow::mine_templates::MinerGauge;
use crate::durability::{Committed, Durability};
use crate::metrics::Metrics;
use crate::sinks::local_store::{LocalStore, PendingSync};
use crate::sinks::{DocKind, DocRef, PipelineSource, Sink, SinkError};
use crate::summary::{EpochStats, LineFacts, StatsBuilder};
use crate::wire::{DocLine, Output, OutputLine};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{mpsc, Arc};
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
    /// Where the store fsync and the state file go; `None` does them inline.
    pub durability: Option<Durability>,
    pub metrics: Arc<Metrics>,
}

/// An epoch written and flushed, not yet durable.
pub struct FlushedEpoch {
    pub files: PendingSync,
    /// The state file to write once `files` are synced (with checkpoints only).
    pub state: Option<WorkerState>,
}

impl FlushedEpoch {
    /// Fsyncs the store files, then records the state: on the worker thread when there is no
    /// durability thread, else on that thread.
    pub fn make_durable(
        self,
        worker: usize,
        checkpoints: Option<&Checkpoints>,
    ) -> Result<(), WriteError> {
        self.files.sync()?;
        if let (Some(checkpoints), Some(state)) = (checkpoints, &self.state) {
            checkpoints.write_state(worker, state)?;
        }
        Ok(())
    }
}

impl Writer {
    /// Writes one complete epoch to every sink and commits the others; the local store is
    /// flushed but left for [`FlushedEpoch`] to make durable.
    fn write_epoch(
        &mut self,
        epoch: u64,
        batches: Vec<Vec<Output>>,
        stats: &mut StatsBuilder,
    ) -> Result<FlushedEpoch, WriteError> {
        let mut renderer = Renderer::default();
        let (mut pipeline, mut quarantined) = (0u64, 0u64);
        for item in batches.into_iter().flatten() {
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
            let id = line.doc_id.text();
            let doc = DocRef {
                index: &line.index,
                kind: DocKind::Pipeline,
                id: id.as_str(),
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
        let (lengths, files) = self.store.flush_commit()?;
        for sink in &mut self.others {
            sink.commit()?;
            self.metrics.lines_out(sink.name(), pipeline);
        }
        if self.store_pipeline {
            self.metrics.lines_out("local", pipeline);
        }
        self.metrics.lines_out("quarantine", quarantined);
        let state = self.checkpoints.as_ref().map(|_| WorkerState {
            version: VERSION,
            epoch: Some(epoch),
            store: lengths,
        });
        Ok(FlushedEpoch { files, state })
    }

    /// Stops the process: the store can no longer be trusted to match the checkpoint, and a
    /// restart resumes from the last durable epoch.
    fn fail(&self, epoch: u64, error: &dyn std::fmt::Display) -> ! {
        self.metrics.error();
        tracing::error!(
            "worker {}: writing epoch {epoch} failed: {error}",
            self.worker
        );
        eprintln!("logsight: writing epoch {epoch} failed: {error}");
        std::process::exit(2);
    }
}

/// Renders scored lines as documents ([`DocLine`]), reusing its buffers from line to line.
#[derive(Default)]
pub struct Renderer {
    ingest: IngestClock,
    /// Length of the last document: the next one's buffer starts a little larger.
    last_len: usize,
}

impl Renderer {
    /// Renders `line`, taking its index (left empty) once rendering succeeded.
    pub fn render(&mut self, line: &mut OutputLine) -> Result<DocLine, WriteError> {
        let analyzed = &mut line.line.0;
        let view = PipelineSource {
            result: &analyzed.result,
            ingest_timestamp: self.ingest.format(line.ingest_ms),
        };
        // Rendered in place (not into a reused buffer then copied): documents of a stream are
        // of similar length, so the first guess rarely has to grow.
        let mut source = String::with_capacity(self.last_len + self.last_len / 4 + 64);
        view.write_json(&mut source)?;
        self.last_len = source.len();
        Ok(DocLine {
            key: line.key,
            index: std::mem::take(&mut analyzed.index),
            doc_id: line.doc_id,
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
    ///         durability: None,
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
        let worker = self.scope().worker();
        self.unary_frontier(Pipeline, "Write", move |cap, info| {
            // Held at the oldest epoch not yet durable here: downstream frontiers (the probe)
            // cannot pass an epoch before its documents and state are on disk.
            let mut hold = Some(cap);
            // An epoch's batches as they came: appending them to one vector would copy every
            // item again each time it grows.
            let mut pending: BTreeMap<u64, Vec<Vec<Output>>> = BTreeMap::new();
            let mut stats = StatsBuilder::default();
            // Epochs handed to the durability thread, oldest first, with their statistics.
            let mut awaiting: VecDeque<(u64, EpochStats)> = VecDeque::new();
            let (done_tx, done_rx) = mpsc::channel::<Committed>();
            let wake = worker.sync_activator_for(info.address.to_vec());
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    if let Some(time) = cap.least().copied() {
                        pending.entry(time).or_default().push(std::mem::take(data));
                    }
                });
                while let Ok(done) = done_rx.try_recv() {
                    if let Err(e) = &done.result {
                        writer.fail(done.epoch, e);
                    }
                    match awaiting.pop_front() {
                        Some((epoch, epoch_stats)) if epoch == done.epoch => {
                            if let Some(h) = &hold {
                                output.session(&h.delayed(&epoch)).give(epoch_stats);
                            }
                        }
                        _ => writer.fail(done.epoch, &"commits were reported out of order"),
                    }
                }
                while let Some((&epoch, _)) = pending.first_key_value() {
                    if frontier.less_equal(&epoch) {
                        break;
                    }
                    let items = pending.remove(&epoch).unwrap_or_default();
                    let flushed = writer
                        .write_epoch(epoch, items, &mut stats)
                        .unwrap_or_else(|e| writer.fail(epoch, &e));
                    let templates = gauge.templates() as u64;
                    let epoch_stats = stats.finish(writer.worker, epoch, templates);
                    match &writer.durability {
                        Some(durability) => {
                            let (tx, wake) = (done_tx.clone(), wake.clone());
                            let queued = durability.commit(epoch, flushed, {
                                move |done| {
                                    let _ = tx.send(done);
                                    let _ = wake.activate();
                                }
                            });
                            if !queued {
                                writer.fail(epoch, &"the durability thread is gone");
                            }
                            awaiting.push_back((epoch, epoch_stats));
                        }
                        None => {
                            let (worker, checkpoints) =
                                (writer.worker, writer.checkpoints.as_ref());
                            if let Err(e) = flushed.make_durable(worker, checkpoints) {
                                writer.fail(epoch, &e);
                            }
                            if let Some(h) = &hold {
                                output.session(&h.delayed(&epoch)).give(epoch_stats);
                            }
                        }
                    }
                }
                // Not past the input frontier, nor past the oldest epoch still being synced.
                let input_front = frontier.frontier().first().copied();
                let oldest_awaited = awaiting.front().map(|(e, _)| *e);
                match input_front.into_iter().chain(oldest_awaited).min() {
                    Some(f) => {
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
