//! Pruning decisions: successive halving, ASHA and median stopping as pure functions of the
//! recorded `select.metric` values, so every rule is tested on recorded sequences without a
//! process, and the dispatcher only has to feed them what runs reported.
//!
//! A run is named by its index in the grid's run order: that order, never finish order,
//! breaks ties, so the same values give the same decision whatever `--jobs` is. "Better" is
//! [`SelectMode::is_better`] and nothing else: a NaN or an infinity (divergence) loses to any
//! finite value and is never kept or promoted.
//!
//! With replicates (`repeats > 1`) the rules rank configurations, not runs: a configuration
//! enters a rung with the mean of its replicates' values ([`Replicates::entry`]), named by
//! its first replicate's grid index, and every rule below is applied to those entries as it
//! is to single runs.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::spec::{ScheduleKind, ScheduleSpec, SelectMode};

/// One run's value at a rung: the run's index in the grid and its `select.metric` (NaN when
/// it recorded none, e.g. it diverged before the rung).
pub type Entry = (usize, f64);

/// One configuration's replicates at a rung: the values its entry, their mean, came from.
/// Recorded beside each decision, so `schedule.json` shows every replicate's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replicates {
    /// The configuration, named as in the decision's `compared`: by the grid index of its
    /// first replicate.
    pub configuration: usize,
    /// Each replicate's value, by the replicate's grid index.
    #[serde(with = "entries")]
    pub values: Vec<Entry>,
}

impl Replicates {
    /// The configuration's entry: the mean of its replicates' values, NaN when one of them
    /// has no finite value (it diverged, or failed before the rung). As in the summary's
    /// ranking of configurations, a configuration counts only when every replicate does, so
    /// a configuration with a diverged replicate loses to any finite mean; averaging over the
    /// replicates left (Ray Tune's Repeater does, with `nanmean`) would keep training a
    /// configuration that can no longer win.
    pub fn entry(&self) -> Entry {
        let values: Vec<f64> = self.values.iter().map(|e| e.1).collect();
        let mean = if values.iter().all(|v| v.is_finite()) {
            crate::stats::mean(&values)
        } else {
            f64::NAN
        };
        (self.configuration, mean)
    }
}

/// The entries of `configurations`: each one's mean ([`Replicates::entry`]).
pub fn configuration_entries(configurations: &[Replicates]) -> Vec<Entry> {
    configurations.iter().map(Replicates::entry).collect()
}

/// `entries` best first under `mode`; equal values (and all non-finite ones, which are
/// equally bad) keep run order.
pub fn ranked(mode: SelectMode, entries: &[Entry]) -> Vec<Entry> {
    let mut out = entries.to_vec();
    out.sort_by(|a, b| {
        if mode.is_better(a.1, b.1) {
            Ordering::Less
        } else if mode.is_better(b.1, a.1) {
            Ordering::Greater
        } else {
            a.0.cmp(&b.0)
        }
    });
    out
}

/// How many of `n` runs a rung keeps: `ceil(n / eta)`, so a rung with fewer runs than `eta`
/// still keeps its best one.
pub fn keep_count(n: usize, eta: usize) -> usize {
    n.div_ceil(eta.max(1))
}

/// The rung epochs `min_epochs * eta^k` below `max_epochs` (the spec's resolved value).
pub fn rung_epochs(min_epochs: usize, eta: usize, max_epochs: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut e = min_epochs.max(1);
    while e < max_epochs {
        out.push(e);
        match e.checked_mul(eta.max(2)) {
            Some(next) => e = next,
            None => break,
        }
    }
    out
}

/// Entries as JSON: a NaN value (no finite metric) is `null`, which JSON can hold and read
/// back, where a bare NaN would not parse.
mod entries {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[super::Entry], s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|&(r, x)| (r, x.is_finite().then_some(x)))
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<super::Entry>, D::Error> {
        let v: Vec<(usize, Option<f64>)> = Vec::deserialize(d)?;
        Ok(v.into_iter()
            .map(|(r, x)| (r, x.unwrap_or(f64::NAN)))
            .collect())
    }
}

/// A decided rung of synchronous successive halving, with what it compared, so it can be
/// persisted and replayed instead of decided again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RungDecision {
    /// The rung's epoch.
    pub epoch: usize,
    /// Every run that entered the rung with its value, in run order.
    #[serde(with = "entries")]
    pub compared: Vec<Entry>,
    /// Runs that go on to the next rung, best first.
    pub kept: Vec<usize>,
    /// Runs stopped here, in run order.
    pub pruned: Vec<usize>,
    /// With replicates: each configuration's replicate values, whose means `compared` holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicates: Vec<Replicates>,
}

/// Decides one rung of successive halving: keep the best `ceil(n / eta)` of the `n` runs
/// that entered it; a run without a finite value is never kept, even when the rung has room.
pub fn halving_rung(mode: SelectMode, eta: usize, epoch: usize, entries: &[Entry]) -> RungDecision {
    let mut compared = entries.to_vec();
    compared.sort_by_key(|e| e.0);
    let keep = keep_count(compared.len(), eta);
    let kept: Vec<usize> = ranked(mode, &compared)
        .into_iter()
        .take(keep)
        .filter(|e| e.1.is_finite())
        .map(|e| e.0)
        .collect();
    decided(epoch, compared, kept)
}

/// The rung decision that keeps `kept` of `compared` (in run order) and prunes the rest.
fn decided(epoch: usize, compared: Vec<Entry>, kept: Vec<usize>) -> RungDecision {
    let pruned = compared
        .iter()
        .map(|e| e.0)
        .filter(|r| !kept.contains(r))
        .collect();
    RungDecision {
        epoch,
        compared,
        kept,
        pruned,
        replicates: Vec::new(),
    }
}

/// `run`'s value among `entries`, when it has a finite one: what a prune note reports.
pub fn finite_value(entries: &[Entry], run: usize) -> Option<f64> {
    entries
        .iter()
        .find(|e| e.0 == run)
        .map(|e| e.1)
        .filter(|v| v.is_finite())
}

/// An ASHA decision about one run at one rung, recorded with the rung's values it was taken
/// against: they depend on which runs had reported by then, so resume replays it instead of
/// deciding again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Promotion {
    /// The rung's epoch.
    pub epoch: usize,
    /// The run decided about.
    pub run: usize,
    /// The rung's values so far, the run's own included, in run order.
    #[serde(with = "entries")]
    pub compared: Vec<Entry>,
    /// Whether the run goes on past the rung (`false`: it is pruned there).
    pub promoted: bool,
    /// Taken once no live run could still reach the rung ([`asha_complete`]) rather than
    /// on the values so far ([`asha_promote`]).
    #[serde(default)]
    pub complete: bool,
    /// With replicates: each compared configuration's replicate values, whose means
    /// `compared` holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicates: Vec<Replicates>,
}

/// ASHA at one rung (Li et al. 2020, Algorithm 2): `run` is promoted when it is in the top
/// `floor(n / eta)` of the `n` values recorded at the rung so far, and only with a finite
/// value. A rung with fewer than `eta` values promotes nothing yet: a run can wait there
/// (paused), so unlike Optuna, which cannot suspend a trial, the first arrival is not sent
/// on unseen.
pub fn asha_promote(
    mode: SelectMode,
    eta: usize,
    epoch: usize,
    run: usize,
    value: f64,
    so_far: &[Entry],
) -> Promotion {
    let mut compared: Vec<Entry> = so_far.iter().copied().filter(|e| e.0 != run).collect();
    compared.push((run, value));
    compared.sort_by_key(|e| e.0);
    let top = compared.len() / eta.max(1);
    let promoted =
        value.is_finite() && ranked(mode, &compared).iter().take(top).any(|e| e.0 == run);
    Promotion {
        epoch,
        run,
        compared,
        promoted,
        complete: false,
        replicates: Vec::new(),
    }
}

/// ASHA on a finite grid once no live run can still reach the rung: the rung is decided as
/// a successive halving rung ([`halving_rung`] over every run that reached it), and each of
/// the `waiting` runs (those not decided yet) goes on when that keeps it and is pruned
/// otherwise. Runs promoted earlier stay promoted.
pub fn asha_complete(
    mode: SelectMode,
    eta: usize,
    epoch: usize,
    entries: &[Entry],
    waiting: &[usize],
) -> Vec<Promotion> {
    let d = halving_rung(mode, eta, epoch, entries);
    let mut waiting = waiting.to_vec();
    waiting.sort_unstable();
    waiting.dedup();
    waiting
        .into_iter()
        .map(|run| Promotion {
            epoch,
            run,
            compared: d.compared.clone(),
            promoted: d.kept.contains(&run),
            complete: true,
            replicates: Vec::new(),
        })
        .collect()
}

/// The value a run pruned by successive halving had to beat: the worst value `d` kept;
/// `None` when it kept nothing.
pub fn halving_cut(mode: SelectMode, d: &RungDecision) -> Option<f64> {
    let kept: Vec<Entry> = d
        .compared
        .iter()
        .copied()
        .filter(|e| d.kept.contains(&e.0))
        .collect();
    ranked(mode, &kept).last().map(|e| e.1)
}

/// The epochs `schedule` pauses and decides at for runs of `train_epochs` epochs: every one
/// from `min_epochs` for median stopping, else successive halving's rungs (ASHA's too).
pub fn schedule_rungs(schedule: &ScheduleSpec, train_epochs: usize) -> Vec<usize> {
    let max = schedule.max_epochs_for(train_epochs);
    match schedule.kind {
        ScheduleKind::Median => median_epochs(schedule.min_epochs, max),
        _ => rung_epochs(schedule.min_epochs, schedule.reduction_factor, max),
    }
}

/// The median of the finite values in `values` (the mean of the middle two for an even
/// count); `None` when there is none.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// Median stopping: from `min_epochs` on, stop a run whose value at `epoch` is worse than the
/// median of the other runs' values at that epoch. Nothing to compare with (one run, or no
/// other finite value) never stops a run; a non-finite value loses to any finite median.
pub fn median_stops(
    mode: SelectMode,
    min_epochs: usize,
    epoch: usize,
    value: f64,
    others: &[f64],
) -> bool {
    if epoch < min_epochs {
        return false;
    }
    median(others).is_some_and(|m| mode.is_better(m, value))
}

/// The epochs median stopping decides at: every one from `min_epochs` to below
/// `max_epochs` (at the last one there is nothing left to save).
pub fn median_epochs(min_epochs: usize, max_epochs: usize) -> Vec<usize> {
    (min_epochs.max(1)..max_epochs).collect()
}

/// The values of the runs in `entries` other than `run`.
fn others(entries: &[Entry], run: usize) -> Vec<f64> {
    entries.iter().filter(|e| e.0 != run).map(|e| e.1).collect()
}

/// The median of the values of the runs in `entries` other than `run`: the value median
/// stopping compares `run` with.
pub fn median_of_others(entries: &[Entry], run: usize) -> Option<f64> {
    median(&others(entries, run))
}

/// Decides one epoch of median stopping over the live runs that reported it: each run worse
/// than the median of the others ([`median_stops`]) is pruned, the rest go on, best first.
/// The others are the live runs at that epoch, so the decision depends on the values alone,
/// never on report order; the best run is never worse than a median of the rest, so a rung
/// never stops every run that has a finite value.
pub fn median_rung(
    mode: SelectMode,
    min_epochs: usize,
    epoch: usize,
    entries: &[Entry],
) -> RungDecision {
    let mut compared = entries.to_vec();
    compared.sort_by_key(|e| e.0);
    let stopped: Vec<usize> = compared
        .iter()
        .filter(|e| median_stops(mode, min_epochs, epoch, e.1, &others(&compared, e.0)))
        .map(|e| e.0)
        .collect();
    let kept = ranked(mode, &compared)
        .into_iter()
        .map(|e| e.0)
        .filter(|r| !stopped.contains(r))
        .collect();
    decided(epoch, compared, kept)
}

/// One rung of a successive halving plan, as `plan` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RungPlan {
    /// The rung's epoch.
    pub epoch: usize,
    /// Runs that reach it.
    pub enter: usize,
    /// Runs it keeps.
    pub keep: usize,
}

/// What successive halving does to a grid of `runs` runs of `train_epochs` epochs each when
/// every run records a finite value: its rungs, and the most epochs trained in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HalvingPlan {
    pub rungs: Vec<RungPlan>,
    /// Epochs trained with pruning, at most (runs pruned at a rung trained its epochs).
    pub most_epochs: usize,
    /// Epochs the full grid trains.
    pub full_epochs: usize,
}

/// The successive halving plan of `schedule` for `units` units of `replicates` runs each
/// (a configuration's replicates, decided together; 1 without replicates) of `train_epochs`
/// epochs: the rungs count runs, a unit's entering and leaving together.
pub fn halving_plan(
    schedule: &ScheduleSpec,
    units: usize,
    replicates: usize,
    train_epochs: usize,
) -> HalvingPlan {
    let eta = schedule.reduction_factor;
    let epochs = rung_epochs(
        schedule.min_epochs,
        eta,
        schedule.max_epochs_for(train_epochs),
    );
    let mut live = units;
    let mut most = 0;
    let mut rungs = Vec::new();
    for epoch in epochs {
        let keep = keep_count(live, eta);
        most += (live - keep) * epoch;
        rungs.push(RungPlan {
            epoch,
            enter: live * replicates,
            keep: keep * replicates,
        });
        live = keep;
    }
    HalvingPlan {
        rungs,
        most_epochs: (most + live * train_epochs) * replicates,
        full_epochs: units * replicates * train_epochs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SelectMode::{Max, Min};

    const NAN: f64 = f64::NAN;
    const INF: f64 = f64::INFINITY;

    fn entries(values: &[f64]) -> Vec<Entry> {
        values.iter().copied().enumerate().collect()
    }

    #[test]
    fn rungs_grow_by_eta_below_max_epochs() {
        assert_eq!(rung_epochs(1, 3, 10), vec![1, 3, 9]);
        assert_eq!(rung_epochs(1, 3, 9), vec![1, 3]);
        assert_eq!(rung_epochs(2, 2, 10), vec![2, 4, 8]);
        assert_eq!(rung_epochs(5, 3, 5), Vec::<usize>::new());
        assert_eq!(
            rung_epochs(usize::MAX / 2, 3, usize::MAX),
            vec![usize::MAX / 2]
        );
    }

    #[test]
    fn a_rung_keeps_the_best_ceil_n_over_eta() {
        // The homework's nine learning rates after one epoch (dev accuracy).
        let values = [0.10, 0.62, 0.81, 0.86, 0.89, 0.88, 0.84, 0.79, 0.10];
        let d = halving_rung(Max, 3, 1, &entries(&values));
        assert_eq!(d.kept, vec![4, 5, 3]);
        assert_eq!(d.pruned, vec![0, 1, 2, 6, 7, 8]);
        assert_eq!(d.compared, entries(&values));
        // Under `min` the same numbers keep the other end.
        let d = halving_rung(Min, 3, 1, &entries(&values));
        assert_eq!(d.kept, vec![0, 8, 1]);
    }

    #[test]
    fn ties_go_to_run_order_whatever_order_runs_reported_in() {
        let reported = [(5, 0.8), (2, 0.8), (7, 0.8), (0, 0.5)];
        let d = halving_rung(Max, 2, 3, &reported);
        assert_eq!(d.kept, vec![2, 5]);
        assert_eq!(d.pruned, vec![0, 7]);
        let mut shuffled = reported;
        shuffled.reverse();
        assert_eq!(halving_rung(Max, 2, 3, &shuffled), d);
    }

    #[test]
    fn nan_and_diverged_runs_lose_and_are_never_kept() {
        let d = halving_rung(Max, 2, 1, &entries(&[NAN, 0.3, INF, 0.2]));
        assert_eq!(d.kept, vec![1, 3]);
        assert_eq!(d.pruned, vec![0, 2]);
        // `-inf` under `min` is divergence too, not a record.
        let d = halving_rung(Min, 2, 1, &entries(&[-INF, 0.4]));
        assert_eq!(d.kept, vec![1]);
        // A rung of nothing but diverged runs keeps nothing.
        let d = halving_rung(Max, 3, 1, &entries(&[NAN, INF]));
        assert!(d.kept.is_empty());
        assert_eq!(d.pruned, vec![0, 1]);
    }

    #[test]
    fn fewer_runs_than_eta_or_one_run_keep_the_best() {
        let d = halving_rung(Max, 3, 1, &entries(&[0.4, 0.6]));
        assert_eq!((d.kept, d.pruned), (vec![1], vec![0]));
        let d = halving_rung(Max, 3, 1, &entries(&[0.4]));
        assert_eq!((d.kept, d.pruned), (vec![0], vec![]));
        let d = halving_rung(Max, 3, 1, &[]);
        assert!(d.kept.is_empty() && d.pruned.is_empty());
    }

    #[test]
    fn asha_promotes_the_top_floor_n_over_eta_of_its_rung_so_far() {
        // Li et al.'s top_k(rung, floor(|rung| / eta)): fewer than eta values promote
        // nothing, not even the first arrival, which waits paused for company.
        let p = asha_promote(Max, 3, 1, 4, 0.5, &[]);
        assert!(!p.promoted);
        assert_eq!(p.compared, vec![(4, 0.5)]);
        assert!(!asha_promote(Max, 3, 1, 1, 0.9, &[(0, 0.1)]).promoted);
        // Three values: only the best one is in the top 1/3.
        let so_far = [(0, 0.7), (1, 0.6)];
        assert!(!asha_promote(Max, 3, 1, 2, 0.65, &so_far).promoted);
        let p = asha_promote(Max, 3, 1, 2, 0.75, &so_far);
        assert!(p.promoted && !p.complete);
        assert_eq!(p.compared, vec![(0, 0.7), (1, 0.6), (2, 0.75)]);
        // A tie at the cut goes to the earlier run.
        assert!(!asha_promote(Max, 3, 1, 2, 0.7, &so_far).promoted);
        assert!(asha_promote(Max, 3, 1, 0, 0.7, &[(1, 0.7), (2, 0.6)]).promoted);
        // The run's own earlier entry is replaced, not counted twice.
        let p = asha_promote(Min, 2, 1, 1, 0.2, &[(0, 0.3), (1, 0.9)]);
        assert_eq!(p.compared, vec![(0, 0.3), (1, 0.2)]);
        assert!(p.promoted);
        // Six values, eta 3: the top two go on, the third best waits.
        let six = [(0, 0.1), (1, 0.9), (2, 0.5), (3, 0.8), (4, 0.2)];
        assert!(asha_promote(Max, 3, 1, 5, 0.85, &six).promoted);
        assert!(!asha_promote(Max, 3, 1, 3, 0.8, &six[..4]).promoted);
        assert!(
            asha_promote(
                Max,
                3,
                1,
                3,
                0.8,
                &[six[0], six[1], six[2], six[4], (5, 0.3)]
            )
            .promoted
        );
    }

    #[test]
    fn asha_never_promotes_a_diverged_run() {
        assert!(!asha_promote(Max, 3, 1, 0, NAN, &[]).promoted);
        assert!(!asha_promote(Min, 1, 1, 0, -INF, &[]).promoted);
        assert!(!asha_promote(Max, 2, 1, 2, INF, &[(0, NAN), (1, NAN)]).promoted);
        let d = asha_complete(Max, 2, 1, &entries(&[NAN, INF]), &[0, 1]);
        assert!(d.iter().all(|p| !p.promoted && p.complete));
    }

    #[test]
    fn a_complete_asha_rung_keeps_the_best_ceil_n_over_eta_of_those_waiting() {
        // Two runs, eta 3: fewer than eta never promoted early; complete, the best goes on.
        let d = asha_complete(Max, 3, 1, &entries(&[0.4, 0.6]), &[1, 0]);
        let decided: Vec<(usize, bool)> = d.iter().map(|p| (p.run, p.promoted)).collect();
        assert_eq!(decided, vec![(0, false), (1, true)]);
        assert!(
            d.iter()
                .all(|p| p.complete && p.compared == entries(&[0.4, 0.6]))
        );
        // Run 1 went on early; of the rest only those in the top ceil(5 / 3) = 2 do.
        let values = [0.2, 0.5, 0.9, 0.5, 0.1];
        let d = asha_complete(Max, 3, 3, &entries(&values), &[0, 2, 3, 4]);
        let decided: Vec<(usize, bool)> = d.iter().map(|p| (p.run, p.promoted)).collect();
        // The tie of runs 1 and 3 goes to run 1: run 3 is fourth and stops.
        assert_eq!(decided, vec![(0, false), (2, true), (3, false), (4, false)]);
        // Nothing waiting, nothing decided.
        assert!(asha_complete(Max, 3, 3, &entries(&values), &[]).is_empty());
    }

    #[test]
    fn halving_cut_is_the_worst_kept_value() {
        let d = halving_rung(Max, 3, 1, &entries(&[0.1, 0.7, 0.9, 0.3, 0.2, 0.8]));
        assert_eq!(halving_cut(Max, &d), Some(0.8));
        let d = halving_rung(Min, 3, 1, &entries(&[0.1, 0.7, 0.9, 0.3, 0.2, 0.8]));
        assert_eq!(halving_cut(Min, &d), Some(0.2));
        let d = halving_rung(Max, 3, 1, &entries(&[NAN]));
        assert_eq!(halving_cut(Max, &d), None);
    }

    #[test]
    fn median_stops_runs_worse_than_the_others_median() {
        assert_eq!(median(&[0.3, 0.1, 0.2]), Some(0.2));
        assert_eq!(median(&[0.4, 0.1, NAN, 0.2, 0.3]), Some(0.25));
        assert_eq!(median(&[NAN, INF]), None);
        let others = [0.8, 0.7, 0.9];
        assert!(median_stops(Max, 2, 2, 0.75, &others));
        assert!(!median_stops(Max, 2, 2, 0.85, &others));
        // Equal to the median is not worse.
        assert!(!median_stops(Max, 2, 2, 0.8, &others));
        assert!(!median_stops(Min, 2, 2, 0.75, &others));
        // Before min_epochs nothing stops.
        assert!(!median_stops(Max, 2, 1, 0.0, &others));
        // A diverged run loses to any finite median; one run alone is never stopped.
        assert!(median_stops(Max, 1, 1, NAN, &others));
        assert!(median_stops(Min, 1, 1, -INF, &others));
        assert!(!median_stops(Max, 1, 1, 0.1, &[]));
        assert!(!median_stops(Max, 1, 1, 0.1, &[NAN]));
    }

    #[test]
    fn median_stopping_decides_every_epoch_from_min_epochs_below_max_epochs() {
        assert_eq!(median_epochs(1, 4), vec![1, 2, 3]);
        assert_eq!(median_epochs(2, 3), vec![2]);
        assert!(median_epochs(4, 4).is_empty());
        let mut s = ScheduleSpec {
            kind: ScheduleKind::Median,
            min_epochs: 2,
            reduction_factor: 3,
            max_epochs: 0,
        };
        assert_eq!(schedule_rungs(&s, 5), vec![2, 3, 4]);
        s.kind = ScheduleKind::Asha;
        assert_eq!(schedule_rungs(&s, 20), vec![2, 6, 18]);
        s.max_epochs = 10;
        assert_eq!(schedule_rungs(&s, 20), vec![2, 6]);
    }

    #[test]
    fn a_median_rung_stops_the_runs_worse_than_the_median_of_the_others() {
        // The homework's nine learning rates after one epoch. Reference (numpy 2.4):
        // [i for i, x in enumerate(v) if x < np.median(v[:i] + v[i+1:])] == [0, 1, 2, 7, 8];
        // np.median of the others of run 2 is 0.815, of run 3 0.8.
        let values = [0.10, 0.62, 0.81, 0.86, 0.89, 0.88, 0.84, 0.79, 0.10];
        let d = median_rung(Max, 1, 1, &entries(&values));
        assert_eq!(d.pruned, vec![0, 1, 2, 7, 8]);
        assert_eq!(d.kept, vec![4, 5, 3, 6]);
        assert_eq!(d.compared, entries(&values));
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-12);
        assert!(close(median_of_others(&d.compared, 2), 0.815));
        assert!(close(median_of_others(&d.compared, 3), 0.8));
        // Reported in any order, the same decision.
        let mut shuffled = entries(&values);
        shuffled.reverse();
        assert_eq!(median_rung(Max, 1, 1, &shuffled), d);
        // Under `min` the other end stops: 0.10 and 0.62 are the low losses.
        let d = median_rung(Min, 1, 1, &entries(&values));
        assert_eq!(d.kept[..2], [0, 8]);
        assert!(d.pruned.contains(&4));
    }

    #[test]
    fn a_median_rung_never_stops_the_best_and_stops_diverged_runs() {
        // Two runs: the worse one stops; one run alone, or all tied, goes on.
        let d = median_rung(Max, 1, 2, &entries(&[0.4, 0.6]));
        assert_eq!((d.kept, d.pruned), (vec![1], vec![0]));
        let d = median_rung(Max, 1, 2, &entries(&[0.4]));
        assert_eq!((d.kept, d.pruned), (vec![0], vec![]));
        let d = median_rung(Max, 1, 2, &entries(&[0.5, 0.5, 0.5]));
        assert!(d.pruned.is_empty());
        // A NaN or diverged run loses to any finite median; nothing finite, nothing to
        // compare with: nobody stops.
        let d = median_rung(Max, 1, 2, &entries(&[NAN, 0.3, INF, 0.2]));
        assert_eq!(d.pruned, vec![0, 2, 3]);
        assert_eq!(d.kept, vec![1]);
        let d = median_rung(Max, 1, 2, &entries(&[NAN, INF]));
        assert!(d.pruned.is_empty());
        // Before min_epochs nothing stops.
        assert!(
            median_rung(Max, 3, 2, &entries(&[0.1, 0.9, 0.8]))
                .pruned
                .is_empty()
        );
    }

    /// Configurations named 0, 2, 4, ... of the replicate values in `values`, replicate
    /// runs numbered in grid order.
    fn configurations(values: &[&[f64]]) -> Vec<Replicates> {
        let mut run = 0;
        values
            .iter()
            .map(|vs| {
                let first = run;
                let values = vs
                    .iter()
                    .map(|&v| {
                        run += 1;
                        (run - 1, v)
                    })
                    .collect();
                Replicates {
                    configuration: first,
                    values,
                }
            })
            .collect()
    }

    #[test]
    fn a_configuration_enters_a_rung_with_its_replicates_mean() {
        let c = configurations(&[&[0.75, 0.25], &[0.5, 0.5, 0.5], &[0.9]]);
        assert_eq!(
            configuration_entries(&c),
            vec![(0, 0.5), (2, 0.5), (5, 0.9)]
        );
        // A replicate without a finite value (none recorded, NaN, a diverged infinity)
        // leaves the configuration without a mean, whatever the others did.
        for bad in [NAN, INF, -INF] {
            let c = configurations(&[&[0.9, bad]]);
            assert!(c[0].entry().1.is_nan(), "{bad}");
        }
        assert!(configurations(&[&[]])[0].entry().1.is_nan());
    }

    #[test]
    fn halving_over_configurations_keeps_the_best_mean_not_the_best_replicate() {
        // Configuration 0 has the best single run (0.9) and the worst mean; configuration 4
        // the second best run and a diverged replicate.
        let c = configurations(&[&[0.9, 0.1], &[0.625, 0.625], &[0.8, INF]]);
        let d = halving_rung(Max, 3, 1, &configuration_entries(&c));
        assert_eq!((d.kept, d.pruned), (vec![2], vec![0, 4]));
        // Ranked run by run, run 0 would have been kept: the rule sees means only.
        let runs: Vec<Entry> = c.iter().flat_map(|c| c.values.clone()).collect();
        assert_eq!(halving_rung(Max, 3, 1, &runs).kept, vec![0, 4]);
        // Even with room for every configuration, the one with a diverged replicate stops.
        let d = halving_rung(Max, 1, 1, &configuration_entries(&c));
        assert_eq!((d.kept, d.pruned), (vec![2, 0], vec![4]));
    }

    #[test]
    fn equal_configuration_means_go_to_the_earlier_configuration_in_any_report_order() {
        // 0.5 both, from different spreads; eta 2 keeps one.
        let c = configurations(&[&[0.25, 0.75], &[0.5, 0.5], &[0.125, 0.125]]);
        let entries = configuration_entries(&c);
        let d = halving_rung(Max, 2, 1, &entries);
        assert_eq!((&d.kept, &d.pruned), (&vec![0, 2], &vec![4]));
        let mut reversed = entries.clone();
        reversed.reverse();
        assert_eq!(halving_rung(Max, 2, 1, &reversed), d);
        let d = halving_rung(Max, 3, 1, &entries);
        assert_eq!(d.kept, vec![0]);
    }

    #[test]
    fn median_and_asha_over_configurations_use_the_means() {
        // Means 0.5, 0.625, 0.375 and none (a NaN replicate).
        let c = configurations(&[&[0.75, 0.25], &[0.5, 0.75], &[0.25, 0.5], &[0.9, NAN]]);
        let entries = configuration_entries(&c);
        let d = median_rung(Max, 1, 1, &entries);
        // Configuration 0's others (0.625, 0.375; the NaN has no value) have the median 0.5:
        // equal, not worse. Configuration 4 is below 0.5625 and 6 has no mean.
        assert_eq!((d.kept, d.pruned), (vec![2, 0], vec![4, 6]));
        // ASHA: the best mean of three is in the top third; the NaN one never goes on.
        assert!(asha_promote(Max, 3, 1, 2, 0.625, &entries[..3]).promoted);
        assert!(!asha_promote(Max, 3, 1, 0, 0.5, &entries[..3]).promoted);
        let p = asha_complete(Max, 1, 1, &entries, &[6]);
        assert!(!p[0].promoted && p[0].complete);
    }

    #[test]
    fn replicate_values_are_recorded_with_nan_as_null_and_left_out_without_replicates() {
        let c = configurations(&[&[0.5, NAN]]);
        let mut d = halving_rung(Max, 3, 1, &configuration_entries(&c));
        let plain = serde_json::to_string(&d).unwrap();
        assert!(!plain.contains("replicates"), "{plain}");
        d.replicates = c;
        let json = serde_json::to_string(&d).unwrap();
        assert!(
            json.contains(r#""replicates":[{"configuration":0,"values":[[0,0.5],[1,null]]}]"#),
            "{json}"
        );
        let back: RungDecision = serde_json::from_str(&json).unwrap();
        assert_eq!(back.replicates[0].values[0], (0, 0.5));
        assert!(back.replicates[0].values[1].1.is_nan());
        // Records written before replicates were ranked together still load.
        let old: RungDecision = serde_json::from_str(&plain).unwrap();
        assert!(old.replicates.is_empty());
    }

    use proptest::prelude::Strategy;

    /// Rung values: any f64 (NaN and infinities included) mixed with a few repeated ones,
    /// so ties are common.
    fn metric_values(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<f64>> {
        proptest::collection::vec(
            proptest::prop_oneof![
                proptest::num::f64::ANY,
                (0u8..4).prop_map(|v| f64::from(v) / 4.0),
            ],
            len,
        )
    }

    proptest::proptest! {
        #[test]
        fn a_rung_decision_does_not_depend_on_report_order(
            values in metric_values(0..12),
            rotate in 0usize..12,
            eta in 2usize..5,
        ) {
            let mut reported = entries(&values);
            let forward = halving_rung(Max, eta, 1, &reported);
            if !reported.is_empty() {
                let k = rotate % reported.len();
                reported.rotate_left(k);
            }
            reported.reverse();
            proptest::prop_assert_eq!(
                format!("{:?}", halving_rung(Max, eta, 1, &reported)),
                format!("{forward:?}")
            );
            proptest::prop_assert_eq!(
                forward.kept.len() + forward.pruned.len(),
                values.len()
            );
            proptest::prop_assert!(forward.kept.len() <= keep_count(values.len(), eta));
            for r in &forward.kept {
                proptest::prop_assert!(values[*r].is_finite());
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn a_median_rung_keeps_the_best_and_ignores_report_order(
            values in metric_values(1..12),
            rotate in 0usize..12,
        ) {
            let mut reported = entries(&values);
            let forward = median_rung(Max, 1, 1, &reported);
            reported.rotate_left(rotate % values.len());
            proptest::prop_assert_eq!(
                format!("{:?}", median_rung(Max, 1, 1, &reported)),
                format!("{forward:?}")
            );
            proptest::prop_assert_eq!(forward.kept.len() + forward.pruned.len(), values.len());
            // The best finite run always goes on.
            if let Some(best) = ranked(Max, &entries(&values)).first().filter(|e| e.1.is_finite()) {
                proptest::prop_assert!(forward.kept.contains(&best.0));
            }
        }
    }

    #[test]
    fn halving_plan_counts_rungs_and_epochs() {
        let schedule = ScheduleSpec {
            kind: ScheduleKind::SuccessiveHalving,
            min_epochs: 1,
            reduction_factor: 3,
            max_epochs: 0,
        };
        let p = halving_plan(&schedule, 9, 1, 9);
        assert_eq!(
            p.rungs,
            vec![
                RungPlan {
                    epoch: 1,
                    enter: 9,
                    keep: 3
                },
                RungPlan {
                    epoch: 3,
                    enter: 3,
                    keep: 1
                },
            ]
        );
        // 6 runs stop after 1 epoch, 2 after 3, one trains all 9.
        assert_eq!((p.most_epochs, p.full_epochs), (6 + 6 + 9, 81));
        let one = halving_plan(&schedule, 1, 1, 9);
        assert_eq!((one.most_epochs, one.full_epochs), (9, 9));
        // Four configurations of two replicates: configurations are kept, ceil(4 / 3) = 2
        // of them (4 runs), where nine single runs would keep ceil(8 / 3) = 3.
        let p = halving_plan(&schedule, 4, 2, 9);
        let rungs: Vec<(usize, usize, usize)> =
            p.rungs.iter().map(|r| (r.epoch, r.enter, r.keep)).collect();
        assert_eq!(rungs, vec![(1, 8, 4), (3, 4, 2)]);
        // 2 configurations stop after 1 epoch, 1 after 3, one trains 9; each two runs.
        assert_eq!((p.most_epochs, p.full_epochs), (2 * (2 + 3 + 9), 72));
    }
}
