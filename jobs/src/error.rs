//! The job manager's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the job manager.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A result has neither a parseable log timestamp nor a parseable ingest timestamp, so it
    /// belongs to no window.
    #[error(
        "result {doc_id}: no parseable timestamp \
         (timestamp {timestamp:?}, ingest_timestamp {ingest_timestamp:?})"
    )]
    NoTimestamp {
        doc_id: String,
        timestamp: Option<String>,
        ingest_timestamp: Option<String>,
    },
    /// A configuration value could not be parsed.
    #[error("invalid {name}={value:?}: {reason}")]
    Config {
        name: &'static str,
        value: String,
        reason: &'static str,
    },
    /// Reading or writing a file (checkpoint, local store) failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint file is not what this version writes.
    #[error("checkpoint {path}, line {line}: {reason}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// A source kept returning records without moving its position: draining it would never
    /// end.
    #[error("source {source_name} returned records without advancing its position")]
    Stalled { source_name: String },
    /// A record source or document sink (Kafka, Elasticsearch, local store) failed.
    #[error("{what}: {message}")]
    Connector { what: String, message: String },
}
