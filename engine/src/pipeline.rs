//! The run: builds the dataflow on every worker (threads × processes, through timely's own
//! cluster configuration), restores checkpointed state, drives the sources on every worker with
//! bounded epochs in flight (backpressure), commits durable epochs and returns the summary.
//!
//! # Who reads what
//!
//! Worker 0 reads the sources that have one reader (files, stdin, TCP, ZeroMQ). Every worker
//! `w` of the `W = processes × workers` timely workers (global index, process-major) reads the
//! Kafka partitions `p` with `p % W == w` (see `sources::kafka`).
//!
//! # Epochs and sequence numbers
//!
//! Epochs are the unit of mining order, durability and commit, so they must not depend on
//! timing where that can be avoided: template ids follow the order lines are mined in.
//!
//! * **Position-placed streams** (Kafka partitions): the line at offset `o` goes to epoch
//!   `max(o / epoch_lines, e_prev, t)`, with sequence key `(stream, o)`; `e_prev` is the epoch
//!   of the partition's previous line and `t` the reading worker's input time. For a backlog
//!   (replay, catch-up, a restart after a crash) `o / epoch_lines` wins, so every partition
//!   fills the same epochs in the same order with 1 or N workers or processes. `t` only wins
//!   for a partition that went idle (caught up for `epoch_ms`) while others went on, and then
//!   receives lines again: it no longer holds the epoch frontier while idle, so its new lines
//!   join the oldest epoch still open.
//! * **Arrival-order streams** (worker 0's sources): as before, an epoch closes every
//!   `epoch_lines` lines, or when the sources are idle and the epoch is `epoch_ms` old; the
//!   sequence key is `(0, n)` with `n` counting their lines over the whole run.
//!
//! The mining operator sorts an epoch by `(stream, seq, sub)`, which every worker derives from
//! the input alone (`wire::SeqKey`).
//!
//! # Frontiers, backpressure and commits
//!
//! A worker's input time is the smallest epoch one of its streams may still write to; streams
//! that finished or idle do not hold it, and a worker whose streams all idle follows the
//! largest epoch any worker wrote to (announced on a broadcast stream), so it never holds the
//! others back and epochs do not run away while everything is idle. No worker writes to an
//! epoch `max_epochs_in_flight` or more past the oldest one not yet durable everywhere; a
//! Kafka partition that is ahead is left unread (librdkafka stops fetching it).
//!
//! When a worker's input passes an epoch it sent lines to, it reports to worker 0 its source
//! positions at the end of that epoch (per origin, exactly: the offset after the epoch's last
//! line of each partition). Worker 0 commits epoch `e` once the probe shows it durable on every
//! worker, with every report up to `e` applied: `commit.json` holds the positions of all
//! workers' origins (disjoint, so one map). Each worker then commits its own partitions'
//! offsets to the Kafka group for what is durable (at-least-once; the checkpoint wins on
//! restart).

use crate::checkpoint::{CheckpointError, Checkpoints, Commit, WorkerState, VERSION};
use crate::commit_writer::CommitWriter;
use crate::config::{EngineConfig, SinkKind};
use crate::dataflow::decode::{Decode, Decoder};
use crate::dataflow::mine_templates::{MineTemplates, MinerCheckpoint, MinerGauge};
use crate::dataflow::score::Score;
use crate::dataflow::write::{Write, Writer};
use crate::durability::Durability;
use crate::metrics::Metrics;
use crate::sinks::local_store::LocalStore;
use crate::sinks::stdout::StdoutSink;
use crate::sinks::{Sink, SinkError};
use crate::sources::{open_all, LineSource, Poll, Position, Positions, SourceError, SourceSpec};
use crate::summary::{EpochStats, RunSummary};
use crate::wire::RawChunk;
use operators::analyze::{Preparer, Scorer, ShardMiner};
use operators::format::FormatSet;
use operators::miner::TemplateMiner;
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::unordered_input::UnorderedHandle;
use timely::dataflow::operators::vec::{Broadcast, UnorderedInput};
use timely::dataflow::operators::{ActivateCapability, Exchange as _, Inspect, Probe};
use timely::dataflow::ProbeHandle;
use timely::worker::Worker;
use timely::{CommunicationConfig, WorkerConfig};

#[derive(Debug, Error)]
pub enum PipelineError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{0}")]
    Setup(String),
    #[error("worker failed: {0}")]
    Worker(String),
}

/// Where this process sits in a cluster (`-n`, `-p`, `--hostfile`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub processes: usize,
    pub process: usize,
    /// `host:port` of every process, in process order.
    pub addresses: Vec<String>,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            processes: 1,
            process: 0,
            addresses: Vec::new(),
        }
    }
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config: EngineConfig,
    pub sources: Vec<SourceSpec>,
    pub cluster: Cluster,
    /// Set (by a signal handler) to stop reading and end the run once the epochs already
    /// read are durable. Files and Kafka stop at once (their positions are checkpointed);
    /// stdin, TCP and ZeroMQ first hand over what they buffered.
    pub stop: Arc<AtomicBool>,
}

/// Process-wide parts shared by the worker threads.
struct Shared {
    config: EngineConfig,
    sources: Vec<SourceSpec>,
    decoder: Arc<Decoder>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
}

/// Runs the pipeline to the end of its sources. Returns the summary in the process holding
/// worker 0, `None` in the others.
pub fn run(opts: RunOptions, metrics: Arc<Metrics>) -> Result<Option<RunSummary>, PipelineError> {
    opts.config.validate()?;
    let run = &opts.config.run;
    let formats = match &run.format {
        Some(f) => Some(FormatSet::resolve(f).map_err(|e| PipelineError::Setup(e.to_string()))?),
        None => None,
    };
    let preparer =
        Preparer::new(&opts.config.analytics).map_err(|e| PipelineError::Setup(e.to_string()))?;
    let decoder = Arc::new(Decoder {
        mode: run.decode,
        formats,
        index: run.index.clone(),
        preparer,
    });
    let timely_config = timely::Config {
        communication: communication(run.workers, &opts.cluster)?,
        worker: WorkerConfig::default(),
    };
    let shared = Arc::new(Shared {
        config: opts.config.clone(),
        sources: opts.sources.clone(),
        decoder,
        metrics,
        stop: Arc::clone(&opts.stop),
    });
    let guards = timely::execute(timely_config, move |worker| run_worker(worker, &shared))
        .map_err(PipelineError::Setup)?;
    let mut summary = None;
    for result in guards.join() {
        match result {
            Ok(Ok(Some(s))) => summary = Some(s),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => return Err(PipelineError::Worker(e)),
            Err(e) => return Err(PipelineError::Worker(e)),
        }
    }
    Ok(summary)
}

/// Timely's communication setup for `workers` threads in this process of `cluster`.
fn communication(workers: usize, cluster: &Cluster) -> Result<CommunicationConfig, PipelineError> {
    if cluster.processes > 1 {
        if cluster.process >= cluster.processes {
            return Err(PipelineError::Setup(format!(
                "-p {} is out of range for -n {}",
                cluster.process, cluster.processes
            )));
        }
        let addresses = if cluster.addresses.is_empty() {
            (0..cluster.processes)
                .map(|i| format!("localhost:{}", 2101 + i))
                .collect()
        } else {
            cluster.addresses.clone()
        };
        if addresses.len() < cluster.processes {
            return Err(PipelineError::Setup(format!(
                "the hostfile lists {} addresses for -n {}",
                addresses.len(),
                cluster.processes
            )));
        }
        return Ok(CommunicationConfig::Cluster {
            threads: workers,
            process: cluster.process,
            addresses: addresses[..cluster.processes].to_vec(),
            report: false,
            zerocopy: false,
        });
    }
    Ok(if workers > 1 {
        CommunicationConfig::Process(workers)
    } else {
        CommunicationConfig::Thread
    })
}

/// One worker: restore, build the dataflow, run it. Errors are strings: timely joins them.
fn run_worker(worker: &mut Worker, shared: &Shared) -> Result<Option<RunSummary>, String> {
    run_worker_inner(worker, shared).map_err(|e| {
        tracing::error!("worker {}: {e}", worker.index());
        e.to_string()
    })
}

fn run_worker_inner(
    worker: &mut Worker,
    shared: &Shared,
) -> Result<Option<RunSummary>, PipelineError> {
    let config = &shared.config;
    let run = &config.run;
    let (index, peers) = (worker.index(), worker.peers());
    let checkpoints = Checkpoints::new(&run.data_dir);
    let commit = checkpoints.read_commit()?;
    Checkpoints::check_workers(commit.as_ref(), peers)?;
    let state = checkpoints.load_state(index, commit.as_ref())?;

    let mut store = LocalStore::open(&run.data_dir, index, config.store.clone())?;
    store.restore(state.as_ref().map(|s| &s.store))?;
    store.enforce_retention()?;
    if state.is_none() {
        // Recorded before anything is written, so a crash before the first commit rolls back.
        let initial = WorkerState {
            version: VERSION,
            epoch: None,
            store: store.commit()?,
        };
        checkpoints.write_state(index, &initial)?;
    }
    let miner = match checkpoints.load_miner(index, commit.as_ref())? {
        Some(snapshot) => TemplateMiner::restore(snapshot)
            .map(ShardMiner::from_miner)
            .ok_or_else(|| {
                PipelineError::Setup("the checkpointed miner state cannot be restored".into())
            })?,
        None => ShardMiner::new(&config.analytics),
    };
    let mut others: Vec<Box<dyn Sink>> = run
        .sinks
        .iter()
        .filter(|k| **k == SinkKind::Stdout)
        .map(|_| Box::new(StdoutSink::new()) as Box<dyn Sink>)
        .collect();
    others.extend(crate::connectors::open_sinks(config, index)?);
    let durability = Durability::spawn(index, Some(checkpoints.clone()))
        .map_err(|e| PipelineError::Setup(format!("starting the durability thread: {e}")))?;
    let writer = Writer {
        worker: index,
        store,
        store_pipeline: run.sinks.contains(&SinkKind::Local),
        others,
        checkpoints: Some(checkpoints.clone()),
        durability: Some(durability.clone()),
        metrics: Arc::clone(&shared.metrics),
    };

    let probe = ProbeHandle::new();
    let summary = Rc::new(RefCell::new(RunSummary::default()));
    let reports: Rc<RefCell<BTreeMap<u64, Vec<EpochReport>>>> = Rc::default();
    let announced = Rc::new(Cell::new(None::<u64>));
    let decoder = Arc::clone(&shared.decoder);
    let metrics = Arc::clone(&shared.metrics);
    let scorer = Scorer::new(&config.analytics);
    let sink_summary = Rc::clone(&summary);
    let inputs = worker.dataflow::<u64, _, _>(|scope| {
        let miner_checkpoint = MinerCheckpoint {
            checkpoints: Some(checkpoints.clone()),
            worker: index,
            durability: Some(durability),
        };
        let gauge = MinerGauge::default();
        let ((chunks, chunk_cap), stream) = scope.new_unordered_input::<RawChunk>();
        stream
            .decode(decoder, metrics)
            .mine_templates(miner, miner_checkpoint, gauge.clone())
            .score(scorer)
            .write(writer, gauge)
            .probe_with(&probe)
            .sink(
                Exchange::new(|_: &EpochStats| 0),
                "Summarize",
                move |(input, _)| {
                    input.for_each(|_, data| {
                        let mut s = sink_summary.borrow_mut();
                        for stats in data.drain(..) {
                            s.add(&stats);
                        }
                    });
                },
            );
        // Position reports go to worker 0; probed, so that an epoch is durable only once its
        // reports have arrived there.
        let ((report_handle, report_cap), report_stream) =
            scope.new_unordered_input::<EpochReport>();
        let collected = Rc::clone(&reports);
        report_stream
            .exchange(|_: &EpochReport| 0)
            .inspect(move |r: &EpochReport| {
                collected
                    .borrow_mut()
                    .entry(r.epoch)
                    .or_default()
                    .push(r.clone());
            })
            .probe_with(&probe);
        let ((announce_handle, announce_cap), announce_stream) = scope.new_unordered_input::<u64>();
        let seen = Rc::clone(&announced);
        announce_stream.broadcast().inspect(move |e: &u64| {
            if seen.get().is_none_or(|s| s < *e) {
                seen.set(Some(*e));
            }
        });
        Inputs {
            chunks,
            reports: report_handle,
            announce: announce_handle,
            caps: Some([chunk_cap, report_cap, announce_cap]),
        }
    });

    let mut driver = Driver::new(shared, commit, index, peers, inputs, announced)?;
    driver.drive(worker, &probe, &reports, &summary)?;
    if index != 0 {
        return Ok(None);
    }
    let mut result = summary.borrow().clone();
    driver.finish(&mut result);
    shared.metrics.set_templates(result.templates);
    Ok(Some(result))
}

/// What a worker tells worker 0 about an epoch it sent lines to, once its input passed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    pub worker: usize,
    pub epoch: u64,
    /// Positions, at the end of the epoch, of the origins the worker read in it.
    pub positions: Positions,
    /// The arrival-order sequence counter after the epoch (worker 0's sources only).
    pub next_seq: Option<u64>,
    /// Lines the worker read into the epoch.
    pub lines: u64,
    /// When the worker sent the epoch's first line (ms since the Unix epoch).
    pub first_ms: i64,
}

/// A worker's inputs into the dataflow: lines, position reports and epoch announcements, each
/// an unordered input whose capability is the worker's input time (`None` once done).
struct Inputs {
    chunks: UnorderedHandle<u64, RawChunk>,
    reports: UnorderedHandle<u64, EpochReport>,
    announce: UnorderedHandle<u64, u64>,
    caps: Option<[ActivateCapability<u64>; 3]>,
}

/// Worker 0's sources, read in arrival order into counted epochs.
struct Arrival {
    sources: Vec<Box<dyn LineSource>>,
    finished: Vec<bool>,
    cursor: usize,
    /// The epoch lines go to (at least the input time when an epoch starts).
    epoch: u64,
    seq: u64,
    lines_in_epoch: u64,
    epoch_started: Option<Instant>,
    /// The last read found nothing and some source is waiting for data.
    idle: bool,
}

impl Arrival {
    fn all_finished(&self) -> bool {
        self.finished.iter().all(|f| *f)
    }
}

/// One stream (Kafka partition) of a position-placed source.
struct PlacedStream {
    /// Its `SeqKey::stream`: `1 + source_number × 2^16 + partition`.
    key: u32,
    /// Epoch of the last line sent.
    last_epoch: Option<u64>,
}

/// A position-placed source (Kafka) and its streams by origin.
struct Placed {
    source: Box<dyn LineSource>,
    number: u32,
    finished: bool,
    streams: BTreeMap<String, PlacedStream>,
}

/// What a worker sent into one epoch: the content of its report.
#[derive(Default)]
struct Mark {
    positions: Positions,
    next_seq: Option<u64>,
    lines: u64,
    first_ms: i64,
}

/// Worker 0's view of the commits.
struct Committer {
    /// Writes `commit.json` and prunes old checkpoint files, off this thread.
    writer: CommitWriter,
    positions: Positions,
    next_seq: u64,
    lines_by_worker: Vec<u64>,
    latency: hdrhistogram::Histogram<u64>,
    epochs: u64,
}

/// A worker's source loop.
struct Driver<'a> {
    shared: &'a Shared,
    worker: usize,
    peers: usize,
    arrival: Option<Arrival>,
    placed: Vec<Placed>,
    inputs: Option<Inputs>,
    /// The worker's input time: no line goes to an earlier epoch.
    time: u64,
    /// Largest epoch any worker announced sending to (broadcast).
    announced: Rc<Cell<Option<u64>>>,
    /// Largest epoch this worker announced.
    own_announced: Option<u64>,
    marks: BTreeMap<u64, Mark>,
    /// This worker's reported positions not yet durable, for the Kafka group commit.
    unacked: BTreeMap<u64, Positions>,
    acked: Positions,
    committer: Option<Committer>,
    lines_in: u64,
    started: Instant,
    last_progress: Instant,
    /// A stop was requested: sources end as described in [`Driver::stop_sources`].
    stopping: bool,
}

impl<'a> Driver<'a> {
    fn new(
        shared: &'a Shared,
        commit: Option<Commit>,
        worker: usize,
        peers: usize,
        inputs: Inputs,
        announced: Rc<Cell<Option<u64>>>,
    ) -> Result<Self, PipelineError> {
        let run = &shared.config.run;
        let positions = commit
            .as_ref()
            .map(|c| c.positions.clone())
            .unwrap_or_default();
        let start_epoch = commit.as_ref().map_or(0, |c| c.epoch + 1);
        let (kafka, others): (Vec<SourceSpec>, Vec<SourceSpec>) = shared
            .sources
            .iter()
            .cloned()
            .partition(|s| matches!(s, SourceSpec::Kafka(_)));
        let arrival = if worker == 0 {
            let mut sources = open_all(&others, run.max_line_bytes)?;
            let all = crate::sources::kafka::Assignment::ALL;
            sources.extend(crate::connectors::open_sources(
                &others,
                &shared.config,
                all,
            )?);
            for source in &mut sources {
                source.resume(&positions)?;
            }
            (!sources.is_empty()).then(|| Arrival {
                finished: vec![false; sources.len()],
                sources,
                cursor: 0,
                epoch: start_epoch,
                seq: commit.as_ref().map_or(0, |c| c.next_seq),
                lines_in_epoch: 0,
                epoch_started: None,
                idle: false,
            })
        } else {
            None
        };
        // Every worker reads its share of every topic's partitions.
        let share = crate::sources::kafka::Assignment {
            index: worker,
            readers: peers,
        };
        let mut placed = Vec::new();
        for (number, source) in crate::connectors::open_sources(&kafka, &shared.config, share)?
            .into_iter()
            .enumerate()
        {
            let number = u32::try_from(number)
                .map_err(|_| PipelineError::Setup("too many Kafka sources".into()))?;
            let mut source = source;
            source.resume(&positions)?;
            let mut streams = BTreeMap::new();
            for info in source.streams() {
                let key = (number.checked_mul(1 << 16))
                    .and_then(|k| k.checked_add(1))
                    .filter(|_| info.stream < 1 << 16)
                    .map(|k| k + info.stream)
                    .ok_or_else(|| {
                        PipelineError::Setup(format!(
                            "{}: partition numbers above 65535 are not supported",
                            info.origin
                        ))
                    })?;
                streams.insert(
                    info.origin,
                    PlacedStream {
                        key,
                        last_epoch: None,
                    },
                );
            }
            if streams.is_empty() {
                // More workers than partitions: this worker has none of this topic.
                tracing::info!("worker {worker} of {peers}: no Kafka partitions to read");
                continue;
            }
            placed.push(Placed {
                source,
                number,
                finished: false,
                streams,
            });
        }
        let committer = if worker == 0 {
            Some(Committer {
                writer: CommitWriter::spawn(Checkpoints::new(&run.data_dir), peers).map_err(
                    |e| PipelineError::Setup(format!("starting the commit thread: {e}")),
                )?,
                next_seq: commit.as_ref().map_or(0, |c| c.next_seq),
                positions,
                lines_by_worker: vec![0; peers],
                latency: hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
                    .map_err(|e| PipelineError::Setup(e.to_string()))?,
                epochs: 0,
            })
        } else {
            None
        };
        let mut inputs = inputs;
        if let Some(caps) = inputs.caps.as_mut() {
            for cap in caps.iter_mut() {
                cap.downgrade(&start_epoch);
            }
        }
        Ok(Driver {
            shared,
            worker,
            peers,
            arrival,
            placed,
            inputs: Some(inputs),
            time: start_epoch,
            announced,
            own_announced: None,
            marks: BTreeMap::new(),
            unacked: BTreeMap::new(),
            acked: Positions::new(),
            committer,
            lines_in: 0,
            started: Instant::now(),
            last_progress: Instant::now(),
            stopping: false,
        })
    }

    /// On a stop request: files and Kafka end now (their positions are checkpointed, so the
    /// next run resumes exactly there); streams that cannot be replayed (stdin, TCP, ZeroMQ)
    /// end once they have handed over what they already buffered. The epochs already read
    /// then complete and commit as at the end of any input.
    fn stop_sources(&mut self) {
        if self.stopping || !self.shared.stop.load(Ordering::Relaxed) {
            return;
        }
        self.stopping = true;
        if self.worker == 0 {
            eprintln!(
                "logsight: stopping: finishing the epochs already read (a second signal exits at once)"
            );
        }
        if let Some(a) = self.arrival.as_mut() {
            for (source, finished) in a.sources.iter().zip(a.finished.iter_mut()) {
                if source.replayable() {
                    *finished = true;
                }
            }
        }
        for placed in &mut self.placed {
            placed.finished = true;
        }
    }

    fn sources_done(&self) -> bool {
        self.arrival.as_ref().is_none_or(Arrival::all_finished)
            && self.placed.iter().all(|p| p.finished)
    }

    fn drive(
        &mut self,
        worker: &mut Worker,
        probe: &ProbeHandle<u64>,
        reports: &Rc<RefCell<BTreeMap<u64, Vec<EpochReport>>>>,
        summary: &Rc<RefCell<RunSummary>>,
    ) -> Result<(), PipelineError> {
        let in_flight = self.shared.config.run.max_epochs_in_flight;
        loop {
            self.stop_sources();
            let durable = probe.with_frontier(|f| f.first().copied());
            let mut busy = false;
            if self.inputs.is_some() {
                // Epochs below `limit` may receive lines.
                let limit = durable.unwrap_or(u64::MAX).saturating_add(in_flight);
                busy |= self.read_arrival_burst(limit)?;
                busy |= self.read_placed(limit)?;
                self.advance();
            }
            self.after_durable(durable, reports)?;
            if self.inputs.is_none() && probe.done() {
                return self.after_durable(None, reports);
            }
            if busy {
                worker.step();
            } else {
                worker.step_or_park(Some(Duration::from_millis(1)));
            }
            self.progress(summary);
        }
    }

    /// Sends `chunk` into epoch `epoch` (at or after the input time).
    fn send(&mut self, epoch: u64, chunk: RawChunk, origin_position: Option<(String, Position)>) {
        let count = chunk.lines.len() as u64;
        let Some(inputs) = self.inputs.as_mut() else {
            return;
        };
        let Some(caps) = inputs.caps.as_ref() else {
            return;
        };
        let epoch = epoch.max(self.time);
        if self.own_announced.is_none_or(|a| a < epoch) {
            inputs.announce.activate().session(&caps[2]).give(epoch);
            self.own_announced = Some(epoch);
        }
        let cap = caps[0].delayed(&epoch);
        inputs.chunks.activate().session(&cap).give(chunk);
        let mark = self.marks.entry(epoch).or_insert_with(|| Mark {
            first_ms: chrono::Utc::now().timestamp_millis(),
            ..Mark::default()
        });
        mark.lines += count;
        if let Some((origin, pos)) = origin_position {
            mark.positions.insert(origin, pos);
        }
        self.lines_in += count;
    }

    /// Reads arrival-order batches until the sources have nothing ready, the backpressure
    /// window is full, or an epoch's worth of lines was read. One worker reads these sources
    /// for all: reading a single batch per step starved the others while this worker spent a
    /// step mining and writing a whole epoch (with `-w2` on a file, 4% more lines/s and steadier
    /// runs with the burst).
    fn read_arrival_burst(&mut self, limit: u64) -> Result<bool, PipelineError> {
        let start = self.lines_in;
        let most = self.shared.config.run.epoch_lines.max(1);
        let mut read = false;
        while self.lines_in - start < most && self.read_arrival(limit)? {
            read = true;
        }
        Ok(read)
    }

    /// Reads one batch from worker 0's next arrival-order source; closes the epoch when full,
    /// or when the sources are idle and the epoch is old enough. Returns whether data was read.
    fn read_arrival(&mut self, limit: u64) -> Result<bool, PipelineError> {
        let run = &self.shared.config.run;
        let time = self.time;
        let Some(a) = self.arrival.as_mut() else {
            return Ok(false);
        };
        if a.all_finished() {
            return Ok(false);
        }
        if a.lines_in_epoch == 0 {
            a.epoch = a.epoch.max(time);
        }
        if a.epoch >= limit {
            return Ok(false);
        }
        let room = run.epoch_lines - a.lines_in_epoch;
        let max = (run.chunk_lines as u64).min(room) as usize;
        let n = a.sources.len();
        let mut batch = None;
        let mut idle = false;
        for step in 0..n {
            let i = (a.cursor + step) % n;
            if a.finished[i] {
                continue;
            }
            match a.sources[i].poll(max)? {
                Poll::Batch(b) => {
                    self.shared
                        .metrics
                        .lines_in(a.sources[i].kind(), b.lines.len() as u64);
                    a.cursor = i;
                    batch = Some(b);
                    break;
                }
                // A stopping stream ends once it has nothing buffered.
                Poll::Pending if self.stopping => a.finished[i] = true,
                Poll::Pending => idle = true,
                Poll::Finished => a.finished[i] = true,
            }
        }
        let read = batch.is_some();
        if !read {
            a.cursor = (a.cursor + 1) % n.max(1);
        }
        a.idle = !read && idle;
        let epoch = a.epoch;
        if let Some(b) = batch {
            let count = b.lines.len() as u64;
            let chunk = RawChunk {
                source: b.origin,
                first_pos: b.first_pos,
                stream: 0,
                first_seq: a.seq,
                lines: b.lines,
                ingest_ms: chrono::Utc::now().timestamp_millis(),
                reader: None,
            };
            a.seq += count;
            a.lines_in_epoch += count;
            a.epoch_started.get_or_insert_with(Instant::now);
            let mut positions = Positions::new();
            for source in &a.sources {
                positions.extend(source.positions());
            }
            let next_seq = a.seq;
            self.send(epoch, chunk, None);
            if let Some(mark) = self.marks.get_mut(&epoch) {
                mark.positions.extend(positions);
                mark.next_seq = Some(next_seq);
            }
        }
        let Some(a) = self.arrival.as_mut() else {
            return Ok(read);
        };
        let full = a.lines_in_epoch >= run.epoch_lines;
        let stale = idle
            && a.epoch_started
                .is_some_and(|t| t.elapsed() >= Duration::from_millis(run.epoch_ms));
        if a.lines_in_epoch > 0 && (full || stale || a.all_finished()) {
            a.epoch += 1;
            a.lines_in_epoch = 0;
            a.epoch_started = None;
        }
        Ok(read)
    }

    /// Polls every position-placed source once (within the backpressure window) and sends
    /// what it returns into the epochs its positions give. Returns whether data was read.
    fn read_placed(&mut self, limit: u64) -> Result<bool, PipelineError> {
        let run = &self.shared.config.run;
        let lines_per_epoch = run.epoch_lines.max(1);
        let mut read = false;
        for k in 0..self.placed.len() {
            let time = self.time;
            let placed = &mut self.placed[k];
            if placed.finished {
                continue;
            }
            for info in placed.source.streams() {
                let floor = placed
                    .streams
                    .get(&info.origin)
                    .and_then(|s| s.last_epoch)
                    .unwrap_or(0)
                    .max(time);
                let below = if floor < limit {
                    limit.saturating_mul(lines_per_epoch)
                } else {
                    0
                };
                placed.source.limit(info.stream, below);
            }
            let batch = match placed.source.poll(run.chunk_lines)? {
                Poll::Batch(b) => b,
                Poll::Pending => continue,
                Poll::Finished => {
                    placed.finished = true;
                    continue;
                }
            };
            read = true;
            self.shared
                .metrics
                .lines_in(placed.source.kind(), batch.lines.len() as u64);
            let Some(stream) = placed.streams.get_mut(&batch.origin) else {
                return Err(PipelineError::Setup(format!(
                    "source {} returned lines of {}, which it was not assigned",
                    placed.number, batch.origin
                )));
            };
            let key = stream.key;
            let reader = u32::try_from(self.worker).unwrap_or(u32::MAX);
            let floor = stream.last_epoch.unwrap_or(0).max(time);
            let ingest_ms = chrono::Utc::now().timestamp_millis();
            // Splits the batch where the epoch changes.
            let mut pieces: Vec<(u64, RawChunk)> = Vec::new();
            for (i, line) in batch.lines.into_iter().enumerate() {
                let pos = batch.first_pos + i as u64;
                let epoch = (pos / lines_per_epoch).max(floor);
                match pieces.last_mut() {
                    Some((e, chunk)) if *e == epoch => chunk.lines.push(line),
                    _ => pieces.push((
                        epoch,
                        RawChunk {
                            source: batch.origin.clone(),
                            first_pos: pos,
                            stream: key,
                            first_seq: pos,
                            lines: vec![line],
                            ingest_ms,
                            reader: Some(reader),
                        },
                    )),
                }
            }
            if let Some((e, _)) = pieces.last() {
                stream.last_epoch = Some(*e);
            }
            for (epoch, chunk) in pieces {
                let end = chunk.first_pos + chunk.lines.len() as u64;
                let position = Position {
                    lines: end,
                    offset: end,
                };
                let origin = chunk.source.clone();
                self.send(epoch, chunk, Some((origin, position)));
            }
        }
        Ok(read)
    }

    /// The smallest epoch one of this worker's streams may still send to, if any holds one.
    fn hold(&self) -> Option<u64> {
        let run = &self.shared.config.run;
        let lines_per_epoch = run.epoch_lines.max(1);
        let idle_after = Duration::from_millis(run.epoch_ms);
        let mut hold: Option<u64> = None;
        let mut add = |e: u64| hold = Some(hold.map_or(e, |h| h.min(e)));
        if let Some(a) = &self.arrival {
            if !a.all_finished() && (a.lines_in_epoch > 0 || !a.idle) {
                add(a.epoch.max(self.time));
            }
        }
        for placed in self.placed.iter().filter(|p| !p.finished) {
            for info in placed.source.streams() {
                if info
                    .caught_up_since
                    .is_some_and(|t| t.elapsed() >= idle_after)
                {
                    continue;
                }
                let last = placed
                    .streams
                    .get(&info.origin)
                    .and_then(|s| s.last_epoch)
                    .unwrap_or(0);
                let next = info.next.map_or(0, |o| o / lines_per_epoch);
                add(next.max(last).max(self.time));
            }
        }
        hold
    }

    /// Moves the input time to what the streams hold (or, when none holds one, to just past the
    /// largest epoch any worker sent to), reporting every epoch it passes; drops the inputs once
    /// every source has finished.
    fn advance(&mut self) {
        let done = self.sources_done();
        let target = if done {
            u64::MAX
        } else {
            match self.hold() {
                Some(h) => h,
                None => self
                    .announced
                    .get()
                    .map_or(self.time, |e| e.saturating_add(1)),
            }
        };
        if target <= self.time && !done {
            return;
        }
        let passed: Vec<u64> = self.marks.range(..target).map(|(e, _)| *e).collect();
        for epoch in passed {
            let Some(mark) = self.marks.remove(&epoch) else {
                continue;
            };
            let report = EpochReport {
                worker: self.worker,
                epoch,
                positions: mark.positions,
                next_seq: mark.next_seq,
                lines: mark.lines,
                first_ms: mark.first_ms,
            };
            self.unacked.insert(epoch, report.positions.clone());
            if let Some(inputs) = self.inputs.as_mut() {
                if let Some(caps) = inputs.caps.as_ref() {
                    let cap = caps[1].delayed(&epoch.max(self.time));
                    inputs.reports.activate().session(&cap).give(report);
                }
            }
        }
        if done {
            self.inputs = None;
            return;
        }
        self.time = target;
        if let Some(caps) = self.inputs.as_mut().and_then(|i| i.caps.as_mut()) {
            for cap in caps.iter_mut() {
                cap.downgrade(&target);
            }
        }
    }

    /// Everything below `durable` (`None`: everything) is durable on every worker: commits
    /// this worker's Kafka offsets up to it and, on worker 0, writes the commit.
    fn after_durable(
        &mut self,
        durable: Option<u64>,
        reports: &Rc<RefCell<BTreeMap<u64, Vec<EpochReport>>>>,
    ) -> Result<(), PipelineError> {
        let below = durable.unwrap_or(u64::MAX);
        let mut acked = false;
        while let Some(entry) = self.unacked.first_entry() {
            if *entry.key() >= below {
                break;
            }
            self.acked.extend(entry.remove());
            acked = true;
        }
        if acked {
            for placed in &mut self.placed {
                placed.source.acknowledge(&self.acked)?;
            }
        }
        let Some(committer) = self.committer.as_mut() else {
            return Ok(());
        };
        let mut last = None;
        loop {
            let next = {
                let mut all = reports.borrow_mut();
                match all.first_entry() {
                    Some(e) if *e.key() < below => Some((*e.key(), e.remove())),
                    _ => None,
                }
            };
            let Some((epoch, epoch_reports)) = next else {
                break;
            };
            let mut first_ms = i64::MAX;
            for r in epoch_reports {
                committer.positions.extend(r.positions);
                if let Some(seq) = r.next_seq {
                    committer.next_seq = seq;
                }
                if let Some(n) = committer.lines_by_worker.get_mut(r.worker) {
                    *n += r.lines;
                }
                first_ms = first_ms.min(r.first_ms);
            }
            let now = chrono::Utc::now().timestamp_millis();
            let micros = (now.saturating_sub(first_ms).max(0) as u64)
                .saturating_mul(1000)
                .max(1);
            let _ = committer.latency.record(micros);
            self.shared.metrics.epoch_done(micros as f64 / 1e6);
            committer.epochs += 1;
            last = Some(epoch);
        }
        if let Some(epoch) = last {
            let commit = Commit {
                version: VERSION,
                epoch,
                next_seq: committer.next_seq,
                workers: self.peers,
                positions: committer.positions.clone(),
            };
            committer.writer.submit(commit)?;
        }
        // Arrival-order sources hear of a commit only once it is on disk.
        let written = if durable.is_none() {
            committer.writer.wait_all()?
        } else {
            committer.writer.written()?
        };
        if let (Some(commit), Some(a)) = (written.last(), self.arrival.as_mut()) {
            for source in &mut a.sources {
                source.acknowledge(&commit.positions)?;
            }
        }
        Ok(())
    }

    fn progress(&mut self, summary: &Rc<RefCell<RunSummary>>) {
        let every = self.shared.config.run.progress_secs;
        if self.worker != 0
            || every == 0
            || self.last_progress.elapsed() < Duration::from_secs(every)
        {
            return;
        }
        self.last_progress = Instant::now();
        let secs = self.started.elapsed().as_secs_f64();
        let committed: u64 = self
            .committer
            .as_ref()
            .map_or(0, |c| c.lines_by_worker.iter().sum());
        let docs = summary.borrow().documents;
        eprintln!(
            "logsight: {committed} lines committed, {docs} documents written, {:.0} lines/s, epoch {}",
            committed as f64 / secs.max(1e-9),
            self.time
        );
    }

    fn finish(&self, summary: &mut RunSummary) {
        summary.elapsed_secs = self.started.elapsed().as_secs_f64();
        let Some(c) = &self.committer else {
            summary.lines_in = self.lines_in;
            return;
        };
        summary.lines_in = c.lines_by_worker.iter().sum();
        if self.peers > 1 {
            summary.lines_in_by_worker = c.lines_by_worker.clone();
        }
        summary.epochs = c.epochs;
        if !c.latency.is_empty() {
            summary.epoch_latency_p50_ms = c.latency.value_at_quantile(0.5) as f64 / 1000.0;
            summary.epoch_latency_p99_ms = c.latency.value_at_quantile(0.99) as f64 / 1000.0;
        }
    }
}
