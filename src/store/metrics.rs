//! `metrics.jsonl`: the line format, the one parser, the live tail and the integrity record.
//!
//! Each line is one [`MetricRecord`] as JSON, ended by `\n`. A value JSON has no number for is
//! written as `null` (what `serde_json` makes of a non-finite `f64`) and read back as NaN; the
//! strings `"NaN"`, `"inf"` and `"-inf"` of the summaries read too.
//!
//! The rule for a bad line, the same for every reader: a last line without its newline is a
//! write cut short by a killed worker and is not a record (it is dropped); any other line that
//! does not parse is corruption. The full read ([`read_records`]) reports it as an error naming
//! the file and the line; the live tail ([`MetricsTail`]), which only feeds a progress display,
//! skips it.
//!
//! A finished run's final `status.json` records the file's [`MetricsIntegrity`] (its record
//! count and SHA-256); [`super::check_finished`] compares the file against it.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{MetricRecord, StoreError};

/// The line `metrics.jsonl` holds for `record`, newline included.
pub fn line(record: &MetricRecord) -> String {
    // A plain struct of numbers and a string always serialises; NaN and the infinities
    // become `null`, which [`parse_line`] reads back as NaN.
    let mut s = serde_json::to_string(record).unwrap_or_default();
    s.push('\n');
    s
}

/// Parses one line of `metrics.jsonl` (without its newline); `None` when it is no record.
pub fn parse_line(line: &str) -> Option<MetricRecord> {
    #[derive(Deserialize)]
    struct Raw {
        epoch: usize,
        #[serde(default)]
        step: u64,
        tag: String,
        value: MetricValue,
    }
    let raw: Raw = serde_json::from_str(line).ok()?;
    Some(MetricRecord {
        epoch: raw.epoch,
        step: raw.step,
        tag: raw.tag,
        value: raw.value.0,
    })
}

/// A metric value as the run records spell it: a JSON number, `null` (NaN), or one of the
/// strings `"NaN"`, `"inf"`, `"-inf"`.
#[derive(Debug, Clone, Copy)]
pub struct MetricValue(pub f64);

impl<'de> Deserialize<'de> for MetricValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = MetricValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number, \"NaN\", \"inf\", \"-inf\" or null")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<MetricValue, E> {
        Ok(MetricValue(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<MetricValue, E> {
        Ok(MetricValue(v as f64))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<MetricValue, E> {
        Ok(MetricValue(v as f64))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<MetricValue, E> {
        match v {
            "NaN" | "nan" => Ok(MetricValue(f64::NAN)),
            "inf" | "+inf" | "Infinity" => Ok(MetricValue(f64::INFINITY)),
            "-inf" | "-Infinity" => Ok(MetricValue(f64::NEG_INFINITY)),
            _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
        }
    }
    fn visit_unit<E: de::Error>(self) -> Result<MetricValue, E> {
        Ok(MetricValue(f64::NAN))
    }
}

/// Parses a whole metrics text by the module's rule; `Err` names the 1-based bad line.
fn parse_text(text: &str) -> Result<Vec<MetricRecord>, String> {
    let complete = text.is_empty() || text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        match parse_line(l) {
            Some(r) => out.push(r),
            None if !complete && i + 1 == lines.len() => {}
            None => return Err(format!("line {}: not a metric record", i + 1)),
        }
    }
    Ok(out)
}

/// Reads every record of the metrics file at `path` by the module's rule; a missing file has
/// no records.
pub fn read_records(path: &Path) -> Result<Vec<MetricRecord>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => parse_bytes(path, &bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

/// The value of `tag` the run recorded at `epoch` (its last such record), read by the
/// module's rule; `None` when it recorded none. What a schedule ranks a rung by.
pub fn value_at(run: &super::RunDir, tag: &str, epoch: usize) -> Result<Option<f64>, StoreError> {
    Ok(read_records(&run.metrics())?
        .iter()
        .rev()
        .find(|r| r.epoch == epoch && r.tag == tag)
        .map(|r| r.value))
}

/// The records of the metrics file `path` whose bytes were already read, by the module's rule.
pub(super) fn parse_bytes(path: &Path, bytes: &[u8]) -> Result<Vec<MetricRecord>, StoreError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| StoreError::io(path, io::Error::new(io::ErrorKind::InvalidData, e)))?;
    parse_text(text).map_err(|message| StoreError::Corrupt {
        path: path.to_path_buf(),
        message,
    })
}

/// What a finished run's `metrics.jsonl` held when its worker wrote the final status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsIntegrity {
    /// Records in the file.
    pub records: usize,
    /// Lower-case hex SHA-256 of the file's bytes.
    pub sha256: String,
}

impl MetricsIntegrity {
    /// The integrity of the metrics file at `path` as it is now (a missing file is empty).
    pub fn of_file(path: &Path) -> Result<Self, StoreError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(StoreError::io(path, e)),
        };
        let records = parse_text(&String::from_utf8_lossy(&bytes))
            .map_err(|message| StoreError::Corrupt {
                path: path.to_path_buf(),
                message,
            })?
            .len();
        Ok(MetricsIntegrity {
            records,
            sha256: sha256_hex(&bytes),
        })
    }
}

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A reader of the records appended to one metrics file since the last poll.
///
/// Reads from a byte offset and keeps a torn last line for the next poll. The worker
/// rewrites the file (atomically, as a new inode) when an attempt resumes; the tail notices
/// the new inode or a shorter file and starts over.
#[derive(Debug)]
pub struct MetricsTail {
    path: PathBuf,
    offset: u64,
    inode: Option<u64>,
    partial: Vec<u8>,
}

impl MetricsTail {
    /// Follows `path` from its beginning (it need not exist yet).
    pub fn new(path: PathBuf) -> Self {
        MetricsTail {
            path,
            offset: 0,
            inode: None,
            partial: Vec::new(),
        }
    }

    /// Records appended since the last call; empty when nothing new or unreadable.
    pub fn poll(&mut self) -> Vec<MetricRecord> {
        let Ok(mut f) = File::open(&self.path) else {
            return Vec::new();
        };
        let Ok(meta) = f.metadata() else {
            return Vec::new();
        };
        if self.inode != Some(meta.ino()) || meta.len() < self.offset {
            self.inode = Some(meta.ino());
            self.offset = 0;
            self.partial.clear();
        }
        if meta.len() == self.offset || f.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        let Ok(n) = f.read_to_end(&mut buf) else {
            return Vec::new();
        };
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf);
        let Some(last_nl) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let rest = self.partial.split_off(last_nl + 1);
        let whole = std::mem::replace(&mut self.partial, rest);
        String::from_utf8_lossy(&whole)
            .lines()
            .filter_map(parse_line)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const GOOD: &str = r#"{"epoch":1,"step":1,"tag":"dev/loss","value":0.5}"#;

    #[test]
    fn a_cut_off_last_line_is_dropped_but_a_bad_middle_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        fs::write(&p, format!("{GOOD}\n{{\"epoch\":2,\"st")).unwrap();
        assert_eq!(read_records(&p).unwrap().len(), 1);
        fs::write(&p, format!("{GOOD}\nnot json\n{GOOD}\n")).unwrap();
        let err = read_records(&p).unwrap_err().to_string();
        assert!(
            err.contains("metrics.jsonl") && err.contains("line 2"),
            "{err}"
        );
        // A whole last line that does not parse is corruption too, not a torn write.
        fs::write(&p, format!("{GOOD}\n{{\"epoch\":2}}\n")).unwrap();
        assert!(read_records(&p).is_err());
    }

    #[test]
    fn lines_round_trip_with_nan_and_the_summary_spellings() {
        let r = MetricRecord {
            epoch: 2,
            step: 7,
            tag: "train/loss".into(),
            value: 0.9516575410962105,
        };
        assert_eq!(parse_line(line(&r).trim_end()), Some(r));
        let nan = MetricRecord {
            value: f64::NAN,
            ..parse_line(GOOD).unwrap()
        };
        assert!(parse_line(line(&nan).trim_end()).unwrap().value.is_nan());
        let inf = r#"{"epoch":1,"step":1,"tag":"dev/loss","value":"-inf"}"#;
        assert_eq!(parse_line(inf).unwrap().value, f64::NEG_INFINITY);
    }

    #[test]
    fn reads_whole_lines_once_and_restarts_on_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.jsonl");
        let mut t = MetricsTail::new(p.clone());
        assert!(t.poll().is_empty());
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(b"{\"epoch\":1,\"step\":1,\"tag\":\"a\",\"value\":1.0}\n{\"epoch\":1,\"st")
            .unwrap();
        assert_eq!(t.poll().len(), 1);
        f.write_all(b"ep\":2,\"tag\":\"b\",\"value\":2.0}\n")
            .unwrap();
        let r = t.poll();
        assert_eq!((r.len(), r[0].tag.as_str(), r[0].step), (1, "b", 2));
        assert!(t.poll().is_empty());
        crate::store::write_atomic(
            &p,
            b"{\"epoch\":1,\"step\":1,\"tag\":\"a\",\"value\":1.0}\n",
        )
        .unwrap();
        assert_eq!(t.poll().len(), 1, "a rewritten file is read from the start");
    }

    #[test]
    fn integrity_counts_records_and_hashes_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        let empty = MetricsIntegrity::of_file(&p).unwrap();
        assert_eq!(empty.records, 0);
        // The SHA-256 of no bytes.
        assert!(
            empty.sha256.starts_with("e3b0c44298fc1c14"),
            "{}",
            empty.sha256
        );
        fs::write(&p, format!("{GOOD}\n{GOOD}\n")).unwrap();
        let two = MetricsIntegrity::of_file(&p).unwrap();
        assert_eq!(two.records, 2);
        assert_eq!(two.sha256.len(), 64);
        assert_ne!(two.sha256, empty.sha256);
    }
}
