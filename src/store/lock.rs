//! The experiment lock `runs/<experiment>/.lock`: one orchestrator per experiment.
//!
//! The lock is a file created with `create_new` holding the holder's pid, host name and start
//! time. A lock whose pid is dead on this host is stale (its orchestrator was killed) and is
//! taken over with a note; a live holder, or one on another host, is reported by pid.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::atomic::sync_dir;
use super::files::StoreError;

/// Contents of the lock file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockInfo {
    pub pid: u32,
    pub host: String,
    /// Seconds since the Unix epoch.
    pub started: u64,
}

/// A held experiment lock; released (file removed) on drop.
#[derive(Debug)]
pub struct ExperimentLock {
    path: PathBuf,
    /// Set when a stale lock was taken over: who held it.
    pub took_over: Option<LockInfo>,
}

/// A lock file still being written by its creator looks empty for a moment; only an
/// unreadable lock older than this is treated as stale.
const TORN_LOCK_AGE: Duration = Duration::from_secs(5);

impl ExperimentLock {
    /// The lock path of an experiment directory.
    pub fn path_in(exp_dir: &Path) -> PathBuf {
        exp_dir.join(".lock")
    }

    /// Takes the lock of `exp_dir` (which must exist), or says who holds it.
    pub fn acquire(exp_dir: &Path) -> Result<ExperimentLock, StoreError> {
        let path = Self::path_in(exp_dir);
        let me = LockInfo {
            pid: std::process::id(),
            host: hostname(),
            started: now_secs(),
        };
        let mut took_over = None;
        // Two tries: the second after removing a stale lock. Another orchestrator racing for
        // the same stale lock loses at create_new and reports us as the holder.
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    let text = serde_json::to_string(&me).unwrap_or_default();
                    f.write_all(text.as_bytes())
                        .and_then(|_| f.sync_all())
                        .and_then(|_| sync_dir(exp_dir))
                        .map_err(|e| StoreError::io(&path, e))?;
                    return Ok(ExperimentLock { path, took_over });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match read_holder(&path)? {
                    Holder::Live(info) => return Err(locked(exp_dir, &path, &info)),
                    Holder::Stale(info) => {
                        fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
                        took_over = info.or(took_over);
                    }
                    Holder::Gone => {}
                },
                Err(e) => return Err(StoreError::io(&path, e)),
            }
        }
        let info = match read_holder(&path)? {
            Holder::Live(info) | Holder::Stale(Some(info)) => info,
            _ => me,
        };
        Err(locked(exp_dir, &path, &info))
    }

    /// Path of the lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ExperimentLock {
    fn drop(&mut self) {
        // Only remove the file if it is still ours.
        if let Ok(text) = fs::read_to_string(&self.path)
            && let Ok(info) = serde_json::from_str::<LockInfo>(&text)
            && info.pid == std::process::id()
            && info.host == hostname()
        {
            let _ = fs::remove_file(&self.path);
        }
    }
}

enum Holder {
    Live(LockInfo),
    /// Dead holder (or an unreadable old lock, `None`).
    Stale(Option<LockInfo>),
    /// The file vanished while we looked.
    Gone,
}

fn read_holder(path: &Path) -> Result<Holder, StoreError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Holder::Gone),
        Err(e) => return Err(StoreError::io(path, e)),
    };
    match serde_json::from_str::<LockInfo>(&text) {
        Ok(info) => {
            if info.host == hostname() && !pid_alive(info.pid) {
                Ok(Holder::Stale(Some(info)))
            } else {
                Ok(Holder::Live(info))
            }
        }
        Err(_) => {
            let old = fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > TORN_LOCK_AGE);
            if old {
                Ok(Holder::Stale(None))
            } else {
                Ok(Holder::Live(LockInfo {
                    pid: 0,
                    host: "unknown".into(),
                    started: now_secs(),
                }))
            }
        }
    }
}

fn locked(exp_dir: &Path, path: &Path, info: &LockInfo) -> StoreError {
    let age = now_secs().saturating_sub(info.started);
    StoreError::Locked {
        experiment: exp_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        pid: info.pid,
        host: info.host.clone(),
        age: format!("{age} s ago"),
        path: path.to_path_buf(),
    }
}

/// Whether a process with this pid exists on this host.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 performs the permission and existence checks only.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// This machine's host name ("localhost" if it cannot be read).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_names_the_holder_and_drop_releases() {
        let dir = tempfile::tempdir().unwrap();
        let lock = ExperimentLock::acquire(dir.path()).unwrap();
        let err = ExperimentLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(lock);
        assert!(!dir.path().join(".lock").exists());
        ExperimentLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_dead_holder_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        // A child that has exited and been reaped: its pid is dead.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = LockInfo {
            pid: dead,
            host: hostname(),
            started: 1,
        };
        fs::write(
            dir.path().join(".lock"),
            serde_json::to_string(&stale).unwrap(),
        )
        .unwrap();
        let lock = ExperimentLock::acquire(dir.path()).unwrap();
        assert_eq!(lock.took_over, Some(stale));
    }

    #[test]
    fn a_holder_on_another_host_is_respected() {
        let dir = tempfile::tempdir().unwrap();
        let other = LockInfo {
            pid: 999_999,
            host: "elsewhere".into(),
            started: now_secs(),
        };
        fs::write(
            dir.path().join(".lock"),
            serde_json::to_string(&other).unwrap(),
        )
        .unwrap();
        let err = ExperimentLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("pid 999999 on host elsewhere"), "{err}");
    }
}
