//! The runner every target shares: its case budget, its seed, the one-line report of how many
//! inputs it tried, a watchdog for hangs, and an allocation meter for unbounded allocations.
//!
//! Budget: each target has a small default number of cases so that all of them together stay
//! well under a minute in a debug test build; `FUZZ_CASES=N` runs every target for `N` cases
//! instead, and `FUZZ_SEED=N` explores a different part of the input space (the default seed
//! is fixed, so CI is reproducible).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

/// Seconds one input may take before the watchdog calls it a hang and aborts the binary.
const HANG_SECS: u64 = 30;

/// Largest single allocation this test binary may ask for: above it the allocator fails the
/// request (and the process aborts naming the size and the input) rather than let a hostile
/// header take the shared machine's memory.
const HARD_CAP: usize = 1 << 30;

thread_local! {
    /// Bytes live on this thread since the meter was started, and their peak.
    static METER: Cell<Option<(usize, usize)>> = const { Cell::new(None) };
}

/// The system allocator, counting what the current thread allocates while a meter runs.
pub struct Metered;

// SAFETY: every call is forwarded to `System`; the bookkeeping touches only a
// const-initialised thread-local `Cell` without a destructor, which never allocates.
unsafe impl GlobalAlloc for Metered {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !grow(layout.size()) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !grow(layout.size()) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrink(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            if !grow(new_size - layout.size()) {
                return std::ptr::null_mut();
            }
        } else {
            shrink(layout.size() - new_size);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

thread_local! {
    /// The input this thread is trying, for the last words of a run that aborts.
    static CURRENT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Counts `n` more bytes; false when one request is over [`HARD_CAP`].
fn grow(n: usize) -> bool {
    METER
        .try_with(|m| match m.get() {
            _ if n > HARD_CAP => {
                // The process aborts next, before proptest can shrink or report: name the input.
                // Writing to stderr and reading the thread-local do not allocate.
                let _ = CURRENT.try_with(|c| {
                    if let Ok(input) = c.try_borrow() {
                        let mut err = std::io::stderr().lock();
                        let _ = err.write_all(
                            b"\nfuzz: an allocation over 1 GiB was refused; the input was: ",
                        );
                        let _ = err.write_all(input.as_bytes());
                        let _ = err.write_all(b"\n");
                    }
                });
                false
            }
            Some((live, peak)) => {
                let live = live.saturating_add(n);
                m.set(Some((live, peak.max(live))));
                true
            }
            None => true,
        })
        .unwrap_or(true)
}

fn shrink(n: usize) {
    let _ = METER.try_with(|m| {
        if let Some((live, peak)) = m.get() {
            m.set(Some((live.saturating_sub(n), peak)));
        }
    });
}

/// Runs `f` and returns its result with the peak number of bytes it had allocated at once
/// on this thread (memory freed by `f` that it did not allocate counts as nothing).
pub fn peak_alloc<T>(f: impl FnOnce() -> T) -> (T, usize) {
    METER.with(|m| m.set(Some((0, 0))));
    let out = f();
    let peak = METER.with(|m| m.take()).map_or(0, |(_, peak)| peak);
    (out, peak)
}

/// Fails the case when `peak` bytes is more than `factor` times `input` bytes plus 1 MiB:
/// what a reader may hold for an input of that size, whatever its header claims.
pub fn check_bounded(
    what: &str,
    peak: usize,
    input: usize,
    factor: usize,
) -> Result<(), TestCaseError> {
    let bound = input.saturating_mul(factor).saturating_add(1 << 20);
    if peak > bound {
        return Err(TestCaseError::fail(format!(
            "{what}: allocated {peak} bytes at once for a {input}-byte input (bound {bound})"
        )));
    }
    Ok(())
}

/// A scratch directory on tmpfs where there is one: every input is written to a file, and
/// the TensorBoard sink fsyncs.
pub fn scratch() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::Builder::new()
            .prefix("orchestrate-fuzz")
            .tempdir_in(shm)
    {
        return d;
    }
    tempfile::tempdir().unwrap()
}

/// The number of cases for a target whose CI budget is `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn seed() -> u64 {
    std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(15)
}

/// How the inputs of one run of a target ended, by outcome name, for its report line.
#[derive(Default)]
pub struct Tally(Mutex<BTreeMap<String, u64>>);

impl Tally {
    /// Counts one input that ended as `outcome` (e.g. `ok`, or an error variant's name).
    pub fn add(&self, outcome: impl Into<String>) {
        *self.0.lock().unwrap().entry(outcome.into()).or_default() += 1;
    }
}

/// The name of an error's variant, from its `Debug` text (`SizeMismatch { .. }` -> `SizeMismatch`).
pub fn variant(e: &impl Debug) -> String {
    let text = format!("{e:?}");
    let end = text.find([' ', '(', '{']).unwrap_or(text.len());
    text[..end].to_string()
}

/// Runs target `name` over `strategy` for its budget, tallying outcomes with `test`; prints
/// `fuzz NAME: N inputs tried (...)` to the terminal (not captured by the test harness) and
/// panics with the shrunk input when a case fails.
pub fn fuzz<S>(
    name: &str,
    default_cases: u32,
    strategy: S,
    test: impl Fn(S::Value, &Tally) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: Debug,
{
    let config = Config {
        cases: cases(default_cases),
        failure_persistence: None,
        // Shrinking a failing input re-runs it; a few hundred steps reach a small one.
        max_shrink_iters: 2048,
        ..Config::default()
    };
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed().to_le_bytes());
    seed_bytes[8..8 + name.len().min(24)].copy_from_slice(&name.as_bytes()[..name.len().min(24)]);
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );

    let tally = Tally::default();
    let current: Arc<Mutex<(Instant, String)>> =
        Arc::new(Mutex::new((Instant::now(), String::new())));
    let done = Arc::new(Mutex::new(false));
    let watchdog = {
        let (current, done, name) = (current.clone(), done.clone(), name.to_string());
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(200));
                if *done.lock().unwrap() {
                    return;
                }
                let (since, input) = current.lock().unwrap().clone();
                if since.elapsed() > Duration::from_secs(HANG_SECS) {
                    let _ = writeln!(
                        std::io::stderr(),
                        "fuzz {name}: an input ran over {HANG_SECS} s (a hang): {input}"
                    );
                    std::process::abort();
                }
            }
        })
    };

    let started = Instant::now();
    let tried = std::sync::atomic::AtomicU64::new(0);
    let result = runner.run(&strategy, |input| {
        tried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let text = format!("{input:?}");
        let shown = text.clone();
        CURRENT.with(|c| *c.borrow_mut() = shown);
        *current.lock().unwrap() = (Instant::now(), text);
        test(input, &tally)
    });
    *done.lock().unwrap() = true;
    watchdog.join().unwrap();

    let outcomes: Vec<String> = tally
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let _ = writeln!(
        std::io::stderr(),
        "fuzz {name}: {} inputs tried in {:.1} s, seed {} ({})",
        tried.into_inner(),
        started.elapsed().as_secs_f64(),
        seed(),
        outcomes.join(", ")
    );
    if let Err(e) = result {
        panic!("fuzz {name} failed: {e}");
    }
}
