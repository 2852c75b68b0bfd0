//! Parsing accuracy on the Loghub 2k samples: GA, PA, FGA and FTA per dataset and on average,
//! for raw lines with the dataset's header format and for the `Content` column fed directly.
//! One global default configuration, no per-dataset tuning.
//!
//! Run: `cargo run --release -p logsight-benches --bin accuracy`

use anyhow::{bail, Result};
use clap::Parser;
use logsight_benches::{load, Dataset, DATASETS};
use operators::analyze::{AnalyticsConfig, LineAnalyzer};
use operators::format::FormatSet;
use operators::model::LogRecord;
use operators::scoring::{evaluate, Accuracy};

/// The allocator the `logsight` binary ships with, so numbers match production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Measures parsing accuracy (GA, PA, FGA, FTA) on the eight Loghub 2k samples.
///
/// Scores each dataset from raw lines with its header format and from the Content column fed
/// directly, with one default configuration for all. Given a DATASET, lists instead the
/// ground-truth groups and templates we get wrong there.
#[derive(Parser)]
#[command(after_help = "\
Examples:
  scripts/bench.sh accuracy
  cargo run --release -p logsight-benches --bin accuracy
  cargo run --release -p logsight-benches --bin accuracy -- BGL

The samples are read from $LOGHUB_2K_DIR, else ../shared/datasets/loghub-2k.")]
struct Args {
    /// A Loghub dataset (HDFS, Hadoop, Spark, Zookeeper, BGL, HPC, Windows, Apache) whose
    /// mistakes to list, instead of scoring all eight.
    dataset: Option<String>,
}

fn main() -> std::process::ExitCode {
    logsight_benches::run_cli(bench)
}

fn bench(args: Args) -> Result<()> {
    let config = AnalyticsConfig::default();
    if let Some(name) = args.dataset {
        return explain(&config, &load(&name)?);
    }
    println!(
        "{:<10} {:>6} {:>6} {:>6} {:>6} | {:>6} {:>6} {:>6} {:>6} | {:>5} {:>5}",
        "dataset", "GA", "PA", "FGA", "FTA", "cGA", "cPA", "cFGA", "cFTA", "truth", "ours"
    );
    let mut raw_all = Vec::new();
    let mut content_all = Vec::new();
    for name in DATASETS {
        let data = load(name)?;
        let raw = score_raw(&config, &data)?;
        let content = score_content(&config, &data)?;
        println!(
            "{:<10} {:>6.3} {:>6.3} {:>6.3} {:>6.3} | {:>6.3} {:>6.3} {:>6.3} {:>6.3} | {:>5} {:>5}",
            name,
            raw.ga,
            raw.pa,
            raw.fga,
            raw.fta,
            content.ga,
            content.pa,
            content.fga,
            content.fta,
            raw.truth_groups,
            raw.predicted_groups
        );
        raw_all.push(raw);
        content_all.push(content);
    }
    let (r, c) = (mean(&raw_all), mean(&content_all));
    println!(
        "{:<10} {:>6.3} {:>6.3} {:>6.3} {:>6.3} | {:>6.3} {:>6.3} {:>6.3} {:>6.3}",
        "average", r.0, r.1, r.2, r.3, c.0, c.1, c.2, c.3
    );
    println!("(left: raw lines with the header format; right, c*: Content column fed directly)");
    Ok(())
}

/// `accuracy DATASET`: lists the ground-truth groups we got wrong, with our templates for them.
fn explain(config: &AnalyticsConfig, data: &Dataset) -> Result<()> {
    let mut analyzer =
        LineAnalyzer::new(config, Some(FormatSet::resolve(&data.name.to_lowercase())?))?;
    let ours: Vec<_> = data
        .raw_lines
        .iter()
        .map(|l| analyzer.analyze_line("bench", l).result)
        .collect();
    let mut by_truth: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    let mut by_ours: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (i, row) in data.rows.iter().enumerate() {
        by_truth.entry(&row.template).or_default().push(i);
        by_ours.entry(&ours[i].template_id).or_default().push(i);
    }
    for (truth, lines) in &by_truth {
        let ids: std::collections::BTreeSet<&str> =
            lines.iter().map(|&i| &*ours[i].template_id).collect();
        let exact = ids.len() == 1 && ids.iter().all(|id| by_ours[id] == *lines);
        if exact {
            continue;
        }
        println!("GROUP TRUTH ({} lines) {truth}", lines.len());
        for id in ids {
            let n = by_ours[id].len();
            let sample = by_ours[id][0];
            println!("   ours ({n} lines) {}", ours[sample].template);
        }
    }
    let mut wrong: std::collections::BTreeMap<(String, String), usize> = Default::default();
    for (row, ours) in data.rows.iter().zip(&ours) {
        let (t, o) = (
            operators::scoring::canonical_template(&row.template),
            operators::scoring::canonical_template(&ours.template),
        );
        if t != o {
            *wrong.entry((t, o)).or_default() += 1;
        }
    }
    for ((t, o), n) in wrong {
        println!("TEMPLATE {n:>4} truth {t}\n          ours  {o}");
    }
    Ok(())
}

/// Raw lines through the dataset's named header format (configs/formats.toml), whose fields
/// must be exactly the CSV's header columns.
fn score_raw(config: &AnalyticsConfig, data: &Dataset) -> Result<Accuracy> {
    let formats = FormatSet::resolve(&data.name.to_lowercase())?;
    let fields: Vec<String> = formats
        .formats()
        .first()
        .map(|f| f.field_names().map(str::to_owned).collect())
        .unwrap_or_default();
    let mut expected = data.header_columns.clone();
    expected.push("Content".to_owned());
    if fields != expected {
        bail!(
            "{}: format fields {:?} differ from the CSV columns {:?}",
            data.name,
            fields,
            expected
        );
    }
    let mut analyzer = LineAnalyzer::new(config, Some(formats))?;
    let predicted = data
        .raw_lines
        .iter()
        .map(|line| {
            let r = analyzer.analyze_line("bench", line).result;
            (r.template_id.to_string(), r.template.to_string())
        })
        .collect::<Vec<_>>();
    Ok(evaluate(&truth(data), &predicted))
}

fn score_content(config: &AnalyticsConfig, data: &Dataset) -> Result<Accuracy> {
    let mut analyzer = LineAnalyzer::new(config, None)?;
    let predicted = data
        .rows
        .iter()
        .map(|row| {
            let r = analyzer
                .analyze_record("bench", LogRecord::from_message(row.content.clone()))
                .result;
            (r.template_id.to_string(), r.template.to_string())
        })
        .collect::<Vec<_>>();
    Ok(evaluate(&truth(data), &predicted))
}

fn truth(data: &Dataset) -> Vec<String> {
    data.rows.iter().map(|r| r.template.clone()).collect()
}

fn mean(all: &[Accuracy]) -> (f64, f64, f64, f64) {
    let n = all.len().max(1) as f64;
    let sum = |f: fn(&Accuracy) -> f64| all.iter().map(f).sum::<f64>() / n;
    (sum(|a| a.ga), sum(|a| a.pa), sum(|a| a.fga), sum(|a| a.fta))
}
