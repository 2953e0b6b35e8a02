//! The top-level error and the documented exit codes.
//!
//! Library modules have their own `thiserror` enums; this one wraps them and maps each to an
//! exit code, so `main` only prints one line and exits.

use std::path::PathBuf;

/// Exit codes, documented in the README.
pub mod exit {
    /// Everything asked for succeeded.
    pub const OK: i32 = 0;
    /// The command ran but its verdict is negative: some runs failed or diverged (`run`),
    /// a metric regressed beyond tolerance (`diff`).
    pub const FAILURE: i32 = 1;
    /// Bad command line or unreadable input file for a command (`diff` on a missing file).
    pub const USAGE: i32 = 2;
    /// The experiment spec is invalid; nothing was written under `runs/`.
    pub const SPEC: i32 = 3;
    /// A data file is missing or corrupt.
    pub const DATA: i32 = 4;
    /// Runtime trouble: I/O, a lock held by another orchestrator, a worker that cannot start.
    pub const RUNTIME: i32 = 5;
    /// Interrupted by Ctrl-C (SIGINT) or SIGTERM; state on disk is resumable.
    pub const INTERRUPTED: i32 = 130;
}

/// Any error that reaches the command line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A usage error that clap could not catch.
    #[error("{0}")]
    Usage(String),
    /// An I/O error on a named path.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Parallel text could not be read.
    #[error(transparent)]
    Pairs(#[from] crate::data::pairs::PairsError),
    /// A training run failed.
    #[error(transparent)]
    Train(#[from] crate::train::TrainError),
    /// The user interrupted the command.
    #[error("interrupted; run the same command again to resume")]
    Interrupted,
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::Io { .. } => exit::RUNTIME,
            Error::Interrupted => exit::INTERRUPTED,
            Error::Pairs(_) => exit::DATA,
            Error::Train(crate::train::TrainError::Pairs(_)) => exit::DATA,
            Error::Train(_) => exit::RUNTIME,
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
