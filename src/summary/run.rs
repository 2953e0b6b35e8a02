//! One run's summary, read from its run directory.
//!
//! A run directory holds `config.toml`, `plan.json`, `status.json` and `metrics.jsonl`; this
//! module folds the metric stream into one row per epoch (the last value of each tag in that
//! epoch wins, so the running train loss ends on the epoch's value and a retried epoch's records
//! replace the first try's), puts `test/*` tags in their own section and `time/*` tags in
//! `timings`, so that the `metrics` section of two identical runs is byte-identical.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::num::Num;
use super::{SummaryError, git};
use crate::spec::{SelectMode, SelectSpec, Spec};
use crate::store::{self, MetricRecord, PlanRecord, RunDir, RunState};

/// Version of the Candle crates this binary was built with (checked against Cargo.lock).
pub const CANDLE_VERSION: &str = "0.11.1";

/// Tags under this prefix are timings: kept apart because they never repeat exactly.
pub const TIMING_PREFIX: &str = "time/";
/// Tags under this prefix are logged once, at the end of a run.
pub const TEST_PREFIX: &str = "test/";

/// Identity and lifecycle of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub id: String,
    pub name: String,
    pub index: usize,
    pub training_id: String,
    /// `None` when the run has no `status.json` yet (never started).
    pub state: Option<RunState>,
    pub attempts: u32,
    /// Last epoch on disk according to `status.json`.
    pub epoch: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Why the finished run's records no longer match its final status
    /// ([`crate::store::check_finished`]); such a run never wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub damaged: Option<String>,
    /// Why the run's results no longer match the current data or numerics
    /// ([`crate::store::check_current`]); such a run is never ranked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale: Option<String>,
    /// The data fingerprint in the run's identity (`plan.json`).
    #[serde(default)]
    pub data: crate::grid::identity::DataFingerprint,
    /// Which replicate this run is of its configuration; absent for a spec without repeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicate: Option<Replicate>,
}

pub use crate::grid::Replicate;

/// Values of every tag at one epoch, keyed by tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    pub epoch: usize,
    pub values: BTreeMap<String, Num>,
}

/// Everything that must repeat exactly when a run is repeated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsSection {
    /// The `select` metric and mode the best epoch was chosen by.
    pub select: String,
    pub mode: SelectMode,
    /// Epoch with the best finite value of `select` (earliest on ties); `None` when none.
    pub best_epoch: Option<usize>,
    /// The value of `select` at `best_epoch`: the run's score in the ranking.
    pub best: Option<Num>,
    /// Values of the last epoch, every non-timing, non-test tag.
    #[serde(rename = "final")]
    pub last: BTreeMap<String, Num>,
    /// `test/*` values (the last logged of each).
    pub test: BTreeMap<String, Num>,
    /// The epoch whose weights the `test` values were measured on (`select.test_checkpoint`);
    /// `None` without test values. Absent from summaries written before it existed.
    #[serde(default)]
    pub test_epoch: Option<usize>,
    pub epochs: Vec<EpochRow>,
}

/// Where and with what a run was made; never compared by `diff`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// The device the run trained on (`runtime.json`: `--devices` and `auto` resolved);
    /// `train.device` of the resolved config when no worker has started.
    pub device: String,
    /// CPU threads the run trained with (`runtime.json`: `--threads` or cores / jobs);
    /// `train.threads` of the resolved config (0 = cores / jobs) when no worker has started.
    pub threads: usize,
    pub seed: u64,
    pub orchestrate_version: String,
    pub candle_version: String,
    /// The numerics version the run was planned under (`plan.json`); 0 for runs written
    /// before numerics versions, whose results may predate numerics changes.
    #[serde(default)]
    pub numerics_version: u32,
    /// The spec file and the commit of the repository holding it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<git::SpecSource>,
}

/// Per-run `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub run: RunInfo,
    pub varied: BTreeMap<String, serde_json::Value>,
    /// The resolved config (`config.toml`) as JSON.
    pub config: serde_json::Value,
    pub environment: Environment,
    pub metrics: MetricsSection,
    /// `time/*` tags per epoch.
    pub timings: Vec<EpochRow>,
}

/// What the other summary code needs from a run directory besides its summary.
#[derive(Debug, Clone)]
pub struct LoadedRun {
    pub dir: PathBuf,
    pub spec: Spec,
    pub summary: RunSummary,
}

/// True when `dir` looks like a run directory (the orchestrator wrote its plan or config).
pub fn is_run_dir(dir: &Path) -> bool {
    let rd = RunDir::at(dir);
    rd.plan().is_file() || rd.config().is_file()
}

/// Reads one run directory; `select` decides the best epoch.
///
/// A damaged run ([`store::check_finished`]) is read without its metrics: what is left of
/// them is not what the run produced.
pub fn load_run(
    dir: &Path,
    select: &SelectSpec,
    spec_path: Option<&Path>,
    fingerprints: &mut store::Fingerprints,
) -> Result<LoadedRun, SummaryError> {
    let rd = RunDir::at(dir);
    let spec = read_config(&rd)?;
    let plan = read_plan(&rd)?;
    let status = store::read_status(&rd)?;
    let runtime = store::read_runtime(&rd)?;
    let (records, damaged) = match store::read_checked_records(&rd)? {
        Ok(records) => (records, None),
        Err(damage) => (Vec::new(), Some(damage)),
    };
    let (mut metrics, timings) = fold_metrics(&records, select);
    metrics.test_epoch = test_epoch(&spec, &metrics);
    let config = serde_json::to_value(&spec).map_err(|e| SummaryError::Parse {
        path: rd.config(),
        message: e.to_string(),
    })?;
    let numerics_version = plan.numerics;
    let data = plan.data.clone();
    let stale = store::check_current(
        &plan,
        &fingerprints.data(&spec.data),
        crate::grid::identity::numerics_version(spec.model.kind),
    )
    .err()
    .map(|s| s.to_string());
    let varied = serde_json::to_value(&plan.varied)
        .and_then(serde_json::from_value)
        .map_err(|e| SummaryError::Parse {
            path: rd.plan(),
            message: e.to_string(),
        })?;
    let summary = RunSummary {
        run: RunInfo {
            id: plan.id,
            name: plan.name,
            index: plan.index,
            training_id: plan.training_id,
            state: status.as_ref().map(|s| s.state),
            attempts: status.as_ref().map_or(0, |s| s.attempts),
            epoch: status.as_ref().map_or(0, |s| s.epoch),
            message: status.and_then(|s| s.message),
            damaged: damaged.map(|d| d.short()),
            stale,
            data,
            replicate: plan.replicate,
        },
        varied,
        config,
        environment: Environment {
            device: runtime
                .as_ref()
                .map_or_else(|| spec.train.device.clone(), |r| r.device.to_string()),
            threads: runtime.as_ref().map_or(spec.train.threads, |r| r.threads),
            seed: spec.seed,
            orchestrate_version: runtime.map_or_else(
                || env!("CARGO_PKG_VERSION").into(),
                |r| r.orchestrate_version,
            ),
            candle_version: CANDLE_VERSION.into(),
            numerics_version,
            spec: spec_path.and_then(git::spec_source),
        },
        metrics,
        timings,
    };
    Ok(LoadedRun {
        dir: dir.to_path_buf(),
        spec,
        summary,
    })
}

/// The epoch a run's test values come from: the decision its worker made
/// ([`store::checkpoints::test_epoch`]) over the same per-epoch values of the run's own
/// `select.metric`, which its checkpoints recorded.
fn test_epoch(spec: &Spec, metrics: &MetricsSection) -> Option<usize> {
    if metrics.test.is_empty() {
        return None;
    }
    let pairs: Vec<(usize, Option<f64>)> = metrics
        .epochs
        .iter()
        .map(|row| {
            let value = row.values.get(&spec.select.metric).map(|n| n.get());
            (row.epoch, value.filter(|v| v.is_finite()))
        })
        .collect();
    store::checkpoints::test_epoch(spec.test_checkpoint(), spec.select.mode, &pairs)
}

/// A run's `config.toml`, which a run directory must have.
pub(crate) fn read_config(rd: &RunDir) -> Result<Spec, SummaryError> {
    store::read_config(rd)?.ok_or_else(|| missing(rd.config()))
}

/// A run's `plan.json`, which a run directory must have.
pub(crate) fn read_plan(rd: &RunDir) -> Result<PlanRecord, SummaryError> {
    store::read_plan(rd)?.ok_or_else(|| missing(rd.plan()))
}

fn missing(path: PathBuf) -> SummaryError {
    SummaryError::Read {
        path,
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    }
}

/// Reads a file to a string, naming it on failure.
pub(crate) fn read_text(path: &Path) -> Result<String, SummaryError> {
    std::fs::read_to_string(path).map_err(|source| SummaryError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Folds the metric stream into per-epoch rows, the test section and the timings.
pub fn fold_metrics(
    records: &[MetricRecord],
    select: &SelectSpec,
) -> (MetricsSection, Vec<EpochRow>) {
    let mut epochs: BTreeMap<usize, BTreeMap<String, Num>> = BTreeMap::new();
    let mut timings: BTreeMap<usize, BTreeMap<String, Num>> = BTreeMap::new();
    let mut test = BTreeMap::new();
    for r in records {
        if r.tag.starts_with(TIMING_PREFIX) {
            timings
                .entry(r.epoch)
                .or_default()
                .insert(r.tag.clone(), Num(r.value));
        } else if r.tag.starts_with(TEST_PREFIX) {
            test.insert(r.tag.clone(), Num(r.value));
        } else {
            epochs
                .entry(r.epoch)
                .or_default()
                .insert(r.tag.clone(), Num(r.value));
        }
    }
    let rows: Vec<EpochRow> = epochs
        .into_iter()
        .map(|(epoch, values)| EpochRow { epoch, values })
        .collect();
    let last = rows.last().map(|r| r.values.clone()).unwrap_or_default();
    let best = best_epoch(&rows, &select.metric, select.mode);
    let metrics = MetricsSection {
        select: select.metric.clone(),
        mode: select.mode,
        best_epoch: best.map(|(e, _)| e),
        best: best.map(|(_, v)| Num(v)),
        last,
        test,
        test_epoch: None,
        epochs: rows,
    };
    let timings = timings
        .into_iter()
        .map(|(epoch, values)| EpochRow { epoch, values })
        .collect();
    (metrics, timings)
}

/// The epoch with the best value of `tag` by [`SelectMode::is_better`] (finite values only);
/// the earliest wins a tie.
pub fn best_epoch(rows: &[EpochRow], tag: &str, mode: SelectMode) -> Option<(usize, f64)> {
    let mut best: Option<(usize, f64)> = None;
    for row in rows {
        let Some(v) = row.values.get(tag).map(|n| n.get()) else {
            continue;
        };
        if mode.improves(v, best.map(|(_, b)| b), 0.0) {
            best = Some((row.epoch, v));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(epoch: usize, step: u64, tag: &str, value: f64) -> MetricRecord {
        MetricRecord {
            epoch,
            step,
            tag: tag.into(),
            value,
        }
    }

    #[test]
    fn last_record_of_an_epoch_wins_and_sections_are_apart() {
        let records = vec![
            rec(1, 10, "train/loss", 2.0),
            rec(1, 20, "train/loss", 1.5),
            rec(1, 20, "dev/accuracy", 0.5),
            rec(1, 20, "time/epoch_seconds", 3.2),
            rec(2, 30, "train/loss", 1.0),
            rec(2, 40, "train/loss", 0.9),
            rec(2, 40, "dev/accuracy", 0.7),
            rec(2, 40, "time/epoch_seconds", 3.1),
            rec(2, 40, "test/accuracy", 0.65),
        ];
        let (m, t) = fold_metrics(&records, &SelectSpec::default());
        assert_eq!(m.epochs.len(), 2);
        assert_eq!(m.epochs[0].values["train/loss"], Num(1.5));
        assert_eq!(m.last["train/loss"], Num(0.9));
        assert_eq!(m.last["dev/accuracy"], Num(0.7));
        assert!(!m.last.contains_key("test/accuracy"));
        assert!(!m.last.contains_key("time/epoch_seconds"));
        assert_eq!(m.test["test/accuracy"], Num(0.65));
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].values["time/epoch_seconds"], Num(3.1));
        assert_eq!(m.best_epoch, Some(2));
    }

    #[test]
    fn best_epoch_skips_nan_and_prefers_the_earliest_tie() {
        let records = vec![
            rec(1, 1, "dev/loss", 0.5),
            rec(2, 2, "dev/loss", f64::NAN),
            rec(3, 3, "dev/loss", 0.4),
            rec(4, 4, "dev/loss", 0.4),
        ];
        let select = SelectSpec {
            metric: "dev/loss".into(),
            mode: SelectMode::Min,
            evaluate_test: true,
            ..SelectSpec::default()
        };
        let (m, _) = fold_metrics(&records, &select);
        assert_eq!(m.best_epoch, Some(3));
        assert_eq!(m.best, Some(Num(0.4)));
    }

    #[test]
    fn candle_version_matches_cargo_lock() {
        let lock = include_str!("../../Cargo.lock");
        let pos = lock
            .find("name = \"candle-core\"")
            .expect("candle-core in Cargo.lock");
        let version_line = lock[pos..].lines().nth(1).unwrap();
        assert_eq!(version_line, format!("version = \"{CANDLE_VERSION}\""));
    }
}
