//! The Slurm-array executor on top of [`super::track`]: submit the runs the dispatcher starts
//! (or pick up the jobs a detached invocation left running), follow the tasks to their end,
//! cancel them when asked; the dispatcher decides retries (resubmissions of the failed runs),
//! cancellation and the counts, as for local workers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::track::{RunOutcome, TaskPhase, TaskView, record_outcome_status};
use super::{ArrayJob, RunToLaunch, SlurmError, SlurmLauncher, WorkerCommand, load_jobs};
use crate::launch::dispatch::{ExecEvent, Executor, Interrupts, Policy, RunToEnd, dispatch};
use crate::launch::events::LaunchEvent;
use crate::launch::prepare::PreparedRun;
use crate::launch::progress::Reporter;
use crate::spec::SlurmSpec;
use crate::store::{self, PlanRecord, RunDir, RunState, RunStatus};

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
            cancel_grace: crate::launch::settings::SLURM_CANCEL_GRACE,
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

/// Watches the array tasks as the executor polls them; a plain closure
/// `|view: &TaskView| ...` is one.
pub trait SlurmProgress {
    /// A task's phase changed.
    fn task(&mut self, view: &TaskView);
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
/// end, with the dispatcher deciding retries and cancellation as for `orchestrate run`.
///
/// Runs whose latest array task (from `job.json`) is still pending or running are picked up
/// again rather than submitted twice; the others go into one new array job. Failed runs are
/// resubmitted up to `opts.retries` times. When `opts.cancel` is set the jobs are
/// cancelled and the workers' own state (checkpoint, `cancelled`) is left for a later resume.
/// `progress` sees every task whose phase changed.
pub fn run_grid_on_slurm(
    experiment: &str,
    exp_dir: &Path,
    slurm: &SlurmSpec,
    runs: &[RunToLaunch],
    opts: &SlurmOptions,
    progress: &mut dyn SlurmProgress,
) -> Result<SlurmGridResult, SlurmError> {
    // The runs have no plan here: each is its own training group, named by its id.
    let prepared: Vec<PreparedRun> = runs
        .iter()
        .enumerate()
        .map(|(index, r)| PreparedRun {
            plan: PlanRecord {
                index,
                id: r.run_id.clone(),
                training_id: r.run_id.clone(),
                name: r.run_id.clone(),
                varied: Default::default(),
                data: Default::default(),
                numerics: 0,
                replicate: None,
                tensorboard: String::new(),
            },
            dir: RunDir::at(&r.run_dir),
            epochs: 0,
            metric: String::new(),
            state: RunState::Queued,
        })
        .collect();
    let mut launcher = SlurmLauncher::new(experiment, exp_dir, slurm)?;
    if let Some(w) = &opts.worker {
        launcher = launcher.with_worker(w.clone());
    }
    if let Some(d) = &opts.workdir {
        launcher = launcher.with_workdir(d);
    }
    let mut executor = SlurmExecutor::new(launcher, &prepared, opts, String::new(), progress);
    let policy = Policy {
        retries: opts.retries,
        fail_fast: false,
        grace: opts.cancel_grace,
        training_groups_in_order: false,
        detach: opts.detach,
    };
    let report = dispatch(
        &prepared,
        &policy,
        &mut executor,
        &CancelFlag(&opts.cancel),
        &mut RunToEnd,
        &mut Unheard,
    )?;
    if report.detached {
        return Ok(executor.detached());
    }
    Ok(SlurmGridResult::Finished {
        outcomes: executor.into_outcomes(),
        interrupted: report.interrupted,
    })
}

/// A cancel flag as a count of shutdown requests: set is one, never two.
struct CancelFlag<'a>(&'a AtomicBool);

impl Interrupts for CancelFlag<'_> {
    fn count(&self) -> usize {
        usize::from(self.0.load(Ordering::SeqCst))
    }
}

/// The library entry point reports through its return value only.
struct Unheard;

impl Reporter for Unheard {
    fn report(&mut self, _: &LaunchEvent) {}
}

/// Array tasks for the dispatcher's runs: each batch it starts is one `sbatch --array`
/// submission (a retry is a resubmission of the runs sent again); tasks are followed with
/// exit files, squeue and sacct, and stopped with scancel.
pub struct SlurmExecutor<'a> {
    launcher: SlurmLauncher,
    runs: &'a [PreparedRun],
    by_id: HashMap<String, usize>,
    tracked: Vec<Tracked>,
    /// The latest outcome of each run.
    outcomes: BTreeMap<usize, RunOutcome>,
    /// Submissions of each run in this launch (a run picked up again counts one).
    submissions: BTreeMap<usize, usize>,
    /// Attempts in `status.json` and the newest complete checkpoint when the run's task was
    /// submitted: what its worker starts from, however far it got by the time a poll sees it
    /// running.
    before: HashMap<usize, (u32, usize)>,
    /// Runs whose task was reported running.
    running: BTreeSet<usize>,
    exit_file_grace: Duration,
    poll_interval: Duration,
    /// Device shown for the runs (`train.device`).
    device: String,
    progress: &'a mut dyn SlurmProgress,
}

impl<'a> SlurmExecutor<'a> {
    /// An executor for `runs`, submitting with `launcher`, at the timings of `opts`;
    /// `progress` watches every task's phase and `device` is shown for the runs.
    pub fn new(
        launcher: SlurmLauncher,
        runs: &'a [PreparedRun],
        opts: &SlurmOptions,
        device: String,
        progress: &'a mut dyn SlurmProgress,
    ) -> Self {
        SlurmExecutor {
            launcher,
            runs,
            by_id: runs
                .iter()
                .enumerate()
                .map(|(i, r)| (r.plan.id.clone(), i))
                .collect(),
            tracked: Vec::new(),
            outcomes: BTreeMap::new(),
            submissions: BTreeMap::new(),
            before: HashMap::new(),
            running: BTreeSet::new(),
            exit_file_grace: opts.exit_file_grace,
            poll_interval: opts.poll_interval,
            device,
            progress,
        }
    }

    /// The array jobs holding the runs after `--detach`.
    pub fn detached(&self) -> SlurmGridResult {
        SlurmGridResult::Detached {
            jobs: self.tracked.iter().map(|t| t.job.job_id.clone()).collect(),
            runs: self.tracked.iter().map(|t| t.open.len()).sum(),
        }
    }

    /// The latest outcome of every run that has one, in the order of the runs.
    pub fn into_outcomes(self) -> Vec<RunOutcome> {
        self.outcomes.into_values().collect()
    }

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

    /// Run `i` is running in array task `job`.
    fn started(&mut self, i: usize, job: String, out: &mut Vec<ExecEvent>) {
        let (attempt, resumed_from) = self.attempt_of(i);
        self.running.insert(i);
        out.push(ExecEvent::Started {
            run: i,
            attempt,
            pid: None,
            job: Some(job),
            device: self.device.clone(),
            resumed_from,
        });
    }

    /// Run `i` has its outcome for this attempt.
    fn ended(&mut self, i: usize, outcome: RunOutcome, out: &mut Vec<ExecEvent>) {
        // A task quicker than the polling ran without being seen running: its start (and the
        // epoch it resumed from) is still part of the story, told before its verdict.
        if !self.running.contains(&i)
            && let Some(&(attempts_before, _)) = self.before.get(&i)
            && store::read_status(&self.runs[i].dir)
                .ok()
                .flatten()
                .is_some_and(|s| s.attempts > attempts_before)
        {
            self.started(i, outcome.job.clone(), out);
        }
        self.before.remove(&i);
        self.running.remove(&i);
        let status = store::read_status(&self.runs[i].dir).ok().flatten();
        out.push(ExecEvent::Exited {
            run: i,
            attempt: RunStatus::current_attempt(status.as_ref()),
            state: outcome.state,
            message: outcome.message.clone(),
        });
        self.outcomes.insert(i, outcome);
    }

    /// Polls every open task once and reports what changed.
    fn poll_open(&mut self, out: &mut Vec<ExecEvent>) -> Result<(), SlurmError> {
        let mut ended = Vec::new();
        let mut notes = Vec::new();
        for t in self.tracked.iter_mut().filter(|t| !t.open.is_empty()) {
            let views = t.job.poll_tasks(&t.open)?;
            for v in views {
                let Some(&i) = self.by_id.get(&v.run_id) else {
                    continue;
                };
                if t.last.get(&v.task) != Some(&v.phase) {
                    self.progress.task(&v);
                    t.last.insert(v.task, v.phase.clone());
                    match &v.phase {
                        TaskPhase::Running => notes.push((i, None, t.job.task_name(v.task))),
                        // The outcome follows below.
                        TaskPhase::Exited { .. } => {}
                        _ => notes.push((i, Some(v.phase_text()), t.job.task_name(v.task))),
                    }
                }
                if !v.phase.is_terminal() {
                    continue;
                }
                if !matches!(v.phase, TaskPhase::Exited { .. }) {
                    let since = *t.ended_since.entry(v.task).or_insert_with(Instant::now);
                    if since.elapsed() < self.exit_file_grace {
                        continue;
                    }
                }
                t.open.remove(&v.task);
                if let Some(outcome) = v.outcome() {
                    ended.push((i, outcome));
                }
            }
        }
        for (i, phase, job) in notes {
            match phase {
                None if !self.running.contains(&i) => self.started(i, job, out),
                None => {}
                Some(phase) => out.push(ExecEvent::Note(LaunchEvent::SlurmTask {
                    run_id: self.runs[i].plan.id.clone(),
                    name: self.runs[i].plan.name.clone(),
                    job,
                    phase,
                })),
            }
        }
        for (i, mut outcome) in ended {
            outcome.attempts = self.submissions.get(&i).copied().unwrap_or(1);
            record_outcome_status(&outcome);
            self.ended(i, outcome, out);
        }
        Ok(())
    }

    /// Stops following every open task (`kill`: scancel them with SIGKILL first); each run
    /// ends as cancelled, `why` naming its task.
    fn abandon(&mut self, kill: bool, out: &mut Vec<ExecEvent>, why: impl Fn(&str) -> String) {
        let mut abandoned = Vec::new();
        for t in &mut self.tracked {
            if kill && !t.open.is_empty() {
                let _ = t.job.kill();
            }
            for e in t.job.tasks.iter().filter(|e| t.open.contains(&e.task)) {
                let job = t.job.task_name(e.task);
                abandoned.push(RunOutcome {
                    run_id: e.run_id.clone(),
                    run_dir: e.run_dir.clone(),
                    state: RunState::Cancelled,
                    message: Some(why(&job)),
                    job,
                    exit_code: None,
                    attempts: 0,
                });
            }
            t.open.clear();
        }
        for mut outcome in abandoned {
            if let Some(&i) = self.by_id.get(&outcome.run_id) {
                outcome.attempts = self.submissions.get(&i).copied().unwrap_or(1);
                self.ended(i, outcome, out);
            }
        }
    }

    fn to_launch(&self, runs: &[usize]) -> Vec<RunToLaunch> {
        runs.iter()
            .map(|&i| RunToLaunch {
                run_id: self.runs[i].plan.id.clone(),
                run_dir: self.runs[i].dir.root().to_path_buf(),
            })
            .collect()
    }
}

/// The epoch a worker of `run` resumes from, decided as the worker decides it.
fn resume_epoch(run: &PreparedRun) -> usize {
    store::checkpoints::newest_complete(&run.dir.checkpoints()).unwrap_or(0)
}

impl Executor for SlurmExecutor<'_> {
    type Error = SlurmError;

    fn adopt(
        &mut self,
        runs: &[usize],
        out: &mut Vec<ExecEvent>,
    ) -> Result<Vec<usize>, SlurmError> {
        let wanted = self.to_launch(runs);
        let mut finished = BTreeMap::new();
        let mut tracked = attach_existing(self.launcher.exp_dir(), &wanted, &mut finished)?;
        for t in &tracked {
            out.push(ExecEvent::Note(LaunchEvent::SlurmSubmitted {
                job_id: t.job.job_id.clone(),
                runs: t.open.len(),
                attached: true,
            }));
        }
        tracked.retain(|t| !t.open.is_empty());
        let mut held = Vec::new();
        for t in &tracked {
            for e in t.job.tasks.iter().filter(|e| t.open.contains(&e.task)) {
                if let Some(&i) = self.by_id.get(&e.run_id) {
                    self.submissions.insert(i, 1);
                    held.push(i);
                }
            }
        }
        self.tracked = tracked;
        for (run_id, outcome) in finished {
            if let Some(&i) = self.by_id.get(&run_id) {
                held.push(i);
                self.ended(i, outcome, out);
            }
        }
        Ok(held)
    }

    fn free_slots(&self) -> Option<usize> {
        None
    }

    fn start(&mut self, runs: &[usize], out: &mut Vec<ExecEvent>) -> Result<(), SlurmError> {
        let resubmission = runs.iter().any(|i| self.submissions.contains_key(i));
        let job = match self.launcher.submit(&self.to_launch(runs)) {
            Ok(job) => job,
            // Try again at the next round; the failed outcomes stand meanwhile.
            Err(SlurmError::Unavailable { .. }) if resubmission => {
                out.extend(runs.iter().map(|&run| ExecEvent::NotStarted { run }));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        for &i in runs {
            let s = store::read_status(&self.runs[i].dir).ok().flatten();
            let attempts = s.map_or(0, |s| s.attempts);
            self.before
                .insert(i, (attempts, resume_epoch(&self.runs[i])));
            *self.submissions.entry(i).or_insert(0) += 1;
        }
        out.push(ExecEvent::Note(LaunchEvent::SlurmSubmitted {
            job_id: job.job_id.clone(),
            runs: job.tasks.len(),
            attached: false,
        }));
        let open = job.tasks.iter().map(|t| t.task).collect();
        self.tracked.push(Tracked::new(job, open));
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<ExecEvent>) -> Result<(), SlurmError> {
        let polled = self.poll_open(out);
        if let Err(e) = &polled {
            // The tasks go on in Slurm, and a later `run` picks them up again; this launch
            // can no longer follow them.
            self.abandon(false, out, |task| {
                format!("the orchestrator stopped following task {task}: {e}")
            });
        }
        polled
    }

    fn stop(&mut self, run: usize) {
        for t in &self.tracked {
            for e in t.job.tasks.iter().filter(|e| t.open.contains(&e.task)) {
                if self.by_id.get(&e.run_id) == Some(&run) {
                    // A controller that does not answer now leaves the run going; the
                    // dispatcher hears of its end either way.
                    let _ = t.job.cancel_task(e.task);
                }
            }
        }
    }

    fn terminate(&mut self) {
        for t in self.tracked.iter().filter(|t| !t.open.is_empty()) {
            // A controller that does not answer now is asked again below, through polling;
            // the deadline bounds how long we wait either way.
            let _ = t.job.cancel();
        }
    }

    fn give_up(&mut self, kill: bool, out: &mut Vec<ExecEvent>) {
        self.abandon(kill, out, |task| {
            format!(
                "cancelled; Slurm had not confirmed the end of task {task} when the \
                 orchestrator stopped waiting"
            )
        });
    }

    fn detach(&mut self, out: &mut Vec<ExecEvent>) {
        let SlurmGridResult::Detached { jobs, runs } = self.detached() else {
            return;
        };
        out.push(ExecEvent::Note(LaunchEvent::Detached {
            experiment: self.launcher.experiment().to_string(),
            jobs,
            runs,
        }));
    }

    fn poll_interval(&self) -> Duration {
        self.poll_interval
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
