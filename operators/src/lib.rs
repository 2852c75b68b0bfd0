//! Pure log analytics for logsight: the data model, header formats, masking, the online template
//! miner, semantic anomaly scoring, the risk table, and incident/aggregate math.
//!
//! Nothing in this crate knows about timely, Kafka, HTTP or async: every stage is a plain struct
//! with plain methods, so the engine can call it from any operator and benchmarks can call it
//! directly.

pub mod aggregate;
pub mod analyze;
pub mod anomaly;
pub mod format;
pub mod incident;
pub mod level;
pub mod mask;
pub mod miner;
pub mod model;
pub mod risk;
pub mod rng;
pub mod scoring;
pub mod swar;
mod text;
pub mod timestamp;
