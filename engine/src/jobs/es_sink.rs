//! The Elasticsearch document sink of the job manager: incident and aggregate upserts as
//! `_bulk` `index` actions into `<index>_incidents` / `<index>_log_agg`, deletes by id, and
//! retention (`_delete_by_query` on `timestamp` over `*_pipeline`, `*_incidents`, `*_log_agg`).
//!
//! It reuses the pipeline sink's [`EsClient`] (settings, auth, TLS, `RETRY_ATTEMPTS` /
//! `RETRY_TIMEOUT` backoff). Upserts go through `EsClient::index_all` (no ingest pipeline);
//! a document rejected for good fails the write, so the round is not checkpointed and is
//! retried after a restart. Deletes are `DELETE /<index>/_doc/<id>` (the shared client sends
//! JSON bodies only, so no NDJSON `delete` actions); a missing document is not an error.

use super::io_error;
use crate::sinks::elasticsearch::{BulkDoc, ElasticsearchConfig, EsClient, EsError};
use elasticsearch::http::Method;
use logsight_jobs::output::JobOutput;
use logsight_jobs::{DocumentSink, JobError};
use operators::timestamp::to_rfc3339_millis;
use serde_json::{json, Value};

/// The index suffixes retention applies to.
pub const PRUNED_SUFFIXES: [&str; 3] = ["_pipeline", "_incidents", "_log_agg"];

/// Job documents into Elasticsearch.
pub struct EsDocumentSink {
    client: EsClient,
    /// `?refresh=true` on writes (tests and `--once`: documents searchable at once).
    refresh: bool,
    /// Index prefixes pruning is restricted to (`--index`); empty: every index.
    only: Vec<String>,
}

/// An Elasticsearch failure as a job error.
pub(super) fn es_error(e: EsError) -> JobError {
    io_error("elasticsearch", e)
}

impl EsDocumentSink {
    /// A sink with the given connection settings (no request yet).
    pub fn open(config: ElasticsearchConfig, refresh: bool) -> Result<Self, JobError> {
        let client = EsClient::new(config).map_err(es_error)?;
        Ok(EsDocumentSink {
            client,
            refresh,
            only: Vec::new(),
        })
    }

    /// Restricts pruning to the indices of these prefixes (`app` → `app_pipeline`,
    /// `app_incidents`, `app_log_agg`).
    pub fn restrict_to(&mut self, prefixes: &[String]) {
        self.only = prefixes.to_vec();
    }

    /// The Elasticsearch indices whose name ends in one of `suffixes`.
    pub fn indices_with(&mut self, suffixes: &[&str]) -> Result<Vec<String>, JobError> {
        list_indices(&mut self.client, |n| {
            suffixes.iter().any(|s| n.ends_with(s) && n.len() > s.len())
        })
    }

    /// Deletes the documents of `index` whose `timestamp` is before `before` (a date or
    /// Elasticsearch date math such as `now-1y`); returns how many were deleted.
    pub fn delete_older(&mut self, index: &str, before: &str) -> Result<u64, JobError> {
        let body = json!({"query": {"range": {"timestamp": {"lt": before}}}});
        let path = format!("/{index}/_delete_by_query?refresh=true&conflicts=proceed");
        let (status, answer) = self
            .client
            .request(Method::Post, &path, Some(body), &[404])
            .map_err(es_error)?;
        if status == 404 {
            return Ok(0);
        }
        if let Some(failures) = answer
            .get("failures")
            .and_then(Value::as_array)
            .filter(|f| !f.is_empty())
        {
            return Err(io_error(
                format!("elasticsearch _delete_by_query on {index}"),
                format!("{} failures, first: {}", failures.len(), failures[0]),
            ));
        }
        Ok(answer.get("deleted").and_then(Value::as_u64).unwrap_or(0))
    }

    /// Retention over every `*_pipeline`, `*_incidents` and `*_log_agg` index; per index how
    /// many documents were deleted (indices with none are left out).
    pub fn prune_before(&mut self, before: &str) -> Result<Vec<(String, u64)>, JobError> {
        let mut deleted = Vec::new();
        for index in self.indices_with(&PRUNED_SUFFIXES)? {
            if !super::index_selected(&self.only, &index) {
                continue;
            }
            let n = self.delete_older(&index, before)?;
            tracing::info!(index, deleted = n, before, "elasticsearch: pruned");
            if n > 0 {
                deleted.push((index, n));
            }
        }
        Ok(deleted)
    }
}

impl DocumentSink for EsDocumentSink {
    fn apply(&mut self, outputs: &[JobOutput]) -> Result<(), JobError> {
        let mut docs = Vec::new();
        let mut deletes = Vec::new();
        for output in outputs {
            match output {
                JobOutput::Upsert { index, id, doc } => docs.push(BulkDoc {
                    index: index.clone(),
                    id: id.clone(),
                    source: doc.to_string(),
                }),
                JobOutput::Delete { index, id } => deletes.push((index, id)),
            }
        }
        if !docs.is_empty() {
            let rejected = self.client.index_all(&docs, None).map_err(es_error)?;
            if let Some(first) = rejected.first() {
                return Err(io_error(
                    "elasticsearch",
                    format!(
                        "{} job document(s) rejected, first {}/{} (HTTP {}): {}",
                        rejected.len(),
                        first.doc.index,
                        first.doc.id,
                        first.status,
                        first.error
                    ),
                ));
            }
        }
        for (index, id) in &deletes {
            let path = format!("/{index}/_doc/{id}");
            self.client
                .request(Method::Delete, &path, None, &[404])
                .map_err(es_error)?;
        }
        if self.refresh {
            let mut touched: Vec<&str> = outputs.iter().map(JobOutput::index).collect();
            touched.sort_unstable();
            touched.dedup();
            for index in touched {
                self.client.refresh(index).map_err(es_error)?;
            }
        }
        Ok(())
    }

    fn prune(&mut self, before_ms: i64) -> Result<Vec<(String, u64)>, JobError> {
        let before = chrono::DateTime::from_timestamp_millis(before_ms)
            .map(|t| to_rfc3339_millis(&t))
            .ok_or_else(|| io_error("elasticsearch prune", "horizon out of range"))?;
        self.prune_before(&before)
    }
}
/// The names of the cluster's indices (hidden `.` ones left out) that `keep` accepts, sorted.
pub fn list_indices(
    client: &mut EsClient,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<String>, JobError> {
    let (_, body) = client
        .request(Method::Get, "/_cat/indices?format=json", None, &[])
        .map_err(es_error)?;
    let mut names: Vec<String> = body
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| r.get("index").and_then(Value::as_str))
                .filter(|n| !n.starts_with('.') && keep(n))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    Ok(names)
}
