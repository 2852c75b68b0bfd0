//! Sources: where lines come from. Every source implements [`LineSource`] (files, stdin and TCP
//! here; Kafka and ZeroMQ in the connectors issue). A source hands out batches of raw lines of
//! one origin (a file, a connection) with their positions, and reports positions to resume from,
//! which the checkpoint stores once the epoch holding them is durable.

pub mod file;
pub mod kafka;
pub mod stdin;
pub mod tcp;
pub mod zmq;

use crate::wire::RawLine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{self, BufRead};
use thiserror::Error;

/// Errors of a source.
#[derive(Debug, Error)]
pub enum SourceError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Spec(String),
}

impl SourceError {
    pub fn io(path: impl std::fmt::Display, source: io::Error) -> Self {
        SourceError::Io {
            path: path.to_string(),
            source,
        }
    }
}

/// How far an origin has been read: lines handed out and bytes consumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub lines: u64,
    /// Bytes of the (decompressed) stream consumed.
    pub offset: u64,
}

/// Positions by origin name.
pub type Positions = BTreeMap<String, Position>;

/// Consecutive lines of one origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub origin: String,
    /// Position (0-based line number) of the first line.
    pub first_pos: u64,
    pub lines: Vec<RawLine>,
}

/// What a poll found.
#[derive(Debug, Clone, PartialEq)]
pub enum Poll {
    Batch(Batch),
    /// Nothing now; try again later (streams).
    Pending,
    /// The source has ended.
    Finished,
}

/// One ordered stream of a source whose lines are placed in epochs by their position (a Kafka
/// partition): what the driver needs to place its lines and to know whether it holds an epoch
/// open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// The stream's number within its source (the Kafka partition).
    pub stream: u32,
    /// The origin its batches carry (`kafka:<topic>/<partition>`).
    pub origin: String,
    /// Position of the next line it will hand out, once known (read or resumed).
    pub next: Option<u64>,
    /// Since when it has been caught up (nothing buffered, the end reached), if it is.
    pub caught_up_since: Option<std::time::Instant>,
}

/// A source of raw lines.
pub trait LineSource {
    /// For logs and metrics: `file`, `stdin`, `tcp`.
    fn kind(&self) -> &'static str;
    /// Up to `max_lines` lines of one origin. Must not block for long.
    fn poll(&mut self, max_lines: usize) -> Result<Poll, SourceError>;
    /// Where to resume after everything returned so far.
    fn positions(&self) -> Positions;
    /// Skips what a previous run already committed. Called once, before the first poll.
    fn resume(&mut self, positions: &Positions) -> Result<(), SourceError>;
    /// Told after each checkpoint: everything up to `positions` is durable in every sink
    /// (Kafka commits its consumer offsets here). Default: nothing to do.
    fn acknowledge(&mut self, _positions: &Positions) -> Result<(), SourceError> {
        Ok(())
    }
    /// The streams of a position-placed source (Kafka partitions); empty for sources read in
    /// arrival order (the default).
    fn streams(&self) -> Vec<StreamInfo> {
        Vec::new()
    }
    /// Backpressure for position-placed sources: hand out no line of `stream` at a position
    /// at or above `below` until a later call raises it (the source buffers or pauses).
    fn limit(&mut self, _stream: u32, _below: u64) {}
    /// Whether what the source has not handed over yet outlives the process (files, Kafka:
    /// a restart resumes from the checkpointed positions), so a graceful stop may end it at
    /// once. Streams (stdin, TCP, ZeroMQ, the default) first hand over what they buffered.
    fn replayable(&self) -> bool {
        false
    }
}

/// A source as named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A file, directory (all files below it, sorted) or glob; `.gz` files are decompressed.
    Path(String),
    Stdin,
    /// `tcp://HOST:PORT` listens; `?once` ends after the first connection closes.
    Tcp {
        addr: String,
        once: bool,
    },
    /// `kafka:[TOPIC][?eof]` or `kafka://BROKERS/[TOPIC]` (opened by `connectors`).
    Kafka(kafka::KafkaSpec),
    /// `zmq:[ENDPOINT][?bind|connect]` (opened by `connectors`).
    Zmq(zmq::ZmqSpec),
}

impl SourceSpec {
    pub fn parse(arg: &str) -> SourceSpec {
        if arg == "-" {
            return SourceSpec::Stdin;
        }
        if let Some(rest) = arg.strip_prefix("kafka:") {
            return SourceSpec::Kafka(kafka::KafkaSpec::parse(rest));
        }
        if let Some(rest) = arg.strip_prefix("zmq:") {
            return SourceSpec::Zmq(zmq::ZmqSpec::parse(rest));
        }
        if let Some(rest) = arg.strip_prefix("tcp://") {
            let (addr, query) = rest.split_once('?').unwrap_or((rest, ""));
            return SourceSpec::Tcp {
                addr: addr.to_owned(),
                once: query.split('&').any(|q| q == "once"),
            };
        }
        SourceSpec::Path(arg.to_owned())
    }
}

/// Builds the sources for `specs`: all path specs become one file source reading the files in
/// sorted order as one stream (so line order, epochs and template ids are deterministic).
pub fn open_all(
    specs: &[SourceSpec],
    max_line_bytes: usize,
) -> Result<Vec<Box<dyn LineSource>>, SourceError> {
    let mut sources: Vec<Box<dyn LineSource>> = Vec::new();
    let paths: Vec<String> = specs
        .iter()
        .filter_map(|s| match s {
            SourceSpec::Path(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    if !paths.is_empty() {
        let files = file::expand(&paths)?;
        sources.push(Box::new(file::FileSource::new(files, max_line_bytes)));
    }
    for spec in specs {
        match spec {
            // Opened by `connectors::open_sources`, which needs the configuration.
            SourceSpec::Path(_) | SourceSpec::Kafka(_) | SourceSpec::Zmq(_) => {}
            SourceSpec::Stdin => sources.push(Box::new(stdin::StdinSource::spawn(max_line_bytes))),
            SourceSpec::Tcp { addr, once } => {
                sources.push(Box::new(tcp::TcpSource::bind(addr, *once, max_line_bytes)?))
            }
        }
    }
    Ok(sources)
}

/// Reads lines of at most `cap` bytes from a buffered reader, never holding more than `cap`
/// bytes of one line in memory: longer lines come back as a prefix flagged `oversize`.
pub struct LineReader<R> {
    inner: R,
    cap: usize,
    offset: u64,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R, cap: usize) -> Self {
        LineReader {
            inner,
            cap,
            offset: 0,
        }
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Hands every line to `send` until the input ends, a read fails (the error is sent, as
    /// text, and ends the loop) or `send` returns false (the receiver is gone).
    pub fn pump(mut self, mut send: impl FnMut(Result<RawLine, String>) -> bool) {
        loop {
            let msg = match self.next_line() {
                Ok(Some(line)) => Ok(line),
                Ok(None) => return,
                Err(e) => Err(e.to_string()),
            };
            let stop = msg.is_err();
            if !send(msg) || stop {
                return;
            }
        }
    }

    /// The next line without its `\n` (and `\r`), or `None` at the end.
    pub fn next_line(&mut self) -> io::Result<Option<RawLine>> {
        let mut bytes = Vec::new();
        let mut total: u64 = 0;
        loop {
            let buf = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                if total == 0 {
                    return Ok(None);
                }
                break;
            }
            let (take, found) = match memchr::memchr(b'\n', buf) {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            let content = if found { &buf[..take - 1] } else { buf };
            let room = (self.cap + 1).saturating_sub(bytes.len());
            bytes.extend_from_slice(&content[..content.len().min(room)]);
            total += content.len() as u64;
            self.inner.consume(take);
            self.offset += take as u64;
            if found {
                break;
            }
        }
        if bytes.last() == Some(&b'\r') && total as usize <= self.cap + 1 {
            bytes.pop();
            total -= 1;
        }
        if total as usize > self.cap {
            bytes.truncate(self.cap);
            return Ok(Some(RawLine {
                bytes,
                oversize: Some(total),
            }));
        }
        Ok(Some(RawLine {
            bytes,
            oversize: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &[u8], cap: usize) -> Vec<RawLine> {
        let mut r = LineReader::new(std::io::BufReader::with_capacity(4, input), cap);
        let mut out = Vec::new();
        while let Some(line) = r.next_line().unwrap() {
            out.push(line);
        }
        out
    }

    #[test]
    fn lines_are_split_and_capped() {
        let lines = read_all(b"ab\r\ncdefghij\nk", 5);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].bytes, b"ab");
        assert_eq!(lines[0].oversize, None);
        assert_eq!(lines[1].bytes, b"cdefg");
        assert_eq!(lines[1].oversize, Some(8));
        assert_eq!(lines[2].bytes, b"k");
    }

    #[test]
    fn specs_are_recognised() {
        assert_eq!(SourceSpec::parse("-"), SourceSpec::Stdin);
        assert_eq!(
            SourceSpec::parse("tcp://127.0.0.1:9000?once"),
            SourceSpec::Tcp {
                addr: "127.0.0.1:9000".into(),
                once: true
            }
        );
        assert_eq!(
            SourceSpec::parse("a/*.log"),
            SourceSpec::Path("a/*.log".into())
        );
    }
}
