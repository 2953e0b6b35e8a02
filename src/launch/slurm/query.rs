//! Slurm's view of an array job: parsing `squeue`, `scontrol -o show job` and `sacct` output
//! into one record per array task, and the job states those tools print.
//!
//! Formats, as printed by Slurm 22.05 (fixtures in `tests/fixtures/slurm/`):
//! - `squeue --states=all -r -h -j J -o '%K|%T|%r'`: `task|STATE|reason`, one line per task
//!   (`-r` expands pending ranges).
//! - `scontrol -o show job J`: one `key=value` line per started task; tasks not started yet
//!   share one line whose `ArrayTaskId` is a range such as `2-5%3`. `ExitCode=code:signal`.
//! - `sacct -X -n -P -j J --format=JobID,State,ExitCode`: `J_task|STATE|code:signal`; pending
//!   ranges print as `J_[2-5%3]`; states may carry a suffix (`CANCELLED by 0`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A job state as Slurm names it (`squeue %T`, `scontrol JobState`, `sacct State`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SlurmState {
    Pending,
    Configuring,
    Running,
    Suspended,
    Completing,
    Completed,
    Failed,
    Cancelled,
    Timeout,
    NodeFail,
    OutOfMemory,
    Preempted,
    BootFail,
    Deadline,
    Requeued,
    /// Any state this version of orchestrate does not know; treated as still active.
    #[serde(untagged)]
    Other(String),
}

impl SlurmState {
    /// Parses a state name; tolerates `sacct`'s `CANCELLED by 0` and trailing `+`.
    pub fn parse(s: &str) -> SlurmState {
        let word = s
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_end_matches('+');
        match word {
            "PENDING" | "PD" => SlurmState::Pending,
            "CONFIGURING" | "CF" => SlurmState::Configuring,
            "RUNNING" | "R" => SlurmState::Running,
            "SUSPENDED" | "S" => SlurmState::Suspended,
            "COMPLETING" | "CG" => SlurmState::Completing,
            "COMPLETED" | "CD" => SlurmState::Completed,
            "FAILED" | "F" => SlurmState::Failed,
            "CANCELLED" | "CA" => SlurmState::Cancelled,
            "TIMEOUT" | "TO" => SlurmState::Timeout,
            "NODE_FAIL" | "NF" => SlurmState::NodeFail,
            "OUT_OF_MEMORY" | "OOM" => SlurmState::OutOfMemory,
            "PREEMPTED" | "PR" => SlurmState::Preempted,
            "BOOT_FAIL" | "BF" => SlurmState::BootFail,
            "DEADLINE" | "DL" => SlurmState::Deadline,
            "REQUEUED" | "RQ" => SlurmState::Requeued,
            other => SlurmState::Other(other.to_string()),
        }
    }

    /// The name Slurm prints.
    pub fn name(&self) -> &str {
        match self {
            SlurmState::Pending => "PENDING",
            SlurmState::Configuring => "CONFIGURING",
            SlurmState::Running => "RUNNING",
            SlurmState::Suspended => "SUSPENDED",
            SlurmState::Completing => "COMPLETING",
            SlurmState::Completed => "COMPLETED",
            SlurmState::Failed => "FAILED",
            SlurmState::Cancelled => "CANCELLED",
            SlurmState::Timeout => "TIMEOUT",
            SlurmState::NodeFail => "NODE_FAIL",
            SlurmState::OutOfMemory => "OUT_OF_MEMORY",
            SlurmState::Preempted => "PREEMPTED",
            SlurmState::BootFail => "BOOT_FAIL",
            SlurmState::Deadline => "DEADLINE",
            SlurmState::Requeued => "REQUEUED",
            SlurmState::Other(s) => s,
        }
    }

    /// The task will not run (again) under this job: Slurm is done with it.
    ///
    /// `COMPLETING` is not final: the batch script has exited but the node is still cleaning
    /// up, and our exit file may not be flushed yet. Unknown states count as active, so a
    /// newer Slurm never makes us give up on a task early.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            SlurmState::Completed
                | SlurmState::Failed
                | SlurmState::Cancelled
                | SlurmState::Timeout
                | SlurmState::NodeFail
                | SlurmState::OutOfMemory
                | SlurmState::Preempted
                | SlurmState::BootFail
                | SlurmState::Deadline
        )
    }

    /// Waiting to start (or to start again).
    pub fn is_waiting(&self) -> bool {
        matches!(
            self,
            SlurmState::Pending | SlurmState::Configuring | SlurmState::Requeued
        )
    }
}

impl std::fmt::Display for SlurmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What Slurm says about one array task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    pub state: SlurmState,
    /// Pending reason or why it ended (`Resources`, `PartitionDown`, `NonZeroExitCode`).
    pub reason: Option<String>,
    /// `ExitCode=code:signal` when known (scontrol, sacct).
    pub exit: Option<(i32, i32)>,
    /// When the task started, if it did (`StartTime` of a started task in scontrol).
    pub started: Option<bool>,
}

/// Parses `squeue --states=all -r -h -o '%K|%T|%r'`. Lines that are not ours (`N/A` task
/// id of a non-array job) are skipped.
pub fn parse_squeue(text: &str) -> BTreeMap<usize, TaskRecord> {
    let mut tasks = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.trim().splitn(3, '|');
        let (Some(task), Some(state)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(task) = task.trim().parse::<usize>() else {
            continue;
        };
        let reason = parts
            .next()
            .map(str::trim)
            .filter(|r| !r.is_empty() && *r != "None");
        tasks.insert(
            task,
            TaskRecord {
                state: SlurmState::parse(state.trim()),
                reason: reason.map(str::to_string),
                exit: None,
                started: None,
            },
        );
    }
    tasks
}

/// Parses `scontrol -o show job J`; a line for a range of unstarted tasks gives one record
/// per task of the range.
pub fn parse_scontrol(text: &str) -> BTreeMap<usize, TaskRecord> {
    let mut tasks = BTreeMap::new();
    for line in text.lines() {
        let fields = scontrol_fields(line);
        let (Some(ids), Some(state)) = (fields.get("ArrayTaskId"), fields.get("JobState")) else {
            continue;
        };
        let exit = fields.get("ExitCode").and_then(|e| parse_exit(e));
        let reason = fields
            .get("Reason")
            .filter(|r| !r.is_empty() && **r != "None")
            .map(|r| r.to_string());
        let started = fields.get("StartTime").map(|t| {
            // Tasks cancelled while pending get StartTime=EndTime but no node.
            *t != "Unknown" && fields.get("NodeList").is_some_and(|n| !n.is_empty())
        });
        for task in expand_range(ids) {
            tasks.insert(
                task,
                TaskRecord {
                    state: SlurmState::parse(state),
                    reason: reason.clone(),
                    exit,
                    started,
                },
            );
        }
    }
    tasks
}

/// Parses `sacct -X -n -P -j J --format=JobID,State,ExitCode` for array job `job`.
pub fn parse_sacct(text: &str, job: &str) -> BTreeMap<usize, TaskRecord> {
    let mut tasks = BTreeMap::new();
    let prefix = format!("{job}_");
    for line in text.lines() {
        let parts: Vec<&str> = line.trim().split('|').collect();
        if parts.len() < 3 {
            continue;
        }
        let Some(ids) = parts[0].strip_prefix(&prefix) else {
            continue;
        };
        let ids = ids.trim_start_matches('[').trim_end_matches(']');
        for task in expand_range(ids) {
            tasks.insert(
                task,
                TaskRecord {
                    state: SlurmState::parse(parts[1]),
                    reason: None,
                    exit: parse_exit(parts[2]),
                    started: None,
                },
            );
        }
    }
    tasks
}

/// `key=value key=value ...` of one `scontrol -o` line. Values never contain spaces in the
/// fields we read; later fields such as `Command=` may, and are simply cut short.
fn scontrol_fields(line: &str) -> BTreeMap<&str, &str> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .collect()
}

/// `3:0` -> (3, 0).
fn parse_exit(s: &str) -> Option<(i32, i32)> {
    let (code, signal) = s.trim().split_once(':')?;
    Some((code.parse().ok()?, signal.parse().ok()?))
}

/// Expands `4`, `2-5`, `2-5%3`, `1,3,7-9` (throttle suffix dropped) into task ids.
pub fn expand_range(s: &str) -> Vec<usize> {
    let s = s.split('%').next().unwrap_or("");
    let mut ids = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        // `2-9:2` (step) is legal in Slurm's syntax; honour it too.
        let (range, step) = match part.split_once(':') {
            Some((r, st)) => (r, st.parse::<usize>().unwrap_or(1).max(1)),
            None => (part, 1),
        };
        match range.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    ids.extend((a..=b).step_by(step));
                }
            }
            None => {
                if let Ok(a) = range.parse::<usize>() {
                    ids.push(a);
                }
            }
        }
    }
    ids
}

/// `sbatch --parsable` prints `jobid` or `jobid;cluster`.
pub fn parse_sbatch_job_id(stdout: &str) -> Option<String> {
    let line = stdout.lines().map(str::trim).find(|l| !l.is_empty())?;
    let id = line.split(';').next()?.trim();
    is_job_id(id).then(|| id.to_string())
}

/// Whether `id` is a Slurm job id (digits only), so it can go into squeue, sacct, scontrol
/// and scancel argument lists without being read as an option.
pub fn is_job_id(id: &str) -> bool {
    !id.is_empty() && id.chars().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/slurm/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn squeue_mixed_array() {
        let t = parse_squeue(&fixture("squeue_mixed.txt"));
        assert_eq!(t.len(), 6);
        assert_eq!(t[&0].state, SlurmState::Completed);
        assert_eq!(t[&0].reason, None);
        assert_eq!(t[&1].state, SlurmState::Failed);
        assert_eq!(t[&1].reason.as_deref(), Some("NonZeroExitCode"));
        for i in 2..6 {
            assert_eq!(t[&i].state, SlurmState::Pending);
            assert_eq!(t[&i].reason.as_deref(), Some("Resources"));
        }
    }

    #[test]
    fn scontrol_expands_the_pending_range_and_reads_exit_codes() {
        let t = parse_scontrol(&fixture("scontrol_mixed.txt"));
        assert_eq!(
            t.keys().copied().collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4, 5]
        );
        assert_eq!(t[&0].exit, Some((0, 0)));
        assert_eq!(t[&1].state, SlurmState::Failed);
        assert_eq!(t[&1].exit, Some((3, 0)));
        assert_eq!(t[&1].started, Some(true));
        assert_eq!(t[&4].state, SlurmState::Pending);
        assert_eq!(t[&4].started, Some(false));
    }

    #[test]
    fn running_and_pending_tasks() {
        let q = parse_squeue(&fixture("squeue_running.txt"));
        assert_eq!(q[&0].state, SlurmState::Running);
        assert_eq!(q[&1].state, SlurmState::Running);
        assert!(q[&2].state.is_waiting());
        assert!(!q[&0].state.is_final() && !q[&0].state.is_waiting());
        let c = parse_scontrol(&fixture("scontrol_running.txt"));
        assert_eq!(c.len(), 4);
        assert_eq!(c[&1].started, Some(true));
        assert_eq!(c[&3].started, Some(false));
        assert_eq!(c[&3].reason.as_deref(), Some("Resources"));
    }

    #[test]
    fn cancelled_array_running_and_pending_tasks() {
        let q = parse_squeue(&fixture("squeue_cancelled.txt"));
        let c = parse_scontrol(&fixture("scontrol_cancelled.txt"));
        assert_eq!(q[&0].state, SlurmState::Completed);
        assert_eq!(q[&1].state, SlurmState::Failed);
        for i in 2..6 {
            assert_eq!(q[&i].state, SlurmState::Cancelled, "task {i}");
            assert!(q[&i].state.is_final());
        }
        // Killed while running: SIGTERM (15) in the signal half; cancelled while pending:
        // no node, never started.
        assert_eq!(c[&3].exit, Some((0, 15)));
        assert_eq!(c[&3].started, Some(true));
        assert_eq!(c[&5].started, Some(false));
    }

    #[test]
    fn node_failure() {
        let q = parse_squeue(&fixture("squeue_nodefail.txt"));
        assert_eq!(q.len(), 2);
        for rec in q.values() {
            assert_eq!(rec.state, SlurmState::NodeFail);
            assert_eq!(rec.reason.as_deref(), Some("NodeDown"));
        }
        let c = parse_scontrol(&fixture("scontrol_nodefail.txt"));
        assert_eq!(c[&1].state, SlurmState::NodeFail);
    }

    #[test]
    fn sacct_lines_with_ranges_and_suffixes() {
        // sacct is not available without slurmdbd (the test cluster has none): this is the
        // documented `-X -n -P` format, written by hand.
        let text = "41_0|COMPLETED|0:0\n41_1|FAILED|3:0\n41_2|CANCELLED by 0|0:15\n\
                    41_3|TIMEOUT|0:0\n41_[4-6%2]|PENDING|0:0\n";
        let t = parse_sacct(text, "41");
        assert_eq!(t.len(), 7);
        assert_eq!(t[&1].exit, Some((3, 0)));
        assert_eq!(t[&2].state, SlurmState::Cancelled);
        assert_eq!(t[&3].state, SlurmState::Timeout);
        assert_eq!(t[&6].state, SlurmState::Pending);
        assert!(parse_sacct(text, "4").is_empty());
    }

    #[test]
    fn ranges() {
        assert_eq!(expand_range("4"), vec![4]);
        assert_eq!(expand_range("2-5%3"), vec![2, 3, 4, 5]);
        assert_eq!(expand_range("1,3,7-9"), vec![1, 3, 7, 8, 9]);
        assert_eq!(expand_range("0-6:3"), vec![0, 3, 6]);
        assert!(expand_range("N/A").is_empty());
    }

    #[test]
    fn state_names_round_trip_and_unknown_states_stay_active() {
        for s in [
            "PENDING",
            "RUNNING",
            "COMPLETED",
            "NODE_FAIL",
            "OUT_OF_MEMORY",
            "TIMEOUT",
        ] {
            assert_eq!(SlurmState::parse(s).name(), s);
        }
        assert_eq!(
            SlurmState::parse("CANCELLED by 1000"),
            SlurmState::Cancelled
        );
        let odd = SlurmState::parse("RESV_DEL_HOLD");
        assert!(!odd.is_final());
        assert!(!SlurmState::Completing.is_final());
    }

    #[test]
    fn sbatch_parsable_output() {
        assert_eq!(parse_sbatch_job_id("123\n").as_deref(), Some("123"));
        assert_eq!(parse_sbatch_job_id("123;cluster\n").as_deref(), Some("123"));
        assert_eq!(parse_sbatch_job_id("Submitted batch job 5\n"), None);
        assert_eq!(parse_sbatch_job_id(""), None);
    }
}
