//! What the job manager writes: [`JobOutput`] upserts and deletes of `<index>_incidents` and
//! `<index>_log_agg` documents, their deterministic ids, and their logsight-shaped JSON.

use crate::incidents::{AggKey, AggValue, IncidentValue, WindowKey};
use chrono::DateTime;
use operators::incident::WINDOW_MS;
use operators::timestamp::to_rfc3339_millis;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// logsight's `IncidentsStatus.RAISED`, the only status the job writes.
pub const STATUS_RAISED: u8 = 1;

/// One change to a sink: upsert a document under a deterministic id, or delete it.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutput {
    /// Index (write or overwrite) `doc` under `id` in `index`.
    Upsert {
        index: String,
        id: String,
        doc: Value,
    },
    /// Remove the document `id` from `index` (its window lost all lines, became normal under
    /// `FILTER_NORMAL`, or was pruned).
    Delete { index: String, id: String },
}

impl JobOutput {
    /// The target index.
    pub fn index(&self) -> &str {
        match self {
            JobOutput::Upsert { index, .. } | JobOutput::Delete { index, .. } => index,
        }
    }

    /// The document id.
    pub fn id(&self) -> &str {
        match self {
            JobOutput::Upsert { id, .. } | JobOutput::Delete { id, .. } => id,
        }
    }
}

/// The incidents index of an index prefix.
pub fn incidents_index(index: &str) -> String {
    format!("{index}_incidents")
}

/// The log aggregates index of an index prefix.
pub fn log_agg_index(index: &str) -> String {
    format!("{index}_log_agg")
}

/// FNV-1a, 128 bits: stable across builds and platforms (unlike `std`'s `DefaultHasher`),
/// which ids must be, since a restarted or upgraded manager has to rewrite the same documents.
struct Fnv128(u128);

impl Fnv128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

    fn new() -> Self {
        Fnv128(Self::OFFSET)
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u128::from(b);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    /// A length-prefixed field, so `("ab","c")` and `("a","bc")` hash differently.
    fn field(&mut self, text: &str) {
        self.bytes(&(text.len() as u64).to_le_bytes());
        self.bytes(text.as_bytes());
    }

    fn hex(&self) -> String {
        format!("{:032x}", self.0)
    }
}

/// The document id of a window's incident: a hash of index, tags and window start.
pub fn incident_id(key: &WindowKey) -> String {
    let mut h = Fnv128::new();
    h.field("incident");
    h.field(&key.index);
    h.bytes(&(key.tags.len() as u64).to_le_bytes());
    for (k, v) in key.tags.iter() {
        h.field(k);
        h.field(v);
    }
    h.bytes(&key.minute_ms.to_le_bytes());
    h.hex()
}

/// The document id of a minute's log aggregate: a hash of index and window start.
pub fn log_agg_id(key: &AggKey) -> String {
    let mut h = Fnv128::new();
    h.field("log_agg");
    h.field(&key.index);
    h.bytes(&key.minute_ms.to_le_bytes());
    h.hex()
}

/// RFC 3339 UTC with milliseconds; the raw milliseconds for times chrono cannot represent
/// (not reachable from parsed timestamps, but a document must still be written).
fn time_value(ms: i64) -> Value {
    match DateTime::from_timestamp_millis(ms) {
        Some(ts) => Value::String(to_rfc3339_millis(&ts)),
        None => Value::from(ms),
    }
}

/// The `<index>_incidents` document of a window, in logsight's shape: `timestamp` and
/// `timestamp_end` are the window's end, `timestamp_start` its start (as logsight wrote them),
/// `status` is 1 (raised), and `data` holds the riskiest lines as objects.
pub fn incident_doc(key: &WindowKey, value: &IncidentValue) -> Value {
    let end = key.minute_ms.saturating_add(WINDOW_MS);
    let tags: Map<String, Value> = key
        .tags
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let data: Vec<Value> = value
        .samples
        .iter()
        .map(|s| {
            json!({
                "id": s.doc_id,
                "timestamp": time_value(s.timestamp_ms),
                "risk_score": s.risk_score,
                "template_id": s.template_id,
                "message": s.message,
            })
        })
        .collect();
    json!({
        "timestamp": time_value(end),
        "risk": value.risk.0,
        "severity": value.severity,
        "count_messages": value.count_messages,
        "count_states": value.count_states,
        "status": STATUS_RAISED,
        "added_states": value.added_states,
        "level_faults": value.level_faults,
        "semantic_anomalies": value.semantic_anomalies,
        "tags": tags,
        "timestamp_start": time_value(key.minute_ms),
        "timestamp_end": time_value(end),
        "data": data,
    })
}

/// The `<index>_log_agg` document of a minute, in logsight's shape:
/// `{"timestamp": <window start>, "log_levels": {level: count}, "prediction": n, "count": n}`.
pub fn log_agg_doc(key: &AggKey, value: &AggValue) -> Value {
    let levels: Map<String, Value> = value
        .levels
        .iter()
        .map(|(k, &v)| (k.clone(), Value::from(v)))
        .collect();
    json!({
        "timestamp": time_value(key.minute_ms),
        "log_levels": levels,
        "prediction": value.prediction_sum,
        "count": value.total,
    })
}

/// The upsert of a window's incident.
pub fn incident_upsert(key: &WindowKey, value: &IncidentValue) -> JobOutput {
    JobOutput::Upsert {
        index: incidents_index(&key.index),
        id: incident_id(key),
        doc: incident_doc(key, value),
    }
}

/// The upsert of a minute's log aggregate.
pub fn log_agg_upsert(key: &AggKey, value: &AggValue) -> JobOutput {
    JobOutput::Upsert {
        index: log_agg_index(&key.index),
        id: log_agg_id(key),
        doc: log_agg_doc(key, value),
    }
}

/// Documents by (target index, id): what a sink holds after applying outputs.
pub type DocStore = BTreeMap<(String, String), Value>;

/// Applies outputs to an in-memory sink, as Elasticsearch would (upsert overwrites, delete of a
/// missing id is a no-op). For tests, replays and comparisons with [`crate::recompute_batch`].
pub fn apply_outputs<'a>(store: &mut DocStore, outputs: impl IntoIterator<Item = &'a JobOutput>) {
    for output in outputs {
        match output {
            JobOutput::Upsert { index, id, doc } => {
                store.insert((index.clone(), id.clone()), doc.clone());
            }
            JobOutput::Delete { index, id } => {
                store.remove(&(index.clone(), id.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incidents::{Risk, Sample};
    use operators::model::Tags;

    fn key(index: &str, tags: &[(&str, &str)], minute_ms: i64) -> WindowKey {
        WindowKey {
            index: index.into(),
            tags: std::sync::Arc::new(
                tags.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<Tags>(),
            ),
            minute_ms,
        }
    }

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let a = incident_id(&key("app", &[("service", "api")], 60_000));
        assert_eq!(a, incident_id(&key("app", &[("service", "api")], 60_000)));
        assert_eq!(a.len(), 32);
        let others = [
            incident_id(&key("app", &[("service", "api")], 120_000)),
            incident_id(&key("app2", &[("service", "api")], 60_000)),
            incident_id(&key("app", &[("service", "db")], 60_000)),
            incident_id(&key("app", &[("servic", "eapi")], 60_000)),
            incident_id(&key("app", &[], 60_000)),
            log_agg_id(&AggKey {
                index: "app".into(),
                minute_ms: 60_000,
            }),
        ];
        for other in &others {
            assert_ne!(&a, other);
        }
        // Pinned: a change of the hash would orphan every document already written.
        let empty = Fnv128::new().hex();
        assert_eq!(empty, "6c62272e07bb014262b821756295c58d");
        let mut h = Fnv128::new();
        h.bytes(b"a");
        assert_eq!(h.hex(), "d228cb696f1a8caf78912b704e4a8964");
    }

    #[test]
    fn incident_document_shape() {
        let k = key("app", &[("service", "api")], 1_445_191_260_000);
        let value = IncidentValue {
            risk: Risk(50.0),
            severity: 2,
            count_messages: 4,
            count_states: 2,
            added_states: 1,
            level_faults: 1,
            semantic_anomalies: 0,
            first_ms: 1_445_191_261_000,
            last_ms: 1_445_191_300_000,
            samples: vec![Sample {
                doc_id: "d1".to_owned(),
                timestamp_ms: 1_445_191_307_978,
                risk_score: 25,
                template_id: "t1".to_owned(),
                message: "boom".to_owned(),
            }],
        };
        let want = json!({
            "timestamp": "2015-10-18T18:02:00.000Z",
            "risk": 50.0,
            "severity": 2,
            "count_messages": 4,
            "count_states": 2,
            "status": 1,
            "added_states": 1,
            "level_faults": 1,
            "semantic_anomalies": 0,
            "tags": {"service": "api"},
            "timestamp_start": "2015-10-18T18:01:00.000Z",
            "timestamp_end": "2015-10-18T18:02:00.000Z",
            "data": [{
                "id": "d1",
                "timestamp": "2015-10-18T18:01:47.978Z",
                "risk_score": 25,
                "template_id": "t1",
                "message": "boom",
            }],
        });
        assert_eq!(incident_doc(&k, &value), want);
        match incident_upsert(&k, &value) {
            JobOutput::Upsert { index, id, .. } => {
                assert_eq!(index, "app_incidents");
                assert_eq!(id, incident_id(&k));
            }
            other => panic!("expected an upsert, got {other:?}"),
        }
    }

    #[test]
    fn log_agg_document_shape() {
        let k = AggKey {
            index: "app".into(),
            minute_ms: 0,
        };
        let mut value = AggValue::default();
        value.levels.insert("INFO".to_owned(), 3);
        value.levels.insert("ERROR".to_owned(), 1);
        value.prediction_sum = 1;
        value.total = 4;
        let want = json!({
            "timestamp": "1970-01-01T00:00:00.000Z",
            "log_levels": {"ERROR": 1, "INFO": 3},
            "prediction": 1,
            "count": 4,
        });
        assert_eq!(log_agg_doc(&k, &value), want);
        assert_eq!(log_agg_upsert(&k, &value).index(), "app_log_agg");
    }

    #[test]
    fn unrepresentable_times_stay_numbers() {
        assert_eq!(time_value(i64::MAX), Value::from(i64::MAX));
    }

    #[test]
    fn store_applies_upserts_and_deletes() {
        let mut store = DocStore::new();
        let up = |id: &str, n: u64| JobOutput::Upsert {
            index: "i".to_owned(),
            id: id.to_owned(),
            doc: Value::from(n),
        };
        let del = |id: &str| JobOutput::Delete {
            index: "i".to_owned(),
            id: id.to_owned(),
        };
        apply_outputs(
            &mut store,
            &[up("a", 1), up("b", 2), up("a", 3), del("b"), del("c")],
        );
        let want: DocStore = [(("i".to_owned(), "a".to_owned()), Value::from(3))].into();
        assert_eq!(store, want);
    }
}
