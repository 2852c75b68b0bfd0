//! The local store, the embedded default sink: a directory of NDJSON files, one per
//! (Elasticsearch index, UTC day, worker): `<index>_pipeline-20240131-w000.ndjson`.
//!
//! Files are append-only and written by one worker each, so workers and processes never share
//! a file. [`Sink::commit`] flushes and fsyncs and reports every file's length; on restart
//! [`Sink::restore`] cuts each file back to its checkpointed length (and removes files created
//! after the checkpoint), which together with deterministic epochs gives exactly one document
//! per input line. Retention deletes whole day files older than `retention_days`.

use super::{DocRef, Sink, SinkError, SinkState};
use chrono::{NaiveDate, Utc};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// `[store]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalStoreConfig {
    /// Delete day files older than this many days (0 keeps everything).
    pub retention_days: u32,
}

impl Default for LocalStoreConfig {
    fn default() -> Self {
        LocalStoreConfig { retention_days: 30 }
    }
}

/// One worker's files in the store directory.
pub struct LocalStore {
    dir: PathBuf,
    worker: usize,
    config: LocalStoreConfig,
    open: FxHashMap<String, BufWriter<File>>,
    lengths: SinkState,
    day: String,
    /// (index, kind) of the last document → its file name and quoted `_index`.
    names: HashMap<(String, super::DocKind), (String, String)>,
    /// The file of the last document written, with bytes written to it not yet in `lengths`.
    last: Option<Target>,
}

/// Where documents of one index and kind go.
struct Target {
    index: String,
    kind: super::DocKind,
    name: String,
    quoted: String,
    written: u64,
}

impl LocalStore {
    pub fn open(dir: &Path, worker: usize, config: LocalStoreConfig) -> Result<Self, SinkError> {
        fs::create_dir_all(dir).map_err(|e| SinkError::io(dir.display(), e))?;
        Ok(LocalStore {
            dir: dir.to_owned(),
            worker,
            config,
            open: FxHashMap::default(),
            lengths: SinkState::new(),
            day: today(),
            names: HashMap::new(),
            last: None,
        })
    }

    /// The suffix that marks this worker's files.
    fn suffix(&self) -> String {
        format!("-w{:03}.ndjson", self.worker)
    }

    fn file_name(&self, es_index: &str) -> String {
        format!("{es_index}-{}{}", self.day, self.suffix())
    }

    fn writer(&mut self, name: &str) -> Result<&mut BufWriter<File>, SinkError> {
        // Runs per document: `open` uses a fast hasher, and opening is the rare case.
        if !self.open.contains_key(name) {
            self.open_file(name)?;
        }
        self.open
            .get_mut(name)
            .ok_or_else(|| SinkError::BadState(format!("{name} is not open")))
    }

    fn open_file(&mut self, name: &str) -> Result<(), SinkError> {
        let path = self.dir.join(name);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| SinkError::io(path.display(), e))?;
        let len = file
            .metadata()
            .map_err(|e| SinkError::io(path.display(), e))?
            .len();
        self.lengths.insert(name.to_owned(), len);
        self.open
            .insert(name.to_owned(), BufWriter::with_capacity(1 << 20, file));
        Ok(())
    }

    /// This worker's files now in the directory, by name.
    fn own_files(&self) -> Result<Vec<String>, SinkError> {
        let suffix = self.suffix();
        let entries = fs::read_dir(&self.dir).map_err(|e| SinkError::io(self.dir.display(), e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| SinkError::io(self.dir.display(), e))?;
            if let Some(name) = entry.file_name().to_str() {
                if name.ends_with(&suffix) {
                    names.push(name.to_owned());
                }
            }
        }
        Ok(names)
    }

    /// The file for `doc`'s index and kind (opened on first use).
    fn target(&mut self, doc: &DocRef<'_>) -> Result<Target, SinkError> {
        let key = (doc.index.to_owned(), doc.kind);
        if !self.names.contains_key(&key) {
            let es_index = doc.kind.es_index(doc.index);
            let quoted = serde_json::Value::String(es_index.clone()).to_string();
            self.names
                .insert(key.clone(), (self.file_name(&es_index), quoted));
        }
        let Some((name, quoted)) = self.names.get(&key).cloned() else {
            return Err(SinkError::BadState("no file name".into()));
        };
        self.writer(&name)?;
        Ok(Target {
            index: key.0,
            kind: doc.kind,
            name,
            quoted,
            written: 0,
        })
    }

    /// Adds what was written through `target` to the file lengths of the checkpoint state.
    fn settle(&mut self, target: Option<Target>) {
        if let Some(t) = target {
            *self.lengths.entry(t.name).or_insert(0) += t.written;
        }
    }

    /// Appends one `{"_index":…,"_id":"…","_source":…}` line (the bytes of
    /// `DocRef::envelope`, written in pieces); returns its length.
    fn write_line(
        &mut self,
        name: &str,
        quoted_index: &str,
        id: &str,
        source: &str,
    ) -> Result<u64, SinkError> {
        let w = self.writer(name)?;
        let parts: [&[u8]; 9] = [
            b"{\"_index\":",
            quoted_index.as_bytes(),
            b",\"_id\":\"",
            id.as_bytes(),
            b"\"",
            b",\"_source\":",
            source.as_bytes(),
            b"}",
            b"\n",
        ];
        let mut len = 0;
        for part in parts {
            w.write_all(part).map_err(|e| SinkError::io(name, e))?;
            len += part.len() as u64;
        }
        Ok(len)
    }

    /// Deletes this worker's day files older than the retention.
    pub fn enforce_retention(&mut self) -> Result<usize, SinkError> {
        if self.config.retention_days == 0 {
            return Ok(0);
        }
        let last = self.last.take();
        self.settle(last);
        let cutoff =
            Utc::now().date_naive() - chrono::Days::new(u64::from(self.config.retention_days));
        let mut removed = 0;
        for name in self.own_files()? {
            if file_day(&name).is_some_and(|d| d < cutoff) {
                self.open.remove(&name);
                self.lengths.remove(&name);
                let path = self.dir.join(&name);
                fs::remove_file(&path).map_err(|e| SinkError::io(path.display(), e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl LocalStore {
    /// The first half of [`Sink::commit`]: flushes every file and returns the lengths to
    /// checkpoint with the files still to fsync, so the fsync can run on another thread.
    pub fn flush_commit(&mut self) -> Result<(SinkState, PendingSync), SinkError> {
        let last = self.last.take();
        self.settle(last);
        let mut files = Vec::with_capacity(self.open.len());
        for (name, w) in &mut self.open {
            w.flush().map_err(|e| SinkError::io(name, e))?;
            let file = w
                .get_ref()
                .try_clone()
                .map_err(|e| SinkError::io(name, e))?;
            files.push((name.clone(), file));
        }
        // A new day starts new files; the old ones stay in the state until retention.
        let day = today();
        if day != self.day {
            self.open.clear();
            self.names.clear();
            self.day = day;
        }
        Ok((self.lengths.clone(), PendingSync { files }))
    }
}

/// Store files flushed by [`LocalStore::flush_commit`], not yet fsynced.
#[derive(Debug, Default)]
pub struct PendingSync {
    files: Vec<(String, File)>,
}

impl PendingSync {
    /// Makes the flushed data durable.
    pub fn sync(self) -> Result<(), SinkError> {
        for (name, file) in self.files {
            file.sync_data().map_err(|e| SinkError::io(name, e))?;
        }
        Ok(())
    }
}

impl Sink for LocalStore {
    fn name(&self) -> &str {
        "local"
    }

    fn write(&mut self, doc: &DocRef<'_>) -> Result<(), SinkError> {
        // Documents come in runs of one index and kind: the file of the last one is reused
        // without a lookup (taken out of `self` so the writer can be borrowed mutably).
        let mut target = match self.last.take() {
            Some(t) if t.index == doc.index && t.kind == doc.kind => t,
            previous => {
                self.settle(previous);
                self.target(doc)?
            }
        };
        let quoted_id;
        let id = if doc
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_:./".contains(&b))
        {
            // Ids are hashes or source positions: nothing to escape.
            doc.id
        } else {
            quoted_id = serde_json::Value::String(doc.id.to_owned()).to_string();
            &quoted_id[1..quoted_id.len() - 1]
        };
        let result = self.write_line(&target.name, &target.quoted, id, doc.source);
        if let Ok(len) = result {
            target.written += len;
        }
        self.last = Some(target);
        result.map(|_| ())
    }

    fn commit(&mut self) -> Result<SinkState, SinkError> {
        let (lengths, files) = self.flush_commit()?;
        files.sync()?;
        Ok(lengths)
    }

    fn restore(&mut self, state: Option<&SinkState>) -> Result<(), SinkError> {
        self.last = None;
        self.open.clear();
        self.lengths.clear();
        for name in self.own_files()? {
            let path = self.dir.join(&name);
            match state.and_then(|s| s.get(&name)) {
                Some(&len) => {
                    let file = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| SinkError::io(path.display(), e))?;
                    file.set_len(len)
                        .map_err(|e| SinkError::io(path.display(), e))?;
                    file.sync_all()
                        .map_err(|e| SinkError::io(path.display(), e))?;
                    self.lengths.insert(name, len);
                }
                // Written after the checkpoint (or with no checkpoint at all): not committed.
                None if state.is_some() => {
                    fs::remove_file(&path).map_err(|e| SinkError::io(path.display(), e))?;
                }
                None => {
                    let len = fs::metadata(&path)
                        .map_err(|e| SinkError::io(path.display(), e))?
                        .len();
                    self.lengths.insert(name, len);
                }
            }
        }
        Ok(())
    }
}

fn today() -> String {
    Utc::now().format("%Y%m%d").to_string()
}

/// The UTC day in a store file name `<index>-<YYYYMMDD>-w<NNN>.ndjson`.
fn file_day(name: &str) -> Option<NaiveDate> {
    let stem = name.strip_suffix(".ndjson")?;
    let (rest, _worker) = stem.rsplit_once('-')?;
    let (_, day) = rest.rsplit_once('-')?;
    NaiveDate::parse_from_str(day, "%Y%m%d").ok()
}

/// Reads every document of `es_index` (e.g. `default_pipeline`) in `dir`, across workers and
/// days, keeping the last document of each `_id` (a tombstone line `{"_deleted": true}` removes
/// it). For tests, `logsight store`, the job manager and tools.
pub fn read_documents(
    dir: &Path,
    es_index: &str,
) -> Result<std::collections::BTreeMap<String, serde_json::Value>, SinkError> {
    let mut docs = std::collections::BTreeMap::new();
    let prefix = format!("{es_index}-");
    let entries = fs::read_dir(dir).map_err(|e| SinkError::io(dir.display(), e))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().to_str().map(str::to_owned))
        .filter(|n| n.starts_with(&prefix) && n.ends_with(".ndjson"))
        .collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let text = fs::read_to_string(&path).map_err(|e| SinkError::io(path.display(), e))?;
        for line in text.lines() {
            let doc: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| SinkError::BadState(format!("{name}: {e}")))?;
            if let Some(id) = doc.get("_id").and_then(|v| v.as_str()) {
                // A tombstone (`"_deleted": true`, written by the job manager's sink) deletes.
                if doc.get("_deleted").and_then(|v| v.as_bool()) == Some(true) {
                    docs.remove(id);
                } else {
                    docs.insert(id.to_owned(), doc);
                }
            }
        }
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::DocKind;

    fn doc<'a>(id: &'a str, source: &'a str) -> DocRef<'a> {
        DocRef {
            index: "app",
            kind: DocKind::Pipeline,
            id,
            source,
        }
    }

    #[test]
    fn restore_cuts_files_back_to_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LocalStore::open(dir.path(), 0, LocalStoreConfig::default()).unwrap();
        store.restore(None).unwrap();
        store.write(&doc("a", "{\"n\":1}")).unwrap();
        let state = store.commit().unwrap();
        store.write(&doc("b", "{\"n\":2}")).unwrap();
        store.commit().unwrap();
        assert_eq!(read_documents(dir.path(), "app_pipeline").unwrap().len(), 2);

        let mut again = LocalStore::open(dir.path(), 0, LocalStoreConfig::default()).unwrap();
        again.restore(Some(&state)).unwrap();
        let docs = read_documents(dir.path(), "app_pipeline").unwrap();
        assert_eq!(docs.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(docs["a"]["_source"]["n"], 1);
    }

    #[test]
    fn files_are_per_worker_and_other_workers_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut w0 = LocalStore::open(dir.path(), 0, LocalStoreConfig::default()).unwrap();
        let mut w1 = LocalStore::open(dir.path(), 1, LocalStoreConfig::default()).unwrap();
        w0.write(&doc("a", "{}")).unwrap();
        w1.write(&doc("b", "{}")).unwrap();
        w0.commit().unwrap();
        w1.commit().unwrap();
        w0.restore(Some(&SinkState::new())).unwrap();
        let docs = read_documents(dir.path(), "app_pipeline").unwrap();
        assert_eq!(docs.keys().collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn retention_removes_old_day_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("app_pipeline-20000101-w000.ndjson"), "{}\n").unwrap();
        fs::write(dir.path().join("app_pipeline-20000101-w001.ndjson"), "{}\n").unwrap();
        let mut store = LocalStore::open(dir.path(), 0, LocalStoreConfig::default()).unwrap();
        store.write(&doc("a", "{}")).unwrap();
        store.commit().unwrap();
        assert_eq!(store.enforce_retention().unwrap(), 1);
        assert!(!dir
            .path()
            .join("app_pipeline-20000101-w000.ndjson")
            .exists());
        // Worker 1's file is worker 1's business.
        assert!(dir
            .path()
            .join("app_pipeline-20000101-w001.ndjson")
            .exists());
        assert_eq!(
            file_day("x_pipeline-20240131-w002.ndjson"),
            NaiveDate::from_ymd_opt(2024, 1, 31)
        );
    }
}
