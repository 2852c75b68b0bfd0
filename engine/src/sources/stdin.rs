//! The stdin source: lines read by a background thread into a bounded channel, so the worker
//! never blocks on a read and a slow pipeline stops the reading (backpressure). Not replayable:
//! on restart only the line counter resumes, so new documents get new ids.

use super::{Batch, LineReader, LineSource, Poll, Position, Positions, SourceError};
use crate::wire::RawLine;
use std::sync::mpsc::{sync_channel, Receiver, TryRecvError};

/// Lines buffered between the reader thread and the worker: a slow pipeline blocks the
/// reader once this many are waiting.
const CHANNEL_LINES: usize = 1 << 15;

/// A line or the error that ended the stream.
pub(crate) type LineMsg = Result<RawLine, String>;

/// Standard input as a source.
pub struct StdinSource {
    rx: Receiver<LineMsg>,
    lines: u64,
}

impl StdinSource {
    /// Starts the reader thread.
    pub fn spawn(max_line_bytes: usize) -> Self {
        let input = std::io::BufReader::with_capacity(1 << 16, std::io::stdin());
        StdinSource {
            rx: spawn_reader(input, max_line_bytes),
            lines: 0,
        }
    }
}

/// Reads `input` on a thread, sending its lines; an I/O error ends the stream.
pub(crate) fn spawn_reader<R: std::io::BufRead + Send + 'static>(
    input: R,
    cap: usize,
) -> Receiver<LineMsg> {
    let (tx, rx) = sync_channel(CHANNEL_LINES);
    std::thread::spawn(move || LineReader::new(input, cap).pump(|msg| tx.send(msg).is_ok()));
    rx
}

/// Takes up to `max` waiting lines: `None` once the channel is closed and empty.
pub(crate) fn poll_channel(
    rx: &Receiver<LineMsg>,
    max: usize,
    origin: &str,
) -> Result<Option<Vec<RawLine>>, SourceError> {
    let mut lines = Vec::new();
    while lines.len() < max {
        match rx.try_recv() {
            Ok(Ok(line)) => lines.push(line),
            Ok(Err(e)) => return Err(SourceError::io(origin, std::io::Error::other(e))),
            Err(TryRecvError::Empty) => break,
            Err(TryRecvError::Disconnected) if lines.is_empty() => return Ok(None),
            Err(TryRecvError::Disconnected) => break,
        }
    }
    Ok(Some(lines))
}

impl LineSource for StdinSource {
    fn kind(&self) -> &'static str {
        "stdin"
    }

    fn poll(&mut self, max_lines: usize) -> Result<Poll, SourceError> {
        match poll_channel(&self.rx, max_lines, "stdin")? {
            None => Ok(Poll::Finished),
            Some(lines) if lines.is_empty() => Ok(Poll::Pending),
            Some(lines) => {
                let first_pos = self.lines;
                self.lines += lines.len() as u64;
                Ok(Poll::Batch(Batch {
                    origin: "stdin".to_owned(),
                    first_pos,
                    lines,
                }))
            }
        }
    }

    fn positions(&self) -> Positions {
        let mut p = Positions::new();
        p.insert(
            "stdin".to_owned(),
            Position {
                lines: self.lines,
                offset: 0,
            },
        );
        p
    }

    fn resume(&mut self, positions: &Positions) -> Result<(), SourceError> {
        self.lines = positions.get("stdin").map_or(0, |p| p.lines);
        Ok(())
    }
}
