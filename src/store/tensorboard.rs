//! Where a run's TensorBoard log lives: `runs/<experiment>/tb/<label>/`, one log tree of
//! readable names per experiment, so that TensorBoard's run selector lists `lr0.0005`, and a
//! configuration's replicates as `lr0.0005/r0`, `lr0.0005/r1`, ...
//!
//! A run's label is chosen once, when it is first planned, and kept in its `plan.json`: a
//! renamed or widened grid never moves an existing run's log, and a resumed attempt appends
//! to the same directory. The label is the name the grid proposes (`RunPlan::log_name`)
//! unless another run of the experiment holds it, or its directory holds files no run
//! claims (a run directory deleted by hand); then the run ID is appended
//! (`lr0.0005-c5d1f0a7c171`). Labels nest (`lr0.0005` and `lr0.0005/r1`), so a run's log is
//! the files directly in its directory, never the directories below it.
//!
//! Runs planned before labels logged to `<run-id>/tb/`; [`adopt_legacy_log`] moves such a
//! log into the tree when the run is next planned.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{PlanRecord, RunDir, StoreError};

/// The experiment's log tree, `runs/<experiment>/tb`: the directory to give
/// `tensorboard --logdir` for run names without a prefix.
pub fn log_tree(exp_dir: &Path) -> PathBuf {
    exp_dir.join("tb")
}

/// Whether `label` is a relative path of plain names (the characters of run names), so that
/// a label read from a `plan.json` can never point outside the log tree.
pub fn is_valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-'))
        })
}

/// The label a newly planned run `id` gets: `proposed` when it is free, else `proposed-id`.
/// `taken` says whether a label is already used (by another run, or by files on disk).
pub fn pick_label(proposed: &str, id: &str, taken: impl Fn(&str) -> bool) -> String {
    if is_valid_label(proposed) && !taken(proposed) {
        return proposed.to_string();
    }
    if is_valid_label(proposed) {
        format!("{proposed}-{id}")
    } else {
        id.to_string()
    }
}

impl RunDir {
    /// The run's TensorBoard log directory, from its plan: `runs/<experiment>/tb/<label>`,
    /// or `<run-id>/tb` for a run planned before labels.
    pub fn tensorboard(&self, plan: &PlanRecord) -> Result<PathBuf, StoreError> {
        if plan.tensorboard.is_empty() {
            return Ok(self.legacy_tensorboard());
        }
        if !is_valid_label(&plan.tensorboard) {
            return Err(StoreError::Corrupt {
                path: self.plan(),
                message: format!(
                    "`tensorboard` = {:?}: not a relative path of plain names",
                    plan.tensorboard
                ),
            });
        }
        let exp = self.experiment_dir().unwrap_or(Path::new("."));
        Ok(log_tree(exp).join(&plan.tensorboard))
    }

    /// Where runs planned before labels kept their TensorBoard log.
    pub fn legacy_tensorboard(&self) -> PathBuf {
        self.root().join("tb")
    }
}

/// The labels the run directories under `exp_dir` hold, each with its run ID. A directory
/// whose plan cannot be read claims nothing (its own `run` reports it).
pub fn labels_in_use(exp_dir: &Path) -> Result<HashMap<String, String>, StoreError> {
    let mut labels = HashMap::new();
    let entries = match fs::read_dir(exp_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(labels),
        Err(e) => return Err(StoreError::io(exp_dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(exp_dir, e))?;
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if let Ok(Some(plan)) = super::read_plan(&RunDir::at(entry.path()))
            && !plan.tensorboard.is_empty()
        {
            labels.insert(plan.tensorboard, plan.id);
        }
    }
    Ok(labels)
}

/// The label for run `id`, planned now with the grid's `proposed` name, given the labels in
/// use (see [`labels_in_use`]); a label whose directory holds files is taken too.
pub fn new_label(
    exp_dir: &Path,
    proposed: &str,
    id: &str,
    in_use: &HashMap<String, String>,
) -> String {
    let tree = log_tree(exp_dir);
    pick_label(proposed, id, |label| {
        in_use.get(label).is_some_and(|owner| owner != id) || holds_files(&tree.join(label))
    })
}

/// Whether `dir` has regular files directly in it.
fn holds_files(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_type().is_ok_and(|t| t.is_file()))
    })
}

/// Moves a log from `<run-id>/tb/` to the run's labelled directory, when the run has one and
/// the labelled directory holds nothing yet. One `rename`: the log is never half moved.
pub fn adopt_legacy_log(run: &RunDir, plan: &PlanRecord) -> Result<(), StoreError> {
    let legacy = run.legacy_tensorboard();
    if plan.tensorboard.is_empty() || !legacy.is_dir() {
        return Ok(());
    }
    let target = run.tensorboard(plan)?;
    if holds_files(&target) {
        return Ok(());
    }
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(|e| StoreError::io(parent, e))?;
    }
    // An empty directory left by a removed log would make the rename fail.
    let _ = fs::remove_dir(&target);
    fs::rename(&legacy, &target).map_err(|e| StoreError::io(&legacy, e))
}

/// Removes the run's TensorBoard log: the files directly in its directory (the directories
/// below it are other runs' logs), then the directory and its parents inside the log tree
/// while they are empty. A legacy `<run-id>/tb/` is removed whole.
pub fn remove_log(run: &RunDir, plan: &PlanRecord) -> Result<(), StoreError> {
    let legacy = run.legacy_tensorboard();
    match fs::remove_dir_all(&legacy) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::io(legacy, e)),
    }
    if plan.tensorboard.is_empty() {
        return Ok(());
    }
    let dir = run.tensorboard(plan)?;
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(&dir, e))?;
        if entry.file_type().is_ok_and(|t| !t.is_dir()) {
            let path = entry.path();
            fs::remove_file(&path).map_err(|e| StoreError::io(path, e))?;
        }
    }
    let tree = log_tree(run.experiment_dir().unwrap_or(Path::new(".")));
    let mut d = dir.as_path();
    // `remove_dir` fails on a directory that is not empty: that is where the walk stops.
    while d.starts_with(&tree) && fs::remove_dir(d).is_ok() {
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
    Ok(())
}

/// Removes a run from its experiment: its TensorBoard log, then its directory.
pub fn remove_run(run: &RunDir) -> Result<(), StoreError> {
    if let Some(plan) = super::read_plan(run)? {
        remove_log(run, &plan)?;
    }
    fs::remove_dir_all(run.root()).map_err(|e| StoreError::io(run.root(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(id: &str, label: &str) -> PlanRecord {
        PlanRecord {
            index: 0,
            id: id.into(),
            training_id: String::new(),
            name: String::new(),
            varied: Default::default(),
            data: Default::default(),
            numerics: 0,
            replicate: None,
            tensorboard: label.into(),
        }
    }

    /// A run directory with its plan written, under `exp`.
    fn run(exp: &Path, id: &str, label: &str) -> (RunDir, PlanRecord) {
        let rd = RunDir::at(exp.join(id));
        fs::create_dir_all(rd.root()).unwrap();
        let p = plan(id, label);
        super::super::write_plan(&rd, &p).unwrap();
        (rd, p)
    }

    #[test]
    fn labels_are_plain_relative_paths() {
        for ok in ["lr0.0005", "lr0.0005/r1", "a-b_c.d/r0"] {
            assert!(is_valid_label(ok), "{ok}");
        }
        for bad in ["", "/abs", "a/../b", "..", "a//b", "a/", "sp ace", "./a"] {
            assert!(!is_valid_label(bad), "{bad}");
        }
    }

    #[test]
    fn a_taken_label_gets_the_run_id() {
        assert_eq!(pick_label("lr0.01", "abc", |_| false), "lr0.01");
        assert_eq!(pick_label("lr0.01", "abc", |l| l == "lr0.01"), "lr0.01-abc");
        assert_eq!(pick_label("../x", "abc", |_| false), "abc");
    }

    #[test]
    fn the_log_lives_in_the_experiment_tree_under_its_label() {
        let tmp = tempfile::tempdir().unwrap();
        let rd = RunDir::new(tmp.path(), "exp", "aaaaaaaaaaaa");
        let dir = rd.tensorboard(&plan("aaaaaaaaaaaa", "lr0.01/r1")).unwrap();
        assert_eq!(dir, tmp.path().join("exp/tb/lr0.01/r1"));
        let old = rd.tensorboard(&plan("aaaaaaaaaaaa", "")).unwrap();
        assert_eq!(old, tmp.path().join("exp/aaaaaaaaaaaa/tb"));
        let err = rd
            .tensorboard(&plan("aaaaaaaaaaaa", "../../etc"))
            .unwrap_err();
        assert!(err.to_string().contains("plan.json"), "{err}");
    }

    #[test]
    fn a_label_held_by_another_run_or_by_orphaned_files_is_not_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let exp = tmp.path();
        run(exp, "aaaaaaaaaaaa", "lr0.01");
        let in_use = labels_in_use(exp).unwrap();
        assert_eq!(in_use["lr0.01"], "aaaaaaaaaaaa");
        assert_eq!(
            new_label(exp, "lr0.01", "bbbbbbbbbbbb", &in_use),
            "lr0.01-bbbbbbbbbbbb"
        );
        assert_eq!(new_label(exp, "lr0.01", "aaaaaaaaaaaa", &in_use), "lr0.01");
        // Logs of a run directory removed by hand: a new run must not append to them.
        fs::create_dir_all(log_tree(exp).join("lr0.1")).unwrap();
        fs::write(log_tree(exp).join("lr0.1/events.out.tfevents.1"), b"x").unwrap();
        assert_eq!(
            new_label(exp, "lr0.1", "cccccccccccc", &in_use),
            "lr0.1-cccccccccccc"
        );
        // An empty directory (a parent of nested labels) is free.
        fs::create_dir_all(log_tree(exp).join("lr1/r0")).unwrap();
        assert_eq!(new_label(exp, "lr1", "cccccccccccc", &in_use), "lr1");
    }

    #[test]
    fn removing_a_log_leaves_the_nested_logs_of_other_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let exp = tmp.path();
        let (outer, op) = run(exp, "aaaaaaaaaaaa", "lr0.01");
        let (inner, ip) = run(exp, "bbbbbbbbbbbb", "lr0.01/r1");
        for (rd, p) in [(&outer, &op), (&inner, &ip)] {
            let d = rd.tensorboard(p).unwrap();
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("events.out.tfevents.1.h.1.0"), b"x").unwrap();
            fs::write(d.join(".epochs.json"), b"{}").unwrap();
        }
        remove_log(&outer, &op).unwrap();
        let outer_dir = outer.tensorboard(&op).unwrap();
        assert!(!outer_dir.join(".epochs.json").exists());
        assert!(
            inner
                .tensorboard(&ip)
                .unwrap()
                .join("events.out.tfevents.1.h.1.0")
                .exists()
        );
        remove_run(&inner).unwrap();
        assert!(!inner.root().exists());
        // Both logs gone: no empty directories are left in the tree.
        assert!(!log_tree(exp).exists());
        assert!(outer.root().exists());
    }

    #[test]
    fn a_legacy_log_moves_under_its_label_once() {
        let tmp = tempfile::tempdir().unwrap();
        let (rd, p) = run(tmp.path(), "aaaaaaaaaaaa", "lr0.01");
        fs::create_dir_all(rd.legacy_tensorboard()).unwrap();
        fs::write(rd.legacy_tensorboard().join("events.out.tfevents.1"), b"x").unwrap();
        adopt_legacy_log(&rd, &p).unwrap();
        let dir = rd.tensorboard(&p).unwrap();
        assert_eq!(fs::read(dir.join("events.out.tfevents.1")).unwrap(), b"x");
        assert!(!rd.legacy_tensorboard().exists());
        adopt_legacy_log(&rd, &p).unwrap();
        assert!(dir.join("events.out.tfevents.1").exists());
    }
}
