//! The top-level error and the documented exit codes.
//!
//! Library modules have their own `thiserror` enums; this one wraps them and maps each to an
//! exit code, so `main` only prints one line and exits.

use std::path::PathBuf;

use crate::summary::SummaryError;

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
    /// `run` found finished runs whose records no longer match their final status
    /// (truncated, emptied, deleted or edited `metrics.jsonl`); no summary was rewritten.
    pub const DAMAGED: i32 = 6;
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
    /// A TensorBoard log could not be written (e.g. the experiment-level hparams record).
    #[error(transparent)]
    TensorBoard(#[from] crate::sinks::tensorboard::TbError),
    /// Reading run directories or summaries, writing summaries or figures.
    #[error(transparent)]
    Summary(#[from] SummaryError),
    /// The experiment spec is invalid (or the spec file cannot be read).
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    /// A grid that does not expand to valid runs.
    #[error(transparent)]
    Grid(#[from] crate::grid::GridError),
    /// A spec that cannot be loaded or whose grid does not expand, named by the layer at fault.
    #[error(transparent)]
    Load(#[from] crate::grid::LoadError),
    /// The model in the spec cannot be laid out on its input.
    #[error(transparent)]
    Inspect(#[from] crate::inspect::InspectError),
    /// The Slurm backend could not submit or follow the runs.
    #[error(transparent)]
    Slurm(#[from] crate::launch::slurm::SlurmError),
    /// A data file is missing or corrupt.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// Parallel text could not be read.
    #[error(transparent)]
    Pairs(#[from] crate::data::pairs::PairsError),
    /// Training could not run (data, model config, device, checkpoint, I/O).
    #[error(transparent)]
    Train(#[from] crate::train::TrainError),
    /// The user interrupted the command.
    #[error("interrupted; run the same command again to resume")]
    Interrupted,
    /// A run directory, the experiment lock or the runs directory.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The hidden worker mode could not start.
    #[error(transparent)]
    Worker(#[from] crate::worker::WorkerError),
    /// The local launcher.
    #[error(transparent)]
    Launch(#[from] crate::launch::LaunchError),
    /// `predict`: the run, its checkpoint, the input or the model.
    #[error(transparent)]
    Predict(#[from] crate::predict::PredictError),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::Io { .. } | Error::TensorBoard(_) => exit::RUNTIME,
            Error::Summary(e) => summary_exit_code(e),
            Error::Spec(e) if e.is_unreadable_input() => exit::USAGE,
            Error::Load(e) if e.is_unreadable_input() => exit::USAGE,
            Error::Spec(_) | Error::Load(_) | Error::Grid(_) | Error::Inspect(_) => exit::SPEC,
            Error::Data(_) => exit::DATA,
            Error::Train(e) => match e {
                crate::train::TrainError::Data(_) | crate::train::TrainError::Pairs(_) => {
                    exit::DATA
                }
                crate::train::TrainError::Config { .. } | crate::train::TrainError::Model(_) => {
                    exit::SPEC
                }
                _ => exit::RUNTIME,
            },
            Error::Interrupted => exit::INTERRUPTED,
            Error::Slurm(e) if e.is_usage() => exit::USAGE,
            // Missing tools, a refused job, an unknown partition: the runs could not start.
            Error::Slurm(_) => exit::RUNTIME,
            Error::Store(_) | Error::Worker(_) => exit::RUNTIME,
            Error::Launch(e) if e.is_usage() => exit::USAGE,
            Error::Launch(_) => exit::RUNTIME,
            Error::Pairs(_) => exit::DATA,
            Error::Predict(e) => predict_exit_code(e),
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

/// Input and usage errors exit with 2; failing to write or draw is a runtime error.
fn summary_exit_code(e: &SummaryError) -> i32 {
    match e {
        SummaryError::Read { .. }
        | SummaryError::Parse { .. }
        | SummaryError::NotFound(_)
        | SummaryError::Git(_)
        | SummaryError::Usage(_) => exit::USAGE,
        SummaryError::Write { .. } | SummaryError::Plot { .. } => exit::RUNTIME,
    }
}

/// `predict`: a bad target, checkpoint choice or kind of input is a usage error, a bad data
/// or input file a data error, anything else a runtime error.
fn predict_exit_code(e: &crate::predict::PredictError) -> i32 {
    use crate::predict::PredictError as P;
    match e {
        P::Unknown(_) | P::NoCheckpoint { .. } | P::NoBest { .. } | P::WrongInput { .. } => {
            exit::USAGE
        }
        P::Summary(e) => summary_exit_code(e),
        P::Data(_) | P::Pairs(_) | P::DataChanged { .. } => exit::DATA,
        P::Checkpoint(_) | P::Train(_) | P::Store(_) | P::Tensor(_) => exit::RUNTIME,
    }
}

impl From<crate::inspect::CheckError> for Error {
    fn from(e: crate::inspect::CheckError) -> Self {
        use crate::inspect::CheckError;
        match e {
            CheckError::Data(e) => Error::Data(e),
            CheckError::Pairs(e) => Error::Pairs(e),
            CheckError::Spec(e) => Error::Load(e),
        }
    }
}
