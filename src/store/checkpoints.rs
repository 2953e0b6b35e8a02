//! The layout of a run's `checkpoints/` directory, without Candle: which checkpoints are
//! complete, which one a resumed worker starts from, and how one is removed so that no crash
//! can leave a half-deleted checkpoint under a name resume would take.
//!
//! ```text
//! epoch-0003/             a checkpoint: model.safetensors, optimizer.safetensors, state.json
//! .epoch-0004.tmp/        being written (renamed to epoch-0004 once every file is synced)
//! .epoch-0001.del/        being deleted (renamed out of the way first, then removed)
//! ```
//! The worker (`train::checkpoint`) writes and prunes; the orchestrator only calls
//! [`newest_complete`] to say where a worker will resume, so both name the same epoch.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::StoreError;
use crate::spec::{SelectMode, TestCheckpoint};

/// The files a checkpoint directory holds once it is complete.
pub const FILES: [&str; 3] = ["model.safetensors", "optimizer.safetensors", "state.json"];

/// Directory name of the checkpoint of `epoch`.
pub fn dir_name(epoch: usize) -> String {
    format!("epoch-{epoch:04}")
}

/// The epoch of a checkpoint directory name, `None` for any other name.
pub fn parse_dir_name(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("epoch-")?;
    // Only digits: `parse` would also take a sign.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Hidden name a checkpoint is built under before it is published.
pub fn building_name(epoch: usize) -> String {
    format!(".{}.tmp", dir_name(epoch))
}

/// Hidden name a checkpoint is moved to before it is deleted; resume never considers it.
pub fn retired_name(epoch: usize) -> String {
    format!(".{}.del", dir_name(epoch))
}

/// True for the hidden names of checkpoints being built or deleted.
fn is_leftover_name(name: &str) -> bool {
    name.strip_prefix('.')
        .and_then(|n| n.strip_suffix(".tmp").or_else(|| n.strip_suffix(".del")))
        .is_some_and(|n| parse_dir_name(n).is_some())
}

/// True when the checkpoint directory `path` of `epoch` holds every file and its
/// `state.json` names that epoch. Deleting a directory removes its files one by one, so a
/// worker killed mid-delete leaves any subset of them.
pub fn is_complete(path: &Path, epoch: usize) -> bool {
    if !FILES.iter().all(|f| path.join(f).is_file()) {
        return false;
    }
    let Ok(bytes) = fs::read(path.join("state.json")) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("epoch")?.as_u64())
        .is_some_and(|e| e == epoch as u64)
}

/// What a checkpoint directory holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Epochs of the complete checkpoints, ascending.
    pub complete: Vec<usize>,
    /// Epochs of `epoch-NNNN` directories with files missing, ascending.
    pub incomplete: Vec<usize>,
    /// Hidden directories of interrupted saves and deletions.
    pub leftovers: Vec<PathBuf>,
}

/// Lists the checkpoints under `dir` (empty when `dir` is absent). Other names are ignored.
pub fn scan(dir: &Path) -> Result<Listing, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Listing::default()),
        Err(e) => return Err(StoreError::io(dir, e)),
    };
    let mut listing = Listing::default();
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(dir, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let path = entry.path();
        if let Some(epoch) = parse_dir_name(&name) {
            if is_complete(&path, epoch) {
                listing.complete.push(epoch);
            } else {
                listing.incomplete.push(epoch);
            }
        } else if is_leftover_name(&name) && path.is_dir() {
            listing.leftovers.push(path);
        }
    }
    listing.complete.sort_unstable();
    listing.incomplete.sort_unstable();
    listing.leftovers.sort();
    Ok(listing)
}

/// The epoch a resumed worker starts after: its newest complete checkpoint (0 = none).
pub fn newest_complete(dir: &Path) -> Result<usize, StoreError> {
    Ok(scan(dir)?.complete.last().copied().unwrap_or(0))
}

/// Deletes the checkpoint of `epoch`: renames it to its hidden retired name (durably), then
/// removes it, so a crash at any point leaves either the whole checkpoint or a leftover that
/// resume ignores.
pub fn retire(dir: &Path, epoch: usize) -> Result<(), StoreError> {
    let from = dir.join(dir_name(epoch));
    let to = dir.join(retired_name(epoch));
    remove_dir_if_present(&to)?;
    fs::rename(&from, &to).map_err(|e| StoreError::io(&from, e))?;
    super::atomic::sync_dir(dir).map_err(|e| StoreError::io(dir, e))?;
    remove_dir_if_present(&to)
}

/// Publishes the checkpoint built under [`building_name`] as `epoch-NNNN`. An old copy (a
/// resumed run redoing an epoch) is first moved to its retired name and removed only after
/// the new one is in place, so the name never holds a half-deleted checkpoint.
pub fn publish(dir: &Path, epoch: usize) -> Result<PathBuf, StoreError> {
    let built = dir.join(building_name(epoch));
    let target = dir.join(dir_name(epoch));
    let old = dir.join(retired_name(epoch));
    let replacing = target.exists();
    if replacing {
        remove_dir_if_present(&old)?;
        fs::rename(&target, &old).map_err(|e| StoreError::io(&target, e))?;
    }
    fs::rename(&built, &target).map_err(|e| StoreError::io(&target, e))?;
    super::atomic::sync_dir(dir).map_err(|e| StoreError::io(dir, e))?;
    if replacing {
        remove_dir_if_present(&old)?;
    }
    Ok(target)
}

/// Removes incomplete checkpoints and the leftovers of interrupted saves and deletions;
/// returns what it removed. Only the worker that owns the run directory may call it.
pub fn clean(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let listing = scan(dir)?;
    let mut removed = Vec::new();
    for epoch in listing.incomplete {
        retire(dir, epoch)?;
        removed.push(dir.join(dir_name(epoch)));
    }
    for path in listing.leftovers {
        remove_dir_if_present(&path)?;
        removed.push(path);
    }
    Ok(removed)
}

/// Removes `path` if it exists: a directory with its contents, anything else (a stray file
/// or link under a checkpoint's name) by itself.
fn remove_dir_if_present(path: &Path) -> Result<(), StoreError> {
    let removed = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match removed {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StoreError::io(path, e)),
        _ => Ok(()),
    }
}

/// The epoch with the best finite `select.metric` among `(epoch, metric)` pairs in `mode`
/// (the earliest on ties, by [`SelectMode::improves`]); `None` when no value is finite. What
/// `keep_best` keeps and what [`test_epoch`] takes for `best`.
pub fn best_epoch(mode: SelectMode, entries: &[(usize, Option<f64>)]) -> Option<usize> {
    let mut sorted = entries.to_vec();
    sorted.sort_by_key(|&(epoch, _)| epoch);
    let mut best: Option<(usize, f64)> = None;
    for (epoch, metric) in sorted {
        if let Some(m) = metric
            && mode.improves(m, best.map(|(_, b)| b), 0.0)
        {
            best = Some((epoch, m));
        }
    }
    best.map(|(epoch, _)| epoch)
}

/// The one decision of which epoch's weights a run's test phase evaluates, given the
/// `(epoch, select metric)` of its epochs (or of the checkpoints kept, which include the best
/// one under `keep_best`): the last epoch for `final`; for `best` the [`best_epoch`], or the
/// last when no epoch has a finite metric. Training, decode-only variants and summaries call
/// it, so the test numbers, the figures and the `test_epoch` a summary names agree.
pub fn test_epoch(
    choice: TestCheckpoint,
    mode: SelectMode,
    entries: &[(usize, Option<f64>)],
) -> Option<usize> {
    let last = entries.iter().map(|&(epoch, _)| epoch).max()?;
    Some(match choice {
        TestCheckpoint::Final => last,
        TestCheckpoint::Best => best_epoch(mode, entries).unwrap_or(last),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_epoch_is_the_best_or_the_last() {
        use SelectMode::{Max, Min};
        use TestCheckpoint::{Best, Final};
        let e = [
            (3, Some(0.7)),
            (1, Some(0.5)),
            (2, Some(0.9)),
            (4, Some(0.9)),
        ];
        assert_eq!(
            test_epoch(Best, Max, &e),
            Some(2),
            "earliest of the tied best"
        );
        assert_eq!(test_epoch(Final, Max, &e), Some(4));
        assert_eq!(test_epoch(Best, Min, &e), Some(1));
        // No finite metric: nothing is best, the final weights are tested.
        let e = [(1, None), (2, Some(f64::NAN)), (3, Some(f64::INFINITY))];
        assert_eq!(test_epoch(Best, Max, &e), Some(3));
        assert_eq!(test_epoch(Best, Max, &[]), None);
    }

    fn checkpoint(dir: &Path, epoch: usize, files: &[&str]) {
        let d = dir.join(dir_name(epoch));
        fs::create_dir_all(&d).unwrap();
        for f in files {
            let body = if *f == "state.json" {
                format!("{{\"epoch\": {epoch}}}")
            } else {
                String::new()
            };
            fs::write(d.join(f), body).unwrap();
        }
    }

    #[test]
    fn names_round_trip_and_only_exact_names_count() {
        assert_eq!(parse_dir_name(&dir_name(7)), Some(7));
        for other in [
            "epoch-",
            "epoch-+1",
            "epoch-1x",
            "Epoch-0001",
            ".epoch-0001.del",
        ] {
            assert_eq!(parse_dir_name(other), None, "{other}");
        }
        assert!(is_leftover_name(&building_name(3)) && is_leftover_name(&retired_name(3)));
        assert!(!is_leftover_name(".epoch-x.del") && !is_leftover_name("notes.del"));
    }

    #[test]
    fn the_newest_complete_checkpoint_wins_over_newer_incomplete_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert_eq!(newest_complete(&dir.join("absent")).unwrap(), 0);
        // A worker killed while deleting epoch 1 left the model only.
        checkpoint(dir, 1, &["model.safetensors"]);
        checkpoint(dir, 2, &FILES);
        // A newer directory missing its state, and one whose state names another epoch.
        checkpoint(dir, 3, &["model.safetensors", "optimizer.safetensors"]);
        checkpoint(dir, 4, &FILES);
        fs::write(dir.join(dir_name(4)).join("state.json"), "{\"epoch\": 1}").unwrap();
        fs::create_dir(dir.join(retired_name(5))).unwrap();
        fs::create_dir(dir.join(building_name(6))).unwrap();
        fs::write(dir.join("README"), "not a checkpoint").unwrap();
        fs::write(dir.join(dir_name(7)), "a file under a checkpoint's name").unwrap();
        let listing = scan(dir).unwrap();
        assert_eq!(listing.complete, vec![2]);
        assert_eq!(listing.incomplete, vec![1, 3, 4, 7]);
        assert_eq!(listing.leftovers.len(), 2);
        assert_eq!(newest_complete(dir).unwrap(), 2);

        assert_eq!(clean(dir).unwrap().len(), 6);
        let mut left: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec!["README".to_string(), dir_name(2)]);
    }

    #[test]
    fn retire_replaces_an_old_leftover_and_removes_the_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        checkpoint(dir, 1, &FILES);
        fs::create_dir(dir.join(retired_name(1))).unwrap();
        retire(dir, 1).unwrap();
        assert!(fs::read_dir(dir).unwrap().next().is_none());
        assert!(
            retire(dir, 1).is_err(),
            "retiring a missing checkpoint is an error"
        );
    }
}
