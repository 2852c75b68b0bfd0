//! The risk table: logsight's per-line risk score from (new template?, semantic anomaly?, fault
//! level?), with the same `RISK_SCORE_*` environment overrides.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The environment variables read by [`RiskTable::from_env`], in table order: the four
/// added-state cells, then the four recurring-state cells, each as
/// [none, level error, semantics anomaly, both].
pub const ENV_NAMES: [&str; 8] = [
    "RISK_SCORE_ADDED_STATE",
    "RISK_SCORE_ADDED_STATE_LEVEL_ERROR",
    "RISK_SCORE_ADDED_STATE_SEMANTICS_ANOMALY",
    "RISK_SCORE_ADDED_STATE_LEVEL_ERROR_SEMANTICS_ANOMALY",
    "RISK_SCORE_RECURRING_STATE",
    "RISK_SCORE_RECURRING_STATE_LEVEL_ERROR",
    "RISK_SCORE_RECURRING_STATE_SEMANTICS_ANOMALY",
    "RISK_SCORE_RECURRING_STATE_LEVEL_ERROR_SEMANTICS_ANOMALY",
];

/// Largest allowed risk score: incident risk is on a 0..=100 scale.
pub const MAX_SCORE: u32 = 100;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RiskError {
    #[error("{name}={value:?}: a risk score must be an integer in 0..=100")]
    InvalidScore { name: String, value: String },
}

/// Risk scores indexed [none, level error, semantics anomaly, both], for lines whose template
/// is new (`added`) or already known (`recurring`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawRiskTable")]
pub struct RiskTable {
    pub added: [u32; 4],
    pub recurring: [u32; 4],
}

impl Default for RiskTable {
    /// logsight's defaults.
    fn default() -> Self {
        RiskTable {
            added: [1, 70, 60, 80],
            recurring: [0, 25, 25, 25],
        }
    }
}

/// The unchecked serde shape; [`RiskTable`] deserializes through it to validate the range.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawRiskTable {
    added: [u32; 4],
    recurring: [u32; 4],
}

impl Default for RawRiskTable {
    fn default() -> Self {
        let table = RiskTable::default();
        RawRiskTable {
            added: table.added,
            recurring: table.recurring,
        }
    }
}

impl TryFrom<RawRiskTable> for RiskTable {
    type Error = RiskError;

    fn try_from(raw: RawRiskTable) -> Result<Self, RiskError> {
        let cells = raw.added.iter().chain(raw.recurring.iter());
        for (i, &score) in cells.enumerate() {
            if score > MAX_SCORE {
                return Err(RiskError::InvalidScore {
                    name: cell_name(i),
                    value: score.to_string(),
                });
            }
        }
        Ok(RiskTable {
            added: raw.added,
            recurring: raw.recurring,
        })
    }
}

/// The config-file name of cell `i` (in [`ENV_NAMES`] order) with its variable, e.g.
/// `added[1] (RISK_SCORE_ADDED_STATE_LEVEL_ERROR)`.
fn cell_name(i: usize) -> String {
    let half = if i < 4 { "added" } else { "recurring" };
    let env_name = ENV_NAMES.get(i).copied().unwrap_or_default();
    format!("{half}[{}] ({env_name})", i % 4)
}

impl RiskTable {
    /// The defaults overridden by whichever of [`ENV_NAMES`] `lookup` returns. Empty or blank
    /// values count as unset, as `VAR=` in a compose file usually means "not configured".
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<RiskTable, RiskError> {
        let mut table = RiskTable::default();
        for (i, name) in ENV_NAMES.iter().enumerate() {
            let Some(value) = lookup(name) else { continue };
            let trimmed = value.trim();
            if trimmed.is_empty() {
                continue;
            }
            let score = trimmed
                .parse::<u32>()
                .ok()
                .filter(|s| *s <= MAX_SCORE)
                .ok_or_else(|| RiskError::InvalidScore {
                    name: (*name).to_owned(),
                    value: value.clone(),
                })?;
            if let Some(cell) = table.cell_mut(i) {
                *cell = score;
            }
        }
        Ok(table)
    }

    /// The defaults overridden by the process environment (non-UTF-8 values are rejected).
    pub fn from_env() -> Result<RiskTable, RiskError> {
        Self::from_lookup(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))
    }

    /// The risk score of one line.
    pub fn score(&self, added_state: bool, prediction: bool, level_fault: bool) -> u32 {
        let index = usize::from(level_fault) + 2 * usize::from(prediction);
        let row = if added_state {
            &self.added
        } else {
            &self.recurring
        };
        row[index]
    }

    /// Cell `i` in [`ENV_NAMES`] order.
    fn cell_mut(&mut self, i: usize) -> Option<&mut u32> {
        if i < 4 {
            self.added.get_mut(i)
        } else {
            self.recurring.get_mut(i - 4)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup_from(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn default_table_all_eight_cells() {
        let t = RiskTable::default();
        // (added_state, prediction, level_fault) -> score
        assert_eq!(t.score(true, false, false), 1);
        assert_eq!(t.score(true, false, true), 70);
        assert_eq!(t.score(true, true, false), 60);
        assert_eq!(t.score(true, true, true), 80);
        assert_eq!(t.score(false, false, false), 0);
        assert_eq!(t.score(false, false, true), 25);
        assert_eq!(t.score(false, true, false), 25);
        assert_eq!(t.score(false, true, true), 25);
    }

    #[test]
    fn every_variable_overrides_its_own_cell() {
        let values = ["11", "12", "13", "14", "15", "16", "17", "18"];
        let pairs: Vec<(&str, &str)> = ENV_NAMES.iter().copied().zip(values).collect();
        let t = RiskTable::from_lookup(lookup_from(&pairs));
        assert_eq!(
            t,
            Ok(RiskTable {
                added: [11, 12, 13, 14],
                recurring: [15, 16, 17, 18],
            })
        );
        let t = t.unwrap_or_default();
        assert_eq!(t.score(true, true, false), 13);
        assert_eq!(t.score(false, false, true), 16);
    }

    #[test]
    fn partial_overrides_keep_other_defaults() {
        let t = RiskTable::from_lookup(lookup_from(&[
            (
                "RISK_SCORE_RECURRING_STATE_LEVEL_ERROR_SEMANTICS_ANOMALY",
                " 100 ",
            ),
            ("RISK_SCORE_ADDED_STATE", ""),
        ]));
        assert_eq!(
            t,
            Ok(RiskTable {
                added: [1, 70, 60, 80],
                recurring: [0, 25, 25, 100],
            })
        );
    }

    #[test]
    fn bad_values_name_the_variable_and_value() {
        for bad in ["abc", "-1", "101", "1.5", "4294967296"] {
            let err = RiskTable::from_lookup(lookup_from(&[(
                "RISK_SCORE_ADDED_STATE_SEMANTICS_ANOMALY",
                bad,
            )]));
            let want = RiskError::InvalidScore {
                name: "RISK_SCORE_ADDED_STATE_SEMANTICS_ANOMALY".to_owned(),
                value: bad.to_owned(),
            };
            assert_eq!(err, Err(want), "{bad}");
        }
        let msg = RiskError::InvalidScore {
            name: "RISK_SCORE_ADDED_STATE".to_owned(),
            value: "x".to_owned(),
        }
        .to_string();
        assert_eq!(
            msg,
            "RISK_SCORE_ADDED_STATE=\"x\": a risk score must be an integer in 0..=100"
        );
    }

    #[test]
    fn from_env_without_variables_is_the_default() {
        // The test environment does not set RISK_SCORE_*; guard in case it does.
        if ENV_NAMES.iter().all(|n| std::env::var_os(n).is_none()) {
            assert_eq!(RiskTable::from_env(), Ok(RiskTable::default()));
        }
    }

    #[test]
    fn deserializes_from_toml_with_defaults_and_validation() {
        let t: Result<RiskTable, _> = toml::from_str("recurring = [0, 30, 40, 50]");
        assert_eq!(
            t.ok(),
            Some(RiskTable {
                added: [1, 70, 60, 80],
                recurring: [0, 30, 40, 50],
            })
        );
        let empty: Result<RiskTable, _> = toml::from_str("");
        assert_eq!(empty.ok(), Some(RiskTable::default()));
        let too_big: Result<RiskTable, _> = toml::from_str("added = [1, 2, 300, 4]");
        let err = too_big.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            err.contains("added[2] (RISK_SCORE_ADDED_STATE_SEMANTICS_ANOMALY)"),
            "{err}"
        );
        let unknown: Result<RiskTable, _> = toml::from_str("extra = 1");
        assert!(unknown.is_err());
        let short: Result<RiskTable, _> = toml::from_str("added = [1, 2]");
        assert!(short.is_err());
    }

    #[test]
    fn serializes_round_trip() {
        let t = RiskTable {
            added: [5, 6, 7, 8],
            recurring: [1, 2, 3, 4],
        };
        let json = serde_json::to_string(&t).unwrap_or_default();
        assert_eq!(json, r#"{"added":[5,6,7,8],"recurring":[1,2,3,4]}"#);
        let back: Result<RiskTable, _> = serde_json::from_str(&json);
        assert_eq!(back.ok(), Some(t));
    }
}
