//! Metrics: process-wide counters, and a tiny HTTP server (std `TcpListener`, one thread) that
//! serves them in the Prometheus text format on `/metrics`, with `/health` for liveness.

use crate::quarantine::Reason;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds (seconds) of the epoch latency histogram buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Counters shared by all workers of a process.
#[derive(Debug, Default)]
pub struct Metrics {
    lines_in: Mutex<BTreeMap<String, u64>>,
    lines_out: Mutex<BTreeMap<String, u64>>,
    quarantined: [AtomicU64; 5],
    errors: AtomicU64,
    blank: AtomicU64,
    format_mismatch: AtomicU64,
    templates: AtomicU64,
    epochs: AtomicU64,
    latency: Mutex<LatencyHist>,
}

#[derive(Debug, Default)]
struct LatencyHist {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    pub fn lines_in(&self, source: &str, n: u64) {
        if let Ok(mut m) = self.lines_in.lock() {
            *m.entry(source.to_owned()).or_insert(0) += n;
        }
    }

    pub fn lines_out(&self, sink: &str, n: u64) {
        if let Ok(mut m) = self.lines_out.lock() {
            *m.entry(sink.to_owned()).or_insert(0) += n;
        }
    }

    pub fn quarantined(&self, reason: Reason) {
        let i = Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.quarantined[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn quarantined_total(&self) -> u64 {
        self.quarantined
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn blank_line(&self) {
        self.blank.fetch_add(1, Ordering::Relaxed);
    }

    pub fn format_mismatch(&self) {
        self.format_mismatch.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_templates(&self, n: u64) {
        self.templates.store(n, Ordering::Relaxed);
    }

    /// Records that an epoch became durable `secs` after its first line was read.
    pub fn epoch_done(&self, secs: f64) {
        self.epochs.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut h) = self.latency.lock() {
            h.count += 1;
            h.sum += secs;
            for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    h.buckets[i] += 1;
                }
            }
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let labeled = |out: &mut String,
                       name: &str,
                       help: &str,
                       label: &str,
                       m: &Mutex<BTreeMap<String, u64>>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            if let Ok(m) = m.lock() {
                for (k, v) in m.iter() {
                    let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {v}", escape(k));
                }
            }
        };
        labeled(
            &mut out,
            "logsight_lines_in_total",
            "Lines read, by source.",
            "source",
            &self.lines_in,
        );
        labeled(
            &mut out,
            "logsight_lines_out_total",
            "Documents written, by sink.",
            "sink",
            &self.lines_out,
        );
        let _ = writeln!(out, "# HELP logsight_quarantined_total Bad input lines, by reason.\n# TYPE logsight_quarantined_total counter");
        for (r, c) in Reason::ALL.iter().zip(&self.quarantined) {
            let _ = writeln!(
                out,
                "logsight_quarantined_total{{reason=\"{}\"}} {}",
                r.as_str(),
                c.load(Ordering::Relaxed)
            );
        }
        let simple = [
            (
                "logsight_errors_total",
                "counter",
                "Errors (sink and source failures).",
                &self.errors,
            ),
            (
                "logsight_blank_lines_total",
                "counter",
                "Blank input lines skipped.",
                &self.blank,
            ),
            (
                "logsight_format_mismatch_total",
                "counter",
                "Lines that did not match --format.",
                &self.format_mismatch,
            ),
            (
                "logsight_templates",
                "gauge",
                "Templates held by this process's miners.",
                &self.templates,
            ),
            (
                "logsight_epochs_total",
                "counter",
                "Epochs completed.",
                &self.epochs,
            ),
        ];
        for (name, kind, help, v) in simple {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        if let Ok(h) = self.latency.lock() {
            let name = "logsight_epoch_latency_seconds";
            let _ = writeln!(out, "# HELP {name} Time from an epoch's first line to its durable commit.\n# TYPE {name} histogram");
            for (bound, count) in LATENCY_BUCKETS.iter().zip(h.buckets) {
                let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}",
                h.count, h.sum, h.count
            );
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `/metrics` and `/health` on `addr` from a background thread; returns the bound address.
pub fn serve(addr: &str, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if let Err(e) = handle(stream, &metrics) {
                tracing::debug!("metrics request failed: {e}");
            }
        }
    });
    Ok(local)
}

fn handle(stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Drain the headers.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let (status, ctype, body) = match path {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
        "/health" => (
            "200 OK",
            "application/json",
            "{\"status\":\"ok\"}\n".to_owned(),
        ),
        _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn serves_metrics_and_health() {
        let m = Arc::new(Metrics::default());
        m.lines_in("file", 3);
        m.quarantined(Reason::InvalidJson);
        m.epoch_done(0.02);
        let addr = serve("127.0.0.1:0", Arc::clone(&m)).unwrap();
        let get = |path: &str| {
            let mut s = TcpStream::connect(addr).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut body = String::new();
            s.read_to_string(&mut body).unwrap();
            body
        };
        let metrics = get("/metrics");
        assert!(metrics.contains("logsight_lines_in_total{source=\"file\"} 3"));
        assert!(metrics.contains("logsight_quarantined_total{reason=\"invalid_json\"} 1"));
        assert!(metrics.contains("logsight_epoch_latency_seconds_count 1"));
        assert!(get("/health").contains("\"ok\""));
        assert!(get("/nope").starts_with("HTTP/1.1 404"));
    }
}
