//! Experiment specs: typed sections (`types`), figment layering and validation.

pub mod types;

pub use types::*;
