//! Run statistics: what each worker reports per written epoch, and the end-of-run summary
//! (lines, templates, anomalies, riskiest 1-minute windows, throughput).
//!
//! Windows keep a histogram of their lines' risk scores (0..=100) instead of the lines, so the
//! summary of a 10M-line run stays small; the incident risk of a window is computed exactly
//! from the histogram (same formula as `operators::incident::incident_risk`, checked in tests).

use operators::incident::{minute_window, severity};
use operators::level::Level;
use operators::model::ResultRecord;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the run statistics need of one result, taken when it is scored: the result itself is
/// rendered to JSON and dropped there, long before its epoch is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineFacts {
    pub prediction: u8,
    pub added_state: u8,
    pub level_fault: bool,
    pub risk_score: u32,
    /// Milliseconds of the log's timestamp, when it has a recognised one.
    pub timestamp_ms: Option<i64>,
}

impl LineFacts {
    pub fn of(r: &ResultRecord) -> Self {
        LineFacts {
            prediction: r.prediction,
            added_state: r.added_state,
            level_fault: r
                .log
                .level
                .as_deref()
                .is_some_and(|l| Level::parse(l).is_fault()),
            risk_score: r.risk_score,
            timestamp_ms: r.log.timestamp.as_deref().and_then(timestamp_ms),
        }
    }
}

/// One 1-minute window's counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowAgg {
    pub lines: u64,
    pub anomalies: u64,
    pub level_faults: u64,
    pub added_states: u64,
    /// Lines per risk score 0..=100.
    pub risk_hist: Vec<u64>,
}

impl Default for WindowAgg {
    fn default() -> Self {
        WindowAgg {
            lines: 0,
            anomalies: 0,
            level_faults: 0,
            added_states: 0,
            risk_hist: vec![0; 101],
        }
    }
}

impl WindowAgg {
    fn add(&mut self, r: &LineFacts) {
        self.lines += 1;
        self.anomalies += u64::from(r.prediction == 1);
        self.added_states += u64::from(r.added_state == 1);
        self.level_faults += u64::from(r.level_fault);
        let score = (r.risk_score as usize).min(100);
        self.risk_hist[score] += 1;
    }

    fn merge(&mut self, other: &WindowAgg) {
        self.lines += other.lines;
        self.anomalies += other.anomalies;
        self.level_faults += other.level_faults;
        self.added_states += other.added_states;
        for (a, b) in self.risk_hist.iter_mut().zip(&other.risk_hist) {
            *a += b;
        }
    }

    /// `incident_risk` of the window's scores: max + min(mean of the top ceil(30%), 100 − max).
    pub fn risk(&self) -> f64 {
        let n: u64 = self.risk_hist.iter().sum();
        if n == 0 {
            return 0.0;
        }
        let k = ((n.saturating_mul(3).saturating_add(9)) / 10).clamp(1, n);
        let max = self.risk_hist.iter().rposition(|&c| c > 0).unwrap_or(0) as f64;
        let (mut left, mut sum) = (k, 0u64);
        for (score, &count) in self.risk_hist.iter().enumerate().rev() {
            let take = count.min(left);
            sum += take * score as u64;
            left -= take;
            if left == 0 {
                break;
            }
        }
        let mean = sum as f64 / k as f64;
        (max + mean.min(100.0 - max)).clamp(0.0, 100.0)
    }
}

/// What one worker wrote in one epoch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    pub worker: usize,
    pub epoch: u64,
    pub documents: u64,
    pub quarantined: u64,
    pub anomalies: u64,
    /// Templates held by this worker's miner after the epoch.
    pub templates: u64,
    pub windows: Vec<(i64, WindowAgg)>,
}

/// Accumulates one worker's stats for the epoch being written.
#[derive(Debug, Default)]
pub struct StatsBuilder {
    stats: EpochStats,
    windows: BTreeMap<i64, WindowAgg>,
}

impl StatsBuilder {
    pub fn line(&mut self, r: &LineFacts) {
        self.stats.documents += 1;
        self.stats.anomalies += u64::from(r.prediction == 1);
        if let Some(ms) = r.timestamp_ms {
            self.windows.entry(minute_window(ms)).or_default().add(r);
        }
    }

    pub fn quarantined(&mut self) {
        self.stats.quarantined += 1;
    }

    pub fn finish(&mut self, worker: usize, epoch: u64, templates: u64) -> EpochStats {
        let mut stats = std::mem::take(&mut self.stats);
        stats.worker = worker;
        stats.epoch = epoch;
        stats.templates = templates;
        stats.windows = std::mem::take(&mut self.windows).into_iter().collect();
        stats
    }
}

/// Milliseconds of a (normalised) timestamp: RFC 3339 first, the general parser otherwise.
fn timestamp_ms(raw: &str) -> Option<i64> {
    if let Ok(ts) = chrono::DateTime::parse_from_rfc3339(raw) {
        return Some(ts.timestamp_millis());
    }
    operators::timestamp::parse(raw).map(|ts| ts.timestamp_millis())
}

/// The merged statistics of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub lines_in: u64,
    pub documents: u64,
    pub quarantined: u64,
    pub anomalies: u64,
    pub templates: u64,
    pub elapsed_secs: f64,
    pub epochs: u64,
    pub epoch_latency_p50_ms: f64,
    pub epoch_latency_p99_ms: f64,
    /// Lines read by each timely worker (global index), when there are several: shows how
    /// the sources (Kafka partitions) were spread.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines_in_by_worker: Vec<u64>,
    /// Documents written by each timely worker (global index), when there are several: shows
    /// how the shards (and with them mining, scoring and writing) were spread.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub documents_by_worker: Vec<u64>,
    #[serde(skip)]
    templates_by_worker: BTreeMap<usize, (u64, u64)>,
    #[serde(skip)]
    windows: BTreeMap<i64, WindowAgg>,
}

/// `  <what> by worker: w0 N, w1 M` with a line break.
fn by_worker(what: &str, counts: &[u64]) -> String {
    let by: Vec<String> = counts
        .iter()
        .enumerate()
        .map(|(w, n)| format!("w{w} {n}"))
        .collect();
    format!("  {what} by worker: {}\n", by.join(", "))
}

/// One of the riskiest windows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RiskyWindow {
    pub start_ms: i64,
    pub risk: f64,
    pub severity: u8,
    pub lines: u64,
    pub anomalies: u64,
    pub level_faults: u64,
    pub added_states: u64,
}

impl RunSummary {
    pub fn add(&mut self, stats: &EpochStats) {
        self.documents += stats.documents;
        if self.documents_by_worker.len() <= stats.worker {
            self.documents_by_worker.resize(stats.worker + 1, 0);
        }
        self.documents_by_worker[stats.worker] += stats.documents;
        self.quarantined += stats.quarantined;
        self.anomalies += stats.anomalies;
        let entry = self
            .templates_by_worker
            .entry(stats.worker)
            .or_insert((0, 0));
        if stats.epoch >= entry.0 {
            *entry = (stats.epoch, stats.templates);
        }
        self.templates = self.templates_by_worker.values().map(|&(_, t)| t).sum();
        for (start, agg) in &stats.windows {
            self.windows.entry(*start).or_default().merge(agg);
        }
    }

    /// The `n` riskiest windows, riskiest first (ties: earlier first).
    pub fn riskiest_windows(&self, n: usize) -> Vec<RiskyWindow> {
        let mut all: Vec<RiskyWindow> = self
            .windows
            .iter()
            .map(|(&start_ms, w)| {
                let risk = w.risk();
                RiskyWindow {
                    start_ms,
                    risk,
                    severity: severity(risk),
                    lines: w.lines,
                    anomalies: w.anomalies,
                    level_faults: w.level_faults,
                    added_states: w.added_states,
                }
            })
            .collect();
        all.sort_by(|a, b| b.risk.total_cmp(&a.risk).then(a.start_ms.cmp(&b.start_ms)));
        all.truncate(n);
        all
    }

    pub fn lines_per_sec(&self) -> f64 {
        if self.elapsed_secs > 0.0 {
            self.lines_in as f64 / self.elapsed_secs
        } else {
            0.0
        }
    }

    /// The human-readable summary printed at the end of `logsight run`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "logsight run: {} lines in, {} documents, {} quarantined, {} templates, {} anomalies\n",
            self.lines_in, self.documents, self.quarantined, self.templates, self.anomalies
        ));
        out.push_str(&format!(
            "  {:.2}s, {:.0} lines/s, {} epochs, epoch latency p50 {:.1} ms, p99 {:.1} ms\n",
            self.elapsed_secs,
            self.lines_per_sec(),
            self.epochs,
            self.epoch_latency_p50_ms,
            self.epoch_latency_p99_ms
        ));
        if !self.lines_in_by_worker.is_empty() {
            out.push_str(&by_worker("lines in", &self.lines_in_by_worker));
        }
        if self.documents_by_worker.len() > 1 {
            out.push_str(&by_worker("documents", &self.documents_by_worker));
        }
        let windows = self.riskiest_windows(5);
        if windows.is_empty() {
            out.push_str("  no timestamped lines: no windows\n");
        } else {
            out.push_str("  riskiest 1-minute windows:\n");
            for w in windows {
                let start = chrono::DateTime::from_timestamp_millis(w.start_ms).map_or_else(
                    || w.start_ms.to_string(),
                    |t| t.format("%Y-%m-%d %H:%M").to_string(),
                );
                out.push_str(&format!(
                    "    {start}  risk {:5.1} (severity {})  {} lines, {} anomalies, {} faults, {} new templates\n",
                    w.risk, w.severity, w.lines, w.anomalies, w.level_faults, w.added_states
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use operators::incident::incident_risk;

    #[test]
    fn histogram_risk_equals_incident_risk() {
        let cases: Vec<Vec<u32>> = vec![
            vec![0],
            vec![80, 0, 0, 0],
            vec![25; 10],
            vec![70, 60, 25, 25, 1, 0, 0, 0, 0, 0, 0],
            (0..=100).collect(),
            vec![100, 100, 3],
        ];
        for scores in cases {
            let mut w = WindowAgg::default();
            for &s in &scores {
                w.risk_hist[s as usize] += 1;
            }
            assert!(
                (w.risk() - incident_risk(&scores)).abs() < 1e-9,
                "{scores:?}"
            );
        }
    }

    #[test]
    fn summary_merges_workers_and_keeps_the_latest_template_count() {
        let mut s = RunSummary::default();
        let mut w = WindowAgg {
            lines: 1,
            ..Default::default()
        };
        w.risk_hist[80] = 1;
        s.add(&EpochStats {
            worker: 0,
            epoch: 0,
            documents: 2,
            templates: 3,
            windows: vec![(0, w.clone())],
            ..Default::default()
        });
        s.add(&EpochStats {
            worker: 0,
            epoch: 1,
            documents: 1,
            templates: 4,
            ..Default::default()
        });
        s.add(&EpochStats {
            worker: 1,
            epoch: 0,
            documents: 1,
            templates: 2,
            windows: vec![(60_000, w)],
            ..Default::default()
        });
        assert_eq!((s.documents, s.templates), (4, 6));
        assert_eq!(s.documents_by_worker, [3, 1]);
        assert_eq!(s.riskiest_windows(1)[0].start_ms, 0);
        assert!(s.render().contains("riskiest"));
        assert!(s.render().contains("documents by worker: w0 3, w1 1"));
    }
}
