//! Successive halving against real run directories, without processes.

use super::*;
use crate::store::{MetricRecord, PlanRecord, RunDir};

const METRIC: &str = "dev/accuracy";

fn schedule() -> ScheduleSpec {
    ScheduleSpec {
        kind: ScheduleKind::SuccessiveHalving,
        min_epochs: 1,
        reduction_factor: 3,
        max_epochs: 0,
    }
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
    let mut h = Halving::new(&runs, exp.path(), schedule(), METRIC, SelectMode::Max, None);
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
    let record = check_record(exp.path(), &schedule()).unwrap();
    let mut again = Halving::new(
        &runs,
        exp.path(),
        schedule(),
        METRIC,
        SelectMode::Max,
        record,
    );
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
    let err = check_record(exp.path(), &other).unwrap_err().to_string();
    assert!(err.contains("schedule.json"), "{err}");
}
