//! Resuming a run's TensorBoard log: which records of earlier attempts stay, and the
//! sidecar `.epochs.json` that says where each epoch ended.
//!
//! At every `EpochEnd` the sink records (epoch, step, file, byte offset) after an fsync, so
//! a resume from epoch k keeps exactly the bytes that were durable when epoch k counted,
//! and drops everything a killed attempt wrote after that. Files the sidecar does not know
//! (a crash between creating a file and recording it, a copied-in log) fall back to a step
//! rule: keep records with step <= epoch k's last step. The run's hparams records are always
//! dropped: TensorBoard keeps the first one per run, and the new attempt writes fresh ones;
//! the experiment's record, which may share the directory, stays.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use tensorboard_proto::event::Event;

use super::TbError;
use super::hparams::{EXPERIMENT_TAG, TAG_PREFIX, first_tag};
use super::record::{self, RawRecord, read_file};
use super::writer::{list_event_files, sync_dir};

/// File name of the sidecar inside the log directory (no `tfevents`, so TensorBoard skips it).
pub const SIDECAR: &str = ".epochs.json";

/// Where one epoch's records ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMark {
    pub epoch: usize,
    /// Global step at the end of the epoch.
    pub step: u64,
    /// Event file (name in the log directory) holding the epoch's last record.
    pub file: String,
    /// Byte offset just past that record.
    pub offset: u64,
}

/// The sidecar: event files this sink created, oldest first, and epoch ends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    pub files: Vec<String>,
    pub epochs: Vec<EpochMark>,
}

impl EpochLog {
    /// Reads the sidecar in `dir`; missing means empty.
    pub fn load(dir: &Path) -> Result<Self, TbError> {
        let path = dir.join(SIDECAR);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| TbError::Sidecar {
                path,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(TbError::io(&path, e)),
        }
    }

    /// Replaces the sidecar atomically (temporary file, fsync, rename, fsync directory).
    pub fn save(&self, dir: &Path) -> Result<(), TbError> {
        let path = dir.join(SIDECAR);
        let tmp = dir.join(".epochs.json.tmp");
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| TbError::Sidecar {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()
        };
        write().map_err(|e| TbError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| TbError::io(&path, e))?;
        sync_dir(dir)
    }
}

/// Where a record sits relative to the kept point of the log.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// Durable before the resumed epoch ended: kept.
    Keep,
    /// After it, and the sidecar knew the exact end: dropped.
    Drop,
    /// Unknown: kept when its step is at most the given step.
    StepAtMost(u64),
}

/// Cleans the log directory `dir` for an attempt that resumes after epoch `resumed_from`
/// (0 = fresh start) and returns the last step whose records are kept.
pub fn prepare(
    dir: &Path,
    log: &mut EpochLog,
    resumed_from: usize,
    steps_per_epoch: u64,
) -> Result<u64, TbError> {
    let mark = log
        .epochs
        .iter()
        .filter(|m| m.epoch <= resumed_from)
        .max_by_key(|m| m.epoch)
        .cloned();
    let (known_epoch, known_step) = mark.as_ref().map_or((0, 0), |m| (m.epoch, m.step));
    // Saturating: a damaged sidecar's step must not crash a resume (found by the fuzz tests).
    let cutoff = known_step
        .saturating_add(((resumed_from - known_epoch) as u64).saturating_mul(steps_per_epoch));
    // Past the mark: exact when the mark is the resumed epoch itself.
    let after = if known_epoch == resumed_from {
        Rule::Drop
    } else {
        Rule::StepAtMost(cutoff)
    };
    let mark_file = mark
        .as_ref()
        .and_then(|m| log.files.iter().position(|f| *f == m.file));

    for name in list_event_files(dir)? {
        let path = dir.join(&name);
        let listed = log.files.iter().position(|f| *f == name);
        let (records, complete) = read_file(&path)?;
        let file_len = std::fs::metadata(&path)
            .map_err(|e| TbError::io(&path, e))?
            .len();
        let mut keep = Vec::with_capacity(records.len());
        for r in &records {
            let ev = record::event(&path, r)?;
            let rule = match (listed, mark_file, &mark) {
                (Some(i), Some(mf), _) if i < mf => Rule::Keep,
                (Some(i), Some(mf), Some(m)) if i == mf && r.end <= m.offset => Rule::Keep,
                (Some(_), _, _) => after,
                (None, _, _) => Rule::StepAtMost(cutoff),
            };
            keep.push(decide(rule, &ev));
        }
        apply(dir, &path, &records, &keep, complete == file_len)?;
    }

    log.epochs.retain(|m| m.epoch <= resumed_from);
    log.files.retain(|f| dir.join(f).exists());
    Ok(cutoff)
}

/// Whether one record stays under `rule`.
fn decide(rule: Rule, ev: &Event) -> bool {
    if ev.has_file_version() {
        return true;
    }
    match first_tag(ev) {
        // The experiment's record, which the orchestrator puts in the first run's log
        // directory: not this run's to drop.
        Some(EXPERIMENT_TAG) => return true,
        Some(t) if t.starts_with(TAG_PREFIX) => return false,
        _ => {}
    }
    match rule {
        Rule::Keep => true,
        Rule::Drop => false,
        // Compared without casting `s`: past i64::MAX it would turn negative and drop all.
        Rule::StepAtMost(s) => u64::try_from(ev.get_step()).map_or(true, |step| step <= s),
    }
}

/// Leaves, truncates, rewrites or removes one file so that exactly the kept records stay.
fn apply(
    dir: &Path,
    path: &Path,
    records: &[RawRecord],
    keep: &[bool],
    no_torn_tail: bool,
) -> Result<(), TbError> {
    if keep.iter().all(|k| *k) && no_torn_tail {
        return Ok(());
    }
    let useful = records.iter().zip(keep).any(|(r, k)| *k && !is_header(r));
    if !useful {
        std::fs::remove_file(path).map_err(|e| TbError::io(path, e))?;
        return sync_dir(dir);
    }
    let kept_prefix = keep.iter().take_while(|k| **k).count();
    if keep[kept_prefix..].iter().all(|k| !*k) {
        // Only a tail goes: cut it off in place.
        let end = records[kept_prefix - 1].end;
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| TbError::io(path, e))?;
        f.set_len(end)
            .and_then(|_| f.sync_all())
            .map_err(|e| TbError::io(path, e))?;
        return Ok(());
    }
    // Records go from the middle (an old hparams record): write the kept ones, verbatim,
    // to a temporary file whose name TensorBoard ignores, then rename it over the original.
    let tmp = dir.join(".rewrite.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        for (r, _) in records.iter().zip(keep).filter(|(_, k)| **k) {
            f.write_all(&super::record::frame(&r.data))?;
        }
        f.sync_all()
    };
    write().map_err(|e| TbError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| TbError::io(path, e))?;
    sync_dir(dir)
}

/// True for the `brain.Event:2` record every file starts with.
fn is_header(r: &RawRecord) -> bool {
    record::event(Path::new(""), r).is_ok_and(|e| e.has_file_version())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use protobuf::Message;

    use super::*;
    use crate::events::{EventSink, RunEvent};
    use crate::sinks::tensorboard::hparams::{SESSION_END_TAG, SESSION_START_TAG};
    use crate::sinks::tensorboard::{HParamValue, TensorBoardSink};
    use crate::store::RunState;

    const SPE: u64 = 10;

    /// Every event of every file in `dir`, in TensorBoard's reading order.
    fn events(dir: &Path) -> Vec<Event> {
        let mut out = Vec::new();
        for name in list_event_files(dir).unwrap() {
            let (recs, _) = read_file(&dir.join(name)).unwrap();
            out.extend(
                recs.iter()
                    .map(|r| Event::parse_from_bytes(&r.data).unwrap()),
            );
        }
        out
    }

    fn steps_of(dir: &Path, tag: &str) -> Vec<i64> {
        events(dir)
            .iter()
            .filter(|e| first_tag(e) == Some(tag))
            .map(|e| e.get_step())
            .collect()
    }

    fn sink(dir: &Path) -> TensorBoardSink {
        let mut hp = BTreeMap::new();
        hp.insert("optimizer.lr".to_string(), HParamValue::Number(1e-3));
        TensorBoardSink::in_dir(dir.to_path_buf(), hp)
    }

    fn started(k: usize) -> RunEvent {
        RunEvent::Started {
            attempt: 1,
            resumed_from: k,
            epochs: 3,
            steps_per_epoch: SPE,
        }
    }

    /// Scalars for the steps of `epoch` in `range`, and its EpochEnd when `finish`.
    fn epoch(
        s: &mut TensorBoardSink,
        epoch: usize,
        range: std::ops::RangeInclusive<u64>,
        finish: bool,
    ) {
        for step in range {
            s.emit(&RunEvent::Scalar {
                epoch,
                step,
                tag: "train/loss".into(),
                value: 1.0 / step as f64,
            })
            .unwrap();
        }
        if finish {
            let step = epoch as u64 * SPE;
            s.emit(&RunEvent::Scalar {
                epoch,
                step,
                tag: "dev/loss".into(),
                value: 0.5,
            })
            .unwrap();
            s.emit(&RunEvent::EpochEnd { epoch, step }).unwrap();
        }
    }

    fn finished(state: RunState) -> RunEvent {
        RunEvent::Finished {
            state,
            epoch: 3,
            message: None,
        }
    }

    fn tb_dir() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tb");
        (tmp, dir)
    }

    #[test]
    fn kill_mid_epoch_then_resume_gives_one_continuous_curve() {
        let (_tmp, dir) = tb_dir();
        let mut a = sink(&dir);
        a.emit(&started(0)).unwrap();
        epoch(&mut a, 1, 1..=10, true);
        epoch(&mut a, 2, 11..=20, true);
        epoch(&mut a, 3, 21..=24, false);
        let killed = a.writer.as_ref().unwrap().path().to_path_buf();
        drop(a);
        // The kill also tore the record being written.
        let mut f = OpenOptions::new().append(true).open(&killed).unwrap();
        f.write_all(&super::super::record::frame(b"torn record")[..9])
            .unwrap();

        let mut b = sink(&dir);
        b.emit(&started(2)).unwrap();
        epoch(&mut b, 3, 21..=30, true);
        b.emit(&finished(RunState::Done)).unwrap();

        assert_eq!(steps_of(&dir, "train/loss"), (1..=30).collect::<Vec<_>>());
        assert_eq!(steps_of(&dir, "dev/loss"), vec![10, 20, 30]);
        assert_eq!(steps_of(&dir, SESSION_START_TAG).len(), 1);
        assert_eq!(steps_of(&dir, SESSION_END_TAG).len(), 1);
        // The killed attempt's file was cut back to epoch 2's end, torn tail included.
        let (_, complete) = read_file(&killed).unwrap();
        assert_eq!(complete, std::fs::metadata(&killed).unwrap().len());
        let log = EpochLog::load(&dir).unwrap();
        assert_eq!(
            log.epochs.iter().map(|m| m.epoch).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(log.files.len(), 2);
    }

    #[test]
    fn epoch_end_not_recorded_falls_back_to_the_step_rule() {
        // Killed after epoch 2's checkpoint but before its EpochEnd reached the sink:
        // epoch 2's records are kept (the checkpoint has them), nothing later.
        let (_tmp, dir) = tb_dir();
        let mut a = sink(&dir);
        a.emit(&started(0)).unwrap();
        epoch(&mut a, 1, 1..=10, true);
        epoch(&mut a, 2, 11..=20, false);
        epoch(&mut a, 3, 21..=22, false);
        drop(a);
        let mut b = sink(&dir);
        b.emit(&started(2)).unwrap();
        epoch(&mut b, 3, 21..=30, true);
        assert_eq!(steps_of(&dir, "train/loss"), (1..=30).collect::<Vec<_>>());
    }

    #[test]
    fn unknown_files_are_filtered_by_step() {
        let (_tmp, dir) = tb_dir();
        let mut a = sink(&dir);
        a.emit(&started(0)).unwrap();
        epoch(&mut a, 1, 1..=10, true);
        epoch(&mut a, 2, 11..=15, false);
        drop(a);
        std::fs::remove_file(dir.join(SIDECAR)).unwrap();
        let mut b = sink(&dir);
        b.emit(&started(1)).unwrap();
        epoch(&mut b, 2, 11..=20, true);
        assert_eq!(steps_of(&dir, "train/loss"), (1..=20).collect::<Vec<_>>());
        assert_eq!(steps_of(&dir, SESSION_START_TAG).len(), 1);
    }

    #[test]
    fn fresh_restart_removes_the_previous_attempts_files() {
        let (_tmp, dir) = tb_dir();
        let mut a = sink(&dir);
        a.emit(&started(0)).unwrap();
        epoch(&mut a, 1, 1..=3, false);
        drop(a);
        let mut b = sink(&dir);
        b.emit(&started(0)).unwrap();
        epoch(&mut b, 1, 1..=10, true);
        assert_eq!(list_event_files(&dir).unwrap().len(), 1);
        assert_eq!(steps_of(&dir, "train/loss"), (1..=10).collect::<Vec<_>>());
    }

    #[test]
    fn a_failed_attempts_end_record_does_not_survive_its_retry() {
        let (_tmp, dir) = tb_dir();
        let mut a = sink(&dir);
        a.emit(&started(0)).unwrap();
        epoch(&mut a, 1, 1..=10, true);
        a.emit(&finished(RunState::Failed)).unwrap();
        let mut b = sink(&dir);
        b.emit(&started(1)).unwrap();
        epoch(&mut b, 2, 11..=20, true);
        b.emit(&finished(RunState::Done)).unwrap();
        let ends: Vec<Event> = events(&dir)
            .into_iter()
            .filter(|e| first_tag(e) == Some(SESSION_END_TAG))
            .collect();
        assert_eq!(ends.len(), 1);
    }

    #[test]
    fn cancelled_leaves_no_end_record() {
        let (_tmp, dir) = tb_dir();
        let mut a = sink(&dir);
        a.emit(&started(0)).unwrap();
        epoch(&mut a, 1, 1..=10, true);
        a.emit(&finished(RunState::Cancelled)).unwrap();
        assert!(steps_of(&dir, SESSION_END_TAG).is_empty());
        assert_eq!(steps_of(&dir, "train/loss").len(), 10);
    }

    #[test]
    fn unwritable_log_directory_is_a_sink_error() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file.txt");
        std::fs::write(&file, b"x").unwrap();
        let mut s = sink(&file.join("tb"));
        let err = s.emit(&started(0)).unwrap_err();
        assert!(err.to_string().contains("file.txt"), "{err}");
        let err = s
            .emit(&RunEvent::Scalar {
                epoch: 1,
                step: 1,
                tag: "x".into(),
                value: 1.0,
            })
            .unwrap_err();
        assert!(err.to_string().contains("file.txt"), "{err}");
    }

    #[test]
    fn bad_image_is_an_error_not_a_panic() {
        let (_tmp, dir) = tb_dir();
        let mut s = sink(&dir);
        s.emit(&started(0)).unwrap();
        let err = s
            .emit(&RunEvent::Image {
                step: 1,
                tag: "conv1/input".into(),
                width: 4,
                height: 4,
                channels: 1,
                pixels: vec![0; 15],
            })
            .unwrap_err();
        assert!(err.to_string().contains("conv1/input"), "{err}");
    }
}
