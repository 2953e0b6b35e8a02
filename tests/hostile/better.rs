//! "Better" through the real binary: a value that is divergence rather than a record (a NaN,
//! a `-inf` loss, a `+inf` accuracy) never passes `diff` as an improvement.

use crate::util::Sandbox;
use crate::util::runs::lr_grid;
use orchestrate::spec::SelectSpec;
use orchestrate::summary::summarize_experiment;
use serde_json::Value;

#[test]
fn diff_counts_a_minus_inf_loss_as_a_regression_not_an_improvement() {
    let dir = Sandbox::new();
    let d = dir.path();
    let exp = lr_grid(&d.join("runs"), "lr");
    summarize_experiment(&exp, &SelectSpec::default()).unwrap();
    let text = std::fs::read_to_string(exp.join("summary.json")).unwrap();
    std::fs::write(d.join("baseline.json"), &text).unwrap();
    let mut candidate: Value = serde_json::from_str(&text).unwrap();
    // The winner's training loss ran off to -inf: divergence, whatever the tolerance.
    candidate["runs"][0]["metrics"]["final"]["train/loss"] = "-inf".into();
    std::fs::write(d.join("candidate.json"), candidate.to_string()).unwrap();

    let out = dir.run(&["diff", "baseline.json", "candidate.json", "--tol", "*=1"]);
    out.expect_code(1);
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("train/loss") && l.contains("-inf"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no train/loss line:\n{}", out.stdout));
    assert!(!line.contains("better"), "{line}");

    // The other way round, a real loss where the baseline had diverged is a fix.
    let out = dir.run(&["diff", "candidate.json", "baseline.json"]);
    out.expect_code(0);
}
