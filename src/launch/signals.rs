//! The orchestrator's shutdown signals: SIGINT and SIGTERM, counted.
//!
//! A handler thread counts signals; the dispatcher reads the count. The first signal asks
//! workers to checkpoint and stop within the grace period, the second stops waiting for them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use signal_hook::iterator::{Handle, Signals};

/// Counts SIGINT/SIGTERM received since [`ShutdownSignals::install`].
pub struct ShutdownSignals {
    count: Arc<AtomicUsize>,
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
        let thread = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for _ in signals.forever() {
                    c.fetch_add(1, Ordering::SeqCst);
                }
            })?;
        Ok(ShutdownSignals {
            count,
            handle,
            thread: Some(thread),
        })
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
