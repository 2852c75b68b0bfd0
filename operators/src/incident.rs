//! Incident math: the risk, severity, counts and sample lines of one window of scored logs.
//!
//! Plain functions over plain data, so a dataflow job can call them from a reduce and tests can
//! check them by hand. The per-record input is `Clone + Ord + serde` for that reason.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeSet;

/// Length of an incident window.
pub const WINDOW_MS: i64 = 60_000;

/// One scored log line as the incident computation needs it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IncidentInput {
    pub timestamp_ms: i64,
    pub risk_score: u32,
    pub template_id: String,
    /// 1 when the line's template was new.
    pub added_state: u8,
    pub level_fault: bool,
    /// 1 when the line is a semantic anomaly.
    pub prediction: u8,
    pub message: String,
    pub doc_id: String,
}

/// A line kept in an incident to show what made it risky.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentSample {
    pub doc_id: String,
    pub timestamp_ms: i64,
    pub risk_score: u32,
    pub template_id: String,
    pub message: String,
}

impl From<&IncidentInput> for IncidentSample {
    fn from(input: &IncidentInput) -> Self {
        IncidentSample {
            doc_id: input.doc_id.clone(),
            timestamp_ms: input.timestamp_ms,
            risk_score: input.risk_score,
            template_id: input.template_id.clone(),
            message: input.message.clone(),
        }
    }
}

/// The summary of one window of logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// 0..=100, see [`incident_risk`].
    pub risk: f64,
    /// 1..=3, see [`severity`].
    pub severity: u8,
    pub count_messages: u64,
    /// Distinct template ids.
    pub count_states: u64,
    pub added_states: u64,
    pub level_faults: u64,
    pub semantic_anomalies: u64,
    pub timestamp_start: i64,
    pub timestamp_end: i64,
    /// The riskiest lines, riskiest first; ties go to the earlier line, then the smaller doc id.
    pub data: Vec<IncidentSample>,
}

/// The risk of a window from its lines' risk scores, on 0..=100 (0 when empty).
///
/// Takes the top 30% of the scores, `k = max(1, ceil(0.3·n))` of them, and adds their mean to
/// the maximum, but only as much as is left below 100: `max + min(mean_top_k, 100 − max)`.
/// So one very risky line sets the floor, and many risky lines push it up to the cap, while a
/// long tail of harmless lines cannot dilute it.
pub fn incident_risk(scores: &[u32]) -> f64 {
    let n = scores.len();
    if n == 0 {
        return 0.0;
    }
    // ceil(0.3·n) in integers, avoiding float rounding at exact multiples.
    let k = (n.saturating_mul(3).saturating_add(9) / 10).clamp(1, n);
    let mut sorted = scores.to_vec();
    sorted.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
    let top = &sorted[..k];
    let max = f64::from(top.iter().copied().max().unwrap_or(0));
    let mean = top.iter().map(|&s| u64::from(s)).sum::<u64>() as f64 / k as f64;
    (max + mean.min(100.0 - max)).clamp(0.0, 100.0)
}

/// Severity 1..=3 of a risk: `ceil((risk + 0.01) / 34)`, clamped (NaN counts as 1).
///
/// The `+ 0.01` puts the boundaries just below 34 and 68: risk 33.99 is still 1, 34 is 2.
pub fn severity(risk: f64) -> u8 {
    let level = ((risk + 0.01) / 34.0).ceil();
    if level.is_nan() || level <= 1.0 {
        1
    } else if level >= 3.0 {
        3
    } else {
        2
    }
}

/// Start of the 1-minute window holding `ts_millis` (floor, also for negative times;
/// saturates at `i64::MIN`).
pub fn minute_window(ts_millis: i64) -> i64 {
    ts_millis.saturating_sub(ts_millis.rem_euclid(WINDOW_MS))
}

/// The incident of a window's lines, keeping at most `max_samples` riskiest lines;
/// `None` for no lines. The result does not depend on the order of `inputs`.
pub fn compute_incident(inputs: &[IncidentInput], max_samples: usize) -> Option<Incident> {
    let timestamp_start = inputs.iter().map(|i| i.timestamp_ms).min()?;
    let timestamp_end = inputs.iter().map(|i| i.timestamp_ms).max()?;
    let scores: Vec<u32> = inputs.iter().map(|i| i.risk_score).collect();
    let risk = incident_risk(&scores);
    let states: BTreeSet<&str> = inputs.iter().map(|i| i.template_id.as_str()).collect();
    let count = |f: fn(&IncidentInput) -> bool| inputs.iter().filter(|i| f(i)).count() as u64;
    Some(Incident {
        risk,
        severity: severity(risk),
        count_messages: inputs.len() as u64,
        count_states: states.len() as u64,
        added_states: count(|i| i.added_state != 0),
        level_faults: count(|i| i.level_fault),
        semantic_anomalies: count(|i| i.prediction != 0),
        timestamp_start,
        timestamp_end,
        data: riskiest(inputs, max_samples),
    })
}

/// Whether an incident is a normal window (risk 0), which `FILTER_NORMAL` drops.
pub fn is_normal(incident: &Incident) -> bool {
    incident.risk == 0.0
}

/// Riskiest first, then earlier, then smaller doc id; the rest of the fields make it total.
fn sample_order(a: &IncidentInput, b: &IncidentInput) -> Ordering {
    b.risk_score
        .cmp(&a.risk_score)
        .then(a.timestamp_ms.cmp(&b.timestamp_ms))
        .then_with(|| a.doc_id.cmp(&b.doc_id))
        .then_with(|| a.cmp(b))
}

/// The `max` first lines in [`sample_order`].
fn riskiest(inputs: &[IncidentInput], max: usize) -> Vec<IncidentSample> {
    let mut refs: Vec<&IncidentInput> = inputs.iter().collect();
    if max == 0 {
        return Vec::new();
    }
    if refs.len() > max {
        refs.select_nth_unstable_by(max - 1, |a, b| sample_order(a, b));
        refs.truncate(max);
    }
    refs.sort_unstable_by(|a, b| sample_order(a, b));
    refs.into_iter().map(IncidentSample::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(ts: i64, score: u32, template: &str, doc: &str) -> IncidentInput {
        IncidentInput {
            timestamp_ms: ts,
            risk_score: score,
            template_id: template.to_owned(),
            added_state: 0,
            level_fault: false,
            prediction: 0,
            message: format!("line {doc}"),
            doc_id: doc.to_owned(),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn risk_capped_at_100() {
        // n=10, k=3, top [80,70,60], mean 70, max 80: 80 + min(70, 20) = 100.
        assert_eq!(incident_risk(&[0, 25, 70, 80, 10, 0, 0, 60, 25, 1]), 100.0);
        // n=3, k=1: 60 + min(60, 40) = 100.
        assert_eq!(incident_risk(&[60, 60, 60]), 100.0);
    }

    #[test]
    fn risk_below_the_cap() {
        // n=7, k=ceil(2.1)=3, top [25,1,0], mean 26/3: 25 + 8.666… = 33.666…
        assert!(close(
            incident_risk(&[0, 25, 0, 1, 0, 0, 0]),
            25.0 + 26.0 / 3.0
        ));
        // n=4, k=ceil(1.2)=2, top [25,25], mean 25: 50.
        assert_eq!(incident_risk(&[25, 1, 25, 0]), 50.0);
        // n=3, k=ceil(0.9)=1, top [30]: 30 + 30 = 60.
        assert_eq!(incident_risk(&[10, 30, 20]), 60.0);
        // n=20, k=6 exactly (0.3·20 = 6): top [25,25,25,0,0,0], mean 12.5: 37.5.
        let mut scores = vec![0; 17];
        scores.extend([25, 25, 25]);
        assert_eq!(incident_risk(&scores), 37.5);
        // A single recurring normal line.
        assert_eq!(incident_risk(&[1]), 2.0);
        assert_eq!(incident_risk(&[0, 0, 0]), 0.0);
        assert_eq!(incident_risk(&[]), 0.0);
    }

    #[test]
    fn out_of_range_scores_still_cap() {
        assert_eq!(incident_risk(&[250, 0]), 100.0);
        assert_eq!(incident_risk(&[u32::MAX; 4]), 100.0);
    }

    #[test]
    fn severity_boundaries() {
        let cases = [
            (0.0, 1),
            (-5.0, 1),
            (f64::NAN, 1),
            (1.0, 1),
            // (33.98 + 0.01) / 34 = 0.9997 -> 1
            (33.98, 1),
            // (33.99 + 0.01) / 34 = 1.0 exactly -> ceil 1
            (33.99, 1),
            // 34.01 / 34 = 1.0003 -> 2
            (34.0, 2),
            (50.0, 2),
            // (67.99 + 0.01) / 34 = 2.0 -> 2
            (67.99, 2),
            // 68.01 / 34 = 2.0003 -> 3
            (68.0, 3),
            (100.0, 3),
            (1e9, 3),
            (f64::INFINITY, 3),
        ];
        for (risk, want) in cases {
            assert_eq!(severity(risk), want, "{risk}");
        }
    }

    #[test]
    fn minute_windows_floor() {
        assert_eq!(minute_window(0), 0);
        assert_eq!(minute_window(59_999), 0);
        assert_eq!(minute_window(60_000), 60_000);
        assert_eq!(minute_window(1_445_191_307_978), 1_445_191_260_000);
        assert_eq!(minute_window(-1), -60_000);
        assert_eq!(minute_window(-60_000), -60_000);
        assert_eq!(minute_window(-60_001), -120_000);
        assert_eq!(minute_window(i64::MIN), i64::MIN);
        assert_eq!(minute_window(i64::MAX), 9_223_372_036_854_720_000);
    }

    #[test]
    fn incident_counts_and_bounds() {
        let mut inputs = vec![
            input(1_000, 0, "t1", "a"),
            input(5_000, 70, "t2", "b"),
            input(3_000, 25, "t1", "c"),
            input(2_000, 60, "t3", "d"),
        ];
        inputs[1].added_state = 1;
        inputs[1].level_fault = true;
        inputs[2].level_fault = true;
        inputs[3].added_state = 1;
        inputs[3].prediction = 1;
        let got = compute_incident(&inputs, 2);
        // n=4, k=2, top [70,60], mean 65: 70 + min(65, 30) = 100.
        let want = Incident {
            risk: 100.0,
            severity: 3,
            count_messages: 4,
            count_states: 3,
            added_states: 2,
            level_faults: 2,
            semantic_anomalies: 1,
            timestamp_start: 1_000,
            timestamp_end: 5_000,
            data: vec![(&inputs[1]).into(), (&inputs[3]).into()],
        };
        assert_eq!(got, Some(want));
    }

    #[test]
    fn empty_window_has_no_incident() {
        assert_eq!(compute_incident(&[], 5), None);
    }

    #[test]
    fn normal_windows() {
        let quiet = compute_incident(&[input(0, 0, "t", "a"), input(1, 0, "t", "b")], 5);
        assert_eq!(quiet.as_ref().map(is_normal), Some(true));
        assert_eq!(
            quiet.map(|i| (i.risk, i.severity, i.count_states)),
            Some((0.0, 1, 1))
        );
        let new_state = compute_incident(&[input(0, 1, "t", "a")], 5);
        assert_eq!(new_state.as_ref().map(is_normal), Some(false));
    }

    #[test]
    fn sample_ties_break_by_time_then_doc_id() {
        let inputs = vec![
            input(20, 25, "t", "z"),
            input(10, 25, "t", "y"),
            input(10, 25, "t", "x"),
            input(5, 1, "t", "w"),
        ];
        let docs = |max| -> Vec<String> {
            compute_incident(&inputs, max)
                .map(|i| i.data.into_iter().map(|s| s.doc_id).collect())
                .unwrap_or_default()
        };
        assert_eq!(docs(2), vec!["x", "y"]);
        assert_eq!(docs(10), vec!["x", "y", "z", "w"]);
        assert!(docs(0).is_empty());
    }

    #[test]
    fn order_independent() {
        let inputs: Vec<IncidentInput> = (0..12u32)
            .map(|i| {
                let mut x = input(
                    i64::from(i % 5) * 7,
                    (i * 37) % 90,
                    &format!("t{}", i % 4),
                    &format!("d{i}"),
                );
                x.prediction = u8::from(i % 3 == 0);
                x
            })
            .collect();
        let forward = compute_incident(&inputs, 4);
        let mut reversed = inputs.clone();
        reversed.reverse();
        let mut rotated = inputs.clone();
        rotated.rotate_left(5);
        assert_eq!(compute_incident(&reversed, 4), forward);
        assert_eq!(compute_incident(&rotated, 4), forward);
        assert_eq!(forward.as_ref().map(|i| i.count_states), Some(4));
        assert_eq!(forward.as_ref().map(|i| i.semantic_anomalies), Some(4));
    }
}
