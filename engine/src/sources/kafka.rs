//! The Kafka source: reads a topic with librdkafka (rdkafka's `BaseConsumer`), one message per
//! line (raw log line or logsight batch JSON, per `--decode`), and commits consumer-group
//! offsets only for epochs that every sink has made durable (at-least-once).
//!
//! # Partitions and workers
//!
//! The source is manually *assigned* partitions (no group subscription, so no rebalances and
//! no group-join delay): a reader that is worker `w` of `n` reading workers takes every
//! partition `p` with `p % n == w` ([`partitions_for`]). The engine today drives all sources
//! from timely worker 0 (`pipeline.rs`), so one consumer in process 0 reads every partition
//! and the decode stage spreads the lines over all workers of all processes. When the driver
//! reads per worker, each worker opens its own source with its index; more workers than
//! partitions leave the extra workers without partitions (idle, and `?eof` ends them at
//! once). The partition count is read once at start: partitions added later are read only
//! after a restart.
//!
//! # Positions, ids and offsets
//!
//! Every partition is an origin `kafka:<topic>/<partition>` whose position is the next offset
//! to read (`Position { lines: offset, offset }`), and a batch holds consecutive offsets of one
//! partition, so a line's position is its offset and its document id
//! (`doc_id_for_position(origin, offset, 0)`) is the same in every replay. On restart the
//! checkpointed positions win; partitions without one start at the group's committed offset,
//! else at `auto.offset.reset` (default `earliest`). [`LineSource::acknowledge`] commits the
//! checkpointed positions to the group (`CommitMode::Sync`), i.e. only offsets whose records
//! every sink acknowledged; a failed commit is logged and repeated with the next checkpoint.
//!
//! # End of input
//!
//! A topic has no end: the source stays `Pending` when idle. With `?eof` it ends once every
//! assigned partition reported partition EOF (`enable.partition.eof`) with nothing read since;
//! high watermarks are not used (some brokers report them wrong).

use super::{Batch, LineSource, Poll, Position, Positions, SourceError};
use crate::connectors::kafka_config::{Client, KafkaSettings};
use crate::wire::RawLine;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long to wait for the topic's metadata at start.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// Lowest interval between two identical consumer warnings.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// `kafka:` on the command line: `kafka:[TOPIC][?eof][&group=ID]` or
/// `kafka://BROKERS/[TOPIC][?…]`. Unset parts come from the `[kafka]` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaSpec {
    /// `bootstrap.servers` override.
    pub brokers: Option<String>,
    pub topic: Option<String>,
    pub group_id: Option<String>,
    /// End when every assigned partition is at its end.
    pub until_eof: bool,
}

impl KafkaSpec {
    /// Parses what follows `kafka:`.
    pub fn parse(rest: &str) -> KafkaSpec {
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut spec = KafkaSpec::default();
        let topic = match main.strip_prefix("//") {
            Some(authority_path) => {
                let (brokers, topic) = authority_path
                    .split_once('/')
                    .unwrap_or((authority_path, ""));
                spec.brokers = Some(brokers.to_owned()).filter(|b| !b.is_empty());
                topic
            }
            None => main,
        };
        spec.topic = Some(topic.to_owned()).filter(|t| !t.is_empty());
        for part in query.split('&') {
            match part.split_once('=') {
                Some(("group", id)) if !id.is_empty() => spec.group_id = Some(id.to_owned()),
                Some(("eof", v)) => spec.until_eof = v != "false" && v != "0",
                None if part == "eof" => spec.until_eof = true,
                _ => {}
            }
        }
        spec
    }

    /// The settings with this spec's overrides applied.
    pub fn apply(&self, settings: &KafkaSettings) -> KafkaSettings {
        let mut s = settings.clone();
        if let Some(b) = &self.brokers {
            s.bootstrap_servers = b.clone();
        }
        if let Some(t) = &self.topic {
            s.topic = t.clone();
        }
        if let Some(g) = &self.group_id {
            s.group_id = g.clone();
        }
        s
    }
}

/// Which share of the partitions a reader takes: it is reader `index` of `readers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    pub index: usize,
    pub readers: usize,
}

impl Assignment {
    /// One reader for all partitions.
    pub const ALL: Assignment = Assignment {
        index: 0,
        readers: 1,
    };
}

/// The partitions of `0..count` that reader `index` of `readers` reads: `p % readers == index`.
pub fn partitions_for(assignment: Assignment, count: usize) -> Vec<i32> {
    let readers = assignment.readers.max(1);
    (0..count)
        .filter(|p| p % readers == assignment.index)
        .filter_map(|p| i32::try_from(p).ok())
        .collect()
}

/// Whether `topic` is a legal Kafka topic name.
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Client callbacks: librdkafka's errors go to the log, except partition EOF, which is how
/// the source learns that it caught up (not an error).
pub struct SourceContext;

impl ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(rdkafka::error::RDKafkaErrorCode::PartitionEOF);
        if eof {
            tracing::debug!("librdkafka: {reason}");
        } else {
            tracing::warn!("librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for SourceContext {}

/// A Kafka topic as a line source.
pub struct KafkaSource {
    consumer: BaseConsumer<SourceContext>,
    topic: String,
    servers: String,
    partitions: Vec<i32>,
    /// Next offset to hand out, per partition (known once read or resumed).
    next: BTreeMap<i32, i64>,
    /// Partitions at their end with nothing read since.
    at_eof: BTreeMap<i32, bool>,
    until_eof: bool,
    assigned: bool,
    /// Offsets already committed to the group.
    committed: BTreeMap<i32, i64>,
    /// A message read that did not fit the last batch: (partition, offset, line).
    held: Option<(i32, i64, RawLine)>,
    max_line_bytes: usize,
    last_warning: Option<Instant>,
}

impl KafkaSource {
    /// Connects, reads the topic's partition count and picks this reader's partitions. They
    /// are assigned at [`LineSource::resume`] (or the first poll).
    pub fn open(
        settings: &KafkaSettings,
        spec: &KafkaSpec,
        assignment: Assignment,
        max_line_bytes: usize,
    ) -> Result<Self, SourceError> {
        let settings = spec.apply(settings);
        let topic = settings.topic.clone();
        if !valid_topic(&topic) {
            return Err(SourceError::Spec(format!(
                "kafka: {topic:?} is not a valid topic name (letters, digits, '.', '_', '-')"
            )));
        }
        let config = settings.client_config(
            Client::Consumer,
            &[
                ("group.id", &settings.group_id),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("enable.partition.eof", "true"),
                ("auto.offset.reset", "earliest"),
            ],
        );
        let servers = settings.bootstrap_servers.clone();
        let consumer: BaseConsumer<SourceContext> =
            config.create_with_context(SourceContext).map_err(|e| {
                SourceError::Spec(format!(
                    "kafka: cannot create a consumer for {servers} (properties {:?}): {e}",
                    settings.property_names(Client::Consumer)
                ))
            })?;
        let count = partition_count(&consumer, &topic, &servers)?;
        let partitions = partitions_for(assignment, count);
        tracing::info!(
            "kafka source: topic {topic} on {servers}: {count} partitions, reader {} of {} reads {partitions:?}",
            assignment.index,
            assignment.readers
        );
        Ok(KafkaSource {
            consumer,
            at_eof: partitions.iter().map(|p| (*p, false)).collect(),
            topic,
            servers,
            partitions,
            next: BTreeMap::new(),
            until_eof: spec.until_eof,
            assigned: false,
            committed: BTreeMap::new(),
            held: None,
            max_line_bytes,
            last_warning: None,
        })
    }

    /// The partitions this source reads.
    pub fn partitions(&self) -> &[i32] {
        &self.partitions
    }

    /// The origin (source name in positions and document ids) of a partition.
    pub fn origin(topic: &str, partition: i32) -> String {
        format!("kafka:{topic}/{partition}")
    }

    fn assign(&mut self) -> Result<(), SourceError> {
        let mut tpl = TopicPartitionList::with_capacity(self.partitions.len());
        for &p in &self.partitions {
            let offset = match self.next.get(&p) {
                Some(&o) => Offset::Offset(o),
                // The group's committed offset, else `auto.offset.reset`.
                None => Offset::Stored,
            };
            tpl.add_partition_offset(&self.topic, p, offset)
                .map_err(|e| self.error("assigning partitions", e))?;
        }
        self.consumer
            .assign(&tpl)
            .map_err(|e| self.error("assigning partitions", e))?;
        self.assigned = true;
        Ok(())
    }

    fn error(&self, what: &str, e: KafkaError) -> SourceError {
        SourceError::Spec(format!(
            "kafka: {what} (topic {} on {}): {e}",
            self.topic, self.servers
        ))
    }

    fn warn(&mut self, e: &KafkaError) {
        if self.last_warning.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            self.last_warning = Some(Instant::now());
            tracing::warn!(
                "kafka source (topic {} on {}): {e}",
                self.topic,
                self.servers
            );
        }
    }

    fn to_line(&self, payload: Option<&[u8]>) -> RawLine {
        let mut bytes = payload.unwrap_or_default();
        if let Some(rest) = bytes.strip_suffix(b"\n") {
            bytes = rest.strip_suffix(b"\r").unwrap_or(rest);
        }
        if bytes.len() > self.max_line_bytes {
            return RawLine {
                bytes: bytes[..self.max_line_bytes].to_vec(),
                oversize: Some(bytes.len() as u64),
            };
        }
        RawLine {
            bytes: bytes.to_vec(),
            oversize: None,
        }
    }
}

/// The partition count of `topic`, with a clear error when the topic is missing.
fn partition_count(
    consumer: &BaseConsumer<SourceContext>,
    topic: &str,
    servers: &str,
) -> Result<usize, SourceError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(|e| {
            SourceError::Spec(format!(
                "kafka: no metadata for topic {topic} from {servers}: {e}"
            ))
        })?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(SourceError::Spec(format!(
            "kafka: topic {topic} not found on {servers}"
        )));
    };
    if let Some(err) = t.error() {
        return Err(SourceError::Spec(format!(
            "kafka: topic {topic} on {servers}: {} (create the topic first)",
            rdkafka::error::RDKafkaErrorCode::from(err)
        )));
    }
    if t.partitions().is_empty() {
        return Err(SourceError::Spec(format!(
            "kafka: topic {topic} on {servers} has no partitions"
        )));
    }
    Ok(t.partitions().len())
}

impl LineSource for KafkaSource {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn poll(&mut self, max_lines: usize) -> Result<Poll, SourceError> {
        if !self.assigned {
            self.assign()?;
        }
        let mut batch: Option<(i32, i64, Vec<RawLine>)> = None;
        if let Some((p, o, line)) = self.held.take() {
            batch = Some((p, o, vec![line]));
        }
        while batch.as_ref().map_or(0, |b| b.2.len()) < max_lines.max(1) {
            let (p, o, line) = match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(m)) => (m.partition(), m.offset(), self.to_line(m.payload())),
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    self.at_eof.insert(p, true);
                    continue;
                }
                Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => {
                    return Err(self.error("consuming", e));
                }
                Some(Err(e)) => {
                    self.warn(&e);
                    continue;
                }
            };
            self.at_eof.insert(p, false);
            match &mut batch {
                None => batch = Some((p, o, vec![line])),
                Some((bp, first, lines)) if *bp == p && *first + lines.len() as i64 == o => {
                    lines.push(line)
                }
                // Another partition, or a gap in the offsets: the next batch starts here.
                Some(_) => {
                    self.held = Some((p, o, line));
                    break;
                }
            }
        }
        match batch {
            Some((p, first, lines)) => {
                self.next.insert(p, first + lines.len() as i64);
                Ok(Poll::Batch(Batch {
                    origin: Self::origin(&self.topic, p),
                    first_pos: u64::try_from(first).unwrap_or(0),
                    lines,
                }))
            }
            None if self.until_eof && self.at_eof.values().all(|e| *e) => Ok(Poll::Finished),
            None => Ok(Poll::Pending),
        }
    }

    fn positions(&self) -> Positions {
        self.next
            .iter()
            .filter_map(|(p, o)| {
                let o = u64::try_from(*o).ok()?;
                Some((
                    Self::origin(&self.topic, *p),
                    Position {
                        lines: o,
                        offset: o,
                    },
                ))
            })
            .collect()
    }

    fn resume(&mut self, positions: &Positions) -> Result<(), SourceError> {
        for &p in &self.partitions {
            if let Some(pos) = positions.get(&Self::origin(&self.topic, p)) {
                let offset = i64::try_from(pos.offset).map_err(|_| {
                    SourceError::Spec(format!(
                        "kafka: checkpointed offset {} is out of range",
                        pos.offset
                    ))
                })?;
                self.next.insert(p, offset);
            }
        }
        self.assign()
    }

    fn acknowledge(&mut self, positions: &Positions) -> Result<(), SourceError> {
        let mut tpl = TopicPartitionList::new();
        let mut newer = Vec::new();
        for p in self.partitions.clone() {
            let Some(pos) = positions.get(&Self::origin(&self.topic, p)) else {
                continue;
            };
            let Ok(offset) = i64::try_from(pos.offset) else {
                continue;
            };
            if self.committed.get(&p).is_some_and(|c| *c >= offset) {
                continue;
            }
            if let Err(e) = tpl.add_partition_offset(&self.topic, p, Offset::Offset(offset)) {
                self.warn(&e);
                continue;
            }
            newer.push((p, offset));
        }
        if newer.is_empty() {
            return Ok(());
        }
        match self.consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                tracing::debug!(
                    "kafka source: committed offsets {newer:?} of {}",
                    self.topic
                );
                self.committed.extend(newer);
            }
            // The checkpoint is the authority on restart; the next checkpoint commits again.
            Err(e) => self.warn(&e),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_parsed() {
        assert_eq!(KafkaSpec::parse(""), KafkaSpec::default());
        let s = KafkaSpec::parse("logs?eof&group=g1");
        assert_eq!(s.topic.as_deref(), Some("logs"));
        assert_eq!(s.group_id.as_deref(), Some("g1"));
        assert!(s.until_eof);
        let s = KafkaSpec::parse("//a:9092,b:9092/logs");
        assert_eq!(s.brokers.as_deref(), Some("a:9092,b:9092"));
        assert_eq!(s.topic.as_deref(), Some("logs"));
        assert!(!s.until_eof);
        let s = KafkaSpec::parse("//a:9092?eof");
        assert_eq!(
            (s.brokers.as_deref(), s.topic.as_deref()),
            (Some("a:9092"), None)
        );
        assert!(s.until_eof);
        let settings = s.apply(&KafkaSettings::default());
        assert_eq!(settings.bootstrap_servers, "a:9092");
        assert_eq!(settings.topic, "pipeline");
    }

    #[test]
    fn partitions_are_spread_by_modulo_and_extra_readers_idle() {
        let a = |index, readers| Assignment { index, readers };
        assert_eq!(partitions_for(Assignment::ALL, 4), [0, 1, 2, 3]);
        assert_eq!(partitions_for(a(0, 2), 4), [0, 2]);
        assert_eq!(partitions_for(a(1, 2), 4), [1, 3]);
        assert_eq!(partitions_for(a(2, 3), 4), [2]);
        assert!(partitions_for(a(5, 6), 4).is_empty());
        // Every partition is read by exactly one reader.
        let mut all: Vec<i32> = (0..3).flat_map(|i| partitions_for(a(i, 3), 7)).collect();
        all.sort_unstable();
        assert_eq!(all, (0..7).collect::<Vec<_>>());
    }

    #[test]
    fn topic_names_are_checked() {
        assert!(valid_topic("pipeline_results"));
        assert!(valid_topic("a.b-c"));
        assert!(!valid_topic(""));
        assert!(!valid_topic("a b"));
        assert!(!valid_topic("a\0b"));
        assert!(!valid_topic(".."));
    }
}
