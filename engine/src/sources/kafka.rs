//! The Kafka source: reads a topic with librdkafka (rdkafka's `BaseConsumer`), one message per
//! line (raw log line or logsight batch JSON, per `--decode`), and commits consumer-group
//! offsets only for epochs that every sink has made durable (at-least-once).
//!
//! # Partitions and workers
//!
//! The source is manually *assigned* partitions (no group subscription, so no rebalances and
//! no group-join delay): timely worker `w` of `W = processes × workers` (global index,
//! process-major: process `p`'s thread `t` is `p × workers + t`) reads every partition `p`
//! with `p % W == w` ([`partitions_for`]), each with its own consumer. Workers beyond the
//! partition count read nothing (idle: they hold no epoch open, and still mine, score and
//! write their share of the lines read elsewhere). The partition count is read once at start:
//! partitions added later are read only after a restart (and the mapping `p % W` then also
//! covers them).
//!
//! Each partition has its own librdkafka queue: the pipeline limits how far ahead of the
//! durable epochs a partition may be read ([`LineSource::limit`]); a partition that is ahead is
//! simply not polled, and librdkafka stops fetching it when its queue is full.
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

use super::{Batch, LineSource, Poll, Position, Positions, SourceError, StreamInfo};
use crate::connectors::kafka_config::{Client, KafkaSettings};
use crate::wire::RawLine;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
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
///
/// Every assigned partition has its own librdkafka queue (`split_partition_queue`), polled
/// only while the partition is below its [`LineSource::limit`]: a partition that is ahead
/// leaves its messages in librdkafka, which stops fetching once its queue is full, so
/// backpressure needs neither `pause` nor an unbounded buffer here.
pub struct KafkaSource {
    consumer: Arc<BaseConsumer<SourceContext>>,
    topic: String,
    servers: String,
    partitions: Vec<i32>,
    /// Each partition's queue, split off the consumer's at assignment.
    queues: BTreeMap<i32, PartitionQueue<SourceContext>>,
    /// Next offset to hand out, per partition (known once read or resumed).
    next: BTreeMap<i32, i64>,
    /// Offset after the last message taken out of librdkafka, per partition (duplicates below
    /// it are dropped).
    taken: BTreeMap<i32, i64>,
    /// Since when a partition has been at its end with nothing read since.
    eof_since: BTreeMap<i32, Option<Instant>>,
    /// Messages taken out of librdkafka but not handed out yet (a gap in the offsets, the
    /// limit, or a message that arrived on the consumer's main queue), per partition.
    held: BTreeMap<i32, VecDeque<(i64, RawLine)>>,
    /// Offsets at or above which a partition hands out nothing yet (backpressure).
    limits: BTreeMap<i32, u64>,
    /// Where the next poll starts, so that no partition starves.
    cursor: usize,
    until_eof: bool,
    assigned: bool,
    /// Offsets already committed to the group.
    committed: BTreeMap<i32, i64>,
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
        let config = settings.manual_consumer_config();
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
            consumer: Arc::new(consumer),
            eof_since: partitions.iter().map(|p| (*p, None)).collect(),
            held: partitions.iter().map(|p| (*p, VecDeque::new())).collect(),
            topic,
            servers,
            partitions,
            queues: BTreeMap::new(),
            next: BTreeMap::new(),
            taken: BTreeMap::new(),
            limits: BTreeMap::new(),
            cursor: 0,
            until_eof: spec.until_eof,
            assigned: false,
            committed: BTreeMap::new(),
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
        let tpl = assignment(&self.topic, &self.partitions, &self.next)
            .map_err(|e| self.error("assigning partitions", e))?;
        self.consumer
            .assign(&tpl)
            .map_err(|e| self.error("assigning partitions", e))?;
        for &p in &self.partitions {
            let queue = self
                .consumer
                .split_partition_queue(&self.topic, p)
                .ok_or_else(|| {
                    SourceError::Spec(format!(
                        "kafka: cannot read partition {p} of {} on {} on its own",
                        self.topic, self.servers
                    ))
                })?;
            self.queues.insert(p, queue);
        }
        self.assigned = true;
        Ok(())
    }

    fn limit_of(&self, p: i32) -> u64 {
        self.limits.get(&p).copied().unwrap_or(u64::MAX)
    }

    /// Takes one message or event out of a librdkafka queue result: messages go to `held`
    /// (in offset order; duplicates dropped), partition EOF is recorded. Returns whether
    /// something of the partition arrived (a message or its EOF).
    fn take(
        &mut self,
        result: Option<Result<(i32, i64, RawLine), KafkaError>>,
    ) -> Result<bool, SourceError> {
        match result {
            None => Ok(false),
            Some(Ok((p, o, line))) => {
                if self.taken.get(&p).is_some_and(|t| o < *t) {
                    return Ok(true);
                }
                self.taken.insert(p, o + 1);
                self.eof_since.insert(p, None);
                self.held.entry(p).or_default().push_back((o, line));
                Ok(true)
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                let since = self.eof_since.entry(p).or_insert(None);
                since.get_or_insert_with(Instant::now);
                Ok(true)
            }
            Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => {
                Err(self.error("consuming", e))
            }
            Some(Err(e)) => {
                self.warn(&e);
                Ok(true)
            }
        }
    }

    /// Moves up to `max` consecutive held messages of `p` below its limit into a batch.
    fn batch_from_held(&mut self, p: i32, max: usize) -> Option<Batch> {
        let limit = self.limit_of(p);
        let queue = self.held.get_mut(&p)?;
        let mut first = None;
        let mut lines = Vec::new();
        while lines.len() < max {
            let Some(&(o, _)) = queue.front() else { break };
            let below = u64::try_from(o).is_ok_and(|o| o < limit);
            let consecutive = first.is_none_or(|f: i64| f + lines.len() as i64 == o);
            if !below || !consecutive {
                break;
            }
            let Some((o, line)) = queue.pop_front() else {
                break;
            };
            first.get_or_insert(o);
            lines.push(line);
        }
        let first = first?;
        self.next.insert(p, first + lines.len() as i64);
        Some(Batch {
            origin: Self::origin(&self.topic, p),
            first_pos: u64::try_from(first).unwrap_or(0),
            lines,
        })
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

    /// Since when `p` has been caught up: at its end, with nothing held.
    fn caught_up_since(&self, p: i32) -> Option<Instant> {
        if self.held.get(&p).is_some_and(|q| !q.is_empty()) {
            return None;
        }
        self.eof_since.get(&p).copied().flatten()
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

    fn replayable(&self) -> bool {
        true
    }

    fn poll(&mut self, max_lines: usize) -> Result<Poll, SourceError> {
        if !self.assigned {
            self.assign()?;
        }
        let max = max_lines.max(1);
        // Serves callbacks; messages of a partition fetched before its queue was split come
        // out here.
        for _ in 0..max {
            let result = self
                .consumer
                .poll(Duration::ZERO)
                .map(|r| r.map(|m| (m.partition(), m.offset(), self.to_line(m.payload()))));
            if !self.take(result)? {
                break;
            }
        }
        let n = self.partitions.len();
        for step in 0..n {
            let i = (self.cursor + step) % n;
            let p = self.partitions[i];
            let limit = self.limit_of(p);
            // Refill from librdkafka only while the partition is below its limit (else its
            // messages wait there) and what is held does not already fill a batch.
            while self.held.get(&p).map_or(0, VecDeque::len) < max
                && self
                    .taken
                    .get(&p)
                    .is_none_or(|t| u64::try_from(*t).is_ok_and(|t| t < limit))
            {
                let Some(queue) = self.queues.get(&p) else {
                    break;
                };
                let result = queue
                    .poll(Duration::ZERO)
                    .map(|r| r.map(|m| (m.partition(), m.offset(), self.to_line(m.payload()))));
                let eof = matches!(result, Some(Err(KafkaError::PartitionEOF(_))));
                if !self.take(result)? || eof {
                    break;
                }
            }
            if let Some(batch) = self.batch_from_held(p, max) {
                self.cursor = (i + 1) % n;
                return Ok(Poll::Batch(batch));
            }
        }
        let caught_up = self
            .partitions
            .iter()
            .all(|p| self.caught_up_since(*p).is_some());
        if self.until_eof && caught_up {
            Ok(Poll::Finished)
        } else {
            Ok(Poll::Pending)
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
                self.taken.insert(p, offset);
            }
        }
        self.assign()
    }

    fn streams(&self) -> Vec<StreamInfo> {
        self.partitions
            .iter()
            .filter_map(|&p| {
                Some(StreamInfo {
                    stream: u32::try_from(p).ok()?,
                    origin: Self::origin(&self.topic, p),
                    next: self.next.get(&p).and_then(|o| u64::try_from(*o).ok()),
                    caught_up_since: self.caught_up_since(p),
                })
            })
            .collect()
    }

    fn limit(&mut self, stream: u32, below: u64) {
        if let Ok(p) = i32::try_from(stream) {
            self.limits.insert(p, below);
        }
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

/// The assignment of `partitions` of `topic`, each at its next offset in `next` when known,
/// else at the group's committed offset (then `auto.offset.reset`).
pub fn assignment(
    topic: &str,
    partitions: &[i32],
    next: &BTreeMap<i32, i64>,
) -> Result<TopicPartitionList, KafkaError> {
    let mut tpl = TopicPartitionList::with_capacity(partitions.len());
    for &p in partitions {
        let offset = next.get(&p).map_or(Offset::Stored, |&o| Offset::Offset(o));
        tpl.add_partition_offset(topic, p, offset)?;
    }
    Ok(tpl)
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
