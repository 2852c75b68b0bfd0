//! Semantic anomaly scoring without a model download: a calibrated noisy-OR of the line's level,
//! the fault vocabulary of its template's constant words (damped by recovery words such as
//! "corrected"), and the novelty and rarity of its template.
//!
//! Each signal is a probability-like evidence value in [0, 1]; the score is
//! `1 - Π(1 - evidence)`, so no single weak signal reaches the default threshold (0.85) alone,
//! but a fault level plus fault words, or strong fault words on a new template, do.

use crate::level::Level;
use crate::mask::is_wildcard;
use serde::{Deserialize, Serialize};

/// Default `PREDICTION_THRESHOLD`, as in logsight.
pub const DEFAULT_THRESHOLD: f64 = 0.85;

/// Anomaly settings; the vocabularies are word prefixes matched on lower-cased words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnomalyConfig {
    /// Score at or above which `prediction` is 1 (`PREDICTION_THRESHOLD`).
    pub threshold: f64,
    /// Words that on their own say something broke.
    pub strong_fault_words: Vec<String>,
    /// Words that suggest trouble but also appear in routine messages.
    pub weak_fault_words: Vec<String>,
    /// Words saying a fault was handled; they damp the vocabulary evidence.
    pub recovery_words: Vec<String>,
    /// Evidence of the level: fatal/critical/fault, error, warning.
    pub level_fatal: f64,
    pub level_error: f64,
    pub level_warning: f64,
    pub strong_word: f64,
    pub weak_word: f64,
    /// Factor applied to the vocabulary evidence when a recovery word is present.
    pub recovery_damping: f64,
    /// Evidence of a template seen for the first time.
    pub novelty: f64,
}

fn words(list: &[&str]) -> Vec<String> {
    list.iter().map(|w| (*w).to_owned()).collect()
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        AnomalyConfig {
            threshold: DEFAULT_THRESHOLD,
            strong_fault_words: words(&[
                "fail",
                "fatal",
                "panic",
                "crash",
                "abort",
                "exception",
                "corrupt",
                "refused",
                "denied",
                "severed",
                "unreachable",
                "segfault",
                "overflow",
                "deadlock",
                "broken",
                "killed",
                "unrecoverable",
                "halt",
                "died",
                "timedout",
                "terminated",
            ]),
            weak_fault_words: words(&[
                "error",
                "err",
                "errors",
                "invalid",
                "unable",
                "cannot",
                "can't",
                "couldn't",
                "lost",
                "timeout",
                "interrupt",
                "exceed",
                "unavailable",
                "missing",
                "illegal",
                "mismatch",
                "reset",
                "retry",
                "warn",
                "bad",
                "not",
                "no",
                "problem",
                "severe",
                "critical",
                "down",
                "expired",
                "rejected",
                "unexpected",
                "wrong",
            ]),
            recovery_words: words(&[
                "corrected",
                "recovered",
                "success",
                "succeeded",
                "successful",
                "ok",
                "resolved",
                "restored",
                "completed",
            ]),
            level_fatal: 0.6,
            level_error: 0.5,
            level_warning: 0.25,
            strong_word: 0.7,
            weak_word: 0.4,
            recovery_damping: 0.2,
            novelty: 0.25,
        }
    }
}

/// What the scorer looks at for one line.
#[derive(Debug, Clone, Copy)]
pub struct AnomalyInput<'a> {
    pub level: Level,
    /// Template tokens (wildcards are skipped).
    pub template: &'a str,
    /// True when the line created its template.
    pub added: bool,
}

/// A compiled scorer.
#[derive(Debug, Clone)]
pub struct AnomalyScorer {
    config: AnomalyConfig,
}

impl AnomalyScorer {
    pub fn new(config: AnomalyConfig) -> Self {
        AnomalyScorer { config }
    }

    pub fn threshold(&self) -> f64 {
        self.config.threshold
    }

    /// The anomaly score in [0, 1].
    pub fn score(&self, input: &AnomalyInput<'_>) -> f64 {
        let vocabulary = self.vocabulary_evidence(input.template);
        self.combine(input.level, vocabulary, input.added)
    }

    /// The score from the level, a template's [`vocabulary_evidence`](Self::vocabulary_evidence)
    /// (which callers may cache per template) and novelty.
    pub fn combine(&self, level: Level, vocabulary: f64, added: bool) -> f64 {
        let c = &self.config;
        let level = match level {
            Level::Fatal | Level::Critical | Level::Fault => c.level_fatal,
            Level::Error => c.level_error,
            Level::Warning => c.level_warning,
            _ => 0.0,
        };
        let novelty = if added { c.novelty } else { 0.0 };
        let score = 1.0 - (1.0 - level) * (1.0 - vocabulary) * (1.0 - novelty);
        score.clamp(0.0, 1.0)
    }

    /// 1 when `score` reaches the threshold.
    pub fn predict(&self, score: f64) -> u8 {
        u8::from(score >= self.config.threshold)
    }

    /// Strongest fault-word evidence among the template's constant words, combining the two
    /// strongest by noisy-OR, damped when a recovery word is present.
    pub fn vocabulary_evidence(&self, template: &str) -> f64 {
        let c = &self.config;
        let (mut first, mut second, mut recovered) = (0.0_f64, 0.0_f64, false);
        for word in template_words(template) {
            let evidence = if has_prefix(&c.strong_fault_words, &word) {
                c.strong_word
            } else if is_listed(&c.weak_fault_words, &word) {
                c.weak_word
            } else {
                recovered |= has_prefix(&c.recovery_words, &word);
                0.0
            };
            if evidence > first {
                second = first;
                first = evidence;
            } else if evidence > second {
                second = evidence;
            }
        }
        let evidence = 1.0 - (1.0 - first) * (1.0 - second);
        if recovered {
            evidence * c.recovery_damping
        } else {
            evidence
        }
    }
}

/// Lower-cased alphabetic words of the template's constant tokens.
fn template_words(template: &str) -> impl Iterator<Item = String> + '_ {
    template
        .split_whitespace()
        .filter(|t| !is_wildcard(t))
        .flat_map(|t| t.split(|c: char| !(c.is_alphabetic() || c == '\'')))
        .filter(|w| w.len() > 1)
        .map(str::to_lowercase)
}

fn has_prefix(list: &[String], word: &str) -> bool {
    list.iter().any(|p| word.starts_with(p.as_str()))
}

/// Weak words match whole words or their plural/inflection (`errors`, `timeouts`).
fn is_listed(list: &[String], word: &str) -> bool {
    list.iter().any(|p| {
        word == p
            || word.strip_prefix(p.as_str()).is_some_and(|rest| {
                matches!(rest, "s" | "ed" | "ing" | "es" | "ion" | "ions" | "ful")
            })
    })
}

/// The keyword baseline used by benchmarks: a line is anomalous when it contains one of
/// error/fail/fatal/exception/... (case-insensitive).
pub fn keyword_baseline(message: &str) -> bool {
    const KEYWORDS: [&str; 8] = [
        "error",
        "fail",
        "fatal",
        "exception",
        "panic",
        "crash",
        "abort",
        "critical",
    ];
    let lower = message.to_lowercase();
    KEYWORDS.iter().any(|k| lower.contains(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(level: Level, template: &str, added: bool) -> f64 {
        AnomalyScorer::new(AnomalyConfig::default()).score(&AnomalyInput {
            level,
            template,
            added,
        })
    }

    #[test]
    fn fault_level_plus_fault_words_is_anomalous() {
        let s = AnomalyScorer::new(AnomalyConfig::default());
        let v = score(Level::Fatal, "data TLB error interrupt", false);
        // 1 - (1-0.6) * (1 - (1-(1-0.4)(1-0.4))) = 1 - 0.4*0.36 = 0.856
        assert!((v - 0.856).abs() < 1e-9, "{v}");
        assert_eq!(s.predict(v), 1);
    }

    #[test]
    fn routine_info_lines_score_zero() {
        assert_eq!(
            score(
                Level::Info,
                "PacketResponder <*> for block <*> terminating",
                false
            ),
            0.0
        );
        assert_eq!(
            score(Level::Info, "Verification succeeded for <*>", false),
            0.0
        );
    }

    #[test]
    fn recovery_words_damp_fault_words() {
        let raw = score(Level::Info, "instruction cache parity error", false);
        let corrected = score(
            Level::Info,
            "instruction cache parity error corrected",
            false,
        );
        assert!((raw - 0.4).abs() < 1e-9);
        assert!((corrected - 0.08).abs() < 1e-9);
    }

    #[test]
    fn no_single_signal_reaches_the_threshold() {
        let s = AnomalyScorer::new(AnomalyConfig::default());
        for v in [
            score(Level::Fatal, "instruction address: <*>", false),
            score(Level::Info, "Exception in thread main", false),
            score(Level::Info, "something new", true),
        ] {
            assert_eq!(s.predict(v), 0, "{v}");
        }
        // Strong words on a brand-new error template do.
        let v = score(Level::Error, "Connection refused by peer", true);
        assert_eq!(s.predict(v), 1, "{v}");
    }

    #[test]
    fn wildcards_and_inflections() {
        assert!(is_listed(&["error".to_owned()], "errors"));
        assert!(!is_listed(&["no".to_owned()], "node"));
        assert_eq!(score(Level::Info, "<*> <*>", false), 0.0);
    }

    #[test]
    fn keyword_baseline_matches_substrings() {
        assert!(keyword_baseline("Lustre mount FAILED"));
        assert!(!keyword_baseline("generating core.1234"));
    }
}
