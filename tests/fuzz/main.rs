//! Fuzz targets for the parsers that read what a user (or a killed run) left on disk, run as
//! property tests on stable. Inputs that once broke a reader are kept as plain tests in
//! `regressions`.

mod regressions;
