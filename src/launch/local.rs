//! The local process pool: one `orchestrate worker` process group per run.
//!
//! A single loop polls every 20 ms: it reaps exited workers (reading their verdict from
//! `status.json`), starts queued runs while slots are free, tails metrics for progress, and
//! reacts to shutdown signals — SIGTERM to each worker's group, a grace period for them to
//! checkpoint, then SIGKILL; a second signal kills at once. It emits [`LaunchEvent`]s and
//! never prints.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::LaunchError;
use super::budget::pick_device;
use super::events::LaunchEvent;
use super::prepare::PreparedRun;
use super::progress::Reporter;
use super::signals::ShutdownSignals;
use super::tail::RunFollower;
use crate::device::Device;
use crate::store::{self, RunState, RunStatus, StoreError};
use crate::worker::WorkerEnv;

/// How to run the pool.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// The `orchestrate` binary to start workers from.
    pub exe: PathBuf,
    pub jobs: usize,
    pub threads: usize,
    /// Extra attempts per run for crashes, in this launch.
    pub retries: usize,
    pub fail_fast: bool,
    /// Time workers get to checkpoint after SIGTERM.
    pub grace: Duration,
    /// Accelerator devices (`cuda:0` ...); empty = CPU, `cpu_device` for all runs.
    pub devices: Vec<Device>,
    pub jobs_per_device: usize,
    /// Device name passed when `devices` is empty.
    pub cpu_device: Device,
}

/// How the pool ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolReport {
    pub done: usize,
    pub failed: usize,
    pub diverged: usize,
    pub cancelled: usize,
    pub not_started: usize,
    /// A shutdown signal stopped the pool.
    pub interrupted: bool,
}

/// How often the pool looks at its workers and run directories.
const POLL: Duration = Duration::from_millis(20);

struct Active {
    run: usize,
    child: Child,
    attempt: u32,
    device: Option<usize>,
    follow: RunFollower,
}

/// Runs `runs` (those that need running) to completion, interruption or fail-fast.
pub fn run_pool(
    runs: &[PreparedRun],
    opts: &PoolOptions,
    signals: &ShutdownSignals,
    reporter: &mut dyn Reporter,
) -> Result<PoolReport, LaunchError> {
    let started = Instant::now();
    let mut queue: Vec<usize> = (0..runs.len())
        .filter(|&i| runs[i].needs_running())
        .collect();
    let mut tries: HashMap<usize, usize> = HashMap::new();
    let mut active: Vec<Active> = Vec::new();
    let mut on_device = vec![0usize; opts.devices.len()];
    let mut report = PoolReport::default();
    let mut seen_signals = 0;
    let mut stopping: Option<Instant> = None; // grace deadline
    let mut killed = false;
    let mut fatal: Option<LaunchError> = None;
    let me = std::process::id();

    loop {
        // Signals first, so a Ctrl-C is never followed by a new start.
        let n = signals.count();
        if n > seen_signals {
            seen_signals = n;
            report.interrupted = true;
            reporter.report(&LaunchEvent::Interrupted {
                signals: n,
                grace_seconds: opts.grace.as_secs(),
            });
            if stopping.is_none() {
                stopping = Some(Instant::now() + opts.grace);
                signal_all(&active, libc::SIGTERM);
            }
            if n >= 2 && !killed {
                signal_all(&active, libc::SIGKILL);
                killed = true;
            }
        }
        if let Some(deadline) = stopping
            && Instant::now() >= deadline
            && !killed
        {
            signal_all(&active, libc::SIGKILL);
            killed = true;
        }

        // Reap.
        let mut i = 0;
        while i < active.len() {
            let exit = match active[i].child.try_wait() {
                Ok(Some(s)) => s,
                Ok(None) => {
                    i += 1;
                    continue;
                }
                Err(_) => {
                    i += 1;
                    continue;
                }
            };
            let mut a = active.swap_remove(i);
            if let Some(d) = a.device {
                on_device[d] -= 1;
            }
            let r = &runs[a.run];
            // The last records and epoch of the attempt, before its verdict.
            a.follow.poll(r, reporter);
            let verdict = match verdict(r, &a, exit, stopping.is_some()) {
                Ok(v) => v,
                Err(e) => {
                    fatal.get_or_insert(e.into());
                    (RunState::Failed, None)
                }
            };
            let (state, message) = verdict;
            let t = tries.entry(a.run).or_insert(0);
            *t += 1;
            let retry = state == RunState::Failed && stopping.is_none() && *t <= opts.retries;
            reporter.report(&LaunchEvent::RunFinished {
                run_id: r.plan.id.clone(),
                name: r.plan.name.clone(),
                attempt: a.attempt,
                state,
                message,
                retry,
            });
            if retry {
                queue.push(a.run);
                queue.sort_by_key(|&q| runs[q].plan.index);
                continue;
            }
            match state {
                RunState::Done => report.done += 1,
                RunState::Diverged => report.diverged += 1,
                RunState::Failed => report.failed += 1,
                _ => report.cancelled += 1,
            }
            if opts.fail_fast
                && matches!(state, RunState::Failed | RunState::Diverged)
                && stopping.is_none()
            {
                reporter.report(&LaunchEvent::FailFast {
                    run_id: r.plan.id.clone(),
                });
                stopping = Some(Instant::now() + opts.grace);
                signal_all(&active, libc::SIGTERM);
            }
        }

        // Start.
        while stopping.is_none() && fatal.is_none() && active.len() < opts.jobs.max(1) {
            let Some(device) = pick_device(&on_device, opts.jobs_per_device) else {
                break;
            };
            let Some(pos) = queue.iter().position(|&q| ready(q, runs, &queue, &active)) else {
                break;
            };
            let run = queue.remove(pos);
            match spawn(&runs[run], run, device, opts, me) {
                Ok((a, ev)) => {
                    if let Some(d) = device {
                        on_device[d] += 1;
                    }
                    reporter.report(&ev);
                    active.push(a);
                }
                Err(e) => {
                    queue.insert(pos, run);
                    fatal = Some(e);
                    stopping = Some(Instant::now() + opts.grace);
                    signal_all(&active, libc::SIGTERM);
                }
            }
        }

        for a in &mut active {
            a.follow.poll(&runs[a.run], reporter);
        }

        if active.is_empty() && (queue.is_empty() || stopping.is_some() || fatal.is_some()) {
            break;
        }
        // Short enough that a freed slot is refilled well within the 50 ms start-up budget.
        std::thread::sleep(POLL);
    }

    report.not_started = queue.len();
    reporter.report(&LaunchEvent::GridFinished {
        done: report.done,
        failed: report.failed,
        diverged: report.diverged,
        cancelled: report.cancelled,
        not_started: report.not_started,
        seconds: started.elapsed().as_secs_f64(),
    });
    match fatal {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// A run may start when no earlier run of the same training id is still pending: the first
/// run of a training group trains, its siblings (decode variants) reuse its checkpoints.
fn ready(q: usize, runs: &[PreparedRun], queue: &[usize], active: &[Active]) -> bool {
    let me = &runs[q].plan;
    let blocks = |o: usize| {
        let p = &runs[o].plan;
        o != q && p.training_id == me.training_id && p.index < me.index
    };
    !queue.iter().any(|&o| blocks(o)) && !active.iter().any(|a| blocks(a.run))
}

fn spawn(
    r: &PreparedRun,
    run: usize,
    device: Option<usize>,
    opts: &PoolOptions,
    parent: u32,
) -> Result<(Active, LaunchEvent), LaunchError> {
    let prev = store::read_status(&r.dir)?;
    let attempt = RunStatus::next_attempt(prev.as_ref());
    // The epoch the worker will resume from, decided as the worker decides it.
    let resumed_from = store::checkpoints::newest_complete(&r.dir.checkpoints())?;
    let device_name = match device {
        Some(d) => opts.devices[d],
        None => opts.cpu_device,
    };
    let run_dir = std::path::absolute(r.dir.root()).map_err(|e| StoreError::io(r.dir.root(), e))?;
    let env = WorkerEnv {
        run_dir,
        run_id: Some(r.plan.id.clone()),
        threads: opts.threads,
        device: Some(device_name),
        attempt: Some(attempt),
        parent_pid: Some(parent),
    };
    let log_path = r.dir.log();
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| StoreError::io(&log_path, e))?;
    let log2 = log.try_clone().map_err(|e| StoreError::io(&log_path, e))?;
    let mut cmd = Command::new(&opts.exe);
    cmd.arg("worker")
        .envs(env.to_vars())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        // Its own process group: the terminal's Ctrl-C reaches only the orchestrator,
        // which then stops each worker's whole group.
        .process_group(0);
    let child = cmd.spawn().map_err(|source| LaunchError::Spawn {
        exe: opts.exe.clone(),
        source,
    })?;
    let ev = LaunchEvent::RunStarted {
        run_id: r.plan.id.clone(),
        name: r.plan.name.clone(),
        attempt,
        pid: Some(child.id()),
        job: None,
        device: device_name.to_string(),
        resumed_from,
        epochs: r.epochs,
    };
    Ok((
        Active {
            run,
            child,
            attempt,
            device,
            follow: RunFollower::new(r, attempt, resumed_from),
        },
        ev,
    ))
}

/// Sends `sig` to every worker's process group.
fn signal_all(active: &[Active], sig: i32) {
    for a in active {
        if let Ok(pgid) = i32::try_from(a.child.id()) {
            // SAFETY: killpg takes plain integers; a group that has already exited is ESRCH.
            unsafe { libc::killpg(pgid, sig) };
        }
    }
}

/// The run's final state after its worker exited, writing `status.json` when the worker
/// could not (it was killed or crashed before recording a verdict).
fn verdict(
    r: &PreparedRun,
    a: &Active,
    exit: ExitStatus,
    stopping: bool,
) -> Result<(RunState, Option<String>), StoreError> {
    let status = store::read_status(&r.dir)?;
    if let Some(s) = &status
        && s.attempts == a.attempt
        && matches!(
            s.state,
            RunState::Done | RunState::Diverged | RunState::Failed | RunState::Cancelled
        )
    {
        return Ok((s.state, s.message.clone()));
    }
    let how = describe_exit(exit);
    let (state, message) = if stopping {
        (
            RunState::Cancelled,
            format!("stopped by the orchestrator ({how}); resumable"),
        )
    } else {
        (
            RunState::Failed,
            format!("worker {how} (attempt {})", a.attempt),
        )
    };
    store::write_status(
        &r.dir,
        &RunStatus {
            state,
            attempts: a.attempt,
            epoch: status.map_or(0, |s| s.epoch),
            message: Some(message.clone()),
            pid: None,
        },
    )?;
    Ok((state, Some(message)))
}

fn describe_exit(exit: ExitStatus) -> String {
    match (exit.code(), exit.signal()) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(s)) => format!("killed by signal {s} ({})", signal_name(s)),
        _ => "ended".into(),
    }
}

fn signal_name(s: i32) -> &'static str {
    match s {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        _ => "signal",
    }
}
