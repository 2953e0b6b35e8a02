//! Shared helpers of the integration tests: run the real binary and say what happened when an
//! expectation fails; write run directories as workers leave them.

#![allow(dead_code)]

pub mod runs;

use std::path::Path;
use std::process::{Command, Output};

/// The result of one run of the binary, printable when a test fails.
pub struct Run {
    pub cmd: String,
    pub output: Output,
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
