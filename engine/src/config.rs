//! Configuration: a TOML file (see `configs/logsight.toml`), overridden by environment variables
//! with logsight's original names, overridden by command-line flags.
//!
//! Environment variables: `PREDICTION_THRESHOLD` (→ `analytics.anomaly.threshold`),
//! `RISK_SCORE_*` (→ `analytics.risk`), `RUN_PIPELINE`, `INCIDENT_JOBS` / `INCIDENTS_JOBS`,
//! `DELETE_ES_JOB`, `ES_CLEANUP_AGE`, `JOB_INTERVAL`, `ES_CLEANUP_JOB_INTERVAL`, `PARALLEL_JOBS`
//! (→ `[jobs]`), and every `KAFKA_*` / `ELASTICSEARCH_*`
//! variable (→ `[kafka]` / `[elasticsearch]`, key lower-cased without the prefix; parsed and
//! shown now, used by the connectors).

use crate::dataflow::decode::DecodeMode;
use crate::sinks::local_store::LocalStoreConfig;
use operators::analyze::{AnalyticsConfig, Preparer};
use operators::format::FormatSet;
use operators::risk::{RiskTable, ENV_NAMES};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("{name}={value:?}: {reason}")]
    Env {
        name: String,
        value: String,
        reason: String,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Which sinks pipeline documents go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// The local store in the data directory (NDJSON, checkpointed).
    Local,
    /// NDJSON on standard output.
    Stdout,
    /// Elasticsearch `_bulk` (`ELASTICSEARCH_*`, see `sinks::elasticsearch`).
    Elasticsearch,
    /// The Kafka results topic (`KAFKA_*`, see `sinks::kafka`).
    Kafka,
}

/// `[run]`: the pipeline run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Directory of the local store, quarantine files and checkpoints.
    pub data_dir: PathBuf,
    /// Index of raw lines (batches name their own); documents go to `<index>_pipeline`.
    pub index: String,
    /// `lines` (raw log lines) or `batch` (one logsight batch JSON per line).
    pub decode: DecodeMode,
    /// Header format of raw lines: a built-in name (`hdfs`, `spark`, …) or a format string.
    pub format: Option<String>,
    /// Sinks of pipeline documents.
    pub sinks: Vec<SinkKind>,
    /// Worker threads per process.
    pub workers: usize,
    /// Lines per epoch. An epoch is the unit of ordering, durability and restart.
    pub epoch_lines: u64,
    /// Streams (stdin, TCP) also close an epoch after this many milliseconds.
    pub epoch_ms: u64,
    /// Lines per chunk handed to the dataflow.
    pub chunk_lines: usize,
    /// Backpressure: epochs read ahead of the last durable one.
    pub max_epochs_in_flight: u64,
    /// Longer lines are quarantined (`line_too_long`).
    pub max_line_bytes: usize,
    /// Address of the `/metrics` and `/health` endpoint (empty: off). Process `p` of a
    /// cluster listens on port + p.
    pub metrics_addr: String,
    /// Seconds between progress lines on stderr (0: none).
    pub progress_secs: u64,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            data_dir: PathBuf::from("./logsight-data"),
            index: "default".to_owned(),
            decode: DecodeMode::Lines,
            format: None,
            sinks: vec![SinkKind::Local],
            workers: 1,
            epoch_lines: 20_000,
            epoch_ms: 1_000,
            chunk_lines: 1_024,
            max_epochs_in_flight: 4,
            max_line_bytes: 1 << 20,
            metrics_addr: String::new(),
            progress_secs: 5,
        }
    }
}

/// `[jobs]`: the job manager (incidents, aggregates, cleanup).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// `RUN_PIPELINE`: run the log pipeline.
    pub run_pipeline: bool,
    /// `INCIDENT_JOBS` / `INCIDENTS_JOBS`: compute incidents.
    pub incident_jobs: bool,
    /// `DELETE_ES_JOB`: delete old documents.
    pub delete_es_job: bool,
    /// `ES_CLEANUP_AGE`: age beyond which documents are deleted (Elasticsearch date math).
    pub es_cleanup_age: String,
    /// `JOB_INTERVAL`: seconds between polls of a source that had nothing new
    /// (`logsight jobs`).
    pub job_interval: u64,
    /// `ES_CLEANUP_JOB_INTERVAL`: seconds between two prunings (`logsight jobs`).
    pub es_cleanup_job_interval: u64,
    /// `PARALLEL_JOBS`: most `*_pipeline` indices read per round by the Elasticsearch
    /// polling source.
    pub parallel_jobs: usize,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            run_pipeline: true,
            incident_jobs: true,
            delete_es_job: true,
            es_cleanup_age: "now-1y".to_owned(),
            job_interval: 60,
            es_cleanup_job_interval: 3600,
            parallel_jobs: 4,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    pub run: RunConfig,
    pub store: LocalStoreConfig,
    pub jobs: JobsConfig,
    /// `KAFKA_*` settings (for the connectors).
    pub kafka: BTreeMap<String, String>,
    /// `ELASTICSEARCH_*` settings (for the connectors).
    pub elasticsearch: BTreeMap<String, String>,
    pub analytics: AnalyticsConfig,
}

impl EngineConfig {
    /// The file at `path` (defaults when `None`), then the environment given by `lookup`.
    pub fn load(
        path: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<EngineConfig, ConfigError> {
        let mut config = match path {
            Some(p) => Self::from_file(p)?,
            None => EngineConfig::default(),
        };
        config.apply_env(env)?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<EngineConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    /// Applies the environment variables (name, value pairs) that logsight knows.
    pub fn apply_env(&mut self, env: &[(String, String)]) -> Result<(), ConfigError> {
        let get = |name: &str| {
            env.iter()
                .find(|(k, v)| k == name && !v.trim().is_empty())
                .map(|(_, v)| v.clone())
        };
        if let Some(v) = get("PREDICTION_THRESHOLD") {
            let t = v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|t| (0.0..=1.0).contains(t));
            self.analytics.anomaly.threshold =
                t.ok_or_else(|| env_err("PREDICTION_THRESHOLD", &v, "a number in 0..=1"))?;
        }
        self.apply_risk_env(&get)?;
        let flag = |name: &str| -> Result<Option<bool>, ConfigError> {
            get(name)
                .map(|v| parse_bool(&v).ok_or_else(|| env_err(name, &v, "true or false")))
                .transpose()
        };
        if let Some(b) = flag("RUN_PIPELINE")? {
            self.jobs.run_pipeline = b;
        }
        for name in ["INCIDENT_JOBS", "INCIDENTS_JOBS"] {
            if let Some(b) = flag(name)? {
                self.jobs.incident_jobs = b;
            }
        }
        if let Some(b) = flag("DELETE_ES_JOB")? {
            self.jobs.delete_es_job = b;
        }
        if let Some(v) = get("ES_CLEANUP_AGE") {
            self.jobs.es_cleanup_age = v.trim().to_owned();
        }
        let number = |name: &str, min: u64| -> Result<Option<u64>, ConfigError> {
            get(name)
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .ok()
                        .filter(|n| *n >= min)
                        .ok_or_else(|| env_err(name, &v, &format!("a whole number >= {min}")))
                })
                .transpose()
        };
        if let Some(n) = number("JOB_INTERVAL", 0)? {
            self.jobs.job_interval = n;
        }
        if let Some(n) = number("ES_CLEANUP_JOB_INTERVAL", 1)? {
            self.jobs.es_cleanup_job_interval = n;
        }
        if let Some(n) = number("PARALLEL_JOBS", 1)? {
            self.jobs.parallel_jobs = usize::try_from(n).unwrap_or(usize::MAX);
        }
        for (k, v) in env {
            if let Some(key) = k.strip_prefix("KAFKA_") {
                self.kafka.insert(key.to_ascii_lowercase(), v.clone());
            } else if let Some(key) = k.strip_prefix("ELASTICSEARCH_") {
                self.elasticsearch
                    .insert(key.to_ascii_lowercase(), v.clone());
            }
        }
        Ok(())
    }

    /// `RISK_SCORE_*` over the file's table: unset cells keep the file's values.
    fn apply_risk_env(&mut self, get: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if !ENV_NAMES.iter().any(|n| get(n).is_some()) {
            return Ok(());
        }
        let current = self.analytics.risk;
        let cells: Vec<u32> = current
            .added
            .iter()
            .chain(&current.recurring)
            .copied()
            .collect();
        let table = RiskTable::from_lookup(|name| {
            get(name).or_else(|| {
                let i = ENV_NAMES.iter().position(|n| *n == name)?;
                cells.get(i).map(u32::to_string)
            })
        })
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        self.analytics.risk = table;
        Ok(())
    }

    /// Checks what cannot be checked by parsing: masks compile, the format resolves, numbers
    /// are in range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        Preparer::new(&self.analytics)
            .map_err(|e| ConfigError::Invalid(format!("analytics.mask: {e}")))?;
        if let Some(f) = &self.run.format {
            FormatSet::resolve(f).map_err(|e| ConfigError::Invalid(format!("run.format: {e}")))?;
        }
        let run = &self.run;
        let positive = [
            ("run.workers", run.workers as u64),
            ("run.epoch_lines", run.epoch_lines),
            ("run.chunk_lines", run.chunk_lines as u64),
            ("run.max_epochs_in_flight", run.max_epochs_in_flight),
            ("run.max_line_bytes", run.max_line_bytes as u64),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
            }
        }
        if !crate::sinks::valid_index(&run.index) {
            return Err(ConfigError::Invalid(format!(
                "run.index {:?}: use lower-case letters, digits, '_', '-', '.'",
                run.index
            )));
        }
        if run.sinks.is_empty() {
            return Err(ConfigError::Invalid("run.sinks is empty".into()));
        }
        let t = self.analytics.anomaly.threshold;
        if !(0.0..=1.0).contains(&t) {
            return Err(ConfigError::Invalid(format!(
                "analytics.anomaly.threshold {t} is not in 0..=1"
            )));
        }
        Ok(())
    }

    /// The configuration as TOML with secrets replaced by `***`.
    pub fn to_redacted_toml(&self) -> Result<String, ConfigError> {
        let mut shown = self.clone();
        for map in [&mut shown.kafka, &mut shown.elasticsearch] {
            for (k, v) in map.iter_mut() {
                if is_secret(k) {
                    *v = "***".to_owned();
                }
            }
        }
        toml::to_string(&shown).map_err(|e| ConfigError::Invalid(e.to_string()))
    }
}

fn env_err(name: &str, value: &str, expected: &str) -> ConfigError {
    ConfigError::Env {
        name: name.to_owned(),
        value: value.to_owned(),
        reason: format!("expected {expected}"),
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Whether a setting holds a secret (passwords, tokens, keys).
pub fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "credential",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// The process environment as pairs (non-UTF-8 variables are skipped).
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_shipped_config_file_is_the_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/logsight.toml");
        let file = EngineConfig::from_file(&path).unwrap();
        assert_eq!(file, EngineConfig::default());
        file.validate().unwrap();
    }

    #[test]
    fn env_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[analytics.anomaly]\nthreshold = 0.5\n[analytics.risk]\nadded = [2, 70, 60, 80]\n[jobs]\nrun_pipeline = false\n",
        )
        .unwrap();
        let c = EngineConfig::load(Some(&path), &[]).unwrap();
        assert_eq!(c.analytics.anomaly.threshold, 0.5);
        assert!(!c.jobs.run_pipeline);
        let c = EngineConfig::load(
            Some(&path),
            &env(&[
                ("PREDICTION_THRESHOLD", "0.7"),
                ("RISK_SCORE_RECURRING_STATE", "5"),
                ("RUN_PIPELINE", "true"),
                ("INCIDENTS_JOBS", "0"),
                ("ELASTICSEARCH_PASSWORD", "hunter2"),
                ("KAFKA_HOST", "kafka:9092"),
            ]),
        )
        .unwrap();
        assert_eq!(c.analytics.anomaly.threshold, 0.7);
        // The file's cell stays, the env's cell applies.
        assert_eq!(c.analytics.risk.added[0], 2);
        assert_eq!(c.analytics.risk.recurring[0], 5);
        assert!(c.jobs.run_pipeline);
        assert!(!c.jobs.incident_jobs);
        let shown = c.to_redacted_toml().unwrap();
        assert!(shown.contains("password = \"***\""));
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("kafka:9092"));
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(EngineConfig::load(None, &env(&[("PREDICTION_THRESHOLD", "2")])).is_err());
        assert!(EngineConfig::load(None, &env(&[("RISK_SCORE_ADDED_STATE", "101")])).is_err());
        assert!(EngineConfig::load(None, &env(&[("RUN_PIPELINE", "maybe")])).is_err());
        let mut c = EngineConfig::default();
        c.run.epoch_lines = 0;
        assert!(c.validate().is_err());
        c = EngineConfig::default();
        c.run.format = Some("nosuchformat".into());
        assert!(c.validate().is_err());
    }
}
