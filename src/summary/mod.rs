//! Run and experiment summaries, selection of the winner, `diff` and `report` figures.
//!
//! This module only reads run directories (`config.toml`, `plan.json`, `status.json`,
//! `runtime.json`, `metrics.jsonl`, and for `diff --paired` `test_items.json`), through the
//! store's readers, and never trains. [`summarize_experiment`] writes each run's `summary.json`
//! and the experiment's `summary.json` and `summary.md`; [`collect_experiment`] computes the
//! same without writing, for the read-only commands (`best`, `diff`, `report`, `ls`).

pub mod best;
pub mod configurations;
pub mod diff;
pub mod experiment;
pub mod git;
pub mod num;
pub mod paired;
pub mod report;
pub mod run;
pub mod select;
pub mod significance;

pub use experiment::{ExperimentSummary, RunEntry};
pub use num::Num;
pub use run::{LoadedRun, RunSummary};

use std::path::{Path, PathBuf};

use crate::spec::SelectSpec;

/// Errors of the summary module; each names the file or input it concerns.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file is corrupt, truncated or not what was expected.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A summary or figure could not be written.
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The named experiment, directory or file does not exist.
    #[error("{0}")]
    NotFound(String),
    /// `git` could not produce a file for `REV:PATH`.
    #[error("{0}")]
    Git(String),
    /// A bad argument (`--tol`), or an experiment with nothing to work on.
    #[error("{0}")]
    Usage(String),
    /// A figure could not be drawn.
    #[error("{path}: cannot draw figure: {message}")]
    Plot { path: PathBuf, message: String },
}

impl From<crate::store::StoreError> for SummaryError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::Io { path, source } | StoreError::RunsDir { path, source } => {
                SummaryError::Read { path, source }
            }
            StoreError::Corrupt { path, message } => SummaryError::Parse { path, message },
            e @ StoreError::Locked { .. } => SummaryError::Usage(e.to_string()),
        }
    }
}

/// Extra facts a summary records that the run directory does not hold.
#[derive(Debug, Clone, Default)]
pub struct SummaryOptions {
    /// The spec file the experiment ran from; its repository's commit goes into summaries.
    pub spec_path: Option<PathBuf>,
}

/// Summarises every run under `exp_dir`, writes the run and experiment summaries, returns the
/// ranking (`orchestrate run` prints its [`ExperimentSummary::winner_line`]).
pub fn summarize_experiment(
    exp_dir: &Path,
    select: &SelectSpec,
) -> Result<ExperimentSummary, SummaryError> {
    summarize_experiment_with(exp_dir, select, &SummaryOptions::default())
}

/// [`summarize_experiment`] with the spec path, so summaries record its git commit.
pub fn summarize_experiment_with(
    exp_dir: &Path,
    select: &SelectSpec,
    options: &SummaryOptions,
) -> Result<ExperimentSummary, SummaryError> {
    let (summary, runs) = collect_experiment(exp_dir, select, options)?;
    // A damaged run keeps the summary it had while its records were whole; a stale run's
    // directory is left as it is.
    for r in runs
        .iter()
        .filter(|r| r.summary.run.damaged.is_none() && r.summary.run.stale.is_none())
    {
        let path = crate::store::RunDir::at(&r.dir).summary();
        write_json(&path, &r.summary)?;
    }
    write_json(&exp_dir.join("summary.json"), &summary)?;
    atomic_write(
        &exp_dir.join("summary.md"),
        summary.to_markdown().as_bytes(),
    )?;
    Ok(summary)
}

/// Reads every run directory under `exp_dir` and ranks them, writing nothing.
pub fn collect_experiment(
    exp_dir: &Path,
    select: &SelectSpec,
    options: &SummaryOptions,
) -> Result<(ExperimentSummary, Vec<LoadedRun>), SummaryError> {
    let mut fingerprints =
        crate::store::Fingerprints::open(exp_dir.parent().unwrap_or(Path::new(".")));
    let runs = run_dirs(exp_dir)?
        .iter()
        .map(|d| run::load_run(d, select, options.spec_path.as_deref(), &mut fingerprints))
        .collect::<Result<Vec<_>, _>>()?;
    // Only a cache: a summary that cannot write it is still the summary.
    let _ = fingerprints.save();
    let summaries: Vec<RunSummary> = runs.iter().map(|r| r.summary.clone()).collect();
    let name = experiment_name(exp_dir);
    Ok((
        ExperimentSummary::from_runs(&name, select, &summaries),
        runs,
    ))
}

/// The run directories directly under `exp_dir`, sorted by path.
pub fn run_dirs(exp_dir: &Path) -> Result<Vec<PathBuf>, SummaryError> {
    let read = |source| SummaryError::Read {
        path: exp_dir.to_path_buf(),
        source,
    };
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(exp_dir).map_err(read)? {
        let path = entry.map_err(read)?.path();
        if path.is_dir() && run::is_run_dir(&path) {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// The experiment's name: its directory's name.
pub fn experiment_name(exp_dir: &Path) -> String {
    exp_dir
        .canonicalize()
        .unwrap_or_else(|_| exp_dir.to_path_buf())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The `select` section the experiment ran with: that of its first run (lowest grid index).
pub fn experiment_select(exp_dir: &Path) -> Result<SelectSpec, SummaryError> {
    let mut first: Option<(usize, SelectSpec)> = None;
    for dir in run_dirs(exp_dir)? {
        let rd = crate::store::RunDir::at(&dir);
        let plan = run::read_plan(&rd)?;
        if first.as_ref().is_none_or(|(i, _)| plan.index < *i) {
            let spec = run::read_config(&rd)?;
            first = Some((plan.index, spec.select));
        }
    }
    first.map(|(_, s)| s).ok_or_else(|| {
        SummaryError::Usage(format!(
            "{}: no run directories (with plan.json and config.toml) in this experiment",
            exp_dir.display()
        ))
    })
}

/// An experiment given as a directory, or as a name under `runs_dir`.
pub fn resolve_experiment(arg: &str, runs_dir: &Path) -> Result<PathBuf, SummaryError> {
    let direct = Path::new(arg);
    if direct.is_dir() {
        return Ok(direct.to_path_buf());
    }
    let named = runs_dir.join(arg);
    if named.is_dir() {
        return Ok(named);
    }
    Err(SummaryError::NotFound(format!(
        "no experiment `{arg}`: neither {} nor {} is a directory",
        direct.display(),
        named.display()
    )))
}

/// The run `key` names in `experiment` (a directory or a name under `runs_dir`): by id, id
/// prefix or name ([`crate::store::run_key_matches`]), the rule `--rerun` uses.
pub fn find_run(experiment: &str, key: &str, runs_dir: &Path) -> Result<LoadedRun, SummaryError> {
    let dir = resolve_experiment(experiment, runs_dir)?;
    let (_, runs) = load_experiment(&dir)?;
    let known: Vec<String> = runs
        .iter()
        .map(|r| format!("{} ({})", r.summary.run.id, r.summary.run.name))
        .collect();
    runs.into_iter()
        .find(|r| crate::store::run_key_matches(&r.summary.run.id, &r.summary.run.name, key))
        .ok_or_else(|| {
            SummaryError::NotFound(format!(
                "no run `{key}` in experiment {}; its runs: {}",
                dir.display(),
                known.join(", ")
            ))
        })
}

/// Loads an experiment for the read-only commands, with the select section it ran with.
pub fn load_experiment(
    exp_dir: &Path,
) -> Result<(ExperimentSummary, Vec<LoadedRun>), SummaryError> {
    let select = experiment_select(exp_dir)?;
    collect_experiment(exp_dir, &select, &SummaryOptions::default())
}

/// Writes canonical pretty JSON (with a trailing newline) atomically.
fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), SummaryError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| SummaryError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    text.push('\n');
    atomic_write(path, text.as_bytes())
}

/// Writes `bytes` atomically and durably (see [`crate::store::write_atomic`]).
pub(crate) fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), SummaryError> {
    crate::store::write_atomic(path, bytes).map_err(|source| SummaryError::Write {
        path: path.to_path_buf(),
        source,
    })
}
