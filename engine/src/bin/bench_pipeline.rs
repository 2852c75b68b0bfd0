//! Pipeline benchmark (run in release): file → local store with 1 and 2 workers, their ratio,
//! the machine's ceiling for that ratio (two independent 1-worker processes at once), epoch
//! latency p50/p99 (hdrhistogram, from the run summary), and peak RSS (VmHWM) of a long run to
//! show memory stays flat as input grows.
//!
//! ```text
//! scripts/bench.sh pipeline [--lines 2000000] [--rss-lines 10000000]
//! ```
//! Input is the 8 Loghub 2k datasets repeated (from `LOGHUB_2K_DIR`, else `shared/`), written
//! to a temporary directory (never to shared/). Each configuration runs the `logsight` binary
//! built beside this one.

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::Value;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;

/// Measures the pipeline from a file into the local store: lines/s, epoch latency and peak RSS.
///
/// Runs `logsight run` with 1 and 2 workers, alternately for a few rounds (this machine's speed
/// drifts by tens of percent within a minute, so each worker count gets its median and the
/// ratio is taken between medians), with epoch latency p50/p99, and in each round two
/// independent 1-worker processes on half the input each, the most two workers can reach on
/// this machine; then a longer run whose peak RSS shows memory stays flat as the input grows.
#[derive(Parser)]
#[command(after_help = "\
Examples:
  scripts/bench.sh pipeline
  scripts/bench.sh pipeline --lines 500000 --rss-lines 0

Input: the eight Loghub 2k samples ($LOGHUB_2K_DIR, else ../shared/datasets/loghub-2k) repeated \
into a temporary directory. Each run starts the `logsight` binary built beside this one \
(scripts/bench.sh builds both).")]
struct Args {
    /// Input lines of the 1- and 2-worker runs.
    #[arg(long, value_name = "N", default_value_t = 2_000_000)]
    lines: u64,
    /// Rounds of one -w1 run and one -w2 run; the medians are reported.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Input lines of the long run measuring peak RSS (2 workers); 0 skips it.
    #[arg(long, value_name = "N", default_value_t = 10_000_000)]
    rss_lines: u64,
    /// Lines per epoch (`logsight run --epoch-lines`).
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    epoch_lines: u64,
}

/// Writes the Loghub samples repeated into `path` until it has `lines` lines.
fn generate(path: &Path, lines: u64) -> Result<()> {
    let all = logsight_benches::raw_corpus()?;
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    for line in all.iter().cycle().take(lines as usize) {
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// A `logsight run` of `input` into `dir`, writing its summary JSON beside `dir`.
fn command(input: &Path, dir: &Path, workers: usize, epoch_lines: u64) -> Result<Command> {
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe.with_file_name("logsight"));
    command
        // The pipeline alone is measured: the in-process job manager would run after it.
        .env("INCIDENT_JOBS", "false")
        .arg("run")
        .arg(input)
        .arg("--data-dir")
        .arg(dir)
        .args(["-w", &workers.to_string(), "--progress-secs", "0"])
        .args(["--epoch-lines", &epoch_lines.to_string()])
        .arg("--summary-json")
        .arg(dir.with_extension("json"))
        // Its summary is read from the JSON; the text one would interleave with the table, so
        // what it prints goes to a file, shown if the run fails.
        .stderr(std::fs::File::create(dir.with_extension("log"))?);
    Ok(command)
}

/// The summary of a finished run (and its store removed).
fn finish(status: std::process::ExitStatus, dir: &Path) -> Result<Value> {
    if !status.success() {
        let printed = std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default();
        bail!("logsight run failed: {status}\n{printed}");
    }
    let value: Value = serde_json::from_slice(&std::fs::read(dir.with_extension("json"))?)?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(value)
}

/// Runs `logsight run` and returns its summary JSON.
fn run(input: &Path, dir: &Path, workers: usize, epoch_lines: u64) -> Result<Value> {
    let status = command(input, dir, workers, epoch_lines)?
        .status()
        .context("running logsight")?;
    finish(status, dir)
}

/// The machine's ceiling for two workers: two independent `-w1` processes, each on its own
/// half of the input, started together. Nothing is shared between them but the machine
/// (cores, caches, memory, disk), so their combined lines/s bounds what `-w2` can reach here.
fn run_pair(halves: [&Path; 2], dir: &Path, epoch_lines: u64) -> Result<f64> {
    std::fs::create_dir_all(dir)?;
    let dirs = [dir.join("a"), dir.join("b")];
    let start = std::time::Instant::now();
    let mut children = Vec::new();
    for (half, dir) in halves.iter().zip(&dirs) {
        let child = command(half, dir, 1, epoch_lines)?
            .spawn()
            .context("running logsight")?;
        children.push(child);
    }
    let mut lines = 0.0;
    for (mut child, dir) in children.into_iter().zip(&dirs) {
        let summary = finish(child.wait()?, dir)?;
        lines += summary["lines_in"].as_f64().unwrap_or(0.0);
    }
    Ok(lines / start.elapsed().as_secs_f64().max(1e-9))
}

fn rate(summary: &Value) -> f64 {
    summary["lines_per_sec"].as_f64().unwrap_or(0.0)
}

/// The run with the median lines/s (the lower middle one for an even count).
fn median(mut runs: Vec<Value>) -> Value {
    runs.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    let middle = runs.len().saturating_sub(1) / 2;
    runs.into_iter().nth(middle).unwrap_or(Value::Null)
}

fn report(label: &str, s: &Value) {
    println!(
        "{label:<22} {:>10} lines  {:>9.0} lines/s  epoch p50 {:>7.1} ms  p99 {:>7.1} ms  peak RSS {:>7.1} MiB",
        s["lines_in"],
        s["lines_per_sec"].as_f64().unwrap_or(0.0),
        s["epoch_latency_p50_ms"].as_f64().unwrap_or(0.0),
        s["epoch_latency_p99_ms"].as_f64().unwrap_or(0.0),
        s["peak_rss_kb"].as_f64().unwrap_or(0.0) / 1024.0,
    );
}

fn main() -> std::process::ExitCode {
    logsight_benches::run_cli(bench)
}

fn bench(args: Args) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let input = tmp.path().join("input.log");
    generate(&input, args.lines)?;
    println!(
        "input: {} lines (8 Loghub datasets repeated), epoch {} lines",
        args.lines, args.epoch_lines
    );

    let halves = [tmp.path().join("half-a.log"), tmp.path().join("half-b.log")];
    for half in &halves {
        generate(half, args.lines / 2)?;
    }
    let (mut ones, mut twos, mut pairs) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let one = run(
            &input,
            &tmp.path().join(format!("w1-{round}")),
            1,
            args.epoch_lines,
        )?;
        report(&format!("round {round}, -w1"), &one);
        ones.push(one);
        let two = run(
            &input,
            &tmp.path().join(format!("w2-{round}")),
            2,
            args.epoch_lines,
        )?;
        report(&format!("round {round}, -w2"), &two);
        twos.push(two);
        let pair = run_pair(
            [&halves[0], &halves[1]],
            &tmp.path().join(format!("pair-{round}")),
            args.epoch_lines,
        )?;
        println!("round {round}, 2 × -w1 apart {pair:>21.0} lines/s");
        pairs.push(pair);
    }
    let (one, two) = (median(ones), median(twos));
    report("file → store, -w1", &one);
    report("file → store, -w2", &two);
    pairs.sort_by(f64::total_cmp);
    let pair = pairs[(pairs.len() - 1) / 2];
    let single = rate(&one).max(1e-9);
    println!(
        "speed-up -w2 / -w1 (medians of {} rounds): {:.2}x",
        args.rounds,
        rate(&two) / single
    );
    println!(
        "machine ceiling, two independent -w1 processes on half the input each: {:.2}x -w1 \
         (-w2 reaches {:.0}% of it)",
        pair / single,
        100.0 * rate(&two) / pair.max(1e-9)
    );
    std::fs::remove_file(&input)?;
    for half in &halves {
        std::fs::remove_file(half)?;
    }

    if args.rss_lines > 0 {
        generate(&input, args.rss_lines)?;
        let long = run(&input, &tmp.path().join("long"), 2, args.epoch_lines)?;
        report("long run, -w2", &long);
        let grow = long["peak_rss_kb"].as_f64().unwrap_or(0.0)
            / two["peak_rss_kb"].as_f64().unwrap_or(1.0).max(1.0);
        println!(
            "peak RSS {} lines vs {} lines: {:.2}x ({}x the input)",
            args.rss_lines,
            args.lines,
            grow,
            args.rss_lines / args.lines.max(1)
        );
    }
    Ok(())
}
