//! Synchronous successive halving carried out: the [`Scheduler`] that pauses every live
//! training at its next rung, decides the rung with [`pruning::halving_rung`] once all of
//! them have reported it, prunes the others and sends the survivors on.
//!
//! Deterministic by construction: a rung is decided only when every live training has
//! reached it, on the values the runs recorded in `metrics.jsonl` (never on finish order),
//! and each decision is written to `runs/<experiment>/schedule.json` before any run is
//! pruned or resumed for it. A later launch (after Ctrl-C or a SIGKILL) replays the record
//! and decides only the rungs it lacks, so `--jobs`, the backend and interruptions never
//! change which runs survive.
//!
//! A training group (decode-only variants sharing one training) is one unit, ranked by its
//! first run, the one that trains; the others follow it: pruned with it, or decoding its
//! finished training.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::dispatch::{Decision, Scheduler};
use super::prepare::PreparedRun;
use super::pruning::{self, RungDecision};
use crate::spec::{ScheduleKind, ScheduleSpec, SelectMode};
use crate::store::{self, PruneNote, RunState, RunStatus, StoreError};

/// `runs/<experiment>/schedule.json`: the schedule a grid runs under and its decisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    /// The spec's `[schedule]` the decisions were taken under.
    pub schedule: ScheduleSpec,
    /// Every rung decided so far, in rung order; runs are named by their grid index.
    pub decisions: Vec<RungDecision>,
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
}

/// The experiment's schedule record, checked against the spec's schedule; `None` when the
/// experiment has none yet. Called before anything is written, so a mismatch writes nothing.
pub fn check_record(
    exp_dir: &Path,
    schedule: &ScheduleSpec,
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
    Ok(Some(record))
}

/// Synchronous successive halving over the dispatcher's runs.
pub struct Halving {
    runs: Vec<PreparedRun>,
    exp_dir: PathBuf,
    metric: String,
    mode: SelectMode,
    rungs: Vec<usize>,
    record: ScheduleRecord,
    /// For each run, the index (into `runs`) of its training group's first run.
    leader: Vec<usize>,
    /// Pruned runs `--promote` continues: they train to their end and are never pruned again.
    promoted: Vec<usize>,
}

impl Halving {
    /// The scheduler of `schedule` for `runs` (every run of the grid, in grid order), taking
    /// over the decisions `record` holds.
    pub fn new(
        runs: &[PreparedRun],
        exp_dir: &Path,
        schedule: ScheduleSpec,
        metric: &str,
        mode: SelectMode,
        record: Option<ScheduleRecord>,
    ) -> Self {
        let train_epochs = runs.iter().map(|r| r.epochs).max().unwrap_or(0);
        let rungs = pruning::rung_epochs(
            schedule.min_epochs,
            schedule.reduction_factor,
            schedule.max_epochs_for(train_epochs),
        );
        let leader = (0..runs.len())
            .map(|i| {
                (0..runs.len())
                    .filter(|&j| runs[j].plan.training_id == runs[i].plan.training_id)
                    .min_by_key(|&j| runs[j].plan.index)
                    .unwrap_or(i)
            })
            .collect();
        Halving {
            runs: runs.to_vec(),
            exp_dir: exp_dir.to_path_buf(),
            metric: metric.to_string(),
            mode,
            rungs,
            record: record.unwrap_or(ScheduleRecord {
                schedule,
                decisions: Vec::new(),
            }),
            leader,
            promoted: Vec::new(),
        }
    }

    /// The same scheduler, with `promoted` runs (indices into the runs) trained to their end.
    pub fn with_promoted(mut self, promoted: Vec<usize>) -> Self {
        self.promoted = promoted;
        self
    }

    /// The epoch the next undecided rung lies at; `None` once every rung is decided.
    fn next_rung(&self) -> Option<usize> {
        self.rungs.get(self.record.decisions.len()).copied()
    }

    fn is_leader(&self, run: usize) -> bool {
        self.leader[run] == run
    }

    /// The leaders still in the schedule: every one before the first rung, then the last
    /// decided rung's kept runs.
    fn live(&self) -> Vec<usize> {
        let leaders = (0..self.runs.len()).filter(|&r| self.is_leader(r));
        match self.record.decisions.last() {
            None => leaders.collect(),
            Some(d) => leaders
                .filter(|&r| d.kept.contains(&self.runs[r].plan.index))
                .collect(),
        }
    }

    fn status(&self, run: usize) -> Result<Option<RunStatus>, StoreError> {
        store::read_status(&self.runs[run].dir)
    }

    /// Whether leader `run` has reported rung `epoch`: it stands at or past it, or it ended
    /// for good (done, diverged, pruned, or failed in this launch) and so will not reach it.
    fn reported(&self, run: usize, epoch: usize, pending: bool) -> Result<bool, StoreError> {
        let Some(s) = self.status(run)? else {
            return Ok(false);
        };
        Ok(s.state.is_final()
            || (s.state.is_verdict() && s.epoch >= epoch)
            || (s.state == RunState::Failed && !pending))
    }

    /// Prunes every not-yet-final run of the training groups `pruned` names at `decision`;
    /// returns them with the reason.
    fn apply(
        &self,
        rung: usize,
        decision: &RungDecision,
    ) -> Result<Vec<(usize, String)>, StoreError> {
        let kept_values: Vec<f64> = decision
            .compared
            .iter()
            .filter(|e| decision.kept.contains(&e.0))
            .map(|e| e.1)
            .collect();
        // The worst value that was kept: what a pruned run had to beat.
        let cut = pruning::ranked(
            self.mode,
            &kept_values.iter().map(|&v| (0, v)).collect::<Vec<_>>(),
        )
        .last()
        .map(|e| e.1);
        let mut out = Vec::new();
        for run in 0..self.runs.len() {
            if self.promoted.contains(&run) {
                continue;
            }
            let grid_index = self.runs[self.leader[run]].plan.index;
            if !decision.pruned.contains(&grid_index) {
                continue;
            }
            let Some(status) = self.status(run)? else {
                continue;
            };
            // A finished run stays as it finished; a pruned one is pruned already.
            if status.state.is_final() {
                continue;
            }
            let value = decision
                .compared
                .iter()
                .find(|e| e.0 == grid_index)
                .map(|e| e.1)
                .filter(|v| v.is_finite());
            let note = PruneNote {
                kind: "successive_halving".into(),
                rung: rung + 1,
                epoch: decision.epoch,
                compared: decision.compared.len(),
                kept: decision.kept.len(),
                metric: self.metric.clone(),
                value,
                cut,
            };
            let reason = note.reason();
            store::write_status(
                &self.runs[run].dir,
                &RunStatus {
                    state: RunState::Pruned,
                    message: Some(reason.clone()),
                    pid: None,
                    pruned: Some(note),
                    ..status
                },
            )?;
            out.push((run, reason));
        }
        Ok(out)
    }
}

impl Scheduler for Halving {
    fn epoch_end(&mut self, _: &PreparedRun, _: usize, _: Option<f64>) -> Decision {
        Decision::Continue
    }

    fn may_start(&self, run: usize) -> bool {
        if !self.is_leader(run) || self.promoted.contains(&run) {
            // Follows its training: the dispatcher starts it once that one is no longer
            // pending, and a pruned training prunes it first.
            return true;
        }
        match self.next_rung() {
            None => true,
            Some(epoch) => self
                .status(run)
                .ok()
                .flatten()
                .is_none_or(|s| s.epoch < epoch),
        }
    }

    fn pause_after(&self, run: usize) -> Option<usize> {
        if !self.is_leader(run) || self.promoted.contains(&run) {
            return None;
        }
        self.next_rung()
    }

    fn settle(
        &mut self,
        pending: &[usize],
        held: &[usize],
    ) -> Result<Vec<(usize, String)>, StoreError> {
        let mut pruned = Vec::new();
        // Replay: decisions recorded by an earlier launch prune what they pruned.
        for (rung, d) in self.record.decisions.iter().enumerate() {
            pruned.extend(self.apply(rung, d)?);
        }
        while let Some(epoch) = self.next_rung() {
            let live = self.live();
            let mut entries = Vec::new();
            for &run in &live {
                if held.contains(&run) || !self.reported(run, epoch, pending.contains(&run))? {
                    return Ok(pruned);
                }
                let value = store::metrics::value_at(&self.runs[run].dir, &self.metric, epoch)?;
                entries.push((self.runs[run].plan.index, value.unwrap_or(f64::NAN)));
            }
            let eta = self.record.schedule.reduction_factor;
            let decision = pruning::halving_rung(self.mode, eta, epoch, &entries);
            let rung = self.record.decisions.len();
            // Recorded before it takes effect: a kill in between replays it.
            self.record.decisions.push(decision.clone());
            store::write_schedule(&self.exp_dir, &self.record)?;
            pruned.extend(self.apply(rung, &decision)?);
        }
        Ok(pruned)
    }
}

/// The scheduler for `schedule`, or `None` when its kind trains every run to its end.
pub fn scheduler_for(
    runs: &[PreparedRun],
    exp_dir: &Path,
    schedule: &ScheduleSpec,
    select: &crate::spec::SelectSpec,
    record: Option<ScheduleRecord>,
) -> Option<Halving> {
    match schedule.kind {
        ScheduleKind::SuccessiveHalving => Some(Halving::new(
            runs,
            exp_dir,
            *schedule,
            &select.metric,
            select.mode,
            record,
        )),
        ScheduleKind::None | ScheduleKind::Asha | ScheduleKind::Median => None,
    }
}

#[cfg(test)]
mod tests;
