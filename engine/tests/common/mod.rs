//! Helpers shared by the integration tests: running the built `logsight` binary and reading the
//! local store it writes.

#![allow(dead_code)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_logsight")
}

/// The Loghub 2k datasets (read-only) beside the repository, or `$LOGHUB_2K_DIR`.
pub fn datasets() -> PathBuf {
    logsight_benches::loghub_dir().expect("Loghub 2k samples")
}

pub use logsight_benches::DATASETS;

pub fn dataset(name: &str) -> PathBuf {
    datasets().join(name).join(format!("{name}_2k.log"))
}

/// Writes the 8 datasets, `repeat` times over, into one file.
pub fn repeated_input(path: &Path, repeat: usize) -> usize {
    let mut text = String::new();
    for _ in 0..repeat {
        for name in DATASETS {
            let data = std::fs::read_to_string(dataset(name)).expect("dataset readable");
            text.push_str(&data);
            if !data.ends_with('\n') {
                text.push('\n');
            }
        }
    }
    let lines = text.lines().filter(|l| !l.trim().is_empty()).count();
    std::fs::write(path, text).expect("write input");
    lines
}

/// `logsight <args>` without inheriting a config from the environment.
pub fn logsight(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_remove("LOGSIGHT_CONFIG")
        .env("LOGSIGHT_LOG", "warn");
    cmd
}

pub fn run_ok(args: &[&str]) -> Output {
    let out = logsight(args).output().expect("logsight runs");
    assert!(
        out.status.success(),
        "logsight {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every stored line of `es_index` (duplicates included), from all workers' files.
pub fn stored_lines(dir: &Path, es_index: &str) -> Vec<Value> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("data dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{es_index}-")) && n.ends_with(".ndjson"))
        })
        .collect();
    names.sort();
    let mut docs = Vec::new();
    for path in names {
        for line in std::fs::read_to_string(&path).expect("store file").lines() {
            docs.push(serde_json::from_str(line).expect("valid NDJSON"));
        }
    }
    docs
}

/// Documents by id, without the run-dependent `ingest_timestamp`; asserts ids are unique.
pub fn documents(dir: &Path, es_index: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for mut doc in stored_lines(dir, es_index) {
        let id = doc["_id"].as_str().expect("_id").to_owned();
        if let Some(src) = doc["_source"].as_object_mut() {
            src.remove("ingest_timestamp");
        }
        assert!(
            out.insert(id.clone(), doc).is_none(),
            "duplicate document {id}"
        );
    }
    out
}

/// Template id of every document, by document id.
pub fn template_ids(docs: &BTreeMap<String, Value>) -> BTreeMap<String, String> {
    docs.iter()
        .map(|(id, d)| {
            (
                id.clone(),
                d["_source"]["template_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A client for the Elasticsearch-API server at `url`.
pub fn es_client_at(url: &str) -> logsight_engine::sinks::elasticsearch::EsClient {
    use logsight_engine::sinks::elasticsearch::{ElasticsearchConfig, EsClient};
    let mut settings = BTreeMap::new();
    settings.insert("url".to_owned(), url.to_owned());
    EsClient::new(ElasticsearchConfig::from_settings(&settings, |_| None).unwrap()).unwrap()
}

/// Every document of `index` on the server at `url` (after a refresh), by id; empty when the
/// index does not exist.
pub fn es_documents(url: &str, index: &str) -> BTreeMap<String, Value> {
    use elasticsearch::http::Method;
    let mut c = es_client_at(url);
    c.refresh(index).unwrap();
    let body = serde_json::json!({"size": 10000, "query": {"match_all": {}}});
    let (status, v) = c
        .request(
            Method::Post,
            &format!("/{index}/_search"),
            Some(body),
            &[404],
        )
        .unwrap();
    if status == 404 {
        return BTreeMap::new();
    }
    v["hits"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["_id"].as_str().unwrap().to_owned(), h["_source"].clone()))
        .collect()
}

/// Sends SIGTERM to `child` (a graceful stop for `logsight run`).
pub fn sigterm(child: &std::process::Child) {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -TERM {} failed", child.id());
}

/// The epoch of the data dir's last commit, if any.
pub fn committed_epoch(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("_state/commit.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["epoch"].as_u64()
}

/// Waits until `dir` has committed epoch `epoch`, failing if that takes longer than `within`
/// or if `child` ends first (then the input was too small to interrupt it mid-run).
pub fn wait_for_commit(
    dir: &Path,
    epoch: u64,
    child: &mut std::process::Child,
    within: std::time::Duration,
) {
    wait_while_running(
        child,
        within,
        std::time::Duration::from_millis(5),
        &format!("no commit of epoch {epoch} within {within:?}"),
        "the run ended before it could be interrupted; make the input bigger",
        || committed_epoch(dir).is_some_and(|e| e >= epoch),
    );
}

/// Polls `done` every `every` until it holds, failing with `timed_out` after `within`, or with
/// `ended` if `child` exits first.
pub fn wait_while_running(
    child: &mut std::process::Child,
    within: std::time::Duration,
    every: std::time::Duration,
    timed_out: &str,
    ended: &str,
    mut done: impl FnMut() -> bool,
) {
    let deadline = std::time::Instant::now() + within;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{timed_out}");
        assert!(child.try_wait().unwrap().is_none(), "{ended}");
        std::thread::sleep(every);
    }
}
