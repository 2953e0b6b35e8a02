//! `diff` of replicated experiments through the real binary: with 5 replicates a side it fails
//! on a regression of a configuration's mean that Welch's test calls significant and that is
//! beyond the tolerance, and passes on a difference the seeds' noise explains.

mod util;

use orchestrate::grid::Replicate;
use orchestrate::spec::{SelectMode, SelectRank};
use orchestrate::summary::configurations::configurations;
use orchestrate::summary::{ExperimentSummary, RunEntry};
use util::Sandbox;

/// A summary of one configuration `lr0.001` whose replicates reached `dev` accuracies.
fn summary(dev: &[f64]) -> String {
    let runs: Vec<RunEntry> = dev
        .iter()
        .enumerate()
        .map(|(k, &v)| {
            let mut e: RunEntry = serde_json::from_value(serde_json::json!({
                "rank": k + 1, "winner": k == 0, "id": format!("run{k}"),
                "name": format!("lr0.001-rep{k}"), "index": k, "state": "done",
                "attempts": 1, "varied": {"optimizer.lr": 0.001}, "config": {},
                "metrics": {"select": "dev/accuracy", "mode": "max", "best_epoch": 1,
                            "best": v, "final": {"dev/accuracy": v},
                            "test": {"test/accuracy": v - 0.01}, "epochs": []},
            }))
            .unwrap();
            e.replicate = Some(Replicate {
                configuration: "c0nf1g000000".into(),
                index: k as u32,
            });
            e
        })
        .collect();
    let (configs, confidence) = configurations(&runs, &[], SelectMode::Max, SelectRank::Mean);
    let mut s: ExperimentSummary = serde_json::from_value(serde_json::json!({
        "format": 1, "experiment": "rep",
        "select": {"metric": "dev/accuracy", "mode": "max"},
        "winner": "run0", "runs": [], "excluded": [],
    }))
    .unwrap();
    s.runs = runs;
    s.configurations = configs;
    s.confidence = confidence;
    s.to_json().unwrap()
}

const BASE: [f64; 5] = [0.860, 0.855, 0.862, 0.858, 0.861];

#[test]
fn a_significant_regression_of_the_mean_fails_and_says_n_p_and_the_effect() {
    let sb = Sandbox::new();
    sb.write("a.json", &summary(&BASE));
    // Every replicate about 0.02 worse: far outside the seeds' spread.
    sb.write("b.json", &summary(&[0.841, 0.836, 0.840, 0.838, 0.843]));
    let out = sb.run(&["diff", "a.json", "b.json", "--tol", "*=0.005"]);
    out.expect_code(1)
        .stdout_has("REGRESSION: 1 of 1 configuration(s) significantly worse")
        // The README's example line, with SciPy's interval and p for these numbers.
        .stdout_has(
            "lr0.001: dev/accuracy 0.8592 -> 0.8396 (-0.0196, 95% CI [-0.0236, -0.0156]), \
             n=5/5, p<0.0001",
        );
    // The pull-request comment carries the same verdict, row by row.
    sb.run(&[
        "diff", "a.json", "b.json", "--tol", "*=0.005", "--format", "md",
    ])
    .expect_code(1)
    .stdout_has("| lr0.001 | `dev/accuracy` |")
    .stdout_has("**WORSE**");
    // The same difference within a looser tolerance passes: significance alone is not enough.
    sb.run(&["diff", "a.json", "b.json", "--tol", "*=0.05"])
        .expect_code(0);
}

#[test]
fn a_worse_mean_within_the_noise_passes_unless_any_worsening_fails() {
    let sb = Sandbox::new();
    sb.write("a.json", &summary(&BASE));
    // The mean drops by 0.003, well inside replicates that spread over 0.03.
    sb.write("b.json", &summary(&[0.875, 0.840, 0.866, 0.845, 0.857]));
    sb.run(&["diff", "a.json", "b.json"])
        .expect_code(0)
        .stdout_has("OK: no configuration of 1 significantly worse")
        .stdout_has("worse, not significant");
    // Run by run, with no tolerance, the worse replicates fail as before.
    sb.run(&["diff", "a.json", "b.json", "--fail-on", "any"])
        .expect_code(1);
}

#[test]
fn significant_needs_replicates_on_both_sides() {
    let sb = Sandbox::new();
    sb.write("a.json", &summary(&BASE));
    let mut single: serde_json::Value = serde_json::from_str(&summary(&BASE)).unwrap();
    single.as_object_mut().unwrap().remove("configurations");
    sb.write("b.json", &single.to_string());
    sb.run(&["diff", "a.json", "b.json", "--fail-on", "significant"])
        .expect_code(2)
        .stderr_has("b.json has no replicates");
    // Without the flag the default falls back to comparing runs.
    sb.run(&["diff", "a.json", "b.json"]).expect_code(0);
}
