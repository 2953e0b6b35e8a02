//! `orchestrate run` and `plan` on Slurm: the prepared runs handed to the dispatcher with the
//! Slurm-array executor ([`super::slurm::SlurmExecutor`]) and reported through the same
//! [`Reporter`] and shutdown signals as local workers, so both backends look and end the
//! same to the user.
//!
//! The thread budget is settled here once, for the submission and its plan alike: a thread
//! count (`--threads` / `train.threads`) becomes `--cpus-per-task` when the spec gives none,
//! and the workers get it in their environment; without one, the workers use
//! `SLURM_CPUS_PER_TASK` (the batch script's default).

use std::path::Path;

use super::dispatch::{Policy, PoolReport, Scheduler, dispatch};
use super::prepare::PreparedRun;
use super::progress::Reporter;
use super::settings::settle_slurm;
use super::signals::ShutdownSignals;
use super::slurm::{
    PlannedSubmission, RunToLaunch, SlurmError, SlurmExecutor, SlurmLauncher, SlurmOptions,
    TaskView, WorkerCommand,
};
use crate::spec::SlurmSpec;
use crate::worker::vars;

/// The Slurm settings and worker command one launch uses.
#[derive(Debug, Clone)]
pub struct SlurmSetup {
    pub slurm: SlurmSpec,
    pub worker: WorkerCommand,
    /// Threads each worker uses (0: `SLURM_CPUS_PER_TASK`, 1 when unset).
    pub threads: usize,
    /// Something the user should know about the budget (more threads than CPUs).
    pub note: Option<String>,
}

impl SlurmSetup {
    /// Settles `slurm` (from the spec) with a thread count (`--threads` or `train.threads`,
    /// 0 = none given) and a throttle (`--jobs`, overriding `launch.slurm.max_parallel`).
    pub fn new(
        slurm: &SlurmSpec,
        threads: usize,
        jobs: Option<usize>,
    ) -> Result<SlurmSetup, SlurmError> {
        let (slurm, note) = settle_slurm(slurm, threads, jobs);
        SlurmSetup::settled(slurm, threads, note)
    }

    /// The setup for `slurm` already settled with `threads` ([`settle_slurm`]).
    pub fn settled(
        slurm: SlurmSpec,
        threads: usize,
        note: Option<String>,
    ) -> Result<SlurmSetup, SlurmError> {
        let mut worker = WorkerCommand::current_exe().map_err(|e| SlurmError::Io {
            path: "current executable".into(),
            source: e,
        })?;
        // The batch script gives the workers SLURM_CPUS_PER_TASK threads; only a different
        // count needs saying.
        if threads > 0 && threads != slurm.cpus_per_task {
            for k in [vars::THREADS, "RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"] {
                worker.env.push((k.to_string(), threads.to_string()));
            }
        }
        Ok(SlurmSetup {
            slurm,
            worker,
            threads,
            note,
        })
    }

    /// Threads per worker as the user will see them in the grid's first line.
    pub fn threads_per_task(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            self.slurm.cpus_per_task.max(1)
        }
    }

    /// The launcher for `experiment` in `exp_dir`.
    pub fn launcher(&self, experiment: &str, exp_dir: &Path) -> Result<SlurmLauncher, SlurmError> {
        Ok(SlurmLauncher::new(experiment, exp_dir, &self.slurm)?.with_worker(self.worker.clone()))
    }
}

/// The submission `orchestrate run` would make for `runs` (run directories that need not
/// exist yet), rendered without touching the cluster or the disk.
pub fn plan_on_slurm(
    experiment: &str,
    exp_dir: &Path,
    setup: &SlurmSetup,
    runs: &[RunToLaunch],
) -> Result<PlannedSubmission, SlurmError> {
    setup.launcher(experiment, exp_dir)?.plan(runs)
}

/// How a Slurm launch ended.
#[derive(Debug, Clone, PartialEq)]
pub enum SlurmRunEnd {
    /// `--detach`: the runs are in Slurm's hands.
    Detached,
    /// Every run has an outcome, or the user interrupted.
    Finished(PoolReport),
}

/// Runs the `runs` that need running on Slurm with `launcher` and follows them to their end
/// (or submits and returns, with `policy.detach`), through the same dispatcher, reporter and
/// shutdown signals as local workers. The first shutdown signal cancels the array jobs
/// (workers checkpoint on Slurm's SIGTERM); a second stops waiting for them. `device` is
/// shown for the runs. `scheduler` prunes as on the local pool: a run pausing at a rung
/// ends its array task, and the rung's survivors are the next submission.
pub fn run_on_slurm(
    launcher: SlurmLauncher,
    runs: &[PreparedRun],
    policy: &Policy,
    device: &str,
    signals: &ShutdownSignals,
    scheduler: &mut dyn Scheduler,
    reporter: &mut dyn Reporter,
) -> Result<SlurmRunEnd, SlurmError> {
    let opts = SlurmOptions::new(launcher.slurm(), policy.retries);
    let mut unwatched = |_: &TaskView| {};
    let mut executor =
        SlurmExecutor::new(launcher, runs, &opts, device.to_string(), &mut unwatched);
    let report = dispatch(runs, policy, &mut executor, signals, scheduler, reporter)?;
    Ok(if report.detached {
        SlurmRunEnd::Detached
    } else {
        SlurmRunEnd::Finished(report)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_threads(s: &SlurmSetup) -> Option<&str> {
        s.worker
            .env
            .iter()
            .find(|(k, _)| k == vars::THREADS)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn thread_budget_becomes_cpus_per_task_or_worker_env() {
        let spec = SlurmSpec::default();
        // A thread count with no cpus_per_task: Slurm allocates that many, the script passes
        // SLURM_CPUS_PER_TASK on.
        let s = SlurmSetup::new(&spec, 2, None).unwrap();
        assert_eq!((s.slurm.cpus_per_task, env_threads(&s)), (2, None));
        assert_eq!(s.threads_per_task(), 2);
        // No thread count: the partition decides, the workers follow SLURM_CPUS_PER_TASK.
        let s = SlurmSetup::new(&spec, 0, Some(3)).unwrap();
        assert_eq!((s.slurm.cpus_per_task, env_threads(&s)), (0, None));
        assert_eq!(s.slurm.max_parallel, 3);
        // Both, different: the workers get the thread count, and the user a note.
        let four = SlurmSpec {
            cpus_per_task: 4,
            ..SlurmSpec::default()
        };
        let s = SlurmSetup::new(&four, 8, None).unwrap();
        assert_eq!((s.slurm.cpus_per_task, env_threads(&s)), (4, Some("8")));
        assert!(s.note.unwrap().contains("8 thread(s) per run on 4 CPU(s)"));
        let s = SlurmSetup::new(&four, 2, None).unwrap();
        assert_eq!(env_threads(&s), Some("2"));
        assert!(s.note.is_none());
    }
}
