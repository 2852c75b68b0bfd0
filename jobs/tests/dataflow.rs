//! End-to-end tests of the job manager: hand-computed incidents and aggregates, late data,
//! retractions, duplicates, pruning, restart, and agreement with the batch recomputation.

use logsight_jobs::incidents::{AggKey, WindowKey};
use logsight_jobs::output::{incident_id, log_agg_id};
use logsight_jobs::{
    apply_outputs, recompute_batch, DocStore, JobConfig, JobManager, JobOutput, JobRecord,
};
use operators::level::Level;
use operators::model::Tags;
use serde_json::{json, Value};
use std::sync::Arc;

/// A record in `index` with one tag `service=<service>`, at `ts_ms`, INFO, risk 0, template t1.
fn rec(doc: &str, index: &str, service: &str, ts_ms: i64) -> JobRecord {
    let mut tags = Tags::new();
    tags.insert("service".to_owned(), service.to_owned());
    JobRecord {
        index: index.into(),
        tags: Arc::new(tags),
        minute_ms: operators::incident::minute_window(ts_ms),
        timestamp_ms: ts_ms,
        risk_score: 0,
        template_id: "t1".into(),
        added_state: 0,
        level: Level::Info,
        level_fault: false,
        prediction: 0,
        message: format!("message {doc}").into(),
        doc_id: doc.into(),
    }
}

trait With {
    fn risk(self, risk: u32) -> Self;
    fn template(self, template: &str) -> Self;
    fn level(self, level: Level) -> Self;
    fn anomaly(self) -> Self;
    fn added(self) -> Self;
}

impl With for JobRecord {
    fn risk(mut self, risk: u32) -> Self {
        self.risk_score = risk;
        self
    }
    fn template(mut self, template: &str) -> Self {
        self.template_id = template.into();
        self
    }
    fn level(mut self, level: Level) -> Self {
        self.level = level;
        self.level_fault = level.is_fault();
        self
    }
    fn anomaly(mut self) -> Self {
        self.prediction = 1;
        self
    }
    fn added(mut self) -> Self {
        self.added_state = 1;
        self
    }
}

fn config(max_samples: usize) -> JobConfig {
    JobConfig {
        max_samples,
        ..JobConfig::default()
    }
}

fn wkey(index: &str, service: &str, minute_ms: i64) -> (String, String) {
    let mut tags = Tags::new();
    tags.insert("service".to_owned(), service.to_owned());
    let key = WindowKey {
        index: index.into(),
        tags: Arc::new(tags),
        minute_ms,
    };
    (format!("{index}_incidents"), incident_id(&key))
}

fn akey(index: &str, minute_ms: i64) -> (String, String) {
    let key = AggKey {
        index: index.into(),
        minute_ms,
    };
    (format!("{index}_log_agg"), log_agg_id(&key))
}

fn store_of(outputs: &[JobOutput]) -> DocStore {
    let mut store = DocStore::new();
    apply_outputs(&mut store, outputs);
    store
}

fn sample(doc: &str, ts: &str, risk: u32, template: &str) -> Value {
    json!({"id": doc, "timestamp": ts, "risk_score": risk, "template_id": template,
           "message": format!("message {doc}")})
}

/// Window app/api/minute 0: a (risk 0), b (70, ERROR, new state), c (25, WARNING, anomaly),
/// d (60, new state, anomaly). Window app/db/minute 0: e (risk 0). Window app/api/minute 1:
/// f..i risks 25, 1, 25, 0. Index other: j (80).
fn fixture() -> Vec<JobRecord> {
    vec![
        rec("a", "app", "api", 1_000),
        rec("b", "app", "api", 5_000)
            .risk(70)
            .template("t2")
            .level(Level::Error)
            .added(),
        rec("c", "app", "api", 3_000)
            .risk(25)
            .level(Level::Warning)
            .anomaly(),
        rec("d", "app", "api", 2_000)
            .risk(60)
            .template("t3")
            .added()
            .anomaly(),
        rec("e", "app", "db", 30_000),
        rec("f", "app", "api", 60_000).risk(25),
        rec("g", "app", "api", 61_000).risk(1).template("t2"),
        rec("h", "app", "api", 62_000).risk(25),
        rec("i", "app", "api", 63_000),
        rec("j", "other", "api", 60_500)
            .risk(80)
            .level(Level::Fatal),
    ]
}

#[test]
fn hand_computed_incidents_and_aggregates() {
    let mut jobs = JobManager::new(config(2));
    let report = jobs.ingest(fixture());
    assert_eq!(report.inserted, 10);
    let store = store_of(&jobs.flush());

    let mut want = DocStore::new();
    // n=4, k=ceil(1.2)=2, top [70,60], mean 65: 70 + min(65, 30) = 100 -> severity 3.
    want.insert(
        wkey("app", "api", 0),
        json!({
            "timestamp": "1970-01-01T00:01:00.000Z",
            "risk": 100.0,
            "severity": 3,
            "count_messages": 4,
            "count_states": 3,
            "status": 1,
            "added_states": 2,
            "level_faults": 1,
            "semantic_anomalies": 2,
            "tags": {"service": "api"},
            "timestamp_start": "1970-01-01T00:00:00.000Z",
            "timestamp_end": "1970-01-01T00:01:00.000Z",
            "data": [
                sample("b", "1970-01-01T00:00:05.000Z", 70, "t2"),
                sample("d", "1970-01-01T00:00:02.000Z", 60, "t3"),
            ],
        }),
    );
    // app/db/minute 0 has only risk 0: normal, no incident (FILTER_NORMAL).
    // n=4, k=2, top [25,25], mean 25: 25 + 25 = 50 -> severity 2.
    want.insert(
        wkey("app", "api", 60_000),
        json!({
            "timestamp": "1970-01-01T00:02:00.000Z",
            "risk": 50.0,
            "severity": 2,
            "count_messages": 4,
            "count_states": 2,
            "status": 1,
            "added_states": 0,
            "level_faults": 0,
            "semantic_anomalies": 0,
            "tags": {"service": "api"},
            "timestamp_start": "1970-01-01T00:01:00.000Z",
            "timestamp_end": "1970-01-01T00:02:00.000Z",
            "data": [
                sample("f", "1970-01-01T00:01:00.000Z", 25, "t1"),
                sample("h", "1970-01-01T00:01:02.000Z", 25, "t1"),
            ],
        }),
    );
    // n=1, k=1: 80 + min(80, 20) = 100.
    want.insert(
        wkey("other", "api", 60_000),
        json!({
            "timestamp": "1970-01-01T00:02:00.000Z",
            "risk": 100.0,
            "severity": 3,
            "count_messages": 1,
            "count_states": 1,
            "status": 1,
            "added_states": 0,
            "level_faults": 1,
            "semantic_anomalies": 0,
            "tags": {"service": "api"},
            "timestamp_start": "1970-01-01T00:01:00.000Z",
            "timestamp_end": "1970-01-01T00:02:00.000Z",
            "data": [sample("j", "1970-01-01T00:01:00.500Z", 80, "t1")],
        }),
    );
    // Minute 0 of app over both tag sets: a, d, e INFO; b ERROR; c WARNING; c, d anomalies.
    want.insert(
        akey("app", 0),
        json!({"timestamp": "1970-01-01T00:00:00.000Z",
               "log_levels": {"ERROR": 1, "INFO": 3, "WARNING": 1}, "prediction": 2, "count": 5}),
    );
    want.insert(
        akey("app", 60_000),
        json!({"timestamp": "1970-01-01T00:01:00.000Z",
               "log_levels": {"INFO": 4}, "prediction": 0, "count": 4}),
    );
    want.insert(
        akey("other", 60_000),
        json!({"timestamp": "1970-01-01T00:01:00.000Z",
               "log_levels": {"FATAL": 1}, "prediction": 0, "count": 1}),
    );
    assert_eq!(store, want);
    assert_eq!(recompute_batch(&fixture(), &config(2)), want);
    // Nothing changed since: nothing to write.
    assert_eq!(jobs.flush(), vec![]);
}

#[test]
fn filter_normal_off_keeps_normal_windows() {
    let cfg = JobConfig {
        filter_normal: false,
        ..config(2)
    };
    let mut jobs = JobManager::new(cfg.clone());
    jobs.ingest(fixture());
    let store = store_of(&jobs.flush());
    let normal = store.get(&wkey("app", "db", 0));
    let summary = normal.map(|d| {
        (
            d["risk"].clone(),
            d["severity"].clone(),
            d["count_messages"].clone(),
        )
    });
    assert_eq!(summary, Some((json!(0.0), json!(1), json!(1))));
    assert_eq!(store.len(), 7);
    assert_eq!(store, recompute_batch(&fixture(), &cfg));
}

#[test]
fn late_data_updates_only_its_window() {
    let mut jobs = JobManager::new(config(2));
    jobs.ingest(fixture());
    // Many later minutes of other data.
    let later: Vec<JobRecord> = (0..50)
        .map(|m| rec(&format!("later{m}"), "app", "api", 600_000 + m * 60_000).risk(25))
        .collect();
    jobs.ingest(later);
    jobs.flush();

    // A late risky line for app/api/minute 1: risks [25,1,25,0,80], n=5, k=2, top [80,25],
    // mean 52.5: 80 + min(52.5, 20) = 100.
    jobs.ingest([rec("late", "app", "api", 64_000)
        .risk(80)
        .template("t9")
        .level(Level::Error)]);
    let outputs = jobs.flush();
    assert_eq!(outputs.len(), 2, "{outputs:#?}");
    let store = store_of(&outputs);
    let incident = &store[&wkey("app", "api", 60_000)];
    assert_eq!(incident["risk"], json!(100.0));
    assert_eq!(incident["severity"], json!(3));
    assert_eq!(incident["count_messages"], json!(5));
    assert_eq!(incident["count_states"], json!(3));
    assert_eq!(incident["level_faults"], json!(1));
    assert_eq!(incident["data"][0]["id"], json!("late"));
    let agg = &store[&akey("app", 60_000)];
    assert_eq!(agg["log_levels"], json!({"ERROR": 1, "INFO": 4}));
    assert_eq!(agg["count"], json!(5));
}

#[test]
fn retraction_removes_an_incident() {
    let mut jobs = JobManager::new(config(2));
    jobs.ingest(fixture());
    jobs.flush();

    // Without j, index other has no lines at all: both its documents go.
    assert_eq!(jobs.retract(["j"]), 1);
    // Without its risky lines, app/api/minute 1 keeps f..i minus f, h: g (1) and i (0):
    // n=2, k=1, top [1]: 1 + 1 = 2. Without g too it is normal and its incident is deleted.
    assert_eq!(jobs.retract(["f", "h", "g", "unknown"]), 3);
    let outputs = jobs.flush();
    let want = vec![
        JobOutput::Delete {
            index: "app_incidents".to_owned(),
            id: wkey("app", "api", 60_000).1,
        },
        JobOutput::Delete {
            index: "other_incidents".to_owned(),
            id: wkey("other", "api", 60_000).1,
        },
        JobOutput::Upsert {
            index: "app_log_agg".to_owned(),
            id: akey("app", 60_000).1,
            doc: json!({"timestamp": "1970-01-01T00:01:00.000Z",
                        "log_levels": {"INFO": 1}, "prediction": 0, "count": 1}),
        },
        JobOutput::Delete {
            index: "other_log_agg".to_owned(),
            id: akey("other", 60_000).1,
        },
    ];
    assert_eq!(outputs, want);
    assert_eq!(jobs.live_records(), 6);
}

#[test]
fn duplicates_do_not_double_count_and_new_versions_replace() {
    let mut jobs = JobManager::new(config(2));
    jobs.ingest(fixture());
    let first = store_of(&jobs.flush());

    // At-least-once replay of everything, and a copy inside one batch.
    let mut replay = fixture();
    replay.push(fixture()[0].clone());
    let report = jobs.ingest(replay);
    assert_eq!(
        (report.inserted, report.duplicates, report.replaced),
        (0, 11, 0)
    );
    assert_eq!(jobs.flush(), vec![]);

    // A re-scored version of e (same doc id) makes app/db/minute 0 risky: n=1, 30 + 30 = 60.
    let report = jobs.ingest([rec("e", "app", "db", 30_000).risk(30)]);
    assert_eq!((report.inserted, report.replaced), (0, 1));
    let mut store = first.clone();
    apply_outputs(&mut store, &jobs.flush());
    let incident = &store[&wkey("app", "db", 0)];
    assert_eq!(
        (incident["risk"].clone(), incident["count_messages"].clone()),
        (json!(60.0), json!(1))
    );
    // The aggregate still counts e once.
    assert_eq!(store[&akey("app", 0)]["count"], json!(5));
    assert_eq!(store.len(), first.len() + 1);
}

#[test]
fn pruning_retracts_whole_old_windows() {
    let mut jobs = JobManager::new(config(2));
    let records: Vec<JobRecord> = (0..3)
        .flat_map(|m| {
            (0..4).map(move |i| {
                rec(&format!("m{m}i{i}"), "app", "api", m * 60_000 + i * 1_000).risk(10)
            })
        })
        .collect();
    jobs.ingest(records.clone());
    assert_eq!(store_of(&jobs.flush()).len(), 6);

    // 150 s: minutes 0 and 1 ended by then, minute 2 is still partly newer and is kept whole.
    assert_eq!(jobs.retract_before(150_000), 8);
    let outputs = jobs.flush();
    let mut deleted: Vec<(String, String)> = outputs
        .iter()
        .map(|o| match o {
            JobOutput::Delete { index, id } => (index.clone(), id.clone()),
            other => panic!("expected only deletes, got {other:?}"),
        })
        .collect();
    deleted.sort();
    let mut want = vec![
        wkey("app", "api", 0),
        wkey("app", "api", 60_000),
        akey("app", 0),
        akey("app", 60_000),
    ];
    want.sort();
    assert_eq!(deleted, want);
    assert_eq!(jobs.live_records(), 4);

    // Late data for a pruned window is ignored; an older horizon is a no-op.
    let report = jobs.ingest([rec("late", "app", "api", 61_000).risk(90)]);
    assert_eq!((report.too_old, report.inserted), (1, 0));
    assert_eq!(jobs.retract_before(100_000), 0);
    assert_eq!(jobs.flush(), vec![]);
    assert_eq!(jobs.horizon_ms(), Some(150_000));
}

#[test]
fn arrangement_memory_follows_the_retention_window() {
    let mut jobs = JobManager::new(config(2));
    for m in 0..40 {
        let batch: Vec<JobRecord> = (0..50)
            .map(|i| {
                rec(
                    &format!("m{m}i{i}"),
                    "app",
                    &format!("s{}", i % 5),
                    m * 60_000 + i,
                )
                .risk(i as u32 % 7)
            })
            .collect();
        jobs.ingest(batch);
    }
    assert_eq!(jobs.live_records(), 2_000);
    assert!(jobs.arranged_updates() >= 2_000);
    // Keep the last 4 minutes only.
    assert_eq!(jobs.retract_before(36 * 60_000), 1_800);
    jobs.maintain(50);
    let held = jobs.arranged_updates();
    assert!(
        held <= 2 * 200,
        "arrangement still holds {held} updates for 200 live records"
    );
    let live: Vec<JobRecord> = jobs.records().cloned().collect();
    assert_eq!(live.len(), 200);
}

/// A deterministic pseudo-random stream over 2 indices, 3 tag sets and 12 minutes, with
/// repeated doc ids (duplicates and new versions).
fn stream(n: usize) -> Vec<JobRecord> {
    let mut rng = operators::rng::XorShift64::new(0x2545_f491_4f6c_dd1d);
    let mut next = move || rng.next_u64();
    (0..n)
        .map(|_| {
            let r = next();
            let index = if r % 3 == 0 { "beta" } else { "alpha" };
            let service = ["api", "db", "web"][(r >> 8) as usize % 3];
            let ts = ((r >> 16) % 720_000) as i64;
            let risks = [0, 0, 0, 1, 25, 60, 70, 80];
            let levels = [Level::Info, Level::Warning, Level::Error];
            let level = levels[(r >> 40) as usize % 3];
            let mut record = rec(&format!("d{}", (r >> 44) % 400), index, service, ts)
                .risk(risks[(r >> 36) as usize % 8])
                .template(&format!("t{}", (r >> 50) % 6))
                .level(level);
            if (r >> 56) % 5 == 0 {
                record = record.anomaly();
            }
            record
        })
        .collect()
}

/// The records a manager holds after `records` in order: last version per doc id.
fn latest(records: &[JobRecord]) -> Vec<JobRecord> {
    let mut by_id = std::collections::BTreeMap::new();
    for r in records {
        by_id.insert(r.doc_id.to_string(), r.clone());
    }
    by_id.into_values().collect()
}

#[test]
fn incremental_output_equals_batch_recomputation() {
    let cfg = config(3);
    let records = stream(1_500);
    let mut jobs = JobManager::new(cfg.clone());
    let mut store = DocStore::new();
    for (i, chunk) in records.chunks(100).enumerate() {
        jobs.ingest(chunk.to_vec());
        if i % 3 == 0 {
            apply_outputs(&mut store, &jobs.flush());
        }
    }
    // Retract a few, then prune the first 3 minutes.
    jobs.retract(["d1", "d2", "d3", "d300"]);
    jobs.retract_before(180_000);
    apply_outputs(&mut store, &jobs.flush());

    let live: Vec<JobRecord> = latest(&records)
        .into_iter()
        .filter(|r| !["d1", "d2", "d3", "d300"].contains(&&*r.doc_id) && r.minute_ms >= 180_000)
        .collect();
    assert_eq!(jobs.live_records(), live.len());
    let want = recompute_batch(&live, &cfg);
    assert!(want.len() > 30, "fixture too small: {}", want.len());
    assert_eq!(store, want);
}

#[test]
fn restart_midstream_loses_and_double_counts_nothing() {
    let cfg = config(3);
    let records = stream(2_000);
    let batches: Vec<Vec<JobRecord>> = records.chunks(100).map(<[JobRecord]>::to_vec).collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("jobs.ckpt");

    // Uninterrupted run, for comparison.
    let mut reference = DocStore::new();
    let mut jobs = JobManager::new(cfg.clone());
    for batch in &batches {
        jobs.ingest(batch.clone());
        apply_outputs(&mut reference, &jobs.flush());
    }
    drop(jobs);

    // Run 1: batches 0..8, checkpoint after batch 7 with position 8 (next to read), then
    // batches 8..12 reach the sink, then a crash before the next checkpoint.
    let mut sink = DocStore::new();
    let mut jobs = JobManager::restore(cfg.clone(), &path).expect("restore empty");
    assert_eq!(jobs.positions().get("stream"), None);
    for (i, batch) in batches.iter().enumerate().take(12) {
        jobs.ingest(batch.clone());
        apply_outputs(&mut sink, &jobs.flush());
        if i == 7 {
            jobs.set_position("stream", "8");
            jobs.save_checkpoint(&path).expect("checkpoint");
        }
    }
    drop(jobs);

    // Run 2: restore, rewrite, resume at the saved position, but (at-least-once) two batches
    // early: batches 6 and 7 are already in the checkpoint and must not count twice.
    let mut jobs = JobManager::restore(cfg.clone(), &path).expect("restore");
    let position: usize = jobs.positions()["stream"].parse().expect("position");
    assert_eq!(position, 8);
    let rewrite = jobs.flush();
    assert!(rewrite
        .iter()
        .all(|o| matches!(o, JobOutput::Upsert { .. })));
    apply_outputs(&mut sink, &rewrite);
    let replayed = jobs.ingest(batches[position - 2].clone());
    assert_eq!(replayed.inserted, 0, "{replayed:?}");
    jobs.ingest(batches[position - 1].clone());
    for batch in &batches[position..] {
        jobs.ingest(batch.clone());
        apply_outputs(&mut sink, &jobs.flush());
    }
    apply_outputs(&mut sink, &jobs.flush());

    let want = recompute_batch(&records, &cfg);
    assert_eq!(reference, want);
    assert_eq!(sink, want);
    // Counted once: the aggregate counts add up to the distinct doc ids.
    let total: u64 = sink
        .iter()
        .filter(|((index, _), _)| index.ends_with("_log_agg"))
        .map(|(_, doc)| doc["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(total as usize, latest(&records).len());
}

#[test]
fn restart_keeps_the_pruning_horizon() {
    let cfg = config(2);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("jobs.ckpt");
    let mut jobs = JobManager::new(cfg.clone());
    jobs.ingest(fixture());
    jobs.retract_before(60_000);
    jobs.save_checkpoint(&path).expect("checkpoint");
    drop(jobs);

    let mut jobs = JobManager::restore(cfg.clone(), &path).expect("restore");
    assert_eq!(jobs.horizon_ms(), Some(60_000));
    assert_eq!(jobs.live_records(), 5);
    let report = jobs.ingest([rec("old", "app", "api", 59_999).risk(50)]);
    assert_eq!(report.too_old, 1);
    let store = store_of(&jobs.flush());
    let live: Vec<JobRecord> = fixture()
        .into_iter()
        .filter(|r| r.minute_ms >= 60_000)
        .collect();
    assert_eq!(store, recompute_batch(&live, &cfg));
}
