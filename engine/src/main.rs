//! The `logsight` binary: a thin clap front end over `logsight_engine::cli`.

use clap::{Parser, Subcommand};
use logsight_engine::cli;

/// mimalloc: the pipeline allocates and frees small strings on one thread and frees them on
/// another (exchanges); glibc's allocator spent a fifth of the run time on that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXAMPLES: &str = "\
Examples:
  logsight run app.log                         analyse a file into ./logsight-data, print a summary
  logsight run --format hdfs -w 2 logs/        two workers over every file below logs/
  logsight run --decode batch tcp://0.0.0.0:9000   batch JSON lines from TCP clients
  cat app.log | logsight run --sink stdout -   NDJSON documents on stdout
  logsight run -n 2 -p 0 --hostfile hosts big.log   process 0 of a 2-process cluster
  logsight jobs --source kafka --sink elasticsearch   the job manager (incidents, pruning)
  logsight config check --config configs/logsight.toml";

/// Log analytics: template mining, anomaly and risk scoring, as a timely dataflow.
#[derive(Debug, Parser)]
#[command(name = "logsight", version, after_help = EXAMPLES)]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `logsight_engine=debug`.
    #[arg(long, global = true, env = "LOGSIGHT_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the pipeline over files, stdin or TCP into the local store (default) or stdout.
    #[command(after_help = "\
Examples:
  logsight run HDFS_2k.log --format hdfs
  logsight run 'logs/*.log.gz' -w 2 --data-dir /var/lib/logsight
  logsight run - --decode batch --sink stdout < batches.ndjson
  logsight run tcp://127.0.0.1:9000 --metrics-addr 127.0.0.1:9464
  logsight run big.log -n 2 -p 1 --hostfile hosts.txt   (run once per process)

Ctrl-C or SIGTERM stops gracefully: reading stops (stdin, TCP and ZeroMQ first hand over what
they buffered), the epochs already read are written and committed, and a later run with the
same data directory resumes there. A second signal exits at once. In a cluster, signal every
process: each one finishes only when the whole dataflow has.")]
    Run(cli::run::RunArgs),
    /// Analyse files single-threaded and print the results.
    Parse(cli::parse::ParseArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(cli::config_cmd::ConfigCommand),
    /// Local store tools: `store load` loads it into Elasticsearch.
    Store(cli::store::StoreArgs),
    /// The job manager: incidents and log aggregates from pipeline results, and pruning.
    #[command(after_help = "\
Roles (environment or [jobs]): INCIDENT_JOBS (or INCIDENTS_JOBS) computes incidents and log
aggregates; DELETE_ES_JOB prunes documents older than ES_CLEANUP_AGE (default now-1y) every
ES_CLEANUP_JOB_INTERVAL seconds. Also FILTER_NORMAL, INCIDENT_MAX_SAMPLES, JOB_INTERVAL,
PARALLEL_JOBS, KAFKA_*, ELASTICSEARCH_*. Ctrl-C or SIGTERM stops between rounds (a second
signal exits at once); a restart continues from the checkpoint.

Examples:
  logsight jobs --once                              local store in, local store out, then exit
  logsight jobs --source kafka --sink elasticsearch the deployment: results topic -> Elasticsearch
  logsight jobs --source elasticsearch --sink elasticsearch   poll <index>_pipeline by ingest time
  DELETE_ES_JOB=true ES_CLEANUP_AGE=now-30d logsight jobs --sink elasticsearch --prune-once
  INCIDENT_JOBS=false logsight jobs --sink elasticsearch      pruning only, every hour")]
    Jobs(cli::jobs::JobsArgs),
}

/// Errors end the process with one line, `error: <what>: <why>...`, and exit code 1: the
/// context chain says what failed without a backtrace or debug dump.
fn main() -> std::process::ExitCode {
    logsight_engine::allocator::keep_freed_pages();
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Run(args) => cli::run::run(args),
        Command::Parse(args) => cli::parse::run(args),
        Command::Config(cmd) => cli::config_cmd::run(cmd),
        Command::Store(args) => cli::store::run(args),
        Command::Jobs(args) => cli::jobs::run(args),
    }
}
