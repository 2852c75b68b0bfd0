//! Kafka benchmark: a topic → the `logsight` pipeline → the local store, in lines/s, against a
//! bare rdkafka consumer draining the same topic in the same run; with one process and with a
//! 2-process cluster.
//!
//! ```text
//! scripts/services.sh start kafka && eval "$(scripts/services.sh env)"
//! scripts/bench.sh kafka [--lines N] [--partitions P] [--workers W] [--brokers HOST:PORT] [--tansu BIN]
//! ```
//!
//! The topic is filled once with the Loghub 2k samples (`LOGHUB_2K_DIR`, else
//! `../shared/datasets/loghub-2k`, repeated up to N lines, round-robin over the partitions) by
//! an rdkafka producer, then read by each
//! contender from the beginning until every partition reports EOF. Times are wall clock from
//! start to exit, so the pipeline's times include its start-up and final checkpoint.

use anyhow::{bail, Context};
use clap::Parser;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Measures Kafka ingest: a topic through the pipeline into the local store, in lines/s.
///
/// The pipeline runs with one process and with a 2-process cluster, against a bare rdkafka
/// consumer draining the same topic in the same run, and against the same lines from a file.
#[derive(Parser)]
#[command(after_help = "\
Examples:
  scripts/services.sh start kafka && eval \"$(scripts/services.sh env)\"
  scripts/bench.sh kafka
  scripts/bench.sh kafka --lines 1000000 --partitions 8 --workers 2

The topic is created with `tansu` and filled with the Loghub 2k samples ($LOGHUB_2K_DIR, else \
../shared/datasets/loghub-2k) repeated. Each run starts the `logsight` binary built beside \
this one (scripts/bench.sh builds both).")]
struct Args {
    /// Lines to produce into the topic (the samples repeated). Enough that start-up does not
    /// dominate: at 400k lines the bare consumer measured 337k lines/s, at 1.2M 717k.
    #[arg(long, value_name = "N", default_value_t = 1_200_000)]
    lines: usize,
    /// Partitions of the topic (lines go round-robin over them).
    #[arg(long, value_name = "P", default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..))]
    partitions: i32,
    /// Kafka bootstrap servers.
    #[arg(
        long,
        value_name = "HOST:PORT",
        env = "LOGSIGHT_TEST_KAFKA",
        default_value = "127.0.0.1:9092"
    )]
    brokers: String,
    /// The `tansu` binary, to create the topic.
    #[arg(
        long,
        value_name = "BIN",
        env = "LOGSIGHT_TEST_TANSU_BIN",
        default_value = ".services/bin/tansu"
    )]
    tansu: String,
    /// Timely workers per pipeline process (`logsight run -w`).
    #[arg(long, value_name = "W", default_value_t = 1)]
    workers: usize,
}

fn create_topic(a: &Args, topic: &str) -> anyhow::Result<()> {
    let out = Command::new(&a.tansu)
        .args([
            "topic",
            "create",
            "--broker",
            &format!("tcp://{}", a.brokers),
            "--partitions",
        ])
        .arg(a.partitions.to_string())
        .arg(topic)
        .output()
        .with_context(|| format!("running {}", a.tansu))?;
    if !out.status.success() {
        bail!(
            "tansu topic create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn produce(a: &Args, topic: &str, lines: &[String]) -> anyhow::Result<(usize, f64)> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &a.brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .create()?;
    let started = Instant::now();
    let mut bytes = 0;
    for i in 0..a.lines {
        let line = &lines[i % lines.len()];
        bytes += line.len();
        let mut record = BaseRecord::<(), String>::to(topic)
            .payload(line)
            .partition(i as i32 % a.partitions);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        if i % 4096 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(120))?;
    Ok((bytes, started.elapsed().as_secs_f64()))
}

/// Drains the topic from the beginning with a bare consumer; (messages, seconds).
fn drain(a: &Args, topic: &str) -> anyhow::Result<(usize, f64)> {
    let started = Instant::now();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &a.brokers)
        .set("group.id", format!("{topic}-bare"))
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..a.partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut eof = vec![false; a.partitions as usize];
    let mut n = 0usize;
    let mut bytes = 0usize;
    while !eof.iter().all(|e| *e) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                n += 1;
                bytes += m.payload_len();
                if let Some(e) = eof.get_mut(m.partition() as usize) {
                    *e = false;
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                if let Some(e) = eof.get_mut(p as usize) {
                    *e = true;
                }
            }
            Some(Err(e)) => bail!("consuming: {e}"),
            None => {}
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the bare consumer did not finish in 10 minutes");
        }
    }
    std::hint::black_box(bytes);
    Ok((n, started.elapsed().as_secs_f64()))
}

fn logsight_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("logsight");
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p logsight-engine --features bench-bins --bins)",
            bin.display()
        );
    }
    Ok(bin)
}

fn spawn(
    a: &Args,
    topic: &str,
    dir: &Path,
    cluster: Option<(usize, &Path)>,
) -> anyhow::Result<Child> {
    let mut cmd = Command::new(logsight_bin()?);
    // The pipeline alone is measured: the in-process job manager would run after it.
    cmd.env("INCIDENT_JOBS", "false")
        .args(["run", &format!("kafka:{topic}?eof"), "--data-dir"])
        .arg(dir)
        .args(["--progress-secs", "0", "-w", &a.workers.to_string()])
        .env("KAFKA_BOOTSTRAP_SERVERS", &a.brokers)
        // A group per run: a fresh data directory resumes from the group's committed offsets.
        .env(
            "KAFKA_GROUP_ID",
            format!(
                "{topic}-{}",
                dir.file_name().and_then(|n| n.to_str()).unwrap_or("run")
            ),
        )
        .env("LOGSIGHT_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some((p, hostfile)) = cluster {
        cmd.args(["-n", "2", "-p", &p.to_string(), "--hostfile"])
            .arg(hostfile);
    }
    cmd.env_remove("LOGSIGHT_CONFIG");
    Ok(cmd.spawn()?)
}

fn wait(child: Child, what: &str) -> anyhow::Result<String> {
    let out = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!("{what} failed: {stderr}");
    }
    Ok(stderr)
}

fn stored_documents(dir: &Path) -> anyhow::Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if name.starts_with("default_pipeline-") && name.ends_with(".ndjson") {
            n += std::fs::read(&path)?
                .iter()
                .filter(|b| **b == b'\n')
                .count();
        }
    }
    Ok(n)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn main() -> std::process::ExitCode {
    logsight_benches::run_cli(bench)
}

fn bench(a: Args) -> anyhow::Result<()> {
    let lines = logsight_benches::raw_corpus()?;
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let topic = format!("bench-kafka-{stamp}");
    create_topic(&a, &topic)?;
    let (bytes, secs) = produce(&a, &topic, &lines)?;
    println!(
        "topic {topic}: {} lines ({:.1} MB) over {} partitions, produced in {secs:.2} s ({:.0} lines/s)",
        a.lines,
        bytes as f64 / 1e6,
        a.partitions,
        a.lines as f64 / secs
    );
    let tmp = tempfile::tempdir()?;
    let mut rows: Vec<(String, f64)> = Vec::new();

    let (n, secs) = drain(&a, &topic)?;
    if n != a.lines {
        bail!("the bare consumer read {n} of {} lines", a.lines);
    }
    rows.push(("bare rdkafka consumer (drain)".into(), n as f64 / secs));

    // The pipeline's own ceiling on this machine: the same lines from a file.
    let file = tmp.path().join("lines.log");
    let mut text = String::with_capacity(a.lines * 130);
    for i in 0..a.lines {
        text.push_str(&lines[i % lines.len()]);
        text.push('\n');
    }
    std::fs::write(&file, text)?;
    let dir = tmp.path().join("file");
    let started = Instant::now();
    let out = Command::new(logsight_bin()?)
        .env("INCIDENT_JOBS", "false")
        .arg("run")
        .arg(&file)
        .arg("--data-dir")
        .arg(&dir)
        .args(["--progress-secs", "0", "-w", &a.workers.to_string()])
        .env_remove("LOGSIGHT_CONFIG")
        .output()?;
    if !out.status.success() {
        bail!(
            "the file pipeline failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let file_rate = a.lines as f64 / started.elapsed().as_secs_f64();

    let dir = tmp.path().join("one");
    let started = Instant::now();
    let child = spawn(&a, &topic, &dir, None)?;
    wait(child, "the pipeline")?;
    let secs = started.elapsed().as_secs_f64();
    let docs = stored_documents(&dir)?;
    if docs != a.lines {
        bail!("the pipeline stored {docs} of {} lines", a.lines);
    }
    rows.push((
        format!("pipeline, 1 process x {} worker(s)", a.workers),
        a.lines as f64 / secs,
    ));

    let dir = tmp.path().join("two");
    let hostfile = tmp.path().join("hosts");
    std::fs::write(
        &hostfile,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port()?, free_port()?),
    )?;
    let started = Instant::now();
    let p0 = spawn(&a, &topic, &dir, Some((0, &hostfile)))?;
    let p1 = spawn(&a, &topic, &dir, Some((1, &hostfile)))?;
    wait(p0, "process 0")?;
    wait(p1, "process 1")?;
    let secs = started.elapsed().as_secs_f64();
    let docs = stored_documents(&dir)?;
    if docs != a.lines {
        bail!("the 2-process pipeline stored {docs} of {} lines", a.lines);
    }
    rows.push((
        format!("pipeline, 2 processes x {} worker(s)", a.workers),
        a.lines as f64 / secs,
    ));

    let (n, secs) = drain(&a, &topic)?;
    if n != a.lines {
        bail!("the bare consumer read {n} of {} lines", a.lines);
    }
    rows.push((
        "bare rdkafka consumer (drain, again)".into(),
        n as f64 / secs,
    ));

    let bare = (rows[0].1 + rows[3].1) / 2.0;
    println!("\n{:<42} {:>12} {:>8}", "contender", "lines/s", "ratio");
    for (name, rate) in &rows {
        println!("{name:<42} {rate:>12.0} {:>8.2}", rate / bare);
    }
    println!("(ratio: against the mean of the two bare-consumer drains)");
    println!(
        "\nsame lines from a file, 1 process x {} worker(s): {file_rate:.0} lines/s; Kafka pipeline / file pipeline = {:.2}",
        a.workers,
        rows[1].1 / file_rate
    );
    // With no Kafka cost at all, one process would still only match the file pipeline.
    println!(
        "bound for one process: file pipeline / bare consumer = {:.2}",
        file_rate / bare
    );
    Ok(())
}
