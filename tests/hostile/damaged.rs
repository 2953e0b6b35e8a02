//! A finished run whose `metrics.jsonl` was damaged afterwards, through the real binary:
//! `run` reports it (exit 6) instead of summarising what is left into another winner,
//! `status` shows it as `damaged`, and `--rerun` trains it again.

use crate::util::Sandbox;
use crate::util::runs::{plan, run_dirs};
use std::fs;
use std::path::{Path, PathBuf};

/// Two CNN runs on a few hundred images, two epochs each.
fn spec() -> String {
    crate::util::mini_cnn_spec(
        "damage",
        300,
        2,
        "",
        "[grid]\n\"optimizer.lr\" = [0.001, 0.003]\n",
    )
}

/// The documented exit code of `run` when a finished run's records are damaged.
const DAMAGED: i32 = 6;

/// A sandbox with the experiment trained once, and the winner's run directory and name.
fn trained() -> (Sandbox, PathBuf, String) {
    let sb = Sandbox::with_data();
    sb.write("damage.toml", &spec());
    sb.run(&["run", "damage.toml", "--jobs", "2"]).ok();
    let exp = sb.path().join("runs/damage");
    let summary: serde_json::Value =
        serde_json::from_slice(&fs::read(exp.join("summary.json")).unwrap()).unwrap();
    let winner = summary["winner"].as_str().expect("a winner").to_string();
    let dir = run_dirs(&exp)
        .into_iter()
        .find(|d| d.ends_with(&winner))
        .expect("the winner's run directory");
    let name = plan(&dir).unwrap()["name"].as_str().unwrap().to_string();
    (sb, dir, name)
}

/// The winner's metrics with one record fewer.
fn drop_last_line(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.pop();
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// The winner's metrics with its last `dev/accuracy` value made the worst possible.
fn edit_one_value(text: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let i = lines
        .iter()
        .rposition(|l| l.contains("\"dev/accuracy\""))
        .expect("a dev/accuracy record");
    let mut rec: serde_json::Value = serde_json::from_str(&lines[i]).unwrap();
    rec["value"] = 0.0.into();
    lines[i] = rec.to_string();
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap()
}

/// Damages the winner's `metrics.jsonl` with `damage` (the file's text in, the new text out,
/// `None` to delete it), then checks what `run`, `status` and `best` make of it.
fn damaged_run_is_reported(damage: fn(&str) -> Option<String>, problem: &str) {
    let (sb, dir, name) = trained();
    let metrics = dir.join("metrics.jsonl");
    let exp_summary = sb.path().join("runs/damage/summary.json");
    let summaries = (read(&exp_summary), read(&dir.join("summary.json")));
    match damage(&fs::read_to_string(&metrics).unwrap()) {
        Some(t) => fs::write(&metrics, t).unwrap(),
        None => fs::remove_file(&metrics).unwrap(),
    }
    sb.run(&["run", "damage.toml"])
        .expect_code(DAMAGED)
        .stderr_has(&format!(
            "runs/damage/{}/metrics.jsonl: {problem}",
            dir.file_name().unwrap().to_string_lossy()
        ))
        .stderr_has(&format!("retrain with --rerun {name}"));
    assert_eq!(
        (read(&exp_summary), read(&dir.join("summary.json"))),
        summaries,
        "`run` rewrote a summary from a damaged run"
    );
    sb.run(&["status", "damage"])
        .ok()
        .stdout_has("damaged")
        .stdout_has(&format!("metrics.jsonl: {problem}"));
    // The read-only commands never crown a damaged run either.
    let best = sb.run(&["best", "damage"]);
    assert!(
        !best.stdout.contains(&name),
        "`best` chose the damaged run\n{}",
        best.stdout
    );
}

#[test]
fn a_metrics_file_truncated_by_one_line_is_damage() {
    damaged_run_is_reported(|t| Some(drop_last_line(t)), "truncated");
}

#[test]
fn an_emptied_metrics_file_is_damage() {
    damaged_run_is_reported(|_| Some(String::new()), "emptied");
}

#[test]
fn a_deleted_metrics_file_is_damage() {
    damaged_run_is_reported(|_| None, "deleted");
}

#[test]
fn a_metrics_file_with_one_value_edited_is_damage() {
    damaged_run_is_reported(|t| Some(edit_one_value(t)), "edited");
}

#[test]
fn rerun_retrains_a_damaged_run() {
    let (sb, dir, name) = trained();
    let metrics = dir.join("metrics.jsonl");
    let original = fs::read_to_string(&metrics).unwrap();
    fs::write(&metrics, drop_last_line(&original)).unwrap();
    sb.run(&["run", "damage.toml"]).expect_code(DAMAGED);
    sb.run(&["run", "damage.toml", "--rerun", &name])
        .ok()
        .stdout_has("best:");
    let status: serde_json::Value =
        serde_json::from_slice(&read(&dir.join("status.json"))).unwrap();
    assert_eq!(status["state"], "done");
    assert_eq!(
        fs::read_to_string(&metrics).unwrap().lines().count(),
        original.lines().count(),
        "the retrained run has all its records again"
    );
    let table = sb.run(&["status", "damage"]);
    assert!(!table.ok().stdout.contains("damaged"), "{}", table.stdout);
}

#[test]
fn a_torn_last_line_of_a_running_run_is_not_damage() {
    let (sb, dir, _) = trained();
    let metrics = dir.join("metrics.jsonl");
    // What a worker killed mid-write leaves: a `running` status of a gone process and a
    // last line cut short.
    fs::write(
        dir.join("status.json"),
        r#"{"state":"running","attempts":1,"epoch":1}"#,
    )
    .unwrap();
    let mut text = drop_last_line(&fs::read_to_string(&metrics).unwrap());
    text.push_str("{\"epoch\":2,\"st");
    fs::write(&metrics, text).unwrap();
    let table = sb.run(&["status", "damage"]);
    assert!(!table.ok().stdout.contains("damaged"), "{}", table.stdout);
    sb.run(&["run", "damage.toml"]).ok().stdout_has("best:");
}
