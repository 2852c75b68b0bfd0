//! `logsight jobs`: the job manager process: incidents and per-minute log aggregates from the
//! pipeline results (Kafka results topic, `<index>_pipeline` in Elasticsearch, or the local
//! store) into `<index>_incidents` / `<index>_log_agg` (Elasticsearch or the local store), and
//! retention pruning.
//!
//! Roles come from the configuration / environment: `INCIDENT_JOBS` (or `INCIDENTS_JOBS`) runs
//! the incident loop, `DELETE_ES_JOB` prunes every `ES_CLEANUP_JOB_INTERVAL` seconds what is
//! older than `ES_CLEANUP_AGE`. The job settings `FILTER_NORMAL` and `INCIDENT_MAX_SAMPLES`
//! are read from the environment.

use crate::config::{process_env, EngineConfig};
use crate::connectors::env_var;
use crate::connectors::kafka_config::KafkaSettings;
use crate::jobs::es_poll::{EsPollConfig, EsPollSource};
use crate::jobs::es_sink::EsDocumentSink;
use crate::jobs::kafka_results::KafkaResultsSource;
use crate::jobs::local_store::{count_job_documents, LocalStoreSink, LocalStoreSource};
use crate::jobs::{service_config, AnySink, AnySource, SinkChoice};
use crate::sinks::elasticsearch::ElasticsearchConfig;
use anyhow::Context;
use clap::{Args, ValueEnum};
use logsight_jobs::config::parse_age;
use logsight_jobs::service::RoundReport;
use logsight_jobs::{DocumentSink, JobConfig, JobService};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Where pipeline results are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JobSourceKind {
    /// The Kafka results topic (`KAFKA_RESULTS_TOPIC`, written by `logsight run --sink kafka`).
    Kafka,
    /// `<index>_pipeline` indices, polled by `ingest_timestamp`.
    Elasticsearch,
    /// The local store's `*_pipeline-*.ndjson` files in the data directory.
    Local,
}

/// Where incident and aggregate documents go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JobSinkKind {
    /// `<index>_incidents` / `<index>_log_agg` in Elasticsearch (`ELASTICSEARCH_*`).
    Elasticsearch,
    /// The local store in the data directory (`<index>_incidents-<day>-jobs.ndjson`).
    Local,
}

/// Arguments of `logsight jobs`.
#[derive(Debug, Clone, Args)]
pub struct JobsArgs {
    /// Configuration file (TOML); `[jobs]`, `[kafka]`, `[elasticsearch]` and `run.data_dir`
    /// apply.
    #[arg(long, env = "LOGSIGHT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where pipeline results come from.
    #[arg(long, value_enum, default_value_t = JobSourceKind::Local)]
    pub source: JobSourceKind,
    /// Where incident and aggregate documents go.
    #[arg(long, value_enum, default_value_t = JobSinkKind::Local)]
    pub sink: JobSinkKind,
    /// Directory of the job checkpoint (`_jobs/`) and of the local store
    /// [default: the configuration's run.data_dir, ./logsight-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Process what the source holds now, then exit (tests, batch reprocessing).
    #[arg(long)]
    pub once: bool,
    /// Prune once (`ES_CLEANUP_AGE`), then exit; with `--once`, after the drain.
    #[arg(long)]
    pub prune_once: bool,
    /// Results topic, overriding KAFKA_RESULTS_TOPIC (`--source kafka`).
    #[arg(long, value_name = "TOPIC")]
    pub topic: Option<String>,
    /// Only these indices (prefixes, `app` for `app_pipeline`, `app_incidents`, `app_log_agg`)
    /// when polling and pruning Elasticsearch; repeat for several [default: all].
    #[arg(long = "index", value_name = "NAME")]
    pub indices: Vec<String>,
    /// Elasticsearch URL, overriding ELASTICSEARCH_SCHEME/HOST/PORT.
    #[arg(long, value_name = "URL")]
    pub es_url: Option<String>,
    /// Most records per round (each round writes its documents and a checkpoint).
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    pub batch: usize,
    /// Seconds to wait after a round that found nothing, overriding JOB_INTERVAL.
    #[arg(long, value_name = "SECS")]
    pub interval: Option<u64>,
}

/// What `logsight jobs` did, for the summary.
#[derive(Debug, Default)]
struct Totals {
    rounds: u64,
    report: RoundReport,
    pruned: Vec<(String, u64)>,
}

/// Runs `logsight jobs`.
pub fn run(args: JobsArgs) -> anyhow::Result<()> {
    let env = process_env();
    let config = EngineConfig::load(args.config.as_deref(), &env)?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| config.run.data_dir.clone());
    let mut jobs = JobConfig::from_env().context("job settings")?;
    jobs.retention = parse_age(&config.jobs.es_cleanup_age).context("ES_CLEANUP_AGE")?;
    let incident = config.jobs.incident_jobs;
    let delete = config.jobs.delete_es_job;
    if !incident && !delete {
        eprintln!(
            "logsight jobs: INCIDENT_JOBS and DELETE_ES_JOB are both false: no job to run, exiting"
        );
        return Ok(());
    }
    let interval = Duration::from_secs(args.interval.unwrap_or(config.jobs.job_interval));
    let prune_every = Duration::from_secs(config.jobs.es_cleanup_job_interval.max(1));
    let mut sink = open_sink(&args, &config, &data_dir)?;
    let started = Instant::now();

    // Pruning only: no incident state is kept, so the sink alone prunes.
    if !incident {
        eprintln!("logsight jobs: INCIDENT_JOBS is false: pruning only");
        let Some(age) = jobs.retention else {
            eprintln!("logsight jobs: ES_CLEANUP_AGE is off: nothing to prune");
            return Ok(());
        };
        let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        loop {
            let horizon = now_ms().saturating_sub(age_ms);
            let pruned = sink.prune(horizon).context("pruning")?;
            report_pruned(&pruned, horizon);
            if args.prune_once || args.once {
                return Ok(());
            }
            std::thread::sleep(prune_every);
        }
    }
    if args.prune_once && !delete {
        eprintln!("logsight jobs: DELETE_ES_JOB is false: not pruning");
    }

    let source = open_source(&args, &config, &data_dir)?;
    let source_name = format!("{:?}", args.source).to_ascii_lowercase();
    let sink_name = format!("{:?}", args.sink).to_ascii_lowercase();
    let service_config = service_config(&data_dir, jobs, args.batch.max(1), interval)?;
    let mut service =
        JobService::start(service_config, source, sink).context("starting the job manager")?;
    eprintln!(
        "logsight jobs: incidents from {source_name} into {sink_name}{}, checkpoint in {}",
        if delete && !args.once {
            ", pruning every ES_CLEANUP_JOB_INTERVAL"
        } else {
            ""
        },
        crate::jobs::state_dir(&data_dir).display()
    );
    let stop = super::stop_on_signals()?;
    let mut totals = Totals::default();
    let mut last_progress = Instant::now();
    let mut last_prune: Option<Instant> = None;
    loop {
        if args.prune_once && !args.once {
            break;
        }
        // Between rounds: every round's results and checkpoint are complete.
        if stop.load(Ordering::Relaxed) {
            eprintln!(
                "logsight jobs: stopped on a signal; a restart continues from the checkpoint"
            );
            break;
        }
        if delete && !args.once && last_prune.is_none_or(|t| t.elapsed() >= prune_every) {
            totals.pruned.extend(prune_service(&mut service)?);
            last_prune = Some(Instant::now());
        }
        let round = service.round().context("job round")?;
        totals.rounds += 1;
        totals.report.records += round.records;
        totals.report.duplicates += round.duplicates;
        totals.report.outputs += round.outputs;
        if last_progress.elapsed() >= Duration::from_secs(5) {
            last_progress = Instant::now();
            eprintln!(
                "logsight jobs: {} records, {} duplicates, {} documents written, {} live records",
                totals.report.records,
                totals.report.duplicates,
                totals.report.outputs,
                service.manager().live_records()
            );
        }
        if round.records == 0 {
            if args.once {
                break;
            }
            sleep_unless_stopped(interval, &stop);
        }
    }
    if args.prune_once && delete {
        totals.pruned.extend(prune_service(&mut service)?);
    }
    eprintln!(
        "logsight jobs: {} records from {source_name} ({} duplicates) in {:.2}s, {} rounds; {} documents changed in {sink_name}{}",
        totals.report.records,
        totals.report.duplicates,
        started.elapsed().as_secs_f64(),
        totals.rounds,
        totals.report.outputs,
        match args.sink {
            JobSinkKind::Local => {
                let (incidents, aggs) = count_job_documents(&data_dir)?;
                format!("; the local store holds {incidents} incidents and {aggs} log aggregates")
            }
            JobSinkKind::Elasticsearch => String::new(),
        }
    );
    Ok(())
}

/// Sleeps for `total`, waking early once `stop` is set (idle waits can be long).
fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) {
    let until = Instant::now() + total;
    while !stop.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// Retention through the job manager: windows older than the horizon are retracted (their
/// incident and aggregate documents deleted, and the checkpoint updated, so a restart does not
/// bring them back), then the sink prunes what else it stores. Reports both per index.
fn prune_service(
    service: &mut JobService<AnySource, AnySink>,
) -> anyhow::Result<Vec<(String, u64)>> {
    let now = now_ms();
    let before = service.sink().deletes_by_index.clone();
    let pruned = service.prune(now).context("pruning")?;
    let mut total: std::collections::BTreeMap<String, u64> = pruned.into_iter().collect();
    for (index, n) in &service.sink().deletes_by_index {
        let retracted = n - before.get(index).copied().unwrap_or(0);
        if retracted > 0 {
            *total.entry(index.clone()).or_default() += retracted;
        }
    }
    let total: Vec<(String, u64)> = total.into_iter().collect();
    let horizon = service.manager().horizon_ms().unwrap_or(now);
    report_pruned(&total, horizon);
    Ok(total)
}

fn report_pruned(pruned: &[(String, u64)], horizon_ms: i64) {
    let horizon = chrono::DateTime::from_timestamp_millis(horizon_ms)
        .map_or_else(|| horizon_ms.to_string(), |t| t.to_rfc3339());
    if pruned.is_empty() {
        eprintln!("logsight jobs: pruned nothing older than {horizon}");
    }
    for (index, n) in pruned {
        eprintln!("logsight jobs: pruned {n} documents older than {horizon} from {index}");
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn es_config(args: &JobsArgs, config: &EngineConfig) -> anyhow::Result<ElasticsearchConfig> {
    let mut map = config.elasticsearch.clone();
    if let Some(url) = &args.es_url {
        map.insert("url".to_owned(), url.clone());
    }
    Ok(ElasticsearchConfig::from_settings(&map, env_var)?)
}

fn open_sink(
    args: &JobsArgs,
    config: &EngineConfig,
    data_dir: &std::path::Path,
) -> anyhow::Result<AnySink> {
    let choice = match args.sink {
        JobSinkKind::Elasticsearch => {
            let mut sink =
                EsDocumentSink::open(es_config(args, config)?, args.once || args.prune_once)?;
            sink.restrict_to(&args.indices);
            SinkChoice::Elasticsearch(Box::new(sink))
        }
        JobSinkKind::Local => SinkChoice::Local(LocalStoreSink::open(data_dir)?),
    };
    Ok(AnySink::new(choice))
}

fn open_source(
    args: &JobsArgs,
    config: &EngineConfig,
    data_dir: &std::path::Path,
) -> anyhow::Result<AnySource> {
    Ok(match args.source {
        JobSourceKind::Kafka => {
            let mut settings = KafkaSettings::from_map(&config.kafka);
            if let Some(topic) = &args.topic {
                settings.results_topic = topic.clone();
            }
            let wait = if args.once {
                Duration::from_secs(10)
            } else {
                Duration::from_secs(1)
            };
            AnySource::Kafka(Box::new(KafkaResultsSource::open(&settings, wait)?))
        }
        JobSourceKind::Elasticsearch => {
            AnySource::Elasticsearch(Box::new(EsPollSource::open(EsPollConfig {
                es: es_config(args, config)?,
                parallel: config.jobs.parallel_jobs.max(1),
                settle: if args.once {
                    Duration::ZERO
                } else {
                    Duration::from_secs(2)
                },
                refresh: args.once,
                only: args.indices.clone(),
            })?))
        }
        JobSourceKind::Local => AnySource::Local(LocalStoreSource::new(data_dir)),
    })
}
