//! The TCP source: listens on an address; every connection sends newline-delimited lines (raw
//! log lines or logsight batch JSON, per `--decode`). Each connection is read by its own thread
//! into one bounded channel, so a slow pipeline stops reading the sockets (backpressure), and
//! TCP flow control pushes back on the senders.

use super::stdin::LineMsg;
use super::{Batch, LineReader, LineSource, Poll, Position, Positions, SourceError};
use std::collections::BTreeMap;
use std::io::BufReader;
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};

const CHANNEL_LINES: usize = 1 << 15;

/// A line with the name of its connection.
type ConnMsg = (String, LineMsg);

/// A listening TCP source.
pub struct TcpSource {
    addr: SocketAddr,
    rx: Receiver<ConnMsg>,
    lines: BTreeMap<String, u64>,
    held: Option<(String, crate::wire::RawLine)>,
}

impl TcpSource {
    /// Binds `addr` (port 0 picks a free port, see [`TcpSource::local_addr`]) and starts
    /// accepting. With `once`, the source ends when its first connection closes.
    pub fn bind(addr: &str, once: bool, max_line_bytes: usize) -> Result<Self, SourceError> {
        let listener = TcpListener::bind(addr).map_err(|e| SourceError::io(addr, e))?;
        let local = listener
            .local_addr()
            .map_err(|e| SourceError::io(addr, e))?;
        tracing::info!("tcp source listening on {local}");
        eprintln!("logsight: tcp source listening on {local}");
        let (tx, rx) = sync_channel(CHANNEL_LINES);
        std::thread::spawn(move || accept_loop(listener, tx, once, max_line_bytes));
        Ok(TcpSource {
            addr: local,
            rx,
            lines: BTreeMap::new(),
            held: None,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

fn accept_loop(listener: TcpListener, tx: SyncSender<ConnMsg>, once: bool, cap: usize) {
    for (n, stream) in listener.incoming().enumerate() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("tcp accept failed: {e}");
                continue;
            }
        };
        let peer = stream
            .peer_addr()
            .map_or_else(|_| format!("tcp:conn{n}"), |a| format!("tcp:{a}"));
        let tx = tx.clone();
        let reader = std::thread::spawn(move || read_connection(stream, peer, tx, cap));
        if once {
            // The channel closes when this connection's reader is done.
            let _ = reader.join();
            return;
        }
    }
}

fn read_connection(stream: std::net::TcpStream, peer: String, tx: SyncSender<ConnMsg>, cap: usize) {
    LineReader::new(BufReader::with_capacity(1 << 16, stream), cap)
        .pump(|msg| tx.send((peer.clone(), msg)).is_ok());
}

impl LineSource for TcpSource {
    fn kind(&self) -> &'static str {
        "tcp"
    }

    fn poll(&mut self, max_lines: usize) -> Result<Poll, SourceError> {
        let mut origin: Option<String> = None;
        let mut lines = Vec::new();
        if let Some((peer, line)) = self.held.take() {
            origin = Some(peer);
            lines.push(line);
        }
        while lines.len() < max_lines {
            let (peer, msg) = match self.rx.try_recv() {
                Ok(m) => m,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) if lines.is_empty() => return Ok(Poll::Finished),
                Err(TryRecvError::Disconnected) => break,
            };
            let line = match msg {
                Ok(line) => line,
                Err(e) => {
                    tracing::warn!("{peer}: {e}");
                    continue;
                }
            };
            match &origin {
                // A batch holds one connection's lines: keep this one for the next poll.
                Some(o) if *o != peer => {
                    self.held = Some((peer, line));
                    break;
                }
                Some(_) => {}
                None => origin = Some(peer),
            }
            lines.push(line);
        }
        match origin {
            Some(o) => Ok(self.finish(o, lines)),
            None => Ok(Poll::Pending),
        }
    }

    fn positions(&self) -> Positions {
        self.lines
            .iter()
            .map(|(k, &lines)| (k.clone(), Position { lines, offset: 0 }))
            .collect()
    }

    fn resume(&mut self, _positions: &Positions) -> Result<(), SourceError> {
        // Connections are new on every run: nothing to skip.
        Ok(())
    }
}

impl TcpSource {
    fn finish(&mut self, origin: String, lines: Vec<crate::wire::RawLine>) -> Poll {
        let count = self.lines.entry(origin.clone()).or_insert(0);
        let first_pos = *count;
        *count += lines.len() as u64;
        Poll::Batch(Batch {
            origin,
            first_pos,
            lines,
        })
    }
}
