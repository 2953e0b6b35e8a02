//! `orchestrate diff` as CI uses it: the real binary on summaries written from fixture runs.
//! Exit 0 within tolerance, 1 on a regression, 2 on bad input.

mod util;

use orchestrate::spec::SelectSpec;
use orchestrate::summary::summarize_experiment;
use std::path::Path;

use util::runs::lr_grid;
use util::{Sandbox, git};

/// Writes the lr grid under `dir/runs/lr`, summarises it and copies the summary to
/// `dir/baseline.json`, as `experiments/baselines/README.md` describes.
fn baseline(dir: &Path) -> serde_json::Value {
    let exp = lr_grid(&dir.join("runs"), "lr");
    summarize_experiment(&exp, &SelectSpec::default()).unwrap();
    std::fs::copy(exp.join("summary.json"), dir.join("baseline.json")).unwrap();
    serde_json::from_str(&std::fs::read_to_string(dir.join("baseline.json")).unwrap()).unwrap()
}

/// Writes `dir/candidate.json`: the baseline with the winner's final `tag` set to `value`.
fn candidate(dir: &Path, mut summary: serde_json::Value, tag: &str, value: f64) {
    summary["runs"][0]["metrics"]["final"][tag] = value.into();
    std::fs::write(
        dir.join("candidate.json"),
        serde_json::to_string_pretty(&summary).unwrap(),
    )
    .unwrap();
}

#[test]
fn a_summary_equals_its_experiment() {
    let dir = Sandbox::new();
    baseline(dir.path());
    let out = dir.run(&["diff", "baseline.json", "runs/lr"]);
    out.expect_code(0);
    assert!(
        out.stdout.contains("OK: 4 run(s) within tolerance"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_worse_accuracy_fails_beyond_tolerance_and_passes_within() {
    let dir = Sandbox::new();
    let base = baseline(dir.path());
    // 0.8712 -> 0.8500: worse by 0.0212.
    candidate(dir.path(), base, "dev/accuracy", 0.85);
    let diff = |extra: &[&str]| {
        let mut args = vec!["diff", "baseline.json", "candidate.json"];
        args.extend_from_slice(extra);
        dir.run(&args)
    };
    let out = diff(&[]);
    out.expect_code(1);
    assert!(
        out.stdout.contains("REGRESSION: 1 of 4 run(s)"),
        "{}",
        out.stdout
    );
    diff(&["--tol", "dev/accuracy=0.005"]).expect_code(1);
    diff(&["--tol", "dev/accuracy=0.03"]).expect_code(0);
    // Relative to 0.8712: 1% allows 0.0087, 3% allows 0.0261.
    diff(&["--tol", "dev/accuracy=1%"]).expect_code(1);
    diff(&["--tol", "dev/accuracy=3%"]).expect_code(0);
    diff(&["--tol", "*=0.05"]).expect_code(0);
    // Swapped, the candidate is the baseline and the change is an improvement.
    dir.run(&["diff", "candidate.json", "baseline.json"])
        .expect_code(0);
}

#[test]
fn a_lower_loss_passes_and_a_higher_loss_fails() {
    let dir = Sandbox::new();
    let base = baseline(dir.path());
    candidate(dir.path(), base.clone(), "train/loss", 0.1);
    dir.run(&["diff", "baseline.json", "candidate.json"])
        .expect_code(0);
    candidate(dir.path(), base, "train/loss", 0.5);
    dir.run(&["diff", "baseline.json", "candidate.json"])
        .expect_code(1);
}

#[test]
fn a_nan_where_the_baseline_had_a_number_is_a_regression() {
    let dir = Sandbox::new();
    let mut base = baseline(dir.path());
    base["runs"][0]["metrics"]["test"]["test/accuracy"] = "NaN".into();
    std::fs::write(dir.path().join("candidate.json"), base.to_string()).unwrap();
    let out = dir.run(&["diff", "baseline.json", "candidate.json", "--tol", "*=1"]);
    out.expect_code(1);
}

#[test]
fn a_run_missing_from_b_is_a_regression_and_a_new_one_is_not() {
    let dir = Sandbox::new();
    let mut base = baseline(dir.path());
    let removed = base["runs"].as_array_mut().unwrap().remove(2);
    std::fs::write(dir.path().join("candidate.json"), base.to_string()).unwrap();
    let out = dir.run(&["diff", "baseline.json", "candidate.json"]);
    out.expect_code(1);
    assert!(out.stdout.contains("missing in B"), "{}", out.stdout);
    assert!(out.stdout.contains(removed["name"].as_str().unwrap()));
    dir.run(&["diff", "candidate.json", "baseline.json"])
        .expect_code(0);
}

#[test]
fn a_run_that_no_longer_finishes_is_a_regression() {
    let dir = Sandbox::new();
    let mut base = baseline(dir.path());
    base["runs"][1]["state"] = "failed".into();
    std::fs::write(dir.path().join("candidate.json"), base.to_string()).unwrap();
    let out = dir.run(&["diff", "baseline.json", "candidate.json"]);
    out.expect_code(1);
    assert!(
        out.stdout.contains("state done -> failed"),
        "{}",
        out.stdout
    );
}

#[test]
fn markdown_shows_moved_metrics_and_config_changes() {
    let dir = Sandbox::new();
    let mut base = baseline(dir.path());
    base["runs"][0]["config"]["train"]["batch_size"] = 16.into();
    candidate(dir.path(), base, "dev/accuracy", 0.85);
    let out = dir.run(&[
        "diff",
        "baseline.json",
        "candidate.json",
        "--format",
        "md",
        "--tol",
        "dev/accuracy=0.005",
    ]);
    out.expect_code(1);
    insta::assert_snapshot!("diff_md", out.stdout);
}

#[test]
fn json_output_carries_every_verdict() {
    let dir = Sandbox::new();
    let base = baseline(dir.path());
    candidate(dir.path(), base, "dev/accuracy", 0.87);
    let out = dir.run(&[
        "diff",
        "baseline.json",
        "candidate.json",
        "--format",
        "json",
        "--tol",
        "dev/accuracy=0.005",
    ]);
    out.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["regression"], false);
    let m = v["runs"][0]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["tag"] == "dev/accuracy")
        .unwrap()
        .clone();
    assert_eq!(m["verdict"], "within");
    assert_eq!(m["direction"], "higher");
    assert_eq!(m["tolerance"], 0.005);
}

#[test]
fn missing_truncated_and_bad_arguments_exit_2_naming_the_input() {
    let dir = Sandbox::new();
    baseline(dir.path());
    let out = dir.run(&["diff", "nope.json", "baseline.json"]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("nope.json: no such file"),
        "{}",
        out.stderr
    );

    let text = std::fs::read_to_string(dir.path().join("baseline.json")).unwrap();
    std::fs::write(dir.path().join("cut.json"), &text[..text.len() / 2]).unwrap();
    let out = dir.run(&["diff", "baseline.json", "cut.json"]);
    out.expect_code(2);
    assert!(out.stderr.contains("cut.json"), "{}", out.stderr);
    assert!(out.stderr.contains("truncated"), "{}", out.stderr);

    std::fs::write(dir.path().join("other.json"), "{\"hello\": 1}").unwrap();
    let out = dir.run(&["diff", "baseline.json", "other.json"]);
    out.expect_code(2);
    assert!(out.stderr.contains("other.json"), "{}", out.stderr);

    let out = dir.run(&[
        "diff",
        "baseline.json",
        "baseline.json",
        "--tol",
        "dev/accuracy",
    ]);
    out.expect_code(2);
    assert!(out.stderr.contains("--tol dev/accuracy"), "{}", out.stderr);
    dir.run(&["diff", "baseline.json"]).expect_code(2);
}

#[test]
fn a_committed_baseline_is_read_with_rev_colon_path() {
    let dir = Sandbox::new();
    let base = baseline(dir.path());
    git(dir.path(), &["init", "-q"]);
    git(dir.path(), &["add", "baseline.json"]);
    git(dir.path(), &["commit", "-q", "-m", "baseline"]);
    dir.run(&["diff", "HEAD:baseline.json", "runs/lr"])
        .expect_code(0);
    candidate(dir.path(), base, "dev/accuracy", 0.5);
    std::fs::copy(
        dir.path().join("candidate.json"),
        dir.path().join("baseline.json"),
    )
    .unwrap();
    dir.run(&["diff", "HEAD:baseline.json", "baseline.json"])
        .expect_code(1);
    let out = dir.run(&["diff", "HEAD~5:baseline.json", "baseline.json"]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("HEAD~5:baseline.json"),
        "{}",
        out.stderr
    );
}
