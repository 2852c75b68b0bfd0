//! Sources and bad input: quarantine of every kind of bad line, TCP, stdin, gzip, globs and
//! directories, and configuration precedence (file < env < flag).

mod common;

use common::*;
use std::io::Write;
use std::process::{ChildStdin, Stdio};

#[test]
fn bad_input_is_quarantined_and_the_run_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("batches.ndjson");
    let mut data = Vec::new();
    data.extend_from_slice(br#"{"index":"app","logs":[{"message":"disk sda1 failed","level":"ERROR","id":"a1"},{"message":"user 7 logged in"}]}"#);
    data.extend_from_slice(b"\n{\"index\": \"app\", \"logs\": [\n"); // invalid JSON
    data.extend_from_slice(b"{\"index\":\"app\",\"logs\":[{\"message\":\"caf\xe9\"}]}\n"); // invalid UTF-8
    data.extend_from_slice(
        format!(
            "{{\"index\":\"app\",\"logs\":[{{\"message\":\"{}\"}}]}}\n",
            "x".repeat(5000)
        )
        .as_bytes(),
    ); // too long
    data.extend_from_slice(b"{\"index\":\"app\"}\n"); // missing logs
    data.extend_from_slice(b"{\"logs\":[{\"message\":\"m\"}]}\n"); // missing index
    data.extend_from_slice(b"{\"index\":\"Bad/Index\",\"logs\":[]}\n"); // invalid index
    data.extend_from_slice(b"{\"index\":\"app\",\"logs\":[{\"message\":\"user 8 logged in\"}]}\n");
    std::fs::write(&input, data).unwrap();
    let dir = tmp.path().join("data");
    let d = dir.display().to_string();
    let out = run_ok(&[
        "run",
        "--decode",
        "batch",
        "--max-line-bytes",
        "4096",
        "--data-dir",
        &d,
        &input.display().to_string(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("6 quarantined"), "{stderr}");

    let docs = documents(&dir, "app_pipeline");
    assert_eq!(docs.len(), 3);
    let ids: Vec<&String> = docs.keys().collect();
    assert!(ids.iter().all(|id| id.len() == 16));
    let quarantine = stored_lines(&dir, "quarantine");
    let mut reasons: Vec<(u64, String)> = quarantine
        .iter()
        .map(|q| {
            (
                q["_source"]["position"].as_u64().unwrap(),
                q["_source"]["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    reasons.sort();
    let expected = [
        (1, "invalid_json"),
        (2, "invalid_utf8"),
        (3, "line_too_long"),
        (4, "invalid_batch"),
        (5, "invalid_batch"),
        (6, "invalid_index"),
    ];
    let expected: Vec<(u64, String)> = expected.iter().map(|(p, r)| (*p, r.to_string())).collect();
    assert_eq!(reasons, expected);
    let missing_logs = quarantine
        .iter()
        .find(|q| q["_source"]["position"] == 4)
        .unwrap();
    assert!(missing_logs["_source"]["detail"]
        .as_str()
        .unwrap()
        .contains("logs"));
    assert!(quarantine.iter().all(|q| q["_source"]["source"]
        .as_str()
        .unwrap()
        .ends_with("batches.ndjson")));
}

#[test]
fn tcp_source_reads_batches_until_the_connection_closes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().display().to_string();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let child = logsight(&[
        "run",
        "--decode",
        "batch",
        "--data-dir",
        &d,
        &format!("tcp://{addr}?once"),
    ])
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stream = None;
    for _ in 0..200 {
        if let Ok(s) = std::net::TcpStream::connect(&addr) {
            stream = Some(s);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let mut stream = stream.expect("the tcp source listens");
    for i in 0..50 {
        writeln!(
            stream,
            r#"{{"index":"net","logs":[{{"message":"request {i} served in {i} ms","id":"r{i}"}}]}}"#
        )
        .unwrap();
    }
    writeln!(stream, "not json").unwrap();
    drop(stream);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = documents(tmp.path(), "net_pipeline");
    assert_eq!(docs.len(), 50);
    let templates: std::collections::BTreeSet<_> = template_ids(&docs).into_values().collect();
    assert_eq!(templates.len(), 1);
    assert_eq!(stored_lines(tmp.path(), "quarantine").len(), 1);
}

/// `logsight run -` writing documents to stdout, with `lines` lines of `job <i> finished`
/// already written to its stdin (returned open).
fn stdin_run(data_dir: &std::path::Path, lines: usize) -> (std::process::Child, ChildStdin) {
    let mut child = logsight(&[
        "run",
        "--sink",
        "stdout",
        "--data-dir",
        &data_dir.display().to_string(),
        "-",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for i in 0..lines {
        writeln!(stdin, "job {i} finished").unwrap();
    }
    stdin.flush().unwrap();
    (child, stdin)
}

#[test]
fn stdin_to_stdout() {
    let tmp = tempfile::tempdir().unwrap();
    let (child, stdin) = stdin_run(tmp.path(), 10);
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let docs: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), 10);
    assert_eq!(docs[0]["_index"], "default_pipeline");
    assert_eq!(docs[9]["_source"]["template"], "job <*> finished");
}

#[test]
fn sigterm_on_a_stdin_stream_writes_what_was_read_and_exits_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    // The stream stays open: only the signal ends the run.
    let (mut child, mut stdin) = stdin_run(tmp.path(), 100);
    // Documents are counted as they come, so the signal waits for the run to be going (a
    // fixed sleep lost the race on a loaded machine, before anything was read).
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut docs = 0;
        for _ in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            docs += 1;
            let _ = tx.send(());
        }
        docs
    });
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .expect("a first document within a minute");
    // More lines right before the signal: some may be read and not yet written when it lands.
    for i in 100..200 {
        writeln!(stdin, "job {i} finished").unwrap();
    }
    stdin.flush().unwrap();
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let docs = reader.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("stopped on a signal"), "{stderr}");
    // Everything read was written: as many documents as lines in, the first 100 at least.
    let lines_in = stderr
        .split("logsight run: ")
        .nth(1)
        .and_then(|s| s.split(" lines in").next())
        .and_then(|n| n.parse::<usize>().ok());
    assert_eq!(lines_in, Some(docs), "{stderr}");
    assert!((100..=200).contains(&docs), "{docs}: {stderr}");
}

#[test]
fn gzip_glob_and_directory_inputs_read_the_same_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::fs::copy(dataset("HDFS"), logs.join("a.log")).unwrap();
    let spark = std::fs::read(dataset("Spark")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(logs.join("b.log.gz")).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all(&spark).unwrap();
    gz.finish().unwrap();

    let by_dir = tmp.path().join("d1");
    let by_glob = tmp.path().join("d2");
    run_ok(&[
        "run",
        "--data-dir",
        &by_dir.display().to_string(),
        &logs.display().to_string(),
    ]);
    run_ok(&[
        "run",
        "--data-dir",
        &by_glob.display().to_string(),
        &format!("{}/*", logs.display()),
    ]);
    let a = documents(&by_dir, "default_pipeline");
    let b = documents(&by_glob, "default_pipeline");
    assert_eq!(a.len(), 4000);
    assert!(a == b);
    assert!(a.values().any(|d| d["_source"]["message"]
        .as_str()
        .unwrap()
        .contains("SecurityManager")));
}

#[test]
fn config_precedence_is_file_then_env_then_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("c.toml");
    let from_file = tmp.path().join("from-file");
    std::fs::write(
        &config,
        format!(
            "[run]\nindex = \"fileidx\"\ndata_dir = \"{}\"\n[analytics.anomaly]\nthreshold = 1.0\n",
            from_file.display()
        ),
    )
    .unwrap();
    let input = tmp.path().join("in.log");
    std::fs::write(&input, "user 1 logged in\nuser 2 logged in\n").unwrap();
    let c = config.display().to_string();
    let i = input.display().to_string();

    // File only: index and data dir from the file, nothing reaches threshold 1.0.
    run_ok(&["run", "--config", &c, &i]);
    let docs = documents(&from_file, "fileidx_pipeline");
    assert_eq!(docs.len(), 2);
    assert!(docs.values().all(|d| d["_source"]["prediction"] == 0));

    // Env over file: threshold 0 flags every line. Flag over file: the index.
    let flagged = tmp.path().join("flagged");
    let out = logsight(&[
        "run",
        "--config",
        &c,
        "--index",
        "flagidx",
        "--data-dir",
        &flagged.display().to_string(),
        &i,
    ])
    .env("PREDICTION_THRESHOLD", "0")
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = documents(&flagged, "flagidx_pipeline");
    assert_eq!(docs.len(), 2);
    assert!(docs.values().all(|d| d["_source"]["prediction"] == 1));

    // `config check` shows the effective values, secrets hidden.
    let out = logsight(&["config", "check", "--config", &c])
        .env("PREDICTION_THRESHOLD", "0.5")
        .env("ELASTICSEARCH_PASSWORD", "hunter2")
        .output()
        .unwrap();
    assert!(out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("threshold = 0.5"), "{shown}");
    assert!(shown.contains("index = \"fileidx\""));
    assert!(shown.contains("password = \"***\""));
    assert!(!shown.contains("hunter2"));
    let bad = logsight(&["config", "check"])
        .env("PREDICTION_THRESHOLD", "2")
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

#[test]
fn run_pipeline_false_runs_no_pipeline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.log");
    std::fs::write(&input, "hello 1\nhello 2\n").expect("write");
    let data = dir.path().join("data");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_logsight"))
        .args(["run", "--data-dir"])
        .arg(&data)
        .arg(&input)
        .env("RUN_PIPELINE", "false")
        .output()
        .expect("runs");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("RUN_PIPELINE=false"));
    assert!(!data.exists(), "no store written");
}
