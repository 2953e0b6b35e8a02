//! Shared helpers of the integration tests (also: `runs` writes run directories as workers
//! leave them and reads them back): a temporary working directory holding copies of the
//! shipped experiments and the spec fixtures, and the one runner of the real binary, in the
//! foreground or the background, that prints the command, its directory, stdout and stderr
//! whenever an expectation fails.

#![allow(dead_code)]

pub mod datafiles;
pub mod runs;
pub mod tb;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    /// What the command saw from the process that ran it.
    pub fn from_process(cmd: String, cwd: &Path, out: std::process::Output) -> Self {
        Output {
            cmd,
            cwd: cwd.to_path_buf(),
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Command, directory, exit code, stdout and stderr, for failure messages.
    pub fn report(&self) -> String {
        self.to_string()
    }

    /// Asserts the exit code, printing everything when it differs.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code\n{}", self.report());
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
            self.report()
        );
        self
    }

    /// Asserts stderr contains `text`.
    pub fn stderr_has(&self, text: &str) -> &Self {
        assert!(
            self.stderr.contains(text),
            "stderr lacks {text:?}\n{}",
            self.report()
        );
        self
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "command: {}\ncwd: {}\nexit code: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmd,
            self.cwd.display(),
            self.code,
            self.stdout,
            self.stderr
        )
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

    /// [`Sandbox::with_data`] plus the seconds-long specs of `tests/fixtures/*.toml` (a grid,
    /// a diverging run, a benchmark) at the top, for tests that launch and train.
    pub fn with_fixtures() -> Self {
        let sb = Self::with_data();
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        for e in std::fs::read_dir(fixtures).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                std::fs::copy(&p, sb.path().join(p.file_name().unwrap())).unwrap();
            }
        }
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

    /// Runs `orchestrate ARGS` in `cwd`, a directory inside the sandbox.
    pub fn run_in(&self, cwd: &Path, args: &[&str]) -> Output {
        let out = self.cmd(args).current_dir(cwd).output().unwrap();
        Output::from_process(shown(args), cwd, out)
    }

    /// Runs `orchestrate ARGS` in the sandbox with extra environment variables.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.cmd(args);
        cmd.envs(env.iter().copied());
        let out = cmd.output().unwrap();
        let shown_env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
        let shown = format!("{}{}", shown_env.concat(), shown(args));
        Output::from_process(shown, self.path(), out)
    }

    /// `orchestrate ARGS` in the sandbox with no `ORCHESTRATE_*` variables, to adjust before
    /// running it.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orchestrate"));
        cmd.args(args).current_dir(self.path());
        for (k, _) in std::env::vars() {
            if k.starts_with("ORCHESTRATE_") {
                cmd.env_remove(k);
            }
        }
        cmd
    }

    /// Starts `orchestrate ARGS` in the background, output captured.
    pub fn spawn(&self, args: &[&str]) -> Background {
        let child = self
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn orchestrate");
        Background {
            cmd: shown(args),
            cwd: self.path().to_path_buf(),
            child: Some(child),
        }
    }

    /// `runs/<experiment>`.
    pub fn exp_dir(&self, experiment: &str) -> PathBuf {
        self.path().join("runs").join(experiment)
    }
}

fn shown(args: &[&str]) -> String {
    format!("orchestrate {}", args.join(" "))
}

/// A command running in the background; killed if the test panics.
pub struct Background {
    cmd: String,
    cwd: PathBuf,
    child: Option<Child>,
}

impl Background {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
        unsafe { libc::kill(self.pid() as i32, sig) };
    }

    /// Whether it has exited (without reaping the output).
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// Waits up to `limit` for it to exit; kills it and fails the test after that.
    pub fn wait(mut self, limit: Duration) -> Output {
        let start = Instant::now();
        while !self.exited() {
            if start.elapsed() > limit {
                let mut c = self.child.take().expect("child");
                let _ = c.kill();
                let out = c.wait_with_output().expect("output");
                let out = Output::from_process(self.cmd.clone(), &self.cwd, out);
                panic!("timed out after {limit:?}\n{}", out.report());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = self.child.take().expect("child").wait_with_output();
        Output::from_process(self.cmd.clone(), &self.cwd, out.expect("output"))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `git ARGS` in `dir` as a throwaway committer; fails the test unless it succeeds.
pub fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(["-c", "user.email=t@example.com", "-c", "user.name=t"])
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

/// Polls `cond` every 10 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A spec of CNN runs on the first `train_limit` images of the embedded mini data set (100
/// test images, batch 32, running loss every 5 steps, seed 7): the small real training the
/// binary-level tests run. `train_extra` adds lines to `[train]`; `rest` adds sections.
pub fn mini_cnn_spec(
    name: &str,
    train_limit: usize,
    epochs: usize,
    train_extra: &str,
    rest: &str,
) -> String {
    format!(
        r#"name = "{name}"
seed = 7

[data]
format = "idx"
dir = "data/fashion-mnist-mini"
train_limit = {train_limit}
test_limit = 100

[model]
kind = "cnn"

[train]
epochs = {epochs}
batch_size = 32
log_every = 5
{train_extra}
{rest}"#
    )
}
