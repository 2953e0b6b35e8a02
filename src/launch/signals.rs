//! The orchestrator's shutdown signals: SIGINT and SIGTERM, counted.
//!
//! A handler thread counts signals; the pool's loop reads the count. The first signal asks
//! workers to checkpoint and stop within the grace period, the second kills them at once.
//! The thread also raises a shared flag, for code that waits on a cancel flag instead (the
//! Slurm backend).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use signal_hook::iterator::{Handle, Signals};

/// Counts SIGINT/SIGTERM received since [`ShutdownSignals::install`].
pub struct ShutdownSignals {
    count: Arc<AtomicUsize>,
    flag: Arc<AtomicBool>,
    handle: Handle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ShutdownSignals {
    /// Installs the handlers (replacing the default "terminate" action).
    pub fn install() -> std::io::Result<Self> {
        let mut signals = Signals::new([libc::SIGINT, libc::SIGTERM])?;
        let handle = signals.handle();
        let count = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&count);
        let flag = Arc::new(AtomicBool::new(false));
        let f = Arc::clone(&flag);
        let thread = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for _ in signals.forever() {
                    c.fetch_add(1, Ordering::SeqCst);
                    f.store(true, Ordering::SeqCst);
                }
            })?;
        Ok(ShutdownSignals {
            count,
            flag,
            handle,
            thread: Some(thread),
        })
    }

    /// A flag that turns true at the first signal.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.flag)
    }

    /// Signals received so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl Drop for ShutdownSignals {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
