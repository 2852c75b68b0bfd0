//! Shared helpers of the benchmarks: locating and loading the Loghub 2k samples with their
//! corrected ground truth, and [`run_cli`], the binaries' `main`.
//!
//! Data: Loghub (https://github.com/logpai/loghub). Jieming Zhu, Shilin He, Pinjia He, Jinyang
//! Liu, Michael R. Lyu. Loghub: A Large Collection of System Log Datasets for AI-driven Log
//! Analytics. IEEE International Symposium on Software Reliability Engineering (ISSRE), 2023.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The `main` of a benchmark binary: parses its arguments `A` (clap prints `--help`, and usage
/// errors with exit status 2, itself), runs `bench`, and prints an error as one line,
/// `error: ` and its causes joined by `: `, with exit status 1: no backtrace, whatever
/// `RUST_BACKTRACE` says.
pub fn run_cli<A: clap::Parser>(bench: impl FnOnce(A) -> Result<()>) -> ExitCode {
    match bench(A::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The eight datasets shipped in `shared/datasets/loghub-2k`.
pub const DATASETS: [&str; 8] = [
    "HDFS",
    "Hadoop",
    "Spark",
    "Zookeeper",
    "BGL",
    "HPC",
    "Windows",
    "Apache",
];

/// The Loghub 2k directory: `$LOGHUB_2K_DIR`, else `shared/datasets/loghub-2k` beside the repo.
pub fn loghub_dir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("LOGHUB_2K_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = repo.join("../shared/datasets/loghub-2k");
    if !dir.is_dir() {
        bail!(
            "Loghub 2k samples not found at {}; set LOGHUB_2K_DIR",
            dir.display()
        );
    }
    Ok(dir)
}

/// The raw lines of all eight datasets, in [`DATASETS`] order, blank lines left out: the mixed
/// input the pipeline benchmarks repeat.
pub fn raw_corpus() -> Result<Vec<String>> {
    let dir = loghub_dir()?;
    let mut lines = Vec::new();
    for name in DATASETS {
        let path = dir.join(name).join(format!("{name}_2k.log"));
        let raw = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        lines.extend(
            String::from_utf8_lossy(&raw)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned),
        );
    }
    Ok(lines)
}

/// One dataset: raw lines, and per line its header columns, content, template and label.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: String,
    pub raw_lines: Vec<String>,
    /// Header column names of the structured CSV (between `LineId` and `Content`).
    pub header_columns: Vec<String>,
    pub rows: Vec<Row>,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub header: Vec<String>,
    pub content: String,
    pub template: String,
    /// BGL's `Label` (`-` = normal); `None` for datasets without labels.
    pub label: Option<String>,
}

/// Loads `name` from [`loghub_dir`], scored against the corrected ground truth.
pub fn load(name: &str) -> Result<Dataset> {
    let dir = loghub_dir()?.join(name);
    let log_path = dir.join(format!("{name}_2k.log"));
    let raw =
        std::fs::read(&log_path).with_context(|| format!("reading {}", log_path.display()))?;
    let raw_lines: Vec<String> = String::from_utf8_lossy(&raw)
        .lines()
        .map(str::to_owned)
        .collect();
    let csv_path = dir.join(format!("{name}_2k.log_structured_corrected.csv"));
    let mut reader = csv::Reader::from_path(&csv_path)
        .with_context(|| format!("reading {}", csv_path.display()))?;
    let headers = reader.headers()?.clone();
    let col = |n: &str| headers.iter().position(|h| h == n);
    let (content, template) = match (col("Content"), col("EventTemplate")) {
        (Some(c), Some(t)) => (c, t),
        _ => bail!("{} lacks Content/EventTemplate columns", csv_path.display()),
    };
    let label = col("Label");
    let header_idx: Vec<usize> = (0..content)
        .filter(|&i| !matches!(&headers[i], "LineId"))
        .collect();
    let header_columns = header_idx.iter().map(|&i| headers[i].to_owned()).collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record?;
        rows.push(Row {
            header: header_idx.iter().map(|&i| record[i].to_owned()).collect(),
            content: record[content].to_owned(),
            template: record[template].to_owned(),
            label: label.map(|i| record[i].to_owned()),
        });
    }
    if rows.len() != raw_lines.len() {
        bail!(
            "{name}: {} raw lines but {} structured rows",
            raw_lines.len(),
            rows.len()
        );
    }
    Ok(Dataset {
        name: name.to_owned(),
        raw_lines,
        header_columns,
        rows,
    })
}
