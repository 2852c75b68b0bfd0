//! The Kafka results topic (written by `sinks::kafka`) as the job manager's record source:
//! key = index, value = the result record JSON, headers `id` (document id) and `es_index`.
//!
//! Partitions are assigned manually (no group join, no rebalance). Positions are the next
//! offset per partition (`kafka:<topic>/<partition>`); the checkpoint is the authority on
//! restart, partitions without a position start at the group's committed offset, else at the
//! beginning. [`RecordSource::acknowledge`] commits the checkpointed offsets to the group
//! (`group_id`, default `logsight`), only after the job outputs and the checkpoint are durable.
//!
//! A poll returns as soon as it has `max` records, or every partition has reported its end
//! (`enable.partition.eof`, no high watermarks: some brokers report them wrong), or the wait
//! given at open has passed; so `--once` ends when the topic is drained.

use super::{io_error, record_from_document, Skipped};
use crate::connectors::kafka_config::{Client, KafkaSettings};
use crate::sources::kafka::{assignment, valid_topic, SourceContext};
use logsight_jobs::service::Positions;
use logsight_jobs::{JobError, JobRecord, RecordSource};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// The results topic, read from every partition.
pub struct KafkaResultsSource {
    consumer: BaseConsumer<SourceContext>,
    topic: String,
    servers: String,
    partitions: Vec<i32>,
    next: BTreeMap<i32, i64>,
    at_eof: BTreeMap<i32, bool>,
    committed: BTreeMap<i32, i64>,
    assigned: bool,
    /// Longest a poll waits for records when not every partition is at its end.
    wait: Duration,
    skipped: Skipped,
}

impl KafkaResultsSource {
    /// A consumer of `settings.results_topic` (`KAFKA_RESULTS_TOPIC`); `wait` bounds each poll.
    pub fn open(settings: &KafkaSettings, wait: Duration) -> Result<Self, JobError> {
        let topic = settings.results_topic.clone();
        if !valid_topic(&topic) {
            return Err(io_error(
                "kafka",
                format!("{topic:?} is not a valid results topic name"),
            ));
        }
        let servers = settings.bootstrap_servers.clone();
        let consumer: BaseConsumer<SourceContext> = settings
            .manual_consumer_config()
            .create_with_context(SourceContext)
            .map_err(|e| {
                io_error(
                    format!("kafka {servers}"),
                    format!(
                        "cannot create a consumer (properties {:?}): {e}",
                        settings.property_names(Client::Consumer)
                    ),
                )
            })?;
        let metadata = consumer
            .fetch_metadata(Some(&topic), METADATA_TIMEOUT)
            .map_err(|e| {
                io_error(
                    format!("kafka {servers}"),
                    format!("metadata of {topic}: {e}"),
                )
            })?;
        let count = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len());
        if count == 0 {
            return Err(io_error(
                format!("kafka {servers}"),
                format!("results topic {topic} not found or without partitions (create it first)"),
            ));
        }
        let partitions: Vec<i32> = (0..count).filter_map(|p| i32::try_from(p).ok()).collect();
        tracing::info!("jobs: results topic {topic} on {servers}, {count} partitions");
        Ok(KafkaResultsSource {
            consumer,
            at_eof: partitions.iter().map(|p| (*p, false)).collect(),
            topic,
            servers,
            partitions,
            next: BTreeMap::new(),
            committed: BTreeMap::new(),
            assigned: false,
            wait,
            skipped: Skipped::default(),
        })
    }

    pub fn skipped(&self) -> u64 {
        self.skipped.count
    }

    fn key(&self, partition: i32) -> String {
        format!("kafka:{}/{partition}", self.topic)
    }

    fn error(&self, what: &str, e: impl std::fmt::Display) -> JobError {
        io_error(
            format!("kafka topic {} on {}", self.topic, self.servers),
            format!("{what}: {e}"),
        )
    }

    fn assign(&mut self) -> Result<(), JobError> {
        let tpl = assignment(&self.topic, &self.partitions, &self.next)
            .map_err(|e| self.error("assigning partitions", e))?;
        self.consumer
            .assign(&tpl)
            .map_err(|e| self.error("assigning partitions", e))?;
        self.assigned = true;
        Ok(())
    }

    /// The record of one message, or why it is skipped (`Ok(None)`: not a pipeline result).
    fn record(&self, m: &impl Message) -> Result<Option<JobRecord>, String> {
        let mut id = None;
        let mut es_index = None;
        if let Some(headers) = m.headers() {
            for h in headers.iter() {
                let value = h.value.and_then(|v| std::str::from_utf8(v).ok());
                match h.key {
                    "id" => id = value.map(str::to_owned),
                    "es_index" => es_index = value.map(str::to_owned),
                    _ => {}
                }
            }
        }
        let key = m
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .ok_or("no index in the message key")?;
        let es_index = es_index.unwrap_or_else(|| format!("{key}{}", super::PIPELINE_SUFFIX));
        let id = id.ok_or("no id header")?;
        let payload = m.payload().ok_or("no payload")?;
        let source: serde_json::Value =
            serde_json::from_slice(payload).map_err(|e| format!("payload is not JSON: {e}"))?;
        record_from_document(&es_index, &id, &source)
    }
}

impl RecordSource for KafkaResultsSource {
    fn name(&self) -> &str {
        "kafka"
    }

    fn poll(&mut self, max: usize) -> Result<Vec<JobRecord>, JobError> {
        if !self.assigned {
            self.assign()?;
        }
        let mut out = Vec::new();
        let deadline = Instant::now() + self.wait;
        while out.len() < max.max(1) {
            let all_eof = self.at_eof.values().all(|e| *e);
            let timeout = if all_eof {
                Duration::ZERO
            } else {
                deadline
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(100))
            };
            match self.consumer.poll(timeout) {
                None if all_eof || Instant::now() >= deadline => break,
                None => {}
                Some(Ok(m)) => {
                    let (p, o) = (m.partition(), m.offset());
                    self.next.insert(p, o + 1);
                    self.at_eof.insert(p, false);
                    match self.record(&m) {
                        Ok(Some(r)) => out.push(r),
                        Ok(None) => {}
                        Err(reason) => {
                            let at = format!("{}/{p}@{o}", self.topic);
                            self.skipped.skip("kafka", &at, &reason);
                        }
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    self.at_eof.insert(p, true);
                }
                Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => {
                    return Err(self.error("consuming", e));
                }
                Some(Err(e)) => {
                    tracing::warn!("jobs: kafka topic {}: {e}", self.topic);
                    if Instant::now() >= deadline {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    fn positions(&self) -> Positions {
        self.next
            .iter()
            .map(|(p, o)| (self.key(*p), o.to_string()))
            .collect()
    }

    fn resume(&mut self, positions: &Positions) -> Result<(), JobError> {
        for p in self.partitions.clone() {
            if let Some(v) = positions.get(&self.key(p)) {
                let offset = v.parse::<i64>().map_err(|_| JobError::Config {
                    name: "kafka position",
                    value: v.clone(),
                    reason: "expected an offset",
                })?;
                self.next.insert(p, offset);
            }
        }
        self.assign()
    }

    fn acknowledge(&mut self, positions: &Positions) -> Result<(), JobError> {
        let mut tpl = TopicPartitionList::new();
        let mut newer = Vec::new();
        for p in self.partitions.clone() {
            let Some(offset) = positions
                .get(&self.key(p))
                .and_then(|v| v.parse::<i64>().ok())
            else {
                continue;
            };
            if self.committed.get(&p).is_some_and(|c| *c >= offset) {
                continue;
            }
            if tpl
                .add_partition_offset(&self.topic, p, Offset::Offset(offset))
                .is_ok()
            {
                newer.push((p, offset));
            }
        }
        if newer.is_empty() {
            return Ok(());
        }
        match self.consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => self.committed.extend(newer),
            // The checkpoint is the authority on restart; the next round commits again.
            Err(e) => tracing::warn!("jobs: committing offsets of {}: {e}", self.topic),
        }
        Ok(())
    }
}
