//! TensorBoard logs read back by TensorBoard's own reader (`tools/tb_check.py`): a small
//! grid with scalars, images, text and hparams, a run killed and resumed, and a run pruned
//! at a rung, then promoted.
//!
//! The Python side needs `pip install tensorboard` (no TensorFlow). Without it these tests
//! fail, unless `ORCHESTRATE_SKIP_TB_CHECK=1` says to skip them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use orchestrate::events::{EventSink, RunEvent};
use orchestrate::sinks::tensorboard::{
    HParamValue, PRUNED_TAG, TensorBoardSink, domains_from_runs, end_pruned_session,
    write_experiment,
};
use orchestrate::store::{PlanRecord, RunDir, RunState};
use serde_json::Value;

mod util;
use util::tb::tb_check;

const SPE: u64 = 10;

fn emit(sink: &mut TensorBoardSink, ev: RunEvent) {
    sink.emit(&ev).unwrap_or_else(|e| panic!("{ev:?}: {e}"));
}

fn scalar(epoch: usize, step: u64, tag: &str, value: f64) -> RunEvent {
    RunEvent::Scalar {
        epoch,
        step,
        tag: tag.into(),
        value,
    }
}

/// One epoch as the trainer emits it: train/loss every 5 steps, then dev metrics, lr,
/// timings and EpochEnd. `upto` cuts the epoch short (a kill) before its dev metrics.
fn epoch_events(sink: &mut TensorBoardSink, epoch: usize, lr: f64, upto: Option<u64>) {
    let first = (epoch as u64 - 1) * SPE + 1;
    let last = epoch as u64 * SPE;
    for step in first..=upto.unwrap_or(last) {
        if step % 5 == 0 {
            emit(sink, scalar(epoch, step, "train/loss", 2.0 / step as f64));
        }
    }
    if upto.is_some() {
        return;
    }
    emit(sink, scalar(epoch, last, "dev/loss", 1.0 / epoch as f64));
    emit(
        sink,
        scalar(epoch, last, "dev/accuracy", 0.5 + 0.1 * epoch as f64),
    );
    emit(sink, scalar(epoch, last, "lr", lr));
    emit(sink, scalar(epoch, last, "time/epoch_seconds", 1.25));
    emit(sink, scalar(epoch, last, "time/samples_per_second", 800.0));
    emit(sink, RunEvent::EpochEnd { epoch, step: last });
}

fn started(resumed_from: usize, attempt: u32) -> RunEvent {
    RunEvent::Started {
        attempt,
        resumed_from,
        epochs: 3,
        steps_per_epoch: SPE,
    }
}

/// A greyscale 20-wide, 12-high gradient: wrong if width and height were swapped.
fn grey_image() -> (u32, u32, Vec<u8>) {
    let (w, h) = (20u32, 12u32);
    let px = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x * 12 + y) as u8))
        .collect();
    (w, h, px)
}

fn run_hparams(lr: f64) -> BTreeMap<String, HParamValue> {
    let mut hp = BTreeMap::new();
    hp.insert("optimizer.lr".to_string(), HParamValue::Number(lr));
    hp.insert("model.kind".to_string(), HParamValue::Text("cnn".into()));
    hp.insert("train.epochs".to_string(), HParamValue::Number(3.0));
    hp
}

/// The log directory of run `id` of experiment `exp` under `runs`, labelled `label` in its
/// plan, as the orchestrator lays it out.
fn log_dir(runs: &Path, exp: &str, id: &str, label: &str) -> PathBuf {
    let plan = PlanRecord {
        index: 0,
        id: id.into(),
        training_id: id.into(),
        name: label.into(),
        varied: Default::default(),
        data: Default::default(),
        numerics: 0,
        replicate: None,
        tensorboard: label.into(),
    };
    RunDir::new(runs, exp, id).tensorboard(&plan).unwrap()
}

/// A whole run of 3 epochs ending in `end` with test accuracy `test_acc`.
fn full_run(dir: &Path, lr: f64, end: RunState, test_acc: f64) {
    let mut sink = TensorBoardSink::in_dir(dir.to_path_buf(), run_hparams(lr));
    emit(&mut sink, started(0, 1));
    for epoch in 1..=3 {
        epoch_events(&mut sink, epoch, lr, None);
    }
    let (w, h, px) = grey_image();
    emit(
        &mut sink,
        RunEvent::Image {
            step: 30,
            tag: "conv1/input".into(),
            width: w,
            height: h,
            channels: 1,
            pixels: px,
        },
    );
    emit(
        &mut sink,
        RunEvent::Image {
            step: 30,
            tag: "conv1/activations".into(),
            width: 6,
            height: 4,
            channels: 3,
            pixels: (0..72).map(|i| (i * 3) as u8).collect(),
        },
    );
    emit(
        &mut sink,
        RunEvent::Text {
            step: 30,
            tag: "samples/translations".into(),
            text: "| source | output |\n|---|---|\n| hola | hello |".into(),
        },
    );
    emit(&mut sink, scalar(3, 30, "test/accuracy", test_acc));
    emit(
        &mut sink,
        RunEvent::Finished {
            state: end,
            epoch: 3,
            message: None,
        },
    );
}

fn run(v: &Value, name: &str) -> Value {
    v["runs"]
        .get(name)
        .unwrap_or_else(|| panic!("no run {name} in {v:#}"))
        .clone()
}

fn steps(run: &Value, tag: &str) -> Vec<u64> {
    run["scalars"][tag]
        .as_array()
        .unwrap_or_else(|| panic!("no scalar {tag} in {run:#}"))
        .iter()
        .map(|p| p[0].as_u64().unwrap())
        .collect()
}

#[test]
fn grid_logs_read_back_by_tensorboard() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let exp = runs.join("q2_grid");
    let good = log_dir(&runs, "q2_grid", "aaaaaaaaaaaa", "lr0.001");
    let bad = log_dir(&runs, "q2_grid", "bbbbbbbbbbbb", "lr0.01");
    full_run(&good, 1e-3, RunState::Done, 0.9);
    full_run(&bad, 1e-2, RunState::Diverged, 0.1);
    let maps = [run_hparams(1e-3), run_hparams(1e-2)];
    let metrics: Vec<String> = ["dev/accuracy", "dev/loss", "test/accuracy", "train/loss"]
        .map(String::from)
        .to_vec();
    let tree = exp.join("tb");
    write_experiment(&good, &tree, &exp, &domains_from_runs(&maps), &metrics).unwrap();

    // `--logdir runs/q2_grid` shows the names under the tree's directory.
    let Some(v) = tb_check(&exp, &[]) else { return };
    assert_eq!(
        v["run_selector"],
        serde_json::json!(["tb/lr0.001", "tb/lr0.01"])
    );
    // `--logdir runs/q2_grid/tb`: the grid's names alone, and no run `.` (the experiment
    // record sits in the first run's directory).
    let v = tb_check(&tree, &[]).unwrap();
    let names: Vec<&String> = v["runs"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["lr0.001", "lr0.01"]);
    let mut selector: Vec<&str> = v["run_selector"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    selector.sort();
    assert_eq!(selector, ["lr0.001", "lr0.01"]);

    let r = run(&v, "lr0.001");
    assert_eq!(steps(&r, "train/loss"), [5, 10, 15, 20, 25, 30]);
    for tag in ["dev/loss", "dev/accuracy", "lr", "time/epoch_seconds"] {
        assert_eq!(steps(&r, tag), [10, 20, 30], "{tag}");
    }
    assert_eq!(steps(&r, "test/accuracy"), [30]);
    let acc = r["scalars"]["dev/accuracy"][2][1].as_f64().unwrap();
    assert!((acc - 0.8).abs() < 1e-6, "{acc}");

    let img = &r["images"]["conv1/input"][0];
    assert_eq!(img["step"], 30);
    assert_eq!(
        (img["width"].as_u64(), img["height"].as_u64()),
        (Some(20), Some(12))
    );
    assert_eq!(img["decoded"]["size"], serde_json::json!([20, 12]));
    assert_eq!(img["decoded"]["mode"], "L");
    let (_, _, px) = grey_image();
    let expected_sum: u64 = px.iter().map(|&p| p as u64).sum();
    assert_eq!(img["decoded"]["pixel_sum"].as_u64(), Some(expected_sum));
    let act = &r["images"]["conv1/activations"][0];
    assert_eq!(act["decoded"]["size"], serde_json::json!([6, 4]));
    assert_eq!(act["decoded"]["mode"], "RGB");

    let text = &r["text"]["samples/translations"][0];
    assert_eq!(text[0], 30);
    assert!(
        text[1].as_str().unwrap().contains("| hola | hello |"),
        "{text}"
    );

    let start = &r["hparams"]["session_start_info"];
    assert_eq!(start["optimizer.lr"], 1e-3);
    assert_eq!(start["model.kind"], "cnn");
    assert_eq!(r["hparams"]["session_end_info"]["status"], "STATUS_SUCCESS");
    let b = run(&v, "lr0.01");
    assert_eq!(b["hparams"]["session_end_info"]["status"], "STATUS_FAILURE");

    let e = &r["hparams"]["experiment"];
    let lr = e["hparam_infos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "optimizer.lr")
        .unwrap_or_else(|| panic!("{e:#}"));
    assert_eq!(lr["domain_discrete"], serde_json::json!([1e-3, 1e-2]));
    assert_eq!(e["metric_tags"], serde_json::json!(metrics));

    // What the HParams dashboard shows: one row per run with its final metrics.
    let groups = v["session_groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{v:#}");
    for (name, lr, test_acc, status) in [
        ("lr0.001", 1e-3, 0.9, "STATUS_SUCCESS"),
        ("lr0.01", 1e-2, 0.1, "STATUS_FAILURE"),
    ] {
        let g = groups
            .iter()
            .find(|g| g["name"] == name)
            .unwrap_or_else(|| panic!("no session group {name}: {v:#}"));
        assert_eq!(g["hparams"]["optimizer.lr"], lr, "{g}");
        assert_eq!(g["status"], serde_json::json!([status]), "{g}");
        let m = &g["metrics"];
        assert!(
            (m["test/accuracy"].as_f64().unwrap() - test_acc).abs() < 1e-6,
            "{g}"
        );
        assert!(
            (m["dev/accuracy"].as_f64().unwrap() - 0.8).abs() < 1e-6,
            "{g}"
        );
        assert!(
            (m["train/loss"].as_f64().unwrap() - 2.0 / 30.0).abs() < 1e-6,
            "{g}"
        );
    }
}

#[test]
fn killed_and_resumed_run_has_a_continuous_curve() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let tree = runs.join("resume").join("tb");
    let dir = log_dir(&runs, "resume", "cccccccccccc", "lr0.001");
    let hp = run_hparams(1e-3);
    // The experiment record shares the first run's directory; resuming must keep it.
    let maps = [hp.clone()];
    let metrics = ["dev/loss".to_string()];
    let exp = runs.join("resume");
    write_experiment(&dir, &tree, &exp, &domains_from_runs(&maps), &metrics).unwrap();

    // Attempt 1: epochs 1 and 2 complete, epoch 3 killed at step 27 mid-record.
    let mut a = TensorBoardSink::in_dir(dir.clone(), hp.clone());
    emit(&mut a, started(0, 1));
    epoch_events(&mut a, 1, 1e-3, None);
    epoch_events(&mut a, 2, 1e-3, None);
    epoch_events(&mut a, 3, 1e-3, Some(27));
    drop(a);
    let file = newest_run_file(&dir);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    f.write_all(&[7, 0, 0, 0, 0, 0, 0]).unwrap(); // a length field, cut short

    // The killed attempt's file is readable up to its last complete record.
    let Some(v) = tb_check(&tree, &["--allow-truncated-tail"]) else {
        return;
    };
    let r = run(&v, "lr0.001");
    assert_eq!(steps(&r, "train/loss"), [5, 10, 15, 20, 25]);
    let torn: Vec<bool> = r["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["truncated_tail"] == true)
        .collect();
    assert_eq!(
        torn,
        [false, true],
        "the experiment file, then the killed one: {r:#}"
    );

    // Attempt 2 resumes after epoch 2.
    let mut b = TensorBoardSink::in_dir(dir.clone(), hp);
    emit(&mut b, started(2, 2));
    epoch_events(&mut b, 3, 1e-3, None);
    emit(
        &mut b,
        RunEvent::Finished {
            state: RunState::Done,
            epoch: 3,
            message: None,
        },
    );

    let v = tb_check(&tree, &[]).unwrap();
    let r = run(&v, "lr0.001");
    assert_eq!(steps(&r, "train/loss"), [5, 10, 15, 20, 25, 30]);
    // The files themselves hold no orphaned point: any reader, purging or not, sees one
    // continuous curve.
    let stored: Vec<u64> = r["files"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| {
            f["stored_steps"]["train/loss"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|s| s.as_u64().unwrap())
        .collect();
    assert_eq!(stored, [5, 10, 15, 20, 25, 30], "{r:#}");
    assert_eq!(steps(&r, "dev/loss"), [10, 20, 30]);
    assert_eq!(r["hparams"]["session_end_info"]["status"], "STATUS_SUCCESS");
    assert_eq!(r["hparams"]["session_start_info"]["optimizer.lr"], 1e-3);
    assert_eq!(
        r["hparams"]["experiment"]["metric_tags"],
        serde_json::json!(metrics)
    );
}

/// The HParams dashboard's status of the session group `name`.
fn group_status(v: &Value, name: &str) -> Value {
    v["session_groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("no session group {name}: {v:#}"))["status"]
        .clone()
}

#[test]
fn a_pruned_run_ends_as_failure_with_a_note_and_once_promoted_and_done_as_success() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let tree = runs.join("prune").join("tb");
    let pruned = log_dir(&runs, "prune", "aaaaaaaaaaaa", "lr0.01");
    let kept = log_dir(&runs, "prune", "bbbbbbbbbbbb", "lr0.001");
    // Both train to the rung at epoch 1 and pause there (the worker exits, no end record).
    for (dir, lr) in [(&pruned, 1e-2), (&kept, 1e-3)] {
        let mut sink = TensorBoardSink::in_dir(dir.clone(), run_hparams(lr));
        emit(&mut sink, started(0, 1));
        epoch_events(&mut sink, 1, lr, None);
        emit(
            &mut sink,
            RunEvent::Finished {
                state: RunState::Paused,
                epoch: 1,
                message: None,
            },
        );
    }
    let Some(v) = tb_check(&tree, &[]) else {
        return;
    };
    // Paused: no end record, TensorBoard's "unknown", like a run still training.
    assert_eq!(
        group_status(&v, "lr0.01"),
        serde_json::json!(["STATUS_UNKNOWN"])
    );
    assert!(
        run(&v, "lr0.01")["hparams"]
            .get("session_end_info")
            .is_none()
    );

    // The orchestrator prunes lr0.01; a replayed decision writes nothing more.
    let reason = "pruned at rung 1 (epoch 1) of successive_halving: dev/accuracy 0.6000 \
                  against the cut 0.7000 (1 of 2 kept)";
    end_pruned_session(&pruned, 1, reason).unwrap();
    let files = std::fs::read_dir(&pruned).unwrap().count();
    end_pruned_session(&pruned, 1, reason).unwrap();
    assert_eq!(std::fs::read_dir(&pruned).unwrap().count(), files);

    let v = tb_check(&tree, &[]).unwrap();
    assert_eq!(
        group_status(&v, "lr0.01"),
        serde_json::json!(["STATUS_FAILURE"])
    );
    assert_eq!(
        group_status(&v, "lr0.001"),
        serde_json::json!(["STATUS_UNKNOWN"])
    );
    let r = run(&v, "lr0.01");
    assert_eq!(r["hparams"]["session_end_info"]["status"], "STATUS_FAILURE");
    assert_eq!(r["text"][PRUNED_TAG], serde_json::json!([[10, reason]]));
    // The curve ends where the run stopped.
    assert_eq!(steps(&r, "dev/accuracy"), [10]);

    // `--promote`: the worker resumes after epoch 1, trains to the end and finishes done.
    let mut sink = TensorBoardSink::in_dir(pruned.clone(), run_hparams(1e-2));
    emit(&mut sink, started(1, 2));
    for epoch in 2..=3 {
        epoch_events(&mut sink, epoch, 1e-2, None);
    }
    emit(
        &mut sink,
        RunEvent::Finished {
            state: RunState::Done,
            epoch: 3,
            message: None,
        },
    );
    let v = tb_check(&tree, &[]).unwrap();
    assert_eq!(
        group_status(&v, "lr0.01"),
        serde_json::json!(["STATUS_SUCCESS"])
    );
    let r = run(&v, "lr0.01");
    assert!(r["text"].get(PRUNED_TAG).is_none(), "{r:#}");
    assert_eq!(steps(&r, "dev/accuracy"), [10, 20, 30]);
    assert_eq!(steps(&r, "train/loss"), [5, 10, 15, 20, 25, 30]);
}

/// The newest event file the run's sink wrote (not the experiment record's file).
fn newest_run_file(dir: &Path) -> PathBuf {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("tfevents"))
        .filter(|p| !p.to_string_lossy().ends_with(".experiment"))
        .collect();
    names.sort();
    names.pop().unwrap()
}
