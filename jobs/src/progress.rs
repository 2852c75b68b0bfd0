//! Durable progress of the job manager: checkpoint files holding the source positions, the
//! retention horizon and the live records, from which a restarted manager rebuilds its state.
//!
//! # Why this design
//! Every output is a pure function of the *set* of live records (deduplicated by doc id) and is
//! written as an upsert under a deterministic id. So the state to persist is that set plus where
//! in the source it was read up to; no dataflow internals are saved. A restart loads the set,
//! re-ingests it in one batch (the manager then re-emits upserts that rewrite the same documents)
//! and resumes the source at the saved positions:
//!
//! - *No loss*: a checkpoint is taken after the records up to its positions were ingested, so
//!   every record is either in the snapshot or at/after a saved position and read again.
//! - *No double counting*: records read again that are already in the snapshot (at-least-once
//!   sources, or a position saved a little early) have the same doc id and are dropped as
//!   duplicates; nothing is counted by adding to a stored total.
//! - Crashing between writing outputs and checkpointing, or between checkpointing and writing
//!   outputs, is safe both ways: replay re-derives the same outputs, and the rebuild rewrites
//!   every live document.
//!
//! Retractions by doc id and pruning must either come from the source (and so be replayed) or be
//! followed by a checkpoint; pruning is reapplied from the saved horizon on restore.
//!
//! # Format
//! JSON Lines: a header `{"format":"logsight-jobs-checkpoint","version":1,"positions":{..},
//! "horizon_ms":..,"records":N}` then N records, one per line. Written to a temporary file,
//! synced and renamed over the old one, so a crash leaves the previous checkpoint intact; a
//! truncated or foreign file is rejected rather than silently restoring part of the state.
//! The file is a full snapshot of the retention window: its cost grows with the live records,
//! which bounds how often it should be taken.

use crate::error::JobError;
use crate::record::JobRecord;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

const FORMAT: &str = "logsight-jobs-checkpoint";
const VERSION: u32 = 1;

/// Where the manager is: source positions and the pruning horizon.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Opaque position per source (e.g. per index or per partition), as the caller set them.
    pub positions: BTreeMap<String, String>,
    /// The retention horizon last applied, epoch milliseconds.
    pub horizon_ms: Option<i64>,
}

/// A loaded checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub progress: Progress,
    pub records: Vec<JobRecord>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    #[serde(flatten)]
    progress: Progress,
    records: usize,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> JobError + '_ {
    move |source| JobError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes a checkpoint atomically (temporary file, fsync, rename, fsync of the directory).
pub fn write_checkpoint(
    path: &Path,
    progress: &Progress,
    records: &[&JobRecord],
) -> Result<(), JobError> {
    let tmp = tmp_path(path);
    let file = File::create(&tmp).map_err(io_err(&tmp))?;
    let mut out = BufWriter::new(file);
    let header = Header {
        format: FORMAT.to_owned(),
        version: VERSION,
        progress: progress.clone(),
        records: records.len(),
    };
    let to_io = |e: serde_json::Error| std::io::Error::other(e);
    serde_json::to_writer(&mut out, &header)
        .map_err(to_io)
        .map_err(io_err(&tmp))?;
    out.write_all(b"\n").map_err(io_err(&tmp))?;
    for record in records {
        serde_json::to_writer(&mut out, record)
            .map_err(to_io)
            .map_err(io_err(&tmp))?;
        out.write_all(b"\n").map_err(io_err(&tmp))?;
    }
    let file = out
        .into_inner()
        .map_err(|e| e.into_error())
        .map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err(path))?;
    // Make the rename itself durable; not every platform can open a directory, so best effort.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(dir) = File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    tracing::debug!(path = %path.display(), records = records.len(), "checkpoint written");
    Ok(())
}

/// Reads a checkpoint; `Ok(None)` when there is none yet (first start).
pub fn read_checkpoint(path: &Path) -> Result<Option<Checkpoint>, JobError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    let corrupt = |line: usize, reason: String| JobError::Corrupt {
        path: path.to_owned(),
        line,
        reason,
    };
    let mut lines = BufReader::new(file).lines();
    let first = lines
        .next()
        .ok_or_else(|| corrupt(1, "empty file".to_owned()))?
        .map_err(io_err(path))?;
    let header: Header =
        serde_json::from_str(&first).map_err(|e| corrupt(1, format!("bad header: {e}")))?;
    if header.format != FORMAT || header.version != VERSION {
        return Err(corrupt(
            1,
            format!(
                "format {:?} version {}, expected {FORMAT:?} version {VERSION}",
                header.format, header.version
            ),
        ));
    }
    let mut records = Vec::with_capacity(header.records.min(1 << 24));
    for (i, line) in lines.enumerate() {
        let line = line.map_err(io_err(path))?;
        let record: JobRecord =
            serde_json::from_str(&line).map_err(|e| corrupt(i + 2, format!("bad record: {e}")))?;
        records.push(record);
    }
    if records.len() != header.records {
        return Err(corrupt(
            records.len() + 1,
            format!("truncated: {} of {} records", records.len(), header.records),
        ));
    }
    Ok(Some(Checkpoint {
        progress: header.progress,
        records,
    }))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use operators::level::Level;
    use std::sync::Arc;

    fn record(doc: &str) -> JobRecord {
        let tags = [("service".to_owned(), "api".to_owned())].into();
        JobRecord {
            index: "app".into(),
            tags: Arc::new(tags),
            minute_ms: 60_000,
            timestamp_ms: 61_000,
            risk_score: 25,
            template_id: "t".into(),
            added_state: 0,
            level: Level::Info,
            level_fault: false,
            prediction: 0,
            message: "line\nwith newline".into(),
            doc_id: doc.into(),
        }
    }

    #[test]
    fn round_trip() -> Result<(), JobError> {
        let dir = tempfile::tempdir().map_err(io_err(Path::new("tmp")))?;
        let path = dir.path().join("jobs.ckpt");
        assert_eq!(read_checkpoint(&path)?, None);
        let progress = Progress {
            positions: [("app".to_owned(), "42".to_owned())].into(),
            horizon_ms: Some(-5),
        };
        let (a, b) = (record("a"), record("b"));
        write_checkpoint(&path, &progress, &[&a, &b])?;
        let want = Checkpoint {
            progress,
            records: vec![a, b],
        };
        assert_eq!(read_checkpoint(&path)?, Some(want));
        assert!(!tmp_path(&path).exists());
        Ok(())
    }

    #[test]
    fn rejects_truncated_and_foreign_files() -> Result<(), JobError> {
        let dir = tempfile::tempdir().map_err(io_err(Path::new("tmp")))?;
        let path = dir.path().join("jobs.ckpt");
        let a = record("a");
        write_checkpoint(&path, &Progress::default(), &[&a, &a])?;
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        let cut: Vec<&str> = text.lines().take(2).collect();
        fs::write(&path, cut.join("\n")).map_err(io_err(&path))?;
        assert!(matches!(
            read_checkpoint(&path),
            Err(JobError::Corrupt { line: 2, .. })
        ));
        let foreign =
            r#"{"format":"other","version":1,"positions":{},"horizon_ms":null,"records":0}"#;
        fs::write(&path, foreign).map_err(io_err(&path))?;
        assert!(matches!(
            read_checkpoint(&path),
            Err(JobError::Corrupt { line: 1, .. })
        ));
        Ok(())
    }
}
