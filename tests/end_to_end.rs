//! The shipped smoke experiment end to end through the real binary: worker processes train
//! on the shipped data, the winner is named, summaries and TensorBoard logs are written (and
//! read back by TensorBoard's own reader), and a second `run` redoes nothing.

mod util;

use util::Sandbox;
use util::runs::run_dirs;
use util::tb::tb_check;

#[test]
fn smoke_grid_trains_names_a_winner_and_logs_what_tensorboard_reads() {
    let t = Sandbox::with_data();
    let run = t.run(&["run", "experiments/smoke.toml", "--jobs", "2"]);
    run.expect_code(0);
    let out = &run.stdout;
    assert!(out.contains("best: lr"), "no winner line\n{}", run.report());

    let exp = t.exp_dir("smoke");
    let runs = run_dirs(&exp);
    assert_eq!(runs.len(), 2, "{runs:?}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(exp.join("summary.json")).unwrap()).unwrap();
    let winner = summary["winner"].as_str().expect("a winner").to_string();
    assert!(out.contains(&winner), "winner line names {winner}\n{out}");

    // Learning happened: accuracy far above chance (10 classes) on dev for every run.
    for dir in &runs {
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(s["run"]["state"], "done", "{s}");
        let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
        let dev: Vec<f64> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["tag"] == "dev/accuracy")
            .map(|v| v["value"].as_f64().unwrap())
            .collect();
        assert_eq!(dev.len(), 2, "one dev accuracy per epoch: {dev:?}");
        assert!(dev[1] > 0.4, "dev accuracy {dev:?} is not far above chance");
        assert!(dir.join("artifacts/conv1_activations.png").is_file());
    }

    // TensorBoard's own reader sees every run, named as the grid names it, with its curves,
    // images and hparams; `--logdir runs/smoke/tb` lists the names and no run `.`.
    if let Some(tb) = tb_check(&exp.join("tb"), &[]) {
        let mut names = Vec::new();
        for dir in &runs {
            let plan: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("plan.json")).unwrap())
                    .unwrap();
            let name = plan["name"].as_str().unwrap().to_string();
            assert!(name.starts_with("lr0.00"), "{plan}");
            assert_eq!(plan["tensorboard"], name.as_str(), "{plan}");
            assert!(!dir.join("tb").exists(), "no log inside the run directory");
            let r = &tb["runs"][&name];
            for (tag, points) in [
                ("train/loss", 2),
                ("dev/loss", 2),
                ("dev/accuracy", 2),
                ("test/accuracy", 1),
            ] {
                let got = r["scalars"][tag].as_array().map_or(0, |a| a.len());
                assert_eq!(got, points, "{name} {tag}: {}", r["scalars"]);
            }
            assert_eq!(
                r["images"]["conv1/activations"].as_array().unwrap().len(),
                1
            );
            names.push(name);
        }
        names.sort();
        let mut selector: Vec<String> = tb["run_selector"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect();
        selector.sort();
        assert_eq!(
            selector, names,
            "the run selector lists the grid's names only"
        );
        let groups = tb["session_groups"].as_array().unwrap();
        assert_eq!(groups.len(), 2, "{groups:?}");
        let mut group_names: Vec<&str> =
            groups.iter().map(|g| g["name"].as_str().unwrap()).collect();
        group_names.sort();
        assert_eq!(group_names, names, "HParams rows are named after the runs");
        for g in groups {
            assert_eq!(g["status"][0], "STATUS_SUCCESS", "{g}");
            assert!(g["hparams"]["optimizer.lr"].is_number(), "{g}");
            assert!(g["metrics"]["dev/accuracy"].is_number(), "{g}");
        }
    }

    // `best` prints the winner as a spec that plans to the very same run ID.
    let best = t.run(&["best", "smoke"]);
    best.expect_code(0);
    std::fs::write(t.path().join("best.toml"), best.stdout).unwrap();
    let plan = t.run(&["plan", "best.toml", "--json"]);
    plan.expect_code(0);
    let plan: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(plan["runs"].as_array().unwrap().len(), 1, "{plan}");
    assert_eq!(plan["runs"][0]["id"], winner.as_str(), "{plan}");

    // Running the same command again trains nothing and leaves the metrics untouched.
    let before: Vec<Vec<u8>> = runs
        .iter()
        .map(|d| std::fs::read(d.join("metrics.jsonl")).unwrap())
        .collect();
    let again = t.run(&["run", "experiments/smoke.toml"]);
    again.expect_code(0);
    assert!(
        again.stdout.contains("0 to run"),
        "second run redid work\n{}",
        again.report()
    );
    let after: Vec<Vec<u8>> = runs
        .iter()
        .map(|d| std::fs::read(d.join("metrics.jsonl")).unwrap())
        .collect();
    assert_eq!(before, after);
}

#[test]
fn translation_grid_trains_each_model_once_and_decodes_it_both_ways() {
    let t = Sandbox::with_data();
    let run = t.run(&["run", "experiments/q3_smoke.toml", "--jobs", "2"]);
    run.expect_code(0);
    assert!(run.stdout.contains("best: "), "{}", run.report());

    // 2 attention settings x 2 decoding strategies = 4 runs, but only 2 trainings: the
    // decode-only variant of each model trains nothing and reuses its sibling's checkpoint.
    let runs = run_dirs(&t.exp_dir("q3_smoke"));
    assert_eq!(runs.len(), 4);
    let mut trained = 0;
    for dir in &runs {
        let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
        let trains = metrics.contains("\"train/loss\"");
        assert!(metrics.contains("\"test/error_rate\""), "{metrics}");
        if trains {
            trained += 1;
            assert!(dir.join("checkpoints").is_dir());
        } else {
            let log = std::fs::read_to_string(dir.join("worker.log")).unwrap();
            assert!(log.contains("reusing the training of"), "{log}");
        }
        assert!(dir.join("artifacts/samples.md").is_file());
    }
    assert_eq!(trained, 2, "each model is trained exactly once");
}

/// The translator trains batches of more than 32 sentences in shards, cut by the batch's
/// size alone: one thread a run (`--jobs 2`) or two threads sharing the shards (`--jobs 1`)
/// give the same metrics bit for bit, so the same summaries.
#[test]
fn translation_summaries_are_the_same_bytes_with_one_thread_or_two() {
    let summaries = |jobs: &str, threads: &str| {
        let t = Sandbox::with_data();
        let args = [
            "run",
            "experiments/q3_smoke.toml",
            "--set",
            "train.batch_size=64",
            "--set",
            "train.epochs=3",
            "--jobs",
            jobs,
            "--threads",
            threads,
            "--quiet",
        ];
        t.run(&args).expect_code(0);
        let exp = t.exp_dir("q3_smoke");
        let mut files = vec![std::fs::read_to_string(exp.join("summary.json")).unwrap()];
        for dir in run_dirs(&exp) {
            let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
            let kept: Vec<&str> = metrics.lines().filter(|l| !l.contains("\"time/")).collect();
            files.push(kept.join("\n"));
        }
        files
    };
    let one = summaries("2", "1");
    let two = summaries("1", "2");
    assert!(one[1..].iter().any(|m| m.contains("train/loss")));
    assert_eq!(
        one, two,
        "one thread a run vs two threads sharing each batch's shards"
    );
}

#[test]
fn a_cuda_device_in_a_cpu_only_build_is_refused_before_anything_is_written() {
    if cfg!(feature = "cuda") {
        return; // a CUDA build may well have the device
    }
    let t = Sandbox::with_data();
    let run = t.run(&[
        "run",
        "experiments/smoke.toml",
        "--set",
        "train.device=cuda:0",
    ]);
    run.expect_code(5);
    assert!(
        run.stderr.contains("without CUDA support") && run.stderr.contains("cuda:0"),
        "{}",
        run.report()
    );
    assert!(!t.path().join("runs").exists(), "nothing under runs/");
}
