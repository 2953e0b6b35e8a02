//! Following a run's `metrics.jsonl` while its worker writes it.
//!
//! Reads from a byte offset and keeps a torn last line for the next poll. The worker
//! rewrites the file (atomically, as a new inode) when an attempt resumes; the tail notices
//! the new inode or a shorter file and starts over.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::sinks::metrics::parse_line;
use crate::store::MetricRecord;

/// A reader of the records appended to one metrics file since the last poll.
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
}
