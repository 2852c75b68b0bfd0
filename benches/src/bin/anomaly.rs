//! Semantic anomaly detection against BGL's per-line labels (`Label` column, `-` = normal):
//! precision, recall and F1 of our scorer (defaults, threshold 0.85) side by side with a plain
//! keyword baseline (error/fail/fatal/exception/...), plus a threshold sweep.
//!
//! Run: `cargo run --release -p logsight-benches --bin anomaly`

use anyhow::Result;
use clap::Parser;
use logsight_benches::load;
use operators::analyze::{AnalyticsConfig, LineAnalyzer};
use operators::anomaly::keyword_baseline;
use operators::format::FormatSet;

#[derive(Default, Clone, Copy)]
struct Confusion {
    tp: usize,
    fp: usize,
    fn_: usize,
    tn: usize,
}

impl Confusion {
    fn add(&mut self, predicted: bool, actual: bool) {
        match (predicted, actual) {
            (true, true) => self.tp += 1,
            (true, false) => self.fp += 1,
            (false, true) => self.fn_ += 1,
            (false, false) => self.tn += 1,
        }
    }

    fn prf(&self) -> (f64, f64, f64) {
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let p = ratio(self.tp, self.tp + self.fp);
        let r = ratio(self.tp, self.tp + self.fn_);
        let f = if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        };
        (p, r, f)
    }

    fn row(&self, name: &str) {
        let (p, r, f) = self.prf();
        println!(
            "{name:<28} {p:>9.3} {r:>7.3} {f:>6.3} {:>5} {:>5} {:>5}",
            self.tp, self.fp, self.fn_
        );
    }
}

/// The allocator the `logsight` binary ships with, so numbers match production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Measures semantic anomaly detection against the per-line labels of Loghub's BGL 2k sample.
///
/// Prints precision, recall and F1 of logsight's scorer (default threshold) beside a plain
/// keyword baseline (error/fail/fatal/exception/...), then a threshold sweep of the scorer.
#[derive(Parser)]
#[command(after_help = "\
Examples:
  scripts/bench.sh anomaly
  cargo run --release -p logsight-benches --bin anomaly

The sample is read from $LOGHUB_2K_DIR/BGL, else ../shared/datasets/loghub-2k/BGL.")]
struct Args {}

fn main() -> std::process::ExitCode {
    logsight_benches::run_cli(bench)
}

fn bench(Args {}: Args) -> Result<()> {
    let data = load("BGL")?;
    let config = AnalyticsConfig::default();
    let mut analyzer = LineAnalyzer::new(&config, Some(FormatSet::resolve("bgl")?))?;
    let mut scored = Vec::with_capacity(data.rows.len());
    for (line, row) in data.raw_lines.iter().zip(&data.rows) {
        let r = analyzer.analyze_line("bgl", line).result;
        let actual = row.label.as_deref().is_some_and(|l| l != "-");
        scored.push((r.anomaly_score, r.prediction == 1, actual, &row.content));
    }
    let positives = scored.iter().filter(|s| s.2).count();
    println!(
        "BGL 2k: {} lines, {} labelled anomalous",
        scored.len(),
        positives
    );
    println!(
        "{:<28} {:>9} {:>7} {:>6} {:>5} {:>5} {:>5}",
        "detector", "precision", "recall", "F1", "TP", "FP", "FN"
    );
    let mut ours = Confusion::default();
    let mut baseline = Confusion::default();
    for (_, predicted, actual, content) in &scored {
        ours.add(*predicted, *actual);
        baseline.add(keyword_baseline(content), *actual);
    }
    ours.row(&format!(
        "logsight (threshold {})",
        config.anomaly.threshold
    ));
    baseline.row("keyword baseline");
    println!("threshold sweep (ours):");
    for threshold in [0.5, 0.6, 0.7, 0.8, 0.85, 0.9] {
        let mut c = Confusion::default();
        for (score, _, actual, _) in &scored {
            c.add(*score >= threshold, *actual);
        }
        c.row(&format!("  >= {threshold}"));
    }
    Ok(())
}
