//! The timely dataflow of the pipeline, one operator per file:
//! source input → [`decode::Decode`] (spread over workers) → [`mine_templates::MineTemplates`]
//! (exchanged by miner shard, mined per complete epoch in sequence order) →
//! [`score::Score`] → [`write::Write`] (sinks, checkpoint state) → probe.

pub mod decode;
pub mod mine_templates;
pub mod score;
pub mod write;
