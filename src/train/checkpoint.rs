//! Epoch checkpoints: model and optimizer tensors (safetensors) plus a small JSON state,
//! written atomically, and a pure keep/delete policy.
//!
//! Layout under `run_dir.checkpoints()`:
//! ```text
//! epoch-0003/model.safetensors      every variable of the model's VarMap
//! epoch-0003/optimizer.safetensors  optimizer moments (`m/<var>`, `v/<var>`)
//! epoch-0003/state.json             epoch, step, best metric, early stopping, ...
//! ```
//! A checkpoint is built in a hidden `.epoch-0003.tmp` directory, every file fsynced, then
//! the directory is renamed into place and the parent fsynced. Pruning first renames a
//! checkpoint to a hidden `.epoch-0001.del` and only then deletes it, so a crash leaves a
//! whole checkpoint or a hidden leftover. Resume takes the newest *complete* checkpoint
//! ([`crate::store::checkpoints`] decides which that is, for the worker and the orchestrator
//! alike) and removes incomplete ones (from an older binary or a damaged disk) and leftovers.
//! The module knows nothing of models: it saves any `VarMap` and any named tensors, so every
//! model family shares it.

use crate::spec::{SelectMode, TestCheckpoint};
use crate::store::StoreError;
use crate::store::checkpoints as layout;
use crate::train::early_stopping::EarlyStopping;
use crate::train::seeding::SCHEME;
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
    /// The checkpoint was drawn with another generator scheme: resuming it would not give
    /// what an uninterrupted run of this build gives.
    #[error(
        "{}: written with random scheme {found:?}, this build draws with {expected:?}; \
         retrain the run from scratch (`orchestrate run SPEC --rerun RUN`)",
        path.display()
    )]
    Scheme {
        path: PathBuf,
        found: String,
        expected: &'static str,
    },
    /// Listing, retiring or cleaning the checkpoint directory failed.
    #[error(transparent)]
    Layout(#[from] StoreError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The JSON part of a checkpoint: where training stands after `epoch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Layout version of this file.
    pub format: u32,
    /// Run identity, checked on resume.
    pub training_id: String,
    /// Last completed epoch (1-based).
    pub epoch: usize,
    /// Global optimizer steps so far.
    pub step: u64,
    /// Steps the optimizer counted (Adam's `t`; equals `step` for one optimizer).
    pub optimizer_steps: u64,
    /// Value of the selection metric at this epoch (None when not finite).
    #[serde(with = "crate::train::exact_f64::option")]
    pub metric: Option<f64>,
    /// Early-stopping state, including the best value so far.
    pub early_stopping: EarlyStopping,
    /// Training stopped early after this epoch.
    pub stopped_early: bool,
    /// The last epoch was run and test evaluated: nothing is left but the final artifacts.
    pub finished: bool,
    /// How the random streams continue: per-epoch generators keyed by (seed, use, epoch),
    /// so the next epoch's generators follow from `seed` and `epoch` alone.
    pub rng: RngState,
}

/// Random-generator positions of a run at an epoch boundary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RngState {
    pub seed: u64,
    /// The scheme that derives generators, e.g. `"chacha8-stream-per-epoch"`.
    pub scheme: String,
}

pub use crate::store::checkpoints::dir_name;

/// Epochs of the complete checkpoints under `dir`, ascending (none if `dir` is absent).
pub fn list(dir: &Path) -> Result<Vec<usize>, CheckpointError> {
    Ok(layout::scan(dir)?.complete)
}

/// The newest complete checkpoint under `dir` with its state, read only (another run's
/// checkpoints may be read this way); refuses one of another training.
pub fn latest(
    dir: &Path,
    training_id: &str,
) -> Result<Option<(PathBuf, CheckpointState)>, CheckpointError> {
    let Some(&epoch) = list(dir)?.last() else {
        return Ok(None);
    };
    read_of_training(&dir.join(dir_name(epoch)), training_id).map(Some)
}

/// The checkpoint at `path` with its state, read only; refuses one of another training.
pub fn read_of_training(
    path: &Path,
    training_id: &str,
) -> Result<(PathBuf, CheckpointState), CheckpointError> {
    let state = read_state(path)?;
    if state.training_id != training_id {
        return Err(CheckpointError::Corrupt {
            path: path.to_path_buf(),
            message: format!(
                "belongs to training {}, this run's training is {training_id}",
                state.training_id
            ),
        });
    }
    Ok((path.to_path_buf(), state))
}

/// Where this run's worker resumes: first removes incomplete checkpoints and the leftovers
/// of interrupted saves and pruning, then takes [`latest`], refusing one drawn with another
/// generator scheme than [`SCHEME`]. The orchestrator announces the same epoch through
/// [`layout::newest_complete`].
pub fn resume_point(
    dir: &Path,
    training_id: &str,
) -> Result<Option<(PathBuf, CheckpointState)>, CheckpointError> {
    layout::clean(dir)?;
    let found = latest(dir, training_id)?;
    if let Some((path, state)) = &found
        && state.rng.scheme != SCHEME
    {
        return Err(CheckpointError::Scheme {
            path: path.clone(),
            found: state.rng.scheme.clone(),
            expected: SCHEME,
        });
    }
    Ok(found)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

fn sync_dir(path: &Path) -> Result<(), CheckpointError> {
    crate::store::atomic::sync_dir(path).map_err(io_err(path))
}

fn save_tensors(path: &Path, tensors: Vec<(String, Tensor)>) -> Result<(), CheckpointError> {
    // Tensors are copied to the host so a CUDA run writes the same file format.
    let host: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, t)| t.to_device(&Device::Cpu).map(|t| (k, t)))
        .collect::<candle_core::Result<_>>()
        .map_err(|e| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    candle_core::safetensors::save(&host, path).map_err(|e| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    // Candle writes without syncing; the rename that publishes the checkpoint must not
    // overtake the data.
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err(path))
}

/// The variables of `map` as named tensors.
pub fn varmap_tensors(map: &VarMap) -> Vec<(String, Tensor)> {
    crate::train::optim::named_vars(map)
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().clone()))
        .collect()
}

/// Writes the checkpoint of `state.epoch` atomically under `dir`.
pub fn save(
    dir: &Path,
    model: Vec<(String, Tensor)>,
    optimizer: Vec<(String, Tensor)>,
    state: &CheckpointState,
) -> Result<PathBuf, CheckpointError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = dir.join(layout::building_name(state.epoch));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    std::fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    save_tensors(&tmp.join("model.safetensors"), model)?;
    save_tensors(&tmp.join("optimizer.safetensors"), optimizer)?;
    let json = serde_json::to_vec_pretty(state).map_err(|e| CheckpointError::Corrupt {
        path: tmp.join("state.json"),
        message: e.to_string(),
    })?;
    write_synced(&tmp.join("state.json"), &json)?;
    sync_dir(&tmp)?;
    Ok(layout::publish(dir, state.epoch)?)
}

/// Reads the JSON state of a checkpoint directory.
pub fn read_state(path: &Path) -> Result<CheckpointState, CheckpointError> {
    let file = path.join("state.json");
    let bytes = std::fs::read(&file).map_err(io_err(&file))?;
    serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt {
        path: file,
        message: e.to_string(),
    })
}

/// Reads the optimizer tensors of a checkpoint onto `device`.
pub fn read_optimizer(
    path: &Path,
    device: &Device,
) -> Result<HashMap<String, Tensor>, CheckpointError> {
    let file = path.join("optimizer.safetensors");
    candle_core::safetensors::load(&file, device).map_err(|e| CheckpointError::Corrupt {
        path: file,
        message: e.to_string(),
    })
}

/// Sets every variable of `map` from the checkpoint's model tensors.
pub fn restore_model(path: &Path, map: &VarMap) -> Result<(), CheckpointError> {
    restore_vars(path, &crate::train::optim::named_vars(map))
}

/// Sets each named variable from the checkpoint's model tensors of the same name.
pub fn restore_vars(
    path: &Path,
    vars: &[(String, candle_core::Var)],
) -> Result<(), CheckpointError> {
    let file = path.join("model.safetensors");
    let corrupt = |message: String| CheckpointError::Corrupt {
        path: file.clone(),
        message,
    };
    let saved =
        candle_core::safetensors::load(&file, &Device::Cpu).map_err(|e| corrupt(e.to_string()))?;
    for (name, var) in vars {
        let t = saved
            .get(name)
            .ok_or_else(|| corrupt(format!("no tensor {name}")))?;
        if t.shape() != var.shape() {
            return Err(corrupt(format!(
                "{name} has shape {:?}, the model needs {:?}",
                t.shape(),
                var.shape()
            )));
        }
        let t = t
            .to_dtype(var.dtype())
            .and_then(|t| t.to_device(var.device()))
            .map_err(|e| corrupt(e.to_string()))?;
        var.set(&t).map_err(|e| corrupt(e.to_string()))?;
    }
    Ok(())
}

/// One checkpoint on disk, as the retention policy sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Entry {
    pub epoch: usize,
    /// Selection metric of that epoch; None (or NaN) never counts as best.
    pub metric: Option<f64>,
}

/// What to do with a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Keep(usize),
    Delete(usize),
}

/// The complete checkpoint `pick` names under `dir` (by [`layout::test_epoch`], the rule the
/// test phase uses), read only, with its state; `None` when the directory holds no complete
/// checkpoint. Refuses one of another training.
pub fn picked(
    dir: &Path,
    training_id: &str,
    pick: TestCheckpoint,
    mode: SelectMode,
) -> Result<Option<(PathBuf, CheckpointState)>, CheckpointError> {
    let pairs: Vec<(usize, Option<f64>)> = entries(dir)?
        .into_iter()
        .map(|e| (e.epoch, e.metric))
        .collect();
    layout::test_epoch(pick, mode, &pairs)
        .map(|epoch| read_of_training(&dir.join(dir_name(epoch)), training_id))
        .transpose()
}

/// Decides which checkpoints stay: the `keep_last` most recent (at least one, which resume
/// needs) and, with `keep_best`, the one with the best metric (the earliest on ties).
/// Returns one action per entry, in ascending epoch order.
pub fn retention(
    entries: &[Entry],
    keep_last: usize,
    keep_best: bool,
    mode: SelectMode,
) -> Vec<Action> {
    let mut sorted: Vec<Entry> = entries.to_vec();
    sorted.sort_by_key(|e| e.epoch);
    let first_recent = sorted.len().saturating_sub(keep_last.max(1));
    let best = if keep_best {
        let pairs: Vec<(usize, Option<f64>)> = sorted.iter().map(|e| (e.epoch, e.metric)).collect();
        layout::best_epoch(mode, &pairs)
    } else {
        None
    };
    sorted
        .iter()
        .enumerate()
        .map(|(i, e)| {
            if i >= first_recent || Some(e.epoch) == best {
                Action::Keep(e.epoch)
            } else {
                Action::Delete(e.epoch)
            }
        })
        .collect()
}

/// The complete checkpoints under `dir` with their selection metric, ascending.
fn entries(dir: &Path) -> Result<Vec<Entry>, CheckpointError> {
    list(dir)?
        .into_iter()
        .map(|epoch| {
            read_state(&dir.join(dir_name(epoch))).map(|s| Entry {
                epoch,
                metric: s.metric,
            })
        })
        .collect()
}

/// The epoch whose weights the test phase of a run configured by `spec` evaluates, among the
/// complete checkpoints under `dir` and `current` (an epoch trained but not saved yet), by
/// [`layout::test_epoch`]; `None` when there is neither. Its checkpoint is
/// `dir.join(dir_name(epoch))` unless it is `current`'s epoch.
pub fn test_checkpoint(
    dir: &Path,
    spec: &crate::spec::Spec,
    current: Option<Entry>,
) -> Result<Option<usize>, CheckpointError> {
    let pairs: Vec<(usize, Option<f64>)> = entries(dir)?
        .into_iter()
        .filter(|e| current.is_none_or(|c| c.epoch != e.epoch))
        .chain(current)
        .map(|e| (e.epoch, e.metric))
        .collect();
    Ok(layout::test_epoch(
        spec.test_checkpoint(),
        spec.select.mode,
        &pairs,
    ))
}

/// Applies the retention policy to the complete checkpoints under `dir` and removes the
/// incomplete ones and leftovers; returns the deleted epochs. Each checkpoint is renamed out
/// of the way before it is deleted, so a worker killed here cannot wedge the run.
pub fn prune(
    dir: &Path,
    keep_last: usize,
    keep_best: bool,
    mode: SelectMode,
) -> Result<Vec<usize>, CheckpointError> {
    layout::clean(dir)?;
    let entries = entries(dir)?;
    let mut deleted = Vec::new();
    for action in retention(&entries, keep_last, keep_best, mode) {
        if let Action::Delete(epoch) = action {
            layout::retire(dir, epoch)?;
            deleted.push(epoch);
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::EarlyStoppingSpec;

    fn entries(metrics: &[f64]) -> Vec<Entry> {
        metrics
            .iter()
            .enumerate()
            .map(|(i, &m)| Entry {
                epoch: i + 1,
                metric: Some(m),
            })
            .collect()
    }

    fn kept(actions: &[Action]) -> Vec<usize> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Keep(e) => Some(*e),
                Action::Delete(_) => None,
            })
            .collect()
    }

    #[test]
    fn keeps_last_and_best() {
        let e = entries(&[0.5, 0.9, 0.7, 0.8]);
        assert_eq!(kept(&retention(&e, 1, true, SelectMode::Max)), vec![2, 4]);
        assert_eq!(kept(&retention(&e, 2, false, SelectMode::Max)), vec![3, 4]);
        assert_eq!(kept(&retention(&e, 1, true, SelectMode::Min)), vec![1, 4]);
        // keep_last 0 still keeps the most recent: resume needs it.
        assert_eq!(kept(&retention(&e, 0, false, SelectMode::Max)), vec![4]);
        assert_eq!(
            retention(&e, 1, false, SelectMode::Max)[0],
            Action::Delete(1)
        );
    }

    #[test]
    fn best_ties_keep_the_earliest_and_nan_is_never_best() {
        let mut e = entries(&[0.9, 0.9, 0.1, 0.2]);
        assert_eq!(kept(&retention(&e, 1, true, SelectMode::Max)), vec![1, 4]);
        e[0].metric = Some(f64::NAN);
        e[1].metric = None;
        assert_eq!(kept(&retention(&e, 1, true, SelectMode::Max)), vec![4]);
        assert!(retention(&[], 1, true, SelectMode::Max).is_empty());
    }

    #[test]
    fn an_infinite_metric_is_never_the_best_checkpoint() {
        // Selection and the run summary never take an infinity as best; main's retention kept
        // the `+inf` accuracy (or `-inf` loss) checkpoint as the best one.
        let e = entries(&[0.5, f64::INFINITY, 0.7, 0.2]);
        assert_eq!(kept(&retention(&e, 1, true, SelectMode::Max)), vec![3, 4]);
        let e = entries(&[0.5, f64::NEG_INFINITY, 0.7, 0.6]);
        assert_eq!(kept(&retention(&e, 1, true, SelectMode::Min)), vec![1, 4]);
    }

    fn state(epoch: usize, metric: f64) -> CheckpointState {
        CheckpointState {
            format: 1,
            training_id: "t".into(),
            epoch,
            step: 10 * epoch as u64,
            optimizer_steps: 10 * epoch as u64,
            metric: Some(metric),
            early_stopping: EarlyStopping::new(&EarlyStoppingSpec::default(), SelectMode::Max),
            stopped_early: false,
            finished: false,
            rng: RngState {
                seed: 1,
                scheme: SCHEME.into(),
            },
        }
    }

    #[test]
    fn picked_loads_the_kept_best_or_the_final_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let ck = dir.path().join("checkpoints");
        assert!(
            picked(&ck, "t", TestCheckpoint::Best, SelectMode::Max)
                .unwrap()
                .is_none()
        );
        for (epoch, metric) in [(1, 0.2), (2, 0.9), (3, 0.9), (4, 0.4)] {
            save(&ck, Vec::new(), Vec::new(), &state(epoch, metric)).unwrap();
        }
        let epoch = |pick, mode| picked(&ck, "t", pick, mode).unwrap().unwrap().1.epoch;
        // The earliest of equal bests, as retention keeps it.
        assert_eq!(epoch(TestCheckpoint::Best, SelectMode::Max), 2);
        assert_eq!(epoch(TestCheckpoint::Best, SelectMode::Min), 1);
        assert_eq!(epoch(TestCheckpoint::Final, SelectMode::Max), 4);
        assert!(picked(&ck, "other", TestCheckpoint::Final, SelectMode::Max).is_err());
    }

    #[test]
    fn save_restore_list_and_prune_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let ck = dir.path().join("checkpoints");
        let map = VarMap::new();
        let w = candle_core::Var::new(&[1f32, 2., 3.], &Device::Cpu).unwrap();
        map.data().lock().unwrap().insert("w".into(), w.clone());
        let opt = vec![(
            "m/w".to_string(),
            Tensor::new(&[0.5f32, 0., 1.], &Device::Cpu).unwrap(),
        )];
        for (epoch, metric) in [(1, 0.2), (2, 0.9), (3, 0.4)] {
            save(
                &ck,
                varmap_tensors(&map),
                opt.clone(),
                &state(epoch, metric),
            )
            .unwrap();
        }
        // A crash mid-save leaves only a hidden temp directory, which listing ignores.
        std::fs::create_dir(ck.join(".epoch-0004.tmp")).unwrap();
        assert_eq!(list(&ck).unwrap(), vec![1, 2, 3]);
        assert_eq!(prune(&ck, 1, true, SelectMode::Max).unwrap(), vec![1]);
        assert_eq!(list(&ck).unwrap(), vec![2, 3]);

        w.set(&Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap())
            .unwrap();
        let last = ck.join(dir_name(3));
        restore_model(&last, &map).unwrap();
        assert_eq!(w.as_tensor().to_vec1::<f32>().unwrap(), vec![1., 2., 3.]);
        assert_eq!(read_state(&last).unwrap(), state(3, 0.4));
        let o = read_optimizer(&last, &Device::Cpu).unwrap();
        assert_eq!(o["m/w"].to_vec1::<f32>().unwrap(), vec![0.5, 0., 1.]);

        // A model with another shape refuses the checkpoint, naming it.
        let other = VarMap::new();
        let v = candle_core::Var::new(&[1f32, 2.], &Device::Cpu).unwrap();
        other.data().lock().unwrap().insert("w".into(), v);
        let e = restore_model(&last, &other).unwrap_err();
        assert!(e.to_string().contains("model.safetensors"), "{e}");

        // A worker killed while deleting epoch 2 left only its model: resume and pruning
        // pass over it and remove it (on main every later prune failed on its state.json).
        save(&ck, varmap_tensors(&map), opt.clone(), &state(4, 0.1)).unwrap();
        std::fs::remove_file(ck.join(dir_name(2)).join("state.json")).unwrap();
        std::fs::remove_file(ck.join(dir_name(2)).join("optimizer.safetensors")).unwrap();
        assert_eq!(list(&ck).unwrap(), vec![3, 4]);
        assert_eq!(prune(&ck, 1, false, SelectMode::Max).unwrap(), vec![3]);
        assert_eq!(
            std::fs::read_dir(&ck).unwrap().count(),
            1,
            "only epoch 4 is left"
        );
        let (path, st) = resume_point(&ck, "t").unwrap().unwrap();
        assert_eq!((path, st.epoch), (ck.join(dir_name(4)), 4));
        assert!(
            resume_point(&ck, "other").is_err(),
            "another training's checkpoint"
        );
        // Seq2seq checkpoints before it took the shared seeding scheme.
        let mut old = state(4, 0.2);
        old.rng.scheme = "chacha8-stream-per-purpose-and-epoch".into();
        save(&ck, varmap_tensors(&map), opt.clone(), &old).unwrap();
        let e = resume_point(&ck, "t").unwrap_err();
        assert!(matches!(e, CheckpointError::Scheme { .. }), "{e}");
        assert!(latest(&ck, "t").is_ok(), "read-only reuse does not draw");
        // Redoing an epoch replaces its checkpoint whole.
        save(&ck, varmap_tensors(&map), opt.clone(), &state(4, 0.3)).unwrap();
        assert_eq!(read_state(&ck.join(dir_name(4))).unwrap().metric, Some(0.3));
        assert_eq!(std::fs::read_dir(&ck).unwrap().count(), 1, "no leftover");
    }
}
