//! `orchestrate diff A B`: compare two summaries with tolerances (or, with `--paired`, two
//! runs item by item); exit 1 on a regression.

use std::path::PathBuf;

use crate::error::{Error, exit};
use crate::summary::diff::{Tolerances, diff, load_input};
use crate::summary::paired::{paired_diff, resolve_run};
use crate::summary::significance::FailOn;

/// Output format of `diff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned tables for the terminal.
    Table,
    /// Markdown for a pull-request comment.
    Md,
    /// The full comparison as JSON.
    Json,
}

/// Arguments of `orchestrate diff`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Baseline: a summary.json, an experiment directory, or REV:PATH (e.g.
    /// HEAD~1:experiments/baselines/smoke.json); with --paired a run: EXPERIMENT/RUN, a run
    /// directory, or an experiment of one run.
    pub a: String,
    /// Candidate, in the same forms.
    pub b: String,
    /// Allowed worsening of a metric: TAG=VALUE (absolute) or TAG=PERCENT% (relative to A);
    /// `*=...` sets the default, which is 0. A TAG that neither A nor B has is an error.
    /// Repeatable.
    #[arg(long = "tol", value_name = "TAG=TOL")]
    pub tol: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// What fails the diff: `any` worsening beyond tolerance, or only a `significant` one of a
    /// configuration's mean (Welch p < 0.05) or, with --paired, of a test metric (paired
    /// bootstrap p < 0.05). Default: `significant` with --paired or when every configuration
    /// on both sides has at least 3 replicates, else `any`.
    #[arg(long, value_enum)]
    pub fail_on: Option<FailOn>,
    /// Compare two single runs on their shared test items: a paired bootstrap (1,000
    /// resamples, seed 12345) of their per-item test results.
    #[arg(long)]
    pub paired: bool,
    /// Where experiments live (for --paired's EXPERIMENT/RUN).
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
}

/// Runs the command; returns 0 within tolerance, 1 on a regression.
pub fn execute(args: &Args) -> Result<i32, Error> {
    let tol = Tolerances::parse(&args.tol)?;
    if args.paired {
        return execute_paired(args, &tol);
    }
    let a = load_input(&args.a)?;
    let b = load_input(&args.b)?;
    let report = diff(&args.a, &a, &args.b, &b, &tol, args.fail_on)?;
    show(
        args.format,
        report.regression,
        || report.to_table(),
        || report.to_markdown(),
        || report.to_json(),
    )
}

/// `diff --paired`: the two runs' test items resampled together.
fn execute_paired(args: &Args, tol: &Tolerances) -> Result<i32, Error> {
    let a = resolve_run(&args.a, &args.runs_dir)?;
    let b = resolve_run(&args.b, &args.runs_dir)?;
    let report = paired_diff(&args.a, &a, &args.b, &b, tol, args.fail_on)?;
    show(
        args.format,
        report.regression,
        || report.to_table(),
        || report.to_markdown(),
        || report.to_json(),
    )
}

/// Prints a report in `format`; returns the exit code of its verdict.
fn show(
    format: Format,
    regression: bool,
    table: impl FnOnce() -> String,
    md: impl FnOnce() -> String,
    json: impl FnOnce() -> Result<String, serde_json::Error>,
) -> Result<i32, Error> {
    let text = match format {
        Format::Table => table(),
        Format::Md => md(),
        Format::Json => {
            json().map_err(|e| Error::Usage(format!("cannot write the diff as JSON: {e}")))?
        }
    };
    print!("{text}");
    Ok(if regression { exit::FAILURE } else { exit::OK })
}
