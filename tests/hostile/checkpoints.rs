//! Checkpoints a killed worker left behind, through the real binary: a checkpoint half
//! deleted by pruning and a leftover of interrupted pruning must neither wedge the run nor
//! make the orchestrator announce another epoch than the one the worker resumes from.

use crate::util::runs::run_dirs;
use crate::util::{Output, Sandbox};
use serde_json::Value;
use std::fs;
use std::path::Path;

/// One CNN run on a few hundred images, 3 epochs, only the last checkpoint kept.
fn spec() -> String {
    crate::util::mini_cnn_spec(
        "wedge",
        300,
        3,
        "",
        "[train.checkpoint]\nkeep_last = 1\nkeep_best = false\n",
    )
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Turns a finished run into what a worker killed while pruning at the end of epoch 2 leaves:
/// a complete `epoch-0002/`, no epoch 3, and the status of an attempt that failed after epoch
/// `status_epoch`. With `half_deleted`, `epoch-0001/` holds its model only (main's pruning
/// deleted file by file); with `leftover`, a hidden being-deleted directory is left too.
fn interrupt_in_pruning(run: &Path, half_deleted: bool, leftover: bool, status_epoch: usize) {
    let ck = run.join("checkpoints");
    let last = ck.join("epoch-0003");
    let mut state: Value =
        serde_json::from_slice(&fs::read(last.join("state.json")).unwrap()).expect("state.json");
    let per_epoch = state["step"].as_u64().unwrap() / 3;
    state["epoch"] = 2.into();
    state["step"] = (2 * per_epoch).into();
    state["optimizer_steps"] = (2 * per_epoch).into();
    state["finished"] = false.into();
    state["stopped_early"] = false.into();
    let two = ck.join("epoch-0002");
    copy_dir(&last, &two);
    fs::write(two.join("state.json"), state.to_string()).unwrap();
    if half_deleted {
        let one = ck.join("epoch-0001");
        fs::create_dir(&one).unwrap();
        fs::copy(
            last.join("model.safetensors"),
            one.join("model.safetensors"),
        )
        .unwrap();
    }
    if leftover {
        copy_dir(&last, &ck.join(".epoch-0001.del"));
    }
    fs::remove_dir_all(&last).unwrap();
    let status = serde_json::json!({"state": "failed", "attempts": 1, "epoch": status_epoch,
        "message": "worker exited with status 137"});
    fs::write(run.join("status.json"), status.to_string()).unwrap();
}

/// Trains the spec to the end, interrupts its run as `interrupt` says, and runs it again.
fn rerun_after(interrupt: impl Fn(&Path)) -> (Sandbox, std::path::PathBuf, Output) {
    let t = Sandbox::with_data();
    fs::write(t.path().join("wedge.toml"), spec()).unwrap();
    let args = ["run", "wedge.toml", "--jobs", "1", "--threads", "1"];
    t.run(&args).expect_code(0);
    let runs = run_dirs(&t.exp_dir("wedge"));
    assert_eq!(runs.len(), 1);
    let run = runs[0].clone();
    assert_eq!(entries(&run.join("checkpoints")), vec!["epoch-0003"]);
    interrupt(&run);
    let out = t.run(&args);
    (t, run, out)
}

/// The run finished epoch 3 after resuming from epoch 2, and only its last checkpoint is left.
fn assert_resumed_from_2_and_pruned(run: &Path, out: &Output) {
    out.expect_code(0);
    let log = fs::read_to_string(run.join("worker.log")).unwrap();
    assert!(log.contains("resumed from epoch 2 of 3"), "{log}");
    let status: Value =
        serde_json::from_slice(&fs::read(run.join("status.json")).unwrap()).unwrap();
    assert_eq!(status["state"], "done", "{}", out.report());
    assert_eq!(status["epoch"], 3, "{}", out.report());
    assert_eq!(entries(&run.join("checkpoints")), vec!["epoch-0003"]);
}

#[test]
fn a_half_deleted_checkpoint_is_skipped_and_the_start_line_names_the_resumed_epoch() {
    // On main the worker resumed from 2 while the orchestrator said "after epoch 1", and the
    // prune at the end of epoch 3 failed on epoch-0001/state.json, so the run never finished.
    let (_t, run, out) = rerun_after(|run| interrupt_in_pruning(run, true, false, 1));
    assert!(
        out.stdout.contains("resuming after epoch 2/3"),
        "{}",
        out.report()
    );
    assert_resumed_from_2_and_pruned(&run, &out);
}

#[test]
fn a_leftover_of_interrupted_pruning_is_removed_on_resume() {
    // On main a hidden being-deleted directory stayed for good.
    let (_t, run, out) = rerun_after(|run| interrupt_in_pruning(run, false, true, 2));
    assert_resumed_from_2_and_pruned(&run, &out);
}
