//! Whether a finished run's records are still what its worker left: the one `damaged` rule.
//!
//! The worker's final `status.json` of a done or diverged run carries the [`MetricsIntegrity`]
//! of `metrics.jsonl` ([`write_final_status`]). [`check_finished`] compares the file against it;
//! `run`, `status` and the summaries all ask it, so a truncated, emptied, deleted or edited
//! metrics file is reported as damaged and never summarised into a different winner. A status
//! written before this record existed has none: such a run cannot be checked and counts as
//! intact, as it did before.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::files::{read_json, write_json};
use super::metrics::{MetricsIntegrity, parse_bytes, sha256_hex};
use super::{MetricRecord, RunDir, RunStatus, StoreError};

/// `status.json` as the final write of a finished worker lays it out: the status and, beside
/// its fields, the metrics file's integrity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FinalStatus {
    #[serde(flatten)]
    status: RunStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metrics_integrity: Option<MetricsIntegrity>,
}

/// Writes the worker's last `status.json`; a done or diverged run's carries the integrity of
/// `metrics.jsonl` as it is now, which [`check_finished`] compares against later.
///
/// A metrics file that cannot be read or parsed at this point gets no record (the run then
/// cannot be checked, like one from an earlier version): the verdict must reach the status
/// whatever state the metrics are in.
pub fn write_final_status(run: &RunDir, status: &RunStatus) -> Result<(), StoreError> {
    let metrics_integrity = status
        .state
        .is_final()
        .then(|| MetricsIntegrity::of_file(&run.metrics()).ok())
        .flatten();
    write_json(
        &run.status(),
        &FinalStatus {
            status: status.clone(),
            metrics_integrity,
        },
    )
}

/// The integrity a run's `status.json` records, if any.
fn recorded_integrity(run: &RunDir) -> Result<Option<MetricsIntegrity>, StoreError> {
    let status: Option<FinalStatus> = read_json(&run.status())?;
    Ok(status
        .filter(|s| s.status.state.is_final())
        .and_then(|s| s.metrics_integrity))
}

/// What is wrong with a damaged record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The file is gone.
    Deleted,
    /// It holds fewer or more records than when the run finished.
    Records { expected: usize, found: usize },
    /// Same number of records, other bytes; or a line no longer parses.
    Edited { detail: Option<String> },
    /// It cannot be read.
    Unreadable(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Deleted => f.write_str("deleted after the run finished"),
            Problem::Records { expected, found: 0 } => {
                write!(f, "emptied: 0 of {expected} records")
            }
            Problem::Records { expected, found } if found < expected => {
                write!(f, "truncated: {found} of {expected} records")
            }
            Problem::Records { expected, found } => {
                write!(f, "{found} records where the run finished with {expected}")
            }
            Problem::Edited { detail: None } => {
                f.write_str("edited: its SHA-256 differs from the final status's")
            }
            Problem::Edited { detail: Some(d) } => write!(f, "edited: {d}"),
            Problem::Unreadable(e) => write!(f, "unreadable: {e}"),
        }
    }
}

/// A finished run's record that no longer matches what its worker wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {problem}", file.display())]
pub struct Damage {
    /// The damaged file.
    pub file: PathBuf,
    /// What is wrong with it.
    pub problem: Problem,
}

impl Damage {
    /// The damage with the file's name only, for tables that already name the run.
    pub fn short(&self) -> String {
        let name = self.file.file_name().map_or_else(
            || self.file.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        format!("{name}: {}", self.problem)
    }
}

/// Checks a run whose status is done or diverged against the integrity its final status
/// records. Runs that are not finished, and finished runs whose status predates the record
/// (or cannot be read: the status readers report that), pass: there is nothing to check.
pub fn check_finished(run: &RunDir) -> Result<(), Damage> {
    let Ok(Some(want)) = recorded_integrity(run) else {
        return Ok(());
    };
    let file = run.metrics();
    let bytes = fs::read(&file);
    compare(&want, &file, &bytes)
}

/// The run's metric records, read once: `Ok(Err(damage))` when a finished run's file no longer
/// matches its final status (as [`check_finished`] decides), a [`StoreError`] when an
/// unchecked file cannot be read or parsed (as [`read_records`](super::metrics::read_records)).
pub fn read_checked_records(run: &RunDir) -> Result<Result<Vec<MetricRecord>, Damage>, StoreError> {
    let file = run.metrics();
    let bytes = fs::read(&file);
    if let Ok(Some(want)) = recorded_integrity(run)
        && let Err(damage) = compare(&want, &file, &bytes)
    {
        return Ok(Err(damage));
    }
    match bytes {
        Ok(bytes) => parse_bytes(&file, &bytes).map(Ok),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Ok(Vec::new())),
        Err(e) => Err(StoreError::io(&file, e)),
    }
}

/// The damage, if any, of the metrics file `file` (its read `bytes`) against `want`.
fn compare(
    want: &MetricsIntegrity,
    file: &Path,
    bytes: &io::Result<Vec<u8>>,
) -> Result<(), Damage> {
    let damage = |problem| {
        Err(Damage {
            file: file.to_path_buf(),
            problem,
        })
    };
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return damage(Problem::Deleted),
        Err(e) => return damage(Problem::Unreadable(e.to_string())),
    };
    if sha256_hex(bytes) == want.sha256 {
        return Ok(());
    }
    match parse_bytes(file, bytes) {
        Ok(records) if records.len() != want.records => damage(Problem::Records {
            expected: want.records,
            found: records.len(),
        }),
        Ok(_) => damage(Problem::Edited { detail: None }),
        Err(StoreError::Corrupt { message, .. }) => damage(Problem::Edited {
            detail: Some(message),
        }),
        Err(e) => damage(Problem::Unreadable(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MetricRecord, RunState, metrics, read_status};

    fn finished(dir: &std::path::Path, state: RunState, lines: usize) -> RunDir {
        let run = RunDir::at(dir);
        let mut text = String::new();
        for i in 0..lines {
            text.push_str(&metrics::line(&MetricRecord {
                epoch: i + 1,
                step: i as u64,
                tag: "dev/accuracy".into(),
                value: 0.5 + i as f64 / 100.0,
            }));
        }
        fs::write(run.metrics(), text).unwrap();
        let status = RunStatus {
            state,
            attempts: 1,
            epoch: lines,
            message: None,
            pid: None,
            pruned: None,
        };
        write_final_status(&run, &status).unwrap();
        assert_eq!(read_status(&run).unwrap(), Some(status));
        run
    }

    fn problem(run: &RunDir) -> Problem {
        let d = check_finished(run).unwrap_err();
        assert!(d.to_string().contains("metrics.jsonl"), "{d}");
        d.problem
    }

    #[test]
    fn an_untouched_finished_run_passes() {
        let dir = tempfile::tempdir().unwrap();
        let run = finished(dir.path(), RunState::Done, 3);
        assert_eq!(check_finished(&run), Ok(()));
    }

    #[test]
    fn truncated_emptied_deleted_and_edited_files_are_damage() {
        let dir = tempfile::tempdir().unwrap();
        let run = finished(dir.path(), RunState::Done, 3);
        let text = fs::read_to_string(run.metrics()).unwrap();
        let lines: Vec<&str> = text.lines().collect();

        fs::write(run.metrics(), format!("{}\n{}\n", lines[0], lines[1])).unwrap();
        assert_eq!(
            problem(&run),
            Problem::Records {
                expected: 3,
                found: 2
            }
        );
        fs::write(run.metrics(), "").unwrap();
        assert!(problem(&run).to_string().starts_with("emptied"));
        fs::remove_file(run.metrics()).unwrap();
        assert_eq!(problem(&run), Problem::Deleted);
        fs::write(run.metrics(), text.replace("0.51", "0.91")).unwrap();
        assert_eq!(problem(&run), Problem::Edited { detail: None });
        fs::write(run.metrics(), text.replace("\"value\"", "\"valeur\"")).unwrap();
        assert!(matches!(problem(&run), Problem::Edited { detail: Some(_) }));
    }

    #[test]
    fn a_diverged_run_is_checked_too() {
        let dir = tempfile::tempdir().unwrap();
        let run = finished(dir.path(), RunState::Diverged, 2);
        fs::write(run.metrics(), "").unwrap();
        assert!(check_finished(&run).is_err());
    }

    #[test]
    fn unfinished_runs_and_old_statuses_have_nothing_to_check() {
        let dir = tempfile::tempdir().unwrap();
        // A failed attempt's status carries no record: the next attempt rewrites the file.
        let run = finished(dir.path(), RunState::Failed, 2);
        assert!(!fs::read_to_string(run.status()).unwrap().contains("sha256"));
        fs::write(run.metrics(), "{\"epoch\":1,\"st").unwrap();
        assert_eq!(check_finished(&run), Ok(()));
        // A done status written before the record existed.
        fs::write(run.status(), r#"{"state":"done","attempts":1,"epoch":2}"#).unwrap();
        fs::remove_file(run.metrics()).unwrap();
        assert_eq!(check_finished(&run), Ok(()));
    }
}
