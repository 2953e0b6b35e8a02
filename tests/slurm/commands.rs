//! `orchestrate run --backend slurm`, `status` and `worker` on the smoke grid.

use super::*;
use crate::util::{Output, Sandbox};

/// `orchestrate run experiments/smoke.toml` with one thread per run, into `runs_dir`.
fn run_smoke(sb: &Sandbox, runs_dir: &Path, extra: &[&str]) -> Output {
    let runs_dir = runs_dir.to_str().unwrap();
    let mut args = vec![
        "run",
        "experiments/smoke.toml",
        "--plain",
        "--runs-dir",
        runs_dir,
        "--threads",
        "1",
        "--set",
        "launch.slurm.cpus_per_task=1",
    ];
    args.extend_from_slice(extra);
    sb.run(&args)
}

#[test]
fn smoke_grid_on_slurm_matches_the_local_backend() {
    let Some(_g) = shared() else { return };
    let tmp = Sandbox::with_data();
    let summary_of = |backend: &str| -> serde_json::Value {
        let runs_dir = tmp.path().join(backend);
        run_smoke(&tmp, &runs_dir, &["--backend", backend]).expect_code(0);
        serde_json::from_str(&read(runs_dir.join("smoke").join("summary.json"))).unwrap()
    };
    let local = summary_of("local");
    let slurm = summary_of("slurm");
    // The metric section of every run, keyed by run id; timings are kept apart by the
    // summary and never compared.
    let metrics = |s: &serde_json::Value| -> Vec<(String, serde_json::Value)> {
        let mut v: Vec<_> = s["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .map(|r| (r["id"].as_str().unwrap().to_string(), r["metrics"].clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    assert_eq!(metrics(&local).len(), 2);
    assert_eq!(metrics(&local), metrics(&slurm));
    assert_eq!(local["winner"], slurm["winner"]);
    // The Slurm runs really ran as array tasks, with the thread budget asked for.
    let exp = tmp.path().join("slurm").join("smoke");
    let jobs = load_jobs(&exp).unwrap().jobs;
    assert_eq!(jobs.len(), 1);
    assert!(read(&jobs[0].script).contains("#SBATCH --cpus-per-task=1\n"));
    for t in &jobs[0].tasks {
        let exit: serde_json::Value =
            serde_json::from_str(&read(t.run_dir.join("slurm_exit.json"))).unwrap();
        assert_eq!(exit["job"], jobs[0].job_id.as_str());
        assert_eq!(exit["exit_code"], 0);
    }
}

#[test]
fn detached_run_shows_in_status_and_a_later_run_follows_it_to_the_summary() {
    let Some(_g) = shared() else { return };
    let tmp = Sandbox::with_data();
    let runs_dir = tmp.path().join("runs");
    let exp = runs_dir.join("smoke");
    let detached = run_smoke(&tmp, &runs_dir, &["--backend", "slurm", "--detach"]);
    detached.expect_code(0).stdout_has("detached: 2 run(s)");
    let jobs = load_jobs(&exp).unwrap().jobs;
    assert_eq!(jobs.len(), 1, "{detached}");
    let job = jobs[0].job_id.clone();
    assert!(
        detached.stdout.contains(&format!("array job(s) {job}")),
        "{detached}"
    );
    assert!(
        !exp.join("summary.json").exists(),
        "no summary before the runs end"
    );

    let status = tmp.run(&["status", "smoke", "--runs-dir", runs_dir.to_str().unwrap()]);
    status
        .expect_code(0)
        .stdout_has("slurm (latest array task of each run):");
    for t in &jobs[0].tasks {
        assert!(
            status
                .stdout
                .contains(&format!("{job}_{} run {}", t.task, t.run_id)),
            "{status}"
        );
    }
    // Scripts get the same view from --json: each run's row names its array task.
    let json = tmp.run(&[
        "status",
        "smoke",
        "--runs-dir",
        runs_dir.to_str().unwrap(),
        "--json",
    ]);
    let rows: serde_json::Value = serde_json::from_str(&json.expect_code(0).stdout).unwrap();
    for t in &jobs[0].tasks {
        let row = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == t.run_id.as_str())
            .unwrap_or_else(|| panic!("no row for {}\n{json}", t.run_id));
        assert_eq!(row["slurm"]["job"], job.as_str(), "{json}");
        assert_eq!(row["slurm"]["task"], t.task, "{json}");
        assert!(row["slurm"]["phase"].is_string(), "{json}");
    }

    // The same command without --detach picks the job up (while it runs, or after it ended
    // if the cluster was quick): no second submission.
    let again = run_smoke(&tmp, &runs_dir, &["--backend", "slurm"]);
    again
        .expect_code(0)
        .stdout_has(&format!("slurm  array job {job}"))
        .stdout_has("best: ");
    assert!(!again.stdout.contains("submitted array job"), "{again}");
    assert_eq!(load_jobs(&exp).unwrap().jobs.len(), 1);
    let summary: serde_json::Value = serde_json::from_str(&read(exp.join("summary.json"))).unwrap();
    assert_eq!(summary["runs"].as_array().unwrap().len(), 2);
    for t in &jobs[0].tasks {
        let s: serde_json::Value =
            serde_json::from_str(&read(t.run_dir.join("status.json"))).unwrap();
        assert_eq!(s["state"], "done", "{}", t.run_id);
        assert_eq!(s["attempts"], 1, "{}", t.run_id);
    }

    // Everything is done: a third run submits nothing and says so.
    let third = run_smoke(&tmp, &runs_dir, &["--backend", "slurm"]);
    third.expect_code(0).stdout_has("already done");
    assert_eq!(load_jobs(&exp).unwrap().jobs.len(), 1);
}

#[test]
fn ctrl_c_cancels_the_array_exits_130_and_the_same_command_resumes() {
    let Some(_g) = shared() else { return };
    let tmp = Sandbox::with_data();
    let runs_dir = tmp.path().join("runs");
    let exp = runs_dir.join("smoke");
    let args = [
        "run",
        "experiments/smoke.toml",
        "--plain",
        "--backend",
        "slurm",
        "--runs-dir",
        runs_dir.to_str().unwrap(),
        "--threads",
        "1",
        "--set",
        "train.epochs=6",
    ];
    let mut child = tmp
        .cmd(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once a worker has an epoch on disk and before any run is done.
    wait_until(Duration::from_secs(120), || {
        assert!(child.try_wait().unwrap().is_none(), "the grid ended early");
        load_jobs(&exp).is_ok_and(|r| {
            r.jobs.iter().flat_map(|j| &j.tasks).any(|t| {
                fs::read_to_string(t.run_dir.join("status.json"))
                    .ok()
                    .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
                    .is_some_and(|s| s["state"] == "running" && s["epoch"].as_u64() >= Some(1))
            })
        })
    });
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stdout}\n{stderr}");
    assert!(stdout.contains("interrupted: "), "{stdout}");
    let jobs = load_jobs(&exp).unwrap().jobs;
    assert_eq!(jobs.len(), 1);
    let job = jobs[0].job_id.clone();
    wait_until(Duration::from_secs(30), || {
        let q = Command::new("squeue")
            .args(["-h", "-j", &job])
            .output()
            .unwrap();
        String::from_utf8_lossy(&q.stdout).trim().is_empty()
    });
    let mut resumable = 0;
    for t in &jobs[0].tasks {
        let s: serde_json::Value =
            serde_json::from_str(&read(t.run_dir.join("status.json"))).unwrap();
        assert_ne!(s["state"], "running", "{}: {s}", t.run_id);
        if s["state"] == "cancelled" && s["epoch"].as_u64() >= Some(1) {
            resumable += 1;
        }
    }
    assert!(resumable >= 1, "a worker checkpointed on SIGTERM");

    // The same command finishes the grid from the checkpoints.
    let again = tmp.run(&args);
    again
        .expect_code(0)
        .stdout_has("resuming after epoch")
        .stdout_has("best: ");
    for t in &jobs[0].tasks {
        let s: serde_json::Value =
            serde_json::from_str(&read(t.run_dir.join("status.json"))).unwrap();
        assert_eq!(s["state"], "done", "{}", t.run_id);
        assert_eq!(s["epoch"], 6, "{}", t.run_id);
    }
}

#[test]
fn run_with_an_unknown_partition_writes_nothing() {
    let Some(_g) = shared() else { return };
    let tmp = Sandbox::with_data();
    let runs_dir = tmp.path().join("runs");
    let out = run_smoke(
        &tmp,
        &runs_dir,
        &[
            "--backend",
            "slurm",
            "--set",
            "launch.slurm.partition=no-such-partition",
        ],
    );
    out.expect_code(5);
    assert!(
        out.stderr.contains("no such partition") && out.stderr.contains("debug"),
        "{out}"
    );
    assert!(!runs_dir.exists(), "nothing written: {out}");
}

/// Needs no cluster: the plan is rendered, not submitted.
#[test]
fn plan_with_the_slurm_backend_prints_the_batch_script_and_writes_nothing() {
    let tmp = Sandbox::with_data();
    let runs_dir = tmp.path().join("runs");
    let out = tmp.run(&[
        "plan",
        "experiments/smoke.toml",
        "--backend",
        "slurm",
        "--threads",
        "2",
        "--set",
        "launch.slurm.max_parallel=1",
        "--runs-dir",
        runs_dir.to_str().unwrap(),
    ]);
    out.expect_code(0)
        .stdout_has("slurm submission:")
        .stdout_has("$ sbatch --parsable ")
        .stdout_has("#SBATCH --array=0-1%1\n")
        .stdout_has("#SBATCH --cpus-per-task=2\n")
        .stdout_has("#SBATCH --no-requeue\n")
        .stdout_has(" worker >>\"$run_dir/worker.log\"");
    assert!(!runs_dir.exists(), "plan wrote {}", runs_dir.display());
    let json = tmp.run(&[
        "plan",
        "experiments/smoke.toml",
        "--backend",
        "slurm",
        "--json",
        "--runs-dir",
        runs_dir.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&json.expect_code(0).stdout).unwrap();
    assert_eq!(v["slurm"]["run_list"].as_array().unwrap().len(), 2);
    assert!(
        v["slurm"]["script"]
            .as_str()
            .unwrap()
            .starts_with("#!/bin/bash")
    );
}

#[test]
fn successive_halving_on_slurm_prunes_what_the_local_pool_prunes() {
    let Some(_g) = shared() else { return };
    let sb = Sandbox::with_fixtures();
    // Per run id its final state and epoch; the schedule's decisions (every value each rung
    // compared); the finished runs' metrics and the winner.
    let outcome = |backend: &str| {
        let runs_dir = sb.path().join(backend);
        sb.run(&[
            "run",
            "prune.toml",
            "--plain",
            "--runs-dir",
            runs_dir.to_str().unwrap(),
            "--threads",
            "1",
            "--set",
            "launch.slurm.cpus_per_task=1",
            "--backend",
            backend,
        ])
        .expect_code(0);
        let exp = runs_dir.join("fixture-prune");
        let mut states: Vec<(String, String, u64)> = fs::read_dir(&exp)
            .unwrap()
            .flatten()
            .filter(|e| e.path().join("plan.json").is_file())
            .map(|e| {
                let status: serde_json::Value =
                    serde_json::from_str(&read(e.path().join("status.json"))).unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    status["state"].as_str().unwrap().to_string(),
                    status["epoch"].as_u64().unwrap(),
                )
            })
            .collect();
        states.sort();
        let summary: serde_json::Value =
            serde_json::from_str(&read(exp.join("summary.json"))).unwrap();
        let finished: Vec<(serde_json::Value, serde_json::Value)> = summary["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .map(|r| (r["id"].clone(), r["metrics"].clone()))
            .collect();
        let result = (states, finished, summary["winner"].clone());
        (result, read(exp.join("schedule.json")), exp)
    };
    let (local, local_schedule, _) = outcome("local");
    let (slurm, slurm_schedule, exp) = outcome("slurm");
    let states = &local.0;
    assert_eq!(states.len(), 9);
    let pruned = states.iter().filter(|r| r.1 == "pruned").count();
    let done = states.iter().filter(|r| r.1 == "done").count();
    assert_eq!((pruned, done), (8, 1), "{states:?}");
    assert_eq!(slurm, local);
    assert_eq!(slurm_schedule, local_schedule);
    // Each rung's survivors went on in an array of their own: 9 runs, then 3, then 1.
    let jobs = load_jobs(&exp).unwrap().jobs;
    let sizes: Vec<usize> = jobs.iter().map(|j| j.tasks.len()).collect();
    assert_eq!(sizes, vec![9, 3, 1]);
}
