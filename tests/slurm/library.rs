//! `launch::slurm` against the real cluster, with the stand-in worker.

use super::*;

#[test]
fn array_tasks_report_exit_codes_and_worker_status() {
    let Some(_g) = shared() else { return };
    let exp = Experiment::new("codes");
    let runs = exp.runs(&["ok", "fail 3", "ok 1"]);
    let slurm = SlurmSpec {
        max_parallel: 2,
        ..SlurmSpec::default()
    };
    let (outcomes, interrupted) = finished(exp.run(&slurm, &runs, &exp.options(0)).unwrap());
    assert!(!interrupted);
    assert_states(
        &outcomes,
        &[RunState::Done, RunState::Failed, RunState::Done],
    );
    assert_eq!(outcomes[1].exit_code, Some(3));
    assert_eq!(outcomes[1].message.as_deref(), Some("fake failure"));
    assert_eq!(outcomes[0].exit_code, Some(0));

    let jobs = load_jobs(&exp.exp_dir()).unwrap().jobs;
    assert_eq!(jobs.len(), 1, "one array job for the grid");
    let job = &jobs[0];
    assert_eq!(job.tasks.len(), 3);
    assert!(read(&job.script).contains("#SBATCH --array=0-2%2\n"));
    for (i, run) in runs.iter().enumerate() {
        // Exit file, wrapper output, worker output, environment and working directory.
        let exit: serde_json::Value =
            serde_json::from_str(&read(run.run_dir.join("slurm_exit.json"))).unwrap();
        assert_eq!(exit["job"], job.job_id.as_str());
        assert_eq!(exit["task"], i);
        let wrapper = read(
            exp.exp_dir()
                .join(".slurm")
                .join(format!("{}_{i}.out", job.job_id)),
        );
        assert!(
            wrapper.contains(&format!("worker exited with code {}", exit["exit_code"])),
            "{wrapper}"
        );
        assert!(run.run_dir.join("worker.log").exists());
        let env = read(run.run_dir.join("env.txt"));
        assert_eq!(
            env.trim(),
            format!(
                "run={} threads=1/1 pwd={} job={}_{i}",
                run.run_id,
                exp.root.display(),
                job.job_id
            )
        );
    }
    assert_eq!(status_state(&runs[1]), "failed");
}

#[test]
fn retries_resubmit_only_the_failed_runs() {
    let Some(_g) = shared() else { return };
    let exp = Experiment::new("retry");
    let runs = exp.runs(&["ok", "flaky 2", "fail 4"]);
    let (outcomes, _) = finished(
        exp.run(&SlurmSpec::default(), &runs, &exp.options(1))
            .unwrap(),
    );
    assert_states(
        &outcomes,
        &[RunState::Done, RunState::Done, RunState::Failed],
    );
    assert_eq!(
        outcomes.iter().map(|o| o.attempts).collect::<Vec<_>>(),
        vec![1, 2, 2]
    );
    // Resubmissions (one per round of polling that saw failures) hold only the failed runs.
    let jobs = load_jobs(&exp.exp_dir()).unwrap().jobs;
    assert_eq!(jobs[0].tasks.len(), 3);
    let mut resubmitted: Vec<&str> = jobs[1..]
        .iter()
        .flat_map(|j| j.tasks.iter().map(|t| t.run_id.as_str()))
        .collect();
    resubmitted.sort();
    assert_eq!(resubmitted, vec!["run1", "run2"], "{jobs:#?}");
    // The run that succeeded the first time ran once.
    assert_eq!(read(runs[0].run_dir.join("attempts")).trim(), "1");
    assert_eq!(read(runs[1].run_dir.join("attempts")).trim(), "2");
    let job_of_run1 = jobs[1..]
        .iter()
        .find(|j| j.tasks.iter().any(|t| t.run_id == "run1"))
        .unwrap();
    assert!(
        outcomes[1]
            .job
            .starts_with(&format!("{}_", job_of_run1.job_id))
    );
}

#[test]
fn unknown_partition_is_refused_before_anything_is_submitted() {
    let Some(_g) = shared() else { return };
    let exp = Experiment::new("nopart");
    let runs = exp.runs(&["ok"]);
    let slurm = SlurmSpec {
        partition: "no-such-partition".into(),
        ..SlurmSpec::default()
    };
    let err = exp.run(&slurm, &runs, &exp.options(0)).unwrap_err();
    assert!(matches!(err, SlurmError::NoSuchPartition { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("launch.slurm.partition = \"no-such-partition\""),
        "{msg}"
    );
    assert!(
        msg.contains("debug"),
        "lists the partitions there are: {msg}"
    );
    assert!(!exp.exp_dir().join(".slurm").exists());
    assert_eq!(exp.live_slurm_jobs(), "");
}

#[test]
fn rejected_submission_shows_slurms_message_and_records_nothing() {
    let Some(_g) = shared() else { return };
    let exp = Experiment::new("reject");
    let runs = exp.runs(&["ok"]);
    let slurm = SlurmSpec {
        mem: "999999G".into(),
        ..SlurmSpec::default()
    };
    let err = exp.run(&slurm, &runs, &exp.options(0)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SlurmError::Rejected { .. }), "{err:?}");
    assert!(
        msg.contains("Requested node configuration is not available"),
        "{msg}"
    );
    assert!(msg.contains("nothing was submitted"), "{msg}");
    assert!(load_jobs(&exp.exp_dir()).unwrap().jobs.is_empty());
    assert_eq!(exp.live_slurm_jobs(), "");
}

#[test]
fn cancel_stops_running_and_pending_tasks_and_leaves_them_resumable() {
    let Some(_g) = shared() else { return };
    let exp = Experiment::new("cancel");
    let runs = exp.runs(&["sleep 120", "sleep 120", "sleep 120"]);
    let slurm = SlurmSpec {
        max_parallel: 1,
        ..SlurmSpec::default()
    };
    let opts = exp.options(3);
    let cancel = opts.cancel.clone();
    let started = Instant::now();
    let result = thread::scope(|s| {
        let h = s.spawn(|| exp.run(&slurm, &runs, &opts));
        // Cancel once the first worker is really running (it wrote its status).
        wait_until(Duration::from_secs(60), || {
            assert!(!h.is_finished(), "the grid ended early");
            runs[0].run_dir.join("status.json").exists()
        });
        cancel.store(true, Ordering::SeqCst);
        h.join().unwrap()
    });
    let (outcomes, interrupted) = finished(result.unwrap());
    assert!(interrupted);
    assert_states(
        &outcomes,
        &[
            RunState::Cancelled,
            RunState::Cancelled,
            RunState::Cancelled,
        ],
    );
    // The running worker caught SIGTERM and said so; the others never started.
    assert_eq!(outcomes[0].message.as_deref(), Some("stopped by SIGTERM"));
    for o in &outcomes[1..] {
        assert!(
            o.message.as_deref().unwrap().contains("before it started"),
            "{o:?}"
        );
    }
    assert_eq!(status_state(&runs[0]), "cancelled");
    assert_eq!(status_state(&runs[2]), "cancelled");
    assert!(!runs[1].run_dir.join("attempts").exists(), "never started");
    assert_eq!(
        load_jobs(&exp.exp_dir()).unwrap().jobs.len(),
        1,
        "no retry after a cancel"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn task_that_never_starts_is_seen_pending_then_cancelled() {
    let Some(_g) = shared() else { return };
    let exp = Experiment::new("down");
    let runs = exp.runs(&["ok"]);
    // up.sh defines `ci-down`, a partition that exists but is down: sbatch accepts, the task
    // waits forever with reason PartitionDown.
    let slurm = SlurmSpec {
        partition: "ci-down".into(),
        ..SlurmSpec::default()
    };
    let job = exp.launcher(&slurm).submit(&runs).unwrap();
    let mut last = None;
    wait_until(Duration::from_secs(20), || {
        let v = job.poll().unwrap();
        last = Some(v[0].phase.clone());
        matches!(&v[0].phase, TaskPhase::Waiting { reason: Some(r) } if r == "PartitionDown")
    });
    job.cancel().unwrap();
    wait_until(Duration::from_secs(20), || {
        let v = job.poll().unwrap();
        last = Some(v[0].phase.clone());
        v[0].phase.is_terminal()
    });
    let views = job.poll().unwrap();
    match &views[0].phase {
        TaskPhase::Ended { started, .. } => assert_eq!(*started, Some(false)),
        other => panic!("expected Ended, got {other:?}"),
    }
    let o = views[0].outcome().unwrap();
    assert_eq!(o.state, RunState::Cancelled);
    assert!(o.message.unwrap().contains("before it started"));
}

#[test]
fn detach_then_a_later_run_picks_the_tracking_up() {
    let Some(_g) = shared() else { return };
    let exp = Experiment::new("detach");
    let runs = exp.runs(&["ok 2", "ok 2"]);
    let mut opts = exp.options(0);
    opts.detach = true;
    let jobs = match exp.run(&SlurmSpec::default(), &runs, &opts).unwrap() {
        SlurmGridResult::Detached { jobs, runs } => {
            assert_eq!(runs, 2);
            jobs
        }
        other => panic!("expected detached, got {other:?}"),
    };
    assert_eq!(jobs.len(), 1);
    let recorded = load_jobs(&exp.exp_dir()).unwrap().jobs;
    assert_eq!(recorded[0].job_id, jobs[0]);
    // A later, attached invocation: no second submission, both runs followed to the end.
    opts.detach = false;
    let (outcomes, _) = finished(exp.run(&SlurmSpec::default(), &runs, &opts).unwrap());
    assert_states(&outcomes, &[RunState::Done, RunState::Done]);
    assert_eq!(load_jobs(&exp.exp_dir()).unwrap().jobs.len(), 1);
    for o in &outcomes {
        assert!(o.job.starts_with(&format!("{}_", jobs[0])), "{o:?}");
    }
    for r in &runs {
        assert_eq!(read(r.run_dir.join("attempts")).trim(), "1");
    }
}

/// Pid of a daemon up.sh recorded, after checking it is that daemon.
fn daemon_pid(name: &str) -> i32 {
    let pid: i32 = read(format!("{}/{name}.pid", slurm_ci_dir()))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        read(format!("/proc/{pid}/comm")).trim(),
        name,
        "pid file of {name} is stale"
    );
    pid
}

fn stop_daemon(name: &str) {
    let pid = daemon_pid(name);
    let ok = Command::new("kill").arg(pid.to_string()).status().unwrap();
    assert!(ok.success());
    wait_until(Duration::from_secs(20), || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
}

fn start_daemon(name: &str) {
    let ok = Command::new(format!("/usr/sbin/{name}"))
        .args(["-f", "/etc/slurm/slurm.conf"])
        .status()
        .unwrap();
    assert!(ok.success(), "{name} did not start");
}

#[test]
fn slurmd_restart_while_tasks_run_loses_nothing() {
    let Some(_g) = exclusive() else { return };
    let exp = Experiment::new("slurmd");
    let runs = exp.runs(&["ok 5", "ok 5", "ok 2", "ok 2"]);
    let opts = exp.options(0);
    let result = thread::scope(|s| {
        let h = s.spawn(|| exp.run(&SlurmSpec::default(), &runs, &opts));
        wait_until(Duration::from_secs(60), || {
            assert!(!h.is_finished(), "the grid ended early");
            runs[0].run_dir.join("attempts").exists()
        });
        stop_daemon("slurmd");
        thread::sleep(Duration::from_secs(3));
        start_daemon("slurmd");
        h.join().unwrap()
    });
    let (outcomes, _) = finished(result.unwrap());
    assert_states(&outcomes, &[RunState::Done; 4]);
    for r in &runs {
        assert_eq!(read(r.run_dir.join("attempts")).trim(), "1", "{}", r.run_id);
        assert_eq!(read(r.run_dir.join("metrics.jsonl")).lines().count(), 1);
    }
    assert_eq!(load_jobs(&exp.exp_dir()).unwrap().jobs.len(), 1);
}

#[test]
fn controller_outage_is_unknown_not_gone() {
    let Some(_g) = exclusive() else { return };
    let exp = Experiment::new("ctld");
    let runs = exp.runs(&["ok 6", "ok 6"]);
    let job = exp.launcher(&SlurmSpec::default()).submit(&runs).unwrap();
    wait_until(Duration::from_secs(60), || {
        runs.iter().all(|r| r.run_dir.join("attempts").exists())
    });
    stop_daemon("slurmctld");
    let views = job.poll();
    start_daemon("slurmctld");
    let views = views.unwrap();
    for v in &views {
        // Either the worker already finished (its exit file answers) or the state is unknown;
        // never "gone", never failed.
        assert!(
            matches!(
                v.phase,
                TaskPhase::Unknown { .. } | TaskPhase::Exited { code: 0 }
            ),
            "{v:?}"
        );
    }
    assert!(
        views
            .iter()
            .any(|v| matches!(v.phase, TaskPhase::Unknown { .. })),
        "{views:?}"
    );
    // Once the controller is back, the runs are followed to the end without resubmission.
    let (outcomes, _) = finished(
        exp.run(&SlurmSpec::default(), &runs, &exp.options(0))
            .unwrap(),
    );
    assert_states(&outcomes, &[RunState::Done, RunState::Done]);
    assert_eq!(load_jobs(&exp.exp_dir()).unwrap().jobs.len(), 1);
}
