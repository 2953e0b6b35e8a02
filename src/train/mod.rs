//! Training runs: the run context, outcomes and errors, dispatch by model kind.
// TEMP: replaced by the images branch at merge (only `pub mod metrics; pub mod seq2seq;`
// and the `Seq2seq` dispatch arm are this branch's).

pub mod checkpoint;
pub mod metrics;
pub mod optim;
pub mod seq2seq;
pub mod translation_artifacts;

use crate::data::pairs::PairsError;
use crate::events::{EventSink, SinkError};
use crate::models::seq2seq::Seq2SeqError;
use crate::spec::{ModelKind, Spec};
use crate::store::RunDir;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Everything a training run needs to know.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub run_dir: RunDir,
    pub config: Spec,
    pub run_id: String,
    pub training_id: String,
    pub threads: usize,
    pub cancel: Arc<AtomicBool>,
    /// A finished run with the same training identity whose model this run only evaluates.
    pub reuse_training_from: Option<RunDir>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done { epoch: usize },
    Diverged { epoch: usize, message: String },
    Cancelled { epoch: usize },
}

/// Why a run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Pairs(#[from] PairsError),
    #[error(transparent)]
    Seq2Seq(#[from] Seq2SeqError),
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("train.device = {0:?}: {1}")]
    Device(String, String),
    #[error("model.kind {0:?} is not built on this branch")]
    Unsupported(ModelKind),
}

impl TrainError {
    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Trains (or resumes, or only evaluates) the run described by `ctx`.
pub fn run(ctx: &RunContext, sink: &mut dyn EventSink) -> Result<Outcome, TrainError> {
    match ctx.config.model.kind {
        ModelKind::Seq2seq => seq2seq::run_seq2seq(ctx, sink),
        other => Err(TrainError::Unsupported(other)),
    }
}

/// The Candle device named by `train.device`.
pub fn device(name: &str) -> Result<candle_core::Device, TrainError> {
    let err = |e: candle_core::Error| TrainError::Device(name.to_string(), e.to_string());
    match name {
        "cpu" => Ok(candle_core::Device::Cpu),
        "auto" => candle_core::Device::cuda_if_available(0).map_err(err),
        "cuda" => candle_core::Device::new_cuda(0).map_err(err),
        _ => match name.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => candle_core::Device::new_cuda(n).map_err(err),
            None => Err(TrainError::Device(
                name.to_string(),
                "expected cpu, cuda, cuda:N or auto".into(),
            )),
        },
    }
}
