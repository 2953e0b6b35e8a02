//! A temp working directory holding the fixture specs and a link to the repository's small
//! data set, and the real `orchestrate` binary run in it, in the foreground or the background.
//! Failures print the command, its directory, stdout and stderr.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A scratch working directory for one test.
pub struct TestDir {
    pub dir: tempfile::TempDir,
}

impl TestDir {
    /// A temp dir with `data/` linked to the repository's data and `tests/fixtures/*.toml`
    /// copied in.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        std::os::unix::fs::symlink(repo.join("data"), dir.path().join("data")).expect("link");
        for e in std::fs::read_dir(repo.join("tests/fixtures")).expect("fixtures") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == "toml") {
                std::fs::copy(&p, dir.path().join(p.file_name().expect("name"))).expect("copy");
            }
        }
        TestDir { dir }
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `orchestrate ARGS` in this directory.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_orchestrate"));
        c.args(args).current_dir(self.path());
        c
    }

    /// Runs `orchestrate ARGS` to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.cmd(args).output().expect("run orchestrate");
        Run {
            desc: self.describe(args),
            out,
        }
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
            desc: self.describe(args),
            child: Some(child),
        }
    }

    fn describe(&self, args: &[&str]) -> String {
        format!(
            "orchestrate {} (in {})",
            args.join(" "),
            self.path().display()
        )
    }

    /// `runs/<experiment>`.
    pub fn exp_dir(&self, experiment: &str) -> PathBuf {
        self.path().join("runs").join(experiment)
    }
}

/// A finished command.
pub struct Run {
    pub desc: String,
    pub out: Output,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    /// Panics, showing everything, unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        if self.out.status.code() != Some(code) {
            panic!(
                "expected exit {code}, got {:?}\n{}",
                self.out.status,
                self.report()
            );
        }
        self
    }
    /// Command, stdout and stderr, for failure messages.
    pub fn report(&self) -> String {
        format!(
            "command: {}\n--- stdout\n{}--- stderr\n{}",
            self.desc,
            self.stdout(),
            self.stderr()
        )
    }
}

/// A command running in the background; killed if the test panics.
pub struct Background {
    pub desc: String,
    child: Option<Child>,
}

impl Background {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }
    /// Sends a signal to the process.
    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.pid() as i32, sig) };
    }
    /// Whether it has exited (without reaping the output).
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
    }
    /// Waits up to `limit` for it to exit.
    pub fn wait(mut self, limit: Duration) -> Run {
        let start = Instant::now();
        while !self.exited() {
            if start.elapsed() > limit {
                let mut c = self.child.take().expect("child");
                let _ = c.kill();
                let out = c.wait_with_output().expect("output");
                panic!(
                    "timed out after {limit:?}\n{}",
                    Run {
                        desc: self.desc.clone(),
                        out
                    }
                    .report()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = self
            .child
            .take()
            .expect("child")
            .wait_with_output()
            .expect("output");
        Run {
            desc: self.desc.clone(),
            out,
        }
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

/// Polls `cond` every 10 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `status.json` of a run directory as JSON, if readable.
pub fn status(run_dir: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(run_dir.join("status.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// `plan.json` of a run directory.
pub fn plan(run_dir: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(run_dir.join("plan.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Run directories of an experiment, sorted by plan index.
pub fn run_dirs(exp_dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<(u64, PathBuf)> = std::fs::read_dir(exp_dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter_map(|p| Some((plan(&p)?["index"].as_u64()?, p)))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.into_iter().map(|(_, p)| p).collect()
}

/// A run's metrics without timings (`time/*` never repeat exactly), as exact bit patterns.
pub fn metrics_without_timings(run_dir: &Path) -> Vec<(u64, u64, String, u64)> {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| !v["tag"].as_str().unwrap_or("").starts_with("time/"))
        .map(|v| {
            (
                v["epoch"].as_u64().unwrap_or(0),
                v["step"].as_u64().unwrap_or(0),
                v["tag"].as_str().unwrap_or("").to_string(),
                v["value"].as_f64().map_or(u64::MAX, f64::to_bits),
            )
        })
        .collect()
}
