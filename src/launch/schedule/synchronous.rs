//! Synchronous schedules: successive halving and median stopping. Every live training pauses
//! at its next rung; once all of them have reported it, the rung is decided at once
//! ([`pruning::halving_rung`] or [`pruning::median_rung`]), the others are pruned and the
//! survivors sent on.
//!
//! Deterministic by construction: a rung is decided only when every live training has
//! reached it, on the values the runs recorded in `metrics.jsonl` (never on finish order),
//! so `--jobs`, the backend and interruptions never change which runs survive.

use super::{ScheduleRecord, Trainings};
use crate::launch::dispatch::Scheduler;
use crate::launch::pruning::{self, RungDecision};
use crate::spec::{ScheduleKind, ScheduleSpec};
use crate::store::{PruneNote, StoreError};

/// Successive halving or median stopping over the dispatcher's runs.
pub struct Synchronous {
    t: Trainings,
    /// The rung epochs: `min_epochs * eta^k` (halving) or every epoch (median).
    rungs: Vec<usize>,
    pub(super) record: ScheduleRecord,
}

impl Synchronous {
    /// The scheduler of `schedule` (successive halving or median stopping) for `t`, taking
    /// over the decisions `record` holds.
    pub fn new(t: Trainings, schedule: ScheduleSpec, record: Option<ScheduleRecord>) -> Self {
        Synchronous {
            rungs: pruning::schedule_rungs(&schedule, t.train_epochs()),
            t,
            record: record.unwrap_or_else(|| ScheduleRecord::empty(schedule)),
        }
    }

    fn kind(&self) -> ScheduleKind {
        self.record.schedule.kind
    }

    /// The epoch the next undecided rung lies at; `None` once every rung is decided.
    fn next_rung(&self) -> Option<usize> {
        self.rungs.get(self.record.decisions.len()).copied()
    }

    /// The units still in the schedule: every one before the first rung, then the last
    /// decided rung's kept ones.
    fn live(&self) -> Vec<usize> {
        let last = self.record.decisions.last();
        self.t
            .units()
            .filter(|&u| last.is_none_or(|d| d.kept.contains(&self.t.grid_index(u))))
            .collect()
    }

    /// Decides the rung at `epoch` over `entries` (one per unit) by the schedule's rule.
    fn decide(&self, epoch: usize, entries: &[pruning::Entry]) -> RungDecision {
        let s = &self.record.schedule;
        match s.kind {
            ScheduleKind::Median => pruning::median_rung(self.t.mode, s.min_epochs, epoch, entries),
            _ => pruning::halving_rung(self.t.mode, s.reduction_factor, epoch, entries),
        }
    }

    /// Prunes every not-yet-final run of the units `decision` pruned; returns them with the
    /// reason.
    fn apply(
        &self,
        rung: usize,
        decision: &RungDecision,
    ) -> Result<Vec<(usize, String)>, StoreError> {
        let kind = self.kind().word();
        let mut out = Vec::new();
        for &grid_index in &decision.pruned {
            // What the run had to beat: the worst kept value, or the others' median.
            let cut = match self.kind() {
                ScheduleKind::Median => pruning::median_of_others(&decision.compared, grid_index),
                _ => pruning::halving_cut(self.t.mode, decision),
            };
            let note = PruneNote {
                kind: kind.into(),
                rung: rung + 1,
                epoch: decision.epoch,
                compared: decision.compared.len(),
                kept: decision.kept.len(),
                metric: self.t.metric.clone(),
                value: pruning::finite_value(&decision.compared, grid_index),
                cut,
                replicates: self.t.replicates_of(grid_index),
            };
            out.extend(self.t.prune_group(grid_index, &note)?);
        }
        out.sort_by_key(|p| p.0);
        Ok(out)
    }
}

impl Scheduler for Synchronous {
    fn may_start(&self, run: usize) -> bool {
        if self.t.unscheduled(run) {
            // Follows its training: the dispatcher starts it once that one is no longer
            // pending, and a pruned training prunes it first.
            return true;
        }
        // A run waits at its rung until the rung is decided.
        self.t.short_of(run, self.next_rung())
    }

    fn pause_after(&self, run: usize) -> Option<usize> {
        if self.t.unscheduled(run) {
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
            for run in live.iter().flat_map(|&u| self.t.members(u)) {
                if held.contains(&run) || !self.t.reported(run, epoch, pending.contains(&run))? {
                    return Ok(pruned);
                }
            }
            let (entries, replicates) = self.t.rung_values(&live, epoch)?;
            let mut decision = self.decide(epoch, &entries);
            decision.replicates = replicates;
            let rung = self.record.decisions.len();
            self.record.decisions.push(decision.clone());
            self.t.record(&self.record)?;
            pruned.extend(self.apply(rung, &decision)?);
        }
        Ok(pruned)
    }
}
