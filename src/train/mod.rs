//! Training: the loop, optimizers, early-stopping and checkpoint policies, seeding.
//!
//! [`run`] trains one run described by a [`RunContext`] and reports through an
//! [`EventSink`]; it resumes from the run's last checkpoint when there is one. It writes
//! checkpoints and artifacts into the run directory but never `status.json` or
//! `metrics.jsonl`: the worker and the sinks own those.

pub mod activations;
pub mod checkpoint;
pub mod classifier;
pub mod driver;
pub mod early_stopping;
pub mod epoch_end;
pub mod exact_f64;
pub mod metrics;
pub mod optim;
pub mod seeding;
pub mod seq2seq;
pub mod seq2seq_step;
pub mod translation_artifacts;

use crate::data::DataError;
use crate::device::Device as DeviceName;
use crate::events::{EventSink, SinkError};
use crate::models::ModelError;
pub use crate::models::cnn::GpuConv;
use crate::spec::{ModelKind, Spec};
use crate::store::RunDir;
use candle_core::Device;
pub use optim::GpuOptim;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Everything a training run needs; built by the worker from the run directory.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub run_dir: RunDir,
    /// The run's resolved config (grid emptied).
    pub config: Spec,
    pub run_id: String,
    /// Identity of the training part of the config (without `decode` and `select`).
    pub training_id: String,
    /// CPU threads this run may use (see [`configure_threads`]).
    pub threads: usize,
    /// Set to stop at the next step; the run returns [`Outcome::Cancelled`].
    pub cancel: Arc<AtomicBool>,
    /// A run with the same training id whose checkpoints this run may reuse (seq2seq decode
    /// variants); image runs train themselves and ignore it.
    pub reuse_training_from: Option<RunDir>,
    /// This attempt's number (1 for the first), as the worker recorded it in `status.json`.
    pub attempt: u32,
    /// Which GPU kernels the model and optimizer use.
    pub kernels: Kernels,
    /// Stop right after this epoch's checkpoint, before any test phase, and return
    /// [`Outcome::Paused`] (a schedule rung); `None` trains to the end.
    pub pause_after: Option<usize>,
}

/// The GPU kernel choices of a run, a benchmark switch for comparing implementations on a
/// card; the CPU always takes its fused kernels. The worker resolves it from its environment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kernels {
    /// How convolutions run off the CPU.
    pub conv: GpuConv,
    /// How optimizer steps run off the CPU.
    pub optim: GpuOptim,
}

/// How a run ended (errors aside).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// All epochs ran (or early stopping ended training after `epoch`).
    Done { epoch: usize },
    /// The training loss became NaN or infinite during `epoch`.
    Diverged { epoch: usize, message: String },
    /// Stopped by the cancel flag; `epoch` is the last completed (checkpointed) epoch.
    Cancelled { epoch: usize },
    /// Stopped after `epoch`'s checkpoint because [`RunContext::pause_after`] said so.
    Paused { epoch: usize },
}

/// Why a run could not train.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A key of the spec that training cannot honour.
    #[error("{key}: {message}")]
    Config { key: String, message: String },
    #[error("device {device:?}: {message}")]
    Device { device: String, message: String },
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// Parallel text (translation data) could not be read.
    #[error(transparent)]
    Pairs(#[from] crate::data::pairs::PairsError),
    /// The translation model could not be built from the spec.
    #[error(transparent)]
    Seq2Seq(#[from] crate::models::seq2seq::Seq2SeqError),
}

impl TrainError {
    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Emits a scalar at `(epoch, step)`.
fn scalar(
    sink: &mut dyn EventSink,
    epoch: usize,
    step: u64,
    tag: &str,
    value: f64,
) -> Result<(), TrainError> {
    sink.emit(&crate::events::RunEvent::Scalar {
        epoch,
        step,
        tag: tag.to_string(),
        value,
    })?;
    Ok(())
}

/// Emits the end of an attempt in `state` after `epoch`.
fn finish(
    sink: &mut dyn EventSink,
    state: crate::store::RunState,
    epoch: usize,
    message: Option<String>,
) -> Result<(), TrainError> {
    sink.emit(&crate::events::RunEvent::Finished {
        state,
        epoch,
        message,
    })?;
    Ok(())
}

/// Trains the run `ctx` describes, emitting events to `sink`.
pub fn run(ctx: &RunContext, sink: &mut dyn EventSink) -> Result<Outcome, TrainError> {
    match ctx.config.model.kind {
        ModelKind::Cnn | ModelKind::Mlp => classifier::run(ctx, sink),
        ModelKind::Seq2seq => seq2seq::run_seq2seq(ctx, sink),
    }
}

/// Sets the number of CPU threads Candle uses; returns the number set.
///
/// Candle reads `RAYON_NUM_THREADS` on every matrix product (gemm's parallelism) and builds
/// its rayon and barrier pools from it (and `CANDLE_NUM_THREADS`) on first use, so this must
/// run before any tensor work; it also builds rayon's global pool with `n` threads. `n = 0`
/// leaves Candle's default (the physical cores). Results are bit-identical only for the same
/// thread count, because matrix products split their work by it.
///
/// # Safety
/// Changes environment variables: call it at process start, before any other thread exists
/// (the worker does, first thing).
pub unsafe fn configure_threads(n: usize) -> usize {
    if n == 0 {
        return candle_core::utils::get_num_threads();
    }
    // SAFETY: the caller guarantees no other thread reads or writes the environment.
    unsafe {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
    }
    // Fails only when the global pool already exists; Candle's own pools still follow the
    // variables above.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
    n
}

/// [`configure_threads`] for a run of `kind` (when known).
///
/// A seq2seq run with several threads runs each step's batch shards at the same time
/// ([`seq2seq_step`]), one per thread, so it gives Candle's element-wise pool no workers
/// (`CANDLE_NUM_THREADS=1`; matrix products still follow `RAYON_NUM_THREADS`). With a
/// worker, that pool's ops of 64 K elements or more serialise the shards on its lock and its
/// worker, spinning after each op (25,000 rounds by default) or woken for each, competes with
/// them for the cores: batch 64 on 2 threads ran at 1000 sentences/s with the spinning
/// worker, about 1800 with it sleeping at once and about 2100 without it
/// (`bench/notes/seq2seq.md`). Element-wise results do not depend on how the pool splits
/// them, so this changes timing only. Other models keep the pool.
///
/// # Safety
/// As [`configure_threads`]: at process start, before any other thread exists.
pub unsafe fn configure_threads_for(n: usize, kind: Option<ModelKind>) -> usize {
    // SAFETY: forwarded from the caller.
    let threads = unsafe { configure_threads(n) };
    if threads > 1 && matches!(kind, Some(ModelKind::Seq2seq)) {
        // SAFETY: forwarded from the caller.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    threads
}

/// Refuses, before any run starts, a CUDA device in a build without the `cuda` feature, or
/// (with it) a CUDA device that cannot be opened; `auto` and `cpu` always pass.
pub fn check_device_support(device: DeviceName) -> Result<(), DeviceSupportError> {
    if !device.is_card() {
        return Ok(());
    }
    let refuse = |message: String| DeviceSupportError {
        device: device.to_string(),
        message,
    };
    if !cfg!(feature = "cuda") {
        return Err(refuse(
            "this orchestrate was built without CUDA support; build it with \
             `cargo build --release --features cuda` on a machine with the CUDA \
             toolkit, or use device \"cpu\" or \"auto\""
                .into(),
        ));
    }
    open_device(device).map(|_| ()).map_err(|e| {
        refuse(match e {
            TrainError::Device { message, .. } => message,
            other => other.to_string(),
        })
    })
}

/// A device the build or the machine cannot provide.
#[derive(Debug, thiserror::Error)]
#[error("device {device:?}: {message}")]
pub struct DeviceSupportError {
    pub device: String,
    pub message: String,
}

impl From<DeviceSupportError> for TrainError {
    fn from(e: DeviceSupportError) -> Self {
        TrainError::Device {
            device: e.device,
            message: e.message,
        }
    }
}

/// The Candle device `train.device` names (text as the config holds it, parsed by
/// [`DeviceName`]'s one parser).
pub fn select_device(name: &str) -> Result<Device, TrainError> {
    let device: DeviceName =
        name.parse()
            .map_err(|e: crate::device::ParseDeviceError| TrainError::Device {
                device: name.to_string(),
                message: e.to_string(),
            })?;
    open_device(device)
}

/// Opens `device` on Candle: `auto` is CUDA when built with it and present, else the CPU.
pub fn open_device(device: DeviceName) -> Result<Device, TrainError> {
    match device {
        DeviceName::Cpu => Ok(Device::Cpu),
        DeviceName::Auto => Ok(auto_device()),
        DeviceName::Cuda(ordinal) => {
            // Candle appends a backtrace when RUST_BACKTRACE is set; the first line is the news.
            Device::new_cuda(ordinal.unwrap_or(0)).map_err(|e| TrainError::Device {
                device: device.to_string(),
                message: e
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            })
        }
    }
}

/// The card or CPU `device` trains on: `auto` resolved, `cuda` made `cuda:0`. Opens nothing
/// but what `auto` probes.
pub fn resolve_device(device: DeviceName) -> DeviceName {
    match device {
        DeviceName::Auto => match auto_device().location() {
            candle_core::DeviceLocation::Cuda { gpu_id } => DeviceName::Cuda(Some(gpu_id)),
            _ => DeviceName::Cpu,
        },
        DeviceName::Cuda(None) => DeviceName::Cuda(Some(0)),
        other => other,
    }
}

/// How a device is named in logs: `auto` with what it resolved to (`auto -> cuda:0`).
pub fn device_label(device: DeviceName) -> String {
    match device {
        DeviceName::Auto => format!("auto -> {}", resolve_device(device)),
        other => other.to_string(),
    }
}

/// `auto`: the first GPU when this build has CUDA and one opens, else the CPU.
///
/// Candle's `Device::cuda_if_available` only asks whether the build has CUDA, so on a CUDA build
/// without a usable GPU (none present, `CUDA_VISIBLE_DEVICES=""`) it fails instead of falling back.
fn auto_device() -> Device {
    if cfg!(feature = "cuda")
        && let Ok(device) = Device::new_cuda(0)
    {
        return device;
    }
    Device::Cpu
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without the `cuda` feature `auto` is the CPU and never an error.
    #[cfg(not(feature = "cuda"))]
    #[test]
    fn auto_is_cpu_in_a_cpu_only_build() {
        assert!(matches!(select_device("auto"), Ok(Device::Cpu)));
        assert_eq!(device_label(DeviceName::Auto), "auto -> cpu");
        assert_eq!(resolve_device(DeviceName::Auto), DeviceName::Cpu);
        assert!(check_device_support(DeviceName::Auto).is_ok());
        let e = check_device_support(DeviceName::Cuda(Some(0))).unwrap_err();
        assert!(e.to_string().contains("--features cuda"), "{e}");
        assert!(select_device("cuda:0").is_err());
    }

    #[test]
    fn device_names() {
        assert!(matches!(select_device("cpu"), Ok(Device::Cpu)));
        assert!(select_device("auto").is_ok());
        let e = select_device("gpu").unwrap_err();
        assert!(e.to_string().contains("cuda:N"), "{e}");
        assert!(select_device("cuda:x").is_err());
    }
}
