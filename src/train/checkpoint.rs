//! Epoch checkpoints: model variables and optimizer state as safetensors, plus a small JSON
//! written last that marks the checkpoint complete.
// TEMP: replaced by the images branch at merge.

use super::TrainError;
use super::optim::Optimizer;
use crate::models::seeded::Params;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What the JSON marker records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub epoch: usize,
    pub step: u64,
}

fn stem(dir: &Path, epoch: usize) -> PathBuf {
    dir.join(format!("epoch-{epoch:04}"))
}

/// Model weights of the checkpoint of `epoch`.
pub fn model_path(dir: &Path, epoch: usize) -> PathBuf {
    stem(dir, epoch).with_extension("safetensors")
}

fn optim_path(dir: &Path, epoch: usize) -> PathBuf {
    stem(dir, epoch).with_extension("optim.safetensors")
}

fn meta_path(dir: &Path, epoch: usize) -> PathBuf {
    stem(dir, epoch).with_extension("json")
}

/// Writes the checkpoint of `meta.epoch` and deletes all but the `keep_last` newest.
pub fn save(
    dir: &Path,
    meta: &CheckpointMeta,
    params: &Params,
    optim: &Optimizer,
    keep_last: usize,
) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    params.save(&model_path(dir, meta.epoch))?;
    candle_core::safetensors::save(&optim.state()?, optim_path(dir, meta.epoch))?;
    let json = serde_json::to_vec(meta).map_err(|e| TrainError::Checkpoint {
        path: meta_path(dir, meta.epoch),
        message: e.to_string(),
    })?;
    let tmp = meta_path(dir, meta.epoch).with_extension("json.tmp");
    std::fs::write(&tmp, json).map_err(|e| TrainError::io(&tmp, e))?;
    std::fs::rename(&tmp, meta_path(dir, meta.epoch)).map_err(|e| TrainError::io(&tmp, e))?;
    for old in list(dir)?.into_iter().rev().skip(keep_last.max(1)) {
        for p in [
            meta_path(dir, old),
            model_path(dir, old),
            optim_path(dir, old),
        ] {
            let _ = std::fs::remove_file(p);
        }
    }
    Ok(())
}

/// Epochs with a complete checkpoint, ascending.
fn list(dir: &Path) -> Result<Vec<usize>, TrainError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut epochs: Vec<usize> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("epoch-")?
                .strip_suffix(".json")?
                .parse()
                .ok()
        })
        .collect();
    epochs.sort_unstable();
    Ok(epochs)
}

/// The newest complete checkpoint in `dir`, if any.
pub fn latest(dir: &Path) -> Result<Option<CheckpointMeta>, TrainError> {
    let Some(&epoch) = list(dir)?.last() else {
        return Ok(None);
    };
    let path = meta_path(dir, epoch);
    let bytes = std::fs::read(&path).map_err(|e| TrainError::io(&path, e))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| TrainError::Checkpoint {
            path,
            message: e.to_string(),
        })
}

/// Loads the model (and, when given, optimizer) state of `meta.epoch`.
pub fn load(
    dir: &Path,
    meta: &CheckpointMeta,
    params: &Params,
    optim: Option<&mut Optimizer>,
) -> Result<(), TrainError> {
    params.load(&model_path(dir, meta.epoch))?;
    if let Some(o) = optim {
        let device = params
            .named()
            .first()
            .map(|(_, v)| v.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        o.load_state(&candle_core::safetensors::load(
            optim_path(dir, meta.epoch),
            &device,
        )?)?;
    }
    Ok(())
}
