//! Where each array task is, and how a run ended: one look at the exit files and at Slurm.
//!
//! Sources of truth, in order: the task's `slurm_exit.json` (written by the batch script after
//! the worker exits) together with the worker's `status.json`; then Slurm's view (`squeue`,
//! `scontrol`, `sacct` once the controller has forgotten the job) for tasks that never wrote
//! an exit file. A controller that does not answer gives [`TaskPhase::Unknown`] and the
//! tracker simply asks again later.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::command::{self, DEFAULT_TIMEOUT};
use super::query::{self, SlurmState, TaskRecord};
use super::{ArrayJob, EXIT_FILE, SlurmError};
use crate::store::{self, RunDir, RunState, RunStatus};

/// Where one array task is.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskPhase {
    /// Pending in Slurm (with its reason: `Resources`, `Priority`, `PartitionDown` ...).
    Waiting { reason: Option<String> },
    /// Started (running, completing, suspended, or a state this version does not know).
    Running,
    /// The worker exited and the task wrote its exit file.
    Exited { code: i32 },
    /// Slurm ended the task and it left no exit file: cancelled, time limit, node failure,
    /// out of memory, or the batch script itself failed.
    Ended {
        state: SlurmState,
        /// `ExitCode=code:signal` from scontrol or sacct.
        exit: Option<(i32, i32)>,
        /// Whether the task had started at all, when Slurm says.
        started: Option<bool>,
        reason: Option<String>,
    },
    /// Slurm has no record of the job (purged) and the task left no exit file.
    Gone,
    /// The controller did not answer; ask again.
    Unknown { message: String },
}

impl TaskPhase {
    /// Nothing will change any more for this task.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            TaskPhase::Exited { .. } | TaskPhase::Ended { .. } | TaskPhase::Gone
        )
    }
}

/// One array task with what is known about it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskView {
    pub job_id: String,
    pub task: usize,
    pub run_id: String,
    pub run_dir: PathBuf,
    pub phase: TaskPhase,
    /// Slurm's state when it was asked (`None` when the exit file made asking unnecessary).
    pub slurm_state: Option<SlurmState>,
}

impl TaskView {
    /// One line for a progress display: `12_3 run 0a1b2c: pending (Resources)`.
    pub fn describe(&self) -> String {
        format!(
            "{}_{} run {}: {}",
            self.job_id,
            self.task,
            self.run_id,
            self.phase_text()
        )
    }

    /// The phase in words: `pending (Resources)`, `running`, ...
    pub fn phase_text(&self) -> String {
        match &self.phase {
            TaskPhase::Waiting { reason: Some(r) } => format!("pending ({r})"),
            TaskPhase::Waiting { reason: None } => "pending".into(),
            TaskPhase::Running => "running".into(),
            TaskPhase::Exited { code } => format!("worker exited with code {code}"),
            TaskPhase::Ended { state, exit, .. } => match exit {
                Some((c, s)) => format!("{state} (exit code {c}:{s}) without an exit file"),
                None => format!("{state} without an exit file"),
            },
            TaskPhase::Gone => "unknown to Slurm and no exit file".into(),
            TaskPhase::Unknown { message } => format!("state unknown, will ask again ({message})"),
        }
    }

    /// The run's outcome once the task is over; `None` while it is not.
    pub fn outcome(&self) -> Option<RunOutcome> {
        let status = read_status(&self.run_dir);
        let worker_said = status
            .as_ref()
            .filter(|s| s.state.is_verdict())
            .map(|s| (s.state, s.message.clone()));
        let (state, message, exit_code) = match &self.phase {
            TaskPhase::Exited { code } => match worker_said {
                Some((state, message)) => (state, message, Some(*code)),
                None => (
                    RunState::Failed,
                    Some(format!(
                        "worker exited with code {code} without recording a final state; \
                         see {}",
                        self.run_dir.join("worker.log").display()
                    )),
                    Some(*code),
                ),
            },
            TaskPhase::Ended {
                state,
                exit,
                started,
                reason,
            } => {
                let (run_state, text) = slurm_end(state, *started, reason.as_deref());
                // A worker that got to write a final state before Slurm killed the task
                // knows best (e.g. it checkpointed and marked itself cancelled).
                match worker_said {
                    Some((s, m)) => (s, m.or(Some(text)), exit.map(|e| e.0)),
                    None => (run_state, Some(text), exit.map(|e| e.0)),
                }
            }
            TaskPhase::Gone => (
                RunState::Failed,
                Some(format!(
                    "Slurm has no record of job {} any more and task {} left no {EXIT_FILE}",
                    self.job_id, self.task
                )),
                None,
            ),
            _ => return None,
        };
        Some(RunOutcome {
            run_id: self.run_id.clone(),
            run_dir: self.run_dir.clone(),
            state,
            message,
            job: format!("{}_{}", self.job_id, self.task),
            exit_code,
            attempts: 1,
        })
    }
}

/// How a run ended under Slurm.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    pub run_id: String,
    pub run_dir: PathBuf,
    /// Done, Diverged, Failed or Cancelled.
    pub state: RunState,
    pub message: Option<String>,
    /// `<job>_<task>` of the last attempt.
    pub job: String,
    /// The worker's exit code (or Slurm's, when the worker left none).
    pub exit_code: Option<i32>,
    /// Array tasks this invocation used for the run (1 + resubmissions).
    pub attempts: usize,
}

/// The run state and a message for a task Slurm ended without an exit file.
fn slurm_end(
    state: &SlurmState,
    started: Option<bool>,
    reason: Option<&str>,
) -> (RunState, String) {
    let never = started == Some(false);
    match state {
        SlurmState::Cancelled if never => (
            RunState::Cancelled,
            "cancelled in Slurm before it started".into(),
        ),
        SlurmState::Cancelled => (RunState::Cancelled, "cancelled in Slurm (scancel)".into()),
        SlurmState::Timeout => (
            RunState::Failed,
            "hit the Slurm time limit (launch.slurm.time)".into(),
        ),
        SlurmState::NodeFail => (RunState::Failed, "the node failed (Slurm NODE_FAIL)".into()),
        SlurmState::OutOfMemory => (
            RunState::Failed,
            "out of memory (Slurm OUT_OF_MEMORY; raise launch.slurm.mem)".into(),
        ),
        SlurmState::Preempted => (RunState::Failed, "preempted by Slurm".into()),
        SlurmState::BootFail => (
            RunState::Failed,
            "the node failed to boot (BOOT_FAIL)".into(),
        ),
        SlurmState::Deadline => (RunState::Failed, "missed its Slurm deadline".into()),
        other => (
            RunState::Failed,
            format!(
                "the task ended {other}{} without recording the worker's exit code; \
                 see the task output under .slurm/",
                reason.map(|r| format!(" ({r})")).unwrap_or_default()
            ),
        ),
    }
}

/// The worker's exit code from `slurm_exit.json`, if this very task wrote it (a file left by
/// an earlier job is ignored).
pub fn read_exit_code(run_dir: &Path, job_id: &str, task: usize) -> Option<i32> {
    let rec = store::read_slurm_exit(&RunDir::at(run_dir))
        .ok()
        .flatten()?;
    (rec.job == job_id && rec.task == task).then_some(rec.exit_code)
}

pub(super) fn read_status(run_dir: &Path) -> Option<RunStatus> {
    store::read_status(&RunDir::at(run_dir)).ok().flatten()
}

impl ArrayJob {
    /// Looks at every task once: exit files first, Slurm for the rest.
    ///
    /// Never fails because the controller is down: those tasks come back
    /// [`TaskPhase::Unknown`].
    pub fn poll(&self) -> Result<Vec<TaskView>, SlurmError> {
        let all: BTreeSet<usize> = self.tasks.iter().map(|t| t.task).collect();
        self.poll_tasks(&all)
    }

    /// Like [`ArrayJob::poll`], for the tasks in `wanted` only.
    pub fn poll_tasks(&self, wanted: &BTreeSet<usize>) -> Result<Vec<TaskView>, SlurmError> {
        let mut views: Vec<TaskView> = self
            .tasks
            .iter()
            .filter(|t| wanted.contains(&t.task))
            .map(|t| TaskView {
                job_id: self.job_id.clone(),
                task: t.task,
                run_id: t.run_id.clone(),
                run_dir: t.run_dir.clone(),
                phase: match read_exit_code(&t.run_dir, &self.job_id, t.task) {
                    Some(code) => TaskPhase::Exited { code },
                    None => TaskPhase::Unknown {
                        message: String::new(),
                    },
                },
                slurm_state: None,
            })
            .collect();
        if views
            .iter()
            .all(|v| matches!(v.phase, TaskPhase::Exited { .. }))
        {
            return Ok(views);
        }
        let (records, gone) = match self.slurm_records() {
            Ok(r) => r,
            Err(SlurmError::Unavailable { command, message }) => {
                for v in views.iter_mut() {
                    if !v.phase.is_terminal() {
                        v.phase = TaskPhase::Unknown {
                            message: format!("{command}: {message}"),
                        };
                    }
                }
                return Ok(views);
            }
            Err(e) => return Err(e),
        };
        let mut need_detail = false;
        for v in views.iter_mut() {
            if v.phase.is_terminal() {
                continue;
            }
            match records.get(&v.task) {
                Some(rec) => {
                    v.slurm_state = Some(rec.state.clone());
                    v.phase = if rec.state.is_final() {
                        need_detail = true;
                        TaskPhase::Ended {
                            state: rec.state.clone(),
                            exit: rec.exit,
                            started: rec.started,
                            reason: rec.reason.clone(),
                        }
                    } else if rec.state.is_waiting() {
                        TaskPhase::Waiting {
                            reason: rec.reason.clone(),
                        }
                    } else {
                        TaskPhase::Running
                    };
                }
                None if gone => v.phase = TaskPhase::Gone,
                None => {
                    v.phase = TaskPhase::Unknown {
                        message: "not listed by squeue yet".into(),
                    }
                }
            }
        }
        if need_detail && !gone {
            self.add_scontrol_detail(&mut views);
        }
        Ok(views)
    }

    /// Slurm's per-task records, and whether the controller has forgotten the job (then the
    /// records come from accounting, when there is any).
    fn slurm_records(&self) -> Result<(BTreeMap<usize, TaskRecord>, bool), SlurmError> {
        let args: Vec<String> = [
            "--states=all",
            "-r",
            "-h",
            "-j",
            &self.job_id,
            "-o",
            "%K|%T|%r",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = command::run("squeue", &args, DEFAULT_TIMEOUT)?;
        let forgotten = if out.ok() {
            let records = query::parse_squeue(&out.stdout);
            if !records.is_empty() {
                return Ok((records, false));
            }
            true
        } else if out.stderr.contains("Invalid job id") {
            true
        } else {
            // Anything else is not an answer about the job: ask again later.
            return Err(SlurmError::Unavailable {
                command: command::display("squeue", &args),
                message: out.stderr.trim().to_string(),
            });
        };
        debug_assert!(forgotten);
        Ok((self.sacct_records(), true))
    }

    /// Accounting's view, for jobs the controller no longer holds; empty without slurmdbd.
    fn sacct_records(&self) -> BTreeMap<usize, TaskRecord> {
        let args: Vec<String> = [
            "-X",
            "-n",
            "-P",
            "-j",
            &self.job_id,
            "--format=JobID,State,ExitCode",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match command::run("sacct", &args, DEFAULT_TIMEOUT) {
            Ok(out) if out.ok() => query::parse_sacct(&out.stdout, &self.job_id),
            _ => BTreeMap::new(),
        }
    }

    /// Exit codes and "did it start" from `scontrol -o show job`, for ended tasks.
    fn add_scontrol_detail(&self, views: &mut [TaskView]) {
        let args = vec![
            "-o".to_string(),
            "show".to_string(),
            "job".to_string(),
            self.job_id.clone(),
        ];
        let Ok(out) = command::run("scontrol", &args, DEFAULT_TIMEOUT) else {
            return;
        };
        if !out.ok() {
            return;
        }
        let detail = query::parse_scontrol(&out.stdout);
        for v in views.iter_mut() {
            if let (
                TaskPhase::Ended {
                    exit,
                    started,
                    reason,
                    ..
                },
                Some(rec),
            ) = (&mut v.phase, detail.get(&v.task))
            {
                *exit = exit.or(rec.exit);
                *started = started.or(rec.started);
                if reason.is_none() {
                    reason.clone_from(&rec.reason);
                }
            }
        }
    }
}

/// Writes the outcome into `status.json` when the worker could not: it never started, or
/// Slurm killed it before it recorded a final state.
pub(super) fn record_outcome_status(outcome: &RunOutcome) {
    let run = RunDir::at(&outcome.run_dir);
    let previous = read_status(&outcome.run_dir);
    if let Some(p) = &previous
        && p.state == outcome.state
    {
        return;
    }
    let status = RunStatus {
        state: outcome.state,
        attempts: previous.as_ref().map_or(0, |p| p.attempts),
        epoch: previous.as_ref().map_or(0, |p| p.epoch),
        message: outcome.message.clone(),
        pid: None,
        pruned: None,
    };
    // Best effort: the outcome is also returned to the caller, who reports it.
    let _ = store::write_status(&run, &status);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn view(dir: &Path, phase: TaskPhase) -> TaskView {
        TaskView {
            job_id: "7".into(),
            task: 1,
            run_id: "r1".into(),
            run_dir: dir.to_path_buf(),
            phase,
            slurm_state: None,
        }
    }

    fn write_status(dir: &Path, state: RunState, message: Option<&str>) {
        let s = RunStatus {
            state,
            attempts: 1,
            epoch: 2,
            message: message.map(str::to_string),
            pid: None,
            pruned: None,
        };
        fs::write(dir.join("status.json"), serde_json::to_string(&s).unwrap()).unwrap();
    }

    #[test]
    fn exit_file_must_belong_to_this_task() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(EXIT_FILE),
            r#"{"job":"7","task":1,"exit_code":3,"host":"vm"}"#,
        )
        .unwrap();
        assert_eq!(read_exit_code(dir.path(), "7", 1), Some(3));
        // Left over from an earlier submission: not this task's.
        assert_eq!(read_exit_code(dir.path(), "8", 1), None);
        assert_eq!(read_exit_code(dir.path(), "7", 0), None);
    }

    #[test]
    fn worker_status_decides_when_the_worker_exited() {
        let dir = tempfile::tempdir().unwrap();
        write_status(
            dir.path(),
            RunState::Diverged,
            Some("loss is NaN at epoch 2"),
        );
        let o = view(dir.path(), TaskPhase::Exited { code: 1 })
            .outcome()
            .unwrap();
        assert_eq!(o.state, RunState::Diverged);
        assert_eq!(o.message.as_deref(), Some("loss is NaN at epoch 2"));
        assert_eq!(o.exit_code, Some(1));
        assert_eq!(o.job, "7_1");
    }

    #[test]
    fn exit_without_final_status_is_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        write_status(dir.path(), RunState::Running, None);
        let o = view(dir.path(), TaskPhase::Exited { code: 0 })
            .outcome()
            .unwrap();
        assert_eq!(o.state, RunState::Failed);
        assert!(
            o.message
                .unwrap()
                .contains("without recording a final state")
        );
    }

    #[test]
    fn slurm_endings_map_to_run_states() {
        let dir = tempfile::tempdir().unwrap();
        let ended = |state: SlurmState, started: Option<bool>| {
            view(
                dir.path(),
                TaskPhase::Ended {
                    state,
                    exit: Some((0, 15)),
                    started,
                    reason: None,
                },
            )
            .outcome()
            .unwrap()
        };
        let o = ended(SlurmState::Cancelled, Some(false));
        assert_eq!(o.state, RunState::Cancelled);
        assert!(o.message.unwrap().contains("before it started"));
        assert_eq!(
            ended(SlurmState::Timeout, Some(true)).state,
            RunState::Failed
        );
        let o = ended(SlurmState::NodeFail, Some(true));
        assert_eq!(o.state, RunState::Failed);
        assert!(o.message.unwrap().contains("NODE_FAIL"));
        let o = ended(SlurmState::OutOfMemory, Some(true));
        assert!(o.message.unwrap().contains("launch.slurm.mem"));
        // The worker caught SIGTERM and recorded itself cancelled: that stands.
        write_status(
            dir.path(),
            RunState::Cancelled,
            Some("interrupted at epoch 2"),
        );
        let o = ended(SlurmState::Timeout, Some(true));
        assert_eq!(o.state, RunState::Cancelled);
    }

    #[test]
    fn gone_and_active_phases() {
        let dir = tempfile::tempdir().unwrap();
        let o = view(dir.path(), TaskPhase::Gone).outcome().unwrap();
        assert_eq!(o.state, RunState::Failed);
        assert!(view(dir.path(), TaskPhase::Running).outcome().is_none());
        assert!(
            view(
                dir.path(),
                TaskPhase::Unknown {
                    message: "x".into()
                }
            )
            .outcome()
            .is_none()
        );
        assert!(
            !TaskPhase::Unknown {
                message: "x".into()
            }
            .is_terminal()
        );
    }

    #[test]
    fn slurm_written_status_keeps_attempts_and_epoch() {
        let dir = tempfile::tempdir().unwrap();
        write_status(dir.path(), RunState::Running, None);
        let o = view(
            dir.path(),
            TaskPhase::Ended {
                state: SlurmState::NodeFail,
                exit: None,
                started: Some(true),
                reason: Some("NodeDown".into()),
            },
        )
        .outcome()
        .unwrap();
        record_outcome_status(&o);
        let s = read_status(dir.path()).unwrap();
        assert_eq!(s.state, RunState::Failed);
        assert_eq!((s.attempts, s.epoch), (1, 2));
        assert!(s.message.unwrap().contains("node failed"));
    }

    #[test]
    fn describe_lines() {
        let dir = Path::new("/r");
        let v = view(
            dir,
            TaskPhase::Waiting {
                reason: Some("Resources".into()),
            },
        );
        assert_eq!(v.describe(), "7_1 run r1: pending (Resources)");
    }
}
