//! Asynchronous successive halving (Li et al. 2020, Algorithm 2) on a finite grid. Every
//! training pauses at its next rung (`min_epochs * eta^k`, as successive halving's). Each
//! time runs report (an attempt ends), a run waiting at a rung is promoted when it is in the
//! top `floor(n / eta)` of the `n` values its rung has so far ([`pruning::asha_promote`]),
//! and promoted runs start before fresh ones, top rung first ([`Scheduler::priority`]), so
//! no slot waits while there is work. A rung no live run can still reach (none is queued or
//! running below it) is complete: the top `ceil(n / eta)` of it go on, the rest of those
//! waiting there are pruned ([`pruning::asha_complete`]).
//!
//! With replicates the unit is a configuration: it stands at a rung once each of its
//! replicates has reported it, with the mean of their values, and is promoted or pruned
//! whole; a replicate that reaches the rung early waits there for the others.
//!
//! The decisions depend on which runs had reported when they were taken, so each one is
//! recorded with the values it compared in `schedule.json` (`promotions`) before it takes
//! effect, and a later launch replays them and decides only what the record lacks.

use super::{ScheduleRecord, Trainings};
use crate::launch::dispatch::Scheduler;
use crate::launch::pruning::{self, Promotion};
use crate::spec::{ScheduleKind, ScheduleSpec};
use crate::store::{PruneNote, StoreError};

/// ASHA over the dispatcher's runs.
pub struct Asha {
    t: Trainings,
    rungs: Vec<usize>,
    pub(super) record: ScheduleRecord,
}

/// Where a training stands with respect to its next rung.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// Trains (or is queued to train) towards its next rung, or to its end.
    Going,
    /// Stands at its next rung, waiting for a decision.
    Waiting,
    /// Goes no further: pruned, or ended for good before its next rung.
    Ended,
}

impl Asha {
    /// The scheduler of `schedule` for `t`, taking over the decisions `record` holds.
    pub fn new(t: Trainings, schedule: ScheduleSpec, record: Option<ScheduleRecord>) -> Self {
        Asha {
            rungs: pruning::schedule_rungs(&schedule, t.train_epochs()),
            t,
            record: record.unwrap_or_else(|| ScheduleRecord::empty(schedule)),
        }
    }

    /// The rungs unit `unit` was promoted past.
    fn level(&self, unit: usize) -> usize {
        let g = self.t.grid_index(unit);
        let promoted = |p: &&Promotion| p.run == g && p.promoted;
        self.record.promotions.iter().filter(promoted).count()
    }

    fn is_pruned(&self, unit: usize) -> bool {
        let g = self.t.grid_index(unit);
        self.record
            .promotions
            .iter()
            .any(|p| p.run == g && !p.promoted)
    }

    /// Where unit `unit` stands: a configuration waits at its rung once each of its
    /// trainings has reported it or ended, and goes on while one of them still trains.
    fn position(
        &self,
        unit: usize,
        pending: &[usize],
        held: &[usize],
    ) -> Result<Position, StoreError> {
        let members: Vec<usize> = self.t.members(unit).collect();
        if self.is_pruned(unit) || members.iter().any(|r| self.t.promoted.contains(r)) {
            return Ok(Position::Ended);
        }
        let Some(&epoch) = self.rungs.get(self.level(unit)) else {
            return Ok(Position::Going);
        };
        let mut waiting = false;
        for r in members {
            if held.contains(&r) {
                return Ok(Position::Going);
            }
            let pending = pending.contains(&r);
            if self.t.ended(r, pending)? {
                continue;
            }
            if !self.t.reported(r, epoch, pending)? {
                return Ok(Position::Going);
            }
            waiting = true;
        }
        Ok(if waiting {
            Position::Waiting
        } else {
            Position::Ended
        })
    }

    /// The decisions that can be taken now, given each unit's level and position.
    fn decide(&self, units: &[(usize, usize, Position)]) -> Result<Vec<Promotion>, StoreError> {
        let s = &self.record.schedule;
        let (mode, eta) = (self.t.mode, s.reduction_factor);
        let mut out = Vec::new();
        for (k, &epoch) in self.rungs.iter().enumerate() {
            let waiting: Vec<usize> = units
                .iter()
                .filter(|u| u.1 == k && u.2 == Position::Waiting)
                .map(|u| self.t.grid_index(u.0))
                .collect();
            if waiting.is_empty() {
                continue;
            }
            // Every unit that reached the rung: promoted past it, or standing or ended there.
            let reached: Vec<usize> = units
                .iter()
                .filter(|&&(_, level, pos)| level > k || (level == k && pos != Position::Going))
                .map(|u| u.0)
                .collect();
            let (entries, replicates) = self.t.rung_values(&reached, epoch)?;
            let complete = units.iter().all(|&(_, level, pos)| {
                level > k || (level == k && pos != Position::Going) || pos == Position::Ended
            });
            let mut decided = Vec::new();
            if complete {
                decided.extend(pruning::asha_complete(mode, eta, epoch, &entries, &waiting));
            } else {
                for &g in &waiting {
                    let value = entries.iter().find(|e| e.0 == g).map_or(f64::NAN, |e| e.1);
                    let p = pruning::asha_promote(mode, eta, epoch, g, value, &entries);
                    if p.promoted {
                        decided.push(p);
                    }
                }
            }
            for mut p in decided {
                p.replicates = replicates.clone();
                out.push(p);
            }
        }
        Ok(out)
    }

    /// Prunes the unit `p` decided to stop; returns its runs with the reason.
    fn apply(&self, p: &Promotion) -> Result<Vec<(usize, String)>, StoreError> {
        if p.promoted {
            return Ok(Vec::new());
        }
        let s = &self.record.schedule;
        // Pruning happens only on a complete rung, decided as a halving rung: its cut.
        let d = pruning::halving_rung(self.t.mode, s.reduction_factor, p.epoch, &p.compared);
        let note = PruneNote {
            kind: ScheduleKind::Asha.word().into(),
            rung: self
                .rungs
                .iter()
                .position(|&e| e == p.epoch)
                .map_or(0, |k| k + 1),
            epoch: p.epoch,
            compared: p.compared.len(),
            kept: d.kept.len(),
            metric: self.t.metric.clone(),
            value: pruning::finite_value(&p.compared, p.run),
            cut: pruning::halving_cut(self.t.mode, &d),
            replicates: self.t.replicates_of(p.run),
        };
        self.t.prune_group(p.run, &note)
    }
}

impl Scheduler for Asha {
    fn may_start(&self, run: usize) -> bool {
        if self.t.unscheduled(run) {
            // Follows its training, or `--promote` sends it to its end.
            return true;
        }
        let unit = self.t.unit[run];
        if self.is_pruned(unit) {
            return false;
        }
        self.t
            .short_of(run, self.rungs.get(self.level(unit)).copied())
    }

    fn pause_after(&self, run: usize) -> Option<usize> {
        if self.t.unscheduled(run) {
            return None;
        }
        self.rungs.get(self.level(self.t.unit[run])).copied()
    }

    fn priority(&self, run: usize) -> usize {
        self.level(self.t.unit[run])
    }

    fn settle(
        &mut self,
        pending: &[usize],
        held: &[usize],
    ) -> Result<Vec<(usize, String)>, StoreError> {
        let mut pruned = Vec::new();
        // Replay: decisions recorded by an earlier launch prune what they pruned.
        for p in &self.record.promotions {
            pruned.extend(self.apply(p)?);
        }
        loop {
            let units: Vec<(usize, usize, Position)> = self
                .t
                .units()
                .map(|u| Ok((u, self.level(u), self.position(u, pending, held)?)))
                .collect::<Result<_, StoreError>>()?;
            let new = self.decide(&units)?;
            if new.is_empty() {
                break;
            }
            self.record.promotions.extend(new.iter().cloned());
            self.t.record(&self.record)?;
            for p in &new {
                pruned.extend(self.apply(p)?);
            }
        }
        pruned.sort_by_key(|p| p.0);
        Ok(pruned)
    }
}
