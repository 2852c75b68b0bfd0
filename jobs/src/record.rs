//! [`JobRecord`]: the compact projection of a pipeline result that the incident and aggregate
//! jobs need, and how it is derived from a [`ResultRecord`].
//!
//! Text fields are `Arc`s: a record is held by the manager's live set and, as a [`Line`], by the
//! dataflow's arrangement, whose merges copy values repeatedly. Shared text makes those copies
//! reference-count bumps instead of allocations, and lets the manager intern the few distinct
//! indices, tag sets and templates so a million records do not carry a million tag maps.
//!
//! [`Line`]: crate::incidents::Line

use crate::error::JobError;
use operators::incident::{minute_window, IncidentInput};
use operators::level::Level;
use operators::model::{ResultRecord, Tags};
use operators::timestamp;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Shared, immutable text.
pub type Text = Arc<str>;

/// One pipeline result as the jobs see it. `Ord + Hash` so it can live in differential
/// collections; the fields that form the window key come first, so sorting groups windows.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobRecord {
    /// Tenant/application index prefix (outputs go to `<index>_incidents`, `<index>_log_agg`).
    pub index: Text,
    pub tags: Arc<Tags>,
    /// Start of the 1-minute window of `timestamp_ms`, epoch milliseconds.
    pub minute_ms: i64,
    /// The log's time, epoch milliseconds.
    pub timestamp_ms: i64,
    pub risk_score: u32,
    pub template_id: Text,
    /// 1 when the line's template was new.
    pub added_state: u8,
    /// Canonical level (serialised as `INFO`, `ERROR`, ..., `UNKNOWN`); its name is the key of
    /// `log_levels`.
    pub level: Level,
    /// Whether the level counts as a fault for risk scoring (`level.is_fault()` for results).
    pub level_fault: bool,
    /// 1 when the line is a semantic anomaly.
    pub prediction: u8,
    pub message: Text,
    /// The result's document id: the identity used to deduplicate and retract.
    pub doc_id: Text,
}

impl JobRecord {
    /// Projects a pipeline result of `index` stored under `doc_id`.
    ///
    /// The window comes from the log's own `timestamp` (parsed with the operators' timestamp
    /// recogniser, normally the RFC 3339 text the pipeline wrote). A result without one, or with
    /// text that does not parse, falls back to its `ingest_timestamp`: the line still counts, in
    /// the minute it arrived, instead of silently vanishing from incidents and aggregates. A
    /// result with neither is rejected with [`JobError::NoTimestamp`].
    pub fn from_result(
        index: &str,
        result: &ResultRecord,
        doc_id: &str,
    ) -> Result<JobRecord, JobError> {
        let parse = |raw: &Option<String>| raw.as_deref().and_then(timestamp::parse);
        let ts = match parse(&result.log.timestamp) {
            Some(ts) => ts,
            None => {
                let fallback =
                    parse(&result.ingest_timestamp).ok_or_else(|| JobError::NoTimestamp {
                        doc_id: doc_id.to_owned(),
                        timestamp: result.log.timestamp.clone(),
                        ingest_timestamp: result.ingest_timestamp.clone(),
                    })?;
                tracing::debug!(doc_id, "no parseable log timestamp, using ingest_timestamp");
                fallback
            }
        };
        let timestamp_ms = ts.timestamp_millis();
        let level = result
            .log
            .level
            .as_deref()
            .map_or(Level::Unknown, Level::parse);
        Ok(JobRecord {
            index: index.into(),
            tags: Arc::new(result.log.tags.clone().into_owned()),
            minute_ms: minute_window(timestamp_ms),
            timestamp_ms,
            risk_score: result.risk_score,
            template_id: Arc::clone(&result.template_id),
            added_state: result.added_state,
            level,
            level_fault: level.is_fault(),
            prediction: result.prediction,
            message: result.log.message.as_str().into(),
            doc_id: doc_id.into(),
        })
    }

    /// The line as the incident math sees it.
    pub fn incident_input(&self) -> IncidentInput {
        self.line().incident_input()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use operators::model::LogRecord;

    fn result(timestamp: Option<&str>, ingest: Option<&str>, level: Option<&str>) -> ResultRecord {
        let mut log = LogRecord::from_message("disk full on /dev/sda1");
        log.timestamp = timestamp.map(str::to_owned);
        log.level = level.map(|l| l.to_owned().into());
        log.tags
            .to_mut()
            .insert("service".to_owned(), "db".to_owned());
        ResultRecord {
            log,
            template: "disk full on <*>".into(),
            template_id: "t9".into(),
            params: ["/dev/sda1"].into_iter().collect(),
            prediction: 1,
            anomaly_score: 0.9,
            risk_score: 80,
            added_state: 1,
            ingest_timestamp: ingest.map(str::to_owned),
        }
    }

    #[test]
    fn projects_a_result() {
        let got = JobRecord::from_result(
            "app",
            &result(Some("2015-10-18T18:01:47.978Z"), None, Some("err")),
            "d1",
        );
        let mut tags = Tags::new();
        tags.insert("default".to_owned(), "default".to_owned());
        tags.insert("service".to_owned(), "db".to_owned());
        let want = JobRecord {
            index: "app".into(),
            tags: Arc::new(tags),
            // 1445191307978 floored to the minute.
            minute_ms: 1_445_191_260_000,
            timestamp_ms: 1_445_191_307_978,
            risk_score: 80,
            template_id: "t9".into(),
            added_state: 1,
            level: Level::Error,
            level_fault: true,
            prediction: 1,
            message: "disk full on /dev/sda1".into(),
            doc_id: "d1".into(),
        };
        assert_eq!(got.ok(), Some(want));
    }

    #[test]
    fn falls_back_to_ingest_timestamp() {
        let ingest = Some("2015-10-18T18:02:00.000Z");
        for ts in [None, Some("not a time")] {
            let got = JobRecord::from_result("app", &result(ts, ingest, None), "d2").ok();
            assert_eq!(
                got.as_ref().map(|r| r.timestamp_ms),
                Some(1_445_191_320_000)
            );
            assert_eq!(got.as_ref().map(|r| r.level), Some(Level::Unknown));
            assert_eq!(got.map(|r| r.level_fault), Some(false));
        }
    }

    #[test]
    fn rejects_a_result_without_any_time() {
        let got = JobRecord::from_result("app", &result(Some("??"), Some("later"), None), "d3");
        match got {
            Err(JobError::NoTimestamp { doc_id, .. }) => assert_eq!(doc_id, "d3"),
            other => panic!("expected NoTimestamp, got {other:?}"),
        }
    }
}
