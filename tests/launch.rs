//! Reliability of `orchestrate run` with real worker processes: a killed worker is retried
//! and resumes, Ctrl-C stops cleanly and the next run finishes the grid, a diverging run is
//! recorded, and a second orchestrator or an unusable runs directory is refused.

mod util;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use util::runs::{metrics_without_timings, run_dirs, status};
use util::{Sandbox, wait_for};

const LIMIT: Duration = Duration::from_secs(300);

type Metrics = BTreeMap<String, Vec<(u64, u64, String, u64)>>;

/// Metrics of every run of an experiment, by run id.
fn metrics_by_run(exp: &std::path::Path) -> Metrics {
    run_dirs(exp)
        .into_iter()
        .map(|d| {
            let id = d.file_name().unwrap().to_string_lossy().into_owned();
            (id, metrics_without_timings(&d))
        })
        .collect()
}

/// The fixture grid run once, undisturbed: the reference the disturbed runs must match.
fn undisturbed() -> &'static Metrics {
    static REF: OnceLock<Metrics> = OnceLock::new();
    REF.get_or_init(|| {
        let t = Sandbox::with_fixtures();
        t.run(&["run", "grid.toml", "--jobs", "1"]).expect_code(0);
        let m = metrics_by_run(&t.exp_dir("fixture-grid"));
        assert_eq!(m.len(), 2);
        assert!(m.values().all(|v| !v.is_empty()));
        m
    })
}

fn state(run: &std::path::Path) -> String {
    status(run)
        .and_then(|s| s["state"].as_str().map(String::from))
        .unwrap_or_default()
}

fn attempts(run: &std::path::Path) -> u64 {
    status(run)
        .and_then(|s| s["attempts"].as_u64())
        .unwrap_or(0)
}

fn epoch(run: &std::path::Path) -> u64 {
    status(run).and_then(|s| s["epoch"].as_u64()).unwrap_or(0)
}

#[test]
fn a_worker_killed_mid_run_is_retried_and_resumes_to_identical_metrics() {
    let reference = undisturbed();
    let t = Sandbox::with_fixtures();
    let exp = t.exp_dir("fixture-grid");
    let orch = t.spawn(&["run", "grid.toml", "--jobs", "1", "--retries", "1"]);

    // Kill the first run's worker once its first epoch is on disk, before its last.
    let mut victim: Option<(PathBuf, i32)> = None;
    wait_for(LIMIT, "a worker past its first epoch", || {
        for d in run_dirs(&exp) {
            let s = status(&d).unwrap_or_default();
            let e = s["epoch"].as_u64().unwrap_or(0);
            if s["state"] == "running"
                && (1..3).contains(&e)
                && let Some(pid) = s["pid"].as_i64()
            {
                victim = Some((d, pid as i32));
                return true;
            }
        }
        false
    });
    let (run, pid) = victim.unwrap();
    unsafe { libc::kill(pid, libc::SIGKILL) };

    let out = orch.wait(LIMIT);
    out.expect_code(0);
    assert!(
        out.stdout.contains("killed by signal 9"),
        "the failure is reported\n{}",
        out.report()
    );
    assert_eq!(state(&run), "done", "{}", out.report());
    assert_eq!(attempts(&run), 2, "one retry\n{}", out.report());
    let log = std::fs::read_to_string(run.join("worker.log")).unwrap();
    assert!(
        log.contains("resumed from epoch"),
        "the retry resumed from a checkpoint:\n{log}"
    );
    assert_eq!(&metrics_by_run(&exp), reference, "{}", out.report());
}

#[test]
fn ctrl_c_mid_grid_stops_cleanly_and_the_next_run_finishes_without_redoing() {
    let reference = undisturbed();
    let t = Sandbox::with_fixtures();
    let exp = t.exp_dir("fixture-grid");
    let orch = t.spawn(&["run", "grid.toml", "--jobs", "1"]);

    // With one job the runs go in plan order: wait for the first to finish and the
    // second to have a checkpoint.
    wait_for(LIMIT, "run 1 done, run 2 past epoch 1", || {
        let dirs = run_dirs(&exp);
        dirs.len() == 2
            && state(&dirs[0]) == "done"
            && state(&dirs[1]) == "running"
            && (1..3).contains(&epoch(&dirs[1]))
    });
    let table = t.run(&["status", "fixture-grid"]);
    table.expect_code(0);
    assert!(table.stdout.contains("running"), "{}", table.report());

    orch.signal(libc::SIGINT);
    let out = orch.wait(LIMIT);
    out.expect_code(130);
    let dirs = run_dirs(&exp);
    assert_eq!(state(&dirs[0]), "done", "{}", out.report());
    assert_eq!(state(&dirs[1]), "cancelled", "{}", out.report());
    assert!(!exp.join(".lock").exists(), "the lock is released");
    let first_metrics = dirs[0].join("metrics.jsonl");
    let mtime = std::fs::metadata(&first_metrics)
        .unwrap()
        .modified()
        .unwrap();

    let again = t.run(&["run", "grid.toml", "--jobs", "1"]);
    again.expect_code(0);
    assert!(again.stdout.contains("skip"), "{}", again.report());
    assert_eq!(attempts(&dirs[0]), 1, "the finished run was not redone");
    assert_eq!(
        std::fs::metadata(&first_metrics)
            .unwrap()
            .modified()
            .unwrap(),
        mtime
    );
    assert_eq!(attempts(&dirs[1]), 2);
    let log = std::fs::read_to_string(dirs[1].join("worker.log")).unwrap();
    assert!(log.contains("resumed from epoch"), "{log}");
    assert_eq!(&metrics_by_run(&exp), reference, "{}", again.report());
}

#[test]
fn a_diverging_run_is_marked_diverged_and_the_others_finish() {
    let t = Sandbox::with_fixtures();
    let out = t.run(&["run", "diverge.toml", "--jobs", "2"]);
    out.expect_code(1);
    let dirs = run_dirs(&t.exp_dir("fixture-diverge"));
    assert_eq!(dirs.len(), 2);
    assert_eq!(state(&dirs[0]), "done", "{}", out.report());
    assert_eq!(state(&dirs[1]), "diverged", "{}", out.report());
    let table = t.run(&["status", "fixture-diverge"]);
    assert!(table.stdout.contains("diverged"), "{}", table.report());
    // Running again redoes nothing: a diverged run is final.
    let again = t.run(&["run", "diverge.toml"]);
    again.expect_code(1);
    assert_eq!(attempts(&dirs[1]), 1, "{}", again.report());
}

#[test]
fn a_second_ctrl_c_kills_stuck_workers_and_the_next_run_still_matches() {
    let reference = undisturbed();
    let t = Sandbox::with_fixtures();
    let exp = t.exp_dir("fixture-grid");
    // A long grace period: with workers that cannot answer, only a second Ctrl-C ends this.
    let mut orch = t.spawn(&["run", "grid.toml", "--jobs", "2", "--grace", "600"]);
    wait_for(LIMIT, "both runs past epoch 1", || {
        let dirs = run_dirs(&exp);
        dirs.len() == 2 && dirs.iter().all(|d| state(d) == "running" && epoch(d) >= 1)
    });
    // Stuck workers: stopped processes never reach their next safe point.
    for d in run_dirs(&exp) {
        let pid = status(&d).and_then(|s| s["pid"].as_u64()).unwrap();
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    }
    orch.signal(libc::SIGINT);
    std::thread::sleep(Duration::from_secs(2));
    assert!(!orch.exited(), "the orchestrator waits for its workers");
    orch.signal(libc::SIGINT);
    let out = orch.wait(Duration::from_secs(60));
    out.expect_code(130);
    assert!(
        out.stdout.contains("killing workers now"),
        "{}",
        out.report()
    );
    assert!(!exp.join(".lock").exists(), "the lock is released");
    // Killed mid-epoch, the runs resume from their last checkpoint and end exactly where an
    // undisturbed grid ends.
    let again = t.run(&["run", "grid.toml", "--jobs", "2"]);
    again.expect_code(0);
    for d in run_dirs(&exp) {
        assert_eq!(state(&d), "done", "{}", again.report());
    }
    assert_eq!(&metrics_by_run(&exp), reference, "{}", again.report());
}

#[test]
fn fail_fast_stops_the_grid_at_a_diverged_run_and_a_plain_run_finishes_it() {
    let t = Sandbox::with_fixtures();
    // The diverging learning rate first, so with one job the sane run has not started.
    let spec = std::fs::read_to_string(t.path().join("diverge.toml"))
        .unwrap()
        .replace("fixture-diverge", "fixture-failfast")
        .replace("[0.01, 1e9]", "[1e9, 0.01]");
    std::fs::write(t.path().join("failfast.toml"), spec).unwrap();
    let exp = t.exp_dir("fixture-failfast");
    let out = t.run(&["run", "failfast.toml", "--jobs", "1", "--fail-fast"]);
    out.expect_code(1);
    assert!(out.stdout.contains("--fail-fast"), "{}", out.report());
    let dirs = run_dirs(&exp);
    assert_eq!(state(&dirs[0]), "diverged", "{}", out.report());
    assert!(
        dirs.get(1).is_none_or(|d| state(d) != "done"),
        "the second run did not train\n{}",
        out.report()
    );
    // Without --fail-fast the same command trains what is left and keeps the diverged run.
    let again = t.run(&["run", "failfast.toml", "--jobs", "1"]);
    again.expect_code(1);
    let dirs = run_dirs(&exp);
    assert_eq!(dirs.len(), 2);
    assert_eq!(attempts(&dirs[0]), 1, "{}", again.report());
    assert_eq!(state(&dirs[1]), "done", "{}", again.report());
}

#[test]
fn a_second_orchestrator_is_refused_and_a_dead_ones_lock_is_taken_over() {
    let t = Sandbox::with_fixtures();
    let exp = t.exp_dir("fixture-grid");
    let first = t.spawn(&["run", "grid.toml", "--jobs", "1"]);
    wait_for(LIMIT, "a running worker", || {
        run_dirs(&exp).iter().any(|d| state(d) == "running")
    });
    let second = t.run(&["run", "grid.toml"]);
    second.expect_code(5);
    assert!(
        second.stderr.contains(&format!("pid {}", first.pid())),
        "the message names the holder\n{}",
        second.report()
    );

    // SIGKILL the orchestrator: its workers notice, checkpoint and stop; its lock is stale.
    first.signal(libc::SIGKILL);
    let _ = first.wait(LIMIT);
    wait_for(Duration::from_secs(60), "orphaned workers to stop", || {
        run_dirs(&exp).iter().all(|d| state(d) != "running")
    });
    let third = t.run(&["run", "grid.toml"]);
    third.expect_code(0);
    assert!(third.stdout.contains("stale lock"), "{}", third.report());
}

#[test]
fn an_unusable_runs_dir_or_unknown_rerun_is_a_clear_error() {
    let t = Sandbox::with_fixtures();
    std::fs::write(t.path().join("somefile"), "keep me").unwrap();
    let out = t.run(&["run", "grid.toml", "--runs-dir", "somefile/runs"]);
    out.expect_code(5);
    assert!(
        out.stderr.contains("somefile/runs"),
        "names the path\n{}",
        out.report()
    );
    assert_eq!(
        std::fs::read_to_string(t.path().join("somefile")).unwrap(),
        "keep me"
    );

    let out = t.run(&["run", "grid.toml", "--rerun", "no-such-run"]);
    out.expect_code(2);
    assert!(out.stderr.contains("no-such-run"), "{}", out.report());
    assert!(
        !t.exp_dir("fixture-grid").join(".lock").exists(),
        "the lock is released on error"
    );
}
