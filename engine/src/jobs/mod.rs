//! The job manager's I/O in the engine: record sources (Kafka results topic, `<index>_pipeline`
//! polled in Elasticsearch, the local store) and document sinks (Elasticsearch, the local
//! store) for `logsight_jobs::JobService`, plus the in-process run at the end of `logsight run`.
//!
//! The computation, dedupe, checkpoints and ordering (write → checkpoint → acknowledge) are the
//! `logsight_jobs` crate's; this module only moves records and documents.
//!
//! | role | module | selected by |
//! | --- | --- | --- |
//! | Kafka results topic → records | [`kafka_results`] | `logsight jobs --source kafka` |
//! | `<index>_pipeline` by `ingest_timestamp` → records | [`es_poll`] | `--source elasticsearch` |
//! | local store `*_pipeline-*.ndjson` → records | [`local_store`] | `--source local` |
//! | documents → `<index>_incidents` / `<index>_log_agg` | [`es_sink`], [`local_store`] | `--sink` |

pub mod es_poll;
pub mod es_sink;
pub mod kafka_results;
pub mod local_store;

use logsight_jobs::output::JobOutput;
use logsight_jobs::service::Positions;
use logsight_jobs::{DocumentSink, JobConfig, JobError, JobRecord, JobService, RecordSource};
use operators::model::ResultRecord;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The `_pipeline` suffix of the Elasticsearch indices holding pipeline results.
pub const PIPELINE_SUFFIX: &str = "_pipeline";

/// A failure of a source or sink (what failed, and why) as the job service reports it.
pub fn io_error(what: impl std::fmt::Display, cause: impl std::fmt::Display) -> JobError {
    JobError::Connector {
        what: what.to_string(),
        message: cause.to_string(),
    }
}

/// The index prefix of a pipeline Elasticsearch index (`app_pipeline` → `app`); `None` for
/// other indices (quarantine, incidents, …).
pub fn pipeline_prefix(es_index: &str) -> Option<&str> {
    es_index
        .strip_suffix(PIPELINE_SUFFIX)
        .filter(|p| !p.is_empty())
}

/// Whether `es_index` (`app_pipeline`, `app_incidents`, …) belongs to one of the index
/// prefixes in `only` (empty: every index is selected).
pub fn index_selected(only: &[String], es_index: &str) -> bool {
    only.is_empty()
        || only.iter().any(|p| {
            es_index
                .strip_prefix(p.as_str())
                .is_some_and(|rest| ["_pipeline", "_incidents", "_log_agg"].contains(&rest))
        })
}

/// Projects a stored pipeline document (`_index`, `_id`, `_source`) into a job record.
/// `Ok(None)`: not a pipeline document. `Err`: a pipeline document that cannot be used (the
/// caller logs and skips it: one bad document must not stop the jobs).
pub fn record_from_document(
    es_index: &str,
    id: &str,
    source: &serde_json::Value,
) -> Result<Option<JobRecord>, String> {
    let Some(index) = pipeline_prefix(es_index) else {
        return Ok(None);
    };
    let result: ResultRecord =
        serde::Deserialize::deserialize(source).map_err(|e| format!("not a result record: {e}"))?;
    JobRecord::from_result(index, &result, id)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Counts and logs (rate-limited) documents a source skipped.
#[derive(Debug, Default)]
pub struct Skipped {
    pub count: u64,
}

impl Skipped {
    /// Records one skipped document; the first few and then every 1000th are logged.
    pub fn skip(&mut self, source: &str, id: &str, reason: &str) {
        self.count += 1;
        if self.count <= 5 || self.count.is_multiple_of(1000) {
            tracing::warn!(
                source,
                id,
                skipped = self.count,
                "skipping a pipeline document: {reason}"
            );
        }
    }
}

/// Where the job manager of a data directory keeps its checkpoint: `<data-dir>/_jobs/`.
pub fn state_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("_jobs")
}

/// What a drain (`--once`, or the end of `logsight run`) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    pub records: usize,
    pub duplicates: usize,
    /// Upserts and deletes written.
    pub outputs: usize,
    /// Live incident documents in the sink afterwards (local store only; `None` otherwise).
    pub incidents: Option<usize>,
    /// Live log aggregate documents afterwards (local store only).
    pub log_aggs: Option<usize>,
    /// Documents skipped by the source (unparseable, no timestamp).
    pub skipped: u64,
}

/// The service settings for a data directory: checkpoint in [`state_dir`].
pub fn service_config(
    data_dir: &Path,
    jobs: JobConfig,
    batch_records: usize,
    idle_wait: Duration,
) -> Result<logsight_jobs::ServiceConfig, JobError> {
    let dir = state_dir(data_dir);
    std::fs::create_dir_all(&dir).map_err(|source| JobError::Io {
        path: dir.clone(),
        source,
    })?;
    Ok(logsight_jobs::ServiceConfig {
        jobs,
        checkpoint: Some(logsight_jobs::service::checkpoint_path(&dir)),
        batch_records,
        idle_wait,
    })
}

/// Runs the job service over the local store of `data_dir` once (what `logsight run` calls at
/// its end, and `logsight jobs --source local --sink local --once`): every pipeline document
/// not yet accounted for by the checkpoint is ingested and the incident and aggregate documents
/// are written into the same store.
pub fn run_local_once(data_dir: &Path, jobs: JobConfig) -> Result<DrainReport, JobError> {
    let config = service_config(data_dir, jobs, 50_000, Duration::ZERO)?;
    let source = local_store::LocalStoreSource::new(data_dir);
    let sink = local_store::LocalStoreSink::open(data_dir)?;
    let mut service = JobService::start(config, source, sink)?;
    let total = service.drain()?;
    let (incidents, log_aggs) = local_store::count_job_documents(data_dir)?;
    Ok(DrainReport {
        records: total.records,
        duplicates: total.duplicates,
        outputs: total.outputs,
        incidents: Some(incidents),
        log_aggs: Some(log_aggs),
        skipped: 0,
    })
}

/// Any of the record sources, so the CLI can pick one at run time (`JobService` is generic).
pub enum AnySource {
    Kafka(Box<kafka_results::KafkaResultsSource>),
    Elasticsearch(Box<es_poll::EsPollSource>),
    Local(local_store::LocalStoreSource),
}

impl AnySource {
    /// Documents the source skipped so far.
    pub fn skipped(&self) -> u64 {
        match self {
            AnySource::Kafka(s) => s.skipped(),
            AnySource::Elasticsearch(s) => s.skipped(),
            AnySource::Local(s) => s.skipped(),
        }
    }

    fn inner(&mut self) -> &mut dyn RecordSource {
        match self {
            AnySource::Kafka(s) => s.as_mut(),
            AnySource::Elasticsearch(s) => s.as_mut(),
            AnySource::Local(s) => s,
        }
    }

    fn inner_ref(&self) -> &dyn RecordSource {
        match self {
            AnySource::Kafka(s) => s.as_ref(),
            AnySource::Elasticsearch(s) => s.as_ref(),
            AnySource::Local(s) => s,
        }
    }
}

impl RecordSource for AnySource {
    fn name(&self) -> &str {
        self.inner_ref().name()
    }
    fn poll(&mut self, max: usize) -> Result<Vec<JobRecord>, JobError> {
        self.inner().poll(max)
    }
    fn positions(&self) -> Positions {
        self.inner_ref().positions()
    }
    fn resume(&mut self, positions: &Positions) -> Result<(), JobError> {
        self.inner().resume(positions)
    }
    fn acknowledge(&mut self, positions: &Positions) -> Result<(), JobError> {
        self.inner().acknowledge(positions)
    }
}

/// Any of the document sinks, counting what was written.
pub struct AnySink {
    pub kind: SinkChoice,
    /// Upserts and deletes applied so far.
    pub upserts: u64,
    pub deletes: u64,
    /// Deletes applied so far, per index.
    pub deletes_by_index: std::collections::BTreeMap<String, u64>,
}

/// The concrete sink inside [`AnySink`].
pub enum SinkChoice {
    Elasticsearch(Box<es_sink::EsDocumentSink>),
    Local(local_store::LocalStoreSink),
}

impl AnySink {
    pub fn new(kind: SinkChoice) -> Self {
        AnySink {
            kind,
            upserts: 0,
            deletes: 0,
            deletes_by_index: Default::default(),
        }
    }
}

impl DocumentSink for AnySink {
    fn apply(&mut self, outputs: &[JobOutput]) -> Result<(), JobError> {
        match &mut self.kind {
            SinkChoice::Elasticsearch(s) => s.apply(outputs)?,
            SinkChoice::Local(s) => s.apply(outputs)?,
        }
        for o in outputs {
            match o {
                JobOutput::Upsert { .. } => self.upserts += 1,
                JobOutput::Delete { index, .. } => {
                    self.deletes += 1;
                    *self.deletes_by_index.entry(index.clone()).or_default() += 1;
                }
            }
        }
        Ok(())
    }

    fn prune(&mut self, before_ms: i64) -> Result<Vec<(String, u64)>, JobError> {
        match &mut self.kind {
            SinkChoice::Elasticsearch(s) => s.prune(before_ms),
            SinkChoice::Local(s) => s.prune(before_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_documents_become_records_and_others_are_ignored() {
        let source = serde_json::json!({
            "message": "disk failed", "timestamp": "2015-10-18T18:01:47.978Z", "level": "ERROR",
            "metadata": {}, "tags": {"default": "default"}, "template": "disk failed",
            "template_id": "00000000000000ab", "params": [], "prediction": 1,
            "anomaly_score": 0.9, "risk_score": 80, "added_state": 1,
            "ingest_timestamp": "2024-01-01T00:00:00.000Z"
        });
        let r = record_from_document("app_pipeline", "d1", &source);
        let r = r.ok().flatten();
        assert_eq!(r.as_ref().map(|r| &*r.index), Some("app"));
        assert_eq!(r.as_ref().map(|r| r.risk_score), Some(80));
        assert_eq!(r.map(|r| r.minute_ms), Some(1_445_191_260_000));
        assert_eq!(record_from_document("quarantine", "d1", &source), Ok(None));
        assert!(record_from_document("app_pipeline", "d1", &serde_json::json!({"x": 1})).is_err());
        assert_eq!(pipeline_prefix("_pipeline"), None);
    }
}
