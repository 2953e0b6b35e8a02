//! `diff` on hostile or careless arguments: `REV:PATH` never reaches git as an option, a
//! tolerance for a tag neither side has is refused, a changed selection rule is reported.

use crate::util::runs::lr_grid;
use crate::util::{Sandbox, git};
use orchestrate::spec::{SelectMode, SelectSpec};
use orchestrate::summary::summarize_experiment;
use std::path::Path;

/// Writes the lr grid under `dir/runs/lr`, summarised with `select`, and copies the summary
/// to `dir/<file>`.
fn summary(dir: &Path, select: &SelectSpec, file: &str) -> serde_json::Value {
    let exp = lr_grid(&dir.join("runs"), "lr");
    summarize_experiment(&exp, select).unwrap();
    std::fs::copy(exp.join("summary.json"), dir.join(file)).unwrap();
    serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap()
}

#[test]
fn a_rev_path_that_looks_like_an_option_writes_no_file() {
    let dir = Sandbox::new();
    let d = dir.path();
    summary(d, &SelectSpec::default(), "baseline.json");
    git(d, &["init", "-q"]);
    git(d, &["add", "baseline.json"]);
    git(d, &["commit", "-q", "-m", "baseline"]);
    let canary = d.join("canary");
    let hostile = format!("--output={}:y", canary.display());
    let out = dir.run(&["diff", "--", &hostile, "baseline.json"]);
    out.expect_code(2);
    assert!(out.stderr.contains(&hostile), "{}", out.stderr);
    for written in [canary.clone(), d.join("canary:y")] {
        assert!(!written.exists(), "git wrote {}", written.display());
    }
    // A leading `-` is a revision too, not git's `-p`.
    let out = dir.run(&["diff", "--", "-p:baseline.json", "baseline.json"]);
    out.expect_code(2);
    assert!(out.stderr.contains("-p:baseline.json"), "{}", out.stderr);
    // And a real REV:PATH still reads the committed file.
    dir.run(&["diff", "HEAD:baseline.json", "runs/lr"])
        .expect_code(0);
}

#[test]
fn a_tolerance_for_a_tag_neither_side_has_is_refused() {
    let dir = Sandbox::new();
    let d = dir.path();
    summary(d, &SelectSpec::default(), "baseline.json");
    let diff = |tol: &str| {
        dir.run(&[
            "diff",
            "baseline.json",
            "runs/lr",
            "--tol",
            "*=0.5",
            "--tol",
            tol,
        ])
    };
    // A typo must not leave the lenient default in charge of dev/accuracy.
    let out = diff("dev/acuracy=0");
    out.expect_code(2);
    let err = out.stderr;
    assert!(
        err.contains("--tol dev/acuracy=0: no metric `dev/acuracy` in A or B"),
        "{err}"
    );
    assert!(err.contains("did you mean `dev/accuracy`?"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    let out = diff("accuracy=0");
    out.expect_code(2);
    assert!(
        out.stderr
            .contains("did you mean `dev/accuracy` or `test/accuracy`?"),
        "{}",
        out.stderr
    );
    let out = diff("bleu=0");
    out.expect_code(2);
    assert!(
        out.stderr.contains("their tags: dev/accuracy,"),
        "{}",
        out.stderr
    );
    // Known tags and the wildcard alone are fine.
    diff("dev/accuracy=0").expect_code(0);
    diff("test/accuracy=1%").expect_code(0);
    dir.run(&["diff", "baseline.json", "runs/lr", "--tol", "*=0"])
        .expect_code(0);
}

#[test]
fn a_changed_selection_metric_or_mode_is_reported_but_not_a_regression() {
    let dir = Sandbox::new();
    let d = dir.path();
    summary(d, &SelectSpec::default(), "baseline.json");
    // The same runs, the winner picked on dev/loss: the same run wins, no metric moves.
    let by_loss = SelectSpec {
        metric: "dev/loss".into(),
        mode: SelectMode::Min,
        ..SelectSpec::default()
    };
    summary(d, &by_loss, "by_loss.json");
    let out = dir.run(&["diff", "baseline.json", "by_loss.json"]);
    out.expect_code(0);
    assert!(
        out.stdout
            .contains("select CHANGED: dev/accuracy (max) -> dev/loss (min)"),
        "{}",
        out.stdout
    );
    let out = dir.run(&["diff", "baseline.json", "by_loss.json", "--format", "md"]);
    out.expect_code(0);
    assert!(
        out.stdout.contains("**select CHANGED: dev/accuracy (max)"),
        "{}",
        out.stdout
    );
    // Only the mode flipped: JSON says so, and says both rules.
    let mut flipped: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("baseline.json")).unwrap()).unwrap();
    flipped["select"]["mode"] = "min".into();
    std::fs::write(d.join("flipped.json"), flipped.to_string()).unwrap();
    let out = dir.run(&["diff", "baseline.json", "flipped.json", "--format", "json"]);
    out.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["select_changed"], true, "{v}");
    assert_eq!(v["select_a"]["mode"], "max");
    assert_eq!(v["select_b"]["mode"], "min");
    // Unchanged, nothing is said.
    let out = dir.run(&["diff", "baseline.json", "runs/lr"]);
    out.expect_code(0);
    assert!(!out.stdout.contains("select"), "{}", out.stdout);
}

/// The lr grid under `dir/runs/lr`, with the status.json of its winning run replaced.
fn grid_with_status(dir: &Path, status: &str) -> std::path::PathBuf {
    let exp = lr_grid(&dir.join("runs"), "lr");
    let run = exp.join("01a0b1c2d3e4");
    std::fs::write(run.join("status.json"), status).unwrap();
    run
}

#[test]
fn status_on_a_corrupt_status_json_names_it_and_fails() {
    let dir = Sandbox::new();
    let d = dir.path();
    let run = grid_with_status(d, "{\"state\": \"do");
    let out = dir.run(&["status", "lr"]);
    out.expect_code(2);
    let err = out.stderr;
    assert!(
        err.contains("runs/lr/01a0b1c2d3e4/status.json: corrupt record"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with("01a0b1c2d3e4"))
        .unwrap_or_default()
        .to_string();
    assert!(row.contains("unreadable"), "{}", out.stdout);
    assert!(row.contains("status.json: corrupt record"), "{row}");
    assert!(!out.stdout.contains("not started"), "{}", out.stdout);
    // The other runs still show as they are.
    assert!(out.stdout.contains("4 run(s): 2 done"), "{}", out.stdout);
    assert!(out.stdout.contains(", 1 unreadable"), "{}", out.stdout);

    let out = dir.run(&["status", "lr", "--json"]);
    out.expect_code(2);
    let rows: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "01a0b1c2d3e4")
        .unwrap();
    assert!(
        row["unreadable"]
            .as_str()
            .is_some_and(|u| u.contains("status.json")),
        "{row}"
    );

    // An unreadable plan.json no longer hides the run.
    std::fs::write(
        run.join("status.json"),
        "{\"state\":\"done\",\"attempts\":1,\"epoch\":3}",
    )
    .unwrap();
    std::fs::write(run.join("plan.json"), "").unwrap();
    let out = dir.run(&["status", "lr"]);
    out.expect_code(2);
    assert!(
        out.stderr
            .contains("01a0b1c2d3e4/plan.json: corrupt record"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("01a0b1c2d3e4"), "{}", out.stdout);
}

/// Runs `orchestrate ARGS` in the sandbox with its stdout on a pipe whose reader is already
/// gone.
fn into_closed_pipe(sb: &Sandbox, args: &[&str]) -> std::process::Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    sb.cmd(args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let sb = Sandbox::with_data();
    lr_grid(&sb.path().join("runs"), "lr");
    for args in [
        &["plan", "experiments/q2_grid.toml", "--json"][..],
        &["plan", "experiments/q2_grid.toml"],
        &["status", "lr", "--json"],
        &["diff", "runs/lr", "runs/lr", "--format", "json"],
    ] {
        let out = into_closed_pipe(&sb, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
        // Like `yes | head -1`: SIGPIPE, which a shell reports as 141.
        assert_eq!(out.status.signal(), Some(13), "{args:?}: {:?}", out.status);
    }
}
