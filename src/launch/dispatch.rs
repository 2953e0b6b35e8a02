//! The one dispatcher of a launch: it decides which run starts next, what a shutdown signal
//! does, whether a crashed attempt is retried, when fail-fast stops the grid, and counts how
//! the grid ended. Where the attempts run is an [`Executor`]'s business (local process
//! groups, Slurm array tasks); the executor only reports starts and exits and obeys
//! start / stop / terminate / give-up.
//!
//! An executor that starts every ready run at once (a Slurm array) says so with
//! [`Executor::free_slots`] `None`; the dispatcher then hands it each round's ready runs as
//! one batch, and retries become resubmissions of the runs it sends again.
//!
//! At each epoch end a run reports, the dispatcher asks its [`Scheduler`] whether the run
//! goes on; before a start, whether a queued run may start and where it pauses; after an
//! exit, what it can decide now (a rung every live run has reported): the place where
//! pruning policies decide. [`RunToEnd`] trains every run to its last epoch;
//! `launch::schedule` holds successive halving, median stopping and ASHA.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::events::LaunchEvent;
use super::prepare::PreparedRun;
use super::progress::Reporter;
use super::signals::ShutdownSignals;
use super::tail::RunFollower;
use crate::store::{RunState, StoreError};

/// How a launch ended, counted over the runs it started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolReport {
    pub done: usize,
    pub failed: usize,
    pub diverged: usize,
    pub cancelled: usize,
    /// Runs the schedule pruned in this launch.
    pub pruned: usize,
    pub not_started: usize,
    /// A shutdown signal stopped the launch.
    pub interrupted: bool,
    /// The runs were left running on their own (Slurm `--detach`).
    pub detached: bool,
}

/// The rules the dispatcher decides by.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Extra attempts per crashed run, in this launch.
    pub retries: usize,
    /// Stop starting runs and stop the others at the first failed or diverged run.
    pub fail_fast: bool,
    /// Time the attempts get to checkpoint after they are asked to stop.
    pub grace: Duration,
    /// A run waits until no earlier run of its training group is pending (decode variants
    /// reuse the first run's checkpoints). A Slurm array holds every run at once instead.
    pub training_groups_in_order: bool,
    /// Start the runs, leave them to the executor and return (Slurm `--detach`).
    pub detach: bool,
}

/// What an executor reports about the attempts it holds.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecEvent {
    /// An attempt of run `run` (an index into the dispatcher's runs) is running.
    Started {
        run: usize,
        attempt: u32,
        pid: Option<u32>,
        /// `<job>_<task>` of a Slurm array task.
        job: Option<String>,
        device: String,
        /// Epochs already on disk: the attempt resumes after them.
        resumed_from: usize,
    },
    /// An attempt of run `run` ended with `state` (its `status.json` says so by now).
    Exited {
        run: usize,
        attempt: u32,
        state: RunState,
        message: Option<String>,
    },
    /// Run `run` could not be started now (the Slurm controller did not answer a
    /// resubmission); it goes back to the queue.
    NotStarted { run: usize },
    /// Something the executor has to say that changes no decision (a Slurm submission).
    Note(LaunchEvent),
}

/// Runs attempts somewhere and reports on them; never decides what runs next.
pub trait Executor {
    /// Why the executor could not do what it was asked.
    type Error;
    /// Of `runs`, those an earlier launch left with this executor (still running, or ended:
    /// their exits are reported now); the dispatcher does not start them again.
    fn adopt(
        &mut self,
        _runs: &[usize],
        _out: &mut Vec<ExecEvent>,
    ) -> Result<Vec<usize>, Self::Error> {
        Ok(Vec::new())
    }
    /// How many more attempts may start now (the dispatcher then starts one run per call);
    /// `None`: every ready run at once, in one batch.
    fn free_slots(&self) -> Option<usize>;
    /// Starts one attempt of each of `runs`; on an error none of them was started.
    fn start(&mut self, runs: &[usize], out: &mut Vec<ExecEvent>) -> Result<(), Self::Error>;
    /// Reports what happened since the last poll. An error comes after the exits it
    /// concerns were reported.
    fn poll(&mut self, out: &mut Vec<ExecEvent>) -> Result<(), Self::Error>;
    /// Asks the attempt of `run` to checkpoint and stop.
    fn stop(&mut self, run: usize);
    /// Asks every attempt to checkpoint and stop.
    fn terminate(&mut self);
    /// Stops waiting for the attempts still running (`kill`: the user insisted). Attempts
    /// whose end the executor will not report come back as exits now.
    fn give_up(&mut self, kill: bool, out: &mut Vec<ExecEvent>);
    /// Leaves the attempts running on their own: this launch returns without them.
    fn detach(&mut self, _out: &mut Vec<ExecEvent>) {}
    /// How long to wait between two polls.
    fn poll_interval(&self) -> Duration;
}

/// Shutdown requests counted so far: the first stops gracefully, the second at once.
pub trait Interrupts {
    /// Requests received so far.
    fn count(&self) -> usize;
}

impl Interrupts for ShutdownSignals {
    fn count(&self) -> usize {
        ShutdownSignals::count(self)
    }
}

/// What becomes of a run at an epoch end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Continue,
    /// Ask the run's attempt to checkpoint and stop.
    Stop,
}

/// Decides whether runs go on: at each epoch end a run reports, before a queued run starts,
/// and after attempts end. Runs are named by their index into the dispatcher's runs.
pub trait Scheduler {
    /// `run` finished `epoch` with `metric` (its `select.metric`, when recorded); by
    /// default it goes on (the schedules here stop runs at rungs instead).
    fn epoch_end(&mut self, _run: &PreparedRun, _epoch: usize, _metric: Option<f64>) -> Decision {
        Decision::Continue
    }
    /// Whether queued `run` may start now (`false`: it waits at a rung for the others).
    fn may_start(&self, _run: usize) -> bool {
        true
    }
    /// Among queued runs that may start, those of a higher priority start first (equal
    /// ones in grid order): ASHA sends promoted runs on before fresh ones, top rung first.
    fn priority(&self, _run: usize) -> usize {
        0
    }
    /// The epoch after whose checkpoint an attempt of `run` starting now is to pause (its
    /// next rung); `None`: it trains to its end.
    fn pause_after(&self, _run: usize) -> Option<usize> {
        None
    }
    /// Decides what can be decided now that no attempt of `held` runs (those queued are
    /// `pending`): returns the runs it pruned (recorded `pruned` by now), with the reason.
    fn settle(
        &mut self,
        _pending: &[usize],
        _held: &[usize],
    ) -> Result<Vec<(usize, String)>, StoreError> {
        Ok(Vec::new())
    }
}

/// Every run trains to its last epoch.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunToEnd;

impl Scheduler for RunToEnd {}

/// Passes events on and keeps the epoch ends for the scheduler.
struct EpochTap<'a> {
    inner: &'a mut dyn Reporter,
    ends: Vec<(usize, Option<f64>)>,
}

impl Reporter for EpochTap<'_> {
    fn report(&mut self, event: &LaunchEvent) {
        if let LaunchEvent::EpochDone {
            epoch,
            metric_value,
            ..
        } = event
        {
            self.ends.push((*epoch, *metric_value));
        }
        self.inner.report(event);
    }
}

/// The state of one launch.
struct Dispatcher<'a, E: Executor> {
    runs: &'a [PreparedRun],
    policy: &'a Policy,
    executor: &'a mut E,
    scheduler: &'a mut dyn Scheduler,
    reporter: &'a mut dyn Reporter,
    queue: Vec<usize>,
    /// Runs the executor holds, with their follower once their attempt is seen running.
    held: BTreeMap<usize, Option<RunFollower>>,
    /// Attempts ended in this launch, per run.
    tries: BTreeMap<usize, usize>,
    report: PoolReport,
    /// The grace deadline, once the attempts were asked to stop.
    stopping: Option<Instant>,
    gave_up: bool,
    /// An attempt ended since the scheduler last settled.
    unsettled: bool,
}

/// Runs `runs` (those that need running) through `executor` to completion, interruption or
/// fail-fast, reporting everything to `reporter`.
pub fn dispatch<E: Executor>(
    runs: &[PreparedRun],
    policy: &Policy,
    executor: &mut E,
    interrupts: &dyn Interrupts,
    scheduler: &mut dyn Scheduler,
    reporter: &mut dyn Reporter,
) -> Result<PoolReport, E::Error>
where
    E::Error: From<StoreError>,
{
    let started = Instant::now();
    let mut d = Dispatcher {
        runs,
        policy,
        executor,
        scheduler,
        reporter,
        queue: (0..runs.len())
            .filter(|&i| runs[i].needs_running())
            .collect(),
        held: BTreeMap::new(),
        tries: BTreeMap::new(),
        report: PoolReport::default(),
        stopping: None,
        gave_up: false,
        unsettled: true,
    };
    let mut fatal: Option<E::Error> = None;
    let mut seen_signals = 0;
    let mut events = Vec::new();
    let adopted = d.executor.adopt(&d.queue, &mut events)?;
    d.queue.retain(|q| !adopted.contains(q));
    for run in adopted {
        d.held.insert(run, None);
    }
    d.handle(&mut events);
    loop {
        // Signals first, so a Ctrl-C is never followed by a new start.
        let n = interrupts.count();
        if n > seen_signals {
            seen_signals = n;
            d.interrupted(n, &mut events);
        }
        if let Some(deadline) = d.stopping
            && Instant::now() >= deadline
            && !d.gave_up
        {
            d.gave_up = true;
            d.executor.give_up(false, &mut events);
        }
        if let Err(e) = d.executor.poll(&mut events) {
            fatal.get_or_insert(e);
        }
        d.handle(&mut events);
        if d.unsettled
            && d.stopping.is_none()
            && fatal.is_none()
            && let Err(e) = d.settle()
        {
            fatal = Some(e.into());
            d.stop_all();
        }

        while d.stopping.is_none() && fatal.is_none() {
            let free = d.executor.free_slots();
            let batch = d.take_ready(free);
            if batch.is_empty() {
                break;
            }
            for &run in &batch {
                d.held.insert(run, None);
            }
            // Written for every start, so a pause left by an earlier schedule never stops a
            // run that this launch trains to its end.
            let recorded = batch.iter().try_for_each(|&run| {
                let pause = d.scheduler.pause_after(run);
                crate::store::write_pause(
                    &d.runs[run].dir,
                    pause.map(|after_epoch| crate::store::PauseRecord { after_epoch }),
                )
            });
            let launched = match recorded {
                Ok(()) => d.executor.start(&batch, &mut events),
                Err(e) => Err(e.into()),
            };
            if let Err(e) = launched {
                for run in &batch {
                    d.held.remove(run);
                }
                d.queue.extend(batch);
                d.sort_queue();
                fatal = Some(e);
                d.stop_all();
            }
            d.handle(&mut events);
            if free.is_none() {
                break;
            }
        }

        if d.policy.detach {
            d.executor.detach(&mut events);
            d.handle(&mut events);
            d.report.detached = true;
            return match fatal {
                Some(e) => Err(e),
                None => Ok(d.report),
            };
        }
        d.follow();
        // A queued run that can never start (its rung waits for a run that will not come)
        // must not keep the launch waiting: it is counted as not started.
        let stuck = !d.unsettled && !d.queue.iter().any(|&q| d.startable(q));
        if d.held.is_empty()
            && (d.queue.is_empty() || d.stopping.is_some() || fatal.is_some() || stuck)
        {
            break;
        }
        let wait = d.executor.poll_interval();
        sleep_unless_interrupted(wait, interrupts, seen_signals);
    }

    d.report.not_started = d.queue.len();
    let r = &d.report;
    d.reporter.report(&LaunchEvent::GridFinished {
        done: r.done,
        failed: r.failed,
        diverged: r.diverged,
        cancelled: r.cancelled,
        pruned: r.pruned,
        not_started: r.not_started,
        seconds: started.elapsed().as_secs_f64(),
    });
    match fatal {
        Some(e) => Err(e),
        None => Ok(d.report),
    }
}

impl<E: Executor> Dispatcher<'_, E> {
    /// The `n`-th shutdown request: the first stops every attempt within the grace period,
    /// the second gives up waiting at once.
    fn interrupted(&mut self, n: usize, events: &mut Vec<ExecEvent>) {
        self.report.interrupted = true;
        self.reporter.report(&LaunchEvent::Interrupted {
            signals: n,
            grace_seconds: self.policy.grace.as_secs(),
        });
        self.stop_all();
        if n >= 2 && !self.gave_up {
            self.gave_up = true;
            self.executor.give_up(true, events);
        }
    }

    /// Asks every attempt to stop, once, and starts the grace period.
    fn stop_all(&mut self) {
        if self.stopping.is_none() {
            self.stopping = Some(Instant::now() + self.policy.grace);
            self.executor.terminate();
        }
    }

    fn sort_queue(&mut self) {
        let runs = self.runs;
        self.queue.sort_by_key(|&q| runs[q].plan.index);
    }

    /// Lets the scheduler decide what it can; the runs it pruned leave the queue.
    fn settle(&mut self) -> Result<(), StoreError> {
        self.unsettled = false;
        let held: Vec<usize> = self.held.keys().copied().collect();
        for (run, reason) in self.scheduler.settle(&self.queue, &held)? {
            self.queue.retain(|&q| q != run);
            self.report.pruned += 1;
            let r = &self.runs[run];
            let attempt = crate::store::read_status(&r.dir)?.map_or(0, |s| s.attempts);
            self.reporter.report(&LaunchEvent::RunFinished {
                run_id: r.plan.id.clone(),
                name: r.plan.name.clone(),
                attempt,
                state: RunState::Pruned,
                message: Some(reason),
                retry: false,
            });
        }
        Ok(())
    }

    /// Whether queued run `q` may start now, by the training-group rule and the scheduler.
    fn startable(&self, q: usize) -> bool {
        self.ready(q) && self.scheduler.may_start(q)
    }

    /// The next runs to start: one when the executor has a free slot (by the scheduler's
    /// priority, then queue order), every ready run when it takes batches.
    fn take_ready(&mut self, free: Option<usize>) -> Vec<usize> {
        if free == Some(0) {
            return Vec::new();
        }
        if free.is_some() {
            // The first of the highest priority: `max_by_key` would take the last.
            let best = (0..self.queue.len())
                .filter(|&i| self.startable(self.queue[i]))
                .min_by_key(|&i| (std::cmp::Reverse(self.scheduler.priority(self.queue[i])), i));
            return best.map(|i| vec![self.queue.remove(i)]).unwrap_or_default();
        }
        let mut batch = Vec::new();
        let mut i = 0;
        while i < self.queue.len() {
            if self.startable(self.queue[i]) {
                batch.push(self.queue.remove(i));
            } else {
                i += 1;
            }
        }
        batch
    }

    /// A run may start when no earlier run of the same training id is still pending: the
    /// first run of a training group trains, its siblings reuse its checkpoints.
    fn ready(&self, q: usize) -> bool {
        if !self.policy.training_groups_in_order {
            return true;
        }
        let me = &self.runs[q].plan;
        let blocks = |o: usize| {
            let p = &self.runs[o].plan;
            o != q && p.training_id == me.training_id && p.index < me.index
        };
        !self.queue.iter().any(|&o| blocks(o)) && !self.held.keys().any(|&o| blocks(o))
    }

    fn handle(&mut self, events: &mut Vec<ExecEvent>) {
        for ev in std::mem::take(events) {
            match ev {
                ExecEvent::Started {
                    run,
                    attempt,
                    pid,
                    job,
                    device,
                    resumed_from,
                } => {
                    let r = &self.runs[run];
                    self.reporter.report(&LaunchEvent::RunStarted {
                        run_id: r.plan.id.clone(),
                        name: r.plan.name.clone(),
                        attempt,
                        pid,
                        job,
                        device,
                        resumed_from,
                        epochs: r.epochs,
                    });
                    self.held
                        .insert(run, Some(RunFollower::new(r, attempt, resumed_from)));
                }
                ExecEvent::Exited {
                    run,
                    attempt,
                    state,
                    message,
                } => self.exited(run, attempt, state, message),
                ExecEvent::NotStarted { run } => {
                    self.held.remove(&run);
                    self.queue.push(run);
                    self.sort_queue();
                }
                ExecEvent::Note(e) => self.reporter.report(&e),
            }
        }
    }

    fn exited(&mut self, run: usize, attempt: u32, state: RunState, message: Option<String>) {
        let r = &self.runs[run];
        if let Some(Some(mut f)) = self.held.remove(&run) {
            // The last records and epochs of the attempt, before its verdict.
            f.poll(r, self.reporter);
        }
        self.unsettled = true;
        if state == RunState::Paused {
            // Waiting at a rung: back in the queue, where the scheduler holds it until the
            // rung is decided. Not an ended attempt of the grid's counts, nor a try.
            self.reporter.report(&LaunchEvent::RunFinished {
                run_id: r.plan.id.clone(),
                name: r.plan.name.clone(),
                attempt,
                state,
                message,
                retry: false,
            });
            self.queue.push(run);
            self.sort_queue();
            return;
        }
        let t = self.tries.entry(run).or_insert(0);
        *t += 1;
        let retry =
            state == RunState::Failed && self.stopping.is_none() && *t <= self.policy.retries;
        self.reporter.report(&LaunchEvent::RunFinished {
            run_id: r.plan.id.clone(),
            name: r.plan.name.clone(),
            attempt,
            state,
            message,
            retry,
        });
        if retry {
            self.queue.push(run);
            self.sort_queue();
            return;
        }
        match state {
            RunState::Done => self.report.done += 1,
            RunState::Diverged => self.report.diverged += 1,
            RunState::Failed => self.report.failed += 1,
            RunState::Pruned => self.report.pruned += 1,
            _ => self.report.cancelled += 1,
        }
        if self.policy.fail_fast
            && matches!(state, RunState::Failed | RunState::Diverged)
            && self.stopping.is_none()
        {
            self.reporter.report(&LaunchEvent::FailFast {
                run_id: r.plan.id.clone(),
            });
            self.stop_all();
        }
    }

    /// Reports what the running attempts wrote since the last round, and lets the
    /// scheduler decide at each epoch end.
    fn follow(&mut self) {
        let runs = self.runs;
        let mut stop = Vec::new();
        for (&run, f) in self.held.iter_mut() {
            let Some(f) = f else { continue };
            let mut tap = EpochTap {
                inner: &mut *self.reporter,
                ends: Vec::new(),
            };
            f.poll(&runs[run], &mut tap);
            for (epoch, metric) in tap.ends {
                if self.scheduler.epoch_end(&runs[run], epoch, metric) == Decision::Stop {
                    stop.push(run);
                }
            }
        }
        stop.dedup();
        for run in stop {
            self.executor.stop(run);
        }
    }
}

/// Sleeps `d`, waking early when a new shutdown request arrives.
fn sleep_unless_interrupted(d: Duration, interrupts: &dyn Interrupts, seen: usize) {
    let end = Instant::now() + d;
    loop {
        let now = Instant::now();
        if now >= end || interrupts.count() > seen {
            return;
        }
        std::thread::sleep(Duration::from_millis(50).min(end - now));
    }
}

#[cfg(test)]
mod tests;
