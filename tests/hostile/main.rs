//! Hostile and careless input through the real binary: values that must not reach a shell or
//! another program's argument list, specs refused before a run directory exists, data files
//! that are valid but unusual or that promise more than they hold, mistakes `diff` and
//! `status` must not hide, non-finite metrics, and run directories left half-written by a
//! killed worker.

#[path = "../util/mod.rs"]
mod util;

mod attempts;
mod better;
mod checkpoints;
mod damaged;
mod data;
mod device;
mod diff;
mod lock;
mod s2s;
mod slurm;
mod spec;
mod stale;
mod validate;
