//! `logsight jobs` and the in-process jobs of `logsight run`: incident and log aggregate
//! documents compared with `logsight_jobs::recompute_batch` over the same pipeline results,
//! restarts without double counting, Kafka results → Elasticsearch, Elasticsearch polling, and
//! pruning. The Kafka / Elasticsearch tests need the services of scripts/services.sh.

mod common;
#[path = "support/services.rs"]
mod services;

use common::*;
use logsight_engine::jobs::local_store::read_job_store;
use logsight_engine::sinks::elasticsearch::{BulkDoc, EsClient, PIPELINE};
use logsight_engine::sinks::local_store::read_documents;
use logsight_jobs::output::DocStore;
use logsight_jobs::{recompute_batch, JobConfig, JobRecord};
use operators::model::ResultRecord;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

/// The first `n` HDFS sample lines in `dir/in.log`.
fn input(dir: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(dataset("HDFS")).expect("dataset");
    let lines: Vec<&str> = text.lines().take(n).collect();
    let path = dir.join("in.log");
    std::fs::write(&path, lines.join("\n") + "\n").expect("write input");
    path.display().to_string()
}

/// `logsight run` of `input` into `data` (index `index`), extra env given.
fn pipeline_run(input: &str, data: &Path, index: &str, env: &[(&str, &str)], sinks: &[&str]) {
    let data = data.display().to_string();
    let mut args = vec![
        "run",
        input,
        "--format",
        "hdfs",
        "--data-dir",
        &data,
        "--index",
        index,
        "--progress-secs",
        "0",
    ];
    for s in sinks {
        args.extend(["--sink", s]);
    }
    let mut cmd = logsight(&args);
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("logsight runs");
    assert!(
        out.status.success(),
        "logsight run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `logsight jobs <args>` with a clean job environment plus `env`, run to its end.
fn jobs(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = jobs_command(args, env)
        .output()
        .expect("logsight jobs runs");
    assert!(
        out.status.success(),
        "logsight jobs {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The `logsight jobs <args>` command with a clean job environment plus `env`.
fn jobs_command(args: &[&str], env: &[(&str, &str)]) -> std::process::Command {
    let mut full = vec!["jobs"];
    full.extend_from_slice(args);
    let mut cmd = logsight(&full);
    for name in [
        "FILTER_NORMAL",
        "INCIDENT_MAX_SAMPLES",
        "ES_CLEANUP_AGE",
        "INCIDENT_JOBS",
        "INCIDENTS_JOBS",
        "DELETE_ES_JOB",
    ] {
        cmd.env_remove(name);
    }
    cmd.envs(env.iter().copied());
    cmd
}

/// The job records of the pipeline documents `(es_index, id, _source)`.
fn records_of<'a>(docs: impl IntoIterator<Item = (&'a str, &'a str, &'a Value)>) -> Vec<JobRecord> {
    docs.into_iter()
        .map(|(es_index, id, source)| {
            let index = es_index
                .strip_suffix("_pipeline")
                .expect("a pipeline index");
            let result: ResultRecord =
                serde_json::from_value(source.clone()).expect("a result record");
            JobRecord::from_result(index, &result, id).expect("a timestamp")
        })
        .collect()
}

/// The stored pipeline documents of `index` in `dir`, by id.
fn pipeline_docs(dir: &Path, index: &str) -> BTreeMap<String, Value> {
    read_documents(dir, &format!("{index}_pipeline")).expect("pipeline documents")
}

fn expected_from(docs: &BTreeMap<String, Value>) -> DocStore {
    let records = records_of(docs.values().map(|d| {
        (
            d["_index"].as_str().expect("_index"),
            d["_id"].as_str().expect("_id"),
            &d["_source"],
        )
    }));
    recompute_batch(&records, &JobConfig::default())
}

/// Incident and aggregate counts of a store, hand-checkable.
fn kinds(store: &DocStore) -> (usize, usize) {
    let incidents = store
        .keys()
        .filter(|(i, _)| i.ends_with("_incidents"))
        .count();
    (incidents, store.len() - incidents)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

#[test]
fn local_jobs_equal_the_batch_recomputation_and_restarts_do_not_double_count() {
    let tmp = tempfile::tempdir().unwrap();
    let source_dir = tmp.path().join("run");
    let input = input(tmp.path(), 600);
    pipeline_run(
        &input,
        &source_dir,
        "hd",
        &[("INCIDENT_JOBS", "false")],
        &[],
    );
    let all = pipeline_docs(&source_dir, "hd");
    assert_eq!(all.len(), 600);
    assert!(
        read_job_store(&source_dir).unwrap().is_empty(),
        "INCIDENT_JOBS=false: no jobs in logsight run"
    );

    // The job manager's data dir receives the pipeline file in two parts.
    let pipeline_file = std::fs::read_dir(&source_dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().contains("hd_pipeline-"))
        .expect("a pipeline file");
    let text = std::fs::read_to_string(&pipeline_file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let data = tmp.path().join("jobs");
    std::fs::create_dir_all(&data).unwrap();
    let target = data.join(pipeline_file.file_name().unwrap());
    std::fs::write(&target, lines[..250].join("\n") + "\n").unwrap();
    let data_arg = data.display().to_string();
    let once = [
        "--source",
        "local",
        "--sink",
        "local",
        "--once",
        "--data-dir",
        &data_arg,
    ];

    let out = jobs(&once, &[]);
    let first_half = pipeline_docs(&data, "hd");
    assert_eq!(first_half.len(), 250);
    let got = read_job_store(&data).unwrap();
    assert_eq!(got, expected_from(&first_half));
    assert!(String::from_utf8_lossy(&out.stderr).contains("250 records from local"));

    // The rest arrives (plus a half-written last line, which must wait).
    let mut rest = lines[250..].join("\n") + "\n";
    rest.push_str("{\"_index\":\"hd_pipeline\",\"_id\":\"partial");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&target)
        .and_then(|mut f| std::io::Write::write_all(&mut f, rest.as_bytes()))
        .unwrap();
    let out = jobs(&once, &[]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("350 records from local"),
        "only the new complete lines are read: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = read_job_store(&data).unwrap();
    let expected = expected_from(&all);
    assert_eq!(got, expected);
    let (incidents, aggs) = kinds(&expected);
    assert!(
        incidents > 0 && aggs > 0,
        "{incidents} incidents, {aggs} aggregates"
    );
    // Every line is counted once over all aggregates.
    let counted: u64 = expected
        .iter()
        .filter(|((i, _), _)| i == "hd_log_agg")
        .map(|(_, d)| d["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(counted, 600);

    // A restart with nothing new: same documents, nothing appended.
    let bytes = dir_bytes(&data);
    let out = jobs(&once, &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 records from local"));
    assert_eq!(read_job_store(&data).unwrap(), expected);
    assert_eq!(dir_bytes(&data), bytes);
}

#[test]
fn sigterm_stops_the_job_service_between_rounds() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("run");
    let input = input(tmp.path(), 300);
    pipeline_run(&input, &data, "hd", &[("INCIDENT_JOBS", "false")], &[]);
    let expected = expected_from(&pipeline_docs(&data, "hd"));
    let d = data.display().to_string();
    // Without --once the service keeps polling for new results until it is stopped (and
    // without pruning, which would retract these 2008 windows at once).
    let mut child = jobs_command(
        &["--source", "local", "--sink", "local", "--data-dir", &d],
        &[("DELETE_ES_JOB", "false")],
    )
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    wait_while_running(
        &mut child,
        std::time::Duration::from_secs(60),
        std::time::Duration::from_millis(50),
        "the service wrote nothing",
        "the service ended on its own",
        || read_job_store(&data).ok().as_ref() == Some(&expected),
    );
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("stopped on a signal"), "{stderr}");
    assert!(stderr.contains("300 records from local"), "{stderr}");
    assert_eq!(read_job_store(&data).unwrap(), expected);
}

#[test]
fn logsight_run_writes_incidents_and_aggregates_in_process() {
    let tmp = tempfile::tempdir().unwrap();
    let input = input(tmp.path(), 400);
    let data = tmp.path().join("data");
    let data_arg = data.display().to_string();
    let out = run_ok(&[
        "run",
        &input,
        "--format",
        "hdfs",
        "--data-dir",
        &data_arg,
        "--index",
        "inproc",
        "--progress-secs",
        "0",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let got = read_job_store(&data).unwrap();
    let expected = expected_from(&pipeline_docs(&data, "inproc"));
    assert_eq!(got, expected);
    let (incidents, aggs) = kinds(&got);
    assert!(incidents > 0);
    assert!(
        stderr.contains(&format!(
            "incidents: {incidents} incidents, {aggs} log aggregates"
        )),
        "{stderr}"
    );
}

#[test]
fn local_store_retention_prunes_old_job_documents() {
    // HDFS sample lines are from 2008: with a 1-day age every job document is older.
    let tmp = tempfile::tempdir().unwrap();
    let input = input(tmp.path(), 200);
    let data = tmp.path().join("data");
    pipeline_run(&input, &data, "old", &[], &[]);
    let before = read_job_store(&data).unwrap();
    assert!(!before.is_empty());
    let data_arg = data.display().to_string();
    let out = jobs(
        &["--sink", "local", "--prune-once", "--data-dir", &data_arg],
        &[("DELETE_ES_JOB", "true"), ("ES_CLEANUP_AGE", "now-1d")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (incidents, aggs) = kinds(&before);
    assert!(
        stderr.contains(&format!("pruned {incidents} documents")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("pruned {aggs} documents")),
        "{stderr}"
    );
    assert!(read_job_store(&data).unwrap().is_empty());
    // The manager's checkpoint knows: a restart does not bring the documents back.
    jobs(&["--sink", "local", "--once", "--data-dir", &data_arg], &[]);
    assert!(read_job_store(&data).unwrap().is_empty());
}

// ---------------------------------------------------------------- Kafka and Elasticsearch

fn es_client() -> EsClient {
    es_client_at(&services::es())
}

/// Every document of `index` in Elasticsearch (after a refresh), as (index, id) → `_source`.
fn es_store(index: &str) -> DocStore {
    es_documents(&services::es(), index)
        .into_iter()
        .map(|(id, source)| ((index.to_owned(), id), source))
        .collect()
}

/// Numbers as f64, so `2.0` and `2` compare equal (a server may print either).
fn normalized(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(a) => Value::Array(a.iter().map(normalized).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), normalized(v))).collect())
        }
        other => other.clone(),
    }
}

fn normalized_store(s: &DocStore) -> DocStore {
    s.iter().map(|(k, v)| (k.clone(), normalized(v))).collect()
}

/// Only the documents of the given index.
fn of_index(s: &DocStore, index: &str) -> DocStore {
    s.iter()
        .filter(|((i, _), _)| i == index)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[test]
fn kafka_results_to_elasticsearch_match_the_batch_recomputation() {
    let es = services::es();
    let topic = services::unique("ls-jobs-results");
    services::create_topic(&topic, 2);
    let index = services::unique("jk");
    let tmp = tempfile::tempdir().unwrap();
    let input = input(tmp.path(), 300);
    let run_dir = tmp.path().join("run");
    pipeline_run(
        &input,
        &run_dir,
        &index,
        &[
            ("INCIDENT_JOBS", "false"),
            ("KAFKA_BOOTSTRAP_SERVERS", services::kafka().as_str()),
            ("KAFKA_RESULTS_TOPIC", topic.as_str()),
        ],
        &["local", "kafka"],
    );
    // The local store has the same results (same ids) as the topic.
    let expected = expected_from(&pipeline_docs(&run_dir, &index));
    let jobs_dir = tmp.path().join("jobs").display().to_string();
    let kafka = services::kafka();
    let args = [
        "--source",
        "kafka",
        "--sink",
        "elasticsearch",
        "--once",
        "--topic",
        &topic,
        "--es-url",
        &es,
        "--data-dir",
        &jobs_dir,
    ];
    let env = [
        ("KAFKA_BOOTSTRAP_SERVERS", kafka.as_str()),
        ("KAFKA_GROUP_ID", "ls-jobs-test"),
    ];
    let out = jobs(&args, &env);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("300 records from kafka"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let incidents_index = format!("{index}_incidents");
    let agg_index = format!("{index}_log_agg");
    let want_incidents = normalized_store(&of_index(&expected, &incidents_index));
    assert!(!want_incidents.is_empty());
    assert_eq!(
        normalized_store(&es_store(&incidents_index)),
        want_incidents
    );
    assert_eq!(
        normalized_store(&es_store(&agg_index)),
        normalized_store(&of_index(&expected, &agg_index))
    );
    // A restart reads nothing new and changes nothing.
    let out = jobs(&args, &env);
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 records from kafka"));
    assert_eq!(
        normalized_store(&es_store(&incidents_index)),
        want_incidents
    );
}

/// Indexes `docs` (index, id, source) into Elasticsearch, refreshed.
fn index_docs(docs: &[(String, String, Value)], pipeline: Option<&str>) {
    let mut c = es_client();
    c.ensure_setup().unwrap();
    let bulk: Vec<BulkDoc> = docs
        .iter()
        .map(|(index, id, source)| BulkDoc {
            index: index.clone(),
            id: id.clone(),
            source: source.to_string(),
        })
        .collect();
    assert!(c.index_all(&bulk, pipeline).unwrap().is_empty());
    let mut indices: Vec<&String> = docs.iter().map(|d| &d.0).collect();
    indices.dedup();
    for i in indices {
        c.refresh(i).unwrap();
    }
}

fn es_count(index: &str) -> usize {
    es_store(index).len()
}

#[test]
fn pruning_elasticsearch_deletes_exactly_the_documents_older_than_the_horizon() {
    let es = services::es();
    let p = services::unique("jp");
    let now = chrono::Utc::now();
    let at = |hours: i64| {
        operators::timestamp::to_rfc3339_millis(&(now - chrono::Duration::hours(hours)))
    };
    // Per index: 2 old (3 days, 2 years), 3 new (now, 1 h, 23 h).
    let mut docs = Vec::new();
    for kind in ["pipeline", "incidents", "log_agg"] {
        for (i, hours) in [72, 17_520, 0, 1, 23].into_iter().enumerate() {
            docs.push((
                format!("{p}_{kind}"),
                format!("{kind}-{i}"),
                json!({"timestamp": at(hours), "message": "m"}),
            ));
        }
    }
    index_docs(&docs, None);
    // Another tenant's old documents are not part of `--index`.
    let other = services::unique("jq");
    index_docs(
        &[(
            format!("{other}_incidents"),
            "x".into(),
            json!({"timestamp": at(72)}),
        )],
        None,
    );
    let out = jobs(
        &[
            "--sink",
            "elasticsearch",
            "--prune-once",
            "--es-url",
            &es,
            "--index",
            &p,
        ],
        &[
            ("DELETE_ES_JOB", "true"),
            ("ES_CLEANUP_AGE", "now-1d"),
            ("INCIDENT_JOBS", "false"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    for kind in ["pipeline", "incidents", "log_agg"] {
        let index = format!("{p}_{kind}");
        assert_eq!(es_count(&index), 3, "{index}");
        let ids: Vec<String> = es_store(&index).keys().map(|(_, id)| id.clone()).collect();
        assert_eq!(ids, [2, 3, 4].map(|i| format!("{kind}-{i}")));
        assert!(
            stderr
                .lines()
                .any(|l| l.contains("pruned 2 documents") && l.ends_with(&format!("from {index}"))),
            "{stderr}"
        );
    }
    assert_eq!(es_count(&format!("{other}_incidents")), 1);
}

#[test]
fn elasticsearch_polling_reads_each_pipeline_document_once_across_restarts() {
    let es = services::es();
    let index = services::unique("jes");
    let tmp = tempfile::tempdir().unwrap();
    let input = input(tmp.path(), 300);
    let run_dir = tmp.path().join("run");
    pipeline_run(&input, &run_dir, &index, &[("INCIDENT_JOBS", "false")], &[]);
    let all = pipeline_docs(&run_dir, &index);
    let docs: Vec<(String, String, Value)> = all
        .values()
        .map(|d| {
            let mut source = d["_source"].clone();
            // The ingest pipeline sets a fresh one.
            source.as_object_mut().unwrap().remove("ingest_timestamp");
            (
                d["_index"].as_str().unwrap().to_owned(),
                d["_id"].as_str().unwrap().to_owned(),
                source,
            )
        })
        .collect();
    let jobs_dir = tmp.path().join("jobs");
    let jobs_arg = jobs_dir.display().to_string();
    let args = [
        "--source",
        "elasticsearch",
        "--sink",
        "local",
        "--once",
        "--es-url",
        &es,
        "--index",
        &index,
        "--data-dir",
        &jobs_arg,
        "--batch",
        "70",
    ];
    index_docs(&docs[..120], Some(PIPELINE));
    let out = jobs(&args, &[]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("120 records from elasticsearch"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first: BTreeMap<String, Value> = all
        .iter()
        .filter(|(id, _)| docs[..120].iter().any(|d| &d.1 == *id))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(read_job_store(&jobs_dir).unwrap(), expected_from(&first));

    index_docs(&docs[120..], Some(PIPELINE));
    let out = jobs(&args, &[]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("180 records from elasticsearch"),
        "only the new documents: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read_job_store(&jobs_dir).unwrap(), expected_from(&all));
    let out = jobs(&args, &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 records from elasticsearch"));
}
