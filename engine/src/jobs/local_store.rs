//! The local store as the job manager's record source (tailing `*_pipeline-*.ndjson` by byte
//! offset) and document sink (`<index>_incidents` / `<index>_log_agg` in the same
//! `{"_index","_id","_source"}` layout, with tombstones for deletes, and retention by rewrite).
//!
//! # Files
//! The sink writes `<es_index>-<YYYYMMDD>-jobs.ndjson` (UTC day of writing). The `-jobs`
//! suffix keeps these files out of the pipeline workers' way: a worker's restore cuts back or
//! removes files ending in its own `-w<NNN>.ndjson`, and must never touch the jobs' files.
//! An upsert appends the newer document under the same `_id`; a delete appends a tombstone
//! `{"_index":…,"_id":…,"_deleted":true}`. Readers ([`read_documents`], which honours
//! tombstones) keep the last line of each `_id` in file-name order.
//!
//! # Positions
//! Per pipeline file `local:<file name>` → the byte offset after the last complete line read.
//! A file shorter than its position was cut back by a pipeline restore: it is read again from
//! the start (the manager drops the re-read doc ids as duplicates).

use super::{io_error, record_from_document, Skipped};
use crate::sinks::local_store::read_documents;
use chrono::Utc;
use logsight_jobs::output::{DocStore, JobOutput};
use logsight_jobs::service::Positions;
use logsight_jobs::{DocumentSink, JobError, JobRecord, RecordSource};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The file-name suffix of the jobs' own files.
pub const JOBS_FILE_SUFFIX: &str = "-jobs.ndjson";
/// The Elasticsearch index suffixes the job sink writes.
pub const JOB_KINDS: [&str; 2] = ["_incidents", "_log_agg"];
const POSITION_PREFIX: &str = "local:";

fn dir_error(dir: &Path, e: std::io::Error) -> JobError {
    JobError::Io {
        path: dir.to_owned(),
        source: e,
    }
}

/// Names of the files in `dir` (non-UTF-8 names are skipped).
fn file_names(dir: &Path) -> Result<Vec<String>, JobError> {
    let mut names = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(dir_error(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| dir_error(dir, e))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Whether `name` is a pipeline workers' results file.
fn is_pipeline_file(name: &str) -> bool {
    name.contains("_pipeline-") && name.ends_with(".ndjson") && !name.ends_with(JOBS_FILE_SUFFIX)
}

/// The pipeline documents of the local store, read incrementally.
pub struct LocalStoreSource {
    dir: PathBuf,
    /// Byte offset after the last complete line read, per file name.
    offsets: BTreeMap<String, u64>,
    skipped: Skipped,
}

impl LocalStoreSource {
    pub fn new(dir: &Path) -> Self {
        LocalStoreSource {
            dir: dir.to_owned(),
            offsets: BTreeMap::new(),
            skipped: Skipped::default(),
        }
    }

    pub fn skipped(&self) -> u64 {
        self.skipped.count
    }

    /// Reads complete lines of `name` from its offset until `max` records are in `out`.
    fn read_file(
        &mut self,
        name: &str,
        max: usize,
        out: &mut Vec<JobRecord>,
    ) -> Result<(), JobError> {
        let path = self.dir.join(name);
        let file_error = |e| JobError::Io {
            path: path.clone(),
            source: e,
        };
        let mut file = match File::open(&path) {
            Ok(f) => f,
            // Removed by store retention meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(file_error(e)),
        };
        let len = file.metadata().map_err(file_error)?.len();
        let mut offset = self.offsets.get(name).copied().unwrap_or(0);
        if len < offset {
            tracing::warn!(
                file = name,
                len,
                offset,
                "pipeline file is shorter than the jobs' position (cut back by a restore): reading it again"
            );
            offset = 0;
        }
        if len == offset {
            self.offsets.insert(name.to_owned(), offset);
            return Ok(());
        }
        file.seek(SeekFrom::Start(offset)).map_err(file_error)?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut line = Vec::new();
        while out.len() < max {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(file_error)?;
            // End of file, or a line still being written: continue there next time.
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            offset += n as u64;
            let doc: Value = match serde_json::from_slice(&line) {
                Ok(v) => v,
                Err(e) => {
                    self.skipped
                        .skip("local", &format!("{name}@{offset}"), &e.to_string());
                    continue;
                }
            };
            let (Some(es_index), Some(id)) = (
                doc.get("_index").and_then(Value::as_str),
                doc.get("_id").and_then(Value::as_str),
            ) else {
                self.skipped.skip(
                    "local",
                    &format!("{name}@{offset}"),
                    "no _index or _id field",
                );
                continue;
            };
            let source = doc.get("_source").unwrap_or(&Value::Null);
            match record_from_document(es_index, id, source) {
                Ok(Some(record)) => out.push(record),
                Ok(None) => {}
                Err(reason) => self.skipped.skip("local", id, &reason),
            }
        }
        self.offsets.insert(name.to_owned(), offset);
        Ok(())
    }
}

impl RecordSource for LocalStoreSource {
    fn name(&self) -> &str {
        "local"
    }

    fn poll(&mut self, max: usize) -> Result<Vec<JobRecord>, JobError> {
        let mut out = Vec::new();
        let names: Vec<String> = file_names(&self.dir)?
            .into_iter()
            .filter(|n| is_pipeline_file(n))
            .collect();
        // Files removed by retention no longer need a position.
        let present: BTreeSet<&String> = names.iter().collect();
        self.offsets.retain(|n, _| present.contains(n));
        for name in &names {
            if out.len() >= max.max(1) {
                break;
            }
            self.read_file(name, max.max(1), &mut out)?;
        }
        Ok(out)
    }

    fn positions(&self) -> Positions {
        self.offsets
            .iter()
            .map(|(name, off)| (format!("{POSITION_PREFIX}{name}"), off.to_string()))
            .collect()
    }

    fn resume(&mut self, positions: &Positions) -> Result<(), JobError> {
        for (key, value) in positions {
            let Some(name) = key.strip_prefix(POSITION_PREFIX) else {
                continue;
            };
            let offset = value.parse::<u64>().map_err(|_| JobError::Config {
                name: "local store position",
                value: format!("{key}={value}"),
                reason: "expected a byte offset",
            })?;
            self.offsets.insert(name.to_owned(), offset);
        }
        Ok(())
    }
}

/// `<index>_incidents` / `<index>_log_agg` documents into the local store.
///
/// It remembers (by hash) the live document of every id, so rewriting an unchanged document (a
/// restarted manager rewrites every live document once) or deleting a missing one appends
/// nothing: the store does not grow with restarts.
pub struct LocalStoreSink {
    dir: PathBuf,
    open: HashMap<String, File>,
    day: String,
    live: HashMap<(String, String), u64>,
}

fn text_hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

fn today() -> String {
    Utc::now().format("%Y%m%d").to_string()
}

/// The stored line of an output (no newline).
fn output_line(output: &JobOutput) -> String {
    let quoted = |s: &str| Value::String(s.to_owned()).to_string();
    match output {
        JobOutput::Upsert { index, id, doc } => format!(
            "{{\"_index\":{},\"_id\":{},\"_source\":{doc}}}",
            quoted(index),
            quoted(id)
        ),
        JobOutput::Delete { index, id } => format!(
            "{{\"_index\":{},\"_id\":{},\"_deleted\":true}}",
            quoted(index),
            quoted(id)
        ),
    }
}

/// The Elasticsearch index of a jobs file `<es_index>-<YYYYMMDD>-jobs.ndjson`.
fn jobs_file_index(name: &str) -> Option<&str> {
    let stem = name.strip_suffix(JOBS_FILE_SUFFIX)?;
    let (index, day) = stem.rsplit_once('-')?;
    (day.len() == 8 && day.bytes().all(|b| b.is_ascii_digit())).then_some(index)
}

/// The `timestamp` of a stored document's `_source`, epoch milliseconds.
fn document_time_ms(source: &Value) -> Option<i64> {
    let text = source.get("timestamp")?.as_str()?;
    operators::timestamp::parse(text).map(|t| t.timestamp_millis())
}

impl LocalStoreSink {
    pub fn open(dir: &Path) -> Result<Self, JobError> {
        fs::create_dir_all(dir).map_err(|e| dir_error(dir, e))?;
        let live = read_job_store(dir)?
            .into_iter()
            .map(|(key, doc)| (key, text_hash(&doc.to_string())))
            .collect();
        Ok(LocalStoreSink {
            dir: dir.to_owned(),
            open: HashMap::new(),
            day: today(),
            live,
        })
    }

    fn file(&mut self, es_index: &str) -> Result<(&mut File, String), JobError> {
        let name = format!("{es_index}-{}{JOBS_FILE_SUFFIX}", self.day);
        if !self.open.contains_key(&name) {
            let path = self.dir.join(&name);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|source| JobError::Io { path, source })?;
            self.open.insert(name.clone(), file);
        }
        match self.open.get_mut(&name) {
            Some(f) => Ok((f, name)),
            None => Err(io_error(&name, "not open")),
        }
    }
}

impl DocumentSink for LocalStoreSink {
    fn apply(&mut self, outputs: &[JobOutput]) -> Result<(), JobError> {
        if outputs.is_empty() {
            return Ok(());
        }
        let day = today();
        if day != self.day {
            self.open.clear();
            self.day = day;
        }
        let mut by_index: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
        for output in outputs {
            let key = (output.index().to_owned(), output.id().to_owned());
            match output {
                JobOutput::Upsert { doc, .. } => {
                    let hash = text_hash(&doc.to_string());
                    if self.live.insert(key, hash) == Some(hash) {
                        continue;
                    }
                }
                JobOutput::Delete { .. } => {
                    if self.live.remove(&key).is_none() {
                        continue;
                    }
                }
            }
            let buf = by_index.entry(output.index()).or_default();
            buf.extend_from_slice(output_line(output).as_bytes());
            buf.push(b'\n');
        }
        let dir = self.dir.clone();
        for (index, bytes) in by_index {
            let (file, name) = self.file(index)?;
            let err = |source| JobError::Io {
                path: dir.join(&name),
                source,
            };
            file.write_all(&bytes).map_err(err)?;
            file.sync_data().map_err(err)?;
        }
        Ok(())
    }

    /// Drops the documents whose `timestamp` is before `before_ms` from every `*_incidents` /
    /// `*_log_agg` index of the store: the live documents that stay are rewritten into
    /// today's file (with tombstones for the pruned ones, so a crash before the older files are
    /// removed cannot resurrect them), then the older files are removed. Pipeline files are the
    /// pipeline workers' (their day-file retention is `[store] retention_days`).
    fn prune(&mut self, before_ms: i64) -> Result<Vec<(String, u64)>, JobError> {
        let mut files: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for name in file_names(&self.dir)? {
            if let Some(index) = jobs_file_index(&name) {
                files.entry(index.to_owned()).or_default().push(name);
            }
        }
        self.open.clear();
        self.day = today();
        let mut deleted = Vec::new();
        for (index, names) in files {
            let docs = read_documents(&self.dir, &index).map_err(|e| io_error(&index, e))?;
            let mut kept = Vec::new();
            let mut pruned = 0u64;
            let mut tombstones = Vec::new();
            for (id, doc) in docs {
                let source = doc.get("_source").unwrap_or(&Value::Null);
                if document_time_ms(source).is_some_and(|t| t < before_ms) {
                    pruned += 1;
                    self.live.remove(&(index.clone(), id.clone()));
                    tombstones.push(output_line(&JobOutput::Delete {
                        index: index.clone(),
                        id,
                    }));
                } else {
                    kept.push(doc.to_string());
                }
            }
            if pruned == 0 {
                continue;
            }
            let target = format!("{index}-{}{JOBS_FILE_SUFFIX}", self.day);
            let tmp = self.dir.join(format!(".{target}.tmp"));
            let mut text = String::new();
            for line in kept.iter().chain(&tombstones) {
                text.push_str(line);
                text.push('\n');
            }
            let err = |path: &Path| {
                let path = path.to_owned();
                move |source| JobError::Io { path, source }
            };
            {
                let mut f = File::create(&tmp).map_err(err(&tmp))?;
                f.write_all(text.as_bytes()).map_err(err(&tmp))?;
                f.sync_all().map_err(err(&tmp))?;
            }
            let target_path = self.dir.join(&target);
            fs::rename(&tmp, &target_path).map_err(err(&target_path))?;
            for name in names.iter().filter(|n| **n != target) {
                let path = self.dir.join(name);
                fs::remove_file(&path).map_err(err(&path))?;
            }
            if let Ok(d) = File::open(&self.dir) {
                let _ = d.sync_all();
            }
            tracing::info!(index, deleted = pruned, "local store: pruned job documents");
            deleted.push((index, pruned));
        }
        Ok(deleted)
    }
}

/// The Elasticsearch indices of the jobs' files in `dir` (`app_incidents`, `app_log_agg`, …).
pub fn job_indices(dir: &Path) -> Result<BTreeSet<String>, JobError> {
    Ok(file_names(dir)?
        .iter()
        .filter_map(|n| jobs_file_index(n).map(str::to_owned))
        .collect())
}

/// Every live job document of the store as (index, id) → `_source`, the shape
/// `logsight_jobs::recompute_batch` returns.
pub fn read_job_store(dir: &Path) -> Result<DocStore, JobError> {
    let mut store = DocStore::new();
    for index in job_indices(dir)? {
        for (id, doc) in read_documents(dir, &index).map_err(|e| io_error(&index, e))? {
            let source = doc.get("_source").cloned().unwrap_or(Value::Null);
            store.insert((index.clone(), id), source);
        }
    }
    Ok(store)
}

/// Live incident and log aggregate documents in the store.
pub fn count_job_documents(dir: &Path) -> Result<(usize, usize), JobError> {
    let store = read_job_store(dir)?;
    let incidents = store
        .keys()
        .filter(|(i, _)| i.ends_with("_incidents"))
        .count();
    Ok((incidents, store.len() - incidents))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::local_store::{LocalStore, LocalStoreConfig};
    use crate::sinks::{DocKind, DocRef, Sink};
    use serde_json::json;

    fn upsert(index: &str, id: &str, ts: &str, n: u64) -> JobOutput {
        JobOutput::Upsert {
            index: index.to_owned(),
            id: id.to_owned(),
            doc: json!({"timestamp": ts, "n": n}),
        }
    }

    #[test]
    fn upserts_and_tombstones_are_read_back_as_live_documents() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = LocalStoreSink::open(dir.path()).unwrap();
        sink.apply(&[
            upsert("app_incidents", "a", "2024-01-01T00:01:00.000Z", 1),
            upsert("app_incidents", "b", "2024-01-01T00:02:00.000Z", 2),
            upsert("app_log_agg", "c", "2024-01-01T00:02:00.000Z", 3),
        ])
        .unwrap();
        sink.apply(&[
            upsert("app_incidents", "a", "2024-01-01T00:01:00.000Z", 4),
            JobOutput::Delete {
                index: "app_incidents".into(),
                id: "b".into(),
            },
        ])
        .unwrap();
        let store = read_job_store(dir.path()).unwrap();
        let got: Vec<(&str, &str, u64)> = store
            .iter()
            .map(|((i, id), d)| (i.as_str(), id.as_str(), d["n"].as_u64().unwrap_or(0)))
            .collect();
        assert_eq!(got, [("app_incidents", "a", 4), ("app_log_agg", "c", 3)]);
        assert_eq!(count_job_documents(dir.path()).unwrap(), (1, 1));
        // A reopened sink appends nothing for unchanged documents or missing ids.
        let size = |d: &Path| -> u64 {
            file_names(d)
                .unwrap()
                .iter()
                .map(|n| fs::metadata(d.join(n)).unwrap().len())
                .sum()
        };
        let before = size(dir.path());
        let mut again = LocalStoreSink::open(dir.path()).unwrap();
        again
            .apply(&[
                upsert("app_incidents", "a", "2024-01-01T00:01:00.000Z", 4),
                JobOutput::Delete {
                    index: "app_incidents".into(),
                    id: "b".into(),
                },
            ])
            .unwrap();
        assert_eq!(size(dir.path()), before);
        again
            .apply(&[upsert("app_incidents", "a", "2024-01-01T00:01:00.000Z", 5)])
            .unwrap();
        assert!(size(dir.path()) > before);
    }

    #[test]
    fn pruning_drops_exactly_the_documents_before_the_horizon() {
        let dir = tempfile::tempdir().unwrap();
        // An older day file, as if written yesterday or earlier.
        let old = dir.path().join("app_incidents-20000101-jobs.ndjson");
        let line = |id: &str, ts: &str| {
            format!("{{\"_index\":\"app_incidents\",\"_id\":\"{id}\",\"_source\":{{\"timestamp\":\"{ts}\"}}}}\n")
        };
        fs::write(
            &old,
            line("old1", "2000-01-01T00:00:00.000Z") + &line("new1", "2030-01-01T00:00:00.000Z"),
        )
        .unwrap();
        let mut sink = LocalStoreSink::open(dir.path()).unwrap();
        sink.apply(&[
            upsert("app_incidents", "old2", "2010-06-01T00:00:00.000Z", 1),
            upsert("app_incidents", "new2", "2021-01-01T00:00:00.000Z", 2),
            upsert("app_log_agg", "agg_old", "2019-12-31T23:59:00.000Z", 3),
            upsert("app_log_agg", "agg_new", "2020-01-01T00:00:00.000Z", 4),
        ])
        .unwrap();
        // A pipeline file is not the jobs' to prune.
        let pipeline = dir.path().join("app_pipeline-20000101-w000.ndjson");
        fs::write(&pipeline, line("p", "2000-01-01T00:00:00.000Z")).unwrap();
        let horizon = 1_577_836_800_000; // 2020-01-01T00:00:00Z
        let deleted = sink.prune(horizon).unwrap();
        assert_eq!(
            deleted,
            [
                ("app_incidents".to_owned(), 2),
                ("app_log_agg".to_owned(), 1)
            ]
        );
        let store = read_job_store(dir.path()).unwrap();
        let ids: Vec<&str> = store.keys().map(|(_, id)| id.as_str()).collect();
        assert_eq!(ids, ["new1", "new2", "agg_new"]);
        assert!(!old.exists(), "older jobs files are compacted away");
        assert!(pipeline.exists());
        // Pruning again finds nothing; writing after pruning still works.
        assert!(sink.prune(horizon).unwrap().is_empty());
        sink.apply(&[upsert("app_incidents", "x", "2031-01-01T00:00:00.000Z", 5)])
            .unwrap();
        assert_eq!(read_job_store(dir.path()).unwrap().len(), 4);
    }

    fn pipeline_source(ts: &str, risk: u32) -> String {
        json!({
            "message": "m", "timestamp": ts, "level": "INFO", "metadata": {},
            "tags": {"default": "default"}, "template": "m", "template_id": "t1",
            "params": [], "prediction": 0, "anomaly_score": 0.1, "risk_score": risk,
            "added_state": 0, "ingest_timestamp": "2024-01-01T00:00:00.000Z"
        })
        .to_string()
    }

    #[test]
    fn the_source_tails_pipeline_files_and_resumes_at_its_positions() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LocalStore::open(dir.path(), 0, LocalStoreConfig::default()).unwrap();
        store.restore(None).unwrap();
        let write = |store: &mut LocalStore, ids: std::ops::Range<u32>| {
            for i in ids {
                let src = pipeline_source("2024-01-01T00:00:10.000Z", i);
                let id = format!("d{i}");
                store
                    .write(&DocRef {
                        index: "app",
                        kind: DocKind::Pipeline,
                        id: &id,
                        source: &src,
                    })
                    .unwrap();
            }
            store.commit().unwrap();
        };
        write(&mut store, 0..5);
        // A quarantine document is not a pipeline result.
        store
            .write(&DocRef {
                index: "app",
                kind: DocKind::Quarantine,
                id: "q",
                source: "{}",
            })
            .unwrap();
        store.commit().unwrap();
        let mut source = LocalStoreSource::new(dir.path());
        let first = source.poll(3).unwrap();
        assert_eq!(first.len(), 3);
        let rest = source.poll(100).unwrap();
        assert_eq!(rest.len(), 2);
        assert!(source.poll(100).unwrap().is_empty());
        let positions = source.positions();

        write(&mut store, 5..8);
        let mut resumed = LocalStoreSource::new(dir.path());
        resumed.resume(&positions).unwrap();
        let ids: Vec<String> = resumed
            .poll(100)
            .unwrap()
            .iter()
            .map(|r| r.doc_id.to_string())
            .collect();
        assert_eq!(ids, ["d5", "d6", "d7"]);
        assert_eq!(resumed.skipped(), 0);
    }
}
