//! The per-line analytics path, split where the engine exchanges data: [`Preparer`] (stateless:
//! mask and shard key, runs on any worker), [`ShardMiner`] (stateful: template mining, runs on
//! the worker that owns the line's shard) and [`Scorer`] (stateless: anomaly and risk).
//! [`LineAnalyzer`] chains header decoding and all three for single-threaded callers such as
//! `logsight parse` and benchmarks.

use crate::anomaly::{AnomalyConfig, AnomalyScorer};
use crate::format::{decode_into, FormatSet};
use crate::level::Level;
use crate::mask::{MaskConfig, MaskError, MaskRule, MaskedMessage, Masker};
use crate::miner::{shard_key, MineOutcome, MinerConfig, TemplateMiner};
use crate::model::{LogRecord, ResultRecord};
use crate::risk::RiskTable;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Everything the analytics path is configured by (the `[analytics]` part of the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// Ordered variable masks (`[[analytics.mask]]`); defaults to `configs/masks.toml`.
    #[serde(rename = "mask")]
    pub masks: Vec<MaskRule>,
    /// Write masked values as `<:NAME:>` instead of `<*>`.
    pub named_wildcards: bool,
    /// Merge consecutive whole-variable tokens into one (variable-length lists).
    pub collapse_variable_runs: bool,
    pub miner: MinerConfig,
    pub anomaly: AnomalyConfig,
    pub risk: RiskTable,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            masks: MaskConfig::default().masks,
            named_wildcards: false,
            collapse_variable_runs: true,
            miner: MinerConfig::default(),
            anomaly: AnomalyConfig::default(),
            risk: RiskTable::default(),
        }
    }
}

/// A log after masking, ready to be routed to the owner of `shard`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreparedLine {
    pub index: String,
    /// The log with an empty `message`: the text travels once, in `masked.text`.
    pub record: LogRecord,
    pub masked: MaskedMessage,
    pub shard: u64,
}

/// A finished result with the index it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalyzedLine {
    pub index: String,
    pub result: ResultRecord,
}

impl AnalyzedLine {
    /// An empty result to analyze lines into ([`LineAnalyzer::analyze_line_into`]).
    pub fn empty() -> Self {
        AnalyzedLine {
            index: String::new(),
            result: ResultRecord::unanalyzed(LogRecord::from_message(String::new())),
        }
    }
}

/// Stateless first half: masking and shard key.
#[derive(Debug, Clone)]
pub struct Preparer {
    masker: Masker,
}

impl Preparer {
    pub fn new(config: &AnalyticsConfig) -> Result<Self, MaskError> {
        let masks = MaskConfig {
            masks: config.masks.clone(),
        };
        let masker = Masker::new(
            &masks,
            config.named_wildcards,
            config.collapse_variable_runs,
        )?;
        Ok(Preparer { masker })
    }

    pub fn prepare(&self, index: impl Into<String>, mut record: LogRecord) -> PreparedLine {
        let index = index.into();
        let masked = self.masker.mask_owned(std::mem::take(&mut record.message));
        let shard = shard_key(&index, &masked);
        PreparedLine {
            index,
            record,
            masked,
            shard,
        }
    }
}

/// Stateful middle: template mining for the shards it is fed. Leaves `prediction`,
/// `anomaly_score` and `risk_score` at 0 for [`Scorer`].
#[derive(Debug, Clone)]
pub struct ShardMiner {
    miner: TemplateMiner,
}

impl ShardMiner {
    pub fn new(config: &AnalyticsConfig) -> Self {
        Self::from_miner(TemplateMiner::new(config.miner.clone()))
    }

    /// Continues from restored miner state.
    pub fn from_miner(miner: TemplateMiner) -> Self {
        ShardMiner { miner }
    }

    pub fn miner(&self) -> &TemplateMiner {
        &self.miner
    }

    pub fn mine(&mut self, line: PreparedLine) -> AnalyzedLine {
        let PreparedLine {
            index,
            mut record,
            masked,
            shard,
        } = line;
        let mined = self.miner.add_to_shard(shard, &index, &masked);
        record.message = masked.text;
        AnalyzedLine {
            index,
            result: unscored_result(record, mined),
        }
    }
}

/// The result of a mined line, before [`Scorer`].
fn unscored_result(log: LogRecord, mined: MineOutcome) -> ResultRecord {
    ResultRecord {
        log,
        template: mined.template,
        template_id: mined.template_id_text,
        params: mined.params,
        prediction: 0,
        anomaly_score: 0.0,
        risk_score: 0,
        added_state: u8::from(mined.added),
        ingest_timestamp: None,
    }
}

/// Sets everything in `result` but its log from `mined`, the scores to 0 for [`Scorer`]: the
/// fields of [`unscored_result`], assigned one by one because rebuilding the whole record
/// would move its log out and back on every line.
fn set_mined(result: &mut ResultRecord, mined: MineOutcome) {
    result.template = mined.template;
    result.template_id = mined.template_id_text;
    result.params = mined.params;
    result.prediction = 0;
    result.anomaly_score = 0.0;
    result.risk_score = 0;
    result.added_state = u8::from(mined.added);
    result.ingest_timestamp = None;
}

/// Last step: anomaly score, prediction and risk of a mined line. Its only state is a cache of
/// each template's vocabulary evidence, which depends on the template text alone.
#[derive(Debug, Clone)]
pub struct Scorer {
    anomaly: AnomalyScorer,
    risk: RiskTable,
    /// Evidence by the address of the template text a result shares with its miner: a lookup
    /// hashes one word instead of the text. Each entry holds its `Arc`, so the address cannot
    /// be freed and reused while cached; a generalised template has a new text, a new `Arc`.
    vocabulary: FxHashMap<usize, (Arc<str>, f64)>,
}

/// Bound of the vocabulary cache; it is cleared when full (templates are few in practice).
const VOCABULARY_CACHE_CAP: usize = 65_536;

impl Scorer {
    pub fn new(config: &AnalyticsConfig) -> Self {
        Scorer {
            anomaly: AnomalyScorer::new(config.anomaly.clone()),
            risk: config.risk,
            vocabulary: FxHashMap::default(),
        }
    }

    pub fn score(&mut self, result: &mut ResultRecord) {
        let level = result
            .log
            .level
            .as_deref()
            .map_or(Level::Unknown, Level::parse);
        self.score_with_level(result, level);
    }

    /// [`Scorer::score`] with the log's level already parsed (by the decoder).
    pub fn score_with_level(&mut self, result: &mut ResultRecord, level: Level) {
        let added = result.added_state == 1;
        let vocabulary = self.vocabulary_evidence(&result.template);
        result.anomaly_score = self.anomaly.combine(level, vocabulary, added);
        result.prediction = self.anomaly.predict(result.anomaly_score);
        result.risk_score = self
            .risk
            .score(added, result.prediction == 1, level.is_fault());
    }

    fn vocabulary_evidence(&mut self, template: &Arc<str>) -> f64 {
        let address = Arc::as_ptr(template).cast::<u8>() as usize;
        if let Some((_, v)) = self.vocabulary.get(&address) {
            return *v;
        }
        if self.vocabulary.len() >= VOCABULARY_CACHE_CAP {
            self.vocabulary.clear();
        }
        let v = self.anomaly.vocabulary_evidence(template);
        self.vocabulary.insert(address, (Arc::clone(template), v));
        v
    }
}

/// Header decoding, preparation and analysis in one place, for single-threaded callers.
#[derive(Debug, Clone)]
pub struct LineAnalyzer {
    formats: Option<FormatSet>,
    preparer: Preparer,
    miner: ShardMiner,
    scorer: Scorer,
    /// The masked form of the current line, its buffers reused from line to line.
    masked: MaskedMessage,
}

impl LineAnalyzer {
    pub fn new(config: &AnalyticsConfig, formats: Option<FormatSet>) -> Result<Self, MaskError> {
        Ok(LineAnalyzer {
            formats,
            preparer: Preparer::new(config)?,
            miner: ShardMiner::new(config),
            scorer: Scorer::new(config),
            masked: MaskedMessage::default(),
        })
    }

    /// Analyzes one raw line of `index`.
    pub fn analyze_line(&mut self, index: &str, line: &str) -> AnalyzedLine {
        let mut out = AnalyzedLine::empty();
        self.analyze_line_into(index, line, &mut out);
        out
    }

    /// Analyzes one raw line of `index` into `out`, replacing its contents but reusing its
    /// buffers (message, timestamp, header, params): a caller that handles one result at a
    /// time allocates almost nothing per line. Returns whether a format was given and the
    /// line did not match it.
    pub fn analyze_line_into(&mut self, index: &str, line: &str, out: &mut AnalyzedLine) -> bool {
        let decoded = decode_into(self.formats.as_ref(), line, &mut out.result.log);
        self.analyze_in_place(index, out, Some(decoded.level));
        decoded.format_mismatch
    }

    /// Analyzes one already decoded log.
    pub fn analyze_record(&mut self, index: &str, record: LogRecord) -> AnalyzedLine {
        let mut out = AnalyzedLine::empty();
        out.result.log = record;
        self.analyze_in_place(index, &mut out, None);
        out
    }

    /// Analyzes the log in `out.result.log` (of level `level` when the caller parsed it),
    /// replacing the rest of `out`. The same steps as [`Preparer::prepare`],
    /// [`ShardMiner::mine`] and [`Scorer::score`], with the masked message kept here: nothing
    /// crosses threads, so its buffers are reused.
    fn analyze_in_place(&mut self, index: &str, out: &mut AnalyzedLine, level: Option<Level>) {
        let masked = &mut self.masked;
        let result = &mut out.result;
        self.preparer
            .masker
            .mask_into(std::mem::take(&mut result.log.message), masked);
        let shard = shard_key(index, masked);
        let params = std::mem::take(&mut result.params);
        let mined = self
            .miner
            .miner
            .add_to_shard_reusing(shard, index, masked, params);
        result.log.message = std::mem::take(&mut masked.text);
        set_mined(result, mined);
        match level {
            Some(level) => self.scorer.score_with_level(result, level),
            None => self.scorer.score(result),
        }
        if out.index != index {
            out.index.clear();
            out.index.push_str(index);
        }
    }

    pub fn miner(&self) -> &TemplateMiner {
        self.miner.miner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_error_line_gets_the_added_error_risk() {
        let mut a = LineAnalyzer::new(&AnalyticsConfig::default(), None).unwrap();
        let mut record = LogRecord::from_message("disk sda1 failed after 3 retries");
        record.level = Some("ERROR".into());
        let first = a.analyze_record("app", record.clone());
        assert_eq!(first.index, "app");
        assert_eq!(first.result.added_state, 1);
        assert_eq!(first.result.log.message, "disk sda1 failed after 3 retries");
        assert_eq!(first.result.params, ["3"]);
        // Fatal-class words + ERROR + novelty cross the 0.85 threshold: added/error/anomaly = 80.
        assert_eq!(first.result.prediction, 1);
        assert_eq!(first.result.risk_score, 80);
        let second = a.analyze_record("app", record);
        assert_eq!(second.result.added_state, 0);
        assert_eq!(second.result.template_id, first.result.template_id);
        // Recurring with an error level: 25 whether or not it is predicted anomalous.
        assert_eq!(second.result.risk_score, 25);
    }

    #[test]
    fn info_lines_recur_at_zero_risk() {
        let mut a = LineAnalyzer::new(&AnalyticsConfig::default(), None).unwrap();
        let r1 = a.analyze_line("app", "user 7 logged in");
        let r2 = a.analyze_line("app", "user 8 logged in");
        assert_eq!((r1.result.risk_score, r2.result.risk_score), (1, 0));
        assert_eq!(&*r2.result.template, "user <*> logged in");
    }

    #[test]
    fn line_analyzer_equals_the_three_steps() {
        // The reused masked buffers must not leak from a long line into the next, shorter one.
        let lines = [
            "ids 1 2 3 4 5 end of a long list from 10.0.0.1:80 (HWID=1973) node-246",
            "user 7 logged in",
            "disk sda1 failed after 3 retries",
            "user 8 logged in",
            "",
            "ids 9 8 7 end",
            "disk sdb2 failed after 4 retries",
        ];
        let config = AnalyticsConfig::default();
        let mut one = LineAnalyzer::new(&config, None).unwrap();
        let preparer = Preparer::new(&config).unwrap();
        let mut miner = ShardMiner::new(&config);
        let mut scorer = Scorer::new(&config);
        for line in lines.iter().chain(&lines) {
            let mut record = LogRecord::from_message(*line);
            record.level = Some("ERROR".into());
            let mut expected = miner.mine(preparer.prepare("app", record.clone()));
            scorer.score(&mut expected.result);
            assert_eq!(one.analyze_record("app", record), expected, "{line}");
        }
    }

    #[test]
    fn results_analyzed_into_a_reused_one_equal_fresh_ones() {
        // Long lines before short ones, lines with and without a level, a timestamp or a
        // match, so stale buffers or fields of the previous line would show.
        let lines = [
            "2016-09-28 04:30:30 ERROR disk: sda1 failed after 3 retries on 10.0.0.1:8080 (id 1973)",
            "2016-09-28 04:30:31 INFO net: up",
            "no header at all",
            "2016-09-28 04:30:32 NOTALEVEL x: odd level word",
            "notadate 04:30:33 WARN disk: bad stamp",
            "2016-09-28 04:30:34 [warn] disk: sda2 failed after 4 retries",
            "",
            "2016-09-28 04:30:35 I net: up",
        ];
        let config = AnalyticsConfig::default();
        let formats = || FormatSet::resolve("<Date> <Time> <Level> <Component>: <Content>").ok();
        let mut reusing = LineAnalyzer::new(&config, formats()).unwrap();
        let mut fresh = LineAnalyzer::new(&config, formats()).unwrap();
        let mut out = AnalyzedLine::empty();
        // Leftovers a decoded line must not keep.
        out.result
            .log
            .tags
            .to_mut()
            .insert("team".into(), "x".into());
        out.result.log.id = Some("old".into());
        out.result.log.metadata.insert("k".into(), 1.into());
        out.result.ingest_timestamp = Some("then".into());
        let mut mismatches = 0;
        for (round, line) in lines.iter().chain(&lines).enumerate() {
            let mismatch = reusing.analyze_line_into("app", line, &mut out);
            let expected = fresh.analyze_line("app", line);
            mismatches += usize::from(mismatch);
            assert_eq!(
                mismatch,
                expected.result.log.extra.contains_key("format_mismatch")
            );
            assert_eq!(out, expected, "line {round}: {line}");
        }
        assert_eq!(mismatches, 4);
        // A `to_record` decode analyzed by `analyze_record` gives the same result.
        let mut other = LineAnalyzer::new(&config, None).unwrap();
        let decoded = crate::format::to_record(formats().as_ref(), lines[0]);
        let mut again = LineAnalyzer::new(&config, formats()).unwrap();
        assert_eq!(
            other.analyze_record("app", decoded.record),
            again.analyze_line("app", lines[0])
        );
    }

    #[test]
    fn cached_vocabulary_evidence_follows_the_template_text_not_its_address() {
        let config = AnalyticsConfig::default();
        let mut scorer = Scorer::new(&config);
        let fresh = AnomalyScorer::new(config.anomaly.clone());
        // Same length, different evidence: a template dropped (generalised, evicted) and a new
        // one allocated at once would usually get its address back from the allocator.
        let texts = ["fatal crash now", "user logged off"];
        assert_ne!(
            fresh.vocabulary_evidence(texts[0]),
            fresh.vocabulary_evidence(texts[1])
        );
        for round in 0..200 {
            let template: Arc<str> = Arc::from(texts[round % 2]);
            for _ in 0..2 {
                assert_eq!(
                    scorer.vocabulary_evidence(&template),
                    fresh.vocabulary_evidence(&template),
                    "round {round}"
                );
            }
        }
    }

    #[test]
    fn config_round_trips_through_toml() {
        let config = AnalyticsConfig::default();
        let text = toml::to_string(&config).unwrap();
        let back: AnalyticsConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, config);
    }
}
