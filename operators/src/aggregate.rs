//! Per-minute log aggregates: how many lines of each level, and how many were anomalies.
//!
//! Aggregates are commutative sums so partial aggregates from several workers can be merged.

use crate::incident::minute_window;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Counts for one minute window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogAggregate {
    /// Window start, epoch milliseconds.
    pub minute_ms: i64,
    /// Lines per normalised level name.
    pub levels: BTreeMap<String, u64>,
    /// Lines flagged as semantic anomalies.
    pub prediction_sum: u64,
    pub total: u64,
}

impl LogAggregate {
    /// An empty aggregate for the window starting at `minute_ms`.
    pub fn new(minute_ms: i64) -> Self {
        LogAggregate {
            minute_ms,
            ..LogAggregate::default()
        }
    }

    /// Counts one line. Any non-zero `prediction` counts as one anomaly.
    pub fn add(&mut self, level: &str, prediction: u8) {
        // Look up before inserting so the common case (a known level) does not allocate.
        match self.levels.get_mut(level) {
            Some(count) => *count = count.saturating_add(1),
            None => {
                self.levels.insert(level.to_owned(), 1);
            }
        }
        self.prediction_sum = self
            .prediction_sum
            .saturating_add(u64::from(prediction != 0));
        self.total = self.total.saturating_add(1);
    }

    /// Adds another aggregate's counts to this one (keeping this window's start).
    pub fn merge(&mut self, other: &LogAggregate) {
        for (level, &count) in &other.levels {
            match self.levels.get_mut(level.as_str()) {
                Some(mine) => *mine = mine.saturating_add(count),
                None => {
                    self.levels.insert(level.clone(), count);
                }
            }
        }
        self.prediction_sum = self.prediction_sum.saturating_add(other.prediction_sum);
        self.total = self.total.saturating_add(other.total);
    }
}

/// Aggregates `(timestamp ms, normalised level, prediction)` items per minute window,
/// keyed by window start.
pub fn aggregate<'a>(
    items: impl IntoIterator<Item = (i64, &'a str, u8)>,
) -> BTreeMap<i64, LogAggregate> {
    let mut windows: BTreeMap<i64, LogAggregate> = BTreeMap::new();
    for (ts_ms, level, prediction) in items {
        let minute = minute_window(ts_ms);
        windows
            .entry(minute)
            .or_insert_with(|| LogAggregate::new(minute))
            .add(level, prediction);
    }
    windows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn add_counts_levels_predictions_and_total() {
        let mut agg = LogAggregate::new(60_000);
        agg.add("INFO", 0);
        agg.add("ERROR", 1);
        agg.add("INFO", 1);
        agg.add("INFO", 7);
        assert_eq!(
            agg,
            LogAggregate {
                minute_ms: 60_000,
                levels: levels(&[("ERROR", 1), ("INFO", 3)]),
                prediction_sum: 3,
                total: 4,
            }
        );
    }

    #[test]
    fn aggregate_groups_by_minute() {
        let items = [
            (0, "INFO", 0),
            (59_999, "INFO", 1),
            (60_000, "WARNING", 0),
            (119_999, "ERROR", 1),
            (125_000, "INFO", 0),
            (-1, "DEBUG", 0),
        ];
        let got = aggregate(items);
        let mut want = BTreeMap::new();
        want.insert(
            -60_000,
            LogAggregate {
                minute_ms: -60_000,
                levels: levels(&[("DEBUG", 1)]),
                prediction_sum: 0,
                total: 1,
            },
        );
        want.insert(
            0,
            LogAggregate {
                minute_ms: 0,
                levels: levels(&[("INFO", 2)]),
                prediction_sum: 1,
                total: 2,
            },
        );
        want.insert(
            60_000,
            LogAggregate {
                minute_ms: 60_000,
                levels: levels(&[("ERROR", 1), ("WARNING", 1)]),
                prediction_sum: 1,
                total: 2,
            },
        );
        want.insert(
            120_000,
            LogAggregate {
                minute_ms: 120_000,
                levels: levels(&[("INFO", 1)]),
                prediction_sum: 0,
                total: 1,
            },
        );
        assert_eq!(got, want);
        assert!(aggregate(std::iter::empty()).is_empty());
    }

    #[test]
    fn merge_equals_aggregating_everything() {
        let first = [(1_000, "INFO", 0), (2_000, "ERROR", 1)];
        let second = [(3_000, "INFO", 1), (4_000, "FAULT", 0)];
        let mut merged = aggregate(first).remove(&0).unwrap_or_default();
        let other = aggregate(second).remove(&0).unwrap_or_default();
        merged.merge(&other);
        assert_eq!(
            merged,
            LogAggregate {
                minute_ms: 0,
                levels: levels(&[("ERROR", 1), ("FAULT", 1), ("INFO", 2)]),
                prediction_sum: 2,
                total: 4,
            }
        );
        let all = aggregate(first.into_iter().chain(second));
        assert_eq!(all.get(&0), Some(&merged));
    }
}
