//! The hidden `orchestrate worker` mode: trains one run directory and writes back.
//!
//! A launcher (local pool or Slurm) starts this process with the run's identity in
//! environment variables ([`vars`]). The worker reads `config.toml` and `plan.json`, sets its
//! thread budget, marks the run `running`, trains with the metrics (and TensorBoard) sinks,
//! turns SIGTERM/SIGINT into the training's cancel flag (training checkpoints and returns),
//! and writes the final status. Its exit code tells the launcher the outcome ([`code`]),
//! but `status.json` is the record: a worker killed before writing it leaves `running`,
//! which the launcher turns into `failed`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::device::Device;
use crate::events::{EventSink, RunEvent, SinkError};
use crate::sinks::metrics::MetricsFile;
use crate::sinks::tensorboard::{HParamValue, TensorBoardSink, run_hparams};
use crate::store::{self, RunDir, RunState, RunStatus, RuntimeRecord, StoreError};
use crate::train::{self, GpuConv, GpuOptim, Kernels, Outcome, RunContext};

/// Environment variables carrying a run's identity to its worker.
pub mod vars {
    /// The run directory (absolute).
    pub const RUN_DIR: &str = "ORCHESTRATE_RUN_DIR";
    /// The run id (checked against `plan.json`).
    pub const RUN_ID: &str = "ORCHESTRATE_RUN_ID";
    /// CPU threads for this run's kernels.
    pub const THREADS: &str = "ORCHESTRATE_THREADS";
    /// Device override: `cpu`, `cuda:N`.
    pub const DEVICE: &str = "ORCHESTRATE_DEVICE";
    /// Attempt number, counted by the launcher (absent: previous attempts + 1).
    pub const ATTEMPT: &str = "ORCHESTRATE_ATTEMPT";
    /// Pid of the local orchestrator: the worker stops when it dies.
    pub const PARENT_PID: &str = "ORCHESTRATE_PARENT_PID";
    /// `im2col`: convolutions off the CPU use the tensor-op im2col instead of Candle's
    /// `conv2d` (a benchmark switch, [`crate::train::GpuConv`]); inherited, not set by launchers.
    pub const GPU_CONV: &str = "ORCHESTRATE_GPU_CONV";
    /// `tensor`: optimizer steps off the CPU use tensor ops instead of the fused CUDA step (a
    /// benchmark switch, [`crate::train::GpuOptim`]); inherited, not set by launchers.
    pub const GPU_OPTIM: &str = "ORCHESTRATE_GPU_OPTIM";
}

/// The kernel choices [`vars::GPU_CONV`] and [`vars::GPU_OPTIM`] ask for through `get`; other
/// values and unset variables leave the defaults.
pub fn kernels(get: impl Fn(&str) -> Option<String>) -> Kernels {
    Kernels {
        conv: match get(vars::GPU_CONV).as_deref() {
            Some("im2col") => GpuConv::Im2col,
            _ => GpuConv::Candle,
        },
        optim: match get(vars::GPU_OPTIM).as_deref() {
            Some("tensor") => GpuOptim::TensorOps,
            _ => GpuOptim::Fused,
        },
    }
}

/// Worker exit codes; the launcher reads `status.json` first and these second. A worker
/// that cannot read its run directory or environment exits as any command does on a runtime
/// error (5, `crate::error::exit::RUNTIME`).
pub mod code {
    /// Training finished.
    pub const DONE: i32 = 0;
    /// Training failed (error or panic); see `status.json` and `worker.log`.
    pub const FAILED: i32 = 1;
    /// The loss became NaN or infinite.
    pub const DIVERGED: i32 = 10;
    /// Stopped by SIGTERM/SIGINT after checkpointing; resumable.
    pub const CANCELLED: i32 = 11;
    /// Stopped at a schedule rung after its checkpoint (`pause.json`); resumable.
    pub const PAUSED: i32 = 12;
}

/// Why the worker could not start training.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A required environment variable is missing or malformed.
    #[error("worker: environment variable {name}: {message}")]
    Env { name: &'static str, message: String },
    /// The run directory lacks a record the worker needs.
    #[error("worker: {path}: missing; the launcher writes it before starting a worker")]
    Missing { path: PathBuf },
    /// The run directory's plan is for another run.
    #[error("worker: {path} is run {found}, not {expected}")]
    WrongRun {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Signal handlers could not be installed.
    #[error("worker: installing signal handlers: {0}")]
    Signals(std::io::Error),
}

/// A worker's identity and budget, as read from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerEnv {
    pub run_dir: PathBuf,
    pub run_id: Option<String>,
    /// 0 = leave the kernels' default.
    pub threads: usize,
    pub device: Option<Device>,
    pub attempt: Option<u32>,
    pub parent_pid: Option<u32>,
}

/// Allocator settings a worker starts with unless the user's environment sets them.
/// mimalloc reads them when the process starts, so only the parent can set them. A purge
/// delay of -1 keeps freed pages mapped: Candle frees and allocates step-sized buffers all
/// the time, and with the default delay the kernel zeroed 2 MB pages for them again and
/// again (18% of a seq2seq step; `bench/notes/seq2seq.md`, change 10). A worker's memory
/// then stays at its peak, which it reaches every step anyway.
pub const ALLOCATOR_VARS: [(&str, &str); 1] = [("MIMALLOC_PURGE_DELAY", "-1")];

impl WorkerEnv {
    /// Reads [`vars`] from the process environment.
    pub fn from_env() -> Result<Self, WorkerError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads [`vars`] through `get` (testable without touching the environment).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, WorkerError> {
        let run_dir = get(vars::RUN_DIR).ok_or(WorkerError::Env {
            name: vars::RUN_DIR,
            message: "not set; `orchestrate worker` is started by `orchestrate run`".into(),
        })?;
        Ok(WorkerEnv {
            run_dir: PathBuf::from(run_dir),
            run_id: get(vars::RUN_ID).filter(|s| !s.is_empty()),
            threads: parse_opt(&get, vars::THREADS)?.unwrap_or(0),
            device: get(vars::DEVICE)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse()
                        .map_err(|e: crate::device::ParseDeviceError| WorkerError::Env {
                            name: vars::DEVICE,
                            message: e.to_string(),
                        })
                })
                .transpose()?,
            attempt: parse_opt(&get, vars::ATTEMPT)?,
            parent_pid: parse_opt(&get, vars::PARENT_PID)?,
        })
    }

    /// The environment a launcher sets for this worker, including the thread budget that
    /// Candle's CPU kernels and rayon read at start-up (`RAYON_NUM_THREADS`,
    /// `CANDLE_NUM_THREADS`).
    pub fn to_vars(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![(vars::RUN_DIR, self.run_dir.display().to_string())];
        if let Some(id) = &self.run_id {
            v.push((vars::RUN_ID, id.clone()));
        }
        if self.threads > 0 {
            v.push((vars::THREADS, self.threads.to_string()));
            v.push(("RAYON_NUM_THREADS", self.threads.to_string()));
            v.push(("CANDLE_NUM_THREADS", self.threads.to_string()));
        }
        if let Some(d) = self.device {
            v.push((vars::DEVICE, d.to_string()));
        }
        if let Some(a) = self.attempt {
            v.push((vars::ATTEMPT, a.to_string()));
        }
        if let Some(p) = self.parent_pid {
            v.push((vars::PARENT_PID, p.to_string()));
        }
        for (k, value) in ALLOCATOR_VARS {
            if std::env::var_os(k).is_none() {
                v.push((k, value.to_string()));
            }
        }
        v
    }
}

#[cfg(test)]
mod kernel_vars {
    use super::*;

    #[test]
    fn only_the_documented_values_switch_kernels() {
        let with = |conv: &str, optim: &str| {
            kernels(|k| match k {
                vars::GPU_CONV => Some(conv.to_string()),
                vars::GPU_OPTIM => Some(optim.to_string()),
                _ => None,
            })
        };
        assert_eq!(kernels(|_| None), Kernels::default());
        assert_eq!(with("", "fused"), Kernels::default());
        assert_eq!(
            with("im2col", "tensor"),
            Kernels {
                conv: GpuConv::Im2col,
                optim: GpuOptim::TensorOps,
            }
        );
    }
}

fn parse_opt<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<Option<T>, WorkerError> {
    match get(name).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| WorkerError::Env {
            name,
            message: format!("{s:?} is not a non-negative integer"),
        }),
    }
}

/// Trains the run named by `env`; returns the worker's exit code.
pub fn run(env: &WorkerEnv) -> Result<i32, WorkerError> {
    // Only the model kind, to choose the thread settings; a config that cannot be read is
    // reported below, where it is read for the run.
    let kind = store::read_config(&RunDir::at(&env.run_dir))
        .ok()
        .flatten()
        .map(|c| c.model.kind);
    // SAFETY: first thing in the worker process, before any thread of ours exists.
    let threads = unsafe { train::configure_threads_for(env.threads, kind) };
    let cancel = Arc::new(AtomicBool::new(false));
    for sig in [libc::SIGTERM, libc::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&cancel)).map_err(WorkerError::Signals)?;
    }
    if let Some(parent) = env.parent_pid {
        stop_with_parent(parent, &cancel);
    }

    let run_dir = RunDir::at(&env.run_dir);
    let mut config = store::read_config(&run_dir)?.ok_or_else(|| WorkerError::Missing {
        path: run_dir.config(),
    })?;
    let plan = store::read_plan(&run_dir)?.ok_or_else(|| WorkerError::Missing {
        path: run_dir.plan(),
    })?;
    if let Some(id) = &env.run_id
        && *id != plan.id
    {
        return Err(WorkerError::WrongRun {
            path: run_dir.plan(),
            found: plan.id,
            expected: id.clone(),
        });
    }
    let tb_dir = run_dir.tensorboard(&plan)?;
    if let Some(d) = env.device {
        config.train.device = d.to_string();
    }
    if env.threads > 0 {
        config.train.threads = env.threads;
    }
    let previous = store::read_status(&run_dir)?;
    let attempt = env
        .attempt
        .unwrap_or_else(|| RunStatus::next_attempt(previous.as_ref()));
    let last_epoch = previous.as_ref().map_or(0, |s| s.epoch);
    let pid = std::process::id();
    store::write_status(
        &run_dir,
        &RunStatus {
            state: RunState::Running,
            attempts: attempt,
            epoch: last_epoch,
            message: None,
            pid: Some(pid),
            pruned: None,
        },
    )?;
    // A device config.toml cannot name is left to training, which fails the run naming it.
    let requested = env.device.or_else(|| config.train.device.parse().ok());
    if let Some(requested) = requested {
        store::write_runtime(
            &run_dir,
            &RuntimeRecord {
                requested_device: requested,
                device: train::resolve_device(requested),
                threads,
                attempt,
                orchestrate_version: env!("CARGO_PKG_VERSION").into(),
            },
        )?;
    }
    let reuse = find_reusable_training(&run_dir, &plan.training_id, &plan.id);
    println!(
        "orchestrate worker: run {} ({}) attempt {attempt}, pid {pid}, device {}, threads {}{}",
        plan.id,
        plan.name,
        requested.map_or_else(|| config.train.device.clone(), train::device_label),
        env.threads,
        reuse
            .as_ref()
            .map(|r| format!(", reusing the training of {}", r.root().display()))
            .unwrap_or_default()
    );
    let ctx = RunContext {
        run_dir: run_dir.clone(),
        config,
        run_id: plan.id.clone(),
        training_id: plan.training_id.clone(),
        threads: env.threads,
        cancel: Arc::clone(&cancel),
        reuse_training_from: reuse,
        attempt,
        kernels: kernels(|k| std::env::var(k).ok()),
        pause_after: store::read_pause(&run_dir)?.map(|p| p.after_epoch),
    };
    let hparams = run_hparams(&ctx.config, &plan.varied);
    let mut sink = WorkerSink::new(&run_dir, tb_dir, attempt, hparams);
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| train::run(&ctx, &mut sink)));
    let epoch = sink.durable_epoch.max(last_epoch);
    let (state, message, exit) = match result {
        Ok(Ok(Outcome::Done { .. })) => (RunState::Done, None, code::DONE),
        Ok(Ok(Outcome::Diverged { message, .. })) => {
            (RunState::Diverged, Some(message), code::DIVERGED)
        }
        Ok(Ok(Outcome::Paused { epoch })) => (
            RunState::Paused,
            Some(format!(
                "paused after epoch {epoch}: waiting at a schedule rung"
            )),
            code::PAUSED,
        ),
        Ok(Ok(Outcome::Cancelled { .. })) => (
            RunState::Cancelled,
            Some("stopped by a signal after checkpointing".into()),
            code::CANCELLED,
        ),
        Ok(Err(e)) => (RunState::Failed, Some(e.to_string()), code::FAILED),
        Err(panic) => (
            RunState::Failed,
            Some(format!("panicked: {}", panic_message(&*panic))),
            code::FAILED,
        ),
    };
    println!(
        "orchestrate worker: run {} {} at epoch {epoch}{}",
        plan.id,
        state.word(),
        message
            .as_ref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default()
    );
    let _ = std::io::stdout().flush();
    // The final status of a finished run carries the integrity of its metrics.
    store::write_final_status(
        &run_dir,
        &RunStatus {
            state,
            attempts: attempt,
            epoch,
            message,
            pid: None,
            pruned: None,
        },
    )?;
    Ok(exit)
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

/// Linux: ask for SIGTERM when the orchestrator dies, so an orphaned worker checkpoints and
/// stops instead of racing the next orchestrator on the same run directory.
fn stop_with_parent(parent: u32, cancel: &AtomicBool) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and has no pointers.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
        // The parent may have died before the prctl: then we are already orphaned.
        // SAFETY: getppid has no preconditions.
        let ppid = unsafe { libc::getppid() };
        if u32::try_from(ppid).ok() != Some(parent) {
            cancel.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (parent, cancel);
}

/// Another run of the same experiment with the same training id whose training is done:
/// its checkpoints can be decoded again instead of training anew (seq2seq decode variants).
pub fn find_reusable_training(run: &RunDir, training_id: &str, own_id: &str) -> Option<RunDir> {
    let exp = run.experiment_dir()?;
    let mut found: Vec<(usize, RunDir)> = std::fs::read_dir(exp)
        .ok()?
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            let other = RunDir::at(e.path());
            let plan = store::read_plan(&other).ok()??;
            let status = store::read_status(&other).ok()??;
            (plan.training_id == training_id && plan.id != own_id && status.state == RunState::Done)
                .then_some((plan.index, other))
        })
        .collect();
    found.sort_by_key(|(i, _)| *i);
    found.into_iter().next().map(|(_, r)| r)
}

/// The worker's sinks, in the order durability needs: metrics (fsynced at epoch end), then
/// other files, then the status epoch, then a line in the log.
struct WorkerSink {
    metrics: MetricsFile,
    extra: Vec<Box<dyn EventSink>>,
    run_dir: RunDir,
    attempt: u32,
    /// Last epoch whose records and checkpoint are on disk.
    durable_epoch: usize,
}

impl WorkerSink {
    /// Sinks for `run_dir`, its TensorBoard log in `tb_dir` (from its plan).
    fn new(
        run_dir: &RunDir,
        tb_dir: PathBuf,
        attempt: u32,
        hparams: BTreeMap<String, HParamValue>,
    ) -> Self {
        WorkerSink {
            metrics: MetricsFile::new(run_dir.metrics()),
            extra: vec![Box::new(TensorBoardSink::in_dir(tb_dir, hparams))],
            run_dir: run_dir.clone(),
            attempt,
            durable_epoch: 0,
        }
    }
}

impl EventSink for WorkerSink {
    fn emit(&mut self, event: &RunEvent) -> Result<(), SinkError> {
        self.metrics.emit(event)?;
        for s in &mut self.extra {
            s.emit(event)?;
        }
        match event {
            RunEvent::Started {
                attempt,
                resumed_from,
                epochs,
                ..
            } => {
                self.durable_epoch = *resumed_from;
                if *resumed_from > 0 {
                    println!(
                        "orchestrate worker: attempt {attempt} resumed from epoch \
                         {resumed_from} of {epochs}"
                    );
                } else {
                    println!("orchestrate worker: attempt {attempt}, fresh start, {epochs} epochs");
                }
            }
            RunEvent::TestItems(items) => {
                store::write_test_items(&self.run_dir, items).map_err(|e| SinkError {
                    what: format!("writing {}", self.run_dir.test_items().display()),
                    source: std::io::Error::other(e.to_string()),
                })?;
            }
            RunEvent::EpochEnd { epoch, step } => {
                self.durable_epoch = *epoch;
                store::write_status(
                    &self.run_dir,
                    &RunStatus {
                        state: RunState::Running,
                        attempts: self.attempt,
                        epoch: *epoch,
                        message: None,
                        pid: Some(std::process::id()),
                        pruned: None,
                    },
                )
                .map_err(|e| SinkError {
                    what: format!("writing {}", self.run_dir.status().display()),
                    source: std::io::Error::other(e.to_string()),
                })?;
                println!("orchestrate worker: epoch {epoch} done at step {step}");
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn env_round_trips_through_vars() {
        let env = WorkerEnv {
            run_dir: PathBuf::from("/r/e/abc"),
            run_id: Some("abc".into()),
            threads: 2,
            device: Some(Device::Cuda(Some(1))),
            attempt: Some(3),
            parent_pid: Some(77),
        };
        let map: HashMap<_, _> = env.to_vars().into_iter().collect();
        assert_eq!(map["RAYON_NUM_THREADS"], "2");
        let back = WorkerEnv::from_lookup(|k| map.get(k).cloned()).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn missing_run_dir_and_bad_numbers_are_named() {
        let e = WorkerEnv::from_lookup(|_| None).unwrap_err().to_string();
        assert!(e.contains(vars::RUN_DIR), "{e}");
        let e = WorkerEnv::from_lookup(|k| match k {
            vars::RUN_DIR => Some("/x".into()),
            vars::THREADS => Some("two".into()),
            _ => None,
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("ORCHESTRATE_THREADS") && e.contains("two"),
            "{e}"
        );
        let e = WorkerEnv::from_lookup(|k| match k {
            vars::RUN_DIR => Some("/x".into()),
            vars::DEVICE => Some("gpu".into()),
            _ => None,
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("ORCHESTRATE_DEVICE") && e.contains("\"gpu\""),
            "{e}"
        );
    }

    #[test]
    fn reusable_training_is_a_done_sibling_with_the_same_training_id() {
        let exp = tempfile::tempdir().unwrap();
        let mk = |id: &str, index: usize, tid: &str, state: RunState| {
            let r = RunDir::at(exp.path().join(id));
            std::fs::create_dir_all(r.root()).unwrap();
            store::write_plan(
                &r,
                &store::PlanRecord {
                    index,
                    id: id.into(),
                    training_id: tid.into(),
                    name: id.into(),
                    varied: Default::default(),
                    data: Default::default(),
                    numerics: 0,
                    replicate: None,
                    tensorboard: String::new(),
                },
            )
            .unwrap();
            store::write_status(
                &r,
                &RunStatus {
                    state,
                    attempts: 1,
                    epoch: 1,
                    message: None,
                    pid: None,
                    pruned: None,
                },
            )
            .unwrap();
            r
        };
        let me = mk("me", 2, "t1", RunState::Queued);
        mk("other-training", 0, "t2", RunState::Done);
        mk("sibling-failed", 1, "t1", RunState::Failed);
        assert!(find_reusable_training(&me, "t1", "me").is_none());
        let done = mk("sibling-done", 3, "t1", RunState::Done);
        assert_eq!(
            find_reusable_training(&me, "t1", "me").map(|r| r.root().to_path_buf()),
            Some(done.root().to_path_buf())
        );
    }
}
