//! The attempt number a resumed run's training reports: the worker decides it once and both
//! model kinds' `Started` event carries it (seq2seq training said attempt 1 whatever the
//! attempt, and the worker patched the event on its way to the sinks).

use crate::util::Sandbox;
use crate::util::runs::run_dirs;
use std::fs;

/// One tiny translator on the shipped pairs, 3 epochs, every checkpoint kept.
const SPEC: &str = r#"
name = "attempts"
seed = 42

[data]
format = "tsv-pairs"
dir = "data/spa-eng-mini"
train = "train-eng-spa.txt"
dev = "val-eng-spa.txt"
test = "test-eng-spa.txt"
source_column = 1
target_column = 0
max_len = 30

[model]
kind = "seq2seq"
embedding_dim = 16
encoder_hidden = 8
decoder_hidden = 16

[train]
epochs = 3
batch_size = 32

[train.checkpoint]
keep_last = 3

[decode]
max_len = 30
"#;

#[test]
fn a_resumed_seq2seq_run_reports_attempt_2_in_its_started_event() {
    let sb = Sandbox::with_data();
    sb.write("attempts.toml", SPEC);
    let args = ["run", "attempts.toml", "--jobs", "1", "--threads", "1"];
    sb.run(&args).expect_code(0);
    let runs = run_dirs(&sb.path().join("runs/attempts"));
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    // What a worker killed during epoch 3 leaves: the checkpoints of epochs 1 and 2 and the
    // status of a failed first attempt.
    fs::remove_dir_all(run.join("checkpoints/epoch-0003")).unwrap();
    let status = serde_json::json!({"state": "failed", "attempts": 1, "epoch": 2,
        "message": "worker exited with status 137"});
    fs::write(run.join("status.json"), status.to_string()).unwrap();

    sb.run(&args).expect_code(0);
    // The worker prints the `Started` event training emitted, attempt included.
    let log = fs::read_to_string(run.join("worker.log")).unwrap();
    assert!(log.contains("attempt 1, fresh start, 3 epochs"), "{log}");
    assert!(log.contains("attempt 2 resumed from epoch 2 of 3"), "{log}");
}
