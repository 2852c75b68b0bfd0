//! MineTemplates: exchanges lines by their miner shard and mines each epoch in sequence order
//! once the epoch is complete, so every shard sees its lines in the same order whatever the
//! number of workers or processes, and template ids match a single-threaded run exactly.

use crate::checkpoint::Checkpoints;
use crate::durability::Durability;
use crate::wire::{Decoded, Output, OutputLine, Packed, SeqKey};
use operators::analyze::ShardMiner;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

/// Where a mining operator records its miner after each epoch (for restarts).
#[derive(Debug, Clone, Default)]
pub struct MinerCheckpoint {
    pub checkpoints: Option<Checkpoints>,
    pub worker: usize,
    /// Writes the snapshots off the worker thread; `None` writes them inline.
    pub durability: Option<Durability>,
}

impl MinerCheckpoint {
    /// No checkpoints (tests, examples).
    pub fn none() -> Self {
        MinerCheckpoint::default()
    }

    fn record(&self, epoch: u64, miner: &ShardMiner) {
        let Some(checkpoints) = &self.checkpoints else {
            return;
        };
        let snapshot = miner.miner().snapshot();
        if let Some(durability) = &self.durability {
            // Written before this worker's commit of `epoch`, which waits for it.
            durability.miner(epoch, snapshot);
            return;
        }
        if let Err(e) = checkpoints.write_miner(self.worker, epoch, &snapshot) {
            // Without the snapshot a restart could not reproduce template ids: stop; a restart
            // resumes from the last committed epoch.
            tracing::error!(
                "worker {}: recording the miner of epoch {epoch} failed: {e}",
                self.worker
            );
            eprintln!("logsight: recording the miner of epoch {epoch} failed: {e}");
            std::process::exit(2);
        }
    }
}

/// Counters the mining operator shares with the rest of its worker.
#[derive(Debug, Clone, Default)]
pub struct MinerGauge(Rc<RefCell<usize>>);

impl MinerGauge {
    pub fn templates(&self) -> usize {
        *self.0.borrow()
    }
}

/// The template mining stage.
pub trait MineTemplates<'scope> {
    /// Routes lines to the worker owning their shard and mines complete epochs in order.
    ///
    /// ```
    /// use logsight_engine::dataflow::mine_templates::{MineTemplates, MinerCheckpoint, MinerGauge};
    /// use logsight_engine::sinks::DocId;
    /// use logsight_engine::wire::{Decoded, Packed, Output, PreparedItem, SeqKey};
    /// use operators::analyze::{AnalyticsConfig, Preparer, ShardMiner};
    /// use operators::model::LogRecord;
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Event;
    ///
    /// let cfg = AnalyticsConfig::default();
    /// let prep = Preparer::new(&cfg).unwrap();
    /// let lines: Vec<Decoded> = ["user 2 logged in", "user 1 logged in"].iter().enumerate()
    ///     .map(|(i, m)| Decoded::Line(Box::new(PreparedItem {
    ///         key: SeqKey { stream: 0, seq: i as u64, sub: 0 },
    ///         doc_id: DocId(i as u64),
    ///         ingest_ms: 0,
    ///         line: Packed(prep.prepare("app", LogRecord::from_message(*m))),
    ///     })))
    ///     .collect();
    /// let out = timely::example(move |scope| {
    ///     let gauge = MinerGauge::default();
    ///     lines.to_stream(scope).container::<Vec<_>>()
    ///         .mine_templates(ShardMiner::new(&cfg), MinerCheckpoint::none(), gauge)
    ///         .capture()
    /// });
    /// let results: Vec<Output> = out.try_iter().flat_map(|e| match e { Event::Messages(_, d) => d, _ => Vec::new() }).collect();
    /// let Output::Line(first) = &results[0] else { panic!() };
    /// assert_eq!(first.key.seq, 0);
    /// assert_eq!(first.line.0.result.added_state, 1);
    /// ```
    fn mine_templates(
        self,
        miner: ShardMiner,
        checkpoint: MinerCheckpoint,
        gauge: MinerGauge,
    ) -> StreamVec<'scope, u64, Output>;
}

impl<'scope> MineTemplates<'scope> for StreamVec<'scope, u64, Decoded> {
    fn mine_templates(
        self,
        mut miner: ShardMiner,
        checkpoint: MinerCheckpoint,
        gauge: MinerGauge,
    ) -> StreamVec<'scope, u64, Output> {
        let pact = Exchange::new(|d: &Decoded| d.route());
        self.unary_frontier(pact, "MineTemplates", move |_cap, _info| {
            let mut pending: BTreeMap<u64, (Capability<u64>, Vec<Decoded>)> = BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    if let Some(cap) = cap.retain_least(0) {
                        let time = *cap.time();
                        let entry = pending.entry(time).or_insert_with(|| (cap, Vec::new()));
                        entry.1.append(data);
                    }
                });
                while let Some((&epoch, _)) = pending.first_key_value() {
                    if frontier.less_equal(&epoch) {
                        break;
                    }
                    let Some((cap, items)) = pending.remove(&epoch) else {
                        break;
                    };
                    output
                        .session(&cap)
                        .give_iterator(in_key_order(items).map(|item| mine_one(&mut miner, item)));
                    *gauge.0.borrow_mut() = miner.miner().template_count();
                    // Before the capability for `epoch` is dropped: downstream (and the commit)
                    // cannot pass `epoch` until the snapshot is on disk.
                    checkpoint.record(epoch, &miner);
                }
            }
        })
    }
}

/// The items of an epoch in key order. They arrive as a few sorted runs (one per batch of a
/// decoding worker), which the stable sort merges in close to linear time; keys sit behind
/// each item's box, so they are read once rather than per comparison.
fn in_key_order(items: Vec<Decoded>) -> impl Iterator<Item = Decoded> {
    let mut order: Vec<(SeqKey, usize)> = items
        .iter()
        .enumerate()
        .map(|(i, d)| (d.key(), i))
        .collect();
    order.sort();
    let mut slots: Vec<Option<Decoded>> = items.into_iter().map(Some).collect();
    order
        .into_iter()
        .filter_map(move |(_, i)| slots.get_mut(i).and_then(Option::take))
}

fn mine_one(miner: &mut ShardMiner, item: Decoded) -> Output {
    match item {
        Decoded::Line(p) => {
            let p = *p;
            Output::Line(Box::new(OutputLine {
                key: p.key,
                doc_id: p.doc_id,
                ingest_ms: p.ingest_ms,
                line: Packed(miner.mine(p.line.0)),
            }))
        }
        Decoded::Bad(key, record) => Output::Bad(key, record),
    }
}
