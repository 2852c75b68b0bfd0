//! The logsight wire format: log batches, single logs and pipeline result records.
//!
//! Fields this crate does not know are kept in `extra` maps (serde `flatten`), so a record read
//! and written back loses nothing.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Tag set of a log: key/value pairs such as `{"service": "api"}`.
pub type Tags = BTreeMap<String, String>;

/// The tags a log gets when it has none: `{"default": "default"}`, as in logsight.
pub fn default_tags() -> Tags {
    let mut tags = Tags::new();
    tags.insert("default".to_owned(), "default".to_owned());
    tags
}

/// A batch of logs as sent by clients: `{"id","index","logs":[...],"metadata":{}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogBatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Tenant/application index prefix; results go to `<index>_pipeline`.
    pub index: String,
    pub logs: Vec<LogRecord>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One log line: `{"message","timestamp","level","id","metadata":{},"tags":{}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default = "default_tags")]
    pub tags: Tags,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl LogRecord {
    /// A record holding only a message, with default tags.
    pub fn from_message(message: impl Into<String>) -> Self {
        LogRecord {
            message: message.into(),
            timestamp: None,
            level: None,
            id: None,
            metadata: Map::new(),
            tags: default_tags(),
            extra: Map::new(),
        }
    }
}

/// The top-level keys of a serialized [`ResultRecord`] (the log's own fields and the ones the
/// analytics add). An `extra` field of the same name would serialize twice, so writers drop it.
pub const RESULT_FIELDS: [&str; 14] = [
    "message",
    "timestamp",
    "level",
    "id",
    "metadata",
    "tags",
    "template",
    "template_id",
    "params",
    "prediction",
    "anomaly_score",
    "risk_score",
    "added_state",
    "ingest_timestamp",
];

/// A pipeline result: the log plus everything the analytics added. One per input line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRecord {
    #[serde(flatten)]
    pub log: LogRecord,
    /// Masked message with variables as `<*>`.
    pub template: String,
    /// Stable id of the template (see `miner::TemplateId`), as a hex string.
    pub template_id: String,
    /// Variable values of this line, in order of appearance.
    pub params: Vec<String>,
    /// 1 when the line is flagged as a semantic anomaly.
    pub prediction: u8,
    pub anomaly_score: f64,
    pub risk_score: u32,
    /// 1 when this line's template was seen for the first time.
    pub added_state: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_timestamp: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_keep_unknown_fields_and_default_tags() {
        let text = r#"{"id":"b1","index":"shop","source":"edge-7","metadata":{"k":1},
            "logs":[{"message":"hello","timestamp":"2021-01-01T00:00:00Z","level":"INFO",
            "id":"l1","metadata":{},"host":"web-1"},
            {"message":"bye","tags":{"service":"cart"}}]}"#;
        let batch: LogBatch = serde_json::from_str(text).unwrap();
        assert_eq!(batch.extra["source"], "edge-7");
        assert_eq!(batch.logs[0].tags, default_tags());
        assert_eq!(batch.logs[0].extra["host"], "web-1");
        assert_eq!(batch.logs[1].tags["service"], "cart");
        assert_eq!(batch.logs[1].timestamp, None);
        let back: LogBatch = serde_json::from_str(&serde_json::to_string(&batch).unwrap()).unwrap();
        assert_eq!(back, batch);
    }

    #[test]
    fn batches_missing_required_fields_are_errors() {
        assert!(serde_json::from_str::<LogBatch>(r#"{"index":"a"}"#).is_err());
        assert!(serde_json::from_str::<LogBatch>(r#"{"logs":[]}"#).is_err());
        assert!(serde_json::from_str::<LogBatch>(r#"{"index":"a","logs":[{}]}"#).is_err());
    }

    #[test]
    fn results_flatten_the_log_and_round_trip() {
        let result = ResultRecord {
            log: LogRecord::from_message("disk full"),
            template: "disk full".into(),
            template_id: "00000000000000ff".into(),
            params: vec![],
            prediction: 1,
            anomaly_score: 0.9,
            risk_score: 80,
            added_state: 1,
            ingest_timestamp: None,
        };
        let value = serde_json::to_value(&result).unwrap();
        assert_eq!(value["message"], "disk full");
        assert_eq!(value["tags"]["default"], "default");
        assert_eq!(value["risk_score"], 80);
        assert!(value.get("ingest_timestamp").is_none());
        let back: ResultRecord = serde_json::from_value(value).unwrap();
        assert_eq!(back, result);
    }
}
