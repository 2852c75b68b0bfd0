//! Score: anomaly score, prediction and risk of each mined line, rendered as its document
//! right away. Runs on the worker that mined the line: shards are uneven (a few templates hold
//! most lines), but spreading mined lines over the workers again cost more in moving them
//! between threads (cold caches, cross-thread frees) than the imbalance it removed: on the
//! Loghub mix with `-w2`, 306-326k lines/s spread against 348-352k kept in place.

use crate::dataflow::write::Renderer;
use crate::wire::Output;
use operators::analyze::Scorer;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;

/// The scoring stage.
pub trait Score<'scope> {
    /// Scores every line in place.
    ///
    /// ```
    /// use logsight_engine::dataflow::score::Score;
    /// use logsight_engine::sinks::DocId;
    /// use logsight_engine::wire::{Packed, Output, OutputLine, SeqKey};
    /// use operators::analyze::{AnalyticsConfig, LineAnalyzer, Scorer};
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Event;
    ///
    /// let cfg = AnalyticsConfig::default();
    /// let mut analyzer = LineAnalyzer::new(&cfg, None).unwrap();
    /// let mut line = analyzer.analyze_line("app", "FATAL disk sda1 failed, data lost");
    /// line.result.risk_score = 0; // as the miner leaves it
    /// let item = Output::Line(Box::new(OutputLine { key: SeqKey { stream: 0, seq: 0, sub: 0 }, doc_id: DocId(0), ingest_ms: 0, line: Packed(line) }));
    /// let out = timely::example(move |scope| {
    ///     vec![item].to_stream(scope).container::<Vec<_>>().score(Scorer::new(&cfg)).capture()
    /// });
    /// let scored: Vec<Output> = out.try_iter().flat_map(|e| match e { Event::Messages(_, d) => d, _ => Vec::new() }).collect();
    /// let Output::Doc(doc) = &scored[0] else { panic!() };
    /// assert!(doc.facts.risk_score > 0);
    /// let source: serde_json::Value = serde_json::from_str(&doc.source).unwrap();
    /// assert_eq!(source["risk_score"], doc.facts.risk_score);
    /// ```
    fn score(self, scorer: Scorer) -> StreamVec<'scope, u64, Output>;
}

impl<'scope> Score<'scope> for StreamVec<'scope, u64, Output> {
    fn score(self, mut scorer: Scorer) -> StreamVec<'scope, u64, Output> {
        let mut renderer = Renderer::default();
        self.unary(Pipeline, "Score", move |_cap, _info| {
            move |input, output| {
                input.for_each(|cap, data| {
                    for item in data.iter_mut() {
                        render_scored(&mut scorer, &mut renderer, item);
                    }
                    output.session(&cap).give_container(data);
                });
            }
        })
    }
}

/// Scores a mined line and renders it as its document. A line that fails to render stays a
/// scored [`Output::Line`], and the write stage reports the error when it renders it again.
fn render_scored(scorer: &mut Scorer, renderer: &mut Renderer, item: &mut Output) {
    if let Output::Line(line) = item {
        scorer.score(&mut line.line.0.result);
        if let Ok(doc) = renderer.render(line) {
            *item = Output::Doc(doc);
        }
    }
}
