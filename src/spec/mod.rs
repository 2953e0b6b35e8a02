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

pub use error::{Problem, SpecError};
pub use load::{Resolved, load, resolve};
pub use types::*;

#[cfg(test)]
mod tests;
