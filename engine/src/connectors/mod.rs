//! Connectors: how the engine opens the Kafka and ZeroMQ sources and the Elasticsearch and
//! Kafka sinks from its configuration, plus what they share (Kafka client settings, the retry
//! policy). The sources and sinks themselves live in `sources/` and `sinks/`.
//!
//! | what | module | selected by |
//! | --- | --- | --- |
//! | Kafka topic → lines | [`crate::sources::kafka`] | `kafka:[TOPIC][?eof]` source |
//! | ZeroMQ SUB → batch lines | [`crate::sources::zmq`] | `zmq:[ENDPOINT]` source |
//! | documents → Elasticsearch `_bulk` | [`crate::sinks::elasticsearch`] | `--sink elasticsearch` |
//! | results → Kafka results topic | [`crate::sinks::kafka`] | `--sink kafka` |
//!
//! Settings come from the `[kafka]` / `[elasticsearch]` maps of [`EngineConfig`] (the config
//! file, then `KAFKA_*` / `ELASTICSEARCH_*`), plus the original unprefixed variables
//! `RETRY_ATTEMPTS`, `RETRY_TIMEOUT` and `LOGS_STREAM_ZMQ_ENDPOINT` from the environment.

pub mod kafka_config;
pub mod retry;

use crate::config::{EngineConfig, SinkKind};
use crate::sinks::elasticsearch::{ElasticsearchConfig, ElasticsearchSink};
use crate::sinks::kafka::KafkaSink;
use crate::sinks::{Sink, SinkError};
use crate::sources::kafka::{Assignment, KafkaSource};
use crate::sources::zmq::{ZmqSource, ENDPOINT_ENV};
use crate::sources::{LineSource, SourceError, SourceSpec};
use kafka_config::KafkaSettings;

/// A variable of the process environment (blank counts as unset).
pub fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Opens the connector sources among `specs` (Kafka, ZeroMQ) for the reader that drives the
/// sources; the others are opened by [`crate::sources::open_all`].
pub fn open_sources(
    specs: &[SourceSpec],
    config: &EngineConfig,
    assignment: Assignment,
) -> Result<Vec<Box<dyn LineSource>>, SourceError> {
    let mut sources: Vec<Box<dyn LineSource>> = Vec::new();
    let max = config.run.max_line_bytes;
    for spec in specs {
        match spec {
            SourceSpec::Kafka(kafka) => {
                let settings = KafkaSettings::from_map(&config.kafka);
                sources.push(Box::new(KafkaSource::open(
                    &settings, kafka, assignment, max,
                )?));
            }
            SourceSpec::Zmq(zmq) => {
                let endpoint = zmq.resolve_endpoint(env_var(ENDPOINT_ENV).as_deref());
                sources.push(Box::new(ZmqSource::open(zmq, &endpoint, max)?));
            }
            _ => {}
        }
    }
    Ok(sources)
}

/// Opens worker `worker`'s connector sinks named in `run.sinks` (Elasticsearch, Kafka).
pub fn open_sinks(config: &EngineConfig, worker: usize) -> Result<Vec<Box<dyn Sink>>, SinkError> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    for kind in &config.run.sinks {
        match kind {
            SinkKind::Elasticsearch => {
                let es = ElasticsearchConfig::from_settings(&config.elasticsearch, env_var)?;
                sinks.push(Box::new(ElasticsearchSink::open(
                    es,
                    &config.run.data_dir,
                    worker,
                )?));
            }
            SinkKind::Kafka => {
                let settings = KafkaSettings::from_map(&config.kafka);
                sinks.push(Box::new(KafkaSink::open(&settings)?));
            }
            _ => {}
        }
    }
    Ok(sinks)
}
