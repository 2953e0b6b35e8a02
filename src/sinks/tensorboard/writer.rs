//! A durable event-file writer: unique names opened with `create_new`, one `write` per
//! record, `sync()` = fsync, errors returned instead of panics.
//!
//! It replaces tensorboard-rs's `EventFileWriter`, whose names collide (`.0` suffix opened
//! with `File::create`), whose `flush()` does not wait and which panics on I/O errors.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use protobuf::Message;
use tensorboard_proto::event::Event;

use super::TbError;
use super::record::frame;

/// Every event file name starts with this; TensorBoard reads files whose name contains
/// `tfevents`.
pub const PREFIX: &str = "events.out.tfevents.";

/// Distinguishes files one process opens in the same second.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Seconds since the Unix epoch, as TensorBoard's `wall_time`.
pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// True when `name` is a file TensorBoard would read as an event file.
pub fn is_event_file(name: &str) -> bool {
    name.contains("tfevents")
}

/// Event files directly in `dir`, sorted by name (TensorBoard's reading order).
pub fn list_event_files(dir: &Path) -> Result<Vec<String>, TbError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TbError::io(dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| TbError::io(dir, e))?;
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if let Some(name) = entry.file_name().to_str()
            && is_file
            && is_event_file(name)
        {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// The `<secs>` field of `events.out.tfevents.<secs>.<host>...`, when there is one.
fn name_secs(name: &str) -> Option<u64> {
    name.strip_prefix(PREFIX)?.split('.').next()?.parse().ok()
}

/// The host name with characters that would break the dotted file name replaced.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let raw = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "localhost".into()
    } else {
        clean
    }
}

/// Makes `dir`'s entries (a new or renamed file) durable.
pub fn sync_dir(dir: &Path) -> Result<(), TbError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| TbError::io(dir, e))
}

/// Opens a new file `<PREFIX><secs>.<host>.<pid>.<counter><suffix>` with `create_new`,
/// moving to the next counter while a name is taken (another writer of this process or a
/// file copied in): a name collision never truncates a file.
fn open_unique(
    dir: &Path,
    secs: u64,
    host: &str,
    pid: u32,
    suffix: &str,
) -> Result<(PathBuf, File), TbError> {
    let mut last = dir.to_path_buf();
    for _ in 0..1000 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{PREFIX}{secs}.{host}.{pid}.{n}{suffix}"));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => last = path,
            Err(e) => return Err(TbError::io(&path, e)),
        }
    }
    Err(TbError::io(
        &last,
        std::io::Error::new(
            ErrorKind::AlreadyExists,
            "no free event file name after 1000 tries",
        ),
    ))
}

/// Appends framed events to one event file it created.
#[derive(Debug)]
pub struct EventFileWriter {
    path: PathBuf,
    file: File,
    len: u64,
}

impl EventFileWriter {
    /// Creates a new event file in `dir` (made if missing) and writes the
    /// `brain.Event:2` header record.
    ///
    /// The name is `events.out.tfevents.<secs>.<host>.<pid>.<counter>`; `<secs>` is moved
    /// past every existing file's so this file sorts last, because TensorBoard reads a
    /// directory's files in name order and a resumed attempt must come after the killed
    /// one. The file is opened with `create_new`: an existing file is never overwritten.
    pub fn create(dir: &Path) -> Result<Self, TbError> {
        Self::create_with_suffix(dir, "")
    }

    /// Like [`create`](Self::create), the file name ending in `suffix`, so that a kind of
    /// file can be found again by its name alone.
    pub fn create_with_suffix(dir: &Path, suffix: &str) -> Result<Self, TbError> {
        std::fs::create_dir_all(dir).map_err(|e| TbError::io(dir, e))?;
        let newest = list_event_files(dir)?
            .iter()
            .filter_map(|n| name_secs(n))
            .max();
        let now = now_secs() as u64;
        let secs = match newest {
            Some(n) if n >= now => n + 1,
            _ => now,
        };
        let (path, file) = open_unique(dir, secs, &host_name(), std::process::id(), suffix)?;
        let mut w = EventFileWriter { path, file, len: 0 };
        let mut header = Event::new();
        header.set_wall_time(now_secs());
        header.set_file_version("brain.Event:2".into());
        w.write_event(&header)?;
        sync_dir(dir)?;
        Ok(w)
    }

    /// Path of the file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file name alone.
    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Bytes written so far; every record before this offset is complete.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True before the header is written (never, once `create` returned).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends one event as a single `write`, so a killed process leaves at most one
    /// half-written record, which readers skip.
    pub fn write_event(&mut self, event: &Event) -> Result<(), TbError> {
        let data = event.write_to_bytes()?;
        let rec = frame(&data);
        self.file
            .write_all(&rec)
            .map_err(|e| TbError::io(&self.path, e))?;
        self.len += rec.len() as u64;
        Ok(())
    }

    /// Makes every record written so far durable (fsync).
    pub fn sync(&mut self) -> Result<(), TbError> {
        self.file
            .flush()
            .and_then(|_| self.file.sync_data())
            .map_err(|e| TbError::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::tensorboard::record::read_file;

    #[test]
    fn two_writers_in_one_directory_get_distinct_files() {
        let tmp = tempfile::tempdir().unwrap();
        let mut a = EventFileWriter::create(tmp.path()).unwrap();
        let mut b = EventFileWriter::create(tmp.path()).unwrap();
        assert_ne!(a.path(), b.path());
        a.sync().unwrap();
        b.sync().unwrap();
        let names = list_event_files(tmp.path()).unwrap();
        assert_eq!(names.len(), 2);
        // The second file sorts after the first, whatever the clock says.
        assert_eq!(names[1], b.file_name());
        for name in names {
            let (recs, end) = read_file(&tmp.path().join(&name)).unwrap();
            assert_eq!(recs.len(), 1, "{name}: only the header");
            let ev: Event = protobuf::Message::parse_from_bytes(&recs[0].data).unwrap();
            assert_eq!(ev.get_file_version(), "brain.Event:2");
            assert_eq!(
                end,
                std::fs::metadata(tmp.path().join(&name)).unwrap().len()
            );
        }
    }

    #[test]
    fn a_taken_name_is_skipped_never_truncated() {
        let tmp = tempfile::tempdir().unwrap();
        let next = COUNTER.load(Ordering::Relaxed);
        let mut planted = Vec::new();
        for n in next..next + 20 {
            let p = tmp.path().join(format!("{PREFIX}1700000000.h.7.{n}"));
            std::fs::write(&p, b"precious").unwrap();
            planted.push(p);
        }
        let (path, _file) = open_unique(tmp.path(), 1_700_000_000, "h", 7, "").unwrap();
        assert!(!planted.contains(&path), "{path:?}");
        for p in &planted {
            assert_eq!(std::fs::read(p).unwrap(), b"precious");
        }
    }

    #[test]
    fn a_new_file_sorts_after_existing_ones_even_from_the_future() {
        let tmp = tempfile::tempdir().unwrap();
        let future = now_secs() as u64 + 1000;
        let old = tmp.path().join(format!("{PREFIX}{future}.zzz.99999.9"));
        std::fs::write(&old, b"precious").unwrap();
        let w = EventFileWriter::create(tmp.path()).unwrap();
        let names = list_event_files(tmp.path()).unwrap();
        assert_eq!(names.len(), 2);
        assert_eq!(names.last().unwrap(), &w.file_name());
        assert_eq!(std::fs::read(&old).unwrap(), b"precious");
    }

    #[test]
    fn unwritable_directory_is_an_error_not_a_panic() {
        let tmp = tempfile::tempdir().unwrap();
        // Tests run as root, for whom permission bits do not stop writes: a path below a
        // regular file cannot be created by anyone.
        let file = tmp.path().join("file.txt");
        std::fs::write(&file, b"x").unwrap();
        let err = EventFileWriter::create(&file.join("tb")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("file.txt"), "{msg}");
    }
}
