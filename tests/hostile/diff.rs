//! `diff` on hostile or careless arguments: `REV:PATH` never reaches git as an option, a
//! tolerance for a tag neither side has is refused, a changed selection rule is reported.

use crate::util::orchestrate;
use crate::util::runs::lr_grid;
use orchestrate::spec::{SelectMode, SelectSpec};
use orchestrate::summary::summarize_experiment;
use std::path::Path;
use std::process::Command;

/// Writes the lr grid under `dir/runs/lr`, summarised with `select`, and copies the summary
/// to `dir/<file>`.
fn summary(dir: &Path, select: &SelectSpec, file: &str) -> serde_json::Value {
    let exp = lr_grid(&dir.join("runs"), "lr");
    summarize_experiment(&exp, select).unwrap();
    std::fs::copy(exp.join("summary.json"), dir.join(file)).unwrap();
    serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap()
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(["-c", "user.email=t@example.com", "-c", "user.name=t"])
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

#[test]
fn a_rev_path_that_looks_like_an_option_writes_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    summary(d, &SelectSpec::default(), "baseline.json");
    git(d, &["init", "-q"]);
    git(d, &["add", "baseline.json"]);
    git(d, &["commit", "-q", "-m", "baseline"]);
    let canary = d.join("canary");
    let hostile = format!("--output={}:y", canary.display());
    let out = orchestrate(d, &["diff", "--", &hostile, "baseline.json"]);
    out.expect_code(2);
    assert!(out.stderr().contains(&hostile), "{}", out.stderr());
    for written in [canary.clone(), d.join("canary:y")] {
        assert!(!written.exists(), "git wrote {}", written.display());
    }
    // A leading `-` is a revision too, not git's `-p`.
    let out = orchestrate(d, &["diff", "--", "-p:baseline.json", "baseline.json"]);
    out.expect_code(2);
    assert!(out.stderr().contains("-p:baseline.json"), "{}", out.stderr());
    // And a real REV:PATH still reads the committed file.
    orchestrate(d, &["diff", "HEAD:baseline.json", "runs/lr"]).expect_code(0);
}

#[test]
fn a_tolerance_for_a_tag_neither_side_has_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    summary(d, &SelectSpec::default(), "baseline.json");
    let diff = |tol: &str| {
        orchestrate(
            d,
            &["diff", "baseline.json", "runs/lr", "--tol", "*=0.5", "--tol", tol],
        )
    };
    // A typo must not leave the lenient default in charge of dev/accuracy.
    let out = diff("dev/acuracy=0");
    out.expect_code(2);
    let err = out.stderr();
    assert!(
        err.contains("--tol dev/acuracy=0: no metric `dev/acuracy` in A or B"),
        "{err}"
    );
    assert!(err.contains("did you mean `dev/accuracy`?"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(out.stdout().is_empty(), "{}", out.stdout());
    let out = diff("accuracy=0");
    out.expect_code(2);
    assert!(
        out.stderr()
            .contains("did you mean `dev/accuracy` or `test/accuracy`?"),
        "{}",
        out.stderr()
    );
    let out = diff("bleu=0");
    out.expect_code(2);
    assert!(out.stderr().contains("their tags: dev/accuracy,"), "{}", out.stderr());
    // Known tags and the wildcard alone are fine.
    diff("dev/accuracy=0").expect_code(0);
    diff("test/accuracy=1%").expect_code(0);
    orchestrate(d, &["diff", "baseline.json", "runs/lr", "--tol", "*=0"]).expect_code(0);
}

#[test]
fn a_changed_selection_metric_or_mode_is_reported_but_not_a_regression() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    summary(d, &SelectSpec::default(), "baseline.json");
    // The same runs, the winner picked on dev/loss: the same run wins, no metric moves.
    let by_loss = SelectSpec {
        metric: "dev/loss".into(),
        mode: SelectMode::Min,
        ..SelectSpec::default()
    };
    summary(d, &by_loss, "by_loss.json");
    let out = orchestrate(d, &["diff", "baseline.json", "by_loss.json"]);
    out.expect_code(0);
    assert!(
        out.stdout()
            .contains("select CHANGED: dev/accuracy (max) -> dev/loss (min)"),
        "{}",
        out.stdout()
    );
    let out = orchestrate(d, &["diff", "baseline.json", "by_loss.json", "--format", "md"]);
    out.expect_code(0);
    assert!(
        out.stdout().contains("**select CHANGED: dev/accuracy (max)"),
        "{}",
        out.stdout()
    );
    // Only the mode flipped: JSON says so, and says both rules.
    let mut flipped: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("baseline.json")).unwrap()).unwrap();
    flipped["select"]["mode"] = "min".into();
    std::fs::write(d.join("flipped.json"), flipped.to_string()).unwrap();
    let out = orchestrate(
        d,
        &["diff", "baseline.json", "flipped.json", "--format", "json"],
    );
    out.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
    assert_eq!(v["select_changed"], true, "{v}");
    assert_eq!(v["select_a"]["mode"], "max");
    assert_eq!(v["select_b"]["mode"], "min");
    // Unchanged, nothing is said.
    let out = orchestrate(d, &["diff", "baseline.json", "runs/lr"]);
    out.expect_code(0);
    assert!(!out.stdout().contains("select"), "{}", out.stdout());
}
