//! The per-worker durability thread: fsyncs store files and writes checkpoint files off the
//! worker thread, so the next epochs are computed while the disk catches up.
//!
//! With the writes inline, every epoch stopped its worker for several fsyncs (store files,
//! miner snapshot, store state), and with more than one worker the others soon waited for it
//! at the next epoch boundary. The guarantees are unchanged: jobs run in submission order, the
//! mining operator submits epoch `e`'s snapshot before the write operator submits `e`'s commit,
//! and the write operator holds `e` until that commit is reported done. So when an epoch
//! passes the probe, its documents, store state and miner snapshot are on disk, as before.

use crate::checkpoint::Checkpoints;
use crate::dataflow::write::FlushedEpoch;
use operators::miner::MinerSnapshot;
use std::sync::mpsc;
use std::thread;

/// What the thread does, in order.
enum Job {
    Miner { epoch: u64, snapshot: MinerSnapshot },
    Commit { flushed: FlushedEpoch, reply: Reply },
}

/// Reports a commit's outcome exactly once: dropped unanswered (the thread panicked, or quit
/// with jobs queued), it reports a failure, so the operator waiting for it stops the process
/// instead of waiting forever.
struct Reply {
    epoch: u64,
    done: Option<Box<dyn FnOnce(Committed) + Send>>,
}

impl Reply {
    fn send(mut self, result: Result<(), String>) {
        if let Some(done) = self.done.take() {
            done(Committed {
                epoch: self.epoch,
                result,
            });
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            done(Committed {
                epoch: self.epoch,
                result: Err("the durability thread stopped before this commit".to_owned()),
            });
        }
    }
}

/// The outcome of one epoch's commit.
#[derive(Debug)]
pub struct Committed {
    pub epoch: u64,
    /// The first failure since the previous commit (a miner snapshot, a store file or the
    /// state file), as text for the operator to report.
    pub result: Result<(), String>,
}

/// A handle on one worker's durability thread; clones share it. The thread ends when the last
/// handle is dropped, after finishing its queue.
#[derive(Clone, Debug)]
pub struct Durability {
    jobs: mpsc::Sender<Job>,
}

impl Durability {
    /// Starts the thread of `worker`, writing checkpoint files through `checkpoints`.
    pub fn spawn(worker: usize, checkpoints: Option<Checkpoints>) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel();
        thread::Builder::new()
            .name(format!("logsight:durable-{worker}"))
            .spawn(move || run(worker, checkpoints, queue))?;
        Ok(Durability { jobs })
    }

    /// Queues the miner snapshot of `epoch`; a failure is reported by the next commit.
    pub fn miner(&self, epoch: u64, snapshot: MinerSnapshot) {
        // A send fails only once the thread is gone, which only a panic there causes; the
        // next commit then fails too, and the epoch is never released.
        let _ = self.jobs.send(Job::Miner { epoch, snapshot });
    }

    /// Queues `epoch`'s commit (see [`FlushedEpoch::make_durable`]); `done` is called with the
    /// outcome, on the durability thread. Returns `false` when the thread is gone.
    pub fn commit(
        &self,
        epoch: u64,
        flushed: FlushedEpoch,
        done: impl FnOnce(Committed) + Send + 'static,
    ) -> bool {
        let job = Job::Commit {
            flushed,
            reply: Reply {
                epoch,
                done: Some(Box::new(done)),
            },
        };
        match self.jobs.send(job) {
            Ok(()) => true,
            Err(mpsc::SendError(job)) => {
                // Not queued: the caller hears it from the return value, not from the reply.
                if let Job::Commit { mut reply, .. } = job {
                    reply.done = None;
                }
                false
            }
        }
    }
}

fn run(worker: usize, checkpoints: Option<Checkpoints>, queue: mpsc::Receiver<Job>) {
    let mut failure: Option<String> = None;
    for job in queue {
        match job {
            Job::Miner { epoch, snapshot } => {
                if let (Some(c), None) = (&checkpoints, &failure) {
                    if let Err(e) = c.write_miner(worker, epoch, &snapshot) {
                        failure = Some(format!("recording the miner of epoch {epoch}: {e}"));
                    }
                }
            }
            Job::Commit { flushed, reply } => {
                let result = match failure.take() {
                    Some(f) => Err(f),
                    None => flushed
                        .make_durable(worker, checkpoints.as_ref())
                        .map_err(|e| e.to_string()),
                };
                // Once failed, always failed: the operator stops the process anyway.
                if let Err(e) = &result {
                    failure = Some(e.clone());
                }
                reply.send(result);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{WorkerState, VERSION};
    use crate::sinks::local_store::PendingSync;
    use crate::sinks::local_store::{LocalStore, LocalStoreConfig};
    use crate::sinks::{DocKind, DocRef, Sink};
    use std::time::Duration;

    fn store_with_a_doc(dir: &std::path::Path) -> LocalStore {
        let mut store = LocalStore::open(dir, 0, LocalStoreConfig::default()).unwrap();
        store
            .write(&DocRef {
                index: "app",
                kind: DocKind::Pipeline,
                id: "1",
                source: "{}",
            })
            .unwrap();
        store
    }

    #[test]
    fn commits_are_reported_in_order_with_state_and_miner_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoints = Checkpoints::new(dir.path());
        let durable = Durability::spawn(0, Some(checkpoints.clone())).unwrap();
        let (tx, rx) = mpsc::channel();
        let mut store = store_with_a_doc(dir.path());
        for epoch in 0..3 {
            durable.miner(epoch, operators::miner::TemplateMiner::default().snapshot());
            let (lengths, files) = store.flush_commit().unwrap();
            let state = WorkerState {
                version: VERSION,
                epoch: Some(epoch),
                store: lengths,
            };
            let tx = tx.clone();
            let flushed = FlushedEpoch {
                files,
                state: Some(state),
            };
            assert!(durable.commit(epoch, flushed, move |c| {
                let _ = tx.send(c);
            }));
        }
        for epoch in 0..3 {
            let c = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(c.epoch, epoch);
            assert!(c.result.is_ok(), "{:?}", c.result);
        }
        let commit = crate::checkpoint::Commit {
            version: VERSION,
            epoch: 2,
            next_seq: 0,
            workers: 1,
            positions: Default::default(),
        };
        let state = checkpoints.load_state(0, Some(&commit)).unwrap().unwrap();
        assert_eq!(state.epoch, Some(2));
        assert!(checkpoints.load_miner(0, Some(&commit)).unwrap().is_some());
    }

    #[test]
    fn a_reply_dropped_unanswered_reports_a_failure() {
        let (tx, rx) = mpsc::channel();
        let reply = Reply {
            epoch: 7,
            done: Some(Box::new(move |c| {
                let _ = tx.send(c);
            })),
        };
        drop(reply);
        let c = rx.recv_timeout(Duration::from_secs(1)).unwrap();
        assert_eq!(c.epoch, 7);
        assert!(c.result.unwrap_err().contains("stopped before this commit"));
        // Answered once, it is not answered again on drop.
        let (tx, rx) = mpsc::channel();
        let reply = Reply {
            epoch: 8,
            done: Some(Box::new(move |c| {
                let _ = tx.send(c);
            })),
        };
        reply.send(Ok(()));
        assert!(rx
            .recv_timeout(Duration::from_secs(1))
            .unwrap()
            .result
            .is_ok());
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_failed_miner_snapshot_fails_the_next_commit_and_every_later_one() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the state directory should be: every checkpoint write fails.
        std::fs::write(dir.path().join("_state"), b"").unwrap();
        let durable = Durability::spawn(0, Some(Checkpoints::new(dir.path()))).unwrap();
        let (tx, rx) = mpsc::channel();
        durable.miner(0, operators::miner::TemplateMiner::default().snapshot());
        for epoch in 0..2 {
            let tx = tx.clone();
            let flushed = FlushedEpoch {
                files: PendingSync::default(),
                state: None,
            };
            durable.commit(epoch, flushed, move |c| {
                let _ = tx.send(c);
            });
        }
        for epoch in 0..2 {
            let c = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(c.epoch, epoch);
            let err = c.result.unwrap_err();
            assert!(err.contains("miner of epoch 0"), "{err}");
        }
    }
}
