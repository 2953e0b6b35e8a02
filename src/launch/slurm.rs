//! The Slurm backend: the runs of a grid as one `sbatch --array` job, one task per run
//! directory, each task running `orchestrate worker` for its run.
//!
//! The run directory stays the only interface with the worker: a task finds its run directory
//! in a run-list file written next to the batch script, the worker writes status, metrics and
//! checkpoints there as it does locally, and the task's wrapper adds `slurm_exit.json` with the
//! worker's exit code ([`script`]). Tracking ([`track`]) reads that file first and asks Slurm
//! (`squeue`, `scontrol`, `sacct`) only about tasks that have not written it: never started,
//! cancelled, timed out, node failure. A controller that does not answer is "unknown, retry",
//! never "job gone". What reaches the script or a Slurm tool's arguments is checked and quoted
//! first ([`script::check_inputs`], [`quote`]).
//!
//! Layout under `runs/<experiment>/.slurm/`: `submit-N.sh` (the script), `submit-N.runs` (the
//! run list), `<job>_<task>.out` (each task's wrapper output; the worker's own output goes to
//! the run's `worker.log`) and `job.json` (every array job submitted for this experiment, so
//! a later `orchestrate run` or `status` picks the tracking up again after `--detach`).

pub mod command;
pub mod grid;
pub mod query;
pub mod quote;
pub mod script;
pub mod track;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::spec::SlurmSpec;
use crate::store::RunDir;
pub use grid::{
    SlurmExecutor, SlurmGridResult, SlurmOptions, SlurmProgress, run_grid_on_slurm, slurm_status,
};
pub use query::SlurmState;
pub use script::{EXIT_FILE, ScriptError, WorkerCommand};
pub use track::{RunOutcome, TaskPhase, TaskView};

/// Why the Slurm backend could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// A Slurm client tool is missing.
    #[error(
        "`{program}` was not found on PATH: the Slurm backend needs Slurm's client tools \
         (sbatch, squeue, scontrol, scancel); install them or use --backend local"
    )]
    NotInstalled { program: String },
    /// `launch.slurm.partition` names a partition the cluster does not have.
    #[error(
        "launch.slurm.partition = {partition:?}: no such partition on this cluster \
         (available: {available}); nothing was submitted"
    )]
    NoSuchPartition {
        partition: String,
        available: String,
    },
    /// `sbatch` refused the job; Slurm's message says why.
    #[error("sbatch refused the job ({command}): {message}; nothing was submitted")]
    Rejected { command: String, message: String },
    /// The controller did not answer (down, restarting, overloaded); the state is unknown.
    #[error("the Slurm controller did not answer `{command}`: {message}")]
    Unavailable { command: String, message: String },
    /// A Slurm tool failed for another reason.
    #[error("`{command}` failed (exit {code:?}): {message}")]
    Command {
        command: String,
        code: Option<i32>,
        message: String,
    },
    /// An I/O error on a named path.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `job.json` or an exit file exists but does not parse.
    #[error("{path}: corrupt record: {message}")]
    Corrupt { path: PathBuf, message: String },
    /// Asked to submit an empty array.
    #[error("no runs to submit")]
    NoRuns,
    /// A path or value the batch script cannot carry; nothing was written or submitted.
    #[error("{0}; nothing was written or submitted")]
    Script(#[from] ScriptError),
    /// A run-directory or schedule record could not be read or written.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl SlurmError {
    /// Whether the user's command line or environment is at fault (a `--runs-dir` or
    /// working directory the batch script cannot name), not the cluster.
    pub fn is_usage(&self) -> bool {
        matches!(self, SlurmError::Script(ScriptError::Path { .. }))
    }

    fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        SlurmError::Io {
            path: path.into(),
            source,
        }
    }
}

/// One run the launcher should start: its id and its (existing) run directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunToLaunch {
    pub run_id: String,
    pub run_dir: PathBuf,
}

/// One task of a submitted array job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEntry {
    /// `SLURM_ARRAY_TASK_ID`.
    pub task: usize,
    pub run_id: String,
    /// Absolute run directory.
    pub run_dir: PathBuf,
}

/// A submitted array job, as `job.json` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArrayJob {
    /// Slurm's job id of the array (`SLURM_ARRAY_JOB_ID`).
    pub job_id: String,
    /// Seconds since the Unix epoch.
    pub submitted_at: u64,
    pub script: PathBuf,
    pub run_list: PathBuf,
    pub tasks: Vec<TaskEntry>,
}

/// Contents of `runs/<experiment>/.slurm/job.json`: every array job submitted, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobsRecord {
    pub jobs: Vec<ArrayJob>,
}

/// What `orchestrate plan --backend slurm` shows: the sbatch call, the run list, the script.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedSubmission {
    /// The `sbatch` command line.
    pub command: String,
    /// Run directories, task 0 first.
    pub run_list: Vec<PathBuf>,
    pub script: String,
}

impl std::fmt::Display for PlannedSubmission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "$ {}", self.command)?;
        writeln!(f, "run list (task: run directory):")?;
        for (i, dir) in self.run_list.iter().enumerate() {
            writeln!(f, "  {i}: {}", dir.display())?;
        }
        writeln!(f, "batch script:")?;
        f.write_str(&self.script)
    }
}

/// Submits runs of one experiment as array jobs.
#[derive(Debug, Clone)]
pub struct SlurmLauncher {
    experiment: String,
    exp_dir: PathBuf,
    slurm: SlurmSpec,
    worker: WorkerCommand,
    workdir: PathBuf,
    timeout: Duration,
}

impl SlurmLauncher {
    /// A launcher for experiment `experiment` whose directory is `exp_dir` (`runs/<name>`),
    /// starting `<this executable> worker` in the current directory.
    pub fn new(experiment: &str, exp_dir: &Path, slurm: &SlurmSpec) -> Result<Self, SlurmError> {
        let worker =
            WorkerCommand::current_exe().map_err(|e| SlurmError::io("current executable", e))?;
        let workdir = std::env::current_dir().map_err(|e| SlurmError::io(".", e))?;
        Ok(SlurmLauncher {
            experiment: experiment.to_string(),
            exp_dir: absolute(exp_dir, &workdir),
            slurm: slurm.clone(),
            worker,
            workdir,
            timeout: command::DEFAULT_TIMEOUT,
        })
    }

    /// Starts `worker` in each task instead of `<this executable> worker`.
    pub fn with_worker(mut self, worker: WorkerCommand) -> Self {
        self.worker = worker;
        self
    }

    /// Runs the tasks in `dir` (relative data paths in the spec resolve against it).
    pub fn with_workdir(mut self, dir: &Path) -> Self {
        self.workdir = dir.to_path_buf();
        self
    }

    /// The experiment's name (the array jobs' name).
    pub fn experiment(&self) -> &str {
        &self.experiment
    }

    /// The `launch.slurm` settings it submits with.
    pub fn slurm(&self) -> &SlurmSpec {
        &self.slurm
    }

    /// The experiment directory (absolute).
    pub fn exp_dir(&self) -> &Path {
        &self.exp_dir
    }

    /// `runs/<experiment>/.slurm`.
    pub fn slurm_dir(&self) -> PathBuf {
        slurm_dir(&self.exp_dir)
    }

    /// The script, run list and command `submit` would use for `runs`, without touching the
    /// cluster or the disk.
    pub fn plan(&self, runs: &[RunToLaunch]) -> Result<PlannedSubmission, SlurmError> {
        let n = next_submission_number(&self.slurm_dir());
        let (script_path, run_list) = self.submission_paths(n);
        let dirs: Vec<PathBuf> = runs
            .iter()
            .map(|r| absolute(&r.run_dir, &self.workdir))
            .collect();
        Ok(PlannedSubmission {
            script: self.render_script(runs.len(), &run_list)?,
            command: command::display("sbatch", &script::sbatch_args(&self.slurm, &script_path)),
            run_list: dirs,
        })
    }

    /// The batch script for `tasks` runs listed in `run_list`.
    pub fn render_script(&self, tasks: usize, run_list: &Path) -> Result<String, SlurmError> {
        let slurm_dir = self.slurm_dir();
        Ok(script::render(
            &self.script_inputs(tasks, run_list, &slurm_dir),
        )?)
    }

    fn script_inputs<'a>(
        &'a self,
        tasks: usize,
        run_list: &'a Path,
        slurm_dir: &'a Path,
    ) -> script::ScriptInputs<'a> {
        script::ScriptInputs {
            job_name: &self.experiment,
            tasks,
            slurm: &self.slurm,
            slurm_dir,
            run_list,
            workdir: &self.workdir,
            worker: &self.worker,
        }
    }

    /// Checks, before anything is written or submitted, that the batch script can name every
    /// path and value, that Slurm's tools are installed and that the partition exists.
    pub fn preflight(&self) -> Result<(), SlurmError> {
        let (_, run_list) = self.submission_paths(1);
        let slurm_dir = self.slurm_dir();
        script::check_inputs(&self.script_inputs(1, &run_list, &slurm_dir))?;
        for tool in ["sbatch", "squeue", "scontrol", "scancel"] {
            if !command::on_path(tool) {
                return Err(SlurmError::NotInstalled {
                    program: tool.into(),
                });
            }
        }
        if self.slurm.partition.is_empty() {
            return Ok(());
        }
        let args = vec![
            "show".to_string(),
            "partition".to_string(),
            self.slurm.partition.clone(),
        ];
        let out = command::run("scontrol", &args, self.timeout)?;
        if out.ok() {
            return Ok(());
        }
        if out.stderr.contains("not found") || out.stdout.contains("not found") {
            return Err(SlurmError::NoSuchPartition {
                partition: self.slurm.partition.clone(),
                available: self.partitions().unwrap_or_else(|_| "unknown".into()),
            });
        }
        Err(command::classify_failure("scontrol", &args, &out))
    }

    /// The cluster's partitions, comma-separated, the default one marked `*`.
    fn partitions(&self) -> Result<String, SlurmError> {
        let args = vec!["-h".to_string(), "-o".to_string(), "%P".to_string()];
        let out = command::run_ok("sinfo", &args, self.timeout)?;
        let mut names: Vec<&str> = out.stdout.lines().map(str::trim).collect();
        names.retain(|n| !n.is_empty());
        names.dedup();
        Ok(names.join(", "))
    }

    /// Submits `runs` as one array job and records it in `job.json`.
    ///
    /// Stale exit files of earlier attempts are removed first. When sbatch refuses, nothing is
    /// recorded; when the job is accepted but cannot be recorded, it is cancelled again, so
    /// no job runs that the orchestrator does not know about.
    pub fn submit(&self, runs: &[RunToLaunch]) -> Result<ArrayJob, SlurmError> {
        if runs.is_empty() {
            return Err(SlurmError::NoRuns);
        }
        self.preflight()?;
        let dir = self.slurm_dir();
        fs::create_dir_all(&dir).map_err(|e| SlurmError::io(&dir, e))?;
        let n = next_submission_number(&dir);
        let (script_path, run_list) = self.submission_paths(n);
        let tasks: Vec<TaskEntry> = runs
            .iter()
            .enumerate()
            .map(|(task, r)| TaskEntry {
                task,
                run_id: r.run_id.clone(),
                run_dir: absolute(&r.run_dir, &self.workdir),
            })
            .collect();
        let mut list = String::new();
        for t in &tasks {
            let dir = t.run_dir.display().to_string();
            if dir.contains(['\n', '\t']) || t.run_id.contains(['\n', '\t']) {
                return Err(SlurmError::io(
                    &t.run_dir,
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "tab or newline in a run id or directory",
                    ),
                ));
            }
            list.push_str(&format!("{}\t{dir}\n", t.run_id));
            let exit = RunDir::at(&t.run_dir).slurm_exit();
            match fs::remove_file(&exit) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(SlurmError::io(exit, e)),
            }
        }
        write_atomic(&run_list, list.as_bytes())?;
        write_atomic(
            &script_path,
            self.render_script(tasks.len(), &run_list)?.as_bytes(),
        )?;

        // No `sbatch --test-only` first: it answers "Requested node configuration is not
        // available" whenever no node is up right now (a controller that just restarted),
        // where the real submission would simply wait. A refused array job may leave a record
        // in state FAILED behind (22.05 does for an impossible --mem); no task of it runs.
        let args = script::sbatch_args(&self.slurm, &script_path);
        let out = command::run("sbatch", &args, self.timeout)?;
        if !out.ok() {
            return Err(refusal("sbatch", &args, &out));
        }
        let Some(job_id) = query::parse_sbatch_job_id(&out.stdout) else {
            return Err(SlurmError::Command {
                command: command::display("sbatch", &args),
                code: out.code,
                message: format!("unexpected output {:?}", out.stdout.trim()),
            });
        };
        let job = ArrayJob {
            job_id,
            submitted_at: now_secs(),
            script: script_path,
            run_list,
            tasks,
        };
        if let Err(e) = record_job(&self.exp_dir, &job) {
            let _ = job.cancel();
            return Err(e);
        }
        Ok(job)
    }

    fn submission_paths(&self, n: u32) -> (PathBuf, PathBuf) {
        let dir = self.slurm_dir();
        (
            dir.join(format!("submit-{n}.sh")),
            dir.join(format!("submit-{n}.runs")),
        )
    }
}

impl ArrayJob {
    /// Cancels every task of the array (`scancel <job>`). Running workers get SIGTERM and
    /// checkpoint; pending tasks never start.
    pub fn cancel(&self) -> Result<(), SlurmError> {
        command::run_ok(
            "scancel",
            std::slice::from_ref(&self.job_id),
            command::DEFAULT_TIMEOUT,
        )
        .map(|_| ())
    }

    /// Cancels one task of the array (`scancel <job>_<task>`); its worker gets SIGTERM and
    /// checkpoints.
    pub fn cancel_task(&self, task: usize) -> Result<(), SlurmError> {
        let name = self.task_name(task);
        command::run_ok(
            "scancel",
            std::slice::from_ref(&name),
            command::DEFAULT_TIMEOUT,
        )
        .map(|_| ())
    }

    /// Kills every task of the array at once (`scancel --signal=KILL --full <job>`): for a
    /// second Ctrl-C, when waiting for the workers' checkpoints is not wanted.
    pub fn kill(&self) -> Result<(), SlurmError> {
        let args = vec![
            "--signal=KILL".to_string(),
            "--full".to_string(),
            self.job_id.clone(),
        ];
        command::run_ok("scancel", &args, command::DEFAULT_TIMEOUT).map(|_| ())
    }

    /// `<job>_<task>`, as Slurm names one task.
    pub fn task_name(&self, task: usize) -> String {
        format!("{}_{task}", self.job_id)
    }
}

/// The error for a failed sbatch: the controller did not answer, or it refused the job.
fn refusal(program: &str, args: &[String], out: &command::Output) -> SlurmError {
    match command::classify_failure(program, args, out) {
        SlurmError::Command {
            command, message, ..
        } => SlurmError::Rejected { command, message },
        other => other,
    }
}

/// `runs/<experiment>/.slurm`.
pub fn slurm_dir(exp_dir: &Path) -> PathBuf {
    exp_dir.join(".slurm")
}

/// Path of `job.json`.
pub fn jobs_file(exp_dir: &Path) -> PathBuf {
    slurm_dir(exp_dir).join("job.json")
}

/// Reads `job.json`; empty when the experiment was never submitted to Slurm.
pub fn load_jobs(exp_dir: &Path) -> Result<JobsRecord, SlurmError> {
    let path = jobs_file(exp_dir);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(JobsRecord::default()),
        Err(e) => return Err(SlurmError::io(path, e)),
    };
    let record: JobsRecord = serde_json::from_str(&text).map_err(|e| SlurmError::Corrupt {
        path: path.clone(),
        message: e.to_string(),
    })?;
    if let Some(job) = record.jobs.iter().find(|j| !query::is_job_id(&j.job_id)) {
        return Err(SlurmError::Corrupt {
            path,
            message: format!(
                "job id {:?} is not a Slurm job id (digits only)",
                job.job_id
            ),
        });
    }
    Ok(record)
}

/// Appends `job` to `job.json`.
fn record_job(exp_dir: &Path, job: &ArrayJob) -> Result<(), SlurmError> {
    let mut record = load_jobs(exp_dir)?;
    record.jobs.push(job.clone());
    let path = jobs_file(exp_dir);
    let mut text = serde_json::to_string_pretty(&record).map_err(|e| SlurmError::Corrupt {
        path: path.clone(),
        message: e.to_string(),
    })?;
    text.push('\n');
    write_atomic(&path, text.as_bytes())
}

/// The number of the next `submit-N.sh` in `dir` (1 for the first).
fn next_submission_number(dir: &Path) -> u32 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 1;
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("submit-")?
                .strip_suffix(".sh")?
                .parse::<u32>()
                .ok()
        })
        .max()
        .map_or(1, |n| n + 1)
}

fn absolute(p: &Path, base: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Writes through a temporary file and a rename, so readers never see half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SlurmError> {
    crate::store::write_atomic(path, bytes).map_err(|e| SlurmError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submission_numbers_follow_the_scripts_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(next_submission_number(dir.path()), 1);
        fs::write(dir.path().join("submit-1.sh"), "").unwrap();
        fs::write(dir.path().join("submit-7.sh"), "").unwrap();
        fs::write(dir.path().join("submit-9.runs"), "").unwrap();
        assert_eq!(next_submission_number(dir.path()), 8);
    }

    #[test]
    fn jobs_record_round_trips_and_missing_means_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_jobs(dir.path()).unwrap(), JobsRecord::default());
        fs::create_dir_all(slurm_dir(dir.path())).unwrap();
        let job = ArrayJob {
            job_id: "42".into(),
            submitted_at: 1,
            script: "/x/submit-1.sh".into(),
            run_list: "/x/submit-1.runs".into(),
            tasks: vec![TaskEntry {
                task: 0,
                run_id: "abc".into(),
                run_dir: "/x/abc".into(),
            }],
        };
        record_job(dir.path(), &job).unwrap();
        record_job(dir.path(), &job).unwrap();
        assert_eq!(
            load_jobs(dir.path()).unwrap().jobs,
            vec![job.clone(), job.clone()]
        );
        fs::write(jobs_file(dir.path()), "{not json").unwrap();
        let err = load_jobs(dir.path()).unwrap_err();
        assert!(err.to_string().contains("job.json"), "{err}");

        // A job id becomes an argument of scancel and squeue: `--user=...` must not.
        let forged = JobsRecord {
            jobs: vec![ArrayJob {
                job_id: "--user=ana".into(),
                ..job
            }],
        };
        fs::write(
            jobs_file(dir.path()),
            serde_json::to_string(&forged).unwrap(),
        )
        .unwrap();
        let err = load_jobs(dir.path()).unwrap_err();
        assert!(err.to_string().contains(r#"job id "--user=ana""#), "{err}");
    }

    #[test]
    fn plan_shows_command_run_list_and_script() {
        let slurm = SlurmSpec {
            partition: "debug".into(),
            ..SlurmSpec::default()
        };
        let launcher = SlurmLauncher::new("exp", Path::new("/w/runs/exp"), &slurm)
            .unwrap()
            .with_workdir(Path::new("/w"))
            .with_worker(WorkerCommand {
                program: "/bin/orchestrate".into(),
                args: vec!["worker".into()],
                env: vec![],
            });
        let runs = vec![
            RunToLaunch {
                run_id: "a1".into(),
                run_dir: "runs/exp/a1".into(),
            },
            RunToLaunch {
                run_id: "b2".into(),
                run_dir: "runs/exp/b2".into(),
            },
        ];
        let plan = launcher.plan(&runs).unwrap();
        assert_eq!(
            plan.command,
            "sbatch --parsable /w/runs/exp/.slurm/submit-1.sh"
        );
        assert_eq!(
            plan.run_list,
            vec![
                PathBuf::from("/w/runs/exp/a1"),
                PathBuf::from("/w/runs/exp/b2")
            ]
        );
        assert!(plan.script.contains("#SBATCH --array=0-1\n"));
        assert!(plan.script.contains("#SBATCH --partition=debug\n"));
        assert!(plan.to_string().starts_with("$ sbatch --parsable"));
    }
}
