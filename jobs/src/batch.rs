//! [`recompute_batch`]: incidents and log aggregates computed from scratch in plain Rust, the
//! reference the differential output must match (tests) and the baseline it must beat
//! (benchmark).

use crate::config::JobConfig;
use crate::incidents::{incident_value, AggKey, AggValue, WindowKey};
use crate::output::{incident_upsert, log_agg_upsert, DocStore, JobOutput};
use crate::record::{JobRecord, Text};
use operators::aggregate::aggregate;
use operators::incident::IncidentInput;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// All documents of `records`, keyed by (target index, id), as a sink would hold them.
///
/// Records are deduplicated by doc id, the last one winning, as the job manager does. Aggregates
/// go through `operators::aggregate::aggregate` per index, independently of the dataflow's
/// two-stage (per tag set, then per minute) sums.
pub fn recompute_batch(records: &[JobRecord], config: &JobConfig) -> DocStore {
    let mut latest: HashMap<&str, &JobRecord> = HashMap::with_capacity(records.len());
    for record in records {
        latest.insert(&record.doc_id, record);
    }
    let mut windows: BTreeMap<WindowKey, Vec<IncidentInput>> = BTreeMap::new();
    let mut per_index: BTreeMap<&Text, Vec<&JobRecord>> = BTreeMap::new();
    for record in latest.values() {
        windows
            .entry(record.window_key())
            .or_default()
            .push(record.incident_input());
        per_index.entry(&record.index).or_default().push(record);
    }

    let mut store = DocStore::new();
    let mut put = |output: JobOutput| {
        if let JobOutput::Upsert { index, id, doc } = output {
            store.insert((index, id), doc);
        }
    };
    for (key, lines) in &windows {
        if let Some(value) = incident_value(lines, config) {
            put(incident_upsert(key, &value));
        }
    }
    for (index, records) in per_index {
        let items = records
            .iter()
            .map(|r| (r.timestamp_ms, r.level.as_str(), r.prediction));
        for (minute_ms, agg) in aggregate(items) {
            let key = AggKey {
                index: Arc::clone(index),
                minute_ms,
            };
            put(log_agg_upsert(&key, &AggValue::from(agg)));
        }
    }
    store
}
