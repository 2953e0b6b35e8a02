//! One module per subcommand: its clap `Args` and its `execute`, returning the exit code.

pub mod best;
pub mod config;
pub mod diff;
pub mod gc;
pub mod inspect;
pub mod ls;
pub mod plan;
pub mod predict;
pub mod report;
pub mod run;
pub mod status;
pub mod worker;

use std::path::PathBuf;

use crate::grid::{LoadError, RunPlan};
use crate::spec::{Spec, SpecError};

/// The spec arguments shared by `run`, `plan`, `config` and `inspect`.
#[derive(Debug, Clone, clap::Args)]
pub struct SpecArgs {
    /// Experiment spec (TOML).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Override a key, e.g. `--set optimizer.lr=0.01`; the value is parsed as TOML, else taken
    /// as a string. Repeatable; later flags win.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

impl SpecArgs {
    /// Loads and validates the spec (environment overrides included).
    pub fn load(&self) -> Result<Spec, SpecError> {
        crate::spec::load(&self.file, &self.sets)
    }

    /// Loads the spec and expands its grid into runs without reading data (provisional ids:
    /// for commands that show no run ids).
    pub fn load_runs(&self) -> Result<(Spec, Vec<RunPlan>), LoadError> {
        crate::grid::load_runs(&self.file, &self.sets)
    }

    /// Loads the spec and expands its grid into runs whose ids include their data files'
    /// fingerprints, cached in `runs_dir` (the cache is saved when that directory exists).
    pub fn load_fingerprinted(
        &self,
        runs_dir: &std::path::Path,
    ) -> Result<(Spec, Vec<RunPlan>, crate::store::Fingerprints), LoadError> {
        let mut fp = crate::store::Fingerprints::open(runs_dir);
        let (spec, runs) =
            crate::grid::load_runs_with(&self.file, &self.sets, &mut |d| fp.data(d))?;
        Ok((spec, runs, fp))
    }
}
