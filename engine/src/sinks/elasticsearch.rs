//! The Elasticsearch sink and client: `_bulk` indexing of pipeline documents into
//! `<index>_pipeline` through the ingest pipeline `ingest_timestamp`, the setup it needs, and the
//! retry rules. Also used by `logsight store load`.
//!
//! - **Setup**: at start (and again after the server was unreachable, or when a bulk item says
//!   the pipeline is missing, e.g. after a restart that lost its data) the ingest pipeline
//!   `ingest_timestamp` (a `set` of `ingest_timestamp` from `{{_ingest.timestamp}}`) and the
//!   index template `logsight_pipeline` (`*_pipeline`, mappings below) are created when missing;
//!   existing ones are left as they are.
//! - **Ids**: documents keep the engine's deterministic ids and are sent with the `index`
//!   action, so a replay after a crash overwrites the same documents.
//! - **Commit**: [`Sink::commit`] sends everything buffered since the last commit in `_bulk`
//!   requests of bounded size and returns only when every document was indexed or rejected.
//!   Items failing with 429/5xx (or the whole request failing: connection refused, timeout,
//!   429, 5xx) are retried with exponential backoff, `RETRY_ATTEMPTS` attempts (default 6) with
//!   waits capped at `RETRY_TIMEOUT` seconds (default 10); if some are still failing, commit
//!   fails with an error naming the server and the last cause, the epoch is not checkpointed,
//!   and the engine stops (a restart replays it). Items rejected for good (a 4xx such as a
//!   mapping error) are not retried: each is logged with its reason and appended with its
//!   document to `<data-dir>/elasticsearch-rejected-w<NNN>.ndjson`.
//! - **Auth**: `ELASTICSEARCH_USERNAME` / `ELASTICSEARCH_PASSWORD` (basic auth); 401/403 fail
//!   at once with a clear message. The password is never logged (`Debug` shows `***`).
//!
//! Settings (the `[elasticsearch]` map: `ELASTICSEARCH_*` lower-cased, see `config.rs`):
//! `scheme` (`http`), `host` (`localhost`), `port` (9200) or a whole `url`; `username`,
//! `password`; `ca_cert` (PEM file of the CA for `https`), `verify_certs` (`false` turns
//! certificate checks off); `bulk_docs` (5000), `bulk_bytes` (8 MiB), `request_timeout`
//! (seconds, 60); `retry_attempts` / `retry_timeout`, overridden by the environment's
//! `RETRY_ATTEMPTS` / `RETRY_TIMEOUT`.

use super::{DocKind, DocRef, Sink, SinkError, SinkState};
use crate::connectors::retry::RetryPolicy;
use bytes::Bytes;
use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::headers::HeaderMap;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::{Method, StatusCode, Url};
use elasticsearch::{BulkParts, Elasticsearch};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Name of the ingest pipeline.
pub const PIPELINE: &str = "ingest_timestamp";
/// Name of the index template of `*_pipeline` indices.
pub const TEMPLATE: &str = "logsight_pipeline";

/// Errors of the Elasticsearch client.
#[derive(Debug, Error)]
pub enum EsError {
    #[error("elasticsearch settings: {0}")]
    Config(String),
    #[error("elasticsearch at {url}: authentication failed{user} (HTTP {status}): {reason}")]
    Auth {
        url: String,
        user: String,
        status: u16,
        reason: String,
    },
    #[error("elasticsearch at {url} is unavailable: {what} still failing after {attempts} attempts over {secs:.1} s (RETRY_ATTEMPTS / RETRY_TIMEOUT): {cause}")]
    Unavailable {
        url: String,
        what: String,
        attempts: u32,
        secs: f64,
        cause: String,
    },
    #[error("elasticsearch at {url}: {what} failed (HTTP {status}): {reason}")]
    Request {
        url: String,
        what: String,
        status: u16,
        reason: String,
    },
    #[error("elasticsearch: {0}")]
    Other(String),
}

impl From<EsError> for SinkError {
    fn from(e: EsError) -> Self {
        SinkError::Io {
            path: "elasticsearch".to_owned(),
            source: std::io::Error::other(e.to_string()),
        }
    }
}

/// Connection and batching settings.
#[derive(Clone, PartialEq)]
pub struct ElasticsearchConfig {
    /// `scheme://host:port`.
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM file of the CA that signed the server's certificate.
    pub ca_cert: Option<PathBuf>,
    pub verify_certs: bool,
    pub retry: RetryPolicy,
    /// Most documents in one `_bulk` request.
    pub bulk_docs: usize,
    /// Most bytes of one `_bulk` body (a larger single document goes alone).
    pub bulk_bytes: usize,
    pub request_timeout: Duration,
}

impl Default for ElasticsearchConfig {
    fn default() -> Self {
        ElasticsearchConfig {
            url: "http://localhost:9200".to_owned(),
            username: None,
            password: None,
            ca_cert: None,
            verify_certs: true,
            retry: RetryPolicy::default(),
            bulk_docs: 5_000,
            bulk_bytes: 8 << 20,
            request_timeout: Duration::from_secs(60),
        }
    }
}

impl fmt::Debug for ElasticsearchConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ElasticsearchConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("ca_cert", &self.ca_cert)
            .field("verify_certs", &self.verify_certs)
            .field("retry", &self.retry)
            .field("bulk_docs", &self.bulk_docs)
            .field("bulk_bytes", &self.bulk_bytes)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl ElasticsearchConfig {
    /// Reads the `[elasticsearch]` map; `env` looks up `RETRY_ATTEMPTS` / `RETRY_TIMEOUT`,
    /// which override the map's `retry_attempts` / `retry_timeout`.
    pub fn from_settings(
        map: &BTreeMap<String, String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, EsError> {
        let get = |k: &str| {
            map.get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let url = match get("url") {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let scheme = get("scheme")
                    .unwrap_or_else(|| "http".to_owned())
                    .to_ascii_lowercase();
                let host = get("host").unwrap_or_else(|| "localhost".to_owned());
                let port = get("port").unwrap_or_else(|| "9200".to_owned());
                format!("{scheme}://{host}:{port}")
            }
        };
        let mut c = ElasticsearchConfig {
            url,
            ..ElasticsearchConfig::default()
        };
        let parsed =
            Url::parse(&c.url).map_err(|e| EsError::Config(format!("url {:?}: {e}", c.url)))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(EsError::Config(format!(
                "url {:?}: use http:// or https:// with a host",
                c.url
            )));
        }
        c.username = get("username").or_else(|| get("user"));
        c.password = map.get("password").filter(|p| !p.is_empty()).cloned();
        c.ca_cert = get("ca_cert")
            .or_else(|| get("ca_certs"))
            .map(PathBuf::from);
        if let Some(v) = get("verify_certs") {
            c.verify_certs = !matches!(
                v.to_ascii_lowercase().as_str(),
                "false" | "0" | "no" | "off"
            );
        }
        let number = |k: &str| -> Result<Option<f64>, EsError> {
            get(k)
                .map(|v| {
                    v.parse::<f64>()
                        .ok()
                        .filter(|n| n.is_finite() && *n > 0.0)
                        .ok_or_else(|| {
                            EsError::Config(format!("{k} = {v:?}: expected a positive number"))
                        })
                })
                .transpose()
        };
        if let Some(n) = number("bulk_docs")? {
            c.bulk_docs = n as usize;
        }
        if let Some(n) = number("bulk_bytes")? {
            c.bulk_bytes = n as usize;
        }
        if let Some(n) = number("request_timeout")? {
            c.request_timeout = Duration::from_secs_f64(n);
        }
        let lookup = |name: &str| {
            env(name)
                .filter(|v| !v.trim().is_empty())
                .or_else(|| match name {
                    "RETRY_ATTEMPTS" => get("retry_attempts"),
                    "RETRY_TIMEOUT" => get("retry_timeout"),
                    _ => None,
                })
        };
        c.retry = RetryPolicy::from_lookup(lookup).map_err(|e| EsError::Config(e.to_string()))?;
        Ok(c)
    }
}

/// The ingest pipeline body.
pub fn pipeline_body() -> Value {
    json!({
        "description": "logsight: sets ingest_timestamp to the time Elasticsearch ingested the document",
        "processors": [
            {"set": {"field": "ingest_timestamp", "value": "{{_ingest.timestamp}}"}}
        ]
    })
}

/// The index template body of `*_pipeline` indices: the fields of
/// [`super::PipelineSource`] with their types. `timestamp` comes from the logs as given, so a
/// value that is not a date is kept in `_source` but not indexed (`ignore_malformed`).
pub fn template_body() -> Value {
    json!({
        "index_patterns": ["*_pipeline"],
        "priority": 200,
        "_meta": {"managed_by": "logsight"},
        "template": {
            "mappings": {
                "properties": {
                    "message": {"type": "text"},
                    "timestamp": {"type": "date", "ignore_malformed": true},
                    "ingest_timestamp": {"type": "date"},
                    "level": {"type": "keyword", "ignore_above": 256},
                    "id": {"type": "keyword", "ignore_above": 1024},
                    "template": {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 2048}}},
                    "template_id": {"type": "keyword"},
                    "params": {"type": "keyword", "ignore_above": 1024},
                    "prediction": {"type": "integer"},
                    "anomaly_score": {"type": "float"},
                    "risk_score": {"type": "integer"},
                    "added_state": {"type": "integer"},
                    "tags": {"type": "object"},
                    "metadata": {"type": "object", "enabled": false}
                }
            }
        }
    })
}

/// One document to index.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkDoc {
    /// The Elasticsearch index (`<index>_pipeline`).
    pub index: String,
    pub id: String,
    /// The `_source`, serialized.
    pub source: String,
}

impl BulkDoc {
    /// The two NDJSON lines of the `index` action.
    fn append_to(&self, body: &mut Vec<u8>) {
        let action = json!({"index": {"_index": self.index, "_id": self.id}});
        body.extend_from_slice(action.to_string().as_bytes());
        body.push(b'\n');
        body.extend_from_slice(self.source.as_bytes());
        body.push(b'\n');
    }

    fn size(&self) -> usize {
        self.index.len() + self.id.len() + self.source.len() + 40
    }
}

/// A document Elasticsearch refused for good, with its reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub doc: BulkDoc,
    pub status: u16,
    pub error: Value,
}

/// What became of one bulk item.
#[derive(Debug, Clone, PartialEq)]
enum ItemOutcome {
    Done,
    /// Worth another attempt (429, 5xx, or the pipeline was missing).
    Retry {
        status: u16,
        reason: String,
        setup: bool,
    },
    Reject {
        status: u16,
        error: Value,
    },
}

/// How an HTTP failure is handled.
enum Failure {
    /// Retry later (connection error, timeout, 429, 5xx).
    Transient(String),
    Fatal(EsError),
}

/// A blocking Elasticsearch client: the `elasticsearch` crate on a current-thread runtime.
pub struct EsClient {
    client: Elasticsearch,
    runtime: tokio::runtime::Runtime,
    config: ElasticsearchConfig,
    /// The ingest pipeline and template must be checked before the next bulk.
    setup_due: bool,
}

impl EsClient {
    /// Builds the client (no request yet).
    pub fn new(config: ElasticsearchConfig) -> Result<Self, EsError> {
        let url = Url::parse(&config.url)
            .map_err(|e| EsError::Config(format!("url {:?}: {e}", config.url)))?;
        let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url))
            .timeout(config.request_timeout);
        if let Some(user) = &config.username {
            let password = config.password.clone().unwrap_or_default();
            builder = builder.auth(Credentials::Basic(user.clone(), password));
        }
        if let Some(path) = &config.ca_cert {
            let pem = std::fs::read(path)
                .map_err(|e| EsError::Config(format!("ca_cert {}: {e}", path.display())))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| EsError::Config(format!("ca_cert {}: {e}", path.display())))?;
            builder = builder.cert_validation(CertificateValidation::Full(cert));
        }
        if !config.verify_certs {
            builder = builder.cert_validation(CertificateValidation::None);
        }
        let transport = builder
            .build()
            .map_err(|e| EsError::Config(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| EsError::Other(format!("cannot start a runtime: {e}")))?;
        Ok(EsClient {
            client: Elasticsearch::new(transport),
            runtime,
            config,
            setup_due: true,
        })
    }

    pub fn config(&self) -> &ElasticsearchConfig {
        &self.config
    }

    fn user_note(&self) -> String {
        self.config.username.as_ref().map_or_else(
            || " (no username set: ELASTICSEARCH_USERNAME)".to_owned(),
            |u| format!(" for user {u:?}"),
        )
    }

    /// Classifies a failed or non-2xx answer.
    fn failure(
        &self,
        what: &str,
        status: Option<StatusCode>,
        body: &str,
        transport: Option<String>,
    ) -> Failure {
        let Some(status) = status else {
            return Failure::Transient(transport.unwrap_or_else(|| "no answer".to_owned()));
        };
        let reason = error_reason(body);
        let code = status.as_u16();
        match code {
            401 | 403 => Failure::Fatal(EsError::Auth {
                url: self.config.url.clone(),
                user: self.user_note(),
                status: code,
                reason,
            }),
            408 | 429 | 500..=599 => Failure::Transient(format!("HTTP {code}: {reason}")),
            _ => Failure::Fatal(EsError::Request {
                url: self.config.url.clone(),
                what: what.to_owned(),
                status: code,
                reason,
            }),
        }
    }

    /// One request, without retries: `(status, body)` or how it failed.
    fn send_once(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, String), Failure> {
        let result = self.runtime.block_on(async {
            let body = body.map(|b| Bytes::from(b.to_string()));
            let response = self
                .client
                .send::<Bytes, ()>(method, path, HeaderMap::new(), None, body, None)
                .await?;
            let status = response.status_code();
            let text = response.text().await?;
            Ok::<_, elasticsearch::Error>((status, text))
        });
        match result {
            Ok(answer) => Ok(answer),
            Err(e) => Err(self.failure(path, e.status_code(), "", Some(e.to_string()))),
        }
    }

    /// Runs `op` until it succeeds, fails for good, or the retry policy is used up.
    fn with_retries<T>(
        &mut self,
        what: &str,
        mut op: impl FnMut(&mut Self) -> Result<T, Failure>,
    ) -> Result<T, EsError> {
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            match op(self) {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Transient(cause)) => {
                    self.setup_due = true;
                    let Some(delay) = self.config.retry.delay_after(attempt) else {
                        return Err(EsError::Unavailable {
                            url: self.config.url.clone(),
                            what: what.to_owned(),
                            attempts: attempt,
                            secs: started.elapsed().as_secs_f64(),
                            cause,
                        });
                    };
                    tracing::warn!(
                        "elasticsearch at {}: {what} failed (attempt {attempt} of {}): {cause}; retrying in {:.1} s",
                        self.config.url,
                        self.config.retry.attempts,
                        delay.as_secs_f64()
                    );
                    std::thread::sleep(delay);
                    attempt += 1;
                }
            }
        }
    }

    /// A request with retries; `ok` lists the statuses that are answers (e.g. 404 for a check).
    pub fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Value>,
        ok: &[u16],
    ) -> Result<(u16, Value), EsError> {
        let what = format!("{} {path}", method_name(method));
        self.with_retries(&what, |c| {
            let (status, text) = c.send_once(method, path, body.clone())?;
            let code = status.as_u16();
            if status.is_success() || ok.contains(&code) {
                let value = serde_json::from_str(&text).unwrap_or(Value::Null);
                return Ok((code, value));
            }
            Err(c.failure(&what, Some(status), &text, None))
        })
    }

    /// Creates the ingest pipeline and the index template when missing (with retries).
    pub fn ensure_setup(&mut self) -> Result<(), EsError> {
        self.with_retries("setting up the ingest pipeline and index template", |c| {
            c.setup_once()
        })?;
        self.setup_due = false;
        Ok(())
    }

    /// One try at the setup: checks, then creates what is missing.
    fn setup_once(&self) -> Result<(), Failure> {
        let items = [
            (
                format!("/_ingest/pipeline/{PIPELINE}"),
                pipeline_body(),
                "ingest pipeline",
            ),
            (
                format!("/_index_template/{TEMPLATE}"),
                template_body(),
                "index template",
            ),
        ];
        for (path, body, what) in items {
            let (status, text) = self.send_once(Method::Get, &path, None)?;
            match status.as_u16() {
                404 => {
                    let (status, text) = self.send_once(Method::Put, &path, Some(body))?;
                    if !status.is_success() {
                        return Err(self.failure(
                            &format!("PUT {path}"),
                            Some(status),
                            &text,
                            None,
                        ));
                    }
                    tracing::info!(
                        "elasticsearch at {}: created {what} {path}",
                        self.config.url
                    );
                }
                _ if status.is_success() => {}
                _ => return Err(self.failure(&format!("GET {path}"), Some(status), &text, None)),
            }
        }
        Ok(())
    }

    /// One `_bulk` request; the outcome of each document.
    fn bulk_once(
        &self,
        docs: &[&BulkDoc],
        pipeline: Option<&str>,
    ) -> Result<Vec<ItemOutcome>, Failure> {
        let mut body = Vec::with_capacity(docs.iter().map(|d| d.size()).sum());
        for d in docs {
            d.append_to(&mut body);
        }
        let result = self.runtime.block_on(async {
            let mut request = self.client.bulk(BulkParts::None);
            if let Some(p) = pipeline {
                request = request.pipeline(p);
            }
            let response = request.body(vec![Bytes::from(body)]).send().await?;
            let status = response.status_code();
            let text = response.text().await?;
            Ok::<_, elasticsearch::Error>((status, text))
        });
        let (status, text) = match result {
            Ok(answer) => answer,
            Err(e) => return Err(self.failure("_bulk", e.status_code(), "", Some(e.to_string()))),
        };
        if !status.is_success() {
            // A missing pipeline may fail the whole request on some servers.
            if status.as_u16() == 400 && pipeline_missing(&text) {
                let reason = error_reason(&text);
                return Ok(docs
                    .iter()
                    .map(|_| ItemOutcome::Retry {
                        status: 400,
                        reason: reason.clone(),
                        setup: true,
                    })
                    .collect());
            }
            return Err(self.failure("_bulk", Some(status), &text, None));
        }
        parse_bulk_response(&text, docs.len())
            .map_err(|e| Failure::Transient(format!("unreadable _bulk answer: {e}")))
    }

    /// Indexes `docs` (bulk requests of bounded size), retrying failed items per the retry
    /// policy. Returns the documents rejected for good; fails when items are still failing
    /// after the last attempt, or on an authentication or request error.
    pub fn index_all(
        &mut self,
        docs: &[BulkDoc],
        pipeline: Option<&str>,
    ) -> Result<Vec<Rejected>, EsError> {
        let started = Instant::now();
        let mut rejected = Vec::new();
        let mut remaining: Vec<usize> = (0..docs.len()).collect();
        let mut attempt = 1;
        while !remaining.is_empty() {
            let mut again = Vec::new();
            let mut cause = String::new();
            let mut batches = chunks(
                docs,
                &remaining,
                self.config.bulk_docs,
                self.config.bulk_bytes,
            );
            if self.setup_due {
                match self.setup_once() {
                    Ok(()) => self.setup_due = false,
                    Err(Failure::Fatal(e)) => return Err(e),
                    // Not reachable yet: every document waits for the next attempt.
                    Err(Failure::Transient(c)) => {
                        cause = c;
                        again = std::mem::take(&mut remaining);
                        batches.clear();
                    }
                }
            }
            for chunk in batches {
                let refs: Vec<&BulkDoc> = chunk.iter().map(|&i| &docs[i]).collect();
                match self.bulk_once(&refs, pipeline) {
                    Ok(outcomes) => {
                        for (&i, outcome) in chunk.iter().zip(outcomes) {
                            match outcome {
                                ItemOutcome::Done => {}
                                ItemOutcome::Retry {
                                    status,
                                    reason,
                                    setup,
                                } => {
                                    self.setup_due |= setup;
                                    cause = format!("item status {status}: {reason}");
                                    again.push(i);
                                }
                                ItemOutcome::Reject { status, error } => rejected.push(Rejected {
                                    doc: docs[i].clone(),
                                    status,
                                    error,
                                }),
                            }
                        }
                    }
                    Err(Failure::Fatal(e)) => return Err(e),
                    Err(Failure::Transient(c)) => {
                        self.setup_due = true;
                        cause = c;
                        again.extend_from_slice(&chunk);
                    }
                }
            }
            if again.is_empty() {
                break;
            }
            let Some(delay) = self.config.retry.delay_after(attempt) else {
                return Err(EsError::Unavailable {
                    url: self.config.url.clone(),
                    what: format!("_bulk of {} documents", again.len()),
                    attempts: attempt,
                    secs: started.elapsed().as_secs_f64(),
                    cause,
                });
            };
            tracing::warn!(
                "elasticsearch at {}: {} of {} documents not indexed (attempt {attempt} of {}): {cause}; retrying in {:.1} s",
                self.config.url,
                again.len(),
                docs.len(),
                self.config.retry.attempts,
                delay.as_secs_f64()
            );
            std::thread::sleep(delay);
            attempt += 1;
            remaining = again;
        }
        Ok(rejected)
    }

    /// `POST /<index>/_refresh` (tests and `store load`).
    pub fn refresh(&mut self, index: &str) -> Result<(), EsError> {
        self.request(Method::Post, &format!("/{index}/_refresh"), None, &[404])
            .map(|_| ())
    }
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Get => "GET",
        Method::Put => "PUT",
        Method::Post => "POST",
        Method::Delete => "DELETE",
        Method::Head => "HEAD",
    }
}

/// Index lists of at most `max_docs` documents and about `max_bytes` bytes.
fn chunks(docs: &[BulkDoc], which: &[usize], max_docs: usize, max_bytes: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for &i in which {
        let size = docs[i].size();
        if !current.is_empty() && (current.len() >= max_docs.max(1) || bytes + size > max_bytes) {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push(i);
        bytes += size;
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The reason of an Elasticsearch error body, or the body itself (shortened).
fn error_reason(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let reason = v
        .pointer("/error/reason")
        .or_else(|| v.pointer("/error/root_cause/0/reason"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| v.get("error").and_then(Value::as_str).map(str::to_owned));
    match reason {
        Some(r) => r,
        None if body.is_empty() => "(empty body)".to_owned(),
        None => body.chars().take(300).collect(),
    }
}

/// Whether an error says the ingest pipeline does not exist.
fn pipeline_missing(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains(PIPELINE)
        && (t.contains("does not exist")
            || t.contains("pipeline_missing")
            || t.contains("not found"))
}

/// Parses a `_bulk` answer into one outcome per document, in order.
fn parse_bulk_response(text: &str, expected: usize) -> Result<Vec<ItemOutcome>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let items = v.get("items").and_then(Value::as_array).ok_or("no items")?;
    if items.len() != expected {
        return Err(format!("{} items for {expected} documents", items.len()));
    }
    Ok(items
        .iter()
        .map(|item| {
            let result = item
                .as_object()
                .and_then(|o| o.values().next())
                .cloned()
                .unwrap_or(Value::Null);
            let status = result.get("status").and_then(Value::as_u64).unwrap_or(0) as u16;
            let error = result.get("error").cloned();
            match (status, error) {
                (200..=299, None) => ItemOutcome::Done,
                (_, error) => {
                    let error = error.unwrap_or(Value::Null);
                    let text = error.to_string();
                    let reason = error
                        .get("reason")
                        .and_then(Value::as_str)
                        .map_or_else(|| text.clone(), str::to_owned);
                    if status == 429 || status >= 500 || status == 0 {
                        ItemOutcome::Retry {
                            status,
                            reason,
                            setup: false,
                        }
                    } else if pipeline_missing(&text) {
                        ItemOutcome::Retry {
                            status,
                            reason,
                            setup: true,
                        }
                    } else {
                        ItemOutcome::Reject { status, error }
                    }
                }
            }
        })
        .collect())
}

/// Appends rejected documents, with their reasons, to a file.
pub struct RejectLog {
    path: PathBuf,
    count: u64,
}

impl RejectLog {
    pub fn new(path: PathBuf) -> Self {
        RejectLog { path, count: 0 }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Documents rejected so far by this log.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Logs and appends `rejected` (fsynced).
    pub fn record(&mut self, rejected: &[Rejected]) -> Result<(), SinkError> {
        if rejected.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for r in rejected {
            tracing::error!(
                "elasticsearch rejected document {} of {} (HTTP {}): {}",
                r.doc.id,
                r.doc.index,
                r.status,
                r.error
            );
            let source: Value =
                serde_json::from_str(&r.doc.source).unwrap_or(Value::String(r.doc.source.clone()));
            let line = json!({
                "_index": r.doc.index,
                "_id": r.doc.id,
                "status": r.status,
                "error": r.error,
                "_source": source,
            });
            text.push_str(&line.to_string());
            text.push('\n');
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| SinkError::io(self.path.display(), e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|e| SinkError::io(self.path.display(), e))?;
        self.count += rejected.len() as u64;
        eprintln!(
            "logsight: elasticsearch rejected {} document(s); kept with their reasons in {}",
            rejected.len(),
            self.path.display()
        );
        Ok(())
    }
}

/// The Elasticsearch sink of one worker: buffers an epoch's documents, indexes them at commit.
pub struct ElasticsearchSink {
    client: EsClient,
    pending: Vec<BulkDoc>,
    rejects: RejectLog,
}

impl ElasticsearchSink {
    /// Connects and ensures the setup (with retries); rejected documents of worker `worker`
    /// go to `<data_dir>/elasticsearch-rejected-w<NNN>.ndjson`.
    pub fn open(
        config: ElasticsearchConfig,
        data_dir: &Path,
        worker: usize,
    ) -> Result<Self, EsError> {
        let mut client = EsClient::new(config)?;
        client.ensure_setup()?;
        Ok(ElasticsearchSink {
            client,
            pending: Vec::new(),
            rejects: RejectLog::new(
                data_dir.join(format!("elasticsearch-rejected-w{worker:03}.ndjson")),
            ),
        })
    }

    /// Documents rejected for good so far.
    pub fn rejected(&self) -> u64 {
        self.rejects.count()
    }
}

impl Sink for ElasticsearchSink {
    fn name(&self) -> &str {
        "elasticsearch"
    }

    fn write(&mut self, doc: &DocRef<'_>) -> Result<(), SinkError> {
        self.pending.push(BulkDoc {
            index: doc.kind.es_index(doc.index),
            id: doc.id.to_owned(),
            source: doc.source.to_owned(),
        });
        Ok(())
    }

    fn commit(&mut self) -> Result<SinkState, SinkError> {
        if !self.pending.is_empty() {
            let docs = std::mem::take(&mut self.pending);
            let pipeline_docs = docs.iter().all(|d| {
                d.index
                    .ends_with(&format!("_{}", DocKind::Pipeline.as_str()))
            });
            let rejected = self
                .client
                .index_all(&docs, pipeline_docs.then_some(PIPELINE))?;
            self.rejects.record(&rejected)?;
        }
        // Replays overwrite by id: nothing to checkpoint.
        Ok(SinkState::new())
    }

    fn restore(&mut self, _state: Option<&SinkState>) -> Result<(), SinkError> {
        self.pending.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn settings_are_read_with_env_retry_overrides() {
        let c = ElasticsearchConfig::from_settings(&settings(&[]), |_| None).unwrap();
        assert_eq!(c.url, "http://localhost:9200");
        assert_eq!(c.retry, RetryPolicy::default());
        let c = ElasticsearchConfig::from_settings(
            &settings(&[
                ("scheme", "HTTPS"),
                ("host", "es"),
                ("port", "9243"),
                ("username", "elastic"),
                ("password", "hunter2"),
                ("retry_attempts", "2"),
                ("bulk_docs", "10"),
            ]),
            |name| (name == "RETRY_TIMEOUT").then(|| "3".to_owned()),
        )
        .unwrap();
        assert_eq!(c.url, "https://es:9243");
        assert_eq!(c.retry.attempts, 2);
        assert_eq!(c.retry.max_delay, Duration::from_secs(3));
        assert_eq!(c.bulk_docs, 10);
        let shown = format!("{c:?}");
        assert!(shown.contains("***") && !shown.contains("hunter2"));
        let env_wins =
            ElasticsearchConfig::from_settings(&settings(&[("retry_attempts", "2")]), |name| {
                (name == "RETRY_ATTEMPTS").then(|| "9".to_owned())
            })
            .unwrap();
        assert_eq!(env_wins.retry.attempts, 9);
        assert!(
            ElasticsearchConfig::from_settings(&settings(&[("url", "ftp://x")]), |_| None).is_err()
        );
        assert!(
            ElasticsearchConfig::from_settings(&settings(&[("bulk_docs", "-1")]), |_| None)
                .is_err()
        );
    }

    #[test]
    fn bulk_answers_are_classified_per_item() {
        let answer = json!({"errors": true, "items": [
            {"index": {"_id": "a", "status": 201}},
            {"index": {"_id": "b", "status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "busy"}}},
            {"index": {"_id": "c", "status": 400, "error": {"type": "document_parsing_exception", "reason": "bad field"}}},
            {"index": {"_id": "d", "status": 400, "error": {"type": "illegal_argument_exception", "reason": "pipeline with id [ingest_timestamp] does not exist"}}},
            {"index": {"_id": "e", "status": 503, "error": {"type": "unavailable_shards_exception", "reason": "x"}}}
        ]});
        let out = parse_bulk_response(&answer.to_string(), 5).unwrap();
        assert_eq!(out[0], ItemOutcome::Done);
        assert!(matches!(
            out[1],
            ItemOutcome::Retry {
                status: 429,
                setup: false,
                ..
            }
        ));
        assert!(matches!(out[2], ItemOutcome::Reject { status: 400, .. }));
        assert!(matches!(
            out[3],
            ItemOutcome::Retry {
                status: 400,
                setup: true,
                ..
            }
        ));
        assert!(matches!(out[4], ItemOutcome::Retry { status: 503, .. }));
        assert!(parse_bulk_response(&answer.to_string(), 4).is_err());
    }

    #[test]
    fn chunks_respect_document_and_byte_limits() {
        let doc = |n: usize| BulkDoc {
            index: "a_pipeline".into(),
            id: n.to_string(),
            source: "x".repeat(100),
        };
        let docs: Vec<BulkDoc> = (0..10).map(doc).collect();
        let all: Vec<usize> = (0..10).collect();
        let c = chunks(&docs, &all, 4, usize::MAX);
        assert_eq!(c.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4, 2]);
        let c = chunks(&docs, &all, 100, 310);
        assert!(c.iter().all(|c| c.len() == 2));
        // A document larger than the byte limit still goes, alone.
        let c = chunks(&docs, &[3], 100, 10);
        assert_eq!(c, [vec![3]]);
    }

    #[test]
    fn bulk_lines_use_the_index_action_with_the_id() {
        let mut body = Vec::new();
        BulkDoc {
            index: "app_pipeline".into(),
            id: "00ab".into(),
            source: "{\"message\":\"m\"}".into(),
        }
        .append_to(&mut body);
        let text = String::from_utf8(body).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let action: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(action["index"]["_id"], "00ab");
        assert_eq!(action["index"]["_index"], "app_pipeline");
        assert_eq!(lines[1], "{\"message\":\"m\"}");
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn error_reasons_are_extracted() {
        let body = r#"{"error":{"root_cause":[{"type":"security_exception","reason":"unable to authenticate user [elastic]"}],"type":"security_exception","reason":"unable to authenticate user [elastic]"},"status":401}"#;
        assert_eq!(error_reason(body), "unable to authenticate user [elastic]");
        assert_eq!(error_reason(""), "(empty body)");
        assert!(pipeline_missing(
            "pipeline with id [ingest_timestamp] does not exist"
        ));
        assert!(!pipeline_missing("mapper_parsing_exception"));
    }
}
