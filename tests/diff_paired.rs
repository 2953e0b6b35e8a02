//! `orchestrate diff A B --paired` through the real binary on runs its workers trained on
//! the shipped mini data: the per-item results they record, the paired verdict and its exit
//! codes, and each refusal with its exit code.

mod util;

use std::path::{Path, PathBuf};

use util::{Sandbox, mini_cnn_spec};

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The q3 smoke translator (shipped spa-eng-mini data) trained `epochs` epochs, as
/// experiment `name`; `data` adds lines to `[data]`, `extra` at the end (a `[grid]`).
fn translator(t: &Sandbox, name: &str, epochs: usize, data: &str, extra: &str) {
    let spec = std::fs::read_to_string(t.path().join("experiments/q3_smoke.toml")).unwrap();
    let spec = spec[..spec.find("[grid]").unwrap()]
        .replace("name = \"q3_smoke\"", &format!("name = \"{name}\""))
        .replace("epochs = 5", &format!("epochs = {epochs}"))
        .replacen("max_len = 30\n", &format!("max_len = 30\n{data}"), 1);
    t.write(&format!("{name}.toml"), &format!("{spec}\n{extra}"));
    t.run(&["run", &format!("{name}.toml"), "--jobs", "2"]).ok();
}

/// The run directory of experiment `exp` whose plan has `name`.
fn run_named(t: &Sandbox, exp: &str, name: &str) -> PathBuf {
    util::runs::run_dirs(&t.exp_dir(exp))
        .into_iter()
        .find(|d| json(&d.join("plan.json"))["name"] == name)
        .unwrap_or_else(|| panic!("no run {name} in {exp}"))
}

/// The only run directory of experiment `exp`.
fn only_run(t: &Sandbox, exp: &str) -> PathBuf {
    let dirs = util::runs::run_dirs(&t.exp_dir(exp));
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

/// The test value of `tag` in the run's summary.
fn recorded(run: &Path, tag: &str) -> f64 {
    json(&run.join("summary.json"))["metrics"]["test"][tag]
        .as_f64()
        .unwrap()
}

/// `orchestrate diff --paired A B` with `extra` arguments.
fn paired(t: &Sandbox, a: &str, b: &str, extra: &[&str]) -> util::Output {
    let mut args = vec!["diff", "--paired", a, b];
    args.extend_from_slice(extra);
    t.run(&args)
}

/// The metric `tag` of a `--format json` paired report.
fn metric<'a>(report: &'a serde_json::Value, tag: &str) -> &'a serde_json::Value {
    report["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["tag"] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {report}"))
}

#[test]
fn a_translator_trained_one_epoch_is_a_significant_regression_on_the_same_sentences() {
    let t = Sandbox::with_data();
    // `good`: 8 epochs, decoded greedily and (decode-only, reusing that training) by beam.
    translator(
        &t,
        "good",
        8,
        "",
        "[grid]\n\"decode.strategy\" = [\"greedy\", \"beam\"]\n",
    );
    translator(&t, "bad", 1, "", "");
    let greedy = run_named(&t, "good", "strategy-greedy");
    let beam = run_named(&t, "good", "strategy-beam");
    let bad = only_run(&t, "bad");

    // Every run, the decode-only one too, recorded one error per test sentence whose mean is
    // its test/error_rate.
    for run in [&greedy, &beam, &bad] {
        let items = json(&run.join("test_items.json"));
        let errors: Vec<f64> = items["metrics"]["test/error_rate"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(items["count"], errors.len());
        assert!(errors.len() > 20, "{items}");
        let mean = errors.iter().sum::<f64>() / errors.len() as f64;
        assert!((mean - recorded(run, "test/error_rate")).abs() < 1e-12);
    }

    // The baseline trained 8 epochs, the candidate 1: worse on the same sentences, and by more
    // than resampling them explains. The experiment `bad` has one run, so its name names it.
    let out = paired(&t, "good/strategy-greedy", "bad", &["--format", "json"]);
    out.expect_code(1);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["regression"], true);
    assert_eq!(report["resamples"], 1000);
    assert_eq!(report["seed"], 12345);
    let err = metric(&report, "test/error_rate");
    let delta = recorded(&bad, "test/error_rate") - recorded(&greedy, "test/error_rate");
    assert!(
        (err["delta"].as_f64().unwrap() - delta).abs() < 1e-12,
        "{err}"
    );
    assert!(delta > 0.0, "one epoch should be worse: {err}");
    let p = err["p"].as_f64().unwrap();
    assert!(p < 0.05, "{err}");
    let ci = err["ci95"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() > 0.0, "{err}");
    assert_eq!(err["regression"], true);
    assert!(report["config"].to_string().contains("train.epochs"));

    // The table says so in its headline; the run directory names the run as well.
    let bad_dir = bad.display().to_string();
    paired(&t, "good/strategy-greedy", &bad_dir, &[])
        .expect_code(1)
        .stdout_has(
            "REGRESSION: 1 of 2 test metric(s) significantly worse (paired bootstrap p < 0.05) \
             beyond tolerance; test/error_rate",
        )
        .stdout_has("paired bootstrap over");
    // A tolerance larger than the worsening passes; `any` fails on the difference alone.
    paired(&t, "good/strategy-greedy", "bad", &["--tol", "*=1"]).ok();
    paired(
        &t,
        "good/strategy-greedy",
        "bad",
        &["--fail-on", "any", "--format", "md"],
    )
    .expect_code(1)
    .stdout_has("### ❌ orchestrate diff --paired: REGRESSION");
    // Swapped, B is the better run.
    paired(&t, "bad", "good/strategy-greedy", &[])
        .ok()
        .stdout_has("OK: no test metric of 2");

    // A run against itself: no difference, p = 1.
    let out = paired(
        &t,
        "good/strategy-beam",
        "good/strategy-beam",
        &["--format", "json"],
    );
    out.ok();
    let same: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    for tag in ["test/error_rate", "test/accuracy"] {
        let m = metric(&same, tag);
        assert_eq!(m["delta"], 0.0, "{m}");
        assert_eq!(m["p"], 1.0, "{m}");
        assert_eq!(m["ci95"], serde_json::json!([0.0, 0.0]), "{m}");
    }

    // An experiment of several runs does not name one run.
    paired(&t, "good", "bad", &[])
        .expect_code(2)
        .stderr_has("has 2 runs and --paired compares two single runs; name one as good/RUN")
        .stderr_has("strategy-greedy");
    // A tolerance for a metric the items do not have is refused, as in any diff.
    paired(
        &t,
        "good/strategy-greedy",
        "bad",
        &["--tol", "test/loss=0.1"],
    )
    .expect_code(2)
    .stderr_has("no metric `test/loss` in A or B");

    // Fewer test sentences: another test set, refused before any number.
    translator(&t, "short", 1, "test_limit = 20\n", "");
    let short = only_run(&t, "short").display().to_string();
    let out = paired(&t, "bad", &short, &[]);
    out.expect_code(2)
        .stderr_has("A and B were tested on different test sets")
        .stderr_has("20 items");
    assert!(out.stdout.is_empty(), "{}", out.report());

    // A run tested before items were recorded: named, with the way out.
    std::fs::remove_file(bad.join("test_items.json")).unwrap();
    let id = bad.file_name().unwrap().to_str().unwrap();
    paired(&t, "good/strategy-greedy", "bad", &[])
        .expect_code(2)
        .stderr_has(&format!("runs/bad/{id}/test_items.json is missing"))
        .stderr_has(&format!("--rerun {id}"));
    // Retraining it records them again.
    t.run(&["run", "bad.toml", "--rerun", id]).ok();
    paired(&t, "good/strategy-greedy", "bad", &[]).expect_code(1);
}

#[test]
fn image_classifiers_are_paired_on_each_test_image() {
    let t = Sandbox::with_data();
    for (name, lr) in [("slow", "0.00001"), ("fast", "0.003")] {
        t.write(
            &format!("{name}.toml"),
            &mini_cnn_spec(name, 300, 2, "", &format!("[optimizer]\nlr = {lr}\n")),
        );
        t.run(&["run", &format!("{name}.toml")]).ok();
    }
    let (slow, fast) = (only_run(&t, "slow"), only_run(&t, "fast"));
    let items = json(&fast.join("test_items.json"));
    assert_eq!(items["count"], 100);
    let correct = items["metrics"]["test/accuracy"].as_array().unwrap();
    assert!(correct.iter().all(|v| v == 0.0 || v == 1.0), "{items}");
    let hits = correct.iter().filter(|v| **v == 1.0).count();
    assert_eq!(hits as f64 / 100.0, recorded(&fast, "test/accuracy"));

    let out = paired(&t, "fast", "slow", &["--format", "json"]);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let acc = metric(&report, "test/accuracy");
    let delta = recorded(&slow, "test/accuracy") - recorded(&fast, "test/accuracy");
    assert!(
        (acc["delta"].as_f64().unwrap() - delta).abs() < 1e-12,
        "{acc}"
    );
    assert_eq!(report["items"], 100);
    assert_eq!(report["metrics"].as_array().unwrap().len(), 1, "{report}");
    // The exit code is the verdict's.
    let failed = acc["regression"].as_bool().unwrap();
    out.expect_code(if failed { 1 } else { 0 });
}

#[test]
fn unfinished_runs_and_items_that_do_not_add_up_are_refused() {
    let t = Sandbox::new();
    let exp = util::runs::lr_grid(&t.path().join("runs"), "lr");
    paired(&t, "lr/adam-lr0.01", "lr/adam-lr0.0005", &[])
        .expect_code(2)
        .stderr_has("lr/adam-lr0.01: run 03a0b1c2d3e4 (adam-lr0.01) is diverged");
    // The run recorded test/accuracy 0.865; 3 of 4 is not it: not this run's test.
    std::fs::write(
        exp.join("01a0b1c2d3e4/test_items.json"),
        r#"{"epoch": 3, "count": 4, "test_set": "x",
            "metrics": {"test/accuracy": [1.0, 1.0, 1.0, 0.0]}}"#,
    )
    .unwrap();
    paired(&t, "lr/01a0", "lr/adam-lr0.0005", &[])
        .expect_code(2)
        .stderr_has("01a0b1c2d3e4/test_items.json: the mean of its test/accuracy values is 0.75, but the run recorded 0.865")
        .stderr_has("--rerun 01a0b1c2d3e4");
}
