//! TensorBoard event logs that TensorBoard itself reads: scalars, images, text and the
//! HParams dashboard, written durably by our own writer.
//!
//! tensorboard-proto supplies only the message types. tensorboard-rs is not used: its
//! writer loses files to name collisions, does not wait on `flush()` and panics on I/O
//! errors (`../shared/notes/tensorboard.md`); [`writer::EventFileWriter`] replaces it.
//!
//! Layout (decided in `store::tensorboard`): each run logs to `runs/<experiment>/tb/<label>/`,
//! so TensorBoard's run selector shows `lr0.0005`, replicates as `lr0.0005/r1`;
//! [`write_experiment`] puts the experiment-level hparams record in the first run's log
//! directory, not at the tree's root, so that no run `.` appears and `tensorboard --logdir
//! runs/<experiment>/tb` shows every run of the grid in one HParams table.

pub mod hparams;
pub mod record;
pub mod resume;
pub mod summaries;
pub mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::events::{EventSink, RunEvent, SinkError};
use crate::store::RunState;

pub use hparams::{
    Domain, HParamDomain, HParamValue, domains_from_runs, run_hparams, write_experiment,
};
use resume::EpochLog;
use writer::EventFileWriter;

/// Why a TensorBoard log could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum TbError {
    /// An I/O error on a named path.
    #[error("TensorBoard log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A record that could not be encoded or decoded as an `Event`.
    #[error("TensorBoard event encoding: {0}")]
    Proto(#[from] protobuf::ProtobufError),
    /// A complete record whose CRC does not match: the file was damaged.
    #[error("TensorBoard log {path}: corrupt record at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// An image event whose size and pixel buffer disagree.
    #[error("image {tag}: {reason}")]
    Image { tag: String, reason: String },
    /// The resume sidecar is unreadable.
    #[error("TensorBoard resume sidecar {path}: {message}")]
    Sidecar { path: PathBuf, message: String },
}

impl TbError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        TbError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// As a store error about the log directory `dir`, for the orchestrator, which reads and
    /// writes run records through the store's error type.
    pub fn into_store(self, dir: &Path) -> crate::store::StoreError {
        match self {
            TbError::Io { path, source } => crate::store::StoreError::io(path, source),
            other => crate::store::StoreError::Corrupt {
                path: dir.to_path_buf(),
                message: other.to_string(),
            },
        }
    }
}

impl From<TbError> for SinkError {
    fn from(e: TbError) -> Self {
        match e {
            TbError::Io { path, source } => SinkError {
                what: format!("TensorBoard log {}", path.display()),
                source,
            },
            other => SinkError {
                what: "TensorBoard log".into(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, other.to_string()),
            },
        }
    }
}

/// Writes one run's events as a TensorBoard log.
///
/// Every `Scalar`, `Image` and `Text` becomes a record at its step; `Started` cleans up
/// after a killed attempt (see [`resume`]), opens a new event file and writes the hparams
/// session start; `EpochEnd` fsyncs and records where the epoch ended; `Finished` writes
/// the session end: `Done` as success, `Failed` and `Diverged` as failure, and nothing
/// for `Cancelled` or `Paused`: the run is resumed later and TensorBoard would keep a first
/// end record over the resumed attempt's. A run paused at a rung that the schedule then
/// prunes has its session ended by the orchestrator ([`end_pruned_session`]).
#[derive(Debug)]
pub struct TensorBoardSink {
    dir: PathBuf,
    hparams: BTreeMap<String, HParamValue>,
    writer: Option<EventFileWriter>,
    log: EpochLog,
}

impl TensorBoardSink {
    /// A sink writing into `dir` (a run's `RunDir::tensorboard`); `hparams` are the run's
    /// varied hyper-parameters plus the fixed ones worth a column. Nothing is written until
    /// the first event.
    pub fn in_dir(dir: PathBuf, hparams: BTreeMap<String, HParamValue>) -> Self {
        TensorBoardSink {
            dir,
            hparams,
            writer: None,
            log: EpochLog::default(),
        }
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts an attempt: clean up, open a fresh file, mark the restart, log hparams.
    fn start(&mut self, resumed_from: usize, steps_per_epoch: u64) -> Result<(), TbError> {
        self.writer = None;
        self.log = EpochLog::load(&self.dir)?;
        let cutoff = resume::prepare(&self.dir, &mut self.log, resumed_from, steps_per_epoch)?;
        let mut w = open_listed(&self.dir, &mut self.log)?;
        w.write_event(&summaries::session_start(cutoff.saturating_add(1)))?;
        if !self.hparams.is_empty() {
            w.write_event(&hparams::session_start(&self.hparams)?)?;
        }
        w.sync()?;
        self.writer = Some(w);
        Ok(())
    }

    /// The open writer; events before `Started` open a file without cleaning up.
    fn writer(&mut self) -> Result<&mut EventFileWriter, TbError> {
        if self.writer.is_none() {
            self.log = EpochLog::load(&self.dir)?;
            self.writer = Some(open_listed(&self.dir, &mut self.log)?);
        }
        let dir = &self.dir;
        self.writer
            .as_mut()
            .ok_or_else(|| TbError::io(dir, std::io::Error::other("event file not open")))
    }

    fn handle(&mut self, event: &RunEvent) -> Result<(), TbError> {
        match event {
            RunEvent::Started {
                resumed_from,
                steps_per_epoch,
                ..
            } => self.start(*resumed_from, *steps_per_epoch)?,
            RunEvent::Scalar {
                step, tag, value, ..
            } => {
                let ev = summaries::scalar(*step, tag, *value);
                self.writer()?.write_event(&ev)?;
            }
            RunEvent::Image {
                step,
                tag,
                width,
                height,
                channels,
                pixels,
            } => {
                let ev = summaries::image(*step, tag, *width, *height, *channels, pixels)?;
                self.writer()?.write_event(&ev)?;
            }
            RunEvent::Text { step, tag, text } => {
                let ev = summaries::text(*step, tag, text)?;
                self.writer()?.write_event(&ev)?;
            }
            // Per-item results are the run directory's record, not a curve.
            RunEvent::TestItems(_) => {}
            RunEvent::EpochEnd { epoch, step } => {
                let w = self.writer()?;
                w.sync()?;
                let mark = resume::EpochMark {
                    epoch: *epoch,
                    step: *step,
                    file: w.file_name(),
                    offset: w.len(),
                };
                self.log.epochs.retain(|m| m.epoch < *epoch);
                self.log.epochs.push(mark);
                self.log.save(&self.dir)?;
            }
            RunEvent::Finished { state, .. } => {
                let success = match state {
                    RunState::Done => Some(true),
                    RunState::Failed | RunState::Diverged => Some(false),
                    // A paused run goes on; a worker never ends a run pruned (the
                    // orchestrator does, see `end_pruned_session`).
                    RunState::Cancelled
                    | RunState::Queued
                    | RunState::Running
                    | RunState::Paused
                    | RunState::Pruned => None,
                };
                let w = self.writer()?;
                if let Some(success) = success {
                    w.write_event(&hparams::session_end(success)?)?;
                }
                w.sync()?;
            }
        }
        Ok(())
    }
}

/// A new event file in `dir`, listed in the sidecar `log` before anything is written to it
/// (so a resume knows every file an attempt wrote).
fn open_listed(dir: &Path, log: &mut EpochLog) -> Result<EventFileWriter, TbError> {
    let w = EventFileWriter::create(dir)?;
    log.files.push(w.file_name());
    log.save(dir)?;
    Ok(w)
}

/// Text tag of the note a pruned run's log ends with: why the schedule stopped it.
pub const PRUNED_TAG: &str = "schedule/pruned";

/// Ends the TensorBoard session of a run the schedule pruned, in its log directory `dir`:
/// a text record `schedule/pruned` with `reason` at the last step of `epoch` (the rung the
/// run stopped at), then the HParams session end with status failure. Written by the
/// orchestrator when it prunes, since the run's worker exited at the rung before the
/// decision.
///
/// Why failure: TensorBoard's HParams statuses are unknown, success, failure and running,
/// nothing for a stopped trial. Success would put the run's early-epoch metrics among
/// finished runs' final ones; unknown is what a session still training or paused shows (it
/// has no end record), and running would be untrue. Failure is the status of a session that
/// ended before completing, and the text record says it was pruned, not broken.
///
/// Nothing is written when the log has no session (the run never logged) or its session has
/// an end record already, so a replayed decision adds nothing. The new file is listed in
/// the log's sidecar after the rung's epoch: `--promote` resumes from that epoch and drops
/// both records, and the finished run then ends with success.
pub fn end_pruned_session(dir: &Path, epoch: usize, reason: &str) -> Result<(), TbError> {
    let (mut started, mut ended) = (false, false);
    for name in writer::list_event_files(dir)? {
        let path = dir.join(&name);
        let (records, _) = record::read_file(&path)?;
        for r in &records {
            match hparams::first_tag(&record::event(&path, r)?) {
                Some(hparams::SESSION_START_TAG) => started = true,
                Some(hparams::SESSION_END_TAG) => ended = true,
                _ => {}
            }
        }
    }
    if !started || ended {
        return Ok(());
    }
    let mut log = EpochLog::load(dir)?;
    let step = log
        .epochs
        .iter()
        .filter(|m| m.epoch <= epoch)
        .max_by_key(|m| m.epoch)
        .map_or(0, |m| m.step);
    let mut w = open_listed(dir, &mut log)?;
    w.write_event(&summaries::text(step, PRUNED_TAG, reason)?)?;
    w.write_event(&hparams::session_end(false)?)?;
    w.sync()
}

impl EventSink for TensorBoardSink {
    fn emit(&mut self, event: &RunEvent) -> Result<(), SinkError> {
        self.handle(event).map_err(SinkError::from)
    }
}
