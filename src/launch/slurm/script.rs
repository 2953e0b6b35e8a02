//! The sbatch script of one array job: one task per run directory.
//!
//! Each task looks its run id and directory up in a run-list file written next to the script
//! (line `SLURM_ARRAY_TASK_ID + 1`), starts `orchestrate worker` for it with the worker's output
//! appended to the run's `worker.log`, and after the worker exits writes `slurm_exit.json`
//! into the run directory: the job id, the task and the worker's exit code. That file is the
//! first source of truth for the orchestrator; Slurm's own view is only needed for tasks that
//! never got that far (never started, killed, node failure, time limit).
//!
//! Nothing is rendered before [`check_inputs`] has passed: spec values must be in sbatch's
//! formats, paths and other strings free of control characters. Every value is then quoted
//! ([`super::quote`]) for the parser that reads its line, bash or sbatch's `#SBATCH` parser,
//! and the script stops at the array-task check before it runs anything when started outside
//! Slurm.

use std::path::{Path, PathBuf};

use super::quote::{check_line_safe, directive_word, pattern_literal, shell_word};
use crate::spec::SlurmSpec;

/// Name of the exit-code file the task writes into each run directory.
pub const EXIT_FILE: &str = crate::store::SLURM_EXIT_FILE;

/// A script input the batch script cannot carry as written; nothing was rendered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScriptError {
    /// A path the script names (working directory, runs directory, executable).
    #[error("{what} {path:?} cannot be used in a Slurm batch script: {reason}")]
    Path {
        what: &'static str,
        path: String,
        reason: String,
    },
    /// A `launch.slurm` value or another string outside what the script can hold.
    #[error("{what} = {value}: {reason}")]
    Value {
        what: String,
        value: String,
        reason: String,
    },
}

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

/// `path` as text the script can hold, or why not (`what` names it for the user).
fn script_path<'p>(what: &'static str, path: &'p Path) -> Result<&'p str, ScriptError> {
    let fail = |reason: String| ScriptError::Path {
        what,
        path: path.to_string_lossy().into_owned(),
        reason,
    };
    let text = path
        .to_str()
        .ok_or_else(|| fail("it is not valid UTF-8".into()))?;
    check_line_safe(text).map_err(fail)?;
    Ok(text)
}

/// Checks everything that reaches the script: the `launch.slurm` values with the spec's own
/// rules (library callers may skip spec validation), the paths, the job name and the worker
/// command. The first problem found is returned.
pub fn check_inputs(inp: &ScriptInputs<'_>) -> Result<(), ScriptError> {
    if let Some(v) = crate::spec::slurm_checks::check(inp.slurm)
        .into_iter()
        .next()
    {
        return Err(ScriptError::Value {
            what: v.key,
            value: v.value,
            reason: v.message,
        });
    }
    crate::spec::validate::check_name(inp.job_name).map_err(|reason| ScriptError::Value {
        what: "job name".into(),
        value: format!("{:?}", inp.job_name),
        reason,
    })?;
    script_path(WORKDIR, inp.workdir)?;
    let slurm_dir = script_path(RUNS_DIR, inp.slurm_dir)?;
    if slurm_dir.contains('\\') {
        // Any backslash in an --output path turns Slurm's %A/%a patterns off.
        return Err(ScriptError::Path {
            what: RUNS_DIR,
            path: slurm_dir.into(),
            reason: "it contains a backslash, which turns off Slurm's file name patterns \
                     (--output)"
                .into(),
        });
    }
    script_path(RUNS_DIR, inp.run_list)?;
    script_path(EXECUTABLE, &inp.worker.program)?;
    let strings = inp.worker.args.iter().map(|a| ("worker argument", a));
    let values = inp
        .worker
        .env
        .iter()
        .map(|(_, v)| ("worker environment value", v));
    for (what, v) in strings.chain(values) {
        check_line_safe(v).map_err(|reason| ScriptError::Value {
            what: what.into(),
            value: format!("{v:?}"),
            reason,
        })?;
    }
    for (k, _) in &inp.worker.env {
        let identifier = k
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !identifier {
            return Err(ScriptError::Value {
                what: "worker environment variable".into(),
                value: format!("{k:?}"),
                reason: "must be a shell variable name".into(),
            });
        }
    }
    Ok(())
}

const WORKDIR: &str = "the working directory (the tasks start there)";
const RUNS_DIR: &str = "--runs-dir: the experiment's Slurm directory";
const EXECUTABLE: &str = "the orchestrate executable";

/// The `#SBATCH` options, in the order the script lists them, each value quoted for sbatch's
/// directive parser. The inputs must have passed [`check_inputs`].
pub fn sbatch_options(inp: &ScriptInputs<'_>) -> Vec<String> {
    let s = inp.slurm;
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let output = format!("{}/%A_%a.out", pattern_literal(&path(inp.slurm_dir)));
    let mut opts = vec![
        ("job-name", inp.job_name.to_string()),
        ("array", array_range(inp.tasks, s.max_parallel)),
        ("no-requeue", String::new()),
        ("chdir", path(inp.workdir)),
        ("output", output),
        ("open-mode", "append".to_string()),
    ];
    for (name, value) in [
        ("partition", &s.partition),
        ("time", &s.time),
        ("cpus-per-task", &cpus(s.cpus_per_task)),
        ("mem", &s.mem),
        ("gres", &s.gres),
    ] {
        if !value.is_empty() {
            opts.push((name, value.clone()));
        }
    }
    opts.into_iter()
        .map(|(name, value)| match value.as_str() {
            "" => format!("--{name}"),
            v => format!("--{name}={}", directive_word(v)),
        })
        .collect()
}

/// `--cpus-per-task`'s value; empty for 0 (not set).
fn cpus(n: usize) -> String {
    if n == 0 { String::new() } else { n.to_string() }
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

/// Renders the batch script, after [`check_inputs`]: every value is one line of the script
/// (or one word of one), quoted for whichever parser reads that line.
pub fn render(inp: &ScriptInputs<'_>) -> Result<String, ScriptError> {
    check_inputs(inp)?;
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
                .map(|a| shell_word(a))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    for opt in sbatch_options(inp) {
        s.push_str(&format!("#SBATCH {opt}\n"));
    }
    s.push('\n');
    s.push_str("set -u\n");
    s.push_str(&format!(
        "run_list={}\n",
        shell_word(&inp.run_list.to_string_lossy())
    ));
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
        s.push_str(&format!("export {k}={}\n", shell_word(v)));
    }
    let mut cmd = shell_word(&inp.worker.program.to_string_lossy());
    for a in &inp.worker.args {
        cmd.push(' ');
        cmd.push_str(&shell_word(a));
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
    Ok(s)
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
            extra_args: vec!["--account=dl-course".into(), "--qos=low prio".into()],
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
        insta::assert_snapshot!(render(&inp).unwrap());
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
                "--qos=low prio",
                "/r/.slurm/submit-1.sh"
            ]
        );
    }

    /// Hostile and ordinary values for every input of the script, checked the way bash and
    /// sbatch read the result.
    mod fuzz {
        use super::super::*;
        use crate::launch::slurm::quote::tests::sbatch_tokens;
        use proptest::prelude::*;
        use std::process::Command;

        /// Characters that mean something to bash, sbatch or Slurm's file name patterns.
        const NASTY: &str = "[a-z0-9 '\"$`;#%\\\\()|&<>*?!~{}\\n\\t\\r\\x00\\x1b:,=/.-]{0,16}";

        /// Mostly well-formed values, sometimes anything.
        fn value(valid: &'static str) -> impl Strategy<Value = String> {
            prop_oneof![3 => valid, 1 => NASTY]
        }

        /// What sbatch should read from the `#SBATCH` lines, unquoted.
        fn expected_options(inp: &ScriptInputs<'_>) -> Vec<String> {
            let s = inp.slurm;
            let out = pattern_literal(inp.slurm_dir.to_str().unwrap());
            let mut v = vec![
                format!("--job-name={}", inp.job_name),
                format!("--array={}", array_range(inp.tasks, s.max_parallel)),
                "--no-requeue".to_string(),
                format!("--chdir={}", inp.workdir.to_str().unwrap()),
                format!("--output={out}/%A_%a.out"),
                "--open-mode=append".to_string(),
            ];
            for (k, val) in [
                ("partition", &s.partition),
                ("time", &s.time),
                ("mem", &s.mem),
                ("gres", &s.gres),
            ] {
                if !val.is_empty() {
                    v.push(format!("--{k}={val}"));
                }
                if k == "time" && s.cpus_per_task > 0 {
                    v.push(format!("--cpus-per-task={}", s.cpus_per_task));
                }
            }
            v
        }

        /// Whether the inputs are ones the rules accept (then rendering must not refuse).
        fn acceptable(inp: &ScriptInputs<'_>) -> bool {
            let path_ok = |p: &Path| p.to_str().is_some_and(|t| check_line_safe(t).is_ok());
            crate::spec::slurm_checks::check(inp.slurm).is_empty()
                && crate::spec::validate::check_name(inp.job_name).is_ok()
                && path_ok(inp.workdir)
                && path_ok(inp.slurm_dir)
                && !inp.slurm_dir.to_str().unwrap_or("").contains('\\')
                && path_ok(inp.run_list)
                && path_ok(&inp.worker.program)
        }

        /// Every input of one script, owned.
        #[derive(Debug)]
        struct Case {
            slurm: SlurmSpec,
            job_name: String,
            workdir: PathBuf,
            runs: PathBuf,
            program: PathBuf,
            threads: String,
            tasks: usize,
        }

        #[allow(clippy::too_many_arguments)]
        fn case(
            partition: impl Strategy<Value = String>,
            time: impl Strategy<Value = String>,
            mem: impl Strategy<Value = String>,
            gres: impl Strategy<Value = String>,
            extra: impl Strategy<Value = String>,
            name: impl Strategy<Value = String>,
            path: impl Strategy<Value = PathBuf> + Clone,
            threads: impl Strategy<Value = String>,
        ) -> impl Strategy<Value = Case> {
            (
                (partition, time, mem, gres),
                (proptest::collection::vec(extra, 0..3), 0usize..5, 0usize..4),
                (name, path.clone(), path.clone(), path, threads, 1usize..5),
            )
                .prop_map(
                    |(
                        (partition, time, mem, gres),
                        (extra_args, cpus_per_task, max_parallel),
                        (job_name, workdir, runs, program, threads, tasks),
                    )| Case {
                        slurm: SlurmSpec {
                            partition,
                            time,
                            mem,
                            gres,
                            extra_args,
                            cpus_per_task,
                            max_parallel,
                            ..SlurmSpec::default()
                        },
                        job_name,
                        workdir,
                        runs,
                        program,
                        threads,
                        tasks,
                    },
                )
        }

        const PARTITION: &str = "[a-z][a-z0-9_-]{0,6}(,[a-z][a-z0-9]{0,4})?";
        const TIME: &str = "(infinite|([0-9]{1,2}-)?[0-9]{1,3}(:[0-9]{2}){0,2})";
        const MEM: &str = "[0-9]{1,6}([KMGTkmgt]B?)?";
        const GRES: &str = "gpu(:[a-z][a-z0-9]{0,4})?(:[0-9]{1,2})?(,mps:[0-9]{1,3})?";
        const NAME: &str = "[A-Za-z0-9_-]{1,10}";
        /// Paths with every character that means something to bash or sbatch, no control ones.
        const PATH: &str = "/[a-z0-9 '\"$`;#%()|&<>*?!~{}:,=.-]{0,16}";

        fn accepted_extra_arg() -> impl Strategy<Value = String> {
            prop_oneof![
                "--(account|qos|comment|constraint|exclusive)",
                ("--(account|qos|comment|constraint)=", "[ -~]{0,16}").prop_map(|(a, b)| a + &b),
            ]
        }

        /// Renders `c` and checks the script as sbatch and bash read it; `Ok(false)` when the
        /// script writer refused the inputs.
        fn check_case(c: &Case) -> Result<bool, TestCaseError> {
            let worker = WorkerCommand {
                program: c.program.clone(),
                args: vec!["worker".into()],
                env: vec![("ORCHESTRATE_THREADS".into(), c.threads.clone())],
            };
            let slurm_dir = c.runs.join("exp/.slurm");
            let run_list = slurm_dir.join("submit-1.runs");
            let inp = ScriptInputs {
                job_name: &c.job_name,
                tasks: c.tasks,
                slurm: &c.slurm,
                slurm_dir: &slurm_dir,
                run_list: &run_list,
                workdir: &c.workdir,
                worker: &worker,
            };
            let script = match render(&inp) {
                Ok(script) => script,
                Err(e) => {
                    let env_ok = check_line_safe(&c.threads).is_ok();
                    prop_assert!(!(acceptable(&inp) && env_ok), "refused: {e}");
                    return Ok(false);
                }
            };
            prop_assert!(acceptable(&inp));

            // sbatch: one argument per #SBATCH line, exactly the values given.
            let directives: Vec<Vec<String>> = script
                .lines()
                .filter_map(|l| l.strip_prefix("#SBATCH"))
                .map(sbatch_tokens)
                .collect();
            let expected: Vec<Vec<String>> = expected_options(&inp)
                .into_iter()
                .map(|o| vec![o])
                .collect();
            prop_assert_eq!(directives, expected);

            // bash: the script parses, with as many lines as one with plain values.
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("submit.sh");
            std::fs::write(&file, &script).unwrap();
            let syntax = Command::new("bash").arg("-n").arg(&file).output().unwrap();
            prop_assert!(
                syntax.status.success(),
                "bash -n: {}\n{}",
                String::from_utf8_lossy(&syntax.stderr),
                script
            );
            let plain_slurm = SlurmSpec {
                extra_args: c.slurm.extra_args.iter().map(|_| "--x".into()).collect(),
                ..c.slurm.clone()
            };
            let plain_worker = WorkerCommand {
                program: "/p".into(),
                args: vec!["worker".into()],
                env: vec![("ORCHESTRATE_THREADS".into(), "1".into())],
            };
            let plain = render(&ScriptInputs {
                slurm: &plain_slurm,
                job_name: "x",
                slurm_dir: Path::new("/r/.slurm"),
                run_list: Path::new("/r/.slurm/l"),
                workdir: Path::new("/w"),
                worker: &plain_worker,
                ..inp.clone()
            })
            .unwrap();
            prop_assert_eq!(script.lines().count(), plain.lines().count());

            // bash reads the run list path back as the one word it was.
            let upto: String = script
                .lines()
                .take_while(|l| !l.starts_with("task="))
                .map(|l| format!("{l}\n"))
                .collect();
            let probe = format!("{upto}printf '%s' \"$run_list\"\n");
            let out = Command::new("env")
                .args(["-i", "bash", "-c", &probe])
                .current_dir(dir.path())
                .output()
                .unwrap();
            prop_assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                run_list.to_str().unwrap()
            );

            // Outside Slurm the script stops at the task check and leaves nothing behind.
            let run = Command::new("env")
                .args(["-i", "bash"])
                .arg(&file)
                .current_dir(dir.path())
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&run.stderr);
            prop_assert!(!run.status.success());
            prop_assert!(
                stderr.contains("not started as a Slurm array task"),
                "{}",
                stderr
            );
            let left = std::fs::read_dir(dir.path()).unwrap().count();
            prop_assert_eq!(left, 1, "files besides the script");
            Ok(true)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            /// Values validation accepts, with free text wherever the rules allow it (paths,
            /// extra_args values): always rendered, always one line per option.
            #[test]
            fn accepted_values_stay_on_their_line(c in case(
                PARTITION, TIME, MEM, GRES, accepted_extra_arg(), NAME,
                PATH.prop_map(PathBuf::from), "[0-9]{1,2}",
            )) {
                prop_assert!(check_case(&c)?, "an accepted case was refused");
            }

            /// Anything at all, control characters included: refused, or as safe as above.
            #[test]
            fn hostile_values_are_refused_or_harmless(c in case(
                value(PARTITION), value(TIME), value(MEM), value(GRES),
                prop_oneof![accepted_extra_arg(), NASTY.prop_map(String::from)],
                value(NAME),
                prop_oneof![PATH, NASTY.prop_map(|s| format!("/{s}"))].prop_map(PathBuf::from),
                value("[0-9]{1,2}"),
            )) {
                check_case(&c)?;
            }
        }
    }
}
