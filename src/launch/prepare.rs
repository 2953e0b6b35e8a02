//! Writing an experiment's run directories before any worker starts.
//!
//! Each run directory gets its resolved `config.toml`, `plan.json` and a `queued` status,
//! unless it already has them: a finished run's files are never overwritten, and a run
//! directory whose config differs from the plan's is an error (its hash says it should not).
//! `--rerun` resets one run (status, checkpoints, metrics, test items, TensorBoard, artifacts)
//! and no other.
//! A run's TensorBoard label is chosen here, the first time the run is planned, and kept
//! ([`store::tensorboard`]).
//! A finished run whose records are damaged ([`store::check_finished`]) stays finished: it is
//! neither retrained nor re-summarised until `--rerun` names it.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;

use super::LaunchError;
use crate::grid::RunPlan;
use crate::store::{self, Damage, PlanRecord, RunDir, RunState, RunStatus, StoreError};

/// A run of the plan, ready to schedule or already finished.
#[derive(Debug, Clone)]
pub struct PreparedRun {
    pub plan: PlanRecord,
    pub dir: RunDir,
    pub epochs: usize,
    /// The metric the progress display shows (`select.metric`).
    pub metric: String,
    /// State on disk before this launch.
    pub state: RunState,
}

impl PreparedRun {
    /// Whether a plain `run` starts this run (it is not done or diverged).
    pub fn needs_running(&self) -> bool {
        !self.state.is_final()
    }

    /// What is wrong with a finished run's records, if anything.
    pub fn damage(&self) -> Option<Damage> {
        store::check_finished(&self.dir).err()
    }
}

/// Creates `runs_root/<experiment>` with a clear error when the runs directory is unusable
/// (a regular file in the way, read-only, full).
pub fn create_experiment_dir(runs_root: &Path, experiment: &str) -> Result<RunDir, StoreError> {
    let dir = runs_root.join(experiment);
    fs::create_dir_all(&dir).map_err(|source| StoreError::RunsDir {
        path: runs_root.to_path_buf(),
        source,
    })?;
    // Probe that it is writable now, before the lock and any run files.
    let probe = dir.join(format!(".probe.{}", std::process::id()));
    fs::write(&probe, b"")
        .and_then(|_| fs::remove_file(&probe))
        .map_err(|source| StoreError::RunsDir {
            path: dir.clone(),
            source,
        })?;
    Ok(RunDir::at(dir))
}

/// Writes (or checks) every run directory of `plans` under `exp_dir`, resetting the runs
/// named by `reruns` (run id, id prefix or name).
pub fn prepare_runs(
    exp_dir: &Path,
    plans: &[RunPlan],
    reruns: &[String],
) -> Result<Vec<PreparedRun>, LaunchError> {
    for r in reruns {
        if !plans.iter().any(|p| matches_run(p, r)) {
            return Err(LaunchError::UnknownRun {
                name: r.clone(),
                known: plans
                    .iter()
                    .map(|p| format!("{} ({})", p.id, p.name))
                    .collect(),
            });
        }
    }
    let mut labels = store::tensorboard::labels_in_use(exp_dir)?;
    plans
        .iter()
        .map(|p| {
            let rerun = reruns.iter().any(|r| matches_run(p, r));
            prepare_one(exp_dir, p, rerun, &mut labels)
        })
        .collect()
}

fn matches_run(p: &RunPlan, key: &str) -> bool {
    crate::store::run_key_matches(&p.id, &p.name, key)
}

/// `labels`: the TensorBoard labels in use in the experiment, by run id; the run's is added.
fn prepare_one(
    exp_dir: &Path,
    p: &RunPlan,
    rerun: bool,
    labels: &mut HashMap<String, String>,
) -> Result<PreparedRun, LaunchError> {
    let dir = RunDir::at(exp_dir.join(&p.id));
    fs::create_dir_all(dir.root()).map_err(|e| StoreError::io(dir.root(), e))?;
    let existing = store::read_plan(&dir)?;
    // Fixed once: a grid that renames this run later must not move its log.
    let label = match existing.as_ref().filter(|e| !e.tensorboard.is_empty()) {
        Some(e) => e.tensorboard.clone(),
        None => store::tensorboard::new_label(exp_dir, &p.log_name, &p.id, labels),
    };
    labels.insert(label.clone(), p.id.clone());
    let record = PlanRecord {
        index: p.index,
        id: p.id.clone(),
        training_id: p.training_id.clone(),
        name: p.name.clone(),
        varied: p.varied.clone(),
        data: p.data.clone(),
        numerics: crate::grid::identity::numerics_version(p.config.model.kind),
        replicate: p.replicate.clone(),
        tensorboard: label,
    };
    match store::read_config(&dir)? {
        Some(existing) => {
            // The one identity rule decides: the config on disk, with the plan's data
            // fingerprint, must hash to the plan's id.
            let same =
                crate::grid::identity::run_ids(&existing, &p.data).is_ok_and(|(id, _)| id == p.id);
            if !same {
                return Err(LaunchError::ConfigMismatch {
                    path: dir.config(),
                    id: p.id.clone(),
                });
            }
            // The data moved (same files, same id): the worker reads it where it is now.
            if existing.data.dir != p.config.data.dir {
                store::write_config(&dir, &p.config)?;
            }
        }
        None => store::write_config(&dir, &p.config)?,
    }
    if existing.as_ref() != Some(&record) {
        store::write_plan(&dir, &record)?;
    }
    store::tensorboard::adopt_legacy_log(&dir, &record)?;
    if rerun {
        reset(&dir, &record)?;
    }
    let state = match store::read_status(&dir)? {
        Some(s) => s.state,
        None => {
            store::write_status(
                &dir,
                &RunStatus {
                    state: RunState::Queued,
                    attempts: 0,
                    epoch: 0,
                    message: None,
                    pid: None,
                    pruned: None,
                },
            )?;
            RunState::Queued
        }
    };
    Ok(PreparedRun {
        plan: record,
        dir,
        epochs: p.config.train.epochs,
        metric: p.config.select.metric.clone(),
        state,
    })
}

/// The run ids `--promote` names (run id, id prefix or name, or a configuration's ID), each
/// a pruned run of the plan under `exp_dir`; checked before anything is written. With
/// replicates a schedule prunes a configuration whole, so naming one replicate (or the
/// configuration) promotes each of its pruned replicates.
pub fn check_promotions(
    exp_dir: &Path,
    plans: &[RunPlan],
    keys: &[String],
) -> Result<Vec<String>, LaunchError> {
    let state = |p: &RunPlan| -> Result<Option<RunState>, StoreError> {
        Ok(store::read_status(&RunDir::at(exp_dir.join(&p.id)))?.map(|s| s.state))
    };
    let mut ids = Vec::new();
    for key in keys {
        let named = plans.iter().find(|p| matches_run(p, key)).or_else(|| {
            plans.iter().find(|p| {
                p.replicate
                    .as_ref()
                    .is_some_and(|r| r.configuration == *key)
            })
        });
        let Some(p) = named else {
            return Err(LaunchError::UnknownPromotion {
                name: key.clone(),
                known: plans
                    .iter()
                    .map(|p| format!("{} ({})", p.id, p.name))
                    .collect(),
            });
        };
        let own = state(p)?;
        if own != Some(RunState::Pruned) {
            return Err(LaunchError::NotPruned {
                name: key.clone(),
                id: p.id.clone(),
                state: own.map_or_else(|| "not started".into(), |s| s.to_string()),
            });
        }
        let configuration = p.replicate.as_ref().map(|r| &r.configuration);
        for q in plans {
            let same = q.id == p.id
                || configuration.is_some()
                    && q.replicate.as_ref().map(|r| &r.configuration) == configuration;
            if same && !ids.contains(&q.id) && state(q)? == Some(RunState::Pruned) {
                ids.push(q.id.clone());
            }
        }
    }
    Ok(ids)
}

/// Turns the pruned runs `ids` back into resumable ones (`paused` at their last checkpoint,
/// the prune note dropped); returns their indices into `runs`.
pub fn promote(runs: &mut [PreparedRun], ids: &[String]) -> Result<Vec<usize>, StoreError> {
    let mut out = Vec::new();
    for (i, r) in runs.iter_mut().enumerate() {
        if !ids.contains(&r.plan.id) {
            continue;
        }
        if let Some(s) = store::read_status(&r.dir)?
            && s.state == RunState::Pruned
        {
            store::write_status(
                &r.dir,
                &RunStatus {
                    state: RunState::Paused,
                    message: Some("promoted: continues to its last epoch".into()),
                    pruned: None,
                    ..s
                },
            )?;
        }
        r.state = RunState::Paused;
        out.push(i);
    }
    Ok(out)
}

/// Forgets a run's results so it trains from scratch; its config and plan stay.
fn reset(dir: &RunDir, plan: &PlanRecord) -> Result<(), StoreError> {
    for f in [dir.status(), dir.metrics(), dir.summary(), dir.test_items()] {
        match fs::remove_file(&f) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(f, e)),
        }
    }
    store::tensorboard::remove_log(dir, plan)?;
    for d in [dir.checkpoints(), dir.artifacts()] {
        match fs::remove_dir_all(&d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(d, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Spec;
    use std::collections::BTreeMap;

    /// A run of the default config at `lr`, with the ids the grid would give it.
    fn plan(index: usize, lr: f64) -> RunPlan {
        let mut config = Spec::default();
        config.optimizer.lr = lr;
        let (id, training_id) =
            crate::grid::identity::run_ids(&config, &Default::default()).unwrap();
        RunPlan {
            index,
            id,
            training_id,
            name: format!("lr={lr}"),
            log_name: format!("lr{lr}"),
            varied: BTreeMap::new(),
            config,
            data: Default::default(),
            replicate: None,
        }
    }

    #[test]
    fn writes_queued_runs_and_keeps_finished_ones() {
        let exp = tempfile::tempdir().unwrap();
        let plans = vec![plan(0, 0.1), plan(1, 0.2)];
        let runs = prepare_runs(exp.path(), &plans, &[]).unwrap();
        assert!(runs.iter().all(|r| r.state == RunState::Queued));
        let done = RunStatus {
            state: RunState::Done,
            attempts: 1,
            epoch: 3,
            message: None,
            pid: None,
            pruned: None,
        };
        store::write_status(&runs[0].dir, &done).unwrap();
        fs::write(runs[0].dir.metrics(), "x\n").unwrap();
        let again = prepare_runs(exp.path(), &plans, &[]).unwrap();
        assert!(!again[0].needs_running() && again[1].needs_running());
        assert_eq!(store::read_status(&runs[0].dir).unwrap(), Some(done));
        // A launch setting is not part of a run: a different --jobs is the same run.
        let mut other = plans.clone();
        other[0].config.launch.jobs = 7;
        prepare_runs(exp.path(), &other, &[]).unwrap();
    }

    #[test]
    fn a_different_config_in_the_run_dir_is_an_error() {
        let exp = tempfile::tempdir().unwrap();
        let p = plan(0, 0.1);
        let runs = prepare_runs(exp.path(), std::slice::from_ref(&p), &[]).unwrap();
        // Someone edits the run's config on disk: it no longer hashes to the run's id.
        store::write_config(&runs[0].dir, &plan(0, 0.3).config).unwrap();
        let err = prepare_runs(exp.path(), std::slice::from_ref(&p), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains(&p.id) && err.contains("config.toml"), "{err}");
    }

    #[test]
    fn rerun_resets_only_the_named_run() {
        let exp = tempfile::tempdir().unwrap();
        let plans = vec![plan(0, 0.1), plan(1, 0.2)];
        let runs = prepare_runs(exp.path(), &plans, &[]).unwrap();
        for r in &runs {
            fs::create_dir_all(r.dir.checkpoints()).unwrap();
            fs::write(r.dir.metrics(), "x\n").unwrap();
            fs::write(r.dir.test_items(), "{}").unwrap();
        }
        let again = prepare_runs(exp.path(), &plans, &["lr=0.2".into()]).unwrap();
        assert!(runs[0].dir.metrics().exists() && runs[0].dir.checkpoints().exists());
        assert!(runs[0].dir.test_items().exists());
        assert!(!runs[1].dir.metrics().exists() && !runs[1].dir.checkpoints().exists());
        // Items of the forgotten test would pair the next training's test with the old one.
        assert!(!runs[1].dir.test_items().exists());
        assert_eq!(again[1].state, RunState::Queued);
        let err = prepare_runs(exp.path(), &plans, &["nope".into()]).unwrap_err();
        assert!(err.to_string().contains("nope"));
    }

    #[test]
    fn a_tensorboard_label_is_chosen_once_and_a_taken_one_gets_the_id() {
        let exp = tempfile::tempdir().unwrap();
        let plans = vec![plan(0, 0.1), plan(1, 0.2)];
        let runs = prepare_runs(exp.path(), &plans, &[]).unwrap();
        let labels: Vec<&str> = runs.iter().map(|r| r.plan.tensorboard.as_str()).collect();
        assert_eq!(labels, ["lr0.1", "lr0.2"]);
        // A changed grid renames run 0 and proposes its old label for a new run.
        let mut renamed = plans.clone();
        renamed[0].log_name = "other".into();
        let mut newcomer = plan(2, 0.3);
        newcomer.log_name = "lr0.1".into();
        renamed.push(newcomer.clone());
        let again = prepare_runs(exp.path(), &renamed, &[]).unwrap();
        assert_eq!(again[0].plan.tensorboard, "lr0.1");
        assert_eq!(again[2].plan.tensorboard, format!("lr0.1-{}", newcomer.id));
        let on_disk = store::read_plan(&again[0].dir).unwrap().unwrap();
        assert_eq!(on_disk.tensorboard, "lr0.1");
    }

    #[test]
    fn rerun_removes_the_runs_log_and_a_legacy_log_moves_into_the_tree() {
        let exp = tempfile::tempdir().unwrap();
        let plans = vec![plan(0, 0.1), plan(1, 0.2)];
        let runs = prepare_runs(exp.path(), &plans, &[]).unwrap();
        // Run 0 as an earlier version left it: no label, its log inside the run directory.
        let mut legacy = runs[0].plan.clone();
        legacy.tensorboard.clear();
        store::write_plan(&runs[0].dir, &legacy).unwrap();
        let old = runs[0].dir.legacy_tensorboard();
        fs::create_dir_all(&old).unwrap();
        fs::write(old.join("events.out.tfevents.1.h.1.0"), b"log").unwrap();
        let logs: Vec<_> = runs
            .iter()
            .map(|r| r.dir.tensorboard(&r.plan).unwrap())
            .collect();
        fs::create_dir_all(&logs[1]).unwrap();
        fs::write(logs[1].join("events.out.tfevents.2.h.1.0"), b"log").unwrap();
        let again = prepare_runs(exp.path(), &plans, &[]).unwrap();
        assert_eq!(again[0].plan.tensorboard, "lr0.1");
        assert!(!old.exists());
        assert_eq!(
            fs::read(logs[0].join("events.out.tfevents.1.h.1.0")).unwrap(),
            b"log"
        );
        prepare_runs(exp.path(), &plans, &["lr=0.2".into()]).unwrap();
        assert!(!logs[1].exists());
        assert!(logs[0].join("events.out.tfevents.1.h.1.0").exists());
    }
}
