//! `logsight store load`: loads a local store (the NDJSON files a run wrote into its data
//! directory) into Elasticsearch with `_bulk`, keeping every document's `_index` and `_id`
//! (re-loading overwrites instead of duplicating) and, unless `--ingest-pipeline`, its stored
//! `ingest_timestamp`. Creates the ingest pipeline and index template when missing; uses the
//! same settings, retries and rejection file as the Elasticsearch sink.

use crate::config::{process_env, EngineConfig};
use crate::connectors::env_var;
use crate::sinks::elasticsearch::{BulkDoc, ElasticsearchConfig, EsClient, RejectLog, PIPELINE};
use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// `logsight store …`
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum StoreCommand {
    /// Load the local store's documents into Elasticsearch (ELASTICSEARCH_* settings).
    #[command(after_help = "\
Examples:
  logsight store load --data-dir ./logsight-data
  ELASTICSEARCH_HOST=es ELASTICSEARCH_PASSWORD=… logsight store load --index app_pipeline
  logsight store load --es-url http://127.0.0.1:9200 --ingest-pipeline")]
    Load(LoadArgs),
}

/// Arguments of `logsight store load`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Configuration file (TOML); its `[run] data_dir` and `[elasticsearch]` apply.
    #[arg(long, env = "LOGSIGHT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Local store directory [default: the configuration's, ./logsight-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Load only this Elasticsearch index (e.g. `app_pipeline`); repeat for several.
    #[arg(long = "index", value_name = "ES_INDEX")]
    pub indices: Vec<String>,
    /// Elasticsearch URL, overriding ELASTICSEARCH_SCHEME/HOST/PORT.
    #[arg(long, value_name = "URL")]
    pub es_url: Option<String>,
    /// Documents per `_bulk` request.
    #[arg(long, value_name = "N")]
    pub bulk_docs: Option<usize>,
    /// Send `*_pipeline` documents through the `ingest_timestamp` ingest pipeline (a new
    /// ingest time) instead of keeping the stored one.
    #[arg(long)]
    pub ingest_pipeline: bool,
}

/// Runs `logsight store …`.
pub fn run(args: StoreArgs) -> anyhow::Result<()> {
    match args.command {
        StoreCommand::Load(load) => run_load(load),
    }
}

/// A store file: its Elasticsearch index, from `<es_index>-<YYYYMMDD>-w<NNN>.ndjson`.
pub fn store_file_index(name: &str) -> Option<&str> {
    let stem = name.strip_suffix(".ndjson")?;
    let (rest, worker) = stem.rsplit_once('-')?;
    let (index, day) = rest.rsplit_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let worker_ok = worker.strip_prefix('w').is_some_and(digits);
    (worker_ok && day.len() == 8 && digits(day) && !index.is_empty()).then_some(index)
}

/// The store files of `dir` to load, sorted, with their index.
fn store_files(dir: &Path, only: &[String]) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading the store directory {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Some(index) = store_file_index(&name) else {
            continue;
        };
        if only.is_empty() || only.iter().any(|i| i == index) {
            files.push((entry.path(), index.to_owned()));
        }
    }
    files.sort();
    Ok(files)
}

/// Counts of a load.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadStats {
    pub files: usize,
    pub documents: u64,
    pub rejected: u64,
    pub unreadable: u64,
}

fn run_load(args: LoadArgs) -> anyhow::Result<()> {
    let config = EngineConfig::load(args.config.as_deref(), &process_env())?;
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| config.run.data_dir.clone());
    let mut es_settings = config.elasticsearch.clone();
    if let Some(url) = &args.es_url {
        es_settings.insert("url".into(), url.clone());
    }
    if let Some(n) = args.bulk_docs {
        es_settings.insert("bulk_docs".into(), n.to_string());
    }
    let es = ElasticsearchConfig::from_settings(&es_settings, env_var)?;
    let url = es.url.clone();
    let files = store_files(&dir, &args.indices)?;
    if files.is_empty() {
        anyhow::bail!(
            "no store files in {}{}",
            dir.display(),
            if args.indices.is_empty() {
                String::new()
            } else {
                format!(" for {:?}", args.indices)
            }
        );
    }
    let mut client = EsClient::new(es)?;
    client.ensure_setup()?;
    let mut rejects = RejectLog::new(dir.join("elasticsearch-rejected-load.ndjson"));
    let stats = load_files(&mut client, &files, args.ingest_pipeline, &mut rejects)?;
    let indices: BTreeSet<&str> = files.iter().map(|(_, i)| i.as_str()).collect();
    for index in &indices {
        client.refresh(index)?;
    }
    eprintln!(
        "logsight: loaded {} documents from {} files ({} indices) into {url}; {} rejected{}, {} unreadable lines skipped",
        stats.documents,
        stats.files,
        indices.len(),
        stats.rejected,
        if stats.rejected > 0 { format!(" (see {})", rejects.path().display()) } else { String::new() },
        stats.unreadable
    );
    Ok(())
}

/// Loads `files` in `_bulk` batches.
pub fn load_files(
    client: &mut EsClient,
    files: &[(PathBuf, String)],
    ingest_pipeline: bool,
    rejects: &mut RejectLog,
) -> anyhow::Result<LoadStats> {
    let batch = client.config().bulk_docs.max(1) * 4;
    let mut stats = LoadStats::default();
    for (path, index) in files {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let pipeline = (ingest_pipeline && index.ends_with("_pipeline")).then_some(PIPELINE);
        let mut docs = Vec::with_capacity(batch);
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            match parse_stored(&line) {
                Some(doc) => docs.push(doc),
                None => {
                    stats.unreadable += 1;
                    tracing::warn!(
                        "{}:{}: not a stored document, skipped",
                        path.display(),
                        n + 1
                    );
                }
            }
            if docs.len() >= batch {
                flush(client, &mut docs, pipeline, rejects, &mut stats)?;
            }
        }
        flush(client, &mut docs, pipeline, rejects, &mut stats)?;
        stats.files += 1;
    }
    Ok(stats)
}

fn flush(
    client: &mut EsClient,
    docs: &mut Vec<BulkDoc>,
    pipeline: Option<&str>,
    rejects: &mut RejectLog,
    stats: &mut LoadStats,
) -> anyhow::Result<()> {
    if docs.is_empty() {
        return Ok(());
    }
    let rejected = client.index_all(docs, pipeline)?;
    rejects.record(&rejected)?;
    stats.rejected += rejected.len() as u64;
    stats.documents += (docs.len() - rejected.len()) as u64;
    docs.clear();
    Ok(())
}

/// A stored line `{"_index","_id","_source"}` as a bulk document.
fn parse_stored(line: &str) -> Option<BulkDoc> {
    let v: Value = serde_json::from_str(line).ok()?;
    let index = v.get("_index")?.as_str()?.to_owned();
    let id = v.get("_id")?.as_str()?.to_owned();
    let source = v.get("_source").filter(|s| s.is_object())?.to_string();
    Some(BulkDoc { index, id, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_file_names_give_their_index() {
        assert_eq!(
            store_file_index("app_pipeline-20240131-w000.ndjson"),
            Some("app_pipeline")
        );
        assert_eq!(
            store_file_index("my-app_pipeline-20240131-w012.ndjson"),
            Some("my-app_pipeline")
        );
        assert_eq!(
            store_file_index("quarantine-20240131-w001.ndjson"),
            Some("quarantine")
        );
        assert_eq!(store_file_index("elasticsearch-rejected-w000.ndjson"), None);
        assert_eq!(store_file_index("app_pipeline-2024013-w000.ndjson"), None);
        assert_eq!(store_file_index("notes.txt"), None);
    }

    #[test]
    fn stored_lines_become_bulk_documents() {
        let d = parse_stored(r#"{"_index":"a_pipeline","_id":"x1","_source":{"message":"m"}}"#)
            .unwrap();
        assert_eq!((d.index.as_str(), d.id.as_str()), ("a_pipeline", "x1"));
        assert_eq!(d.source, r#"{"message":"m"}"#);
        assert!(parse_stored(r#"{"_index":"a","_id":"x"}"#).is_none());
        assert!(parse_stored("{truncated").is_none());
    }
}
