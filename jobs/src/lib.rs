//! The logsight job manager: incidents and per-minute log aggregates maintained incrementally
//! with differential dataflow, retention pruning, and restartable progress.
//!
//! This crate owns the computation and its bookkeeping, not the I/O: callers feed
//! [`JobRecord`]s (projected from pipeline results with [`JobRecord::from_result`]) into a
//! [`JobManager`] and write the [`JobOutput`] upserts/deletes it returns to
//! `<index>_incidents` and `<index>_log_agg`.
//!
//! - [`record`]: the compact record the jobs need.
//! - [`incidents`]: the dataflow (one arrangement keyed by (index, tags, minute); reduces for
//!   incidents and aggregates).
//! - [`output`]: upserts/deletes, deterministic document ids, logsight-shaped documents.
//! - [`runner`]: the manager (timely worker, dedupe by doc id, pruning, flush).
//! - [`progress`]: checkpoints and restart.
//! - [`service`]: the process loop over a record source and a document sink.
//! - [`batch`]: the from-scratch reference computation.
//! - [`config`]: `FILTER_NORMAL`, `INCIDENT_MAX_SAMPLES`, `ES_CLEANUP_AGE`.

pub mod batch;
pub mod config;
pub mod error;
pub mod incidents;
pub mod output;
pub mod progress;
pub mod record;
pub mod runner;
pub mod service;

pub use batch::recompute_batch;
pub use config::JobConfig;
pub use error::JobError;
pub use output::{apply_outputs, DocStore, JobOutput};
pub use record::JobRecord;
pub use runner::{IngestReport, JobManager};
pub use service::{DocumentSink, JobService, RecordSource, ServiceConfig};
