//! Pruning schedules carried out: [`Synchronous`] (successive halving and median stopping,
//! decided once every live training reported a rung) and [`Asha`] (asynchronous successive
//! halving, decided as runs report). Each is a [`Scheduler`] of the dispatcher: it pauses a
//! training at its next rung (`pause.json`), holds it there until its rung is decided, prunes
//! it or sends it on.
//!
//! Every decision is written to `runs/<experiment>/schedule.json` before it takes effect; a
//! later launch (after Ctrl-C or a SIGKILL) replays the record and decides only what it
//! lacks.
//!
//! A training group (decode-only variants sharing one training) is one training, ranked by
//! its first run, the one that trains; the others follow it: pruned with it, or decoding its
//! finished training. With replicates (`repeats > 1`) the schedule decides about
//! configurations: a configuration's trainings (one per replicate) pause at the same rungs,
//! enter a rung together once each has reported it, are ranked by the mean of their values
//! ([`pruning::Replicates::entry`]) and are pruned or sent on together. The records name a
//! configuration by its first replicate's grid index.

mod asha;
mod synchronous;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use self::asha::Asha;
pub use self::synchronous::Synchronous;
use super::dispatch::{RunToEnd, Scheduler};
use super::prepare::PreparedRun;
use super::pruning::{self, Entry, Promotion, Replicates, RungDecision};
use crate::spec::{ScheduleKind, ScheduleSpec, SelectMode, SelectSpec};
use crate::store::{self, PruneNote, RunState, RunStatus, StoreError};

/// `runs/<experiment>/schedule.json`: the schedule a grid runs under and its decisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    /// The spec's `[schedule]` the decisions were taken under.
    pub schedule: ScheduleSpec,
    /// Every rung decided so far, in rung order (successive halving, median stopping); runs
    /// are named by their grid index.
    pub decisions: Vec<RungDecision>,
    /// ASHA's decisions about single runs, in the order they were taken.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promotions: Vec<Promotion>,
}

impl ScheduleRecord {
    /// A record of `schedule` with nothing decided yet.
    fn empty(schedule: ScheduleSpec) -> Self {
        ScheduleRecord {
            schedule,
            decisions: Vec::new(),
            promotions: Vec::new(),
        }
    }
}

/// Why a schedule could not go on with an experiment's record.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The record was written under another schedule: replaying it would mix two.
    #[error(
        "{path}: decisions of schedule {recorded}, but the spec's [schedule] is {spec}; \
         restore that schedule, or delete {path} to decide every rung again"
    )]
    Mismatch {
        path: PathBuf,
        recorded: String,
        spec: String,
    },
    /// The record's decisions were taken with another number of replicates per
    /// configuration: the grid indices they name are other runs now.
    #[error("{}", repeats_changed(path, *recorded, *repeats))]
    RepeatsChanged {
        path: PathBuf,
        recorded: u32,
        repeats: u32,
    },
}

/// The message of [`ScheduleError::RepeatsChanged`].
fn repeats_changed(path: &Path, recorded: u32, repeats: u32) -> String {
    let path = path.display();
    if recorded == 1 {
        format!(
            "{path}: decisions that ranked runs one by one (of a grid without replicates, or \
             of an earlier version), but with repeats = {repeats} a schedule ranks \
             configurations by their replicates' mean; delete {path} to decide every rung again"
        )
    } else {
        format!(
            "{path}: decisions over {recorded} replicates per configuration, but with repeats = \
             {repeats} the grid indices they name are other runs; restore repeats = \
             {recorded}, or delete {path} to decide every rung again"
        )
    }
}

/// How many replicates per configuration the record's decisions averaged (1: they ranked
/// runs one by one); `None` before anything was compared.
fn recorded_repeats(record: &ScheduleRecord) -> Option<u32> {
    let decisions = record
        .decisions
        .iter()
        .map(|d| (&d.compared, &d.replicates));
    let promotions = record
        .promotions
        .iter()
        .map(|p| (&p.compared, &p.replicates));
    let (_, replicates) = decisions
        .chain(promotions)
        .find(|(compared, _)| !compared.is_empty())?;
    Some(replicates.first().map_or(1, |r| r.values.len() as u32))
}

/// The experiment's schedule record, checked against the spec's schedule and its `repeats`;
/// `None` when the experiment has none yet. Called before anything is written, so a
/// mismatch writes nothing.
pub fn check_record(
    exp_dir: &Path,
    schedule: &ScheduleSpec,
    repeats: u32,
) -> Result<Option<ScheduleRecord>, ScheduleError> {
    let Some(record) = store::read_schedule::<ScheduleRecord>(exp_dir)? else {
        return Ok(None);
    };
    if record.schedule != *schedule {
        let show = |s: &ScheduleSpec| serde_json::to_string(s).unwrap_or_default();
        return Err(ScheduleError::Mismatch {
            path: store::schedule_path(exp_dir),
            recorded: show(&record.schedule),
            spec: show(schedule),
        });
    }
    // Every decision over a grid with replicates records their values (`replicates`).
    if let Some(recorded) = recorded_repeats(&record)
        && recorded != repeats
    {
        return Err(ScheduleError::RepeatsChanged {
            path: store::schedule_path(exp_dir),
            recorded,
            repeats,
        });
    }
    Ok(Some(record))
}

/// The scheduler for `schedule` ([`RunToEnd`] when its kind trains every run to its end);
/// `promoted` runs (indices into `runs`, `--promote`) train to their end and are never
/// pruned again.
pub fn scheduler_for(
    runs: &[PreparedRun],
    exp_dir: &Path,
    schedule: &ScheduleSpec,
    select: &SelectSpec,
    record: Option<ScheduleRecord>,
    promoted: Vec<usize>,
) -> Box<dyn Scheduler> {
    let trainings = Trainings::new(runs, exp_dir, &select.metric, select.mode, promoted);
    match schedule.kind {
        ScheduleKind::SuccessiveHalving | ScheduleKind::Median => {
            Box::new(Synchronous::new(trainings, *schedule, record))
        }
        ScheduleKind::Asha => Box::new(Asha::new(trainings, *schedule, record)),
        ScheduleKind::None => Box::new(RunToEnd),
    }
}

/// The runs a schedule decides about, by training group, and what every schedule reads and
/// writes of them.
pub struct Trainings {
    runs: Vec<PreparedRun>,
    exp_dir: PathBuf,
    metric: String,
    mode: SelectMode,
    /// For each run, the index (into `runs`) of its training group's first run.
    leader: Vec<usize>,
    /// For each run, the index (into `runs`) of the first training of its configuration:
    /// the schedule's unit, which its records name. A training is its own unit without
    /// replicates.
    unit: Vec<usize>,
    /// Whether the grid has replicates: decisions then record each replicate's value.
    replicated: bool,
    /// Pruned runs `--promote` continues: they train to their end and are never pruned again.
    promoted: Vec<usize>,
}

impl Trainings {
    /// `runs` (every run of the grid, in grid order) of the experiment in `exp_dir`, ranked
    /// by `metric` in `mode`.
    pub fn new(
        runs: &[PreparedRun],
        exp_dir: &Path,
        metric: &str,
        mode: SelectMode,
        promoted: Vec<usize>,
    ) -> Self {
        let first_of = |same: &dyn Fn(usize, usize) -> bool, i: usize| {
            (0..runs.len())
                .filter(|&j| same(i, j))
                .min_by_key(|&j| runs[j].plan.index)
                .unwrap_or(i)
        };
        let same_training =
            |i: usize, j: usize| runs[i].plan.training_id == runs[j].plan.training_id;
        let leader: Vec<usize> = (0..runs.len())
            .map(|i| first_of(&same_training, i))
            .collect();
        let configuration = |i: usize| runs[i].plan.replicate.as_ref().map(|r| &r.configuration);
        // Leaders of one configuration; a leader without replicates is alone in its unit.
        let same_unit = |i: usize, j: usize| {
            leader[j] == j
                && (i == j || configuration(i).is_some() && configuration(i) == configuration(j))
        };
        let unit = (0..runs.len())
            .map(|i| first_of(&same_unit, leader[i]))
            .collect();
        Trainings {
            runs: runs.to_vec(),
            exp_dir: exp_dir.to_path_buf(),
            metric: metric.to_string(),
            mode,
            leader,
            unit,
            replicated: runs.iter().any(|r| r.plan.replicate.is_some()),
            promoted,
        }
    }

    /// The most epochs a run trains: what a `max_epochs` of 0 stands for.
    fn train_epochs(&self) -> usize {
        self.runs.iter().map(|r| r.epochs).max().unwrap_or(0)
    }

    /// Whether the schedule leaves `run` alone: it follows its training group's first run,
    /// or `--promote` sends it to its end.
    fn unscheduled(&self, run: usize) -> bool {
        self.leader[run] != run || self.promoted.contains(&run)
    }

    /// The runs that train for their group, in grid order.
    fn leaders(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.runs.len()).filter(|&r| self.leader[r] == r)
    }

    /// The units the schedule decides about (each one's first training), in grid order.
    fn units(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.runs.len()).filter(|&r| self.unit[r] == r)
    }

    /// The trainings of unit `unit` (its replicates' leaders), in grid order.
    fn members(&self, unit: usize) -> impl Iterator<Item = usize> + '_ {
        self.leaders().filter(move |&r| self.unit[r] == unit)
    }

    /// The entries of `units` at `epoch` (a configuration's: the mean of its replicates'
    /// values) and, when the grid has replicates, the values each mean came from.
    fn rung_values(
        &self,
        units: &[usize],
        epoch: usize,
    ) -> Result<(Vec<Entry>, Vec<Replicates>), StoreError> {
        let mut configurations = Vec::new();
        for &u in units {
            let mut values = Vec::new();
            for r in self.members(u) {
                values.push((self.grid_index(r), self.value_at(r, epoch)?));
            }
            configurations.push(Replicates {
                configuration: self.grid_index(u),
                values,
            });
        }
        let entries = pruning::configuration_entries(&configurations);
        if !self.replicated {
            configurations.clear();
        }
        Ok((entries, configurations))
    }

    /// How many replicates the value of the unit named `grid_index` averages: what a prune
    /// note says; `None` without replicates.
    fn replicates_of(&self, grid_index: usize) -> Option<usize> {
        let unit = self.units().find(|&u| self.grid_index(u) == grid_index)?;
        self.replicated.then(|| self.members(unit).count())
    }

    /// The grid index the schedule's records name run `run` (an index into the runs) by.
    fn grid_index(&self, run: usize) -> usize {
        self.runs[run].plan.index
    }

    /// Whether `run` may start towards `rung` (its next pause): it has not reached it yet.
    /// No rung left: it trains to its end.
    fn short_of(&self, run: usize, rung: Option<usize>) -> bool {
        rung.is_none_or(|epoch| {
            self.status(run)
                .ok()
                .flatten()
                .is_none_or(|s| s.epoch < epoch)
        })
    }

    fn status(&self, run: usize) -> Result<Option<RunStatus>, StoreError> {
        store::read_status(&self.runs[run].dir)
    }

    /// Whether leader `run` has reported rung `epoch`: it stands at or past it, or it ended
    /// for good (done, diverged, pruned, or failed in this launch) and so will not reach it.
    fn reported(&self, run: usize, epoch: usize, pending: bool) -> Result<bool, StoreError> {
        Ok(self
            .status(run)?
            .is_some_and(|s| s.state.is_final() || s.epoch >= epoch && s.state.is_verdict())
            || self.ended(run, pending)?)
    }

    /// Whether `run` will not train further in this launch: it is done, diverged or pruned,
    /// or it failed and is not queued for another attempt.
    fn ended(&self, run: usize, pending: bool) -> Result<bool, StoreError> {
        Ok(self
            .status(run)?
            .is_some_and(|s| s.state.is_final() || (s.state == RunState::Failed && !pending)))
    }

    /// Leader `run`'s `select.metric` at `epoch`; NaN when it recorded none there.
    fn value_at(&self, run: usize, epoch: usize) -> Result<f64, StoreError> {
        Ok(store::metrics::value_at(&self.runs[run].dir, &self.metric, epoch)?.unwrap_or(f64::NAN))
    }

    /// Prunes every not-yet-final run of the unit (a training group, or every training group
    /// of a configuration) whose first run has grid index `grid_index`, for `note`; returns
    /// them with the reason.
    fn prune_group(
        &self,
        grid_index: usize,
        note: &PruneNote,
    ) -> Result<Vec<(usize, String)>, StoreError> {
        let mut out = Vec::new();
        for run in 0..self.runs.len() {
            if self.promoted.contains(&run) || self.grid_index(self.unit[run]) != grid_index {
                continue;
            }
            let Some(status) = self.status(run)? else {
                continue;
            };
            // A finished run stays as it finished; a pruned one is pruned already.
            if status.state.is_final() {
                continue;
            }
            let reason = note.reason();
            // The log first: a kill before the status is written replays this decision,
            // and the log's end record is then found and not written twice.
            let log = self.runs[run].dir.tensorboard(&self.runs[run].plan)?;
            crate::sinks::tensorboard::end_pruned_session(
                &log,
                note.epoch,
                &format!("pruned {reason}"),
            )
            .map_err(|e| e.into_store(&log))?;
            store::write_status(
                &self.runs[run].dir,
                &RunStatus {
                    state: RunState::Pruned,
                    message: Some(reason.clone()),
                    pid: None,
                    pruned: Some(note.clone()),
                    ..status
                },
            )?;
            out.push((run, reason));
        }
        Ok(out)
    }

    /// Writes `record` before its newest decisions take effect: a kill in between replays
    /// them.
    fn record(&self, record: &ScheduleRecord) -> Result<(), StoreError> {
        store::write_schedule(&self.exp_dir, record)
    }
}

#[cfg(test)]
mod tests;
