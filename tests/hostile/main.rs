//! Hostile and careless input through the real binary: values that must not reach a shell or
//! another program's argument list, specs refused before a run directory exists, data files
//! that are valid but unusual or that promise more than they hold, and mistakes `diff` and
//! `status` must not hide.

mod better;
mod checkpoints;
mod diff;
#[path = "../util/mod.rs"]
mod util;
