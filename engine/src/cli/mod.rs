//! The `logsight` command line: one module per subcommand, each with its clap arguments and a
//! `run` function, and the signal handling `run` and `jobs` share. `main.rs` only parses and
//! dispatches.

pub mod config_cmd;
pub mod jobs;
pub mod parse;
pub mod run;
pub mod store;

use anyhow::Context;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// SIGINT and SIGTERM ask for a graceful stop (the returned flag); a second one exits at once
/// with status 130, as an interrupted program does.
pub(crate) fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // Registered first, so it sees the flag before this signal sets it.
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))
            .context("installing signal handlers")?;
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    Ok(stop)
}
