//! Fuzz targets for the parsers that read what a user (or a killed run) left on disk, run as
//! property tests on stable so that every `cargo test` runs them for a short, fixed budget:
//! the spec loader (TOML, `--set`, environment), the IDX, NPZ and TSV readers, and the
//! TensorBoard event files a resumed run reads back. `FUZZ_CASES=N` runs each target for N
//! inputs and `FUZZ_SEED=N` picks other inputs (README, "Fuzzing"); each target prints how
//! many inputs it tried. Inputs that once broke a reader are kept as plain tests in
//! `regressions`.

#[path = "../util/datafiles.rs"]
mod datafiles;
mod events;
mod harness;
mod idx;
mod images;
mod mutate;
mod npz;
mod pairs;
mod regressions;
mod spec;

/// Every allocation of this test binary is counted per thread, so a target can check that
/// a reader's memory stays bounded by its input whatever a header claims.
#[global_allocator]
static ALLOC: harness::Metered = harness::Metered;
