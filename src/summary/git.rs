//! The little git a summary needs: the commit a spec file was run from, and `git show REV:PATH`
//! for `diff` against a committed baseline.

use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::Command;

use super::SummaryError;

/// The spec file a run came from and the state of the repository holding it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpecSource {
    /// The path as given to `orchestrate run`.
    pub path: String,
    /// `HEAD` of the repository holding the spec file.
    pub commit: String,
    /// The spec file differs from that commit (or is not committed).
    pub dirty: bool,
}

/// The commit of the repository holding `spec`; `None` outside a repository or without git.
pub fn spec_source(spec: &Path) -> Option<SpecSource> {
    let dir = match spec.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let file = spec.file_name()?;
    let head = git_stdout(dir, &["rev-parse", "--verify", "HEAD"])?;
    let porcelain = git_stdout(
        dir,
        &[
            "status",
            "--porcelain",
            "--ignored",
            "--",
            &file.to_string_lossy(),
        ],
    )?;
    Some(SpecSource {
        path: spec.display().to_string(),
        commit: head.trim().to_string(),
        dirty: !porcelain.trim().is_empty(),
    })
}

fn git_stdout(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        // The spec's file name is a path, not a pattern: `exp*.toml` must not match others.
        .arg("--literal-pathspecs")
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).ok()
}

/// The contents of `rev:path` in the repository of the working directory (`git show`).
pub fn show(rev_path: &str) -> Result<String, SummaryError> {
    let out = Command::new("git")
        .args(show_args(rev_path))
        .output()
        .map_err(|e| SummaryError::Git(format!("{rev_path}: cannot run git: {e}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(SummaryError::Git(format!(
            "{rev_path}: git show failed: {}",
            stderr.trim()
        )));
    }
    String::from_utf8(out.stdout)
        .map_err(|_| SummaryError::Git(format!("{rev_path}: not UTF-8 text")))
}

/// `git show`'s arguments for `rev_path`, which comes from the command line: after
/// `--end-of-options` and before `--` it can only be read as a revision, never as an option
/// (`--output=FILE:x` would make git write FILE) nor as a pathspec.
fn show_args(rev_path: &str) -> [&str; 4] {
    ["show", "--end-of-options", rev_path, "--"]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let ok = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "git {args:?} failed");
    }

    /// A fresh repository with an author, for commits.
    fn init_repo(d: &Path) {
        git(d, &["init", "-q"]);
        git(d, &["config", "user.email", "t@example.com"]);
        git(d, &["config", "user.name", "t"]);
    }

    #[test]
    fn spec_source_names_head_and_notices_edits() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        init_repo(d);
        let spec = d.join("exp.toml");
        std::fs::write(&spec, "name = \"x\"\n").unwrap();
        git(d, &["add", "exp.toml"]);
        git(d, &["commit", "-q", "-m", "spec"]);
        let src = spec_source(&spec).expect("in a repository");
        assert_eq!(src.commit.len(), 40);
        assert!(!src.dirty);
        std::fs::write(&spec, "name = \"y\"\n").unwrap();
        assert!(spec_source(&spec).unwrap().dirty);
    }

    #[test]
    fn a_spec_name_with_pattern_characters_matches_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        init_repo(d);
        for name in ["e*.toml", ":(top)x.toml"] {
            let spec = d.join(name);
            std::fs::write(&spec, "name = \"x\"\n").unwrap();
            git(d, &["--literal-pathspecs", "add", name]);
            git(d, &["commit", "-q", "-m", name]);
            // An edited file the name would match as a pattern.
            std::fs::write(d.join("edited.toml"), "").unwrap();
            std::fs::write(d.join("x.toml"), "").unwrap();
            assert!(!spec_source(&spec).unwrap().dirty, "{name}");
        }
    }

    #[test]
    fn outside_a_repository_there_is_no_source() {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("exp.toml");
        std::fs::write(&spec, "").unwrap();
        assert_eq!(spec_source(&spec), None);
    }
}
