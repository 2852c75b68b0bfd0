//! The ZeroMQ source: a SUB socket compatible with the original single-instance logsight
//! setup. Endpoint `LOGS_STREAM_ZMQ_ENDPOINT` (default `tcp://0.0.0.0:5559`); every message is
//! a topic, a space and a logsight batch JSON (`logs {"index":…,"logs":[…]}`), or a
//! two-frame message (topic frame, JSON frame). The JSON becomes one line for the decode stage
//! (run with `--decode batch`), which quarantines what does not parse.
//!
//! The socket (the pure-Rust `zeromq` crate, no libzmq needed) runs on its own thread with a
//! small tokio runtime and hands messages over a bounded channel: when the pipeline is slow
//! the socket stops reading and TCP pushes back on the publisher. ZeroMQ PUB/SUB keeps no
//! history: messages published while no subscriber is connected are lost (the publisher side's
//! concern), and a restart resumes only the message counter, so new documents get new ids.
//!
//! `zmq:[ENDPOINT][?bind|?connect][&topic=T][&idle_ms=N]`: the socket *binds* a wildcard host
//! (`0.0.0.0`, `*`, `[::]`) and *connects* to any other host unless told otherwise; `topic`
//! subscribes to a prefix (default: everything); `idle_ms` ends the source once messages
//! arrived and then none for N ms (for batch jobs and tests).

use super::{Batch, LineSource, Poll, Position, Positions, SourceError};
use crate::wire::RawLine;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The original default endpoint.
pub const DEFAULT_ENDPOINT: &str = "tcp://0.0.0.0:5559";
/// Environment variable of the endpoint.
pub const ENDPOINT_ENV: &str = "LOGS_STREAM_ZMQ_ENDPOINT";
/// Messages buffered between the socket thread and the pipeline.
const CHANNEL_MESSAGES: usize = 1 << 14;

/// `zmq:` on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZmqSpec {
    pub endpoint: Option<String>,
    /// `Some(true)`: bind; `Some(false)`: connect; `None`: by the host.
    pub bind: Option<bool>,
    /// Subscription prefix ("" = all).
    pub topic: String,
    /// End after this long without messages, once some arrived.
    pub idle: Option<Duration>,
}

impl ZmqSpec {
    /// Parses what follows `zmq:`.
    pub fn parse(rest: &str) -> ZmqSpec {
        let (endpoint, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut spec = ZmqSpec {
            endpoint: Some(endpoint.to_owned()).filter(|e| !e.is_empty()),
            ..ZmqSpec::default()
        };
        for part in query.split('&') {
            match part.split_once('=') {
                Some(("topic", t)) => spec.topic = t.to_owned(),
                Some(("idle_ms", ms)) => spec.idle = ms.parse().ok().map(Duration::from_millis),
                None if part == "bind" => spec.bind = Some(true),
                None if part == "connect" => spec.bind = Some(false),
                _ => {}
            }
        }
        spec
    }

    /// The endpoint: the spec's, else `env_endpoint` (`LOGS_STREAM_ZMQ_ENDPOINT`), else the
    /// default; `*` as host becomes `0.0.0.0`.
    pub fn resolve_endpoint(&self, env_endpoint: Option<&str>) -> String {
        let e = self
            .endpoint
            .as_deref()
            .or(env_endpoint.filter(|e| !e.trim().is_empty()))
            .unwrap_or(DEFAULT_ENDPOINT)
            .trim();
        e.replacen("://*:", "://0.0.0.0:", 1)
    }

    /// Whether to bind `endpoint` (else connect).
    pub fn binds(&self, endpoint: &str) -> bool {
        self.bind.unwrap_or_else(|| {
            let host = endpoint.split_once("://").map_or("", |(_, r)| r);
            host.starts_with("0.0.0.0:") || host.starts_with("[::]:") || host.starts_with("*:")
        })
    }
}

/// What the socket thread sends: a message's JSON, or the error that stopped the socket.
type ZmqMsg = Result<Vec<u8>, String>;

/// A ZeroMQ SUB socket as a line source.
pub struct ZmqSource {
    origin: String,
    rx: mpsc::Receiver<ZmqMsg>,
    lines: u64,
    max_line_bytes: usize,
    idle: Option<Duration>,
    last_message: Option<Instant>,
}

impl ZmqSource {
    /// Starts the socket thread on `endpoint` (bound or connected, per `spec`).
    pub fn open(
        spec: &ZmqSpec,
        endpoint: &str,
        max_line_bytes: usize,
    ) -> Result<Self, SourceError> {
        if !endpoint.starts_with("tcp://") {
            return Err(SourceError::Spec(format!(
                "zmq: {endpoint:?}: only tcp:// endpoints are supported"
            )));
        }
        let bind = spec.binds(endpoint);
        let (tx, rx) = mpsc::channel(CHANNEL_MESSAGES);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (ep, topic) = (endpoint.to_owned(), spec.topic.clone());
        std::thread::Builder::new()
            .name("zmq-source".into())
            .spawn(move || socket_thread(ep, bind, topic, tx, ready_tx))
            .map_err(|e| SourceError::io("zmq source thread", e))?;
        // A bind fails at once (address in use); a connect waits for its peer in the background.
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(SourceError::Spec(e)),
            Err(_) => {
                return Err(SourceError::Spec(format!(
                    "zmq: the socket thread for {endpoint} ended"
                )))
            }
        }
        let how = if bind { "bound to" } else { "connecting to" };
        tracing::info!("zmq source {how} {endpoint}");
        eprintln!("logsight: zmq source {how} {endpoint}");
        Ok(ZmqSource {
            origin: format!("zmq:{endpoint}"),
            rx,
            lines: 0,
            max_line_bytes,
            idle: spec.idle,
            last_message: None,
        })
    }

    fn to_line(&self, mut bytes: Vec<u8>) -> RawLine {
        if bytes.len() > self.max_line_bytes {
            let len = bytes.len() as u64;
            bytes.truncate(self.max_line_bytes);
            return RawLine {
                bytes,
                oversize: Some(len),
            };
        }
        RawLine {
            bytes,
            oversize: None,
        }
    }
}

fn socket_thread(
    endpoint: String,
    bind: bool,
    topic: String,
    tx: mpsc::Sender<ZmqMsg>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(format!("zmq: cannot start a runtime: {e}")));
            return;
        }
    };
    runtime.block_on(async move {
        use zeromq::{Socket, SocketOptions, SocketRecv};
        let mut options = SocketOptions::default();
        options.no_connect_timeout();
        let mut socket = zeromq::SubSocket::with_options(options);
        if bind {
            if let Err(e) = socket.bind(&endpoint).await {
                let _ = ready.send(Err(format!("zmq: cannot bind {endpoint}: {e}")));
                return;
            }
            let _ = ready.send(Ok(()));
        } else {
            let _ = ready.send(Ok(()));
            if let Err(e) = socket.connect(&endpoint).await {
                let _ = tx
                    .send(Err(format!("zmq: cannot connect to {endpoint}: {e}")))
                    .await;
                return;
            }
            tracing::info!("zmq source connected to {endpoint}");
        }
        if let Err(e) = socket.subscribe(&topic).await {
            let _ = tx
                .send(Err(format!("zmq: cannot subscribe on {endpoint}: {e}")))
                .await;
            return;
        }
        loop {
            let msg = match socket.recv().await {
                Ok(m) => Ok(payload(m.into_vec())),
                Err(e) => Err(format!("zmq: receiving on {endpoint}: {e}")),
            };
            let stop = msg.is_err();
            if tx.send(msg).await.is_err() || stop {
                return;
            }
        }
    });
}

/// The batch JSON of a message: the second frame of a multi-frame message, else what follows
/// the topic and its space. A single frame that starts like JSON, or has no space, is taken
/// whole (bad input reaches the quarantine instead of vanishing).
pub fn payload<B: AsRef<[u8]>>(frames: Vec<B>) -> Vec<u8> {
    match frames.as_slice() {
        [] => Vec::new(),
        [single] => {
            let bytes = single.as_ref();
            if bytes.first().is_some_and(|b| *b == b'{' || *b == b'[') {
                return bytes.to_vec();
            }
            match memchr::memchr(b' ', bytes) {
                Some(i) => bytes[i + 1..].to_vec(),
                None => bytes.to_vec(),
            }
        }
        [_topic, rest @ ..] => rest
            .iter()
            .flat_map(|f| f.as_ref().iter().copied())
            .collect(),
    }
}

impl LineSource for ZmqSource {
    fn kind(&self) -> &'static str {
        "zmq"
    }

    fn poll(&mut self, max_lines: usize) -> Result<Poll, SourceError> {
        let mut lines = Vec::new();
        while lines.len() < max_lines.max(1) {
            match self.rx.try_recv() {
                Ok(Ok(bytes)) => lines.push(self.to_line(bytes)),
                Ok(Err(e)) => return Err(SourceError::Spec(e)),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) if lines.is_empty() => {
                    return Ok(Poll::Finished)
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        }
        if lines.is_empty() {
            let idle_done = match (self.idle, self.last_message) {
                (Some(idle), Some(last)) => last.elapsed() >= idle,
                _ => false,
            };
            return Ok(if idle_done {
                Poll::Finished
            } else {
                Poll::Pending
            });
        }
        self.last_message = Some(Instant::now());
        let first_pos = self.lines;
        self.lines += lines.len() as u64;
        Ok(Poll::Batch(Batch {
            origin: self.origin.clone(),
            first_pos,
            lines,
        }))
    }

    fn positions(&self) -> Positions {
        let mut p = Positions::new();
        p.insert(
            self.origin.clone(),
            Position {
                lines: self.lines,
                offset: 0,
            },
        );
        p
    }

    fn resume(&mut self, positions: &Positions) -> Result<(), SourceError> {
        // Nothing to replay: only the counter goes on, so ids of new messages stay new.
        if let Some(p) = positions.get(&self.origin) {
            self.lines = p.lines;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_and_endpoints() {
        let s = ZmqSpec::parse("");
        assert_eq!(s.resolve_endpoint(None), DEFAULT_ENDPOINT);
        assert!(s.binds(DEFAULT_ENDPOINT));
        assert_eq!(
            s.resolve_endpoint(Some("tcp://*:7000")),
            "tcp://0.0.0.0:7000"
        );
        let s = ZmqSpec::parse("tcp://127.0.0.1:5559?topic=logs&idle_ms=500");
        let ep = s.resolve_endpoint(Some("tcp://other:1"));
        assert_eq!(ep, "tcp://127.0.0.1:5559");
        assert!(!s.binds(&ep));
        assert_eq!(s.topic, "logs");
        assert_eq!(s.idle, Some(Duration::from_millis(500)));
        assert!(ZmqSpec::parse("tcp://127.0.0.1:1?bind").binds("tcp://127.0.0.1:1"));
        assert!(!ZmqSpec::parse("tcp://0.0.0.0:1?connect").binds("tcp://0.0.0.0:1"));
    }

    #[test]
    fn messages_are_split_after_the_topic() {
        assert_eq!(payload(vec![&b"logs {\"a\": 1}"[..]]), b"{\"a\": 1}");
        assert_eq!(payload(vec![&b"{\"a\": 1}"[..]]), b"{\"a\": 1}");
        assert_eq!(payload(vec![&b"logs"[..], &b"{}"[..]]), b"{}");
        assert_eq!(payload(vec![&b"garbage"[..]]), b"garbage");
        assert!(payload(Vec::<Vec<u8>>::new()).is_empty());
    }
}
