//! Experiment specs: typed sections (`types`), figment layering and validation.

mod stand_in; // TEMP: replaced at merge
pub mod types;

pub use stand_in::{SpecArgs, SpecError, load, set_dotted}; // TEMP: replaced at merge
pub use types::*;
