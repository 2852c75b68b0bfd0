//! The `logsight` command line: one module per subcommand, each with its clap arguments and a
//! `run` function. `main.rs` only parses and dispatches.

pub mod config_cmd;
pub mod jobs;
pub mod parse;
pub mod run;
pub mod store;
