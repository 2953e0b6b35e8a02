//! Running Slurm's client tools (`sbatch`, `squeue`, `scontrol`, `scancel`, `sacct`) with a
//! deadline, and sorting their failures into "the controller did not answer" (retry later)
//! and "Slurm said no" (report it).
//!
//! The clients retry a dead controller for about ten seconds on their own and then print
//! `Unable to contact slurm controller`; a hung NFS mount or an overloaded controller can make
//! them block for much longer, hence our own deadline on top.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::SlurmError;

/// What one client invocation printed.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit status; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// True when the tool exited 0.
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// How long one client call may take before we count the controller as not answering.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Messages Slurm's clients print when they cannot reach slurmctld (22.05 and later), or when
/// the controller is up but too busy to answer now.
const UNAVAILABLE_MARKERS: &[&str] = &[
    "Unable to contact slurm controller",
    "Socket timed out on send/recv",
    "Slurm backup controller in standby mode",
    "Communication connection failure",
    "Connection refused",
    "Zero Bytes were transmitted or received",
    "Resource temporarily unavailable",
    "slurmctld is not responding",
];

/// True when `stderr` says the controller did not answer (as opposed to refusing).
pub fn is_unavailable(stderr: &str) -> bool {
    UNAVAILABLE_MARKERS.iter().any(|m| stderr.contains(m))
}

/// Runs `program args...`, waiting at most `timeout`.
///
/// A program that is not installed gives [`SlurmError::NotInstalled`]; one that outlives the
/// deadline is killed and gives [`SlurmError::Unavailable`]. A non-zero exit is returned as
/// an [`Output`] for the caller to judge.
pub fn run(program: &str, args: &[String], timeout: Duration) -> Result<Output, SlurmError> {
    let shown = display(program, args);
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SlurmError::NotInstalled {
                program: program.to_string(),
            });
        }
        Err(e) => {
            return Err(SlurmError::Io {
                path: PathBuf::from(program),
                source: e,
            });
        }
    };
    // Readers on their own threads: a chatty tool must not block on a full pipe while we wait.
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let out_reader = thread::spawn(move || read_all(out.as_mut()));
    let err_reader = thread::spawn(move || read_all(err.as_mut()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                return Err(SlurmError::Io {
                    path: PathBuf::from(program),
                    source: e,
                });
            }
        }
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    let Some(status) = status else {
        return Err(SlurmError::Unavailable {
            command: shown,
            message: format!("no answer within {} s", timeout.as_secs()),
        });
    };
    Ok(Output {
        code: status.code(),
        stdout,
        stderr,
    })
}

/// Like [`run`], but a failure that says the controller is unreachable becomes
/// [`SlurmError::Unavailable`], and any other non-zero exit [`SlurmError::Command`].
pub fn run_ok(program: &str, args: &[String], timeout: Duration) -> Result<Output, SlurmError> {
    let out = run(program, args, timeout)?;
    if out.ok() {
        return Ok(out);
    }
    Err(classify_failure(program, args, &out))
}

/// The error for a failed invocation: unreachable controller or a plain refusal.
pub fn classify_failure(program: &str, args: &[String], out: &Output) -> SlurmError {
    let message = first_lines(&out.stderr, &out.stdout);
    if is_unavailable(&out.stderr) {
        SlurmError::Unavailable {
            command: display(program, args),
            message,
        }
    } else {
        SlurmError::Command {
            command: display(program, args),
            code: out.code,
            message,
        }
    }
}

/// The command as a user would type it, for error messages.
pub fn display(program: &str, args: &[String]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        s.push_str(&super::quote::shell_word(a));
    }
    s
}

/// Slurm's own words: stderr, or stdout when stderr is empty, trimmed to a few lines.
fn first_lines(stderr: &str, stdout: &str) -> String {
    let text = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(5)
        .collect();
    if lines.is_empty() {
        "(no message)".into()
    } else {
        lines.join("; ")
    }
}

fn read_all<R: Read>(r: Option<&mut R>) -> String {
    let mut buf = Vec::new();
    if let Some(r) = r {
        let _ = r.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Whether `program` can be found on `PATH` (or is a path that exists).
pub fn on_path(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_controller_is_unavailable_not_refusal() {
        // Captured from squeue/sbatch on 22.05 with slurmctld stopped.
        let out = Output {
            code: Some(1),
            stdout: String::new(),
            stderr: "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n"
                .into(),
        };
        assert!(matches!(
            classify_failure("squeue", &[], &out),
            SlurmError::Unavailable { .. }
        ));
        let out = Output {
            code: Some(1),
            stdout: String::new(),
            stderr: "sbatch: error: invalid partition specified: nosuch\n\
                     sbatch: error: Batch job submission failed: Invalid partition name specified\n"
                .into(),
        };
        match classify_failure("sbatch", &["-p".into(), "nosuch".into()], &out) {
            SlurmError::Command { message, .. } => {
                assert!(
                    message.contains("Invalid partition name specified"),
                    "{message}"
                )
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn missing_program_is_not_installed() {
        let err = run("orchestrate-no-such-tool", &[], Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, SlurmError::NotInstalled { .. }), "{err:?}");
    }

    #[test]
    fn slow_program_is_killed_at_the_deadline() {
        let err = run("sleep", &["5".to_string()], Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, SlurmError::Unavailable { .. }), "{err:?}");
    }

    #[test]
    fn display_quotes_what_needs_it() {
        assert_eq!(
            display("sbatch", &["--wrap".into(), "echo hi".into()]),
            "sbatch --wrap 'echo hi'"
        );
    }
}
