//! The dispatcher's decisions against a scripted executor: no processes, no cluster.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

use super::*;
use crate::store::{self, PlanRecord, RunDir, RunStatus};

// The scripted executor's errors are plain text; a scheduler's store error becomes one.
impl From<StoreError> for String {
    fn from(e: StoreError) -> String {
        e.to_string()
    }
}

/// Each run's attempts end as its script says, one poll after they start; a run in `hold`
/// ends only when stopped, and `stubborn` ones not even then (until given up on).
#[derive(Default)]
struct Fake {
    slots: Option<usize>,
    script: BTreeMap<usize, VecDeque<RunState>>,
    hold: BTreeSet<usize>,
    stubborn: bool,
    running: BTreeMap<usize, u32>,
    attempts: BTreeMap<usize, u32>,
    stopped_runs: BTreeSet<usize>,
    /// Every `start` call's runs.
    starts: Vec<Vec<usize>>,
    terminations: usize,
    give_ups: Vec<bool>,
    /// Shutdown requests to raise at the given poll (1-based).
    interrupt_at: Option<(usize, usize)>,
    interrupts: Rc<Cell<usize>>,
    polls: usize,
    /// Epoch ends to write into the run directories at the first poll after a start.
    epochs: BTreeMap<usize, (RunDir, usize)>,
}

impl Fake {
    fn new(slots: Option<usize>, script: &[&[RunState]]) -> Fake {
        Fake {
            slots,
            script: script
                .iter()
                .enumerate()
                .map(|(i, s)| (i, s.iter().copied().collect()))
                .collect(),
            ..Fake::default()
        }
    }

    fn exit(&mut self, run: usize, state: RunState, out: &mut Vec<ExecEvent>) {
        let attempt = self.running.remove(&run).unwrap();
        out.push(ExecEvent::Exited {
            run,
            attempt,
            state,
            message: None,
        });
    }
}

impl Executor for Fake {
    type Error = String;

    fn free_slots(&self) -> Option<usize> {
        self.slots.map(|n| n - self.running.len())
    }

    fn start(&mut self, runs: &[usize], out: &mut Vec<ExecEvent>) -> Result<(), String> {
        self.starts.push(runs.to_vec());
        for &run in runs {
            let attempt = self.attempts.entry(run).or_insert(0);
            *attempt += 1;
            self.running.insert(run, *attempt);
            out.push(ExecEvent::Started {
                run,
                attempt: *attempt,
                pid: None,
                job: None,
                device: "cpu".into(),
                resumed_from: 0,
            });
        }
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<ExecEvent>) -> Result<(), String> {
        self.polls += 1;
        if let Some((at, n)) = self.interrupt_at
            && at == self.polls
        {
            self.interrupts.set(n);
        }
        for (&run, (dir, epoch)) in &self.epochs {
            if self.running.contains_key(&run) {
                let line =
                    format!("{{\"epoch\":{epoch},\"step\":1,\"tag\":\"m\",\"value\":0.5}}\n");
                std::fs::write(dir.metrics(), line).unwrap();
                let s = RunStatus {
                    state: RunState::Running,
                    attempts: self.running[&run],
                    epoch: *epoch,
                    message: None,
                    pid: None,
                    pruned: None,
                };
                store::write_status(dir, &s).unwrap();
            }
        }
        let ending: Vec<usize> = self
            .running
            .keys()
            .copied()
            .filter(|r| !self.hold.contains(r) || self.stopped_runs.contains(r))
            .collect();
        for run in ending {
            let state = if self.stopped_runs.contains(&run) {
                RunState::Cancelled
            } else {
                self.script.get_mut(&run).unwrap().pop_front().unwrap()
            };
            self.exit(run, state, out);
        }
        Ok(())
    }

    fn stop(&mut self, run: usize) {
        if !self.stubborn {
            self.stopped_runs.insert(run);
        }
    }

    fn terminate(&mut self) {
        self.terminations += 1;
        if !self.stubborn {
            self.stopped_runs.extend(self.running.keys().copied());
        }
    }

    fn give_up(&mut self, kill: bool, out: &mut Vec<ExecEvent>) {
        self.give_ups.push(kill);
        for run in self.running.keys().copied().collect::<Vec<_>>() {
            self.exit(run, RunState::Cancelled, out);
        }
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(1)
    }
}

struct Count(Rc<Cell<usize>>);

impl Interrupts for Count {
    fn count(&self) -> usize {
        self.0.get()
    }
}

#[derive(Default)]
struct Events(Vec<LaunchEvent>);

impl Reporter for Events {
    fn report(&mut self, event: &LaunchEvent) {
        self.0.push(event.clone());
    }
}

impl Events {
    /// `(run id, attempt, state, retry)` of every RunFinished, in order.
    fn finished(&self) -> Vec<(String, u32, RunState, bool)> {
        self.0
            .iter()
            .filter_map(|e| match e {
                LaunchEvent::RunFinished {
                    run_id,
                    attempt,
                    state,
                    retry,
                    ..
                } => Some((run_id.clone(), *attempt, *state, *retry)),
                _ => None,
            })
            .collect()
    }

    fn has(&self, f: impl Fn(&LaunchEvent) -> bool) -> bool {
        self.0.iter().any(f)
    }
}

fn runs(dir: &std::path::Path, n: usize) -> Vec<PreparedRun> {
    (0..n)
        .map(|i| PreparedRun {
            plan: PlanRecord {
                index: i,
                id: format!("run{i}"),
                training_id: format!("train{i}"),
                name: format!("r{i}"),
                varied: Default::default(),
                data: Default::default(),
                numerics: 0,
                replicate: None,
                tensorboard: String::new(),
            },
            dir: RunDir::at(dir.join(format!("run{i}"))),
            epochs: 2,
            metric: "m".into(),
            state: RunState::Queued,
        })
        .collect()
}

fn policy(retries: usize, fail_fast: bool) -> Policy {
    Policy {
        retries,
        fail_fast,
        grace: Duration::from_secs(60),
        training_groups_in_order: true,
        detach: false,
    }
}

fn go(
    runs: &[PreparedRun],
    policy: &Policy,
    fake: &mut Fake,
) -> (Result<PoolReport, String>, Events) {
    go_under(runs, policy, fake, &mut RunToEnd)
}

/// [`go`] under `scheduler`.
fn go_under(
    runs: &[PreparedRun],
    policy: &Policy,
    fake: &mut Fake,
    scheduler: &mut dyn Scheduler,
) -> (Result<PoolReport, String>, Events) {
    let interrupts = Count(Rc::clone(&fake.interrupts));
    let mut events = Events::default();
    let r = dispatch(runs, policy, fake, &interrupts, scheduler, &mut events);
    (r, events)
}

use RunState::{Cancelled, Diverged, Done, Failed};

#[test]
fn a_crashed_attempt_is_retried_up_to_retries_then_counted_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = runs(tmp.path(), 3);
    let mut fake = Fake::new(
        Some(2),
        &[&[Failed, Failed, Done], &[Failed, Done], &[Diverged]],
    );
    let (report, events) = go(&runs, &policy(1, false), &mut fake);
    let report = report.unwrap();
    assert_eq!(
        (
            report.done,
            report.failed,
            report.diverged,
            report.not_started
        ),
        (1, 1, 1, 0)
    );
    assert_eq!(fake.attempts, BTreeMap::from([(0, 2), (1, 2), (2, 1)]));
    let mut finished = events.finished();
    finished.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    assert_eq!(
        finished,
        vec![
            ("run0".into(), 1, Failed, true),
            ("run0".into(), 2, Failed, false),
            ("run1".into(), 1, Failed, true),
            ("run1".into(), 2, Done, false),
            // A diverged run is a verdict, not a crash: never retried.
            ("run2".into(), 1, Diverged, false),
        ]
    );
    assert!(events.has(|e| matches!(
        e,
        LaunchEvent::GridFinished {
            done: 1,
            failed: 1,
            ..
        }
    )));
    // One slot-limited start at a time, never more running than the slots.
    assert!(fake.starts.iter().all(|s| s.len() == 1));
}

#[test]
fn fail_fast_stops_starting_and_terminates_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = runs(tmp.path(), 3);
    let mut fake = Fake::new(Some(2), &[&[Failed], &[Done], &[Done]]);
    fake.hold.insert(1);
    let (report, events) = go(&runs, &policy(0, true), &mut fake);
    let report = report.unwrap();
    assert_eq!(fake.starts, vec![vec![0], vec![1]]);
    assert_eq!(fake.terminations, 1);
    assert_eq!(
        (report.failed, report.cancelled, report.not_started),
        (1, 1, 1)
    );
    assert!(events.has(|e| matches!(e, LaunchEvent::FailFast { run_id } if run_id == "run0")));
    assert!(
        fake.give_ups.is_empty(),
        "the held run stopped within the grace"
    );
}

#[test]
fn one_interrupt_terminates_with_grace_and_starts_nothing_more() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = runs(tmp.path(), 3);
    let mut fake = Fake::new(Some(2), &[&[Done], &[Done], &[Done]]);
    fake.hold.extend([0, 1]);
    fake.interrupt_at = Some((2, 1));
    let (report, events) = go(&runs, &policy(2, false), &mut fake);
    let report = report.unwrap();
    assert!(report.interrupted);
    assert_eq!(fake.starts, vec![vec![0], vec![1]]);
    assert_eq!(fake.terminations, 1);
    assert!(fake.give_ups.is_empty());
    assert_eq!((report.cancelled, report.not_started), (2, 1));
    assert!(events.has(|e| matches!(
        e,
        LaunchEvent::Interrupted {
            signals: 1,
            grace_seconds: 60
        }
    )));
    // Stopped attempts are not retried, whatever the retries.
    assert!(events.finished().iter().all(|f| f.2 == Cancelled && !f.3));
}

#[test]
fn workers_that_outlive_the_grace_or_a_second_interrupt_are_given_up_on() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = runs(tmp.path(), 2);
    // The grace runs out: given up on without insisting.
    let mut fake = Fake::new(Some(2), &[&[Done], &[Done]]);
    fake.hold.extend([0, 1]);
    fake.stubborn = true;
    fake.interrupt_at = Some((2, 1));
    let short = Policy {
        grace: Duration::ZERO,
        ..policy(0, false)
    };
    let (report, _) = go(&runs, &short, &mut fake);
    assert_eq!(fake.give_ups, vec![false]);
    assert_eq!(report.unwrap().cancelled, 2);
    // A second request within the grace: given up on at once, insisting.
    let mut fake = Fake::new(Some(2), &[&[Done], &[Done]]);
    fake.hold.extend([0, 1]);
    fake.stubborn = true;
    fake.interrupt_at = Some((2, 2));
    let (report, events) = go(&runs, &policy(0, false), &mut fake);
    assert_eq!((fake.terminations, fake.give_ups.clone()), (1, vec![true]));
    assert!(report.unwrap().interrupted);
    assert!(events.has(|e| matches!(e, LaunchEvent::Interrupted { signals: 2, .. })));
}

#[test]
fn a_batch_executor_gets_every_ready_run_at_once_and_retries_as_a_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = runs(tmp.path(), 3);
    let mut fake = Fake::new(None, &[&[Done], &[Failed, Done], &[Failed, Failed]]);
    let (report, _) = go(&runs, &policy(1, false), &mut fake);
    assert_eq!(fake.starts, vec![vec![0, 1, 2], vec![1, 2]]);
    let report = report.unwrap();
    assert_eq!((report.done, report.failed), (2, 1));
}

#[test]
fn a_run_waits_for_the_earlier_run_of_its_training_group() {
    let tmp = tempfile::tempdir().unwrap();
    let mut grid = runs(tmp.path(), 3);
    grid[1].plan.training_id = grid[0].plan.training_id.clone();
    let mut fake = Fake::new(Some(3), &[&[Done], &[Done], &[Done]]);
    let (report, _) = go(&grid, &policy(0, false), &mut fake);
    assert_eq!(fake.starts, vec![vec![0], vec![2], vec![1]]);
    assert_eq!(report.unwrap().done, 3);
    // Finished runs are not started at all.
    grid[0].state = Done;
    let mut fake = Fake::new(Some(3), &[&[], &[Done], &[Done]]);
    let (report, _) = go(&grid, &policy(0, false), &mut fake);
    assert_eq!(fake.starts, vec![vec![1], vec![2]]);
    assert_eq!(report.unwrap().done, 2);
}

/// Stops every run at its first epoch end and remembers what it was asked.
struct StopAtFirstEpoch(Vec<(String, usize, Option<f64>)>);

impl Scheduler for StopAtFirstEpoch {
    fn epoch_end(&mut self, run: &PreparedRun, epoch: usize, metric: Option<f64>) -> Decision {
        self.0.push((run.plan.id.clone(), epoch, metric));
        Decision::Stop
    }
}

#[test]
fn the_scheduler_decides_at_each_epoch_end_a_run_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let grid = runs(tmp.path(), 1);
    std::fs::create_dir_all(grid[0].dir.root()).unwrap();
    let mut fake = Fake::new(Some(1), &[&[Done]]);
    fake.hold.insert(0);
    fake.epochs.insert(0, (grid[0].dir.clone(), 1));
    let interrupts = Count(Rc::clone(&fake.interrupts));
    let mut events = Events::default();
    let mut scheduler = StopAtFirstEpoch(Vec::new());
    let report = dispatch(
        &grid,
        &policy(0, false),
        &mut fake,
        &interrupts,
        &mut scheduler,
        &mut events,
    )
    .unwrap();
    assert_eq!(scheduler.0, vec![("run0".to_string(), 1, Some(0.5))]);
    assert_eq!(fake.stopped_runs, BTreeSet::from([0]));
    assert_eq!(report.cancelled, 1);
    assert!(events.has(|e| matches!(e, LaunchEvent::EpochDone { epoch: 1, .. })));
    // Today's scheduler lets it train on.
    assert_eq!(RunToEnd.epoch_end(&grid[0], 1, None), Decision::Continue);
}

#[test]
fn a_pause_left_by_an_earlier_schedule_never_stops_a_run_trained_to_its_end() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = runs(tmp.path(), 1);
    std::fs::create_dir_all(runs[0].dir.root()).unwrap();
    store::write_pause(&runs[0].dir, Some(store::PauseRecord { after_epoch: 1 })).unwrap();
    let mut fake = Fake::new(Some(1), &[&[Done]]);
    let (report, _) = go(&runs, &policy(0, false), &mut fake);
    assert_eq!(report.unwrap().done, 1);
    assert_eq!(store::read_pause(&runs[0].dir).unwrap(), None);
}

/// Ranks the second half of the grid above the first.
struct SecondHalfFirst(usize);

impl Scheduler for SecondHalfFirst {
    fn priority(&self, run: usize) -> usize {
        usize::from(run >= self.0 / 2)
    }
}

#[test]
fn a_free_slot_goes_to_the_highest_priority_then_to_grid_order() {
    let tmp = tempfile::tempdir().unwrap();
    let grid = runs(tmp.path(), 4);
    let script: &[&[RunState]] = &[&[Done], &[Done], &[Done], &[Done]];
    let mut fake = Fake::new(Some(1), script);
    let (report, _) = go_under(&grid, &policy(0, false), &mut fake, &mut SecondHalfFirst(4));
    assert_eq!(fake.starts, vec![vec![2], vec![3], vec![0], vec![1]]);
    assert_eq!(report.unwrap().done, 4);
    // A batch executor still gets every ready run at once, in grid order.
    let mut fake = Fake::new(None, script);
    go_under(&grid, &policy(0, false), &mut fake, &mut SecondHalfFirst(4))
        .0
        .unwrap();
    assert_eq!(fake.starts, vec![vec![0, 1, 2, 3]]);
}
