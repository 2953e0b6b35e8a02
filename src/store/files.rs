//! Reading and writing the small records of a run directory: status, plan and config.
//!
//! Every write is atomic ([`super::atomic::write_atomic`]); every error names its path.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::atomic::write_atomic;
use super::{PauseRecord, PlanRecord, RunDir, RunStatus};
use crate::spec::Spec;

/// Why a run directory or the experiment lock could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error on a named path.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A record exists but does not parse.
    #[error("{path}: corrupt record: {message}")]
    Corrupt { path: PathBuf, message: String },
    /// Another orchestrator holds the experiment lock.
    #[error(
        "experiment {experiment} is locked by another orchestrator (pid {pid} on host {host}, \
         started {age}); wait for it, or stop it, or delete {path} if that process is gone"
    )]
    Locked {
        experiment: String,
        pid: u32,
        host: String,
        age: String,
        path: PathBuf,
    },
    /// The runs directory cannot hold an experiment (a file in the way, read-only, full).
    #[error("cannot use runs directory {path}: {source}")]
    RunsDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl StoreError {
    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Reads `status.json`; `None` when the run has none yet.
pub fn read_status(run: &RunDir) -> Result<Option<RunStatus>, StoreError> {
    read_json(&run.status())
}

/// Writes `status.json` atomically.
pub fn write_status(run: &RunDir, status: &RunStatus) -> Result<(), StoreError> {
    write_json(&run.status(), status)
}

/// Reads `pause.json`: the epoch the next attempt stops after; `None` when absent.
pub fn read_pause(run: &RunDir) -> Result<Option<PauseRecord>, StoreError> {
    read_json(&run.pause())
}

/// Writes `pause.json` atomically, or removes it (`None`: the attempt trains to its end).
pub fn write_pause(run: &RunDir, pause: Option<PauseRecord>) -> Result<(), StoreError> {
    match pause {
        Some(p) => write_json(&run.pause(), &p),
        None => match fs::remove_file(run.pause()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(run.pause(), e)),
        },
    }
}

/// The experiment's schedule record, `runs/<experiment>/schedule.json`: the schedule a
/// pruned grid runs under and every decision taken so far.
pub fn schedule_path(exp_dir: &Path) -> PathBuf {
    exp_dir.join("schedule.json")
}

/// Reads the experiment's schedule record; `None` when it has none.
pub fn read_schedule<T: serde::de::DeserializeOwned>(
    exp_dir: &Path,
) -> Result<Option<T>, StoreError> {
    read_json(&schedule_path(exp_dir))
}

/// Writes the experiment's schedule record atomically: a kill leaves the old decisions or
/// the new ones, never half of them.
pub fn write_schedule<T: serde::Serialize>(exp_dir: &Path, record: &T) -> Result<(), StoreError> {
    write_json(&schedule_path(exp_dir), record)
}

/// Reads `plan.json`; `None` when absent.
pub fn read_plan(run: &RunDir) -> Result<Option<PlanRecord>, StoreError> {
    read_json(&run.plan())
}

/// Writes `plan.json` atomically.
pub fn write_plan(run: &RunDir, plan: &PlanRecord) -> Result<(), StoreError> {
    write_json(&run.plan(), plan)
}

/// Reads the run's resolved `config.toml`; `None` when absent.
pub fn read_config(run: &RunDir) -> Result<Option<Spec>, StoreError> {
    let path = run.config();
    let Some(text) = read_optional(&path)? else {
        return Ok(None);
    };
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            path,
            message: e.to_string(),
        })
}

/// Serializes a resolved config the way `config.toml` holds it.
pub fn config_text(config: &Spec) -> Result<String, StoreError> {
    toml::to_string(config).map_err(|e| StoreError::Corrupt {
        path: PathBuf::from("config.toml"),
        message: e.to_string(),
    })
}

/// Writes `config.toml` atomically.
pub fn write_config(run: &RunDir, config: &Spec) -> Result<(), StoreError> {
    let text = config_text(config)?;
    let path = run.config();
    write_atomic(&path, text.as_bytes()).map_err(|e| StoreError::io(path, e))
}

fn read_optional(path: &Path) -> Result<Option<String>, StoreError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

pub(super) fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<Option<T>, StoreError> {
    let Some(text) = read_optional(path)? else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

pub(super) fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    text.push('\n');
    write_atomic(path, text.as_bytes()).map_err(|e| StoreError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RunState;

    #[test]
    fn status_round_trips_and_missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::at(dir.path());
        assert_eq!(read_status(&run).unwrap(), None);
        let st = RunStatus {
            state: RunState::Running,
            attempts: 2,
            epoch: 1,
            message: None,
            pid: Some(42),
            pruned: None,
        };
        write_status(&run, &st).unwrap();
        assert_eq!(read_status(&run).unwrap(), Some(st));
    }

    #[test]
    fn corrupt_status_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::at(dir.path());
        fs::write(run.status(), "{not json").unwrap();
        let err = read_status(&run).unwrap_err().to_string();
        assert!(err.contains("status.json"), "{err}");
    }

    #[test]
    fn config_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::at(dir.path());
        let mut spec = Spec::default();
        spec.optimizer.lr = 0.005;
        write_config(&run, &spec).unwrap();
        assert_eq!(read_config(&run).unwrap(), Some(spec));
    }
}
