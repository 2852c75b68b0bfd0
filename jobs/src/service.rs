//! The job manager's process loop, independent of any concrete I/O: poll a [`RecordSource`],
//! ingest, write the changed incident/aggregate documents to a [`DocumentSink`], checkpoint,
//! then acknowledge the source; prune on its own interval.
//!
//! Ordering is what makes restarts safe: outputs are durable before the checkpoint records the
//! source positions, and the source is acknowledged (e.g. Kafka offsets committed) only after
//! the checkpoint. A crash anywhere replays from the last checkpoint; replayed records are
//! deduplicated by doc id and outputs are upserts with deterministic ids, so nothing is lost
//! or counted twice.

use crate::error::JobError;
use crate::output::JobOutput;
use crate::record::JobRecord;
use crate::runner::JobManager;
use crate::JobConfig;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Source positions, opaque to the service (per index or per partition).
pub type Positions = BTreeMap<String, String>;

/// Where pipeline results come from: a Kafka results topic, `<index>_pipeline` polled by
/// ingest time, or the pipeline in the same process.
pub trait RecordSource {
    /// Short name for logs (`kafka`, `elasticsearch`, `local`).
    fn name(&self) -> &str;
    /// Up to `max` records; empty when nothing new is available right now.
    fn poll(&mut self, max: usize) -> Result<Vec<JobRecord>, JobError>;
    /// Where to resume after everything returned so far.
    fn positions(&self) -> Positions;
    /// Continues after `positions` (from a checkpoint). Called once, before the first poll.
    fn resume(&mut self, positions: &Positions) -> Result<(), JobError>;
    /// Everything up to `positions` is durably accounted for (outputs written, checkpoint
    /// saved): a source with its own progress store (Kafka offsets) may commit now.
    fn acknowledge(&mut self, _positions: &Positions) -> Result<(), JobError> {
        Ok(())
    }
}

/// Where incident and aggregate documents go: Elasticsearch or the local store.
pub trait DocumentSink {
    /// Writes the upserts and deletes durably before returning.
    fn apply(&mut self, outputs: &[JobOutput]) -> Result<(), JobError>;
    /// Deletes stored documents older than `before_ms` (retention); returns per index how
    /// many were deleted. Sinks without retention return nothing.
    fn prune(&mut self, _before_ms: i64) -> Result<Vec<(String, u64)>, JobError> {
        Ok(Vec::new())
    }
}

/// Loop settings.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub jobs: JobConfig,
    /// Where the manager's checkpoint lives; `None` keeps no progress across restarts.
    pub checkpoint: Option<PathBuf>,
    /// Most records ingested per round.
    pub batch_records: usize,
    /// Pause between rounds that found nothing new (`JOB_INTERVAL` in polling deployments).
    pub idle_wait: Duration,
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundReport {
    pub records: usize,
    pub duplicates: usize,
    pub outputs: usize,
}

/// The job manager with its source and sink.
pub struct JobService<S, K> {
    manager: JobManager,
    source: S,
    sink: K,
    config: ServiceConfig,
}

impl<S: RecordSource, K: DocumentSink> JobService<S, K> {
    /// Starts from the checkpoint when one exists (rewriting every live document once, which
    /// is harmless: they are upserts), else empty; then resumes the source.
    pub fn start(config: ServiceConfig, mut source: S, mut sink: K) -> Result<Self, JobError> {
        let mut manager = match &config.checkpoint {
            Some(path) if path.exists() => JobManager::restore(config.jobs.clone(), path)?,
            _ => JobManager::new(config.jobs.clone()),
        };
        let restored = manager.flush();
        sink.apply(&restored)?;
        source.resume(manager.positions())?;
        Ok(JobService {
            manager,
            source,
            sink,
            config,
        })
    }

    pub fn manager(&self) -> &JobManager {
        &self.manager
    }

    pub fn sink(&self) -> &K {
        &self.sink
    }

    /// One poll → ingest → write → checkpoint → acknowledge round.
    pub fn round(&mut self) -> Result<RoundReport, JobError> {
        let records = self.source.poll(self.config.batch_records)?;
        let count = records.len();
        let report = self.manager.ingest(records);
        let outputs = self.manager.flush();
        self.sink.apply(&outputs)?;
        let positions = self.source.positions();
        for (source, position) in &positions {
            self.manager.set_position(source.clone(), position.clone());
        }
        self.checkpoint()?;
        self.source.acknowledge(&positions)?;
        if count > 0 {
            tracing::info!(
                source = self.source.name(),
                records = count,
                duplicates = report.duplicates,
                outputs = outputs.len(),
                "job round"
            );
        }
        Ok(RoundReport {
            records: count,
            duplicates: report.duplicates,
            outputs: outputs.len(),
        })
    }

    /// Rounds until a round finds nothing new: catches up with what the source has now. A
    /// source that returns records without advancing is an error rather than an endless loop.
    pub fn drain(&mut self) -> Result<RoundReport, JobError> {
        let mut total = RoundReport::default();
        loop {
            let before = self.source.positions();
            let round = self.round()?;
            if round.records == 0 {
                return Ok(total);
            }
            if self.source.positions() == before {
                return Err(JobError::Stalled {
                    source_name: self.source.name().to_owned(),
                });
            }
            total.records += round.records;
            total.duplicates += round.duplicates;
            total.outputs += round.outputs;
        }
    }

    /// Retention at `now_ms`: retracts windows older than the configured age from the
    /// dataflow (so incidents stop counting them), writes the resulting deletes, and prunes
    /// the sink's stored documents. Returns per index how many stored documents were deleted.
    pub fn prune(&mut self, now_ms: i64) -> Result<Vec<(String, u64)>, JobError> {
        let Some(horizon) = self.config.jobs.horizon_at(now_ms) else {
            return Ok(Vec::new());
        };
        let retracted = self.manager.retract_before(horizon);
        let outputs = self.manager.flush();
        self.sink.apply(&outputs)?;
        self.checkpoint()?;
        let deleted = self.sink.prune(horizon)?;
        for (index, n) in &deleted {
            tracing::info!(index, deleted = n, horizon_ms = horizon, "pruned");
        }
        tracing::debug!(retracted, "retention retracted records");
        self.manager.maintain(64);
        Ok(deleted)
    }

    /// Runs rounds until `stop` returns true, waiting `idle_wait` after empty rounds and
    /// pruning every `prune_every` (when set).
    pub fn run(
        &mut self,
        mut stop: impl FnMut() -> bool,
        prune_every: Option<Duration>,
        now_ms: impl Fn() -> i64,
    ) -> Result<(), JobError> {
        let mut last_prune: Option<std::time::Instant> = None;
        while !stop() {
            let due =
                prune_every.is_some_and(|every| last_prune.is_none_or(|t| t.elapsed() >= every));
            if due {
                self.prune(now_ms())?;
                last_prune = Some(std::time::Instant::now());
            }
            if self.round()?.records == 0 {
                self.manager.maintain(16);
                std::thread::sleep(self.config.idle_wait);
            }
        }
        Ok(())
    }

    fn checkpoint(&self) -> Result<(), JobError> {
        match &self.config.checkpoint {
            Some(path) => self.manager.save_checkpoint(path),
            None => Ok(()),
        }
    }
}

/// The checkpoint file for a job manager keeping its state in `dir`.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join("jobs.checkpoint.jsonl")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::recompute_batch;
    use crate::output::{apply_outputs, DocStore};
    use operators::level::Level;
    use operators::model::default_tags;
    use std::sync::Arc;

    /// An in-memory source over a fixed list; its position is the count consumed.
    struct ListSource {
        records: Vec<JobRecord>,
        next: usize,
        acknowledged: usize,
    }

    impl RecordSource for ListSource {
        fn name(&self) -> &str {
            "list"
        }
        fn poll(&mut self, max: usize) -> Result<Vec<JobRecord>, JobError> {
            let end = (self.next + max).min(self.records.len());
            let batch = self.records[self.next..end].to_vec();
            self.next = end;
            Ok(batch)
        }
        fn positions(&self) -> Positions {
            Positions::from([("list".to_owned(), self.next.to_string())])
        }
        fn resume(&mut self, positions: &Positions) -> Result<(), JobError> {
            self.next = positions
                .get("list")
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            Ok(())
        }
        fn acknowledge(&mut self, positions: &Positions) -> Result<(), JobError> {
            self.acknowledged = positions["list"].parse().unwrap_or(0);
            Ok(())
        }
    }

    #[derive(Default)]
    struct MemorySink {
        docs: DocStore,
        fail_next: bool,
    }

    impl DocumentSink for MemorySink {
        fn apply(&mut self, outputs: &[JobOutput]) -> Result<(), JobError> {
            if std::mem::take(&mut self.fail_next) {
                return Err(JobError::Config {
                    name: "SINK",
                    value: String::new(),
                    reason: "injected failure",
                });
            }
            apply_outputs(&mut self.docs, outputs);
            Ok(())
        }
    }

    fn record(i: usize) -> JobRecord {
        let minute = (i % 7) as i64 * 60_000;
        JobRecord {
            index: Arc::from("app"),
            tags: Arc::new(default_tags()),
            minute_ms: minute,
            timestamp_ms: minute + (i as i64 % 60) * 1000,
            risk_score: [0, 1, 25, 70, 80][i % 5],
            template_id: Arc::from(format!("t{}", i % 4)),
            added_state: u8::from(i.is_multiple_of(9)),
            level: if i % 5 == 3 {
                Level::Error
            } else {
                Level::Info
            },
            level_fault: i % 5 == 3,
            prediction: u8::from(i % 5 == 4),
            message: Arc::from(format!("line {i}")),
            doc_id: Arc::from(format!("doc-{i}")),
        }
    }

    fn config(checkpoint: Option<PathBuf>) -> ServiceConfig {
        ServiceConfig {
            jobs: JobConfig::default(),
            checkpoint,
            batch_records: 10,
            idle_wait: Duration::from_millis(1),
        }
    }

    #[test]
    fn drained_outputs_equal_the_batch_recomputation() {
        let records: Vec<JobRecord> = (0..95).map(record).collect();
        let source = ListSource {
            records: records.clone(),
            next: 0,
            acknowledged: 0,
        };
        let mut service = JobService::start(config(None), source, MemorySink::default()).unwrap();
        let report = service.drain().unwrap();
        assert_eq!(report.records, 95);
        assert_eq!(service.source.acknowledged, 95);
        let expected = recompute_batch(&records, &JobConfig::default());
        assert!(!expected.is_empty());
        assert_eq!(service.sink().docs, expected);
    }

    #[test]
    fn a_failed_write_is_retried_from_the_checkpoint_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = checkpoint_path(dir.path());
        let records: Vec<JobRecord> = (0..60).map(record).collect();
        let mut sink = MemorySink::default();
        {
            let source = ListSource {
                records: records.clone(),
                next: 0,
                acknowledged: 0,
            };
            let mut service = JobService::start(config(Some(path.clone())), source, sink).unwrap();
            service.round().unwrap();
            service.round().unwrap();
            service.sink.fail_next = true;
            // The third round's outputs never reach the sink: the process "crashes".
            assert!(service.round().is_err());
            assert_eq!(
                service.source.acknowledged, 20,
                "not acknowledged past the failure"
            );
            sink = MemorySink {
                docs: service.sink.docs.clone(),
                fail_next: false,
            };
        }
        let source = ListSource {
            records: records.clone(),
            next: 0,
            acknowledged: 0,
        };
        let mut service = JobService::start(config(Some(path)), source, sink).unwrap();
        assert_eq!(
            service.source.next, 20,
            "resumed at the checkpointed position"
        );
        service.drain().unwrap();
        let expected = recompute_batch(&records, &JobConfig::default());
        assert_eq!(service.sink().docs, expected);
    }

    #[test]
    fn draining_a_source_that_never_advances_is_an_error() {
        /// Returns the same record forever at the same position.
        struct Stuck;
        impl RecordSource for Stuck {
            fn name(&self) -> &str {
                "stuck"
            }
            fn poll(&mut self, _max: usize) -> Result<Vec<JobRecord>, JobError> {
                Ok(vec![record(1)])
            }
            fn positions(&self) -> Positions {
                Positions::new()
            }
            fn resume(&mut self, _positions: &Positions) -> Result<(), JobError> {
                Ok(())
            }
        }
        let mut service = JobService::start(config(None), Stuck, MemorySink::default()).unwrap();
        assert!(matches!(
            service.drain(),
            Err(JobError::Stalled { source_name }) if source_name == "stuck"
        ));
    }

    #[test]
    fn pruning_deletes_old_windows_from_the_outputs() {
        let records: Vec<JobRecord> = (0..70).map(record).collect();
        let source = ListSource {
            records,
            next: 0,
            acknowledged: 0,
        };
        let jobs = JobConfig {
            retention: Some(Duration::from_secs(3 * 60)),
            ..JobConfig::default()
        };
        let cfg = ServiceConfig {
            jobs,
            ..config(None)
        };
        let mut service = JobService::start(cfg, source, MemorySink::default()).unwrap();
        service.drain().unwrap();
        let before = service.sink().docs.len();
        // "Now" is minute 7: the horizon is minute 4, so windows 0..=3 go.
        service.prune(7 * 60_000).unwrap();
        let after = &service.sink().docs;
        assert!(after.len() < before);
        for doc in after.values() {
            // Incidents carry their window start; aggregates their minute.
            let start = doc.get("timestamp_start").unwrap_or(&doc["timestamp"]);
            let ts = start.as_str().unwrap_or("");
            assert!(
                ts >= "1970-01-01T00:04:00",
                "a window before the horizon survived: {ts}"
            );
        }
    }
}
