//! `orchestrate diff A B`: compare two summaries with tolerances; exit 1 on a regression.

use crate::error::{Error, exit};
use crate::summary::diff::{Tolerances, diff, load_input};
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
    /// HEAD~1:experiments/baselines/smoke.json).
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
    /// configuration's mean (Welch p < 0.05). Default: `significant` when every configuration
    /// on both sides has at least 3 replicates, else `any`.
    #[arg(long, value_enum)]
    pub fail_on: Option<FailOn>,
}

/// Runs the command; returns 0 within tolerance, 1 on a regression.
pub fn execute(args: &Args) -> Result<i32, Error> {
    let tol = Tolerances::parse(&args.tol)?;
    let a = load_input(&args.a)?;
    let b = load_input(&args.b)?;
    let report = diff(&args.a, &a, &args.b, &b, &tol, args.fail_on)?;
    let text = match args.format {
        Format::Table => report.to_table(),
        Format::Md => report.to_markdown(),
        Format::Json => report
            .to_json()
            .map_err(|e| Error::Usage(format!("cannot write the diff as JSON: {e}")))?,
    };
    print!("{text}");
    Ok(if report.regression {
        exit::FAILURE
    } else {
        exit::OK
    })
}
