//! `logsight run`: the pipeline over files, stdin or TCP into the local store (and/or stdout).

use crate::config::{process_env, EngineConfig, SinkKind};
use crate::dataflow::decode::DecodeMode;
use crate::metrics::{serve, Metrics};
use crate::pipeline::{run as run_pipeline, Cluster, RunOptions};
use crate::sources::SourceSpec;
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Arguments of `logsight run`. Flags override the environment, which overrides `--config`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Inputs: files, directories, globs (`logs/*.gz`), `-` for stdin, `tcp://HOST:PORT`
    /// (listen; add `?once` to stop after the first connection closes), `kafka:[TOPIC]`
    /// (add `?eof` to stop at the end of every partition), `zmq:[ENDPOINT]` (ZeroMQ SUB).
    #[arg(value_name = "SOURCE")]
    pub sources: Vec<String>,
    /// Configuration file (TOML, see configs/logsight.toml).
    #[arg(long, env = "LOGSIGHT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Header format of raw lines: a built-in name (hdfs, spark, …) or a format string.
    #[arg(long, value_name = "FMT")]
    pub format: Option<String>,
    /// `lines`: raw log lines; `batch`: one logsight batch JSON per line.
    #[arg(long, value_enum)]
    pub decode: Option<DecodeMode>,
    /// Index of raw lines; documents go to `<index>_pipeline` [default: default].
    #[arg(long, value_name = "NAME")]
    pub index: Option<String>,
    /// Local store directory [default: ./logsight-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Sink of pipeline documents; repeat for several [default: local].
    #[arg(long, value_enum)]
    pub sink: Vec<SinkKind>,
    /// Worker threads per process.
    #[arg(short = 'w', long, value_name = "N")]
    pub workers: Option<usize>,
    /// Number of processes of a cluster run.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 1)]
    pub processes: usize,
    /// Index of this process in the cluster (0-based).
    #[arg(short = 'p', long, value_name = "INDEX", default_value_t = 0)]
    pub process: usize,
    /// File with one `host:port` per process (default: localhost:2101, 2102, …).
    #[arg(long, value_name = "FILE")]
    pub hostfile: Option<PathBuf>,
    /// Lines per epoch (the unit of ordering, durability and restart).
    #[arg(long, value_name = "N")]
    pub epoch_lines: Option<u64>,
    /// Lines longer than this are quarantined.
    #[arg(long, value_name = "BYTES")]
    pub max_line_bytes: Option<usize>,
    /// Serve Prometheus `/metrics` and `/health` here (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// Seconds between progress lines on stderr (0: none).
    #[arg(long, value_name = "SECS")]
    pub progress_secs: Option<u64>,
    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
}

impl RunArgs {
    /// The effective configuration: file < environment < flags.
    pub fn config(&self, env: &[(String, String)]) -> anyhow::Result<EngineConfig> {
        let mut c = EngineConfig::load(self.config.as_deref(), env)?;
        let r = &mut c.run;
        if let Some(v) = &self.format {
            r.format = Some(v.clone());
        }
        if let Some(v) = self.decode {
            r.decode = v;
        }
        if let Some(v) = &self.index {
            r.index = v.clone();
        }
        if let Some(v) = &self.data_dir {
            r.data_dir = v.clone();
        }
        if !self.sink.is_empty() {
            r.sinks = self.sink.clone();
        }
        if let Some(v) = self.workers {
            r.workers = v;
        }
        if let Some(v) = self.epoch_lines {
            r.epoch_lines = v;
        }
        if let Some(v) = self.max_line_bytes {
            r.max_line_bytes = v;
        }
        if let Some(v) = &self.metrics_addr {
            r.metrics_addr = v.clone();
        }
        if let Some(v) = self.progress_secs {
            r.progress_secs = v;
        }
        c.validate()?;
        Ok(c)
    }

    fn cluster(&self) -> anyhow::Result<Cluster> {
        let addresses = match &self.hostfile {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading hostfile {}", path.display()))?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect(),
            None => Vec::new(),
        };
        Ok(Cluster {
            processes: self.processes.max(1),
            process: self.process,
            addresses,
        })
    }
}

/// Runs `logsight run`.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.sources.is_empty() {
        anyhow::bail!("no sources: give files, directories, globs, '-' for stdin, tcp://HOST:PORT, kafka: or zmq:");
    }
    let config = args.config(&process_env())?;
    if !config.jobs.run_pipeline {
        // The original's role switch: a process with RUN_PIPELINE=false runs no pipeline. Its
        // job roles are `logsight jobs` (INCIDENT_JOBS, DELETE_ES_JOB).
        eprintln!(
            "logsight run: RUN_PIPELINE=false, so this process runs no pipeline; \
             the job roles run with `logsight jobs`"
        );
        return Ok(());
    }
    let metrics = Arc::new(Metrics::default());
    if !config.run.metrics_addr.is_empty() {
        let addr = offset_port(&config.run.metrics_addr, args.process)?;
        let bound = serve(&addr, Arc::clone(&metrics))
            .with_context(|| format!("metrics endpoint {addr}"))?;
        eprintln!("logsight: metrics on http://{bound}/metrics");
    }
    let sources = args.sources.iter().map(|s| SourceSpec::parse(s)).collect();
    let stop = super::stop_on_signals()?;
    let opts = RunOptions {
        config,
        sources,
        cluster: args.cluster()?,
        stop: Arc::clone(&stop),
    };
    let jobs_config = opts.config.clone();
    let summary = run_pipeline(opts, metrics)?;
    if stop.load(Ordering::Relaxed) {
        eprintln!(
            "logsight: stopped on a signal; everything read was written, and a run with the same \
             data directory resumes where this one stopped"
        );
    }
    if let Some(summary) = summary {
        eprint!("{}", summary.render());
        // The pipeline's own peak, before the in-process job manager adds its state.
        let pipeline_rss_kb = peak_rss_kb();
        let incidents = in_process_jobs(&jobs_config, args.processes, summary.documents)?;
        if let Some(path) = &args.summary_json {
            let mut value = serde_json::to_value(&summary)?;
            value["riskiest_windows"] = serde_json::to_value(summary.riskiest_windows(5))?;
            value["lines_per_sec"] = serde_json::json!(summary.lines_per_sec());
            value["peak_rss_kb"] = serde_json::json!(pipeline_rss_kb);
            value["peak_rss_kb_with_jobs"] = serde_json::json!(peak_rss_kb());
            if let Some(report) = &incidents {
                value["incidents"] = serde_json::json!(report.incidents);
                value["log_aggregates"] = serde_json::json!(report.log_aggs);
            }
            std::fs::write(path, serde_json::to_vec_pretty(&value)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

/// Most new results the in-process job manager takes on at the end of a run: its state grows
/// with the records it holds (about 1 KB each), so bigger runs leave incidents to a separate
/// `logsight jobs` process, which resumes from its own checkpoint.
const IN_PROCESS_MAX_RESULTS: u64 = 1_000_000;

/// The job manager over the documents just written to the local store (`--once` semantics),
/// when `INCIDENT_JOBS` is on, the local store is a sink and the run is a single process:
/// `<index>_incidents` and `<index>_log_agg` appear in the data directory. Prints one line.
fn in_process_jobs(
    config: &crate::config::EngineConfig,
    processes: usize,
    new_results: u64,
) -> anyhow::Result<Option<crate::jobs::DrainReport>> {
    if !config.jobs.incident_jobs || processes > 1 || !config.run.sinks.contains(&SinkKind::Local) {
        return Ok(None);
    }
    if new_results > IN_PROCESS_MAX_RESULTS {
        eprintln!(
            "  incidents: skipped in-process for {new_results} results (over {IN_PROCESS_MAX_RESULTS}); run `logsight jobs --once --data-dir {}`",
            config.run.data_dir.display()
        );
        return Ok(None);
    }
    let jobs = logsight_jobs::JobConfig::from_env().context("job settings")?;
    let report = crate::jobs::run_local_once(&config.run.data_dir, jobs)
        .context("incident jobs over the local store")?;
    eprintln!(
        "  incidents: {} incidents, {} log aggregates in {} (job manager over {} new results; INCIDENT_JOBS=false turns it off)",
        report.incidents.unwrap_or(0),
        report.log_aggs.unwrap_or(0),
        config.run.data_dir.display(),
        report.records
    );
    Ok(Some(report))
}

/// `addr` with its port increased by `by` (one metrics port per process of a cluster).
fn offset_port(addr: &str, by: usize) -> anyhow::Result<String> {
    if by == 0 {
        return Ok(addr.to_owned());
    }
    let (host, port) = addr
        .rsplit_once(':')
        .context("metrics address needs a port")?;
    let port: u16 = port.parse().context("metrics port")?;
    let port = port
        .checked_add(u16::try_from(by)?)
        .context("metrics port out of range")?;
    Ok(format!("{host}:{port}"))
}

/// Peak resident memory of this process (VmHWM) in KiB; 0 where /proc is not available.
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
