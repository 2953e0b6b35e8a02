//! The sbatch script of one array job: one task per run directory.
//!
//! Each task looks its run id and directory up in a run-list file written next to the script
//! (line `SLURM_ARRAY_TASK_ID + 1`), starts `orchestrate worker` for it with the worker's output
//! appended to the run's `worker.log`, and after the worker exits writes `slurm_exit.json`
//! into the run directory: the job id, the task and the worker's exit code. That file is the
//! first source of truth for the orchestrator; Slurm's own view is only needed for tasks that
//! never got that far (never started, killed, node failure, time limit).

use std::path::{Path, PathBuf};

use crate::spec::SlurmSpec;

/// Name of the exit-code file the task writes into each run directory.
pub const EXIT_FILE: &str = "slurm_exit.json";

/// What the script starts in each task.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerCommand {
    /// Absolute path of the program (normally the `orchestrate` executable itself).
    pub program: PathBuf,
    /// Arguments (normally `["worker"]`).
    pub args: Vec<String>,
    /// Extra environment, the same for every task (`ORCHESTRATE_RUN_DIR` is set per task).
    pub env: Vec<(String, String)>,
}

impl WorkerCommand {
    /// `<this executable> worker`.
    pub fn current_exe() -> std::io::Result<WorkerCommand> {
        Ok(WorkerCommand {
            program: std::env::current_exe()?,
            args: vec!["worker".into()],
            env: Vec::new(),
        })
    }
}

/// Everything the script depends on; paths are absolute so the task finds them from any node.
#[derive(Debug, Clone)]
pub struct ScriptInputs<'a> {
    /// Job name: the experiment's name.
    pub job_name: &'a str,
    /// Number of array tasks.
    pub tasks: usize,
    pub slurm: &'a SlurmSpec,
    /// The experiment's `.slurm/` directory (scripts, run lists, task output).
    pub slurm_dir: &'a Path,
    /// The run-list file: `run id<TAB>absolute run directory` a line, task i on line i + 1.
    pub run_list: &'a Path,
    /// Working directory of the tasks: where `orchestrate run` was started, so relative data
    /// paths in the spec mean the same on the node.
    pub workdir: &'a Path,
    pub worker: &'a WorkerCommand,
}

/// The `--array` value: `0-(n-1)`, throttled with `%max_parallel` when set.
pub fn array_range(tasks: usize, max_parallel: usize) -> String {
    let last = tasks.saturating_sub(1);
    let range = if last == 0 {
        "0".to_string()
    } else {
        format!("0-{last}")
    };
    if max_parallel > 0 && max_parallel < tasks {
        format!("{range}%{max_parallel}")
    } else {
        range
    }
}

/// The `#SBATCH` options, in the order the script lists them.
pub fn sbatch_options(inp: &ScriptInputs<'_>) -> Vec<String> {
    let s = inp.slurm;
    let mut opts = vec![
        format!("--job-name={}", inp.job_name),
        format!("--array={}", array_range(inp.tasks, s.max_parallel)),
        "--no-requeue".to_string(),
        format!("--chdir={}", inp.workdir.display()),
        format!("--output={}", inp.slurm_dir.join("%A_%a.out").display()),
        "--open-mode=append".to_string(),
    ];
    if !s.partition.is_empty() {
        opts.push(format!("--partition={}", s.partition));
    }
    if !s.time.is_empty() {
        opts.push(format!("--time={}", s.time));
    }
    if s.cpus_per_task > 0 {
        opts.push(format!("--cpus-per-task={}", s.cpus_per_task));
    }
    if !s.mem.is_empty() {
        opts.push(format!("--mem={}", s.mem));
    }
    if !s.gres.is_empty() {
        opts.push(format!("--gres={}", s.gres));
    }
    opts
}

/// The arguments `sbatch` is called with: `--parsable`, the spec's extra arguments (they
/// override the script's `#SBATCH` lines, as Slurm gives the command line precedence), then
/// the script.
pub fn sbatch_args(slurm: &SlurmSpec, script: &Path) -> Vec<String> {
    let mut args = vec!["--parsable".to_string()];
    args.extend(slurm.extra_args.iter().cloned());
    args.push(script.display().to_string());
    args
}

/// Renders the batch script.
pub fn render(inp: &ScriptInputs<'_>) -> String {
    let mut s = String::new();
    s.push_str("#!/bin/bash\n");
    s.push_str(&format!(
        "# Written by orchestrate: experiment {}, {} run(s), one array task each.\n",
        inp.job_name, inp.tasks
    ));
    if !inp.slurm.extra_args.is_empty() {
        s.push_str(&format!(
            "# Submitted with extra sbatch arguments: {}\n",
            inp.slurm
                .extra_args
                .iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    for opt in sbatch_options(inp) {
        s.push_str(&format!("#SBATCH {opt}\n"));
    }
    s.push('\n');
    s.push_str("set -u\n");
    s.push_str(&format!("run_list={}\n", shell_quote_path(inp.run_list)));
    s.push_str(
        r#"task=${SLURM_ARRAY_TASK_ID:?not started as a Slurm array task}
IFS=$'\t' read -r run_id run_dir < <(sed -n "$((task + 1))p" "$run_list")
if [ -z "${run_dir:-}" ] || [ ! -d "$run_dir" ]; then
    echo "orchestrate: task $task: no run directory on line $((task + 1)) of $run_list" >&2
    exit 2
fi
"#,
    );
    s.push_str(&format!("exit_file=\"$run_dir/{EXIT_FILE}\"\n"));
    s.push_str(
        r#"rm -f "$exit_file"
echo "orchestrate: job ${SLURM_ARRAY_JOB_ID}_$task on $(hostname): $run_dir"

export ORCHESTRATE_RUN_DIR="$run_dir"
export ORCHESTRATE_RUN_ID="$run_id"
threads="${SLURM_CPUS_PER_TASK:-1}"
export ORCHESTRATE_THREADS="$threads" RAYON_NUM_THREADS="$threads" CANDLE_NUM_THREADS="$threads"
export ORCHESTRATE_SLURM_JOB="${SLURM_ARRAY_JOB_ID}_$task"
"#,
    );
    for (k, v) in &inp.worker.env {
        s.push_str(&format!("export {k}={}\n", shell_quote(v)));
    }
    let mut cmd = shell_quote_path(&inp.worker.program);
    for a in &inp.worker.args {
        cmd.push(' ');
        cmd.push_str(&shell_quote(a));
    }
    // The worker runs as a child (not exec) so the script outlives it and can record its
    // exit code. On scancel or the time limit Slurm signals every process of the task, the
    // worker included, so the trap only keeps the shell alive: forwarding the signal would
    // hand the worker a second SIGTERM, which it may read as "stop now, skip the checkpoint".
    // A trapped signal interrupts `wait` with 128+n while the worker still runs; waiting again
    // returns its real status (127 = already collected).
    s.push_str(&format!(
        r#"
{cmd} >>"$run_dir/worker.log" 2>&1 &
worker=$!
trap ':' TERM INT
wait "$worker"
rc=$?
while kill -0 "$worker" 2>/dev/null; do
    wait "$worker"
    rc=$?
done
if [ "$rc" -gt 128 ]; then
    wait "$worker"
    again=$?
    [ "$again" -ne 127 ] && rc=$again
fi
trap - TERM INT

printf '{{"job":"%s","task":%d,"exit_code":%d,"host":"%s"}}\n' \
    "$SLURM_ARRAY_JOB_ID" "$task" "$rc" "$(hostname)" >"$exit_file.tmp" &&
    mv -f "$exit_file.tmp" "$exit_file"
echo "orchestrate: worker exited with code $rc"
exit "$rc"
"#
    ));
    s
}

/// Single-quotes a word for bash unless it is plainly safe.
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,%@+".contains(c));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn shell_quote_path(p: &Path) -> String {
    shell_quote(&p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SlurmSpec {
        SlurmSpec {
            partition: "gpu".into(),
            time: "01:30:00".into(),
            cpus_per_task: 4,
            mem: "8G".into(),
            gres: "gpu:1".into(),
            max_parallel: 2,
            extra_args: vec![
                "--account=dl-course".into(),
                "--qos".into(),
                "low prio".into(),
            ],
            ..SlurmSpec::default()
        }
    }

    #[test]
    fn full_script_snapshot() {
        let slurm = spec();
        let worker = WorkerCommand {
            program: "/opt/orchestrate/bin/orchestrate".into(),
            args: vec!["worker".into()],
            env: vec![("RUST_BACKTRACE".into(), "1".into())],
        };
        let inp = ScriptInputs {
            job_name: "q2-kmnist-lr",
            tasks: 3,
            slurm: &slurm,
            slurm_dir: Path::new("/home/ana/dl/runs/q2-kmnist-lr/.slurm"),
            run_list: Path::new("/home/ana/dl/runs/q2-kmnist-lr/.slurm/submit-1.runs"),
            workdir: Path::new("/home/ana/dl"),
            worker: &worker,
        };
        insta::assert_snapshot!(render(&inp));
    }

    #[test]
    fn minimal_spec_leaves_out_unset_options() {
        let slurm = SlurmSpec::default();
        let worker = WorkerCommand {
            program: "/usr/bin/orchestrate".into(),
            args: vec!["worker".into()],
            env: vec![],
        };
        let inp = ScriptInputs {
            job_name: "smoke",
            tasks: 1,
            slurm: &slurm,
            slurm_dir: Path::new("/w/runs/smoke/.slurm"),
            run_list: Path::new("/w/runs/smoke/.slurm/submit-1.runs"),
            workdir: Path::new("/w"),
            worker: &worker,
        };
        let opts = sbatch_options(&inp);
        assert_eq!(
            opts,
            vec![
                "--job-name=smoke",
                "--array=0",
                "--no-requeue",
                "--chdir=/w",
                "--output=/w/runs/smoke/.slurm/%A_%a.out",
                "--open-mode=append",
            ]
        );
    }

    #[test]
    fn array_throttle() {
        assert_eq!(array_range(4, 0), "0-3");
        assert_eq!(array_range(4, 2), "0-3%2");
        // A throttle at or above the task count says nothing.
        assert_eq!(array_range(4, 4), "0-3");
        assert_eq!(array_range(1, 1), "0");
    }

    #[test]
    fn sbatch_command_line_puts_extra_args_before_the_script() {
        let args = sbatch_args(&spec(), Path::new("/r/.slurm/submit-1.sh"));
        assert_eq!(
            args,
            vec![
                "--parsable",
                "--account=dl-course",
                "--qos",
                "low prio",
                "/r/.slurm/submit-1.sh"
            ]
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/a/b-c_d.e"), "/a/b-c_d.e");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
