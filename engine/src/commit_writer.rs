//! Worker 0's commit thread: writes `commit.json` for each durable epoch and prunes the
//! checkpoint files it supersedes, off the worker thread.
//!
//! Written inline, the commit's fsyncs and the prune's unlinks (each a discard the disk
//! acknowledges) held worker 0 for several milliseconds per epoch, and with more workers the
//! others waited for it at the next epoch boundary. The guarantees are unchanged: commits are
//! written in order, a commit is written only once the epoch is durable everywhere (the caller
//! submits it then), and sources are acknowledged only for commits reported written. Commits
//! queued while the thread was busy are coalesced: the newest one covers the older ones (its
//! positions include theirs), so only it is written.

use crate::checkpoint::{CheckpointError, Checkpoints, Commit};
use std::sync::mpsc;
use std::thread;

/// What the thread reports for each commit it wrote (the newest of those it coalesced).
type Written = Result<Commit, CheckpointError>;

/// A handle on the commit thread. Dropping it lets the thread finish its queue and waits for it.
pub struct CommitWriter {
    jobs: Option<mpsc::Sender<Commit>>,
    written: mpsc::Receiver<Written>,
    /// The epoch of the newest commit submitted and of the newest reported written.
    submitted: Option<u64>,
    reported: Option<u64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl CommitWriter {
    /// Starts the thread; it prunes checkpoint files of `workers` workers.
    pub fn spawn(checkpoints: Checkpoints, workers: usize) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel();
        let (done, written) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("logsight:commit".to_owned())
            .spawn(move || run(&checkpoints, workers, &queue, &done))?;
        Ok(CommitWriter {
            jobs: Some(jobs),
            written,
            submitted: None,
            reported: None,
            thread: Some(thread),
        })
    }

    /// Queues `commit`, to be written after every commit queued before it.
    pub fn submit(&mut self, commit: Commit) -> Result<(), CheckpointError> {
        let epoch = commit.epoch;
        let sent = self.jobs.as_ref().is_some_and(|j| j.send(commit).is_ok());
        if !sent {
            return Err(stopped());
        }
        self.submitted = Some(epoch);
        Ok(())
    }

    /// The commits written since the last call, oldest first, without waiting; the first
    /// failure as an error.
    pub fn written(&mut self) -> Result<Vec<Commit>, CheckpointError> {
        let mut out = Vec::new();
        while let Ok(result) = self.written.try_recv() {
            out.push(self.note(result)?);
        }
        Ok(out)
    }

    /// Waits until every submitted commit is written; returns those not reported before.
    pub fn wait_all(&mut self) -> Result<Vec<Commit>, CheckpointError> {
        let mut out = Vec::new();
        while self.reported < self.submitted {
            let result = self.written.recv().map_err(|_| stopped())?;
            out.push(self.note(result)?);
        }
        Ok(out)
    }

    fn note(&mut self, result: Written) -> Result<Commit, CheckpointError> {
        let commit = result?;
        self.reported = Some(commit.epoch);
        Ok(commit)
    }
}

impl Drop for CommitWriter {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn stopped() -> CheckpointError {
    CheckpointError::Io {
        path: "commit.json".to_owned(),
        source: std::io::Error::other("the commit thread stopped"),
    }
}

fn run(
    checkpoints: &Checkpoints,
    workers: usize,
    queue: &mpsc::Receiver<Commit>,
    done: &mpsc::Sender<Written>,
) {
    while let Ok(mut commit) = queue.recv() {
        // Coalesce: the newest queued commit supersedes the ones before it.
        while let Ok(newer) = queue.try_recv() {
            commit = newer;
        }
        let result = checkpoints
            .write_commit(&commit)
            .and_then(|()| checkpoints.prune(workers, commit.epoch))
            .map(|()| commit);
        let failed = result.is_err();
        if done.send(result).is_err() || failed {
            // Nobody listens, or a commit failed: the run stops; later commits are not written
            // out of order after a gap.
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::VERSION;
    use crate::sources::{Position, Positions};

    fn commit(epoch: u64) -> Commit {
        let mut positions = Positions::new();
        positions.insert(
            "f.log".to_owned(),
            Position {
                offset: epoch * 10,
                ..Position::default()
            },
        );
        Commit {
            version: VERSION,
            epoch,
            next_seq: epoch * 10,
            workers: 1,
            positions,
        }
    }

    #[test]
    fn commits_are_written_in_order_and_the_last_one_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoints = Checkpoints::new(dir.path());
        let mut writer = CommitWriter::spawn(checkpoints.clone(), 1).unwrap();
        for epoch in 0..50 {
            writer.submit(commit(epoch)).unwrap();
        }
        let mut epochs: Vec<u64> = writer.written().unwrap().iter().map(|c| c.epoch).collect();
        epochs.extend(writer.wait_all().unwrap().iter().map(|c| c.epoch));
        // Coalescing may skip epochs, never reorder them, and always ends at the newest.
        assert!(epochs.windows(2).all(|w| w[0] < w[1]), "{epochs:?}");
        assert_eq!(epochs.last(), Some(&49));
        assert_eq!(checkpoints.read_commit().unwrap(), Some(commit(49)));
        assert!(writer.wait_all().unwrap().is_empty());
    }

    #[test]
    fn a_failed_write_is_reported_and_stops_later_commits() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the state directory should be: every checkpoint write fails.
        std::fs::write(dir.path().join("_state"), b"").unwrap();
        let mut writer = CommitWriter::spawn(Checkpoints::new(dir.path()), 1).unwrap();
        writer.submit(commit(0)).unwrap();
        let err = writer.wait_all().unwrap_err().to_string();
        assert!(err.contains("_state"), "{err}");
        // The thread is gone: a later commit is refused, or reported as stopped.
        let later = writer
            .submit(commit(1))
            .and_then(|()| writer.wait_all().map(|_| ()));
        assert!(later.unwrap_err().to_string().contains("stopped"));
    }
}
