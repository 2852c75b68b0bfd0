//! logsight-engine: the log analytics pipeline as a timely dataflow, its sources and sinks,
//! checkpoints, metrics, configuration and the `logsight` command line.
//!
//! Start at [`pipeline::run`]: it builds the dataflow of [`dataflow`] on every worker and drives
//! the sources of [`sources`] from worker 0.

pub mod allocator;
pub mod checkpoint;
pub mod cli;
pub mod commit_writer;
pub mod config;
pub mod connectors;
pub mod dataflow;
pub mod durability;
pub mod jobs;
pub mod metrics;
pub mod pipeline;
pub mod quarantine;
pub mod sinks;
pub mod sources;
pub mod summary;
pub mod wire;
