//! Experiment specs: typed sections (`types`), figment layering (`load`), the known key set
//! (`schema`) and value checks (`validate`, `slurm_checks` for `[launch.slurm]`).
//!
//! Three stages, as in ripgrep's flag handling: raw TOML layers -> one validated [`Spec`] ->
//! the grid expands it into runs. This is the lower layer: nothing here knows about runs, and
//! nothing touches Candle or the file system beyond reading the spec files.

pub mod error;
pub mod load;
pub mod schema;
pub mod slurm_checks;
pub mod types;
pub mod validate;

use std::path::PathBuf;

pub use error::{Problem, SpecError};
pub use load::{Resolved, load, resolve};
pub use types::*;

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
        load(&self.file, &self.sets)
    }
}

#[cfg(test)]
mod tests;
