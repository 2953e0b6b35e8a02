//! Pruning with real workers (`tests/fixtures/prune.toml`: nine learning rates of a small
//! MLP, 4 epochs, rungs at epochs 1 and 3). Successive halving and median stopping: the same
//! survivors and byte-identical summaries whatever `--jobs`; a SIGKILL of the orchestrator
//! mid-rung that changes nothing and redoes no epoch; pruned runs that a plain rerun leaves
//! alone. ASHA: every decision recorded, replayed by a second launch and after a SIGKILL.
//! TensorBoard's HParams status of pruned and promoted runs, read by TensorBoard itself.
//! With replicates: configurations ranked by their replicates' mean and pruned whole.

mod util;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use util::runs::{run_dirs, status};
use util::tb::tb_check;
use util::{Sandbox, wait_for};

const LIMIT: Duration = Duration::from_secs(300);
const EXP: &str = "fixture-prune";

/// What a user compares between two launches of the grid.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    /// Each run's state and last epoch, by run id.
    states: BTreeMap<String, (String, u64)>,
    summary_json: String,
    summary_md: String,
    schedule: String,
}

fn state(run: &Path) -> String {
    status(run)
        .and_then(|s| s["state"].as_str().map(String::from))
        .unwrap_or_default()
}

fn outcome(exp: &Path) -> Outcome {
    let read = |name: &str| std::fs::read_to_string(exp.join(name)).unwrap();
    Outcome {
        states: run_dirs(exp)
            .iter()
            .map(|d| {
                let id = d.file_name().unwrap().to_string_lossy().into_owned();
                let epoch = status(d).and_then(|s| s["epoch"].as_u64()).unwrap_or(0);
                (id, (state(d), epoch))
            })
            .collect(),
        summary_json: read("summary.json"),
        summary_md: read("summary.md"),
        schedule: read("schedule.json"),
    }
}

/// `o` with the summary's attempt counts left out: an interrupted launch legitimately starts
/// the attempt it cut short again.
fn without_attempts(mut o: Outcome) -> Outcome {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("attempts");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v: serde_json::Value = serde_json::from_str(&o.summary_json).unwrap();
    strip(&mut v);
    o.summary_json = v.to_string();
    o
}

/// The grid run once with one job, undisturbed: the reference.
fn reference() -> &'static Outcome {
    static REF: OnceLock<Outcome> = OnceLock::new();
    REF.get_or_init(|| {
        let t = Sandbox::with_fixtures();
        t.run(&["run", "prune.toml", "--jobs", "1"]).expect_code(0);
        outcome(&t.exp_dir(EXP))
    })
}

#[test]
fn successive_halving_prunes_the_same_runs_and_writes_the_same_summaries_with_any_jobs() {
    let one = reference();
    let states: Vec<&str> = one.states.values().map(|(s, _)| s.as_str()).collect();
    // Nine trainings, eta 3: the first rung keeps 3, the second 1, which trains to the end.
    assert_eq!(
        states.iter().filter(|s| **s == "done").count(),
        1,
        "{one:?}"
    );
    assert_eq!(
        states.iter().filter(|s| **s == "pruned").count(),
        8,
        "{one:?}"
    );
    let at = |e: u64| one.states.values().filter(|(_, ep)| *ep == e).count();
    assert_eq!((at(1), at(3), at(4)), (6, 2, 1), "{one:?}");

    let t = Sandbox::with_fixtures();
    let out = t.run(&["run", "prune.toml", "--jobs", "2"]);
    out.expect_code(0).stdout_has("8 pruned");
    let two = outcome(&t.exp_dir(EXP));
    assert_eq!(two, *one);

    // Pruned means final: a plain rerun starts no worker and changes no record.
    let exp = t.exp_dir(EXP);
    let metrics: Vec<Vec<u8>> = run_dirs(&exp)
        .iter()
        .map(|d| std::fs::read(d.join("metrics.jsonl")).unwrap())
        .collect();
    let again = t.run(&["run", "prune.toml", "--jobs", "2"]);
    again.expect_code(0);
    assert!(!again.stdout.contains("start "), "{}", again.report());
    let after: Vec<Vec<u8>> = run_dirs(&exp)
        .iter()
        .map(|d| std::fs::read(d.join("metrics.jsonl")).unwrap())
        .collect();
    assert_eq!(metrics, after);
    assert_eq!(outcome(&exp), *one);

    let table = t.run(&["status", EXP]);
    table
        .expect_code(0)
        .stdout_has("8 pruned")
        .stdout_has("at rung 1 (epoch 1) of successive_halving");
}

#[test]
fn a_sigkill_mid_rung_and_the_same_command_again_give_the_same_survivors() {
    let one = reference();
    let t = Sandbox::with_fixtures();
    let exp = t.exp_dir(EXP);
    let orch = t.spawn(&["run", "prune.toml", "--jobs", "1"]);
    // Mid-rung: some runs wait at the first rung, the rung is not decided yet.
    wait_for(LIMIT, "three runs paused at the first rung", || {
        run_dirs(&exp)
            .iter()
            .filter(|d| state(d) == "paused")
            .count()
            >= 3
    });
    orch.signal(libc::SIGKILL);
    orch.wait(LIMIT);
    assert!(
        !exp.join("schedule.json").exists(),
        "no rung was decided yet"
    );
    // The worker of the run that was training stops on its own (it follows its parent).
    wait_for(LIMIT, "no worker running", || {
        run_dirs(&exp).iter().all(|d| state(d) != "running")
    });
    let paused: Vec<(std::path::PathBuf, Vec<u8>)> = run_dirs(&exp)
        .into_iter()
        .filter(|d| state(d) == "paused")
        .map(|d| {
            let bytes = std::fs::read(d.join("metrics.jsonl")).unwrap();
            (d, bytes)
        })
        .collect();

    t.run(&["run", "prune.toml", "--jobs", "1"]).expect_code(0);
    // The run whose worker the kill interrupted starts one attempt more than undisturbed;
    // everything else is the same.
    assert_eq!(
        without_attempts(outcome(&exp)),
        without_attempts(one.clone())
    );
    // The epochs of the runs that were waiting were not trained again: their records of
    // before the kill are still the first bytes of their metrics.
    for (d, before) in paused {
        let now = std::fs::read(d.join("metrics.jsonl")).unwrap();
        assert!(now.starts_with(&before), "{} was retrained", d.display());
    }
}

#[test]
fn a_schedule_record_of_another_schedule_is_refused() {
    let t = Sandbox::with_fixtures();
    t.run(&["run", "prune.toml", "--jobs", "2"]).expect_code(0);
    let status = std::fs::read(t.exp_dir(EXP).join("schedule.json")).unwrap();
    t.run(&["run", "prune.toml", "--set", "schedule.reduction_factor=2"])
        .expect_code(3)
        .stderr_has("schedule.json")
        .stderr_has("`schedule`");
    assert_eq!(
        std::fs::read(t.exp_dir(EXP).join("schedule.json")).unwrap(),
        status
    );
    // Decisions that ranked runs one by one are not replayed over replicates, which the
    // schedule ranks by configuration; nothing is written, not even the new replicates.
    t.run(&["run", "prune.toml", "--set", "repeats=2"])
        .expect_code(3)
        .stderr_has("`repeats` = 2")
        .stderr_has("ranked runs one by one");
    assert_eq!(run_dirs(&t.exp_dir(EXP)).len(), 9);
}

#[test]
fn a_promoted_run_finishes_with_the_metrics_of_a_run_trained_without_a_schedule() {
    let t = Sandbox::with_fixtures();
    t.run(&["run", "prune.toml", "--jobs", "2"]).expect_code(0);
    let exp = t.exp_dir(EXP);
    // lr0.01 is pruned at the second rung (epoch 3 of 4) in the reference grid.
    let dir = run_dirs(&exp)
        .into_iter()
        .find(|d| util::runs::plan(d).unwrap()["name"] == "lr0.01")
        .unwrap();
    assert_eq!(state(&dir), "pruned");
    t.run(&["run", "prune.toml", "--promote", "lr0.01"])
        .expect_code(0);
    assert_eq!(state(&dir), "done");
    assert!(status(&dir).unwrap().get("pruned").is_none());

    // The same configuration alone and without a schedule: the same run id, the same records.
    let plain = Sandbox::with_fixtures();
    plain
        .run(&[
            "run",
            "prune.toml",
            "--set",
            "schedule.kind=\"none\"",
            "--set",
            "grid.\"optimizer.lr\"=[0.01]",
        ])
        .expect_code(0);
    let alone = plain.exp_dir(EXP).join(dir.file_name().unwrap());
    assert_eq!(
        util::runs::metrics_without_timings(&dir),
        util::runs::metrics_without_timings(&alone)
    );

    // Only a pruned run can be promoted; the error names the flag, the run and its state.
    t.run(&["run", "prune.toml", "--promote", "lr0.01"])
        .expect_code(2)
        .stderr_has("--promote lr0.01")
        .stderr_has("is done, not pruned");
    t.run(&["run", "prune.toml", "--promote", "nope"])
        .expect_code(2)
        .stderr_has("--promote nope: no such run");
}

const MEDIAN: &str = "schedule.kind=\"median\"";
const ASHA: &str = "schedule.kind=\"asha\"";

#[test]
fn median_stopping_stops_the_same_runs_and_writes_the_same_summaries_with_any_jobs() {
    let t = Sandbox::with_fixtures();
    t.run(&["run", "prune.toml", "--set", MEDIAN, "--jobs", "1"])
        .expect_code(0);
    let one = outcome(&t.exp_dir(EXP));
    // Decided at epochs 1, 2 and 3, each recorded once.
    let record: serde_json::Value = serde_json::from_str(&one.schedule).unwrap();
    let epochs: Vec<u64> = record["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, vec![1, 2, 3], "{}", one.schedule);
    let states: Vec<&str> = one.states.values().map(|(s, _)| s.as_str()).collect();
    let done = states.iter().filter(|s| **s == "done").count();
    let pruned = states.iter().filter(|s| **s == "pruned").count();
    assert!(done >= 1 && pruned >= 1 && done + pruned == 9, "{one:?}");
    t.run(&["status", EXP])
        .expect_code(0)
        .stdout_has("of median");

    let two = Sandbox::with_fixtures();
    two.run(&["run", "prune.toml", "--set", MEDIAN, "--jobs", "2"])
        .expect_code(0)
        .stdout_has(&format!("{pruned} pruned"));
    assert_eq!(outcome(&two.exp_dir(EXP)), one);
}

/// ASHA's `schedule.json` decisions as (grid index, epoch, promoted).
fn asha_decisions(schedule: &str) -> Vec<(u64, u64, bool)> {
    let record: serde_json::Value = serde_json::from_str(schedule).unwrap();
    record["promotions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    let n = |k: &str| p[k].as_u64().unwrap();
                    (n("run"), n("epoch"), p["promoted"].as_bool().unwrap())
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn asha_records_each_decision_and_a_second_run_retrains_and_redecides_nothing() {
    let t = Sandbox::with_fixtures();
    let exp = t.exp_dir(EXP);
    t.run(&["run", "prune.toml", "--set", ASHA, "--jobs", "2"])
        .expect_code(0);
    let first = outcome(&exp);
    let decisions = asha_decisions(&first.schedule);
    for d in run_dirs(&exp) {
        let index = util::runs::plan(&d).unwrap()["index"].as_u64().unwrap();
        let mine: Vec<(u64, bool)> = decisions
            .iter()
            .filter(|p| p.0 == index)
            .map(|p| (p.1, p.2))
            .collect();
        // Promoted at epoch 1 then at epoch 3 to train all 4; else pruned at its last rung.
        let want = match (state(&d).as_str(), status(&d).unwrap()["epoch"].as_u64()) {
            ("done", Some(4)) => vec![(1, true), (3, true)],
            ("pruned", Some(3)) => vec![(1, true), (3, false)],
            ("pruned", Some(1)) => vec![(1, false)],
            other => panic!("{}: {other:?}", d.display()),
        };
        assert_eq!(mine, want, "{}", first.schedule);
    }
    // Nine at the first rung: at least ceil(9 / 3) go on.
    assert!(decisions.iter().filter(|p| p.1 == 1 && p.2).count() >= 3);
    t.run(&["status", EXP]).expect_code(0).stdout_has("of asha");

    let again = t.run(&["run", "prune.toml", "--set", ASHA, "--jobs", "2"]);
    again.expect_code(0);
    assert!(!again.stdout.contains("start "), "{}", again.report());
    assert_eq!(outcome(&exp), first);
}

#[test]
fn asha_with_one_job_decides_the_same_every_time() {
    // One attempt at a time: the order of reports, and so every decision, is fixed.
    let launch = || {
        let t = Sandbox::with_fixtures();
        t.run(&["run", "prune.toml", "--set", ASHA, "--jobs", "1"])
            .expect_code(0);
        outcome(&t.exp_dir(EXP))
    };
    let first = launch();
    assert!(!asha_decisions(&first.schedule).is_empty());
    assert_eq!(launch(), first);
}

#[test]
fn a_sigkill_under_asha_loses_no_finished_run_and_keeps_every_recorded_decision() {
    let t = Sandbox::with_fixtures();
    let exp = t.exp_dir(EXP);
    let orch = t.spawn(&["run", "prune.toml", "--set", ASHA, "--jobs", "2"]);
    // The first rung is complete (runs were pruned there), the second is not yet.
    wait_for(LIMIT, "a run pruned at the first rung", || {
        run_dirs(&exp).iter().any(|d| state(d) == "pruned")
    });
    orch.signal(libc::SIGKILL);
    orch.wait(LIMIT);
    wait_for(LIMIT, "no worker running", || {
        run_dirs(&exp).iter().all(|d| state(d) != "running")
    });
    let before = asha_decisions(&std::fs::read_to_string(exp.join("schedule.json")).unwrap());
    let unfinished = run_dirs(&exp)
        .iter()
        .filter(|d| !matches!(state(d).as_str(), "pruned" | "done"))
        .count();
    assert!(unfinished > 0, "the kill came after the grid finished");
    let ended: Vec<(std::path::PathBuf, String, Vec<u8>)> = run_dirs(&exp)
        .into_iter()
        .filter(|d| matches!(state(d).as_str(), "pruned" | "done" | "paused"))
        .map(|d| {
            let bytes = std::fs::read(d.join("metrics.jsonl")).unwrap();
            (d.clone(), state(&d), bytes)
        })
        .collect();

    t.run(&["run", "prune.toml", "--set", ASHA, "--jobs", "2"])
        .expect_code(0);
    let after = asha_decisions(&std::fs::read_to_string(exp.join("schedule.json")).unwrap());
    assert!(after.starts_with(&before), "{before:?}\n{after:?}");
    for (d, was, bytes) in ended {
        let now = std::fs::read(d.join("metrics.jsonl")).unwrap();
        if was == "paused" {
            // Waiting at a rung: nothing it trained is trained again.
            assert!(now.starts_with(&bytes), "{} was retrained", d.display());
        } else {
            assert_eq!(state(&d), was, "{}", d.display());
            assert_eq!(now, bytes, "{} changed", d.display());
        }
    }
    assert!(
        run_dirs(&exp)
            .iter()
            .all(|d| matches!(state(d).as_str(), "pruned" | "done"))
    );
}

/// Each HParams session group's status by run name, as TensorBoard's dashboard filters them.
fn hparams_status(v: &serde_json::Value) -> BTreeMap<String, String> {
    v["session_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let status = g["status"].as_array().unwrap();
            assert_eq!(status.len(), 1, "one session per run: {g}");
            (
                g["name"].as_str().unwrap().to_string(),
                status[0].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn tensorboard_ends_pruned_runs_as_failure_with_the_reason_and_a_promoted_one_as_success() {
    let t = Sandbox::with_fixtures();
    t.run(&["run", "prune.toml", "--jobs", "2"]).expect_code(0);
    let exp = t.exp_dir(EXP);
    let Some(v) = tb_check(&exp.join("tb"), &[]) else {
        return;
    };
    let statuses = hparams_status(&v);
    assert_eq!(statuses.len(), 9, "{v:#}");
    for d in run_dirs(&exp) {
        let name = util::runs::plan(&d).unwrap()["name"]
            .as_str()
            .unwrap()
            .to_string();
        let run = &v["runs"][&name];
        let note = &run["text"]["schedule/pruned"];
        match state(&d).as_str() {
            "done" => {
                assert_eq!(statuses[&name], "STATUS_SUCCESS", "{name}");
                assert!(note.is_null(), "{name}: {note}");
            }
            "pruned" => {
                assert_eq!(statuses[&name], "STATUS_FAILURE", "{name}");
                // The note is the reason `status` shows, at the rung's last step, which is
                // where the run's curves end.
                let message = status(&d).unwrap()["message"].as_str().unwrap().to_string();
                assert_eq!(note[0][1], format!("pruned {message}"), "{name}");
                let last = run["scalars"]["dev/accuracy"]
                    .as_array()
                    .unwrap()
                    .last()
                    .unwrap()[0]
                    .clone();
                assert_eq!(note[0][0], last, "{name}");
            }
            other => panic!("{name}: {other}"),
        }
    }

    // lr0.01, pruned at the second rung, promoted: it ends as a success, the note is gone.
    t.run(&["run", "prune.toml", "--promote", "lr0.01"])
        .expect_code(0);
    let v = tb_check(&exp.join("tb"), &[]).unwrap();
    let after = hparams_status(&v);
    assert_eq!(after["lr0.01"], "STATUS_SUCCESS");
    assert!(v["runs"]["lr0.01"]["text"]["schedule/pruned"].is_null());
    let epochs = v["runs"]["lr0.01"]["scalars"]["dev/accuracy"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(epochs, 4, "one continuous curve to the last epoch");
    let changed: Vec<&String> = after.keys().filter(|n| after[*n] != statuses[*n]).collect();
    assert_eq!(changed, ["lr0.01"]);
}

/// The fixture with two replicates of three learning rates: rungs at epochs 1 and 3 keep
/// one configuration of three, both of its replicates.
const REPLICATES: [&str; 4] = [
    "--set",
    "repeats=2",
    "--set",
    "grid.\"optimizer.lr\"=[0.00001, 0.001, 0.1]",
];

/// `run`'s `select.metric` at `epoch`, from its `metrics.jsonl`.
fn dev_accuracy_at(run: &Path, epoch: u64) -> f64 {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["tag"] == "dev/accuracy" && v["epoch"] == epoch)
        .and_then(|v| v["value"].as_f64())
        .unwrap()
}

#[test]
fn with_replicates_halving_ranks_configurations_by_their_mean_and_prunes_them_whole() {
    let launch = |jobs: &str| {
        let t = Sandbox::with_fixtures();
        let mut args = vec!["run", "prune.toml", "--jobs", jobs];
        args.extend(REPLICATES);
        t.run(&args).expect_code(0);
        (outcome(&t.exp_dir(EXP)), t)
    };
    let (one, t) = launch("1");
    let exp = t.exp_dir(EXP);
    let runs = run_dirs(&exp);
    assert_eq!(runs.len(), 6);
    // Replicates of one configuration end alike: one configuration done, two pruned at the
    // first rung, both replicates each.
    let ends: Vec<(String, u64)> = runs
        .iter()
        .map(|d| (state(d), status(d).unwrap()["epoch"].as_u64().unwrap()))
        .collect();
    for pair in ends.chunks(2) {
        assert_eq!(pair[0], pair[1], "{ends:?}");
    }
    let done = ends.iter().filter(|e| e.0 == "done").count();
    assert_eq!((done, ends.len() - done), (2, 4), "{ends:?}");

    // The record compares three configuration means, each the mean of its replicates'
    // values in their metrics.jsonl, and keeps the best mean.
    let record: serde_json::Value = serde_json::from_str(&one.schedule).unwrap();
    let rung = &record["decisions"][0];
    let compared = rung["compared"].as_array().unwrap();
    assert_eq!(compared.len(), 3, "{rung:#}");
    let mut best = (f64::NEG_INFINITY, 0);
    for (k, c) in compared.iter().enumerate() {
        let first = 2 * k;
        assert_eq!(c[0], first as u64);
        let values: Vec<f64> = runs[first..first + 2]
            .iter()
            .map(|d| dev_accuracy_at(d, 1))
            .collect();
        let mean = (values[0] + values[1]) / 2.0;
        let recorded = c[1].as_f64().unwrap();
        assert!((recorded - mean).abs() < 1e-12, "{c} against {values:?}");
        assert_eq!(rung["replicates"][k]["values"][1][1], values[1]);
        if mean > best.0 {
            best = (mean, first);
        }
    }
    assert_eq!(rung["kept"], serde_json::json!([best.1]), "{rung:#}");
    assert_eq!(state(&runs[best.1]), "done");
    let pruned = runs.iter().find(|d| state(d) == "pruned").unwrap();
    let message = status(pruned).unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("(mean of 2 replicates)")
            && message.ends_with("(1 of 3 configurations kept)"),
        "{message}"
    );
    t.run(&["status", EXP])
        .expect_code(0)
        .stdout_has("4 pruned");

    // Decided on recorded values alone: the same with two jobs.
    let (two, _) = launch("2");
    assert_eq!(two, one);

    // Promoting one replicate continues its configuration: both replicates, to the end.
    let index = runs.iter().position(|d| state(d) == "pruned").unwrap();
    let name = util::runs::plan(&runs[index]).unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let mut args = vec!["run", "prune.toml", "--promote", &name];
    args.extend(REPLICATES);
    t.run(&args).expect_code(0);
    let sibling = index ^ 1;
    for d in [&runs[index], &runs[sibling]] {
        assert_eq!(state(d), "done", "{}", d.display());
        assert_eq!(status(d).unwrap()["epoch"], 4);
    }
    let untouched = runs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != index && *i != sibling)
        .all(|(_, d)| {
            one.states[&d.file_name().unwrap().to_string_lossy().into_owned()]
                == (state(d), status(d).unwrap()["epoch"].as_u64().unwrap())
        });
    assert!(untouched, "only the promoted configuration moved");
}
