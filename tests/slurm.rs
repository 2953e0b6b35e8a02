//! The Slurm backend against a real cluster (`.ci/slurm/up.sh` starts one on 127.0.0.1).
//!
//! Skipped, with a message, only when `sinfo` is not installed and `ORCHESTRATE_REQUIRE_SLURM`
//! is unset; CI sets it, so there a missing cluster fails the suite.
//!
//! The library tests run a stand-in worker (a shell script below) that behaves as the file
//! `fake` in its run directory says: finish, fail with a code, fail on its first attempt
//! only, or sleep until cancelled. It writes `status.json`, `metrics.jsonl` and an
//! `attempts` counter the way a worker would, so those tests check what the orchestrator
//! reads back, not how the worker trains. The command tests at the end run the real
//! `orchestrate run --backend slurm` and `orchestrate worker` on the smoke grid.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant};

use orchestrate::launch::slurm::{
    RunOutcome, RunToLaunch, SlurmError, SlurmGridResult, SlurmLauncher, SlurmOptions, TaskPhase,
    TaskView, WorkerCommand, load_jobs, run_grid_on_slurm,
};
use orchestrate::spec::SlurmSpec;
use orchestrate::store::RunState;

/// Tests that restart daemons take this for writing; all others for reading, so a restart
/// never hits an unrelated test's sbatch.
static CLUSTER: RwLock<()> = RwLock::new(());

/// Where up.sh keeps pid files (its `SLURM_CI_DIR`).
fn slurm_ci_dir() -> String {
    std::env::var("SLURM_CI_DIR").unwrap_or_else(|_| "/tmp/slurm-ci".into())
}

fn require_slurm() -> bool {
    let has_sinfo = Command::new("sinfo").arg("--version").output().is_ok();
    if has_sinfo {
        return true;
    }
    let required =
        std::env::var("ORCHESTRATE_REQUIRE_SLURM").is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "ORCHESTRATE_REQUIRE_SLURM is set but `sinfo` is not installed: run .ci/slurm/up.sh first"
    );
    eprintln!(
        "SKIPPED: no Slurm here (`sinfo` not found). Start the test cluster with \
         `sudo .ci/slurm/up.sh`; set ORCHESTRATE_REQUIRE_SLURM=1 to make this a failure."
    );
    false
}

fn shared() -> Option<RwLockReadGuard<'static, ()>> {
    require_slurm().then(|| CLUSTER.read().unwrap_or_else(|e| e.into_inner()))
}

fn exclusive() -> Option<RwLockWriteGuard<'static, ()>> {
    require_slurm().then(|| CLUSTER.write().unwrap_or_else(|e| e.into_inner()))
}

const FAKE_WORKER: &str = r#"#!/bin/bash
# Stand-in for `orchestrate worker`: does what $ORCHESTRATE_RUN_DIR/fake says.
set -u
d=$ORCHESTRATE_RUN_DIR
status() {
    printf '{"state":"%s","attempts":%d,"epoch":%d,"message":"%s"}\n' "$1" "$attempts" "$2" "$3" \
        >"$d/status.json.tmp" && mv "$d/status.json.tmp" "$d/status.json"
}
attempts=$(( $(cat "$d/attempts" 2>/dev/null || echo 0) + 1 ))
echo "$attempts" >"$d/attempts"
echo "run=$ORCHESTRATE_RUN_ID threads=$ORCHESTRATE_THREADS/$RAYON_NUM_THREADS pwd=$(pwd) job=$ORCHESTRATE_SLURM_JOB" >>"$d/env.txt"
status running 0 ""
read -r mode arg <"$d/fake"
finish() {
    echo '{"epoch":1,"step":10,"tag":"dev/accuracy","value":0.5}' >>"$d/metrics.jsonl"
    status done 1 ""
    exit 0
}
case $mode in
ok) sleep "${arg:-0}"; finish ;;
fail) status failed 0 "fake failure"; exit "$arg" ;;
flaky) if [ "$attempts" -lt "$arg" ]; then status failed 0 "flaky"; exit 1; fi; finish ;;
sleep)
    trap 'status cancelled 0 "stopped by SIGTERM"; exit 130' TERM
    sleep "$arg" &
    wait $!
    finish ;;
esac
"#;

/// A temporary experiment: `runs/<name>/<run>/` directories and the stand-in worker.
struct Experiment {
    _dir: tempfile::TempDir,
    root: PathBuf,
    name: String,
    worker: WorkerCommand,
}

impl Experiment {
    fn new(name: &str) -> Experiment {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        let worker_path = root.join("fake-worker.sh");
        fs::write(&worker_path, FAKE_WORKER).unwrap();
        make_executable(&worker_path);
        // Unique job names: tests share one cluster.
        let name = format!("{name}-{}", std::process::id());
        Experiment {
            _dir: dir,
            worker: WorkerCommand {
                program: worker_path,
                args: vec![],
                env: vec![],
            },
            root,
            name,
        }
    }

    fn exp_dir(&self) -> PathBuf {
        self.root.join("runs").join(&self.name)
    }

    /// Run directories with the given behaviours, in order.
    fn runs(&self, behaviours: &[&str]) -> Vec<RunToLaunch> {
        behaviours
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let run_id = format!("run{i}");
                let run_dir = self.exp_dir().join(&run_id);
                fs::create_dir_all(&run_dir).unwrap();
                fs::write(run_dir.join("fake"), format!("{b}\n")).unwrap();
                RunToLaunch { run_id, run_dir }
            })
            .collect()
    }

    fn options(&self, retries: usize) -> SlurmOptions {
        let mut o = SlurmOptions::new(&SlurmSpec::default(), retries);
        o.poll_interval = Duration::from_millis(500);
        o.worker = Some(self.worker.clone());
        o.workdir = Some(self.root.clone());
        o
    }

    fn run(
        &self,
        slurm: &SlurmSpec,
        runs: &[RunToLaunch],
        opts: &SlurmOptions,
    ) -> Result<SlurmGridResult, SlurmError> {
        let mut seen = |v: &TaskView| eprintln!("[{}] {}", self.name, v.describe());
        run_grid_on_slurm(&self.name, &self.exp_dir(), slurm, runs, opts, &mut seen)
    }

    fn launcher(&self, slurm: &SlurmSpec) -> SlurmLauncher {
        SlurmLauncher::new(&self.name, &self.exp_dir(), slurm)
            .unwrap()
            .with_worker(self.worker.clone())
            .with_workdir(&self.root)
    }

    /// Jobs under this experiment's name that are waiting or running.
    fn live_slurm_jobs(&self) -> String {
        let out = Command::new("squeue")
            .args(["-h", "-n", &self.name, "-o", "%i %T"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

fn make_executable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
}

fn finished(r: SlurmGridResult) -> (Vec<RunOutcome>, bool) {
    match r {
        SlurmGridResult::Finished {
            outcomes,
            interrupted,
        } => (outcomes, interrupted),
        other => panic!("expected a finished grid, got {other:?}"),
    }
}

fn read(p: impl AsRef<Path>) -> String {
    let p = p.as_ref();
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn status_state(run: &RunToLaunch) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&read(run.run_dir.join("status.json"))).unwrap();
    v["state"].as_str().unwrap_or("").to_string()
}

fn assert_states(outcomes: &[RunOutcome], expected: &[RunState]) {
    let got: Vec<RunState> = outcomes.iter().map(|o| o.state).collect();
    assert_eq!(got, expected, "outcomes: {outcomes:#?}");
}

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

/// `orchestrate ARGS` run in the repository (for `experiments/` and `data/`); on failure of
/// an expectation the command, its exit code and output are printed.
struct Cli {
    cmd: String,
    code: i32,
    stdout: String,
    stderr: String,
}

impl Cli {
    fn run(args: &[&str]) -> Cli {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(env!("CARGO_BIN_EXE_orchestrate"))
            .current_dir(repo)
            .args(args)
            .output()
            .unwrap();
        Cli {
            cmd: format!("orchestrate {}", args.join(" ")),
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn expect(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "{self}");
        self
    }

    fn stdout_has(&self, text: &str) -> &Self {
        assert!(self.stdout.contains(text), "stdout lacks {text:?}\n{self}");
        self
    }
}

impl std::fmt::Display for Cli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "command: {}\nexit code: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmd, self.code, self.stdout, self.stderr
        )
    }
}

/// `orchestrate run experiments/smoke.toml` with one thread per run, into `runs_dir`.
fn run_smoke(runs_dir: &Path, extra: &[&str]) -> Cli {
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
    Cli::run(&args)
}

#[test]
fn smoke_grid_on_slurm_matches_the_local_backend() {
    let Some(_g) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let summary_of = |backend: &str| -> serde_json::Value {
        let runs_dir = tmp.path().join(backend);
        run_smoke(&runs_dir, &["--backend", backend]).expect(0);
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
    let tmp = tempfile::tempdir().unwrap();
    let runs_dir = tmp.path().join("runs");
    let exp = runs_dir.join("smoke");
    let detached = run_smoke(&runs_dir, &["--backend", "slurm", "--detach"]);
    detached.expect(0).stdout_has("detached: 2 run(s)");
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

    let status = Cli::run(&["status", "smoke", "--runs-dir", runs_dir.to_str().unwrap()]);
    status
        .expect(0)
        .stdout_has("slurm (latest array task of each run):");
    for t in &jobs[0].tasks {
        assert!(
            status
                .stdout
                .contains(&format!("{job}_{} run {}", t.task, t.run_id)),
            "{status}"
        );
    }

    // The same command without --detach picks the job up (while it runs, or after it ended
    // if the cluster was quick): no second submission.
    let again = run_smoke(&runs_dir, &["--backend", "slurm"]);
    again
        .expect(0)
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
    let third = run_smoke(&runs_dir, &["--backend", "slurm"]);
    third.expect(0).stdout_has("already done");
    assert_eq!(load_jobs(&exp).unwrap().jobs.len(), 1);
}

#[test]
fn ctrl_c_cancels_the_array_exits_130_and_the_same_command_resumes() {
    let Some(_g) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_orchestrate"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
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
    let again = Cli::run(&args);
    again
        .expect(0)
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
    let tmp = tempfile::tempdir().unwrap();
    let runs_dir = tmp.path().join("runs");
    let out = run_smoke(
        &runs_dir,
        &[
            "--backend",
            "slurm",
            "--set",
            "launch.slurm.partition=no-such-partition",
        ],
    );
    out.expect(5);
    assert!(
        out.stderr.contains("no such partition") && out.stderr.contains("debug"),
        "{out}"
    );
    assert!(!runs_dir.exists(), "nothing written: {out}");
}

/// Needs no cluster: the plan is rendered, not submitted.
#[test]
fn plan_with_the_slurm_backend_prints_the_batch_script_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let runs_dir = tmp.path().join("runs");
    let out = Cli::run(&[
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
    out.expect(0)
        .stdout_has("slurm submission:")
        .stdout_has("$ sbatch --parsable ")
        .stdout_has("#SBATCH --array=0-1%1\n")
        .stdout_has("#SBATCH --cpus-per-task=2\n")
        .stdout_has("#SBATCH --no-requeue\n")
        .stdout_has(" worker >>\"$run_dir/worker.log\"");
    assert!(!runs_dir.exists(), "plan wrote {}", runs_dir.display());
    let json = Cli::run(&[
        "plan",
        "experiments/smoke.toml",
        "--backend",
        "slurm",
        "--json",
        "--runs-dir",
        runs_dir.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&json.expect(0).stdout).unwrap();
    assert_eq!(v["slurm"]["run_list"].as_array().unwrap().len(), 2);
    assert!(
        v["slurm"]["script"]
            .as_str()
            .unwrap()
            .starts_with("#!/bin/bash")
    );
}

fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < end, "condition not met within {limit:?}");
        thread::sleep(Duration::from_millis(200));
    }
}
