//! Benchmark of the job manager: loads a history of result records (default 1M over 1,000
//! minutes and 10 tag sets), then times one new minute of records arriving (incremental
//! update) against recomputing everything from scratch, both with the plain batch function and
//! with a fresh differential run, and prints peak memory.
//!
//! Usage: `bench_jobs [records] [minutes] [tag_sets] [new_minutes]`
//! (defaults 1000000 1000 10 5; the first new minute is "the" update, the others show spread).

use clap::Parser;
use logsight_jobs::record::Text;
use logsight_jobs::{apply_outputs, recompute_batch, DocStore, JobConfig, JobManager, JobRecord};
use operators::level::Level;
use operators::model::Tags;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The allocator the `logsight` binary ships with, so numbers match production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use operators::rng::XorShift64 as Rng;

const BASE_MS: i64 = 1_700_000_040_000; // a minute boundary in Nov 2023

/// The shared text of the generated records (an upstream that already shares its strings;
/// the manager interns them anyway).
struct Vocabulary {
    index: Text,
    tag_sets: Vec<Arc<Tags>>,
    templates: Vec<Text>,
}

/// `per_window` records of every tag set in minute `minute`, doc ids from `*next_id`.
fn minute_records(
    rng: &mut Rng,
    next_id: &mut u64,
    minute: i64,
    vocabulary: &Vocabulary,
    per_window: u64,
) -> Vec<JobRecord> {
    const LEVELS: [Level; 4] = [Level::Info, Level::Info, Level::Warning, Level::Error];
    const RISKS: [u32; 8] = [0, 0, 0, 0, 1, 25, 60, 80];
    let mut out = Vec::with_capacity(vocabulary.tag_sets.len() * per_window as usize);
    for tags in &vocabulary.tag_sets {
        for _ in 0..per_window {
            let r = rng.next_u64();
            let level = LEVELS[(r % 4) as usize];
            let template = ((r >> 8) % vocabulary.templates.len() as u64) as usize;
            let id = *next_id;
            *next_id += 1;
            let timestamp_ms = BASE_MS + minute * 60_000 + ((r >> 16) % 60_000) as i64;
            out.push(JobRecord {
                index: Arc::clone(&vocabulary.index),
                tags: Arc::clone(tags),
                minute_ms: operators::incident::minute_window(timestamp_ms),
                timestamp_ms,
                risk_score: RISKS[((r >> 32) % 8) as usize],
                template_id: Arc::clone(&vocabulary.templates[template]),
                added_state: u8::from((r >> 40).is_multiple_of(500)),
                level,
                level_fault: level.is_fault(),
                prediction: u8::from((r >> 48).is_multiple_of(20)),
                message: format!(
                    "request {id} served by worker {} in {} ms",
                    r % 16,
                    (r >> 20) % 900
                )
                .into(),
                doc_id: format!("doc-{id:010}").into(),
            });
        }
    }
    out
}

/// Peak and current resident set size from /proc/self/status, in MiB.
fn memory() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or_else(|| "?".to_owned(), |kb| format!("{} MiB", kb / 1024))
    };
    format!(
        "peak RSS (VmHWM) {}, current RSS {}",
        field("VmHWM:"),
        field("VmRSS:")
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Measures the job manager's incremental update against recomputing from scratch.
///
/// Times new minutes of records arriving on top of a generated history (and pruning the oldest
/// minute) against recomputing everything with the batch function and with a fresh differential
/// run, and prints peak memory.
#[derive(Parser)]
#[command(after_help = "\
Examples:
  scripts/bench.sh jobs
  cargo run --release -p logsight-jobs --bin bench_jobs -- 200000 100 10 5

The first new minute is \"the\" update; the others show the spread.")]
struct Args {
    /// Records of the history (spread evenly over the minutes and tag sets).
    #[arg(default_value_t = 1_000_000)]
    records: u64,
    /// Minutes of the history (at least 1).
    #[arg(default_value_t = 1_000)]
    minutes: u64,
    /// Tag sets (services) of the records (at least 1).
    #[arg(default_value_t = 10)]
    tag_sets: u64,
    /// New minutes arriving after the history, one update each (at least 1).
    #[arg(default_value_t = 5)]
    new_minutes: u64,
}

fn main() {
    let args = Args::parse();
    let records = args.records;
    let minutes = args.minutes.max(1);
    let tag_count = args.tag_sets.max(1);
    let new_minutes = args.new_minutes.max(1);
    let per_window = (records / (minutes * tag_count)).max(1);
    let vocabulary = Vocabulary {
        index: "bench".into(),
        tag_sets: (0..tag_count)
            .map(|t| {
                let mut tags = Tags::new();
                tags.insert("service".to_owned(), format!("svc-{t}"));
                tags.insert("env".to_owned(), "prod".to_owned());
                Arc::new(tags)
            })
            .collect(),
        templates: (0..40u64)
            .map(|t| format!("{:016x}", t * 0x9e37_79b9).into())
            .collect(),
    };
    let config = JobConfig {
        retention: None,
        ..JobConfig::default()
    };
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let mut next_id = 0;

    println!(
        "history: {} records = {minutes} minutes x {tag_count} tag sets x {per_window} per window",
        minutes * tag_count * per_window
    );
    let history: Vec<Vec<JobRecord>> = (0..minutes as i64)
        .map(|m| minute_records(&mut rng, &mut next_id, m, &vocabulary, per_window))
        .collect();

    println!("generated: {}", memory());

    // Load the history one minute per batch, as a live stream would arrive.
    let mut jobs = JobManager::new(config.clone());
    let mut sink = DocStore::new();
    let start = Instant::now();
    for batch in &history {
        jobs.ingest(batch.iter().cloned());
    }
    let outputs = jobs.flush();
    let load = start.elapsed();
    apply_outputs(&mut sink, &outputs);
    println!(
        "load: {:.0} ms ({} batches, {:.0} records/s), {} documents; {}",
        ms(load),
        history.len(),
        jobs.live_records() as f64 / load.as_secs_f64(),
        outputs.len(),
        memory()
    );

    // New minutes arrive: the incremental updates.
    let mut all: Vec<JobRecord> = history.into_iter().flatten().collect();
    let mut times = Vec::new();
    for extra in 0..new_minutes as i64 {
        let batch = minute_records(
            &mut rng,
            &mut next_id,
            minutes as i64 + extra,
            &vocabulary,
            per_window,
        );
        all.extend(batch.iter().cloned());
        let start = Instant::now();
        jobs.ingest(batch);
        let outputs = jobs.flush();
        let took = start.elapsed();
        apply_outputs(&mut sink, &outputs);
        println!(
            "incremental: new minute {} ({} records) -> {} documents in {:.2} ms",
            extra + 1,
            tag_count * per_window,
            outputs.len(),
            ms(took)
        );
        times.push(took);
    }
    // Retention: the oldest minute falls out of the horizon.
    let start = Instant::now();
    let pruned = jobs.retract_before(BASE_MS + 60_000);
    let outputs = jobs.flush();
    let took = start.elapsed();
    apply_outputs(&mut sink, &outputs);
    all.retain(|r| r.minute_ms >= BASE_MS + 60_000);
    println!(
        "prune: oldest minute ({pruned} records) -> {} deletes in {:.2} ms",
        outputs.len(),
        ms(took)
    );

    let first = times[0];
    let mut sorted = times.clone();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    println!("after incremental updates: {}", memory());

    // From scratch: the plain batch function over every record.
    let start = Instant::now();
    let batch_docs = recompute_batch(&all, &config);
    let full_batch = start.elapsed();
    println!(
        "full recomputation, batch function: {:.0} ms ({} records, {} documents)",
        ms(full_batch),
        all.len(),
        batch_docs.len()
    );
    println!(
        "incremental output matches batch recomputation: {}",
        sink == batch_docs
    );
    drop(batch_docs);

    // From scratch: a fresh differential run over every record in one batch.
    let start = Instant::now();
    let mut fresh = JobManager::new(config.clone());
    fresh.ingest(all.iter().cloned());
    let fresh_outputs = fresh.flush();
    let full_dataflow = start.elapsed();
    println!(
        "full recomputation, fresh differential run: {:.0} ms ({} documents)",
        ms(full_dataflow),
        fresh_outputs.len()
    );
    drop(fresh);

    let ratio = |full: Duration, inc: Duration| full.as_secs_f64() / inc.as_secs_f64().max(1e-9);
    println!(
        "incremental (first new minute) {:.2} ms, median of {} {:.2} ms",
        ms(first),
        times.len(),
        ms(median)
    );
    println!(
        "ratio vs batch function: {:.0}x (first), {:.0}x (median)",
        ratio(full_batch, first),
        ratio(full_batch, median)
    );
    println!(
        "ratio vs fresh differential run: {:.0}x (first), {:.0}x (median)",
        ratio(full_dataflow, first),
        ratio(full_dataflow, median)
    );
    println!("end: {}", memory());
}
