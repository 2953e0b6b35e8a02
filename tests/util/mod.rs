//! Shared helpers of the integration tests (also: `runs` writes run directories as workers
//! leave them): a temporary working directory holding copies of
//! the shipped experiments and the spec fixtures, and a runner for the real binary that
//! prints the command, its directory, stdout and stderr whenever an expectation fails.

#![allow(dead_code)]

pub mod datafiles;
pub mod runs;
pub mod tb;
pub mod workdir;

use std::path::{Path, PathBuf};
use std::process::{Command, Output as ProcessOutput};

/// A temporary working directory for `orchestrate`.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

/// What one command did.
pub struct Output {
    pub cmd: String,
    pub cwd: PathBuf,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    fn describe(&self) -> String {
        format!(
            "command: {}\ncwd: {}\nexit code: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmd,
            self.cwd.display(),
            self.code,
            self.stdout,
            self.stderr
        )
    }

    /// Asserts the exit code, printing everything when it differs.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code\n{}", self.describe());
        self
    }

    /// Asserts success.
    pub fn ok(&self) -> &Self {
        self.expect_code(0)
    }

    /// Asserts stdout contains `text`.
    pub fn stdout_has(&self, text: &str) -> &Self {
        assert!(
            self.stdout.contains(text),
            "stdout lacks {text:?}\n{}",
            self.describe()
        );
        self
    }

    /// Asserts stderr contains `text`.
    pub fn stderr_has(&self, text: &str) -> &Self {
        assert!(
            self.stderr.contains(text),
            "stderr lacks {text:?}\n{}",
            self.describe()
        );
        self
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

impl Sandbox {
    /// A fresh directory with `experiments/` and `specs/` (the bad-spec fixtures).
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        copy_dir(&root.join("experiments"), &dir.path().join("experiments"));
        copy_dir(
            &root.join("tests/fixtures/specs"),
            &dir.path().join("specs"),
        );
        Sandbox { dir }
    }

    /// [`Sandbox::new`] plus `data/` linked to the repository's shipped data, for commands
    /// that read the data headers (`run`, and `plan` without a missing-data warning).
    pub fn with_data() -> Self {
        let sb = Self::new();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        std::os::unix::fs::symlink(root.join("data"), sb.path().join("data")).unwrap();
        sb
    }

    /// The sandbox directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file (parents created) relative to the sandbox.
    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// Runs `orchestrate ARGS` in the sandbox with no `ORCHESTRATE_*` variables.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    /// Runs `orchestrate ARGS` in the sandbox with extra environment variables.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orchestrate"));
        cmd.args(args).current_dir(self.path());
        for (k, _) in std::env::vars() {
            if k.starts_with("ORCHESTRATE_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let shown_env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
        Output {
            cmd: format!("{}orchestrate {}", shown_env.concat(), args.join(" ")),
            cwd: self.path().to_path_buf(),
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// The result of one run of the binary, printable when a test fails.
pub struct Run {
    pub cmd: String,
    pub output: ProcessOutput,
}

impl Run {
    /// Standard output as text.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    /// Standard error as text.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    /// The exit code (-1 when killed by a signal).
    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }
    /// Panics, showing command, stdout and stderr, unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "command: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmd,
            self.stdout(),
            self.stderr()
        );
        self
    }
}

/// Runs `orchestrate ARGS` in `cwd`.
pub fn orchestrate(cwd: &Path, args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_orchestrate"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the orchestrate binary starts");
    Run {
        cmd: format!("(cd {} && orchestrate {})", cwd.display(), args.join(" ")),
        output,
    }
}
