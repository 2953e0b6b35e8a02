//! Checkpoints a killed worker left behind, through the real binary: a checkpoint half
//! deleted by pruning and a leftover of interrupted pruning must neither wedge the run nor
//! make the orchestrator announce another epoch than the one the worker resumes from.

use crate::util::workdir::{TestDir, run_dirs};
use serde_json::Value;
use std::fs;
use std::path::Path;

/// One CNN run on a few hundred images, 3 epochs, only the last checkpoint kept.
const SPEC: &str = r#"
name = "wedge"
seed = 7

[data]
format = "idx"
dir = "data/fashion-mnist-mini"
train_limit = 300
test_limit = 100

[model]
kind = "cnn"

[train]
epochs = 3
batch_size = 32
log_every = 5

[train.checkpoint]
keep_last = 1
keep_best = false
"#;

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
/// `epoch-0001/` holding its model only, a complete `epoch-0002/`, no epoch 3, the status of
/// an attempt that failed after epoch 1, and a leftover being-deleted directory.
fn wedge(run: &Path) {
    let ck = run.join("checkpoints");
    let last = ck.join("epoch-0003");
    let mut state: Value = serde_json::from_slice(&fs::read(last.join("state.json")).unwrap())
        .expect("state.json");
    let per_epoch = state["step"].as_u64().unwrap() / 3;
    state["epoch"] = 2.into();
    state["step"] = (2 * per_epoch).into();
    state["optimizer_steps"] = (2 * per_epoch).into();
    state["finished"] = false.into();
    state["stopped_early"] = false.into();
    let two = ck.join("epoch-0002");
    copy_dir(&last, &two);
    fs::write(two.join("state.json"), state.to_string()).unwrap();
    let one = ck.join("epoch-0001");
    fs::create_dir(&one).unwrap();
    fs::copy(last.join("model.safetensors"), one.join("model.safetensors")).unwrap();
    copy_dir(&last, &ck.join(".epoch-0000.del"));
    fs::remove_dir_all(&last).unwrap();
    let status = serde_json::json!({"state": "failed", "attempts": 1, "epoch": 1,
        "message": "worker exited with status 137"});
    fs::write(run.join("status.json"), status.to_string()).unwrap();
}

#[test]
fn a_run_killed_while_pruning_resumes_from_its_newest_complete_checkpoint() {
    let t = TestDir::new();
    fs::write(t.path().join("wedge.toml"), SPEC).unwrap();
    t.run(&["run", "wedge.toml", "--jobs", "1", "--threads", "1"])
        .expect_code(0);
    let runs = run_dirs(&t.exp_dir("wedge"));
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(entries(&run.join("checkpoints")), vec!["epoch-0003"]);

    wedge(run);
    let out = t.run(&["run", "wedge.toml", "--jobs", "1", "--threads", "1"]);
    out.expect_code(0);
    // The orchestrator names the epoch the worker resumes from, not status.json's.
    assert!(
        out.stdout().contains("resuming after epoch 2/3"),
        "{}",
        out.report()
    );
    let log = fs::read_to_string(run.join("worker.log")).unwrap();
    assert!(log.contains("resumed from epoch 2 of 3"), "{log}");
    // Epoch 3 trained, and pruning went through: the half-deleted epoch 1 and the leftover
    // are gone, epoch 2 was pruned, only the last checkpoint stays.
    let status: Value =
        serde_json::from_slice(&fs::read(run.join("status.json")).unwrap()).unwrap();
    assert_eq!(status["state"], "done", "{}", out.report());
    assert_eq!(status["epoch"], 3, "{}", out.report());
    assert_eq!(entries(&run.join("checkpoints")), vec!["epoch-0003"]);
}
