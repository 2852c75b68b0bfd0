//! ZeroMQ: batches published by a pyzmq PUB socket (scripts/zmq_publish.py, as the original
//! logsight backend publishes them: "<topic> <batch JSON>") all arrive in the local store, and a
//! malformed message is quarantined, not lost.

mod common;
#[path = "support/services.rs"]
mod services;

use common::*;
use logsight_engine::sinks::doc_id_for_log;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_publishers_batches_all_arrive() {
    let python = services::python();
    let publish = services::zmq_publish();
    let tmp = tempfile::tempdir().unwrap();
    let messages: Vec<String> = std::fs::read_to_string(dataset("Zookeeper"))
        .unwrap()
        .lines()
        .take(240)
        .map(str::to_owned)
        .collect();
    // 60 batches of 4 logs over two indices, each log with its own id.
    let mut batches = Vec::new();
    let mut expected = BTreeSet::new();
    for (b, chunk) in messages.chunks(4).enumerate() {
        let index = if b % 2 == 0 { "zmqa" } else { "zmqb" };
        let logs: Vec<serde_json::Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let id = format!("b{b}-{i}");
                expected.insert((index, doc_id_for_log(index, &id)));
                serde_json::json!({"id": id, "message": m, "level": "INFO"})
            })
            .collect();
        batches.push(serde_json::json!({"index": index, "logs": logs}).to_string());
    }
    batches.insert(30, "{not json".to_owned());
    let file = tmp.path().join("batches.ndjson");
    std::fs::write(&file, batches.join("\n") + "\n").unwrap();

    let port = free_port();
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let dir = tmp.path().join("data");
    // The pipeline connects (and waits for the publisher), then ends 3 s after the last batch.
    let run = logsight(&[
        "run",
        &format!("zmq:{endpoint}?idle_ms=3000"),
        "--decode",
        "batch",
        "--data-dir",
        &dir.display().to_string(),
        "--progress-secs",
        "0",
    ])
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let publisher = Command::new(python)
        .arg(publish)
        .args([
            "--endpoint",
            &endpoint,
            "--topic",
            "logs",
            "--wait-ms",
            "1500",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        publisher.status.success(),
        "{}",
        String::from_utf8_lossy(&publisher.stderr)
    );
    let started = Instant::now();
    let out = run.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut got = BTreeSet::new();
    for index in ["zmqa", "zmqb"] {
        for id in documents(&dir, &format!("{index}_pipeline")).into_keys() {
            got.insert((index, id));
        }
    }
    assert_eq!(got.len(), 240, "not every log arrived");
    assert_eq!(got, expected);
    let quarantined = stored_lines(&dir, "quarantine");
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0]["_source"]["reason"], "invalid_json");
}
