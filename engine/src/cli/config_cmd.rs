//! `logsight config check`: loads the configuration (file < environment), validates it and
//! prints the effective configuration with secrets hidden.

use crate::config::{process_env, EngineConfig};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// `logsight config …`
#[derive(Debug, Clone, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print the effective one (secrets as `***`).
    Check(CheckArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Configuration file (TOML); defaults apply without one.
    #[arg(long, env = "LOGSIGHT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

pub fn run(cmd: ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Check(args) => {
            let config = EngineConfig::load(args.config.as_deref(), &process_env())?;
            config.validate()?;
            print!("{}", config.to_redacted_toml()?);
            eprintln!("logsight: configuration is valid");
            Ok(())
        }
    }
}
