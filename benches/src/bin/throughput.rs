//! Parse-path throughput on one core: header format + masking + template mining + anomaly +
//! risk over the 8 Loghub 2k samples concatenated and repeated to at least 5M lines, with the
//! lines already in memory (no file I/O). Right after, Drain3 (Python, default config) parses a
//! slice of the same stream; the two alternate for `--rounds` rounds (3 by default), and the
//! ratio of each round and their median are printed, since this machine's speed drifts.
//!
//! Run: `scripts/bench.sh throughput` (sets up the Drain3 venv), or
//! `cargo run --release -p logsight-benches --bin throughput -- [--lines N] [--drain3-lines N]`.

use anyhow::{Context, Result};
use clap::Parser;
use logsight_benches::{load, DATASETS};
use operators::analyze::{AnalyticsConfig, AnalyzedLine, LineAnalyzer};
use operators::format::FormatSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

/// The allocator the `logsight` binary ships with, so numbers match production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Measures single-core parse-path throughput in lines/s, against Drain3.
///
/// Header format, masking, template mining, anomaly and risk run over the eight Loghub 2k
/// samples repeated, already in memory. Right after, Drain3 (Python, default config) parses a
/// slice of the same stream; each round prints both and their ratio, and the end their median.
#[derive(Parser)]
#[command(after_help = "\
Examples:
  scripts/bench.sh throughput
  scripts/bench.sh throughput --lines 1000000 --drain3-lines 20000 --rounds 5
  cargo run --release -p logsight-benches --bin throughput -- --lines 1000000

scripts/bench.sh installs Drain3 into a venv and passes its Python.")]
struct Args {
    /// Lines to parse: the samples are repeated whole until there are at least this many.
    #[arg(long, value_name = "N", default_value_t = 5_000_000)]
    lines: usize,
    /// Rounds of both measurements, back to back; the median ratio is printed at the end.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Lines of the same stream to feed Drain3.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    drain3_lines: usize,
    /// The Python interpreter with `drain3` installed.
    #[arg(
        long,
        value_name = "BIN",
        env = "LOGSIGHT_BENCH_PYTHON",
        default_value = "python3"
    )]
    python: String,
}

fn main() -> std::process::ExitCode {
    logsight_benches::run_cli(bench)
}

fn bench(args: Args) -> Result<()> {
    let config = AnalyticsConfig::default();
    // (dataset index, raw line) of one pass over the 8 datasets, and each dataset's formats.
    let mut corpus: Vec<(usize, String)> = Vec::new();
    let mut formats = Vec::new();
    for (i, name) in DATASETS.iter().enumerate() {
        let data = load(name)?;
        formats.push(FormatSet::resolve(&name.to_lowercase())?);
        corpus.extend(data.raw_lines.into_iter().map(|l| (i, l)));
    }
    let repeats = args.lines.div_ceil(corpus.len());
    let total = repeats * corpus.len();
    let mut ratios = Vec::new();
    for round in 1..=args.rounds {
        // Fresh analyzers each round, so rounds measure the same work.
        let mut analyzers = formats
            .iter()
            .map(|f| LineAnalyzer::new(&config, Some(f.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let (secs, checksum) = parse_all(&mut analyzers, &corpus, repeats);
        let ours = total as f64 / secs;
        println!(
            "round {round}: logsight parse path: {total} lines in {secs:.2} s = {ours:.0} lines/s \
             (one core; checksum {checksum})"
        );
        match drain3_rate(&args, &corpus) {
            Ok((n, rate)) => {
                let ratio = ours / rate;
                println!("round {round}: Drain3 (default config): {n} lines = {rate:.0} lines/s");
                println!("round {round}: ratio logsight / Drain3: {ratio:.1}x");
                ratios.push(ratio);
            }
            Err(e) => {
                println!("Drain3 baseline not run: {e:#} (run scripts/bench.sh to set it up)");
                return Ok(());
            }
        }
    }
    if let Some(summary) = summarize(&mut ratios) {
        println!("{summary}");
    }
    Ok(())
}

/// Runs every line `repeats` times, one result at a time with its buffers reused, as
/// `logsight parse` does; returns the seconds taken and a checksum of the results.
fn parse_all(
    analyzers: &mut [LineAnalyzer],
    corpus: &[(usize, String)],
    repeats: usize,
) -> (f64, u64) {
    let mut checksum = 0u64;
    let mut out = AnalyzedLine::empty();
    let start = Instant::now();
    for _ in 0..repeats {
        for (i, line) in corpus {
            analyzers[*i].analyze_line_into("bench", line, &mut out);
            let r = &out.result;
            checksum = checksum.wrapping_add(u64::from(r.risk_score) + r.params.len() as u64);
        }
    }
    (start.elapsed().as_secs_f64(), checksum)
}

/// The median and range of the rounds' ratios (each measured back to back, so both sides
/// saw the same machine), or None without rounds.
fn summarize(ratios: &mut [f64]) -> Option<String> {
    ratios.sort_by(f64::total_cmp);
    let (first, last) = (ratios.first()?, ratios.last()?);
    let median = ratios[ratios.len() / 2];
    Some(format!(
        "ratio logsight / Drain3 over {} rounds: median {median:.1}x (range {first:.1}–{last:.1}x)",
        ratios.len()
    ))
}

/// Feeds the first `drain3_lines` lines of the stream (the Content part is left to Drain3, which
/// has no header parsing) to `benches/drain3_baseline.py` and reads back its lines/s.
fn drain3_rate(args: &Args, corpus: &[(usize, String)]) -> Result<(usize, f64)> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/drain3_baseline.py");
    let mut child = Command::new(&args.python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", args.python))?;
    let n = args.drain3_lines;
    {
        let mut stdin = child.stdin.take().context("no stdin")?;
        for (_, line) in corpus.iter().cycle().take(n) {
            writeln!(stdin, "{line}")?;
        }
    }
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "drain3_baseline.py failed (is drain3 installed?)"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let rate: f64 = text
        .trim()
        .parse()
        .with_context(|| format!("unexpected output {text:?}"))?;
    Ok((n, rate))
}
