//! orchestrate: declarative TOML experiment specs turned into trained Candle models.
//!
//! Data flow: spec file -> [`spec`] (layered, validated) -> [`grid`] (runs with stable ids)
//! -> [`launch`] (worker processes) -> [`train`] (seeded loop) -> [`events`] -> sinks
//! (metrics stream, TensorBoard, progress) -> [`summary`] (selection, diff, report).
//! The run directory ([`store`]) is the only interface between orchestrator and worker.

pub mod cli;
pub mod commands;
pub mod data;
pub mod device;
pub mod error;
pub mod events;
pub mod grid;
pub mod inspect;
pub mod launch;
pub mod models;
pub mod predict;
pub mod regular_file;
pub mod sinks;
pub mod spec;
pub mod stats;
pub mod store;
pub mod summary;
pub mod train;
pub mod worker;

pub use error::Error;

#[cfg(test)]
mod layering;
