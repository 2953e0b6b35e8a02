//! Successive halving, median stopping and ASHA against real run directories, without
//! processes.

use super::*;
use crate::store::{MetricRecord, PlanRecord, RunDir};

const METRIC: &str = "dev/accuracy";

fn schedule() -> ScheduleSpec {
    schedule_of(ScheduleKind::SuccessiveHalving)
}

fn schedule_of(kind: ScheduleKind) -> ScheduleSpec {
    ScheduleSpec {
        kind,
        min_epochs: 1,
        reduction_factor: 3,
        max_epochs: 0,
    }
}

fn trainings(exp: &Path, runs: &[PreparedRun]) -> Trainings {
    Trainings::new(runs, exp, METRIC, SelectMode::Max, Vec::new())
}

fn halving(exp: &Path, runs: &[PreparedRun], record: Option<ScheduleRecord>) -> Synchronous {
    Synchronous::new(trainings(exp, runs), schedule(), record)
}

/// Six runs of 4 epochs (rungs at 1 and 3), all queued with nothing trained.
fn runs(exp: &Path) -> Vec<PreparedRun> {
    (0..6)
        .map(|i| {
            let dir = RunDir::at(exp.join(format!("run{i}")));
            std::fs::create_dir_all(dir.root()).unwrap();
            set(&dir, RunState::Queued, 0);
            PreparedRun {
                plan: PlanRecord {
                    index: i,
                    id: format!("run{i}"),
                    training_id: format!("t{i}"),
                    name: format!("run{i}"),
                    varied: Default::default(),
                    data: Default::default(),
                    numerics: 0,
                    replicate: None,
                    tensorboard: format!("run{i}"),
                },
                dir,
                epochs: 4,
                metric: METRIC.into(),
                state: RunState::Queued,
            }
        })
        .collect()
}

fn set(dir: &RunDir, state: RunState, epoch: usize) {
    store::write_status(
        dir,
        &RunStatus {
            state,
            attempts: 1,
            epoch,
            message: None,
            pid: None,
            pruned: None,
        },
    )
    .unwrap();
}

/// Run `r` reached `epoch` with `value` and paused there.
fn pause(r: &PreparedRun, epoch: usize, value: f64) {
    let line = store::metrics::line(&MetricRecord {
        epoch,
        step: epoch as u64,
        tag: METRIC.into(),
        value,
    });
    let mut text = std::fs::read_to_string(r.dir.metrics()).unwrap_or_default();
    text.push_str(&line);
    std::fs::write(r.dir.metrics(), text).unwrap();
    set(&r.dir, RunState::Paused, epoch);
}

fn state(r: &PreparedRun) -> RunState {
    store::read_status(&r.dir).unwrap().unwrap().state
}

#[test]
fn a_rung_waits_for_every_live_run_then_keeps_the_best_third_and_replays_on_resume() {
    let exp = tempfile::tempdir().unwrap();
    let runs = runs(exp.path());
    let mut h = halving(exp.path(), &runs, None);
    let all: Vec<usize> = (0..6).collect();
    assert!(h.may_start(0));
    assert_eq!(h.pause_after(0), Some(1));
    // Values arrive in any order; run 4 is still training: nothing is decided.
    for (r, v) in [(5, 0.9), (0, 0.5), (2, 0.9), (1, 0.1), (3, 0.7)] {
        pause(&runs[r], 1, v);
    }
    assert!(!h.may_start(5), "a paused run waits at its rung");
    assert!(h.settle(&all, &[4]).unwrap().is_empty());
    assert!(!store::schedule_path(exp.path()).exists());
    pause(&runs[4], 1, f64::NAN);
    let pruned: Vec<usize> = h
        .settle(&all, &[])
        .unwrap()
        .into_iter()
        .map(|p| p.0)
        .collect();
    // ceil(6 / 3) = 2 kept: the two 0.9s (equal values, both kept); NaN never is.
    assert_eq!(pruned, vec![0, 1, 3, 4]);
    assert_eq!(state(&runs[1]), RunState::Pruned);
    let note = store::read_status(&runs[3].dir)
        .unwrap()
        .unwrap()
        .pruned
        .unwrap();
    assert_eq!(
        (note.rung, note.epoch, note.kept, note.compared),
        (1, 1, 2, 6)
    );
    assert_eq!((note.value, note.cut), (Some(0.7), Some(0.9)));
    assert!(
        h.may_start(2) && h.may_start(5),
        "survivors go on to the next rung"
    );
    assert_eq!(h.pause_after(2), Some(3));

    // A later launch replays the record and decides nothing again, whatever the files say
    // now: an edited value of a pruned run does not bring it back.
    pause(&runs[1], 1, 1.0);
    set(&runs[1].dir, RunState::Cancelled, 1);
    let record = check_record(exp.path(), &schedule(), 1).unwrap();
    let mut again = halving(exp.path(), &runs, record);
    let replayed: Vec<usize> = again
        .settle(&[1, 2, 5], &[])
        .unwrap()
        .into_iter()
        .map(|p| p.0)
        .collect();
    assert_eq!(replayed, vec![1]);
    assert_eq!(again.record.decisions.len(), 1);
    assert_eq!(again.record.decisions[0].kept, vec![2, 5]);

    // Another schedule than the record's is refused, naming the file.
    let mut other = schedule();
    other.reduction_factor = 2;
    let err = check_record(exp.path(), &other, 1).unwrap_err().to_string();
    assert!(err.contains("schedule.json"), "{err}");
}

fn pruned_runs(p: Vec<(usize, String)>) -> Vec<usize> {
    p.into_iter().map(|p| p.0).collect()
}

fn note(r: &PreparedRun) -> PruneNote {
    store::read_status(&r.dir).unwrap().unwrap().pruned.unwrap()
}

#[test]
fn median_stopping_decides_every_epoch_once_every_live_run_reported_it() {
    let exp = tempfile::tempdir().unwrap();
    let runs = runs(exp.path());
    let t = trainings(exp.path(), &runs);
    let mut m = Synchronous::new(t, schedule_of(ScheduleKind::Median), None);
    let all: Vec<usize> = (0..6).collect();
    // Rungs at every epoch below the last: 1, 2, 3.
    assert_eq!(m.pause_after(0), Some(1));
    for (r, v) in [(0, 0.5), (1, 0.1), (2, 0.9), (3, 0.7), (4, f64::NAN)] {
        pause(&runs[r], 1, v);
    }
    assert!(
        m.settle(&all, &[5]).unwrap().is_empty(),
        "run 5 is still training"
    );
    pause(&runs[5], 1, 0.6);
    // The others' medians, by hand with NaN left out: run 0's [0.1 0.6 0.7 0.9] is 0.65
    // (in f64, (0.6 + 0.7) / 2), above its 0.5: it stops, as run 1 (0.1 against 0.65) and
    // the NaN do; run 2's and run 3's are 0.55, below them; run 5's [0.1 0.5 0.7 0.9] is
    // 0.6, equal to its own: not worse, it goes on.
    assert_eq!(pruned_runs(m.settle(&all, &[]).unwrap()), vec![0, 1, 4]);
    let n = note(&runs[0]);
    assert_eq!((n.kind.as_str(), n.rung, n.epoch), ("median", 1, 1));
    assert_eq!((n.value, n.cut), (Some(0.5), Some((0.6 + 0.7) / 2.0)));
    assert_eq!((n.compared, n.kept), (6, 3));
    assert_eq!(note(&runs[4]).value, None);
    assert_eq!(m.pause_after(2), Some(2));
    assert!(m.may_start(2));
    assert_eq!(state(&runs[0]), RunState::Pruned);

    // Epoch 2 among the three left: run 3's 0.75 is below the others' 0.925 and stops;
    // run 5's 0.9 is above its others' 0.85.
    for (r, v) in [(2, 0.95), (3, 0.75), (5, 0.9)] {
        pause(&runs[r], 2, v);
    }
    assert_eq!(pruned_runs(m.settle(&[2, 3, 5], &[]).unwrap()), vec![3]);
    assert_eq!(m.record.decisions.len(), 2);
    assert_eq!(m.record.decisions[1].kept, vec![2, 5]);

    // Resumed: the record is replayed, nothing decided again.
    let before = std::fs::read(store::schedule_path(exp.path())).unwrap();
    set(&runs[3].dir, RunState::Cancelled, 2);
    let record = check_record(exp.path(), &schedule_of(ScheduleKind::Median), 1).unwrap();
    let mut again = Synchronous::new(
        trainings(exp.path(), &runs),
        schedule_of(ScheduleKind::Median),
        record,
    );
    assert_eq!(
        pruned_runs(again.settle(&[2, 3, 5], &[2, 5]).unwrap()),
        vec![3]
    );
    assert_eq!(
        std::fs::read(store::schedule_path(exp.path())).unwrap(),
        before
    );
}

fn asha(exp: &Path, runs: &[PreparedRun], record: Option<ScheduleRecord>) -> Asha {
    Asha::new(
        trainings(exp, runs),
        schedule_of(ScheduleKind::Asha),
        record,
    )
}

/// The recorded ASHA decisions as (grid index, epoch, promoted, complete).
fn decided(a: &Asha) -> Vec<(usize, usize, bool, bool)> {
    a.record
        .promotions
        .iter()
        .map(|p| (p.run, p.epoch, p.promoted, p.complete))
        .collect()
}

#[test]
fn asha_promotes_the_top_third_so_far_then_decides_a_complete_rung_and_replays_on_resume() {
    let exp = tempfile::tempdir().unwrap();
    let runs = runs(exp.path());
    let mut a = asha(exp.path(), &runs, None);
    // Rungs at 1 and 3 of 4 epochs.
    assert_eq!(a.pause_after(0), Some(1));
    // Two values: fewer than eta, nothing promoted, nothing written; they wait.
    pause(&runs[0], 1, 0.5);
    pause(&runs[1], 1, 0.4);
    assert!(a.settle(&[0, 1, 3, 4, 5], &[2]).unwrap().is_empty());
    assert!(!store::schedule_path(exp.path()).exists());
    assert!(!a.may_start(0) && a.may_start(3));
    // A third: the best of the three goes on at once, the rung is far from complete.
    pause(&runs[2], 1, 0.9);
    assert!(a.settle(&[0, 1, 2, 4, 5], &[3]).unwrap().is_empty());
    assert_eq!(decided(&a), vec![(2, 1, true, false)]);
    assert_eq!(
        a.record.promotions[0].compared,
        vec![(0, 0.5), (1, 0.4), (2, 0.9)]
    );
    assert!(a.may_start(2) && !a.may_start(0));
    assert_eq!(a.pause_after(2), Some(3));
    // Promoted runs start before fresh ones.
    assert!(a.priority(2) > a.priority(4));
    // Five values: the top one is promoted already; a NaN is never promoted.
    pause(&runs[3], 1, f64::NAN);
    pause(&runs[4], 1, 0.8);
    assert!(a.settle(&[0, 1, 3, 4], &[2, 5]).unwrap().is_empty());
    assert_eq!(decided(&a).len(), 1);
    // The last one reports: nothing can reach the rung any more. Complete, it keeps the
    // best ceil(6 / 3) = 2 (run 2, promoted before, and run 4); those waiting are pruned.
    pause(&runs[5], 1, 0.6);
    assert_eq!(
        pruned_runs(a.settle(&[0, 1, 3, 4, 5], &[2]).unwrap()),
        vec![0, 1, 3, 5]
    );
    assert_eq!(
        decided(&a),
        vec![
            (2, 1, true, false),
            (0, 1, false, true),
            (1, 1, false, true),
            (3, 1, false, true),
            (4, 1, true, true),
            (5, 1, false, true),
        ]
    );
    let n = note(&runs[3]);
    assert_eq!((n.kind.as_str(), n.rung, n.epoch), ("asha", 1, 1));
    assert_eq!(
        (n.compared, n.kept, n.value, n.cut),
        (6, 2, None, Some(0.8))
    );
    assert_eq!(state(&runs[0]), RunState::Pruned);

    // The second rung: one value of two waits, until the other arrives and completes it.
    pause(&runs[2], 3, 0.7);
    assert!(
        a.settle(&[2, 4], &[]).unwrap().is_empty(),
        "run 4 has not trained to 3"
    );
    pause(&runs[4], 3, 0.85);
    assert_eq!(pruned_runs(a.settle(&[2, 4], &[]).unwrap()), vec![2]);
    assert_eq!(note(&runs[2]).rung, 2);
    assert_eq!(
        a.pause_after(4),
        None,
        "the last survivor trains to its end"
    );
    assert!(a.may_start(4));

    // A later launch replays every decision and takes none again.
    let before = std::fs::read(store::schedule_path(exp.path())).unwrap();
    set(&runs[1].dir, RunState::Cancelled, 1);
    let record = check_record(exp.path(), &schedule_of(ScheduleKind::Asha), 1).unwrap();
    let mut again = asha(exp.path(), &runs, record);
    assert_eq!(pruned_runs(again.settle(&[1, 4], &[]).unwrap()), vec![1]);
    assert_eq!(
        std::fs::read(store::schedule_path(exp.path())).unwrap(),
        before
    );
    assert_eq!(again.pause_after(4), None);
}

#[test]
fn asha_with_fewer_runs_than_eta_promotes_the_best_once_both_reported() {
    let exp = tempfile::tempdir().unwrap();
    let runs: Vec<PreparedRun> = runs(exp.path()).into_iter().take(2).collect();
    let mut a = asha(exp.path(), &runs, None);
    pause(&runs[1], 1, 0.3);
    assert!(a.settle(&[1], &[0]).unwrap().is_empty());
    pause(&runs[0], 1, 0.2);
    assert_eq!(pruned_runs(a.settle(&[0, 1], &[]).unwrap()), vec![0]);
    assert_eq!(decided(&a), vec![(0, 1, false, true), (1, 1, true, true)]);
}

#[test]
fn asha_decides_about_trainings_and_a_decode_variant_follows_its_training() {
    let exp = tempfile::tempdir().unwrap();
    let mut runs = runs(exp.path());
    // Run 1 decodes run 0's training: five trainings.
    runs[1].plan.training_id = runs[0].plan.training_id.clone();
    let mut a = asha(exp.path(), &runs, None);
    assert!(a.may_start(1));
    assert_eq!(a.pause_after(1), None, "a variant never pauses: it decodes");
    for (r, v) in [(0, 0.1), (2, 0.9), (3, 0.8), (4, 0.7), (5, 0.6)] {
        pause(&runs[r], 1, v);
    }
    // Complete with five trainings: ceil(5 / 3) = 2 go on; run 1 is pruned with run 0.
    assert_eq!(
        pruned_runs(a.settle(&[0, 1, 2, 3, 4, 5], &[]).unwrap()),
        vec![0, 1, 4, 5]
    );
    assert_eq!(
        decided(&a),
        vec![
            (0, 1, false, true),
            (2, 1, true, true),
            (3, 1, true, true),
            (4, 1, false, true),
            (5, 1, false, true),
        ]
    );
    assert_eq!(a.record.promotions[0].compared.len(), 5);
    assert_eq!(note(&runs[1]).kind, "asha");
}

/// Six runs as three configurations of two replicates each (grid order: configuration by
/// configuration), each replicate its own training.
fn replicate_runs(exp: &Path) -> Vec<PreparedRun> {
    let mut runs = runs(exp);
    for (i, r) in runs.iter_mut().enumerate() {
        r.plan.replicate = Some(crate::grid::Replicate {
            configuration: format!("c{}", i / 2),
            index: (i % 2) as u32,
        });
    }
    runs
}

#[test]
fn with_replicates_halving_ranks_configurations_by_their_mean_and_prunes_them_whole() {
    let exp = tempfile::tempdir().unwrap();
    let runs = replicate_runs(exp.path());
    let mut h = halving(exp.path(), &runs, None);
    let all: Vec<usize> = (0..6).collect();
    // Configuration 0 has the best single replicate (0.9) but the mean 0.55; configuration
    // 1's replicates agree at 0.7; configuration 2 has a replicate diverged (NaN).
    for (r, v) in [(0, 0.9), (1, 0.2), (2, 0.7), (3, 0.7), (4, 0.95)] {
        pause(&runs[r], 1, v);
    }
    // Run 5, the second replicate of configuration 2, still trains: nothing is decided.
    assert!(h.settle(&all, &[5]).unwrap().is_empty());
    pause(&runs[5], 1, f64::NAN);
    // ceil(3 / 3) = 1 configuration goes on: the best mean, not the best run.
    assert_eq!(pruned_runs(h.settle(&all, &[]).unwrap()), vec![0, 1, 4, 5]);
    let d = &h.record.decisions[0];
    assert_eq!(d.kept, vec![2]);
    assert_eq!(d.pruned, vec![0, 4]);
    assert_eq!(d.compared.len(), 3);
    assert!((d.compared[0].1 - 0.55).abs() < 1e-12, "{:?}", d.compared);
    assert!(d.compared[2].1.is_nan(), "a diverged replicate: no mean");
    // Each configuration's replicate values are recorded beside its mean.
    let values: Vec<(usize, Vec<usize>)> = d
        .replicates
        .iter()
        .map(|r| (r.configuration, r.values.iter().map(|v| v.0).collect()))
        .collect();
    assert_eq!(
        values,
        vec![(0, vec![0, 1]), (2, vec![2, 3]), (4, vec![4, 5])]
    );
    // Both replicates of a pruned configuration carry the configuration's note.
    for r in [0, 1] {
        let n = note(&runs[r]);
        assert_eq!((n.compared, n.kept, n.replicates), (3, 1, Some(2)));
        assert!((n.value.unwrap() - 0.55).abs() < 1e-12);
        assert_eq!(n.cut, Some(0.7));
        assert!(
            n.reason().contains("(mean of 2 replicates)")
                && n.reason().contains("configurations kept"),
            "{}",
            n.reason()
        );
    }
    assert_eq!(note(&runs[4]).value, None);
    assert!(h.may_start(2) && h.may_start(3));

    // The record without replicates carries no `replicates` field at all: schedules of grids
    // without `repeats` write what they wrote before.
    let json = std::fs::read_to_string(store::schedule_path(exp.path())).unwrap();
    assert!(json.contains("\"replicates\""), "{json}");
    let plain = tempfile::tempdir().unwrap();
    let runs = self::runs(plain.path());
    let mut h = halving(plain.path(), &runs, None);
    for (i, r) in runs.iter().enumerate() {
        pause(r, 1, 0.1 * i as f64);
    }
    h.settle(&all, &[]).unwrap();
    let json = std::fs::read_to_string(store::schedule_path(plain.path())).unwrap();
    assert!(!json.contains("replicates"), "{json}");
    assert_eq!(note(&runs[0]).replicates, None);
    // Such a record (or one an earlier version wrote, ranking replicates one by one) is not
    // replayed over a grid with replicates; one that ranked configurations is.
    let err = check_record(plain.path(), &schedule(), 2)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("schedule.json") && err.contains("repeats = 2"),
        "{err}"
    );
    assert!(
        check_record(plain.path(), &schedule(), 1)
            .unwrap()
            .is_some()
    );
    assert!(check_record(exp.path(), &schedule(), 2).unwrap().is_some());
    // Nor one over another number of replicates: its grid indices name other runs.
    for repeats in [1, 3] {
        let err = check_record(exp.path(), &schedule(), repeats)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("over 2 replicates") && err.contains(&format!("repeats = {repeats}")),
            "{err}"
        );
    }
}

#[test]
fn with_replicates_median_stopping_compares_a_configurations_mean_with_the_others() {
    let exp = tempfile::tempdir().unwrap();
    let runs = replicate_runs(exp.path());
    let t = trainings(exp.path(), &runs);
    let mut m = Synchronous::new(t, schedule_of(ScheduleKind::Median), None);
    let all: Vec<usize> = (0..6).collect();
    // Means 0.5, 0.625 and 0.375. Configuration 0 equals the median of the others' means
    // (0.625, 0.375): not worse, it goes on; configuration 2 is below theirs (0.5625).
    for (r, v) in [
        (0, 0.75),
        (1, 0.25),
        (2, 0.5),
        (3, 0.75),
        (4, 0.25),
        (5, 0.5),
    ] {
        pause(&runs[r], 1, v);
    }
    assert_eq!(pruned_runs(m.settle(&all, &[]).unwrap()), vec![4, 5]);
    assert_eq!(m.record.decisions[0].kept, vec![2, 0]);
    let n = note(&runs[5]);
    assert_eq!(
        (n.kind.as_str(), n.replicates, n.compared),
        ("median", Some(2), 3)
    );
    assert_eq!((n.value, n.cut), (Some(0.375), Some(0.5625)));
}

#[test]
fn with_replicates_asha_waits_for_every_replicate_of_a_configuration() {
    let exp = tempfile::tempdir().unwrap();
    let runs = replicate_runs(exp.path());
    let mut a = asha(exp.path(), &runs, None);
    let all: Vec<usize> = (0..6).collect();
    // Configurations 0 and 1 stand at rung 1; one replicate of configuration 2 does too,
    // the other still trains: the rung has two configuration means, fewer than eta, and the
    // best single value (run 4's 0.9) promotes nothing on its own.
    for (r, v) in [(0, 0.5), (1, 0.5), (2, 0.25), (3, 0.25), (4, 0.9)] {
        pause(&runs[r], 1, v);
    }
    assert!(a.settle(&all, &[5]).unwrap().is_empty());
    assert!(
        !a.may_start(4),
        "a replicate waits at its rung for the others"
    );
    assert!(a.may_start(5), "its sibling trains on to the rung");
    // The last replicate arrives (configuration 2's mean 0.75): the rung is complete and
    // keeps ceil(3 / 3) = 1 configuration, both of its replicates; the others stop whole.
    pause(&runs[5], 1, 0.6);
    assert_eq!(pruned_runs(a.settle(&all, &[]).unwrap()), vec![0, 1, 2, 3]);
    assert_eq!(
        decided(&a),
        vec![(0, 1, false, true), (2, 1, false, true), (4, 1, true, true)]
    );
    let p = &a.record.promotions[2];
    assert_eq!(p.compared.len(), 3);
    assert!((p.compared[2].1 - 0.75).abs() < 1e-12, "{:?}", p.compared);
    assert_eq!(p.replicates.len(), 3);
    assert_eq!(note(&runs[1]).replicates, Some(2));
    assert!(a.may_start(4) && a.may_start(5));
    assert_eq!((a.pause_after(4), a.pause_after(5)), (Some(3), Some(3)));
    assert_eq!(a.priority(4), a.priority(5));
}
