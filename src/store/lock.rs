//! The experiment lock `runs/<experiment>/.lock`: one orchestrator per experiment.
//!
//! The lock is a plain file holding the holder's pid, host name and start time, created
//! whole by hard-linking a private file to the lock path (which fails if the lock exists). A
//! lock whose pid is dead on this host is stale (its orchestrator was killed) and is taken
//! over with a note, under a `flock` of the experiment directory so that two orchestrators
//! finding the same stale lock end with one holder; a live holder, or one on another host, is
//! reported by pid. Anything but a regular file at the lock path (a symbolic link above all)
//! is refused, never followed.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
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
        // A few tries: after a stale lock was removed, or after the file vanished while we
        // looked (its holder released it).
        for _ in 0..4 {
            refuse_odd_lock(&path)?;
            match create_whole(exp_dir, &path, &me) {
                Ok(()) => return Ok(ExperimentLock { path, took_over }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match read_holder(&path)? {
                    Holder::Live(info) => return Err(locked(exp_dir, &path, &info)),
                    Holder::Stale(info) => {
                        if remove_stale(exp_dir, &path, &info)? {
                            took_over = info.or(took_over);
                        }
                    }
                    Holder::Gone => {}
                },
                Err(e) => return Err(StoreError::io(&path, e)),
            }
        }
        refuse_odd_lock(&path)?;
        match read_holder(&path)? {
            Holder::Live(info) | Holder::Stale(Some(info)) => Err(locked(exp_dir, &path, &info)),
            _ => Err(StoreError::io(
                &path,
                io::Error::other(
                    "the lock file kept appearing and vanishing while this orchestrator tried \
                     to take it (other orchestrators starting or stopping); try again",
                ),
            )),
        }
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

/// Creates the lock file with its contents in one step: written under a private name, then
/// hard-linked to `path`, which fails if `path` exists. A rival never reads a lock that is
/// still empty (and would report a holder it cannot name). Where hard links are not
/// supported the file is created in place, as before.
fn create_whole(exp_dir: &Path, path: &Path, me: &LockInfo) -> io::Result<()> {
    static SERIAL: AtomicUsize = AtomicUsize::new(0);
    let text = serde_json::to_string(me).unwrap_or_default();
    let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
    let tmp = exp_dir.join(format!(".lock.{}.{serial}.tmp", me.pid));
    let write = |p: &Path, new: bool| -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(new)
            .create(true)
            .truncate(true)
            .open(p)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    };
    let linked = write(&tmp, false).and_then(|_| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
        Err(_) => write(path, true)?,
    }
    sync_dir(exp_dir)
}

/// Refuses a lock path that is not a regular file: a symbolic link (dangling or not) would
/// make `create_new` fail for ever and reading it would follow it elsewhere; a directory or
/// FIFO is no lock this program wrote.
fn refuse_odd_lock(path: &Path) -> Result<(), StoreError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io(path, e)),
    };
    let t = meta.file_type();
    if t.is_file() {
        return Ok(());
    }
    let what = if t.is_symlink() {
        let target = fs::read_link(path)
            .map(|t| format!(" to {}", t.display()))
            .unwrap_or_default();
        format!("is a symbolic link{target}")
    } else {
        format!(
            "is {}",
            crate::regular_file::irregular_kind(t).unwrap_or("not a regular file")
        )
    };
    Err(StoreError::io(
        path,
        io::Error::other(format!(
            "{what}, not an experiment lock this program wrote; remove it (the lock is a \
             plain file, created and removed by `orchestrate run`)"
        )),
    ))
}

/// Removes a stale lock whose holder read as `seen`; false when it changed meanwhile.
///
/// Two orchestrators can find the same stale lock. Unchecked, the slower one would remove
/// the lock the faster one has just created (both would then run) or fail on the file the
/// faster one already removed. So the removal happens under an exclusive `flock` of the
/// experiment directory, after reading the holder again: the slower one then sees the new
/// holder, or nothing, and starts over.
fn remove_stale(exp_dir: &Path, path: &Path, seen: &Option<LockInfo>) -> Result<bool, StoreError> {
    let _guard = DirGuard::lock(exp_dir);
    #[cfg(test)]
    tests::before_takeover(path);
    match read_holder(path)? {
        Holder::Stale(now) if now == *seen => match fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io(path, e)),
        },
        _ => Ok(false),
    }
}

/// An exclusive `flock` of a directory, released on drop.
struct DirGuard(Option<fs::File>);

impl DirGuard {
    /// Locks `dir`; on a file system without `flock` the guard is empty and the takeover
    /// falls back to the re-read alone.
    fn lock(dir: &Path) -> DirGuard {
        use std::os::fd::AsRawFd;
        let Ok(f) = fs::File::open(dir) else {
            return DirGuard(None);
        };
        loop {
            // SAFETY: the descriptor is open for the duration of the call.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return DirGuard(Some(f));
            }
            if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return DirGuard(None);
            }
        }
    }
}

impl Drop for DirGuard {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        if let Some(f) = &self.0 {
            // SAFETY: as above; closing the file would release it too.
            unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_UN) };
        }
    }
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
    use std::cell::RefCell;

    /// A stand-in for another orchestrator acting on the lock path.
    type Rival = Box<dyn FnMut(&Path)>;

    thread_local! {
        /// What a rival orchestrator does between our reading a stale lock and our taking
        /// it over (per thread, so tests running in parallel do not see each other's).
        static RIVAL: RefCell<Option<Rival>> = RefCell::new(None);
    }

    /// Called by the takeover before it reads the holder again.
    pub(super) fn before_takeover(path: &Path) {
        RIVAL.with(|r| {
            if let Some(f) = r.borrow_mut().as_mut() {
                f(path)
            }
        });
    }

    fn with_rival(f: impl FnMut(&Path) + 'static) {
        RIVAL.with(|r| *r.borrow_mut() = Some(Box::new(f)));
    }

    /// A lock of a process that has exited and been reaped: its pid is dead.
    fn write_stale(dir: &Path) -> LockInfo {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = LockInfo {
            pid: dead,
            host: hostname(),
            started: 1,
        };
        fs::write(dir.join(".lock"), serde_json::to_string(&stale).unwrap()).unwrap();
        stale
    }

    #[test]
    fn the_loser_of_a_stale_lock_race_takes_the_lock_the_winner_released() {
        let dir = tempfile::tempdir().unwrap();
        write_stale(dir.path());
        // The rival removed the stale lock first (and has not created its own yet).
        with_rival(|p| fs::remove_file(p).unwrap());
        let lock = ExperimentLock::acquire(dir.path()).unwrap();
        let text = fs::read_to_string(lock.path()).unwrap();
        let info: LockInfo = serde_json::from_str(&text).unwrap();
        assert_eq!(info.pid, std::process::id());
    }

    #[test]
    fn the_loser_of_a_stale_lock_race_names_the_winner_and_keeps_its_lock() {
        let dir = tempfile::tempdir().unwrap();
        write_stale(dir.path());
        let mut rival = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let winner = LockInfo {
            pid: rival.id(),
            host: hostname(),
            started: now_secs(),
        };
        let written = serde_json::to_string(&winner).unwrap();
        let text = written.clone();
        // The rival took the stale lock over: removed it and wrote its own.
        with_rival(move |p| {
            fs::remove_file(p).unwrap();
            fs::write(p, &text).unwrap();
        });
        let err = ExperimentLock::acquire(dir.path()).unwrap_err().to_string();
        let lock_now = fs::read_to_string(dir.path().join(".lock")).unwrap();
        let _ = rival.kill();
        let _ = rival.wait();
        assert!(
            err.contains(&format!("pid {} on host", winner.pid)),
            "{err}"
        );
        assert_eq!(lock_now, written, "the winner's lock must stay");
    }

    #[test]
    fn a_symlink_at_the_lock_path_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join(".lock");
        std::os::unix::fs::symlink("nowhere", &link).unwrap();
        let err = ExperimentLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(".lock: is a symbolic link to nowhere"),
            "{err}"
        );
        assert!(
            !err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(!dir.path().join("nowhere").exists());

        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let err = ExperimentLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is a symbolic link to"), "{err}");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

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
        let stale = write_stale(dir.path());
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
