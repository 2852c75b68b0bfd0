//! [`JobManager`]: owns a single-threaded timely worker running the job dataflow, feeds it
//! deduplicated records batch by batch, prunes by the retention horizon, turns the output
//! changes into upserts and deletes, and checkpoints/restores its progress.

use crate::config::JobConfig;
use crate::error::JobError;
use crate::incidents::{build_jobs, AggKey, AggValue, IncidentValue, WindowKey, WindowTrace};
use crate::output::{
    incident_id, incident_upsert, incidents_index, log_agg_id, log_agg_index, log_agg_upsert,
    JobOutput,
};
use crate::progress::{read_checkpoint, write_checkpoint, Progress};
use crate::record::{JobRecord, Text};
use differential_dataflow::input::{Input, InputSession};
use differential_dataflow::trace::implementations::spine_fueled::SpineBatch;
use differential_dataflow::trace::{ExertionLogic, TraceReader};
use operators::incident::minute_window;
use operators::model::Tags;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;
use timely::communication::allocator::thread::Thread;
use timely::communication::Allocator;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::progress::frontier::AntichainRef;
use timely::worker::Worker;
use timely::WorkerConfig;

/// Merge work per step of an arrangement operator during [`JobManager::maintain`], in updates.
pub const IDLE_MERGE_EFFORT: usize = 100_000;

/// Differential's default idle-merge rule (keep merging while more than one batch holds data),
/// switched on only while `idle` is set.
fn idle_merge_logic(idle: Arc<AtomicBool>) -> ExertionLogic {
    Arc::new(move |batches| {
        if !idle.load(AtomicOrdering::Relaxed) {
            return None;
        }
        let mut non_empty = 0;
        for &(_level, count, length) in batches {
            if count > 1 {
                return Some(IDLE_MERGE_EFFORT);
            }
            if length > 0 {
                non_empty += 1;
            }
            if non_empty > 1 {
                return Some(IDLE_MERGE_EFFORT);
            }
        }
        None
    })
}

/// What one [`JobManager::ingest`] call did with its records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// New doc ids, inserted.
    pub inserted: usize,
    /// Doc ids already live with identical content (at-least-once replays), ignored.
    pub duplicates: usize,
    /// Doc ids already live with different content: the old version was retracted.
    pub replaced: usize,
    /// Records of windows already pruned by the retention horizon, ignored.
    pub too_old: usize,
}

/// Output changes as the dataflow reports them, drained after every step.
#[derive(Default)]
struct Changes {
    incidents: Vec<(WindowKey, IncidentValue, isize)>,
    aggregates: Vec<(AggKey, AggValue, isize)>,
}

/// The incremental job manager for any number of indices (tenants).
///
/// Each [`ingest`](Self::ingest), [`retract`](Self::retract) or
/// [`retract_before`](Self::retract_before) is one batch at the next logical time (a batch
/// sequence number); the worker runs until that time is complete, so the dataflow's
/// arrangements can compact everything up to it. Output changes accumulate until
/// [`flush`](Self::flush), which consolidates them per document.
///
/// Not `Send`: the timely worker lives on the thread that created the manager.
pub struct JobManager {
    config: JobConfig,
    // The dataflow's handles are declared (and so dropped) before the worker that runs it.
    input: InputSession<u64, JobRecord, isize>,
    probe: ProbeHandle<u64>,
    /// Held to report the arrangement's size; advanced with every batch so it never holds
    /// back compaction.
    windows: WindowTrace<u64>,
    changes: Rc<RefCell<Changes>>,
    worker: Worker,
    pending_incidents: BTreeMap<WindowKey, Vec<(IncidentValue, isize)>>,
    pending_aggregates: BTreeMap<AggKey, Vec<(AggValue, isize)>>,
    /// The live records by doc id: what dedupe, retraction and checkpoints need.
    live: HashMap<Text, JobRecord>,
    /// The live doc ids by window start, so pruning finds old records without a scan.
    by_minute: BTreeSet<(i64, Text)>,
    interner: Interner,
    /// Set while [`maintain`](Self::maintain) runs: arrangements merge only then, not on the
    /// ingest path, where the merge work would add to every batch's latency.
    idle: Arc<AtomicBool>,
    horizon_ms: Option<i64>,
    positions: BTreeMap<String, String>,
}

impl JobManager {
    /// A manager with no records.
    pub fn new(config: JobConfig) -> JobManager {
        let alloc = Allocator::Thread(Thread::default());
        let mut worker_config = WorkerConfig::default();
        let idle = Arc::new(AtomicBool::new(false));
        worker_config.set::<ExertionLogic>(
            "differential/default_exert_logic".to_owned(),
            idle_merge_logic(Arc::clone(&idle)),
        );
        let mut worker = Worker::new(worker_config, alloc, Some(std::time::Instant::now()));
        let probe = ProbeHandle::new();
        let changes = Rc::new(RefCell::new(Changes::default()));
        let (input, windows) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, records) = scope.new_collection::<JobRecord, isize>();
            let jobs = build_jobs(records, &config);
            let sink = Rc::clone(&changes);
            jobs.incidents
                .inspect(move |((key, value), _time, diff)| {
                    sink.borrow_mut()
                        .incidents
                        .push((key.clone(), value.clone(), *diff));
                })
                .probe_with(&probe);
            let sink = Rc::clone(&changes);
            jobs.aggregates
                .inspect(move |((key, value), _time, diff)| {
                    sink.borrow_mut()
                        .aggregates
                        .push((key.clone(), value.clone(), *diff));
                })
                .probe_with(&probe);
            (input, jobs.windows)
        });
        JobManager {
            config,
            input,
            probe,
            windows,
            changes,
            worker,
            pending_incidents: BTreeMap::new(),
            pending_aggregates: BTreeMap::new(),
            live: HashMap::new(),
            by_minute: BTreeSet::new(),
            interner: Interner::default(),
            idle,
            horizon_ms: None,
            positions: BTreeMap::new(),
        }
    }

    /// The configuration this manager computes with.
    pub fn config(&self) -> &JobConfig {
        &self.config
    }

    /// Adds a batch of records. A doc id already live is a duplicate (same content: ignored, so
    /// at-least-once replays do not double count) or a new version (different content: replaces
    /// the old one). Records of windows older than the horizon are ignored, so late data cannot
    /// resurrect pruned windows.
    pub fn ingest(&mut self, records: impl IntoIterator<Item = JobRecord>) -> IngestReport {
        let mut report = IngestReport::default();
        for mut record in records {
            if self.is_pruned(record.minute_ms) {
                report.too_old += 1;
                continue;
            }
            match self.live.get(&record.doc_id) {
                Some(old) if *old == record => {
                    report.duplicates += 1;
                    continue;
                }
                Some(_) => {
                    if let Some(old) = self.remove_live(&record.doc_id) {
                        self.input.remove(old);
                    }
                    report.replaced += 1;
                }
                None => report.inserted += 1,
            }
            self.interner.intern(&mut record);
            self.by_minute
                .insert((record.minute_ms, Arc::clone(&record.doc_id)));
            self.input.insert(record.clone());
            self.live.insert(Arc::clone(&record.doc_id), record);
        }
        self.advance();
        if report.duplicates + report.too_old > 0 {
            tracing::debug!(?report, "ingest skipped records");
        }
        report
    }

    /// Removes the records with these doc ids (unknown ids are ignored); returns how many.
    pub fn retract<'a>(&mut self, doc_ids: impl IntoIterator<Item = &'a str>) -> usize {
        let mut removed = 0;
        for doc_id in doc_ids {
            if let Some(old) = self.remove_live(doc_id) {
                self.input.remove(old);
                removed += 1;
            }
        }
        self.advance();
        removed
    }

    /// Prunes by the retention horizon `horizon_ms` (epoch ms, e.g. from
    /// [`JobConfig::horizon_at`]): retracts every record whose window ended at or before it,
    /// i.e. whole windows, so an incident is never left computed from part of its minute. Their
    /// documents get deletes. Later records for those windows are ignored. The horizon only
    /// moves forward; returns how many records were retracted.
    pub fn retract_before(&mut self, horizon_ms: i64) -> usize {
        if self.horizon_ms.is_some_and(|h| h >= horizon_ms) {
            return 0;
        }
        self.horizon_ms = Some(horizon_ms);
        let cutoff = minute_window(horizon_ms);
        let keep = self.by_minute.split_off(&(cutoff, Text::from("")));
        let old = std::mem::replace(&mut self.by_minute, keep);
        let count = old.len();
        for (_, doc_id) in old {
            if let Some(record) = self.live.remove(&doc_id) {
                self.input.remove(record);
            }
        }
        self.advance();
        self.interner.sweep();
        tracing::debug!(horizon_ms, count, "pruned records");
        count
    }

    /// The output changes since the last flush, one per document: an upsert with the document's
    /// current content, or a delete when it no longer exists. Changes that cancel out (a window
    /// that appeared and vanished between flushes) produce nothing. Incidents first, then
    /// aggregates, each in key order.
    pub fn flush(&mut self) -> Vec<JobOutput> {
        self.drain_changes();
        let mut outputs = Vec::new();
        for (key, changes) in std::mem::take(&mut self.pending_incidents) {
            match resolve(changes) {
                Resolved::Upsert(value) => outputs.push(incident_upsert(&key, &value)),
                Resolved::Delete => outputs.push(JobOutput::Delete {
                    index: incidents_index(&key.index),
                    id: incident_id(&key),
                }),
                Resolved::Unchanged => {}
            }
        }
        for (key, changes) in std::mem::take(&mut self.pending_aggregates) {
            match resolve(changes) {
                Resolved::Upsert(value) => outputs.push(log_agg_upsert(&key, &value)),
                Resolved::Delete => outputs.push(JobOutput::Delete {
                    index: log_agg_index(&key.index),
                    id: log_agg_id(&key),
                }),
                Resolved::Unchanged => {}
            }
        }
        outputs
    }

    /// Records that `source` (e.g. an index or a partition) was read up to `position`; saved
    /// by the next checkpoint. Set it after ingesting the records before that position.
    pub fn set_position(&mut self, source: impl Into<String>, position: impl Into<String>) {
        self.positions.insert(source.into(), position.into());
    }

    /// The saved or set source positions.
    pub fn positions(&self) -> &BTreeMap<String, String> {
        &self.positions
    }

    /// The retention horizon last applied.
    pub fn horizon_ms(&self) -> Option<i64> {
        self.horizon_ms
    }

    /// How many records are live (ingested, not retracted or pruned).
    pub fn live_records(&self) -> usize {
        self.live.len()
    }

    /// The live records, by window start then doc id.
    pub fn records(&self) -> impl Iterator<Item = &JobRecord> + '_ {
        self.by_minute
            .iter()
            .filter_map(|(_, doc_id)| self.live.get(doc_id))
    }

    /// Writes the positions, horizon and live records to `path` (see [`crate::progress`]).
    pub fn save_checkpoint(&self, path: &Path) -> Result<(), JobError> {
        let progress = Progress {
            positions: self.positions.clone(),
            horizon_ms: self.horizon_ms,
        };
        let records: Vec<&JobRecord> = self.records().collect();
        write_checkpoint(path, &progress, &records)
    }

    /// A manager rebuilt from the checkpoint at `path` (a fresh one when there is none): the
    /// horizon and positions restored, the records re-ingested. Its first [`flush`](Self::flush)
    /// returns upserts of every live document, rewriting what the sink already holds; then the
    /// caller resumes its sources at [`positions`](Self::positions).
    pub fn restore(config: JobConfig, path: &Path) -> Result<JobManager, JobError> {
        let mut manager = JobManager::new(config);
        let Some(checkpoint) = read_checkpoint(path)? else {
            tracing::info!(path = %path.display(), "no checkpoint, starting empty");
            return Ok(manager);
        };
        manager.horizon_ms = checkpoint.progress.horizon_ms;
        manager.positions = checkpoint.progress.positions;
        let count = checkpoint.records.len();
        let report = manager.ingest(checkpoint.records);
        tracing::info!(path = %path.display(), count, ?report, "restored checkpoint");
        Ok(manager)
    }

    /// Uses idle time to compact: steps the worker up to `steps` times, letting every
    /// arrangement merge its batches (up to [`IDLE_MERGE_EFFORT`] updates per step each), so
    /// retracted and superseded records are dropped now rather than when later input pays for
    /// the merges. Call it after a large prune or when there is no input.
    pub fn maintain(&mut self, steps: usize) {
        self.idle.store(true, AtomicOrdering::Relaxed);
        // An empty batch schedules every operator once, which starts their idle merging.
        self.advance();
        for _ in 0..steps {
            self.worker.step();
        }
        self.idle.store(false, AtomicOrdering::Relaxed);
        self.drain_changes();
    }

    /// Updates physically held by the window arrangement (live records plus retractions and
    /// superseded versions not yet merged away): what its memory follows.
    pub fn arranged_updates(&self) -> usize {
        let mut total = 0;
        self.windows.map_spans(|span| {
            if let Some(batch) = &span.inner {
                total += batch.len();
            }
        });
        total
    }

    fn is_pruned(&self, minute_ms: i64) -> bool {
        self.horizon_ms
            .is_some_and(|h| minute_ms < minute_window(h))
    }

    fn remove_live(&mut self, doc_id: &str) -> Option<JobRecord> {
        let record = self.live.remove(doc_id)?;
        self.by_minute
            .remove(&(record.minute_ms, Arc::clone(&record.doc_id)));
        Some(record)
    }

    /// Closes the current logical time and runs the worker until its outputs are complete.
    fn advance(&mut self) {
        let next = self.input.time().saturating_add(1);
        self.input.advance_to(next);
        self.input.flush();
        while self.probe.less_than(self.input.time()) {
            self.worker.step();
        }
        let frontier = [next];
        self.windows
            .set_logical_compaction(AntichainRef::new(&frontier));
        self.windows
            .set_physical_compaction(AntichainRef::new(&frontier));
        self.drain_changes();
    }

    fn drain_changes(&mut self) {
        let mut changes = self.changes.borrow_mut();
        for (key, value, diff) in changes.incidents.drain(..) {
            self.pending_incidents
                .entry(key)
                .or_default()
                .push((value, diff));
        }
        for (key, value, diff) in changes.aggregates.drain(..) {
            self.pending_aggregates
                .entry(key)
                .or_default()
                .push((value, diff));
        }
    }
}

/// Shares the index names, tag sets and template ids that repeat across records, so each is
/// stored once however many live records carry it.
#[derive(Default)]
struct Interner {
    text: HashSet<Text>,
    tags: HashSet<Arc<Tags>>,
}

impl Interner {
    fn text(&mut self, text: &Text) -> Text {
        match self.text.get(&**text) {
            Some(shared) => Arc::clone(shared),
            None => {
                self.text.insert(Arc::clone(text));
                Arc::clone(text)
            }
        }
    }

    fn intern(&mut self, record: &mut JobRecord) {
        record.index = self.text(&record.index);
        record.template_id = self.text(&record.template_id);
        record.tags = match self.tags.get(&*record.tags) {
            Some(shared) => Arc::clone(shared),
            None => {
                self.tags.insert(Arc::clone(&record.tags));
                Arc::clone(&record.tags)
            }
        };
    }

    /// Forgets entries nothing else refers to any more (their records were pruned), so the
    /// tables follow the live data too.
    fn sweep(&mut self) {
        self.text.retain(|t| Arc::strong_count(t) > 1);
        self.tags.retain(|t| Arc::strong_count(t) > 1);
    }
}

enum Resolved<V> {
    Upsert(V),
    Delete,
    Unchanged,
}

/// The net effect of a key's accumulated changes. The dataflow keeps at most one value per
/// key, so after consolidation at most one value is added (the new content) and any others are
/// removed.
fn resolve<V: Ord>(mut changes: Vec<(V, isize)>) -> Resolved<V> {
    differential_dataflow::consolidation::consolidate(&mut changes);
    let added = changes.iter().filter(|(_, diff)| *diff > 0).count();
    if added > 1 {
        tracing::error!(added, "several values for one job key; writing the last");
    }
    let removed = changes.iter().any(|(_, diff)| *diff < 0);
    match changes.into_iter().rev().find(|(_, diff)| *diff > 0) {
        Some((value, _)) => Resolved::Upsert(value),
        None if removed => Resolved::Delete,
        None => Resolved::Unchanged,
    }
}
