//! Checkpoints: what makes a restart end with exactly one document per input line and the same
//! template ids as an uninterrupted run.
//!
//! Protocol (all files under `<data-dir>/_state/`):
//! 1. Right after mining epoch `e` (in sequence order), a worker's mining operator writes its
//!    miner snapshot `w<NNN>/m<epoch>.json`, before it releases epoch `e` downstream.
//! 2. When epoch `e` is complete at a worker's write operator, the worker flushes and fsyncs its
//!    store files, then writes `w<NNN>/e<epoch>.json` with their lengths. Only then does it let
//!    its output frontier pass `e`.
//! 3. Every worker reports to worker 0, through the dataflow, its source positions at the end
//!    of each epoch it read lines into (worker 0: files, stdin, TCP, ZeroMQ; every worker: its
//!    Kafka partitions). Worker 0 sees (through the probe, which covers the reports) that every
//!    worker has passed `e` and writes `commit.json`: epoch `e` plus every worker's positions at
//!    the end of `e` (their origins are disjoint, so one map). Kafka offsets go to the group
//!    only after that point (each worker for its partitions).
//! 4. On restart every worker loads its newest store state and newest miner snapshot at or below
//!    the committed epoch (each is written for every epoch in which it changed, so both are
//!    exactly the state at the commit), cuts its store files back to the recorded lengths,
//!    restores its miner, and the sources resume after the committed positions with the same
//!    epoch and sequence numbers (Kafka's are derived from offsets; see `pipeline.rs`).
//!
//! Every file is written atomically (temporary file, fsync, rename, fsync of the directory).

use crate::sinks::SinkState;
use crate::sources::Positions;
use operators::miner::MinerSnapshot;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Format version of the state files.
pub const VERSION: u32 = 1;

#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid checkpoint file: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the data directory was written by {found} workers; restart with the same total number of workers (-w × -n) or use a new --data-dir")]
    WorkerCount { found: usize },
}

fn io_err(path: &Path, source: std::io::Error) -> CheckpointError {
    CheckpointError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The global commit, written by worker 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Commit {
    pub version: u32,
    /// The last epoch durable on every worker.
    pub epoch: u64,
    /// Sequence number of the first arrival-order line after `epoch` (files, stdin, TCP,
    /// ZeroMQ; Kafka lines are numbered by their offsets).
    pub next_seq: u64,
    /// Total number of workers of the run that wrote it.
    pub workers: usize,
    /// Source positions at the end of `epoch`, of every worker's sources (each origin is read
    /// by one worker).
    pub positions: Positions,
}

/// One worker's state at the end of an epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerState {
    pub version: u32,
    /// `None` for the state recorded before the first epoch.
    pub epoch: Option<u64>,
    pub store: SinkState,
}

/// The `_state` directory of a data directory.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    dir: PathBuf,
}

impl Checkpoints {
    pub fn new(data_dir: &Path) -> Self {
        Checkpoints {
            dir: data_dir.join("_state"),
        }
    }

    fn worker_dir(&self, worker: usize) -> PathBuf {
        self.dir.join(format!("w{worker:03}"))
    }

    fn miner_path(&self, worker: usize, epoch: u64) -> PathBuf {
        self.worker_dir(worker).join(format!("m{epoch:020}.json"))
    }

    /// Records `worker`'s miner right after mining `epoch`.
    pub fn write_miner(
        &self,
        worker: usize,
        epoch: u64,
        snapshot: &MinerSnapshot,
    ) -> Result<(), CheckpointError> {
        write_atomic(&self.miner_path(worker, epoch), snapshot)
    }

    /// `worker`'s newest miner snapshot at or below the commit (`None`: start empty).
    pub fn load_miner(
        &self,
        worker: usize,
        commit: Option<&Commit>,
    ) -> Result<Option<MinerSnapshot>, CheckpointError> {
        let Some(c) = commit else { return Ok(None) };
        let epochs = self.epochs(worker, 'm')?;
        match epochs.iter().rev().find(|&&e| e <= c.epoch) {
            Some(&e) => read_json(&self.miner_path(worker, e)),
            None => Ok(None),
        }
    }

    fn state_path(&self, worker: usize, epoch: Option<u64>) -> PathBuf {
        match epoch {
            Some(e) => self.worker_dir(worker).join(format!("e{e:020}.json")),
            None => self.worker_dir(worker).join("initial.json"),
        }
    }

    pub fn read_commit(&self) -> Result<Option<Commit>, CheckpointError> {
        read_json(&self.dir.join("commit.json"))
    }

    pub fn write_commit(&self, commit: &Commit) -> Result<(), CheckpointError> {
        write_atomic(&self.dir.join("commit.json"), commit)
    }

    pub fn write_state(&self, worker: usize, state: &WorkerState) -> Result<(), CheckpointError> {
        write_atomic(&self.state_path(worker, state.epoch), state)
    }

    /// Epochs for which `worker` has a store state file, ascending.
    fn state_epochs(&self, worker: usize) -> Result<Vec<u64>, CheckpointError> {
        self.epochs(worker, 'e')
    }

    /// Epochs of `worker`'s files named `<prefix><epoch>.json`, ascending.
    fn epochs(&self, worker: usize, prefix: char) -> Result<Vec<u64>, CheckpointError> {
        let dir = self.worker_dir(worker);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&dir, e)),
        };
        let mut epochs: Vec<u64> = entries
            .filter_map(|e| e.ok()?.file_name().to_str().map(str::to_owned))
            .filter_map(|n| n.strip_prefix(prefix)?.strip_suffix(".json")?.parse().ok())
            .collect();
        epochs.sort_unstable();
        Ok(epochs)
    }

    /// The state `worker` restarts from: its newest state at or below the commit, else its
    /// initial state (`None` when there is none: a fresh data directory).
    pub fn load_state(
        &self,
        worker: usize,
        commit: Option<&Commit>,
    ) -> Result<Option<WorkerState>, CheckpointError> {
        if let Some(c) = commit {
            let epochs = self.state_epochs(worker)?;
            if let Some(&e) = epochs.iter().rev().find(|&&e| e <= c.epoch) {
                return read_json(&self.state_path(worker, Some(e)));
            }
        }
        read_json(&self.state_path(worker, None))
    }

    /// Checks that a commit was written by a run with `workers` workers.
    pub fn check_workers(commit: Option<&Commit>, workers: usize) -> Result<(), CheckpointError> {
        match commit {
            Some(c) if c.workers != workers => {
                Err(CheckpointError::WorkerCount { found: c.workers })
            }
            _ => Ok(()),
        }
    }

    /// Deletes states no restart can need: for each worker and kind, those older than its
    /// newest file at or below `committed`.
    pub fn prune(&self, workers: usize, committed: u64) -> Result<(), CheckpointError> {
        for (worker, prefix) in (0..workers).flat_map(|w| [(w, 'e'), (w, 'm')]) {
            let epochs = self.epochs(worker, prefix)?;
            let Some(&keep) = epochs.iter().rev().find(|&&e| e <= committed) else {
                continue;
            };
            for &e in epochs.iter().filter(|&&e| e < keep) {
                let path = match prefix {
                    'm' => self.miner_path(worker, e),
                    _ => self.state_path(worker, Some(e)),
                };
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => return Err(io_err(&path, err)),
                }
            }
        }
        Ok(())
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, CheckpointError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| CheckpointError::Parse {
            path: path.display().to_string(),
            source,
        })
}

/// Writes `value` as JSON to `path` atomically and durably.
fn write_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), CheckpointError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(value).map_err(|source| CheckpointError::Parse {
        path: path.display().to_string(),
        source,
    })?;
    let mut file = fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    file.write_all(&bytes).map_err(|e| io_err(&tmp, e))?;
    file.sync_all().map_err(|e| io_err(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    if let Ok(d) = fs::File::open(dir) {
        // Makes the rename durable; not supported everywhere, so best effort.
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(epoch: Option<u64>, len: u64) -> WorkerState {
        let mut store = SinkState::new();
        store.insert("f".into(), len);
        WorkerState {
            version: VERSION,
            epoch,
            store,
        }
    }

    #[test]
    fn a_worker_restarts_from_its_newest_state_at_or_below_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::new(dir.path());
        assert_eq!(c.read_commit().unwrap(), None);
        assert_eq!(c.load_state(0, None).unwrap(), None);
        c.write_state(0, &state(None, 0)).unwrap();
        c.write_state(0, &state(Some(2), 20)).unwrap();
        c.write_state(0, &state(Some(5), 50)).unwrap();
        c.write_state(0, &state(Some(7), 70)).unwrap();
        let commit = Commit {
            version: VERSION,
            epoch: 6,
            next_seq: 60,
            workers: 1,
            positions: Positions::new(),
        };
        c.write_commit(&commit).unwrap();
        assert_eq!(c.read_commit().unwrap(), Some(commit.clone()));
        assert_eq!(
            c.load_state(0, Some(&commit)).unwrap().unwrap().store["f"],
            50
        );
        assert_eq!(c.load_state(0, None).unwrap().unwrap().epoch, None);
        let snapshot = operators::miner::TemplateMiner::new(Default::default()).snapshot();
        c.write_miner(0, 1, &snapshot).unwrap();
        c.write_miner(0, 4, &snapshot).unwrap();
        assert!(c.load_miner(0, Some(&commit)).unwrap().is_some());
        assert!(c.load_miner(0, None).unwrap().is_none());
        c.prune(1, 6).unwrap();
        assert_eq!(c.state_epochs(0).unwrap(), [5, 7]);
        assert_eq!(c.epochs(0, 'm').unwrap(), [4]);
        assert!(Checkpoints::check_workers(Some(&commit), 2).is_err());
    }
}
