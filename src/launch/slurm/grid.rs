//! The grid loop on top of [`super::track`]: submit the runs (or pick up the jobs a detached
//! invocation left running), follow them to their end, resubmit only the failed ones, cancel
//! on Ctrl-C, or submit and detach.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::track::{RunOutcome, TaskPhase, TaskView, record_outcome_status};
use super::{ArrayJob, RunToLaunch, SlurmError, SlurmLauncher, WorkerCommand, load_jobs};
use crate::spec::SlurmSpec;
use crate::store::RunState;

/// How `run_grid_on_slurm` behaves.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    /// Submit (or find the jobs already submitted) and return without waiting.
    pub detach: bool,
    /// Extra attempts for a failed run (`launch.retries`); each resubmits only failed runs.
    pub retries: usize,
    /// Time between two looks at the cluster.
    pub poll_interval: Duration,
    /// Set (e.g. by a Ctrl-C handler) to cancel the array jobs and stop tracking.
    pub cancel: Arc<AtomicBool>,
    /// Program started in each task; `None` = `<this executable> worker`.
    pub worker: Option<WorkerCommand>,
    /// Working directory of the tasks; `None` = the current directory.
    pub workdir: Option<PathBuf>,
    /// After scancel, how long to wait for tasks to end (workers checkpoint on SIGTERM).
    pub cancel_grace: Duration,
    /// How long a task Slurm reports as ended may take to show its exit file (shared
    /// filesystems cache directory entries) before Slurm's word is taken.
    pub exit_file_grace: Duration,
}

impl SlurmOptions {
    /// Options for `spec`: retries from `launch.retries`, poll interval from
    /// `launch.slurm.poll_seconds`.
    pub fn new(slurm: &SlurmSpec, retries: usize) -> Self {
        let poll = if slurm.poll_seconds > 0.0 {
            Duration::from_secs_f64(slurm.poll_seconds)
        } else {
            Duration::from_secs(2)
        };
        SlurmOptions {
            detach: false,
            retries,
            poll_interval: poll,
            cancel: Arc::new(AtomicBool::new(false)),
            worker: None,
            workdir: None,
            cancel_grace: Duration::from_secs(90),
            exit_file_grace: Duration::from_secs(5),
        }
    }
}

/// What `run_grid_on_slurm` ended with.
#[derive(Debug, Clone, PartialEq)]
pub enum SlurmGridResult {
    /// `--detach`: the array jobs now holding the runs.
    Detached { jobs: Vec<String>, runs: usize },
    /// Every run has an outcome (in the order of the runs given), or the user cancelled.
    Finished {
        outcomes: Vec<RunOutcome>,
        interrupted: bool,
    },
}

/// What `run_grid_on_slurm` tells its caller while it works. Only [`SlurmProgress::task`] is
/// required; a plain closure `|view: &TaskView| ...` is one.
pub trait SlurmProgress {
    /// A task's phase changed.
    fn task(&mut self, view: &TaskView);
    /// An array job was submitted now (`attached == false`) or, submitted by an earlier
    /// invocation, is followed again; `runs` of its tasks are followed.
    fn submitted(&mut self, _job: &ArrayJob, _runs: usize, _attached: bool) {}
    /// A run has its outcome for this attempt; `retry`: it is resubmitted.
    fn finished(&mut self, _outcome: &RunOutcome, _retry: bool) {}
    /// Called after every round of polling (a place to read the runs' metrics).
    fn polled(&mut self) {}
    /// While cancelling: stop waiting for Slurm to confirm the end of the tasks now (they are
    /// sent SIGKILL). Asked once per round.
    fn stop_waiting(&mut self) -> bool {
        false
    }
}

impl<F: FnMut(&TaskView)> SlurmProgress for F {
    fn task(&mut self, view: &TaskView) {
        self(view)
    }
}

struct Tracked {
    job: ArrayJob,
    open: BTreeSet<usize>,
    last: BTreeMap<usize, TaskPhase>,
    ended_since: BTreeMap<usize, Instant>,
}

impl Tracked {
    fn new(job: ArrayJob, open: BTreeSet<usize>) -> Self {
        Tracked {
            job,
            open,
            last: BTreeMap::new(),
            ended_since: BTreeMap::new(),
        }
    }
}

/// Runs `runs` (existing run directories that are not done) on Slurm and follows them to the
/// end; what `orchestrate run` calls for `launch.backend = "slurm"`.
///
/// Runs whose latest array task (from `job.json`) is still pending or running are picked up
/// again rather than submitted twice; the others go into one new array job. Failed runs are
/// resubmitted, alone, up to `opts.retries` times. When `opts.cancel` is set the jobs are
/// cancelled and the workers' own state (checkpoint, `cancelled`) is left for a later resume.
/// `progress` sees submissions, every task whose phase changed and every outcome.
pub fn run_grid_on_slurm(
    experiment: &str,
    exp_dir: &Path,
    slurm: &SlurmSpec,
    runs: &[RunToLaunch],
    opts: &SlurmOptions,
    progress: &mut dyn SlurmProgress,
) -> Result<SlurmGridResult, SlurmError> {
    let mut launcher = SlurmLauncher::new(experiment, exp_dir, slurm)?;
    if let Some(w) = &opts.worker {
        launcher = launcher.with_worker(w.clone());
    }
    if let Some(d) = &opts.workdir {
        launcher = launcher.with_workdir(d);
    }
    let mut outcomes: BTreeMap<String, RunOutcome> = BTreeMap::new();
    let mut attempts: BTreeMap<String, usize> = BTreeMap::new();
    let mut tracked = attach_existing(launcher.exp_dir(), runs, &mut outcomes)?;
    for t in &tracked {
        progress.submitted(&t.job, t.open.len(), true);
    }
    tracked.retain(|t| !t.open.is_empty());
    for o in outcomes.values() {
        progress.finished(o, false);
    }
    let attached: BTreeSet<&str> = tracked
        .iter()
        .flat_map(|t| {
            t.job
                .tasks
                .iter()
                .filter(|e| t.open.contains(&e.task))
                .map(|e| e.run_id.as_str())
        })
        .collect();
    let fresh: Vec<RunToLaunch> = runs
        .iter()
        .filter(|r| !attached.contains(r.run_id.as_str()) && !outcomes.contains_key(&r.run_id))
        .cloned()
        .collect();
    for r in runs {
        attempts.insert(r.run_id.clone(), 1);
    }
    if !fresh.is_empty() {
        let job = launcher.submit(&fresh)?;
        progress.submitted(&job, job.tasks.len(), false);
        let open = job.tasks.iter().map(|t| t.task).collect();
        tracked.push(Tracked::new(job, open));
    }
    if opts.detach {
        return Ok(SlurmGridResult::Detached {
            jobs: tracked.iter().map(|t| t.job.job_id.clone()).collect(),
            runs: tracked.iter().map(|t| t.open.len()).sum(),
        });
    }

    let mut cancel_deadline: Option<Instant> = None;
    let mut resubmit: Vec<RunToLaunch> = Vec::new();
    loop {
        let cancelling = opts.cancel.load(Ordering::SeqCst);
        if cancelling && cancel_deadline.is_none() {
            cancel_deadline = Some(Instant::now() + opts.cancel_grace);
            resubmit.clear();
            for t in tracked.iter().filter(|t| !t.open.is_empty()) {
                // A controller that does not answer now is asked again below, through polling;
                // the deadline bounds how long we wait either way.
                let _ = t.job.cancel();
            }
        }
        for t in tracked.iter_mut().filter(|t| !t.open.is_empty()) {
            let views = t.job.poll_tasks(&t.open)?;
            for v in views {
                if t.last.get(&v.task) != Some(&v.phase) {
                    progress.task(&v);
                    t.last.insert(v.task, v.phase.clone());
                }
                if !v.phase.is_terminal() {
                    continue;
                }
                if !matches!(v.phase, TaskPhase::Exited { .. }) {
                    let since = *t.ended_since.entry(v.task).or_insert_with(Instant::now);
                    if since.elapsed() < opts.exit_file_grace {
                        continue;
                    }
                }
                t.open.remove(&v.task);
                let Some(mut outcome) = v.outcome() else {
                    continue;
                };
                outcome.attempts = attempts.get(&v.run_id).copied().unwrap_or(1);
                record_outcome_status(&outcome);
                if outcome.state == RunState::Failed
                    && outcome.attempts <= opts.retries
                    && !cancelling
                {
                    resubmit.push(RunToLaunch {
                        run_id: v.run_id.clone(),
                        run_dir: v.run_dir.clone(),
                    });
                    progress.finished(&outcome, true);
                } else {
                    progress.finished(&outcome, false);
                }
                outcomes.insert(v.run_id.clone(), outcome);
            }
        }
        if !resubmit.is_empty() && !cancelling {
            match launcher.submit(&resubmit) {
                Ok(job) => {
                    progress.submitted(&job, job.tasks.len(), false);
                    for r in &resubmit {
                        *attempts.entry(r.run_id.clone()).or_insert(1) += 1;
                    }
                    let open = job.tasks.iter().map(|t| t.task).collect();
                    tracked.push(Tracked::new(job, open));
                    resubmit.clear();
                }
                // Try again at the next round; the failed outcomes stand meanwhile.
                Err(SlurmError::Unavailable { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        progress.polled();
        let open: usize = tracked.iter().map(|t| t.open.len()).sum();
        if open == 0 && resubmit.is_empty() {
            break;
        }
        let give_up = cancel_deadline.is_some() && progress.stop_waiting();
        if give_up {
            for t in tracked.iter().filter(|t| !t.open.is_empty()) {
                let _ = t.job.kill();
            }
        }
        if let Some(deadline) = cancel_deadline
            && (give_up || Instant::now() >= deadline)
        {
            for t in &tracked {
                for e in t.job.tasks.iter().filter(|e| t.open.contains(&e.task)) {
                    let outcome = RunOutcome {
                        run_id: e.run_id.clone(),
                        run_dir: e.run_dir.clone(),
                        state: RunState::Cancelled,
                        message: Some(format!(
                            "cancelled; Slurm had not confirmed the end of task {} when the \
                             orchestrator stopped waiting",
                            t.job.task_name(e.task),
                        )),
                        job: t.job.task_name(e.task),
                        exit_code: None,
                        attempts: attempts.get(&e.run_id).copied().unwrap_or(1),
                    };
                    progress.finished(&outcome, false);
                    outcomes.insert(e.run_id.clone(), outcome);
                }
            }
            break;
        }
        sleep_unless(opts.poll_interval, &opts.cancel, cancel_deadline.is_none());
    }
    let ordered = runs
        .iter()
        .filter_map(|r| outcomes.remove(&r.run_id))
        .collect();
    Ok(SlurmGridResult::Finished {
        outcomes: ordered,
        interrupted: opts.cancel.load(Ordering::SeqCst),
    })
}

/// Sleeps `d`, waking early when `cancel` turns true (if `watch`).
fn sleep_unless(d: Duration, cancel: &AtomicBool, watch: bool) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if watch && cancel.load(Ordering::SeqCst) {
            return;
        }
        thread::sleep(Duration::from_millis(50).min(end - Instant::now()));
    }
}

/// Finds, for each run, its latest array task in `job.json`; tasks still pending or running
/// (or whose state the controller cannot tell now) are tracked again (every job holding a
/// latest task is returned, some perhaps with no open task). A run whose latest task
/// already finished it (done, diverged) gets its outcome without a new submission.
fn attach_existing(
    exp_dir: &Path,
    runs: &[RunToLaunch],
    outcomes: &mut BTreeMap<String, RunOutcome>,
) -> Result<Vec<Tracked>, SlurmError> {
    let record = load_jobs(exp_dir)?;
    let wanted: BTreeSet<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
    // run id -> (index of job in record, task)
    let mut latest: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (j, job) in record.jobs.iter().enumerate() {
        for e in &job.tasks {
            if wanted.contains(e.run_id.as_str()) {
                latest.insert(e.run_id.as_str(), (j, e.task));
            }
        }
    }
    let mut by_job: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    for (j, task) in latest.values() {
        by_job.entry(*j).or_default().insert(*task);
    }
    let mut tracked = Vec::new();
    for (j, tasks) in by_job {
        let job = record.jobs[j].clone();
        let views = job.poll_tasks(&tasks)?;
        let mut open = BTreeSet::new();
        for v in views {
            if !v.phase.is_terminal() {
                open.insert(v.task);
            } else if let Some(o) = v.outcome()
                && o.state.is_final()
            {
                outcomes.insert(v.run_id.clone(), o);
            }
        }
        // Kept even when every task ended, so the caller hears which job it picked up.
        tracked.push(Tracked::new(job, open));
    }
    Ok(tracked)
}

/// Slurm's view of every run of the experiment that was ever submitted: the latest task of
/// each, polled once. For `orchestrate status`; empty when nothing was submitted to Slurm.
pub fn slurm_status(exp_dir: &Path) -> Result<Vec<TaskView>, SlurmError> {
    let record = load_jobs(exp_dir)?;
    let mut latest: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (j, job) in record.jobs.iter().enumerate() {
        for e in &job.tasks {
            latest.insert(e.run_id.clone(), (j, e.task));
        }
    }
    let mut by_job: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    for (j, task) in latest.values() {
        by_job.entry(*j).or_default().insert(*task);
    }
    let mut views = Vec::new();
    for (j, tasks) in by_job {
        views.extend(record.jobs[j].poll_tasks(&tasks)?);
    }
    Ok(views)
}
