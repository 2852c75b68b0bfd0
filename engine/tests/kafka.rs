//! Kafka against a real broker (tansu, started by scripts/services.sh): a topic of 4 partitions
//! read by a 2-process cluster (each process reading its own partitions) into the local store,
//! one process killed with SIGKILL mid-stream and the cluster restarted: every line stored
//! exactly once, under its deterministic id, with the same template ids as one process reading
//! the whole topic, and the group's offsets committed; results published to the results topic.

mod common;
#[path = "support/services.rs"]
mod services;

use common::*;
use logsight_engine::sinks::doc_id_for_position;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 4;

/// Produces `lines` to explicit partitions (line `i` to partition `i % 4`).
fn produce(topic: &str, lines: &[String]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", services::kafka())
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for (i, line) in lines.iter().enumerate() {
        let mut record = BaseRecord::<(), String>::to(topic)
            .payload(line)
            .partition(i as i32 % PARTITIONS);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(50));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// `n` lines of the Loghub samples, taken round-robin over the datasets (many templates, so
/// every worker gets documents).
fn test_lines(n: usize) -> Vec<String> {
    let sets: Vec<Vec<String>> = DATASETS
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(dataset(name)).expect("dataset readable");
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned)
                .collect()
        })
        .collect();
    (0..n)
        .map(|i| sets[i % sets.len()][(i / sets.len()) % 2000].clone())
        .collect()
}

/// The ids the pipeline gives `n` lines produced by [`produce`]: offset `i / 4` of partition
/// `i % 4`.
fn expected_ids(topic: &str, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|i| {
            let origin = format!("kafka:{topic}/{}", i as i32 % PARTITIONS);
            doc_id_for_position(&origin, (i / PARTITIONS as usize) as u64, 0)
        })
        .collect()
}

/// Process `p` of a 2-process cluster reading `source`; `summary`: where to write the summary
/// JSON (process 0 only).
fn cluster_process(
    p: usize,
    hostfile: &Path,
    dir: &Path,
    source: &str,
    stderr: Stdio,
    summary: Option<&Path>,
) -> Child {
    let mut cmd: Command = logsight(&[
        "run",
        source,
        "--data-dir",
        &dir.display().to_string(),
        "-w",
        "1",
        "-n",
        "2",
        "-p",
        &p.to_string(),
        "--hostfile",
        &hostfile.display().to_string(),
        "--epoch-lines",
        "250",
        "--progress-secs",
        "0",
    ]);
    if let Some(path) = summary {
        cmd.arg("--summary-json").arg(path);
    }
    cmd.env("KAFKA_BOOTSTRAP_SERVERS", services::kafka())
        .stderr(stderr);
    cmd.spawn().expect("logsight starts")
}

fn wait_ok(child: &mut Child, what: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut stderr);
            }
            assert!(status.success(), "{what} failed: {status}: {stderr}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish in {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The offsets `group` committed on `topic`, by partition.
fn committed_offsets(topic: &str, group: &str) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", services::kafka())
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

#[test]
fn two_processes_read_four_partitions_exactly_once_through_a_kill_9() {
    let topic = services::unique("ls-kafka-src");
    let group = services::unique("ls-group");
    services::create_topic(&topic, PARTITIONS as u32);
    let n = 6_000;
    let lines = test_lines(n);
    produce(&topic, &lines);

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let hostfile = tmp.path().join("hosts");
    std::fs::write(
        &hostfile,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port()),
    )
    .unwrap();
    let source = format!("kafka:{topic}?eof&group={group}");

    // First run: killed with SIGKILL once a few epochs are checkpointed (the survivor's
    // complaints about its lost peer are expected, so not shown).
    let mut p0 = cluster_process(0, &hostfile, &dir, &source, Stdio::null(), None);
    let mut p1 = cluster_process(1, &hostfile, &dir, &source, Stdio::null(), None);
    wait_for_commit(&dir, 2, &mut p0, Duration::from_secs(60));
    p1.kill().unwrap(); // SIGKILL
    p1.wait().unwrap();
    // Timely cannot lose a peer: the survivor stops too (with an error), or is stopped.
    let deadline = Instant::now() + Duration::from_secs(20);
    while p0.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = p0.kill();
    p0.wait().unwrap();
    let partial = stored_lines(&dir, "default_pipeline").len();
    assert!(
        partial < n,
        "killed too late: {partial} of {n} lines were already stored"
    );

    // Restart the cluster: it resumes from the checkpoint and ends at the partitions' ends.
    let summary_path = tmp.path().join("summary.json");
    let mut p0 = cluster_process(
        0,
        &hostfile,
        &dir,
        &source,
        Stdio::piped(),
        Some(&summary_path),
    );
    let mut p1 = cluster_process(1, &hostfile, &dir, &source, Stdio::piped(), None);
    wait_ok(
        &mut p0,
        "process 0 after the restart",
        Duration::from_secs(60),
    );
    wait_ok(
        &mut p1,
        "process 1 after the restart",
        Duration::from_secs(30),
    );

    let docs = documents(&dir, "default_pipeline"); // asserts no duplicate stored lines
    assert_eq!(stored_lines(&dir, "default_pipeline").len(), n);
    let ids: BTreeSet<String> = docs.keys().cloned().collect();
    assert_eq!(
        ids,
        expected_ids(&topic, n),
        "document ids are not the deterministic ones"
    );
    let messages: BTreeSet<&str> = docs
        .values()
        .filter_map(|d| d["_source"]["message"].as_str())
        .collect();
    let sent: BTreeSet<&str> = lines.iter().map(String::as_str).collect();
    assert_eq!(
        messages, sent,
        "stored messages differ from the produced lines"
    );
    // Both processes read their own partitions (worker w reads p % 2 == w): the restarted
    // cluster read the rest of the topic, some of it in each process.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary_path).expect("summary written"))
            .expect("summary JSON");
    let by_worker: Vec<u64> = summary["lines_in_by_worker"]
        .as_array()
        .expect("lines in by worker")
        .iter()
        .map(|v| v.as_u64().expect("a count"))
        .collect();
    assert_eq!(by_worker.len(), 2, "{summary}");
    assert!(
        by_worker.iter().all(|n| *n > 0),
        "a process read nothing: {by_worker:?}"
    );
    // The restart reads what was not committed: at least what the kill left unwritten.
    let reread = by_worker.iter().sum::<u64>() as usize;
    assert!(
        (n - partial..n).contains(&reread),
        "the restart read {reread} lines ({partial} of {n} were stored at the kill)"
    );
    // Epochs and mining order come from partitions and offsets only: one process reading all
    // four partitions gives the same documents, template ids included.
    let single = tmp.path().join("single");
    let out = logsight(&[
        "run",
        &format!("kafka:{topic}?eof&group={group}-single"),
        "--data-dir",
        &single.display().to_string(),
        "--epoch-lines",
        "250",
        "--progress-secs",
        "0",
    ])
    .env("KAFKA_BOOTSTRAP_SERVERS", services::kafka())
    .output()
    .expect("logsight runs");
    assert!(
        out.status.success(),
        "single-process run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference = documents(&single, "default_pipeline");
    assert_eq!(template_ids(&docs), template_ids(&reference));
    assert!(
        docs == reference,
        "2 processes with a kill -9 and 1 process stored different documents"
    );
    // Both processes wrote documents (the lines are spread over the workers).
    for w in ["w000", "w001"] {
        let any = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .ends_with(&format!("-{w}.ndjson"))
            });
        assert!(any, "worker {w} wrote no documents");
    }
    // Offsets are committed to the group once checkpointed: all of them at the end.
    let committed = committed_offsets(&topic, &group);
    let per_partition = (n / PARTITIONS as usize) as i64;
    assert_eq!(
        committed,
        (0..PARTITIONS)
            .map(|p| (p, per_partition))
            .collect::<BTreeMap<_, _>>()
    );
}

#[test]
fn results_go_to_the_results_topic_keyed_by_index() {
    let results = services::unique("ls-results");
    services::create_topic(&results, 2);
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.log");
    let n = 300;
    std::fs::write(&input, test_lines(n).join("\n") + "\n").unwrap();
    let dir = tmp.path().join("data");
    let out = logsight(&[
        "run",
        &input.display().to_string(),
        "--data-dir",
        &dir.display().to_string(),
        "--index",
        "kres",
        "--sink",
        "local",
        "--sink",
        "kafka",
        "--progress-secs",
        "0",
    ])
    .env("KAFKA_HOST", services::kafka())
    .env("KAFKA_RESULTS_TOPIC", &results)
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", services::kafka())
        .set("group.id", services::unique("ls-check"))
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition_offset(&results, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut eof = BTreeSet::new();
    let mut got = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while eof.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "results not consumed in time ({} so far)",
            got.len()
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                eof.remove(&m.partition());
                assert_eq!(m.key(), Some(&b"kres"[..]), "results are keyed by index");
                let headers = m.headers().expect("headers");
                let id = headers
                    .iter()
                    .find(|h| h.key == "id")
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .expect("id header");
                let value: serde_json::Value =
                    serde_json::from_slice(m.payload().unwrap()).unwrap();
                let record: operators::model::ResultRecord =
                    serde_json::from_value(value.clone()).unwrap();
                assert!(!record.template_id.is_empty());
                assert!(got.insert(id, value).is_none(), "a result was sent twice");
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
            }
            Some(Err(e)) => panic!("consuming results: {e}"),
            None => {}
        }
    }
    let stored = documents(&dir, "kres_pipeline");
    assert_eq!(got.len(), n);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        stored.keys().collect::<Vec<_>>()
    );
}

#[test]
fn a_missing_topic_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let topic = services::unique("ls-missing");
    let out = logsight(&[
        "run",
        &format!("kafka:{topic}?eof"),
        "--data-dir",
        &tmp.path().display().to_string(),
    ])
    .env("KAFKA_BOOTSTRAP_SERVERS", services::kafka())
    .output()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&topic) && err.contains("kafka"),
        "unclear error: {err}"
    );
}
