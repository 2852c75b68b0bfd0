//! The run: builds the dataflow on every worker (threads × processes, through timely's own
//! cluster configuration), restores checkpointed state, drives the sources from worker 0 with
//! bounded epochs in flight (backpressure), commits durable epochs and returns the summary.

use crate::checkpoint::{CheckpointError, Checkpoints, Commit, WorkerState, VERSION};
use crate::config::{EngineConfig, SinkKind};
use crate::dataflow::decode::{Decode, Decoder};
use crate::dataflow::mine_templates::{MineTemplates, MinerCheckpoint, MinerGauge};
use crate::dataflow::score::Score;
use crate::dataflow::write::{Write, Writer};
use crate::metrics::Metrics;
use crate::sinks::local_store::LocalStore;
use crate::sinks::stdout::StdoutSink;
use crate::sinks::{Sink, SinkError};
use crate::sources::{open_all, LineSource, Poll, Positions, SourceError, SourceSpec};
use crate::summary::{EpochStats, RunSummary};
use crate::wire::RawChunk;
use operators::analyze::{Preparer, Scorer, ShardMiner};
use operators::format::FormatSet;
use operators::miner::TemplateMiner;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Input, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle};
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
}

/// Process-wide parts shared by the worker threads.
struct Shared {
    config: EngineConfig,
    sources: Vec<SourceSpec>,
    decoder: Arc<Decoder>,
    metrics: Arc<Metrics>,
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
    let writer = Writer {
        worker: index,
        store,
        store_pipeline: run.sinks.contains(&SinkKind::Local),
        others,
        checkpoints: Some(checkpoints.clone()),
        metrics: Arc::clone(&shared.metrics),
    };

    let mut input: InputHandleVec<u64, RawChunk> = InputHandleVec::new();
    let probe = ProbeHandle::new();
    let summary = Rc::new(RefCell::new(RunSummary::default()));
    let decoder = Arc::clone(&shared.decoder);
    let metrics = Arc::clone(&shared.metrics);
    let scorer = Scorer::new(&config.analytics);
    let sink_summary = Rc::clone(&summary);
    worker.dataflow::<u64, _, _>(|scope| {
        let miner_checkpoint = MinerCheckpoint {
            checkpoints: Some(checkpoints.clone()),
            worker: index,
        };
        let gauge = MinerGauge::default();
        scope
            .input_from(&mut input)
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
    });

    let start_epoch = commit.as_ref().map_or(0, |c| c.epoch + 1);
    input.advance_to(start_epoch);
    if index != 0 {
        drop(input);
        while !probe.done() {
            worker.step_or_park(None);
        }
        return Ok(None);
    }
    let mut driver = Driver::new(shared, commit, peers)?;
    driver.drive(worker, &mut input, &probe, &summary)?;
    drop(input);
    while !probe.done() {
        worker.step_or_park(None);
    }
    let mut result = summary.borrow().clone();
    driver.finish(&mut result);
    shared.metrics.set_templates(result.templates);
    Ok(Some(result))
}

/// An epoch that has been read but is not yet durable everywhere.
struct OpenEpoch {
    epoch: u64,
    started: Instant,
    positions: Positions,
    next_seq: u64,
}

/// Worker 0's source loop.
struct Driver<'a> {
    shared: &'a Shared,
    sources: Vec<Box<dyn LineSource>>,
    finished: Vec<bool>,
    cursor: usize,
    epoch: u64,
    seq: u64,
    lines_in_epoch: u64,
    epoch_started: Option<Instant>,
    open: VecDeque<OpenEpoch>,
    positions: Positions,
    checkpoints: Checkpoints,
    peers: usize,
    lines_in: u64,
    started: Instant,
    latency: hdrhistogram::Histogram<u64>,
    epochs: u64,
    last_progress: Instant,
}

impl<'a> Driver<'a> {
    fn new(
        shared: &'a Shared,
        commit: Option<Commit>,
        peers: usize,
    ) -> Result<Self, PipelineError> {
        let run = &shared.config.run;
        let mut sources = open_all(&shared.sources, run.max_line_bytes)?;
        // Worker 0 drives every source, so it reads all Kafka partitions.
        let all = crate::sources::kafka::Assignment::ALL;
        sources.extend(crate::connectors::open_sources(
            &shared.sources,
            &shared.config,
            all,
        )?);
        let positions = commit
            .as_ref()
            .map(|c| c.positions.clone())
            .unwrap_or_default();
        for source in &mut sources {
            source.resume(&positions)?;
        }
        let latency = hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
            .map_err(|e| PipelineError::Setup(e.to_string()))?;
        Ok(Driver {
            shared,
            finished: vec![false; sources.len()],
            sources,
            cursor: 0,
            epoch: commit.as_ref().map_or(0, |c| c.epoch + 1),
            seq: commit.as_ref().map_or(0, |c| c.next_seq),
            lines_in_epoch: 0,
            epoch_started: None,
            open: VecDeque::new(),
            positions,
            checkpoints: Checkpoints::new(&run.data_dir),
            peers,
            lines_in: 0,
            started: Instant::now(),
            latency,
            epochs: 0,
            last_progress: Instant::now(),
        })
    }

    fn all_finished(&self) -> bool {
        self.finished.iter().all(|f| *f)
    }

    fn drive(
        &mut self,
        worker: &mut Worker,
        input: &mut InputHandleVec<u64, RawChunk>,
        probe: &ProbeHandle<u64>,
        summary: &Rc<RefCell<RunSummary>>,
    ) -> Result<(), PipelineError> {
        let run = &self.shared.config.run;
        loop {
            let durable = probe
                .with_frontier(|f| f.first().copied())
                .unwrap_or(self.epoch);
            let mut busy = false;
            if !self.all_finished() && self.epoch < durable + run.max_epochs_in_flight {
                busy = self.read_some(input)?;
            }
            self.commit_durable(probe)?;
            if self.all_finished() && self.lines_in_epoch == 0 && self.open.is_empty() {
                return Ok(());
            }
            if busy {
                worker.step();
            } else {
                worker.step_or_park(Some(Duration::from_millis(1)));
            }
            self.progress(summary);
        }
    }

    /// Reads one batch from the next source; closes the epoch when full, or when streams are
    /// idle and the epoch is old enough. Returns whether data was read.
    fn read_some(
        &mut self,
        input: &mut InputHandleVec<u64, RawChunk>,
    ) -> Result<bool, PipelineError> {
        let run = &self.shared.config.run;
        let room = run.epoch_lines - self.lines_in_epoch;
        let max = (run.chunk_lines as u64).min(room) as usize;
        let n = self.sources.len();
        let mut read = false;
        let mut idle = false;
        for step in 0..n {
            let i = (self.cursor + step) % n;
            if self.finished[i] {
                continue;
            }
            match self.sources[i].poll(max)? {
                Poll::Batch(batch) => {
                    let count = batch.lines.len() as u64;
                    self.shared.metrics.lines_in(self.sources[i].kind(), count);
                    let chunk = RawChunk {
                        source: batch.origin,
                        first_pos: batch.first_pos,
                        first_seq: self.seq,
                        lines: batch.lines,
                        ingest_ms: chrono::Utc::now().timestamp_millis(),
                    };
                    self.seq += count;
                    self.lines_in += count;
                    self.lines_in_epoch += count;
                    self.epoch_started.get_or_insert_with(Instant::now);
                    input.send(chunk);
                    input.flush();
                    self.cursor = i;
                    read = true;
                    break;
                }
                Poll::Pending => idle = true,
                Poll::Finished => self.finished[i] = true,
            }
        }
        if !read {
            self.cursor = (self.cursor + 1) % n.max(1);
        }
        let full = self.lines_in_epoch >= run.epoch_lines;
        let stale = idle
            && self
                .epoch_started
                .is_some_and(|t| t.elapsed() >= Duration::from_millis(run.epoch_ms));
        if self.lines_in_epoch > 0 && (full || stale || self.all_finished()) {
            self.close_epoch(input);
        }
        Ok(read)
    }

    fn close_epoch(&mut self, input: &mut InputHandleVec<u64, RawChunk>) {
        for source in &self.sources {
            self.positions.extend(source.positions());
        }
        self.open.push_back(OpenEpoch {
            epoch: self.epoch,
            started: self.epoch_started.take().unwrap_or_else(Instant::now),
            positions: self.positions.clone(),
            next_seq: self.seq,
        });
        self.epoch += 1;
        self.lines_in_epoch = 0;
        input.advance_to(self.epoch);
    }

    /// Commits the newest epoch that every worker has made durable.
    fn commit_durable(&mut self, probe: &ProbeHandle<u64>) -> Result<(), PipelineError> {
        let mut done = None;
        while let Some(front) = self.open.front() {
            if probe.less_equal(&front.epoch) {
                break;
            }
            let Some(epoch) = self.open.pop_front() else {
                break;
            };
            let micros = epoch.started.elapsed().as_micros().max(1) as u64;
            let _ = self.latency.record(micros);
            self.shared.metrics.epoch_done(micros as f64 / 1e6);
            self.epochs += 1;
            done = Some(epoch);
        }
        if let Some(epoch) = done {
            let commit = Commit {
                version: VERSION,
                epoch: epoch.epoch,
                next_seq: epoch.next_seq,
                workers: self.peers,
                positions: epoch.positions,
            };
            self.checkpoints.write_commit(&commit)?;
            for source in &mut self.sources {
                source.acknowledge(&commit.positions)?;
            }
            self.checkpoints.prune(self.peers, epoch.epoch)?;
        }
        Ok(())
    }

    fn progress(&mut self, summary: &Rc<RefCell<RunSummary>>) {
        let every = self.shared.config.run.progress_secs;
        if every == 0 || self.last_progress.elapsed() < Duration::from_secs(every) {
            return;
        }
        self.last_progress = Instant::now();
        let secs = self.started.elapsed().as_secs_f64();
        let docs = summary.borrow().documents;
        eprintln!(
            "logsight: {} lines read, {} documents written, {:.0} lines/s, epoch {}",
            self.lines_in,
            docs,
            self.lines_in as f64 / secs.max(1e-9),
            self.epoch
        );
    }

    fn finish(&self, summary: &mut RunSummary) {
        summary.lines_in = self.lines_in;
        summary.elapsed_secs = self.started.elapsed().as_secs_f64();
        summary.epochs = self.epochs;
        if !self.latency.is_empty() {
            summary.epoch_latency_p50_ms = self.latency.value_at_quantile(0.5) as f64 / 1000.0;
            summary.epoch_latency_p99_ms = self.latency.value_at_quantile(0.99) as f64 / 1000.0;
        }
    }
}
