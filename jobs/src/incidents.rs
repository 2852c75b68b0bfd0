//! The differential dataflow of the job manager: incidents per (index, tag set, minute) and log
//! aggregates per (index, minute), maintained incrementally from a collection of [`JobRecord`]s.
//!
//! Records are arranged once, keyed by [`WindowKey`]; two `reduce`s read that one arrangement
//! (so its memory is paid once): one computes each window's incident, the other each window's
//! partial log aggregate, which a small second `reduce` merges across tag sets per
//! (index, minute). A change to a record touches only its window's key, so late data for an
//! old minute recomputes that minute alone.

use crate::config::JobConfig;
use crate::record::{JobRecord, Text};
use differential_dataflow::lattice::Lattice;
use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use differential_dataflow::VecCollection;
use operators::aggregate::LogAggregate;
use operators::incident::{compute_incident, is_normal, IncidentInput};
use operators::level::Level;
use operators::model::Tags;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;
use timely::progress::Timestamp;

/// The key of an incident: one window of one tag set of one index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowKey {
    pub index: Text,
    pub tags: Arc<Tags>,
    pub minute_ms: i64,
}

/// The key of a log aggregate: one minute of one index, over all tag sets.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AggKey {
    pub index: Text,
    pub minute_ms: i64,
}

/// A record as stored in the window arrangement: what the incident and the aggregate need,
/// without the key fields. Cheap to copy (numbers and shared text), since merges copy it often.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Line {
    pub timestamp_ms: i64,
    pub risk_score: u32,
    pub template_id: Text,
    pub added_state: u8,
    pub level: Level,
    pub level_fault: bool,
    pub prediction: u8,
    pub message: Text,
    pub doc_id: Text,
}

impl Line {
    /// The line as the incident math sees it.
    pub fn incident_input(&self) -> IncidentInput {
        IncidentInput {
            timestamp_ms: self.timestamp_ms,
            risk_score: self.risk_score,
            template_id: self.template_id.to_string(),
            added_state: self.added_state,
            level_fault: self.level_fault,
            prediction: self.prediction,
            message: self.message.to_string(),
            doc_id: self.doc_id.to_string(),
        }
    }
}

impl JobRecord {
    /// The window this record belongs to.
    pub fn window_key(&self) -> WindowKey {
        WindowKey {
            index: Arc::clone(&self.index),
            tags: Arc::clone(&self.tags),
            minute_ms: self.minute_ms,
        }
    }

    /// The record as a value of the window arrangement.
    pub fn line(&self) -> Line {
        Line {
            timestamp_ms: self.timestamp_ms,
            risk_score: self.risk_score,
            template_id: Arc::clone(&self.template_id),
            added_state: self.added_state,
            level: self.level,
            level_fault: self.level_fault,
            prediction: self.prediction,
            message: Arc::clone(&self.message),
            doc_id: Arc::clone(&self.doc_id),
        }
    }
}

/// A risk on 0..=100, totally ordered (by `f64::total_cmp`) so incidents can be differential
/// values.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Risk(pub f64);

impl PartialEq for Risk {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0) == Ordering::Equal
    }
}
impl Eq for Risk {}
impl PartialOrd for Risk {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Risk {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A sample line of an incident.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Sample {
    pub doc_id: String,
    pub timestamp_ms: i64,
    pub risk_score: u32,
    pub template_id: String,
    pub message: String,
}

/// The incident of a window as a differential value (see `operators::incident::Incident`,
/// which is not `Ord` because of its `f64`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IncidentValue {
    pub risk: Risk,
    pub severity: u8,
    pub count_messages: u64,
    pub count_states: u64,
    pub added_states: u64,
    pub level_faults: u64,
    pub semantic_anomalies: u64,
    /// Earliest and latest line of the window, epoch milliseconds.
    pub first_ms: i64,
    pub last_ms: i64,
    /// The riskiest lines, riskiest first (at most `max_samples`).
    pub samples: Vec<Sample>,
}

/// The incident of a window's lines, or `None` when the window has no lines or, with
/// `filter_normal`, is normal (risk 0). The one definition both the dataflow and
/// [`crate::recompute_batch`] use.
pub fn incident_value(lines: &[IncidentInput], config: &JobConfig) -> Option<IncidentValue> {
    let incident = compute_incident(lines, config.max_samples)?;
    if config.filter_normal && is_normal(&incident) {
        return None;
    }
    Some(IncidentValue {
        risk: Risk(incident.risk),
        severity: incident.severity,
        count_messages: incident.count_messages,
        count_states: incident.count_states,
        added_states: incident.added_states,
        level_faults: incident.level_faults,
        semantic_anomalies: incident.semantic_anomalies,
        first_ms: incident.timestamp_start,
        last_ms: incident.timestamp_end,
        samples: incident
            .data
            .into_iter()
            .map(|s| Sample {
                doc_id: s.doc_id,
                timestamp_ms: s.timestamp_ms,
                risk_score: s.risk_score,
                template_id: s.template_id,
                message: s.message,
            })
            .collect(),
    })
}

/// The log aggregate of one minute as a differential value (`LogAggregate` is not `Ord`).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AggValue {
    /// Lines per canonical level name.
    pub levels: BTreeMap<String, u64>,
    /// Lines flagged as semantic anomalies.
    pub prediction_sum: u64,
    pub total: u64,
}

impl From<LogAggregate> for AggValue {
    fn from(agg: LogAggregate) -> Self {
        AggValue {
            levels: agg.levels,
            prediction_sum: agg.prediction_sum,
            total: agg.total,
        }
    }
}

impl AggValue {
    /// As the operators' aggregate of the window starting at `minute_ms`.
    pub fn to_aggregate(&self, minute_ms: i64) -> LogAggregate {
        LogAggregate {
            minute_ms,
            levels: self.levels.clone(),
            prediction_sum: self.prediction_sum,
            total: self.total,
        }
    }
}

/// The trace of the window arrangement: every live record by [`WindowKey`].
pub type WindowTrace<T> = TraceAgent<ValSpine<WindowKey, Line, T, isize>>;

/// The output collections of [`build_jobs`].
pub struct JobCollections<'scope, T: Timestamp + Lattice + Ord> {
    /// One `(key, incident)` per window with an incident.
    pub incidents: VecCollection<'scope, T, (WindowKey, IncidentValue)>,
    /// One `(key, aggregate)` per (index, minute) with lines.
    pub aggregates: VecCollection<'scope, T, (AggKey, AggValue)>,
    /// A handle on the window arrangement, for inspecting its size. While held it pins the
    /// arrangement's compaction: advance it (`set_logical_compaction` and
    /// `set_physical_compaction`) as time moves on, or drop it.
    pub windows: WindowTrace<T>,
}

/// Repeats each value by its (positive) multiplicity. Multiplicities are 1 when the input is
/// deduplicated by doc id, as the runner does, but a raw collection may hold copies.
fn expand<'a, V>(input: &'a [(&'a V, isize)]) -> impl Iterator<Item = &'a V> + 'a {
    input.iter().flat_map(|&(value, count)| {
        if count < 0 {
            tracing::warn!(count, "negative multiplicity in a job window, ignored");
        }
        std::iter::repeat_n(value, usize::try_from(count).unwrap_or(0))
    })
}

/// Output arrangement of the incident reduce.
type IncidentSpine<T> = ValSpine<WindowKey, IncidentValue, T, isize>;
/// Output arrangement of the per-window aggregate reduce.
type PartialSpine<T> = ValSpine<WindowKey, AggValue, T, isize>;

/// Pairs a reduce's output values with their key, as the output arrangement's builder wants.
fn keyed<K: Clone, V, T, R>(out: &mut Vec<((K, V), T, R)>, key: &K, upds: &mut Vec<(V, T, R)>) {
    out.clear();
    out.extend(upds.drain(..).map(|(v, t, r)| ((key.clone(), v), t, r)));
}

/// Builds the incident and log-aggregate dataflow over `records`.
///
/// `records` should hold each result once (the runner dedupes by doc id before inserting):
/// copies count as separate lines. Apart from the returned `windows` handle, no trace handle
/// outlives this function, so every other arrangement compacts as the input frontier advances
/// and retracted records disappear once their batches merge.
pub fn build_jobs<'scope, T>(
    records: VecCollection<'scope, T, JobRecord>,
    config: &JobConfig,
) -> JobCollections<'scope, T>
where
    T: Timestamp + Lattice + Ord,
{
    let windows = records
        .map(|record| (record.window_key(), record.line()))
        .arrange_by_key_named("Arrange: job windows");
    let windows_trace = windows.trace.clone();

    let incident_config = config.clone();
    let incidents = windows
        .clone()
        .reduce_abelian::<_, ValBuilder<_, _, _, _>, IncidentSpine<T>, _, _>(
            "Incidents",
            move |_key, input, output| {
                let lines: Vec<IncidentInput> = expand(input).map(Line::incident_input).collect();
                if let Some(value) = incident_value(&lines, &incident_config) {
                    output.push((value, 1));
                }
            },
            keyed,
        )
        .as_collection(|k, v| (k.clone(), v.clone()));

    let partials = windows
        .reduce_abelian::<_, ValBuilder<_, _, _, _>, PartialSpine<T>, _, _>(
            "LogAgg partials",
            |key, input, output| {
                let mut agg = LogAggregate::new(key.minute_ms);
                for line in expand(input) {
                    agg.add(line.level.as_str(), line.prediction);
                }
                output.push((AggValue::from(agg), 1));
            },
            keyed,
        )
        .as_collection(|k, v| (k.clone(), v.clone()));

    let aggregates = partials
        .map(|(key, partial)| {
            let agg_key = AggKey {
                index: key.index,
                minute_ms: key.minute_ms,
            };
            (agg_key, partial)
        })
        .reduce_named("LogAgg", |key: &AggKey, input, output| {
            let mut total = LogAggregate::new(key.minute_ms);
            for partial in expand(input) {
                total.merge(&partial.to_aggregate(key.minute_ms));
            }
            output.push((AggValue::from(total), 1));
        });

    JobCollections {
        incidents,
        aggregates,
        windows: windows_trace,
    }
}
