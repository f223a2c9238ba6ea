//! `broadcast-agent`: the Raspberry Pi end of a Janus WebRTC chatroom.
//!
//! Subcommands: `run` (the daemon), `check` (validate a config file).

mod agent;
mod backoff;
mod config;
mod janus;
mod media;
mod room;
mod secret;
mod systemd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Settings;

/// Exit status for a configuration the agent cannot use (sysexits' EX_CONFIG);
/// the unit's `RestartPreventExitStatus=78` stops systemd retrying it.
const EX_CONFIG: u8 = 78;

#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the agent (what systemd starts).
    Run(ConfigArg),
    /// Validate the configuration and print the effective settings, secrets masked.
    Check(ConfigArg),
}

#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// Configuration file.
    #[arg(long, short, default_value = config::DEFAULT_PATH)]
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    systemd::init_logging(log::LevelFilter::Info);
    match cli.command {
        Cmd::Run(arg) => {
            let settings = match load(&arg) {
                Ok(settings) => settings,
                Err(code) => return code,
            };
            match agent::run(settings) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e @ agent::RunError::Tls(_)) => {
                    log::error!("config error: {e}");
                    ExitCode::from(EX_CONFIG)
                }
                Err(e) => {
                    log::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Check(arg) => match load(&arg) {
            Ok(settings) => {
                print!("# {}: valid\n{settings}", arg.config.display());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
    }
}

/// Loads the settings, or logs the one-line reason and returns exit status 78.
fn load(arg: &ConfigArg) -> Result<Settings, ExitCode> {
    Settings::load(&arg.config).map_err(|e| {
        log::error!("config error: {e}");
        ExitCode::from(EX_CONFIG)
    })
}
