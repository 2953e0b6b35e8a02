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

fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < end, "condition not met within {limit:?}");
        thread::sleep(Duration::from_millis(200));
    }
}

mod commands;
mod library;
#[path = "../util/mod.rs"]
mod util;
