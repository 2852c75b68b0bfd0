//! `logsight parse`: raw log lines in, one NDJSON result per line out (or a template summary),
//! single-threaded and in input order, for exploring logs and checking formats and masks.

use crate::config::{process_env, EngineConfig};
use anyhow::{Context, Result};
use clap::Args;
use flate2::read::MultiGzDecoder;
use operators::analyze::{AnalyzedLine, LineAnalyzer};
use operators::format::FormatSet;
use operators::miner::format_template_id;
use serde_json::Value;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Arguments of `logsight parse`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:
  logsight parse --format hdfs HDFS.log > results.ndjson
  logsight parse --format '<Date> <Time> <Level> <Component>: <Content>' app.log.gz
  tail -f app.log | logsight parse --format spark -
  logsight parse --summary --format zookeeper zk.log")]
pub struct ParseArgs {
    /// Header format: a name from configs/formats.toml (hdfs, spark, linux, ...) or a format
    /// string such as '<Date> <Time> <Level> <Component>: <Content>'. Repeat to try several in
    /// order. Without it the whole line is the message.
    #[arg(long, short = 'f', value_name = "FMT")]
    pub format: Vec<String>,
    /// Config file (TOML); its [analytics] table sets masks, miner, anomaly and risk.
    /// Environment overrides (PREDICTION_THRESHOLD, RISK_SCORE_*) apply on top.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the templates with their line counts instead of one result per line.
    #[arg(long)]
    pub summary: bool,
    /// Index (tenant) the lines belong to; part of every template id.
    #[arg(long, default_value = "default")]
    pub index: String,
    /// Input files, plain or .gz; `-` or nothing reads standard input.
    #[arg(value_name = "FILE|-")]
    pub inputs: Vec<PathBuf>,
}

/// Runs `logsight parse`.
pub fn run(args: ParseArgs) -> Result<()> {
    let config = EngineConfig::load(args.config.as_deref(), &process_env())?;
    let formats = if args.format.is_empty() {
        None
    } else {
        Some(FormatSet::resolve_all(&args.format).context("invalid --format")?)
    };
    let mut analyzer =
        LineAnalyzer::new(&config.analytics, formats).context("invalid masks in config")?;
    // One result, its buffers reused from line to line.
    let mut analyzed = AnalyzedLine::empty();
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut stats = Stats::default();
    let inputs = if args.inputs.is_empty() {
        vec![PathBuf::from("-")]
    } else {
        args.inputs.clone()
    };
    for input in &inputs {
        let reader = open_input(input)?;
        let written = for_each_line(reader, input, |line, invalid_utf8| {
            stats.lines += 1;
            let mismatch = analyzer.analyze_line_into(&args.index, &line, &mut analyzed);
            stats.format_mismatches += usize::from(mismatch);
            let result = &mut analyzed.result;
            if invalid_utf8 {
                stats.invalid_utf8 += 1;
                result
                    .log
                    .extra
                    .insert("invalid_utf8".into(), Value::Bool(true));
            }
            stats.anomalies += usize::from(result.prediction);
            if args.summary {
                return Ok(());
            }
            serde_json::to_writer(&mut out, result)?;
            out.write_all(b"\n")
        });
        match written {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("processing {}", input.display())),
            Ok(()) => {}
        }
    }
    if args.summary {
        write_summary(&mut out, &analyzer).or_else(ignore_broken_pipe)?;
    }
    out.flush().or_else(ignore_broken_pipe)?;
    stats.report(analyzer.miner().template_count());
    Ok(())
}

fn open_input(path: &Path) -> Result<Box<dyn BufRead>> {
    if path == Path::new("-") {
        return Ok(Box::new(BufReader::new(io::stdin())));
    }
    let open = || File::open(path).with_context(|| format!("cannot read {}", path.display()));
    let mut magic = [0u8; 2];
    let n = open()?
        .read(&mut magic)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(BufReader::new(MultiGzDecoder::new(open()?))))
    } else {
        Ok(Box::new(BufReader::with_capacity(1 << 16, open()?)))
    }
}

/// Calls `f` with each line (without its line ending) and whether it was invalid UTF-8 and so
/// decoded lossily: bad bytes are flagged, never dropped.
fn for_each_line(
    mut reader: Box<dyn BufRead>,
    input: &Path,
    mut f: impl FnMut(String, bool) -> io::Result<()>,
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", input.display())))?;
        if n == 0 {
            return Ok(());
        }
        while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            buf.pop();
        }
        match std::str::from_utf8(&buf) {
            Ok(line) => f(line.to_owned(), false)?,
            Err(_) => f(String::from_utf8_lossy(&buf).into_owned(), true)?,
        }
    }
}

fn write_summary(out: &mut impl Write, analyzer: &LineAnalyzer) -> io::Result<()> {
    let mut templates: Vec<_> = analyzer.miner().templates().map(|(_, t)| t).collect();
    templates.sort_by(|a, b| b.count.cmp(&a.count).then(a.id.cmp(&b.id)));
    writeln!(out, "{:>8}  {:<16}  template", "lines", "template_id")?;
    for t in templates {
        writeln!(
            out,
            "{:>8}  {}  {}",
            t.count,
            format_template_id(t.id),
            t.text
        )?;
    }
    Ok(())
}

fn ignore_broken_pipe(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(e)
    }
}

#[derive(Debug, Default)]
struct Stats {
    lines: usize,
    format_mismatches: usize,
    invalid_utf8: usize,
    anomalies: usize,
}

impl Stats {
    fn report(&self, templates: usize) {
        eprintln!(
            "parsed {} lines: {} templates, {} anomalies, {} format mismatches, {} invalid UTF-8",
            self.lines, templates, self.anomalies, self.format_mismatches, self.invalid_utf8
        );
    }
}
