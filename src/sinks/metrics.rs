//! `metrics.jsonl`: the run's append-only stream of [`MetricRecord`]s.
//!
//! Each scalar is appended as one JSON line and written straight to the file (no user-space
//! buffer), so the orchestrator can tail it live; `EpochEnd` and `Finished` fsync it.
//! When an attempt starts from the checkpoint of epoch k, records after that checkpoint are
//! dropped (the file is rewritten atomically), so a resumed run holds no duplicate points.
//! The line format and the parser are the store's ([`crate::store::metrics`]).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;

use crate::events::{EventSink, RunEvent, SinkError};
use crate::store::metrics::{line, read_records};
use crate::store::{MetricRecord, write_atomic};

/// Writes a run's `metrics.jsonl`.
pub struct MetricsFile {
    path: PathBuf,
    file: Option<File>,
    /// Records of the resumed epoch kept from the earlier attempt: (epoch, step, tag).
    /// Their re-emission is skipped (records written after epoch k's checkpoint but before
    /// the earlier attempt died, e.g. final test metrics, carry epoch k too).
    kept_at_resume: HashSet<(usize, u64, String)>,
}

impl MetricsFile {
    /// A sink for `path`; nothing is opened until the attempt starts.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        MetricsFile {
            path: path.into(),
            file: None,
            kept_at_resume: HashSet::new(),
        }
    }

    /// Keeps the records of epochs up to `resumed_from` and opens the file for appending.
    fn start(&mut self, resumed_from: usize) -> io::Result<()> {
        let kept = read_records(&self.path)
            .map_err(io::Error::other)?
            .into_iter()
            .filter(|r| resumed_from > 0 && r.epoch <= resumed_from)
            .collect::<Vec<_>>();
        let mut text = String::new();
        for r in &kept {
            text.push_str(&line(r));
        }
        write_atomic(&self.path, text.as_bytes())?;
        self.kept_at_resume = kept
            .into_iter()
            .filter(|r| r.epoch == resumed_from)
            .map(|r| (r.epoch, r.step, r.tag))
            .collect();
        self.file = Some(OpenOptions::new().append(true).open(&self.path)?);
        Ok(())
    }

    fn append(&mut self, record: &MetricRecord) -> io::Result<()> {
        let key = (record.epoch, record.step, record.tag.clone());
        if self.kept_at_resume.contains(&key) {
            return Ok(());
        }
        let file = match &mut self.file {
            Some(f) => f,
            // A scalar before Started: append to whatever is there.
            None => self.file.insert(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            ),
        };
        // One write per line: a reader tailing the file sees whole lines or a torn last one.
        file.write_all(line(record).as_bytes())
    }

    fn sync(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.sync_data(),
            None => Ok(()),
        }
    }
}

impl EventSink for MetricsFile {
    fn emit(&mut self, event: &RunEvent) -> Result<(), SinkError> {
        let result = match event {
            RunEvent::Started { resumed_from, .. } => self.start(*resumed_from),
            RunEvent::Scalar {
                epoch,
                step,
                tag,
                value,
            } => self.append(&MetricRecord {
                epoch: *epoch,
                step: *step,
                tag: tag.clone(),
                value: *value,
            }),
            RunEvent::EpochEnd { .. } | RunEvent::Finished { .. } => self.sync(),
            RunEvent::Image { .. } | RunEvent::Text { .. } | RunEvent::TestItems(_) => Ok(()),
        };
        result.map_err(|source| SinkError {
            what: format!("writing {}", self.path.display()),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn started(k: usize) -> RunEvent {
        RunEvent::Started {
            attempt: 1,
            resumed_from: k,
            epochs: 3,
            steps_per_epoch: 2,
        }
    }
    fn scalar(epoch: usize, step: u64, tag: &str, value: f64) -> RunEvent {
        RunEvent::Scalar {
            epoch,
            step,
            tag: tag.into(),
            value,
        }
    }
    fn epoch_end(epoch: usize) -> RunEvent {
        RunEvent::EpochEnd {
            epoch,
            step: 2 * epoch as u64,
        }
    }

    /// Emits epochs `from..=to` of a fake run.
    fn emit_epochs(sink: &mut MetricsFile, from: usize, to: usize) {
        for e in from..=to {
            sink.emit(&scalar(e, 2 * e as u64, "train/loss", 1.0 / e as f64))
                .unwrap();
            sink.emit(&scalar(e, 2 * e as u64, "dev/accuracy", e as f64 / 10.0))
                .unwrap();
            sink.emit(&epoch_end(e)).unwrap();
        }
    }

    #[test]
    fn resume_drops_records_after_the_checkpoint_and_adds_no_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");

        let mut whole = MetricsFile::new(dir.path().join("whole.jsonl"));
        whole.emit(&started(0)).unwrap();
        emit_epochs(&mut whole, 1, 3);
        whole.emit(&scalar(3, 6, "test/accuracy", 0.5)).unwrap();

        // First attempt: epochs 1-2 complete, half of epoch 3 (then killed).
        let mut a = MetricsFile::new(&path);
        a.emit(&started(0)).unwrap();
        emit_epochs(&mut a, 1, 2);
        a.emit(&scalar(3, 5, "train/loss", 9.0)).unwrap();
        drop(a);
        // A torn line from the kill.
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"epoch\":3,\"st")
            .unwrap();

        let mut b = MetricsFile::new(&path);
        b.emit(&started(2)).unwrap();
        emit_epochs(&mut b, 3, 3);
        b.emit(&scalar(3, 6, "test/accuracy", 0.5)).unwrap();

        assert_eq!(
            read_records(&path).unwrap(),
            read_records(&dir.path().join("whole.jsonl")).unwrap()
        );
    }

    /// The records a resume keeps are read back and written again: every value must come
    /// back with the same bits, or a resumed run's summary differs from an undisturbed one's
    /// (0.9516575410962105 came back as ...104 before serde_json parsed floats exactly).
    #[test]
    fn values_kept_at_resume_keep_their_bits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let values = [
            0.9516575410962105,
            0.1 + 0.2,
            1.0 / 3.0,
            2.2250738585072014e-308,
            123456.78901234567,
        ];
        let mut a = MetricsFile::new(&path);
        a.emit(&started(0)).unwrap();
        for (i, &v) in values.iter().enumerate() {
            a.emit(&scalar(1, i as u64, "train/running_loss", v))
                .unwrap();
        }
        a.emit(&epoch_end(1)).unwrap();
        let mut b = MetricsFile::new(&path);
        b.emit(&started(1)).unwrap();
        let back: Vec<u64> = read_records(&path)
            .unwrap()
            .iter()
            .map(|r| r.value.to_bits())
            .collect();
        let want: Vec<u64> = values.iter().map(|v| v.to_bits()).collect();
        assert_eq!(back, want);
    }

    #[test]
    fn re_emitted_records_of_the_resumed_epoch_are_not_duplicated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let mut a = MetricsFile::new(&path);
        a.emit(&started(0)).unwrap();
        emit_epochs(&mut a, 1, 1);
        // Killed after the final epoch's test record, before Finished.
        a.emit(&scalar(1, 2, "test/accuracy", 0.7)).unwrap();
        let mut b = MetricsFile::new(&path);
        b.emit(&started(1)).unwrap();
        b.emit(&scalar(1, 2, "test/accuracy", 0.7)).unwrap();
        let recs = read_records(&path).unwrap();
        assert_eq!(recs.len(), 3, "{recs:?}");
    }

    #[test]
    fn a_fresh_attempt_starts_an_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        fs::write(
            &path,
            "{\"epoch\":1,\"step\":1,\"tag\":\"x\",\"value\":1.0}\n",
        )
        .unwrap();
        let mut s = MetricsFile::new(&path);
        s.emit(&started(0)).unwrap();
        assert!(read_records(&path).unwrap().is_empty());
    }

    #[test]
    fn nan_survives_as_nan() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let mut s = MetricsFile::new(&path);
        s.emit(&started(0)).unwrap();
        s.emit(&scalar(1, 1, "train/loss", f64::NAN)).unwrap();
        assert!(read_records(&path).unwrap()[0].value.is_nan());
    }
}
