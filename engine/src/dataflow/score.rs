//! Score: anomaly score, prediction and risk of each mined line. Stateless, so mined lines are
//! spread over the workers again by sequence number first: shards are uneven (a few templates
//! hold most lines), and scoring and writing should not inherit that imbalance. The spread
//! stays inside the process: balancing is not worth serializing every line between processes.

use crate::dataflow::decode::spread_key;
use crate::dataflow::write::Renderer;
use crate::wire::Output;
use operators::analyze::Scorer;
use std::ops::Range;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;

/// The scoring stage.
pub trait Score<'scope> {
    /// Scores every line in place, spreading lines over `workers` (the global indexes of this
    /// process's workers, see [`process_workers`]).
    ///
    /// ```
    /// use logsight_engine::dataflow::score::Score;
    /// use logsight_engine::wire::{Packed, Output, OutputLine, SeqKey};
    /// use operators::analyze::{AnalyticsConfig, LineAnalyzer, Scorer};
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Event;
    ///
    /// let cfg = AnalyticsConfig::default();
    /// let mut analyzer = LineAnalyzer::new(&cfg, None).unwrap();
    /// let mut line = analyzer.analyze_line("app", "FATAL disk sda1 failed, data lost");
    /// line.result.risk_score = 0; // as the miner leaves it
    /// let item = Output::Line(OutputLine { key: SeqKey { stream: 0, seq: 0, sub: 0 }, doc_id: "x".into(), ingest_ms: 0, line: Packed(line) });
    /// let out = timely::example(move |scope| {
    ///     vec![item].to_stream(scope).container::<Vec<_>>().score(Scorer::new(&cfg), 0..1).capture()
    /// });
    /// let scored: Vec<Output> = out.try_iter().flat_map(|e| match e { Event::Messages(_, d) => d, _ => Vec::new() }).collect();
    /// let Output::Doc(doc) = &scored[0] else { panic!() };
    /// assert!(doc.facts.risk_score > 0);
    /// let source: serde_json::Value = serde_json::from_str(&doc.source).unwrap();
    /// assert_eq!(source["risk_score"], doc.facts.risk_score);
    /// ```
    fn score(self, scorer: Scorer, workers: Range<usize>) -> StreamVec<'scope, u64, Output>;
}

/// The global indexes of the workers in the process of worker `index`, with `per_process`
/// workers in each process (timely numbers them process by process).
pub fn process_workers(index: usize, per_process: usize) -> Range<usize> {
    let per_process = per_process.max(1);
    let first = index / per_process * per_process;
    first..first + per_process
}

impl<'scope> Score<'scope> for StreamVec<'scope, u64, Output> {
    fn score(self, mut scorer: Scorer, workers: Range<usize>) -> StreamVec<'scope, u64, Output> {
        let first = workers.start as u64;
        let count = (workers.len() as u64).max(1);
        let pact = Exchange::new(move |o: &Output| {
            let key = o.key();
            first + spread_key(key.stream, key.seq) % count
        });
        let mut renderer = Renderer::default();
        self.unary(pact, "Score", move |_cap, _info| {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_workers_are_the_workers_numbered_with_the_process() {
        // Two processes of three workers: globals 0..3 and 3..6.
        assert_eq!(process_workers(0, 3), 0..3);
        assert_eq!(process_workers(2, 3), 0..3);
        assert_eq!(process_workers(3, 3), 3..6);
        assert_eq!(process_workers(5, 3), 3..6);
        assert_eq!(process_workers(1, 1), 1..2);
        assert_eq!(process_workers(4, 0), 4..5);
    }
}
