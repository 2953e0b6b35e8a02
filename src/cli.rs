//! Command-line interface: clap definitions and dispatch to `commands::*`.

use clap::{Parser, Subcommand};

use crate::commands;
use crate::error::exit;

/// Turns declarative TOML experiment specs into trained models.
#[derive(Debug, Parser)]
#[command(name = "orchestrate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train every run of an experiment's grid and name the winner.
    Run(commands::run::Args),
    /// Show the runs a spec expands to, and what runs/ already holds for each.
    Plan(commands::plan::Args),
    /// Print the fully resolved spec; --explain KEY says which source set KEY.
    Config(commands::config::Args),
    /// Per-layer output shapes and parameter counts of the spec's model.
    Inspect(commands::inspect::Args),
    /// Print the winning run's config as a spec that runs as is.
    Best(commands::best::Args),
    /// Compare two summaries with tolerances; exit 1 when a metric regressed.
    Diff(commands::diff::Args),
    /// Draw PNG figures of an experiment (learning curves, final metrics).
    Report(commands::report::Args),
    /// Translate sentences or classify images with a trained run or an experiment's winner.
    Predict(commands::predict::Args),
    /// List experiments under runs/ with run counts by state and their winners.
    Ls(commands::ls::Args),
    /// The table of an experiment's runs and their states (also while a grid runs).
    Status(commands::status::Args),
    /// List an experiment's stale runs (other data or numerics); --delete removes them.
    Gc(commands::gc::Args),
    /// Internal: train one run directory (started by the launchers).
    #[command(hide = true)]
    Worker(commands::worker::Args),
}

/// Parses the command line, runs the command and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return code;
        }
    };
    let result = match &cli.command {
        Command::Run(a) => commands::run::execute(a),
        Command::Plan(a) => commands::plan::execute(a),
        Command::Config(a) => commands::config::execute(a),
        Command::Inspect(a) => commands::inspect::execute(a),
        Command::Best(a) => commands::best::execute(a),
        Command::Diff(a) => commands::diff::execute(a),
        Command::Report(a) => commands::report::execute(a),
        Command::Predict(a) => commands::predict::execute(a),
        Command::Ls(a) => commands::ls::execute(a),
        Command::Status(a) => commands::status::execute(a),
        Command::Gc(a) => commands::gc::execute(a),
        Command::Worker(a) => commands::worker::execute(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}
