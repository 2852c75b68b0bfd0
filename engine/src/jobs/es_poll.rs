//! `<index>_pipeline` in Elasticsearch, polled by `ingest_timestamp`, as the job manager's
//! record source (what logsight's job manager did every `JOB_INTERVAL` seconds).
//!
//! Indices are discovered with `GET _cat/indices?format=json` (names ending in `_pipeline`).
//! Each index has a cursor: the last `ingest_timestamp` read (milliseconds, the precision of a
//! `date` field) and the ids already read at exactly that millisecond. A search asks for
//! `ingest_timestamp >= cursor`, sorted ascending, `max + ids` hits, and drops the ids already
//! read; so documents sharing a millisecond (a whole `_bulk` often does) are neither lost nor
//! read twice, across restarts too (cursors are the positions, `es:<index>` →
//! `{"ts":…,"ids":[…]}`). Sorting on `_id` (`search_after` on `[ingest_timestamp, _id]`) is
//! avoided: Elasticsearch 8 refuses it by default.
//!
//! Near-real-time search: a document becomes visible at the next refresh, possibly after
//! documents with a later `ingest_timestamp` were read. The source therefore only reads up to
//! `now-<settle>` (default 2 s; 0 with `--once`, which refreshes each index first), so the
//! cursor never passes documents not yet visible.
//!
//! `PARALLEL_JOBS` bounds how many indices contribute records to one poll; the next poll
//! continues with the following indices, so every index is served in turn.

use super::es_sink::es_error;
use super::{io_error, record_from_document, Skipped};
use crate::sinks::elasticsearch::{ElasticsearchConfig, EsClient};
use elasticsearch::http::Method;
use logsight_jobs::service::Positions;
use logsight_jobs::{JobError, JobRecord, RecordSource};
use operators::timestamp::to_rfc3339_millis;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const POSITION_PREFIX: &str = "es:";
/// Elasticsearch's default `index.max_result_window`.
const MAX_WINDOW: usize = 10_000;

/// Where an index was read up to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Cursor {
    /// The last `ingest_timestamp` read, epoch milliseconds (`None`: nothing read yet).
    ts_ms: Option<i64>,
    /// The ids read at exactly `ts_ms`.
    ids: BTreeSet<String>,
}

impl Cursor {
    fn encode(&self) -> String {
        json!({"ts": self.ts_ms, "ids": self.ids}).to_string()
    }

    fn decode(text: &str) -> Option<Cursor> {
        let v: Value = serde_json::from_str(text).ok()?;
        let ts_ms = match v.get("ts") {
            Some(Value::Null) | None => None,
            Some(t) => Some(t.as_i64()?),
        };
        let ids = v
            .get("ids")?
            .as_array()?
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect::<Option<_>>()?;
        Some(Cursor { ts_ms, ids })
    }
}

/// Settings of the polling source.
#[derive(Debug, Clone)]
pub struct EsPollConfig {
    pub es: ElasticsearchConfig,
    /// `PARALLEL_JOBS`: most indices read in one poll.
    pub parallel: usize,
    /// Read only documents ingested before `now - settle`.
    pub settle: Duration,
    /// `POST <index>/_refresh` before reading it (`--once`).
    pub refresh: bool,
    /// Index prefixes to read (`--index`); empty: every `*_pipeline` index.
    pub only: Vec<String>,
}

/// `*_pipeline` indices polled by ingest time.
pub struct EsPollSource {
    client: EsClient,
    config: EsPollConfig,
    cursors: BTreeMap<String, Cursor>,
    /// The index to start the next poll with (round robin).
    next_index: usize,
    skipped: Skipped,
}

/// Epoch milliseconds of an `ingest_timestamp` (truncated, as a `date` field stores it).
fn ingest_ms(source: &Value) -> Option<i64> {
    let text = source.get("ingest_timestamp")?.as_str()?;
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
        .or_else(|| operators::timestamp::parse(text).map(|t| t.timestamp_millis()))
}

impl EsPollSource {
    pub fn open(config: EsPollConfig) -> Result<Self, JobError> {
        let client = EsClient::new(config.es.clone()).map_err(es_error)?;
        Ok(EsPollSource {
            client,
            config,
            cursors: BTreeMap::new(),
            next_index: 0,
            skipped: Skipped::default(),
        })
    }

    pub fn skipped(&self) -> u64 {
        self.skipped.count
    }

    fn pipeline_indices(&mut self) -> Result<Vec<String>, JobError> {
        let only = &self.config.only;
        super::es_sink::list_indices(&mut self.client, |n| {
            super::pipeline_prefix(n).is_some() && super::index_selected(only, n)
        })
    }

    /// Up to `max` new records of `index`.
    fn poll_index(&mut self, index: &str, max: usize) -> Result<Vec<JobRecord>, JobError> {
        if self.config.refresh {
            self.client.refresh(index).map_err(es_error)?;
        }
        let cursor = self.cursors.get(index).cloned().unwrap_or_default();
        let size = (max + cursor.ids.len()).min(MAX_WINDOW);
        if cursor.ids.len() >= MAX_WINDOW {
            return Err(io_error(
                format!("elasticsearch {index}"),
                format!(
                    "more than {MAX_WINDOW} documents share the ingest_timestamp {:?}: cannot page past them",
                    cursor.ts_ms
                ),
            ));
        }
        let mut range = serde_json::Map::new();
        if let Some(ts) = cursor
            .ts_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
        {
            range.insert("gte".into(), json!(to_rfc3339_millis(&ts)));
        }
        let settle_secs = self.config.settle.as_secs_f64().ceil() as u64;
        if settle_secs > 0 {
            range.insert("lt".into(), json!(format!("now-{settle_secs}s")));
        }
        let query = if range.is_empty() {
            json!({"exists": {"field": "ingest_timestamp"}})
        } else {
            json!({"range": {"ingest_timestamp": range}})
        };
        let body = json!({
            "size": size,
            "sort": [{"ingest_timestamp": {"order": "asc"}}],
            "query": {"bool": {"filter": [query]}},
        });
        let (status, answer) = self
            .client
            .request(
                Method::Post,
                &format!("/{index}/_search"),
                Some(body),
                &[404],
            )
            .map_err(es_error)?;
        if status == 404 {
            return Ok(Vec::new());
        }
        let hits = answer
            .pointer("/hits/hits")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut cursor = cursor;
        let mut out = Vec::new();
        for hit in &hits {
            let (Some(id), Some(source)) =
                (hit.get("_id").and_then(Value::as_str), hit.get("_source"))
            else {
                continue;
            };
            let Some(ts) = ingest_ms(source) else {
                self.skipped
                    .skip("elasticsearch", id, "no ingest_timestamp");
                continue;
            };
            match cursor.ts_ms {
                Some(c) if ts < c => continue,
                Some(c) if ts == c => {
                    if !cursor.ids.insert(id.to_owned()) {
                        continue;
                    }
                }
                _ => {
                    cursor.ts_ms = Some(ts);
                    cursor.ids.clear();
                    cursor.ids.insert(id.to_owned());
                }
            }
            let es_index = hit.get("_index").and_then(Value::as_str).unwrap_or(index);
            match record_from_document(es_index, id, source) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(reason) => self.skipped.skip("elasticsearch", id, &reason),
            }
        }
        self.cursors.insert(index.to_owned(), cursor);
        Ok(out)
    }
}

impl RecordSource for EsPollSource {
    fn name(&self) -> &str {
        "elasticsearch"
    }

    fn poll(&mut self, max: usize) -> Result<Vec<JobRecord>, JobError> {
        let indices = self.pipeline_indices()?;
        let mut out = Vec::new();
        if indices.is_empty() {
            return Ok(out);
        }
        let mut served = 0;
        let start = self.next_index % indices.len();
        for k in 0..indices.len() {
            let i = (start + k) % indices.len();
            if out.len() >= max.max(1) || served >= self.config.parallel.max(1) {
                self.next_index = i;
                return Ok(out);
            }
            let records = self.poll_index(&indices[i], max.max(1) - out.len())?;
            if !records.is_empty() {
                served += 1;
                out.extend(records);
            }
        }
        self.next_index = start;
        Ok(out)
    }

    fn positions(&self) -> Positions {
        self.cursors
            .iter()
            .map(|(index, c)| (format!("{POSITION_PREFIX}{index}"), c.encode()))
            .collect()
    }

    fn resume(&mut self, positions: &Positions) -> Result<(), JobError> {
        for (key, value) in positions {
            let Some(index) = key.strip_prefix(POSITION_PREFIX) else {
                continue;
            };
            let cursor = Cursor::decode(value).ok_or_else(|| JobError::Config {
                name: "elasticsearch position",
                value: format!("{key}={value}"),
                reason: "expected {\"ts\":…,\"ids\":[…]}",
            })?;
            self.cursors.insert(index.to_owned(), cursor);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let c = Cursor {
            ts_ms: Some(1_700_000_000_123),
            ids: ["a".to_owned(), "b".to_owned()].into(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(
            Cursor::decode(&Cursor::default().encode()),
            Some(Cursor::default())
        );
        assert_eq!(Cursor::decode("{\"ts\":\"x\",\"ids\":[]}"), None);
        assert_eq!(
            ingest_ms(&json!({"ingest_timestamp": "2026-11-27T16:33:07.978123Z"})),
            Some(1_795_797_187_978)
        );
    }
}
