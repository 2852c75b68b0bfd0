//! The Kafka sink: pipeline results to the results topic (`KAFKA_RESULTS_TOPIC`, default
//! `pipeline_results`) that the job manager consumes.
//!
//! One message per pipeline document: key = the logical index (`app`, so one index's results
//! stay in one partition, in order), value = the document's `_source` (a JSON result record,
//! readable as `operators::model::ResultRecord`), headers `id` (the deterministic document id,
//! for deduplication: a replay after a crash sends the same ids again) and `es_index`
//! (`app_pipeline`). [`Sink::commit`] flushes the producer and fails unless every message of the
//! epoch was delivered, so the epoch (and the source offsets after it) is checkpointed only
//! once the results are in Kafka: at-least-once.

use super::{DocRef, Sink, SinkError, SinkState};
use crate::connectors::kafka_config::{Client, KafkaSettings};
use crate::sources::kafka::valid_topic;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Longest wait for deliveries at commit (librdkafka's own `message.timeout.ms` fails
/// undeliverable messages before this by default).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(330);

/// Counts failed deliveries and keeps the first error.
#[derive(Default)]
pub struct DeliveryTracker {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut first) = self.first_error.lock() {
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

impl DeliveryTracker {
    /// Failures since the last call, with the first error.
    fn take(&self) -> (u64, Option<String>) {
        let n = self.failed.swap(0, Ordering::Relaxed);
        let e = self.first_error.lock().ok().and_then(|mut f| f.take());
        (n, e)
    }
}

/// The results topic as a sink.
pub struct KafkaSink {
    producer: BaseProducer<DeliveryTracker>,
    topic: String,
    servers: String,
    sent: u64,
}

fn err(what: String) -> SinkError {
    SinkError::Io {
        path: "kafka".to_owned(),
        source: std::io::Error::other(what),
    }
}

impl KafkaSink {
    /// A producer for `settings.results_topic`.
    pub fn open(settings: &KafkaSettings) -> Result<Self, SinkError> {
        let topic = settings.results_topic.clone();
        if !valid_topic(&topic) {
            return Err(err(format!("{topic:?} is not a valid results topic name")));
        }
        let servers = settings.bootstrap_servers.clone();
        let producer = settings
            .client_config(Client::Producer, &[("linger.ms", "5")])
            .create_with_context(DeliveryTracker::default())
            .map_err(|e| {
                err(format!(
                    "cannot create a producer for {servers} (properties {:?}): {e}",
                    settings.property_names(Client::Producer)
                ))
            })?;
        tracing::info!("kafka sink: results to topic {topic} on {servers}");
        Ok(KafkaSink {
            producer,
            topic,
            servers,
            sent: 0,
        })
    }

    /// Messages handed to the producer so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }
}

impl Sink for KafkaSink {
    fn name(&self) -> &str {
        "kafka"
    }

    fn write(&mut self, doc: &DocRef<'_>) -> Result<(), SinkError> {
        let es_index = doc.kind.es_index(doc.index);
        let headers = OwnedHeaders::new_with_capacity(2)
            .insert(Header {
                key: "id",
                value: Some(doc.id),
            })
            .insert(Header {
                key: "es_index",
                value: Some(es_index.as_str()),
            });
        let mut record = BaseRecord::to(&self.topic)
            .key(doc.index)
            .payload(doc.source)
            .headers(headers);
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                // The local queue is full: serve deliveries, then try again.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.producer.poll(Duration::from_millis(100));
                }
                Err((e, _)) => {
                    return Err(err(format!(
                        "producing to {} on {}: {e}",
                        self.topic, self.servers
                    )));
                }
            }
        }
        self.sent += 1;
        if self.sent.is_multiple_of(1024) {
            self.producer.poll(Duration::ZERO);
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<SinkState, SinkError> {
        self.producer.flush(FLUSH_TIMEOUT).map_err(|e| {
            err(format!(
                "flushing to {} on {}: {e}",
                self.topic, self.servers
            ))
        })?;
        let (failed, first) = self.producer.context().take();
        if failed > 0 {
            return Err(err(format!(
                "{failed} result message(s) to {} on {} were not delivered: {}",
                self.topic,
                self.servers,
                first.unwrap_or_default()
            )));
        }
        Ok(SinkState::new())
    }

    fn restore(&mut self, _state: Option<&SinkState>) -> Result<(), SinkError> {
        Ok(())
    }
}
