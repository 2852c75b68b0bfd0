//! Elasticsearch against a real server (noida-db with the Elasticsearch 8 API, and an nginx
//! basic-auth proxy, started by scripts/services.sh): bulk indexing through the ingest pipeline
//! with deterministic ids, a server restart in the middle of a run, authentication, rejected
//! documents, and `logsight store load`.
//!
//! The tests share one server and one of them restarts it, so they run one at a time.

mod common;
#[path = "support/services.rs"]
mod services;

use common::*;
use logsight_engine::sinks::elasticsearch::{BulkDoc, EsClient, PIPELINE, TEMPLATE};
use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

static SERVER: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    SERVER.lock().unwrap_or_else(|e| e.into_inner())
}

/// `ELASTICSEARCH_SCHEME/HOST/PORT` of a base URL.
fn es_env(url: &str) -> Vec<(String, String)> {
    let (scheme, rest) = url.split_once("://").expect("scheme://host:port");
    let (host, port) = rest
        .trim_end_matches('/')
        .rsplit_once(':')
        .expect("host:port");
    vec![
        ("ELASTICSEARCH_SCHEME".into(), scheme.into()),
        ("ELASTICSEARCH_HOST".into(), host.into()),
        ("ELASTICSEARCH_PORT".into(), port.into()),
    ]
}

fn client(url: &str) -> EsClient {
    es_client_at(url)
}

/// The HTTP status of `GET /_ingest/pipeline/<ours>` (200 when it exists, 404 when not).
fn ingest_pipeline_status(c: &mut EsClient) -> u16 {
    let path = format!("/_ingest/pipeline/{PIPELINE}");
    let (status, _) = c
        .request(elasticsearch::http::Method::Get, &path, None, &[404])
        .unwrap();
    status
}

/// A client with the ingest pipeline and template set up, and a fresh `<name…>_pipeline` index.
fn fresh_pipeline_index(url: &str, name: &str) -> (EsClient, String) {
    let index = format!("{}_pipeline", services::unique(name).to_ascii_lowercase());
    let mut c = client(url);
    c.ensure_setup().unwrap();
    (c, index)
}

fn input_file(dir: &std::path::Path, n: usize) -> std::path::PathBuf {
    let lines: Vec<String> = std::fs::read_to_string(dataset("HDFS"))
        .unwrap()
        .lines()
        .take(n)
        .map(str::to_owned)
        .collect();
    let path = dir.join("in.log");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn run_args<'a>(input: &'a str, dir: &'a str, index: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        input,
        "--data-dir",
        dir,
        "--index",
        index,
        "--sink",
        "local",
        "--sink",
        "elasticsearch",
        "--progress-secs",
        "0",
    ]
}

#[test]
fn documents_are_bulk_indexed_with_ingest_timestamps_and_deterministic_ids() {
    let _one = one_at_a_time();
    let url = services::es();
    let tmp = tempfile::tempdir().unwrap();
    let input = input_file(tmp.path(), 300).display().to_string();
    let index = services::unique("es-bulk").to_ascii_lowercase();
    for round in 0..2 {
        // Two runs over the same input (fresh data dirs): the second overwrites the first.
        let dir = tmp
            .path()
            .join(format!("data{round}"))
            .display()
            .to_string();
        let out = logsight(&run_args(&input, &dir, &index))
            .envs(es_env(&url))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stored = documents(std::path::Path::new(&dir), &format!("{index}_pipeline"));
        let indexed = es_documents(&url, &format!("{index}_pipeline"));
        assert_eq!(indexed.len(), 300, "round {round}");
        assert_eq!(
            indexed.keys().collect::<BTreeSet<_>>(),
            stored.keys().collect::<BTreeSet<_>>(),
            "Elasticsearch and the local store use the same ids"
        );
        for (id, doc) in &indexed {
            let ts = doc["ingest_timestamp"].as_str().unwrap_or_default();
            assert!(
                chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
                "{id}: ingest_timestamp {ts:?}"
            );
            assert_eq!(doc["template_id"], stored[id]["_source"]["template_id"]);
        }
    }
    // The setup exists, and the pipeline sets the ingest time whatever the document says.
    use elasticsearch::http::Method;
    let mut c = client(&url);
    assert_eq!(ingest_pipeline_status(&mut c), 200);
    let (s, _) = c
        .request(
            Method::Get,
            &format!("/_index_template/{TEMPLATE}"),
            None,
            &[404],
        )
        .unwrap();
    assert_eq!(s, 200);
    let doc = BulkDoc {
        index: format!("{index}_pipeline"),
        id: "set-by-pipeline".into(),
        source: r#"{"message":"m","ingest_timestamp":"2000-01-01T00:00:00.000Z"}"#.into(),
    };
    assert!(c.index_all(&[doc], Some(PIPELINE)).unwrap().is_empty());
    let docs = es_documents(&url, &format!("{index}_pipeline"));
    let ts = docs["set-by-pipeline"]["ingest_timestamp"]
        .as_str()
        .unwrap();
    assert!(
        !ts.starts_with("2000"),
        "the ingest pipeline did not set ingest_timestamp: {ts}"
    );
}

#[test]
fn a_server_restart_during_a_run_loses_nothing() {
    let _one = one_at_a_time();
    let url = services::es();
    let tmp = tempfile::tempdir().unwrap();
    let index = services::unique("es-restart").to_ascii_lowercase();
    let es_index = format!("{index}_pipeline");
    let dir = tmp.path().join("data").display().to_string();
    let lines: Vec<String> = std::fs::read_to_string(dataset("Spark"))
        .unwrap()
        .lines()
        .take(400)
        .map(str::to_owned)
        .collect();
    // Lines from stdin, so the test decides when the second half arrives.
    let mut child = logsight(&[
        "run",
        "-",
        "--data-dir",
        &dir,
        "--index",
        &index,
        "--sink",
        "local",
        "--sink",
        "elasticsearch",
        "--progress-secs",
        "0",
    ])
    .envs(es_env(&url))
    .env("RETRY_ATTEMPTS", "30")
    .env("RETRY_TIMEOUT", "1")
    .stdin(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for l in &lines[..200] {
        writeln!(stdin, "{l}").unwrap();
    }
    stdin.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while es_documents(&url, &es_index).len() < 200 {
        assert!(
            Instant::now() < deadline,
            "the first half never reached Elasticsearch"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    services::services(&["stop", "es"], &[]);
    for l in &lines[200..] {
        writeln!(stdin, "{l}").unwrap();
    }
    stdin.flush().unwrap();
    // The sink is now retrying; bring the server back (keeping its data).
    std::thread::sleep(Duration::from_secs(3));
    services::services(&["start", "es"], &[("LOGSIGHT_ES_KEEP_DATA", "1")]);
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the run did not complete: {stderr}");
    assert!(
        stderr.contains("retrying"),
        "the outage was not noticed: {stderr}"
    );
    let indexed = es_documents(&url, &es_index);
    let stored = documents(std::path::Path::new(&dir), &es_index);
    assert_eq!(stored.len(), 400);
    assert_eq!(indexed.len(), 400, "documents were lost across the restart");
    assert_eq!(
        indexed.keys().collect::<BTreeSet<_>>(),
        stored.keys().collect::<BTreeSet<_>>()
    );
}

#[test]
fn basic_auth_through_the_proxy_and_a_wrong_password_is_a_clear_error() {
    let _one = one_at_a_time();
    let (proxy, user, password) = services::es_proxy();
    let tmp = tempfile::tempdir().unwrap();
    let input = input_file(tmp.path(), 50).display().to_string();
    let index = services::unique("es-auth").to_ascii_lowercase();
    let dir = tmp.path().join("ok").display().to_string();
    let out = logsight(&run_args(&input, &dir, &index))
        .envs(es_env(&proxy))
        .env("ELASTICSEARCH_USERNAME", &user)
        .env("ELASTICSEARCH_PASSWORD", &password)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        es_documents(&services::es(), &format!("{index}_pipeline")).len(),
        50
    );

    let wrong = "not-the-password-42";
    let dir = tmp.path().join("wrong").display().to_string();
    let started = Instant::now();
    let out = logsight(&run_args(&input, &dir, &index))
        .envs(es_env(&proxy))
        .env("ELASTICSEARCH_USERNAME", &user)
        .env("ELASTICSEARCH_PASSWORD", wrong)
        .env("LOGSIGHT_LOG", "debug")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "authentication errors are not retried"
    );
    assert!(
        stderr.contains("authentication failed") && stderr.contains("401"),
        "unclear error: {stderr}"
    );
    assert!(stderr.contains(&user));
    assert!(!stderr.contains(wrong), "the password was printed");

    let out = logsight(&run_args(&input, &dir, &index))
        .envs(es_env(&proxy))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("ELASTICSEARCH_USERNAME"),
        "unclear error without credentials: {stderr}"
    );
}

#[test]
fn a_server_that_stays_down_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let input = input_file(tmp.path(), 10).display().to_string();
    let dir = tmp.path().join("data").display().to_string();
    let url = format!("http://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let out = logsight(&run_args(&input, &dir, "down"))
        .envs(es_env(&url))
        .env("RETRY_ATTEMPTS", "3")
        .env("RETRY_TIMEOUT", "0.2")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        stderr.contains(&url)
            && stderr.contains("unavailable")
            && stderr.contains("after 3 attempts"),
        "unclear error: {stderr}"
    );
}

#[test]
fn rejected_documents_are_reported_not_retried() {
    let _one = one_at_a_time();
    let url = services::es();
    let (mut c, index) = fresh_pipeline_index(&url, "es-reject");
    let good = BulkDoc {
        index: index.clone(),
        id: "good".into(),
        source: r#"{"message":"ok","risk_score":3}"#.into(),
    };
    let bad = BulkDoc {
        index: index.clone(),
        id: "bad".into(),
        source: r#"{"message":"bad","risk_score":"not a number"}"#.into(),
    };
    let started = Instant::now();
    let rejected = c.index_all(&[good, bad], Some(PIPELINE)).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a mapping error was retried"
    );
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].doc.id, "bad");
    assert_eq!(rejected[0].status, 400);
    assert_eq!(
        es_documents(&url, &index).keys().collect::<Vec<_>>(),
        ["good"]
    );

    // The sink keeps them, with their reasons, next to the store.
    let tmp = tempfile::tempdir().unwrap();
    let mut log =
        logsight_engine::sinks::elasticsearch::RejectLog::new(tmp.path().join("rejected.ndjson"));
    log.record(&rejected).unwrap();
    let text = std::fs::read_to_string(log.path()).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(line["_id"], "bad");
    assert_eq!(line["status"], 400);
    assert_eq!(line["_source"]["risk_score"], "not a number");
}

#[test]
fn store_load_loads_a_local_store_and_reloading_overwrites() {
    let _one = one_at_a_time();
    let url = services::es();
    let tmp = tempfile::tempdir().unwrap();
    let input = input_file(tmp.path(), 120).display().to_string();
    let index = services::unique("es-load").to_ascii_lowercase();
    let dir = tmp.path().join("data").display().to_string();
    run_ok(&[
        "run",
        &input,
        "--data-dir",
        &dir,
        "--index",
        &index,
        "--progress-secs",
        "0",
    ]);
    let stored = documents(std::path::Path::new(&dir), &format!("{index}_pipeline"));
    for _ in 0..2 {
        let out = Command::new(bin())
            .args([
                "store",
                "load",
                "--data-dir",
                &dir,
                "--index",
                &format!("{index}_pipeline"),
                "--es-url",
                &url,
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("loaded 120 documents"), "{stderr}");
    }
    let indexed = es_documents(&url, &format!("{index}_pipeline"));
    assert_eq!(indexed.len(), 120);
    for (id, doc) in &stored {
        let mut expected = doc["_source"].clone();
        let mut got = indexed[id].clone();
        // `documents` drops the run-dependent ingest time; the load keeps it.
        got.as_object_mut().unwrap().remove("ingest_timestamp");
        expected.as_object_mut().unwrap().remove("ingest_timestamp");
        assert_eq!(got, expected, "{id}");
    }
}

#[test]
fn a_lost_ingest_pipeline_is_created_again() {
    use elasticsearch::http::Method;
    let _one = one_at_a_time();
    let url = services::es();
    let (mut c, index) = fresh_pipeline_index(&url, "es-lost");
    // As after a server restart that lost its data: the pipeline is gone.
    c.request(
        Method::Delete,
        &format!("/_ingest/pipeline/{PIPELINE}"),
        None,
        &[404],
    )
    .unwrap();
    let doc = BulkDoc {
        index: index.clone(),
        id: "x".into(),
        source: r#"{"message":"m"}"#.into(),
    };
    assert!(c.index_all(&[doc], Some(PIPELINE)).unwrap().is_empty());
    assert_eq!(
        ingest_pipeline_status(&mut c),
        200,
        "the pipeline was not created again"
    );
    let docs = es_documents(&url, &index);
    assert!(docs["x"]["ingest_timestamp"].is_string());
}
