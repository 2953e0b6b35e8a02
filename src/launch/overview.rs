//! The table of an experiment's runs, read from run directories only (no lock): what
//! `orchestrate status` prints, also while a grid runs.

use std::path::Path;

use serde::Serialize;

use crate::store::lock::pid_alive;
use crate::store::metrics::read_records;
use crate::store::{self, RunDir, RunState, StoreError};

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunView {
    pub index: usize,
    pub id: String,
    pub name: String,
    /// `None`: planned but no run directory yet.
    pub state: Option<RunState>,
    /// A `running` status whose worker pid is gone (its orchestrator was killed).
    pub orphaned: bool,
    pub attempts: u32,
    pub epoch: usize,
    pub epochs: usize,
    pub metric: String,
    /// Latest value of `metric` in `metrics.jsonl`.
    pub value: Option<f64>,
    pub message: Option<String>,
    /// Why a record of the run (`plan.json`, `status.json`, `config.toml`) cannot be read;
    /// without a readable status its state is unknown, not "not started".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
    /// Why a finished run's records no longer match its final status
    /// ([`store::check_finished`]); the table shows its state as `damaged`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damaged: Option<String>,
    /// Why the run's results no longer match the current data or numerics
    /// ([`store::check_current`]); the table shows its state as `stale`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale: Option<String>,
}

/// Reads every run directory under `exp_dir`; `planned` (index, id, name, epochs, metric)
/// adds rows for runs that have no directory yet.
pub fn collect(
    exp_dir: &Path,
    planned: &[(usize, String, String, usize, String)],
) -> Result<Vec<RunView>, StoreError> {
    let mut rows = Vec::new();
    let mut fingerprints = store::Fingerprints::open(exp_dir.parent().unwrap_or(Path::new(".")));
    let entries = match std::fs::read_dir(exp_dir) {
        Ok(e) => e.flatten().collect::<Vec<_>>(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !planned.is_empty() => Vec::new(),
        Err(e) => return Err(StoreError::io(exp_dir, e)),
    };
    for entry in entries {
        if !entry.path().is_dir() {
            continue;
        }
        let run = RunDir::at(entry.path());
        let mut unreadable = None;
        let mut note = |e: StoreError| {
            unreadable.get_or_insert_with(|| e.to_string());
        };
        let mut record = None;
        let (index, id, name) = match store::read_plan(&run) {
            Ok(Some(plan)) => {
                record = Some(plan.clone());
                (plan.index, plan.id, plan.name)
            }
            Ok(None) => continue,
            Err(e) => {
                // The directory is named by the run ID: the planned row, if any, says the rest.
                note(e);
                let id = entry.file_name().to_string_lossy().into_owned();
                match planned.iter().find(|p| p.1 == id) {
                    Some(p) => (p.0, id, p.2.clone()),
                    None => (usize::MAX, id, String::new()),
                }
            }
        };
        let status = store::read_status(&run).unwrap_or_else(|e| {
            note(e);
            None
        });
        let config = store::read_config(&run).unwrap_or_else(|e| {
            note(e);
            None
        });
        let stale = match (&record, &config) {
            (Some(plan), Some(c)) => store::check_current(
                plan,
                &fingerprints.data(&c.data),
                crate::grid::identity::numerics_version(c.model.kind),
            )
            .err()
            .map(|s| s.to_string()),
            _ => None,
        };
        let (epochs, metric) = config
            .map(|c| (c.train.epochs, c.select.metric))
            .unwrap_or((0, "dev/accuracy".into()));
        let value = read_records(&run.metrics())
            .unwrap_or_default()
            .iter()
            .rev()
            .find(|r| r.tag == metric)
            .map(|r| r.value);
        let orphaned = status
            .as_ref()
            .is_some_and(|s| s.state == RunState::Running && !s.pid.is_some_and(pid_alive));
        rows.push(RunView {
            index,
            id,
            name,
            state: status.as_ref().map(|s| s.state),
            orphaned,
            attempts: status.as_ref().map_or(0, |s| s.attempts),
            epoch: status.as_ref().map_or(0, |s| s.epoch),
            epochs,
            metric,
            value,
            message: status.and_then(|s| s.message),
            unreadable,
            damaged: store::check_finished(&run).err().map(|d| d.short()),
            stale,
        });
    }
    for (index, id, name, epochs, metric) in planned {
        if !rows.iter().any(|r| r.id == *id) {
            rows.push(RunView {
                index: *index,
                id: id.clone(),
                name: name.clone(),
                state: None,
                orphaned: false,
                attempts: 0,
                epoch: 0,
                epochs: *epochs,
                metric: metric.clone(),
                value: None,
                message: None,
                unreadable: None,
                damaged: None,
                stale: None,
            });
        }
    }
    rows.sort_by(|a, b| (a.index, &a.id).cmp(&(b.index, &b.id)));
    // Only a cache: a table that cannot write it is still the table.
    let _ = fingerprints.save();
    Ok(rows)
}

/// The table as text, one row per run and a count line.
pub fn render(rows: &[RunView]) -> String {
    let mut table = vec![[
        "RUN".to_string(),
        "NAME".into(),
        "STATE".into(),
        "ATTEMPTS".into(),
        "EPOCH".into(),
        "METRIC".into(),
        "NOTE".into(),
    ]];
    for r in rows {
        let state = match (r.state, r.orphaned) {
            (None, _) if r.unreadable.is_some() => "unreadable".into(),
            (None, _) => "not started".into(),
            (Some(_), true) => "interrupted".into(),
            (Some(_), false) if r.damaged.is_some() => "damaged".into(),
            (_, _) if r.stale.is_some() => "stale".into(),
            (Some(s), false) => s.word().to_string(),
        };
        let metric = r
            .value
            .map(|v| format!("{} {v:.4}", r.metric))
            .unwrap_or_else(|| "-".into());
        // The full path is in the error below the table; the row already names the run.
        let short = r.unreadable.as_ref().map(|u| {
            u.split_once(&format!("/{}/", r.id))
                .map_or(u.clone(), |(_, rest)| rest.to_string())
        });
        let mut note = short
            .or_else(|| r.damaged.clone())
            .or_else(|| r.stale.clone())
            .or_else(|| r.message.clone())
            .unwrap_or_default();
        if note.chars().count() > 60 {
            note = note.chars().take(57).collect::<String>() + "...";
        }
        table.push([
            r.id.clone(),
            r.name.clone(),
            state,
            r.attempts.to_string(),
            format!("{}/{}", r.epoch, r.epochs),
            metric,
            note,
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| {
            table
                .iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &table {
        let line = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        out.push_str(line.trim_end());
        out.push('\n');
    }
    // A stale run is counted as stale, not by the state its old records give.
    let count = |s: RunState| {
        rows.iter()
            .filter(|r| r.state == Some(s) && r.stale.is_none())
            .count()
    };
    let stale = rows.iter().filter(|r| r.stale.is_some()).count();
    let damaged = rows.iter().filter(|r| r.damaged.is_some()).count();
    out.push_str(&format!(
        "{} run(s): {} done{}, {} running, {} queued, {} failed, {} diverged, {} cancelled",
        rows.len(),
        count(RunState::Done),
        if damaged > 0 {
            format!(" ({damaged} damaged)")
        } else {
            String::new()
        },
        count(RunState::Running),
        count(RunState::Queued)
            + rows
                .iter()
                .filter(|r| r.state.is_none() && r.unreadable.is_none())
                .count(),
        count(RunState::Failed),
        count(RunState::Diverged),
        count(RunState::Cancelled),
    ));
    // Only schedules pause and prune: grids without one keep their familiar line.
    for state in [RunState::Paused, RunState::Pruned] {
        let n = count(state);
        if n > 0 {
            out.push_str(&format!(", {n} {state}"));
        }
    }
    let unreadable = rows.iter().filter(|r| r.unreadable.is_some()).count();
    if unreadable > 0 {
        out.push_str(&format!(", {unreadable} unreadable"));
    }
    if stale > 0 {
        out.push_str(&format!(", {stale} stale"));
    }

    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_snapshot() {
        let row =
            |index, id: &str, name: &str, state, attempts, epoch, value, message: Option<&str>| {
                RunView {
                    index,
                    id: id.into(),
                    name: name.into(),
                    state,
                    orphaned: false,
                    attempts,
                    epoch,
                    epochs: 3,
                    metric: "dev/accuracy".into(),
                    value,
                    message: message.map(Into::into),
                    unreadable: None,
                    damaged: None,
                    stale: None,
                }
            };
        let rows = vec![
            row(
                0,
                "0a1b2c3d4e5f",
                "lr=0.001",
                Some(RunState::Done),
                1,
                3,
                Some(0.8123),
                None,
            ),
            row(
                1,
                "1a1b2c3d4e5f",
                "lr=0.01",
                Some(RunState::Failed),
                2,
                1,
                Some(0.5),
                Some("worker killed by signal 9 (SIGKILL) (attempt 2)"),
            ),
            row(
                2,
                "2a1b2c3d4e5f",
                "lr=1000000",
                Some(RunState::Diverged),
                1,
                0,
                None,
                Some("train/loss is NaN at step 3"),
            ),
            row(3, "3a1b2c3d4e5f", "lr=0.1", None, 0, 0, None, None),
        ];
        insta::assert_snapshot!(render(&rows));
    }
}
