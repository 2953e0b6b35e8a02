//! Translation runs that must honour every `train.*` key as image runs do, and an `inspect`
//! that must show the model training builds: through the real binary on the shipped
//! `q3_smoke` spec and `data/spa-eng-mini` pairs (4 runs, 2 trainings, seconds each).

use crate::util::Sandbox;
use crate::util::runs::run_dirs;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Runs `q3_smoke` with `sets` and returns its trained runs (the ones that wrote
/// `train/loss`; the decode-only variants reuse them).
fn trained_q3_smoke(sb: &Sandbox, sets: &[&str]) -> Vec<PathBuf> {
    let mut args = vec!["run", "experiments/q3_smoke.toml", "--jobs", "2"];
    for s in sets {
        args.extend(["--set", s]);
    }
    sb.run(&args).ok();
    let runs = run_dirs(&sb.path().join("runs/q3_smoke"));
    assert_eq!(runs.len(), 4);
    let trained: Vec<PathBuf> = runs
        .into_iter()
        .filter(|d| !scalars(d, "train/loss").is_empty())
        .collect();
    assert_eq!(trained.len(), 2);
    trained
}

/// `(epoch, value)` of every record of `tag` in a run's `metrics.jsonl`.
fn scalars(run: &Path, tag: &str) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["tag"] == tag)
        .map(|r| (r["epoch"].as_u64().unwrap(), r["value"].as_f64().unwrap()))
        .collect()
}

#[test]
fn seq2seq_patience_stops_training_and_the_running_loss_has_the_image_runs_tag() {
    let sb = Sandbox::with_data();
    // No epoch beats the first by 10: patience 2 runs out after epoch 3 of 5. On main all
    // five epochs ran and the running loss was `train/batch_loss`.
    let trained = trained_q3_smoke(
        &sb,
        &[
            "train.early_stopping.patience=2",
            "train.early_stopping.min_delta=10",
            "train.log_every=5",
        ],
    );
    for run in &trained {
        let epochs: Vec<u64> = scalars(run, "dev/error_rate").iter().map(|r| r.0).collect();
        assert_eq!(epochs, [1, 2, 3], "{}", run.display());
        assert_eq!(scalars(run, "test/error_rate").len(), 1);
        assert!(!scalars(run, "train/running_loss").is_empty());
        assert!(scalars(run, "train/batch_loss").is_empty());
    }
}

#[test]
fn seq2seq_keeps_the_best_checkpoint_by_select_metric_and_mode() {
    let sb = Sandbox::with_data();
    // On main the best checkpoint was the lowest dev error rate whatever `select` said.
    let trained = trained_q3_smoke(
        &sb,
        &[
            "select.metric=dev/loss",
            "select.mode=max",
            "train.checkpoint.keep_last=1",
            "train.checkpoint.keep_best=true",
        ],
    );
    for run in &trained {
        let dev_loss = scalars(run, "dev/loss");
        let mut best = dev_loss[0];
        for &r in &dev_loss[1..] {
            if r.1 > best.1 {
                best = r;
            }
        }
        let last = dev_loss.last().unwrap().0;
        let mut want = vec![format!("epoch-{:04}", best.0), format!("epoch-{last:04}")];
        want.dedup();
        let mut kept: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("epoch-"))
            .collect();
        kept.sort();
        assert_eq!(kept, want, "dev/loss {dev_loss:?}");
        let state: Value = serde_json::from_slice(
            &std::fs::read(run.join("checkpoints").join(&want[0]).join("state.json")).unwrap(),
        )
        .unwrap();
        // Checkpoints keep floats as exact text; metrics.jsonl as JSON numbers.
        let metric: f64 = state["metric"].as_str().unwrap().parse().unwrap();
        assert!(
            (metric - best.1).abs() < 1e-12,
            "records dev/loss: {metric} {best:?}"
        );
    }
}

#[test]
fn a_decoder_size_the_model_refuses_is_a_spec_error_before_anything_is_written() {
    // On main validation and `inspect` accepted it (listing a "bridge" layer) and the worker
    // failed on it. Untied, so that the tied-embedding rule does not refuse it first.
    let sb = Sandbox::with_data();
    let sets = [
        "--set",
        "model.decoder_hidden=48",
        "--set",
        "model.tie_embeddings=false",
    ];
    let run = sb.run(&[&["run", "experiments/q3_smoke.toml"], &sets[..]].concat());
    run.expect_code(3).stderr_has("model.decoder_hidden");
    assert!(!sb.path().join("runs").exists(), "nothing under runs/");
    let out = sb.run(&[&["inspect", "experiments/q3_smoke.toml"], &sets[..]].concat());
    out.expect_code(3).stderr_has("model.decoder_hidden");
    assert!(!out.stdout.contains("bridge"), "{}", out.stdout);
}

#[test]
fn inspect_counts_the_vocabulary_after_training_s_normalisation() {
    let sb = Sandbox::new();
    // Lower-cased and stripped as training reads them: Spanish {v, e, .}, English {g, o, .}
    // plus 4 special tokens each. On main the capitals counted again: 9 and 9.
    sb.write(
        "data/spa-eng/train-eng-spa.txt",
        "Go.\tVe.\ngo.\t ve.\nGO.\tVE.\n",
    );
    sb.run(&["inspect", "experiments/q3_attention.toml"])
        .ok()
        .stdout_has("vocabularies 7 source and 7 target tokens");
}
