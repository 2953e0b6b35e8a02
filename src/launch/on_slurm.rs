//! `orchestrate run` and `plan` on Slurm: the prepared runs handed to the Slurm backend
//! ([`super::slurm::run_grid_on_slurm`]) and reported through the same [`Reporter`] and
//! shutdown signals as the local pool, so both backends look and end the same to the user.
//!
//! The thread budget is settled here once, for the submission and its plan alike: a thread
//! count (`--threads` / `train.threads`) becomes `--cpus-per-task` when the spec gives none,
//! and the workers get it in their environment; without one, the workers use
//! `SLURM_CPUS_PER_TASK` (the batch script's default).

use std::collections::HashMap;
use std::path::Path;

use super::events::LaunchEvent;
use super::local::PoolReport;
use super::prepare::PreparedRun;
use super::progress::Reporter;
use super::signals::ShutdownSignals;
use super::slurm::{
    ArrayJob, PlannedSubmission, RunOutcome, RunToLaunch, SlurmError, SlurmGridResult,
    SlurmLauncher, SlurmOptions, SlurmProgress, TaskPhase, TaskView, WorkerCommand,
    run_grid_on_slurm,
};
use super::tail::RunFollower;
use crate::spec::SlurmSpec;
use crate::store::{self, RunState, RunStatus, StoreError};
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
        let mut slurm = slurm.clone();
        if let Some(j) = jobs {
            slurm.max_parallel = j;
        }
        let mut note = None;
        if threads > 0 && slurm.cpus_per_task == 0 {
            slurm.cpus_per_task = threads;
        } else if threads > slurm.cpus_per_task && slurm.cpus_per_task > 0 {
            note = Some(format!(
                "{threads} thread(s) per run on {} CPU(s) per task (launch.slurm.cpus_per_task): \
                 the workers will compete for their CPUs",
                slurm.cpus_per_task
            ));
        }
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

/// What one `orchestrate run` on Slurm asks for besides the setup.
#[derive(Debug, Clone)]
pub struct SlurmRunOptions {
    /// Extra attempts for a failed run.
    pub retries: usize,
    /// Submit and return.
    pub detach: bool,
    /// Device shown for the runs (`train.device`).
    pub device: String,
}

/// Runs the `runs` that need running on Slurm and follows them to their end (or submits and
/// returns, with `detach`), reporting like the local pool. The first shutdown signal cancels
/// the array jobs (workers checkpoint on Slurm's SIGTERM); a second stops waiting for them.
pub fn run_on_slurm(
    experiment: &str,
    exp_dir: &Path,
    runs: &[PreparedRun],
    setup: &SlurmSetup,
    run: &SlurmRunOptions,
    signals: &ShutdownSignals,
    reporter: &mut dyn Reporter,
) -> Result<SlurmRunEnd, LaunchOnSlurmError> {
    let started = std::time::Instant::now();
    let mut to_launch = Vec::new();
    let mut by_id = HashMap::new();
    for (i, r) in runs.iter().enumerate() {
        by_id.insert(r.plan.id.clone(), i);
        if r.needs_running() {
            let run_dir =
                std::path::absolute(r.dir.root()).map_err(|e| StoreError::io(r.dir.root(), e))?;
            to_launch.push(RunToLaunch {
                run_id: r.plan.id.clone(),
                run_dir,
            });
        }
    }
    let mut opts = SlurmOptions::new(&setup.slurm, run.retries);
    opts.detach = run.detach;
    opts.cancel = signals.cancel_flag();
    opts.worker = Some(setup.worker.clone());
    let mut follow = Follow {
        runs,
        by_id,
        reporter,
        signals,
        seen_signals: 0,
        grace_seconds: opts.cancel_grace.as_secs(),
        device: run.device.clone(),
        active: HashMap::new(),
        before: HashMap::new(),
        report: PoolReport::default(),
    };
    let result = run_grid_on_slurm(
        experiment,
        exp_dir,
        &setup.slurm,
        &to_launch,
        &opts,
        &mut follow,
    )?;
    match result {
        SlurmGridResult::Detached { jobs, runs } => {
            follow.reporter.report(&LaunchEvent::Detached {
                experiment: experiment.to_string(),
                jobs,
                runs,
            });
            Ok(SlurmRunEnd::Detached)
        }
        SlurmGridResult::Finished {
            outcomes,
            interrupted,
        } => {
            follow.polled();
            let mut report = follow.report;
            report.interrupted = interrupted;
            report.not_started = to_launch.len().saturating_sub(outcomes.len());
            follow.reporter.report(&LaunchEvent::GridFinished {
                done: report.done,
                failed: report.failed,
                diverged: report.diverged,
                cancelled: report.cancelled,
                not_started: report.not_started,
                seconds: started.elapsed().as_secs_f64(),
            });
            Ok(SlurmRunEnd::Finished(report))
        }
    }
}

/// Why a Slurm launch stopped.
#[derive(Debug, thiserror::Error)]
pub enum LaunchOnSlurmError {
    #[error(transparent)]
    Slurm(#[from] SlurmError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The Slurm tracker's callbacks turned into the pool's events.
struct Follow<'a> {
    runs: &'a [PreparedRun],
    by_id: HashMap<String, usize>,
    reporter: &'a mut dyn Reporter,
    signals: &'a ShutdownSignals,
    seen_signals: usize,
    grace_seconds: u64,
    device: String,
    /// Runs whose task is running, by index into `runs`.
    active: HashMap<usize, RunFollower>,
    /// Attempts in `status.json` and the newest complete checkpoint when the run's task was
    /// submitted: what its worker starts from, however far it got by the time a poll sees it
    /// running.
    before: HashMap<usize, (u32, usize)>,
    report: PoolReport,
}

impl Follow<'_> {
    /// The attempt a worker of run `i` is (or will be) in, and the epochs on disk before it:
    /// the worker counts its own attempts in `status.json`.
    fn attempt_of(&self, i: usize) -> (u32, usize) {
        if let Some(&(attempts, epoch)) = self.before.get(&i) {
            return (attempts + 1, epoch);
        }
        match store::read_status(&self.runs[i].dir).ok().flatten() {
            Some(s) if s.state == RunState::Running => (s.attempts.max(1), s.epoch),
            Some(s) => (s.attempts + 1, resume_epoch(&self.runs[i])),
            None => (1, 0),
        }
    }

    /// Reports run `i` started in array task `job` and follows its records from there.
    fn start(&mut self, i: usize, job: String) {
        let r = &self.runs[i];
        let (attempt, resumed_from) = self.attempt_of(i);
        self.reporter.report(&LaunchEvent::RunStarted {
            run_id: r.plan.id.clone(),
            name: r.plan.name.clone(),
            attempt,
            pid: None,
            job: Some(job),
            device: self.device.clone(),
            resumed_from,
            epochs: r.epochs,
        });
        self.active
            .insert(i, RunFollower::new(r, attempt, resumed_from));
    }
}

/// The epoch a worker of `run` resumes from, decided as the worker decides it.
fn resume_epoch(run: &PreparedRun) -> usize {
    store::checkpoints::newest_complete(&run.dir.checkpoints()).unwrap_or(0)
}

impl SlurmProgress for Follow<'_> {
    fn task(&mut self, view: &TaskView) {
        let Some(&i) = self.by_id.get(&view.run_id) else {
            return;
        };
        let r = &self.runs[i];
        match &view.phase {
            TaskPhase::Running => {
                if !self.active.contains_key(&i) {
                    self.start(i, format!("{}_{}", view.job_id, view.task));
                }
            }
            // The outcome follows through `finished`.
            TaskPhase::Exited { .. } => {}
            _ => self.reporter.report(&LaunchEvent::SlurmTask {
                run_id: r.plan.id.clone(),
                name: r.plan.name.clone(),
                job: format!("{}_{}", view.job_id, view.task),
                phase: view.phase_text(),
            }),
        }
    }

    fn submitted(&mut self, job: &ArrayJob, runs: usize, attached: bool) {
        if !attached {
            for t in &job.tasks {
                if let Some(&i) = self.by_id.get(&t.run_id) {
                    let s = store::read_status(&self.runs[i].dir).ok().flatten();
                    let attempts = s.map_or(0, |s| s.attempts);
                    self.before
                        .insert(i, (attempts, resume_epoch(&self.runs[i])));
                }
            }
        }
        self.reporter.report(&LaunchEvent::SlurmSubmitted {
            job_id: job.job_id.clone(),
            runs,
            attached,
        });
    }

    fn finished(&mut self, outcome: &RunOutcome, retry: bool) {
        let Some(&i) = self.by_id.get(&outcome.run_id) else {
            return;
        };
        // A task quicker than the polling ran without being seen running: its start (and the
        // epoch it resumed from) is still part of the story, told before its epochs and verdict.
        if !self.active.contains_key(&i)
            && let Some(&(attempts_before, _)) = self.before.get(&i)
            && store::read_status(&self.runs[i].dir)
                .ok()
                .flatten()
                .is_some_and(|s| s.attempts > attempts_before)
        {
            self.start(i, outcome.job.clone());
        }
        let r = &self.runs[i];
        self.before.remove(&i);
        if let Some(mut f) = self.active.remove(&i) {
            // The last records and epochs of the attempt, before its verdict.
            f.poll(r, self.reporter);
        }
        let attempt =
            RunStatus::current_attempt(store::read_status(&r.dir).ok().flatten().as_ref());
        self.reporter.report(&LaunchEvent::RunFinished {
            run_id: r.plan.id.clone(),
            name: r.plan.name.clone(),
            attempt,
            state: outcome.state,
            message: outcome.message.clone(),
            retry,
        });
        if retry {
            return;
        }
        match outcome.state {
            RunState::Done => self.report.done += 1,
            RunState::Diverged => self.report.diverged += 1,
            RunState::Failed => self.report.failed += 1,
            _ => self.report.cancelled += 1,
        }
    }

    fn polled(&mut self) {
        let n = self.signals.count();
        if n > self.seen_signals {
            self.seen_signals = n;
            self.reporter.report(&LaunchEvent::Interrupted {
                signals: n,
                grace_seconds: self.grace_seconds,
            });
        }
        for (&i, f) in self.active.iter_mut() {
            f.poll(&self.runs[i], self.reporter);
        }
    }

    fn stop_waiting(&mut self) -> bool {
        self.signals.count() >= 2
    }
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
