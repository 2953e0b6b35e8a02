//! The local executor: one `orchestrate worker` process group per run attempt.
//!
//! It starts workers on free device slots, reaps exited ones (reading their verdict from
//! `status.json`, writing it when the worker could not), and stops them: SIGTERM to each
//! worker's group so it checkpoints, SIGKILL when the dispatcher gives up waiting. The
//! dispatcher ([`super::dispatch`]) decides everything else; this never prints.

use std::fs::OpenOptions;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::LaunchError;
use super::budget::pick_device;
use super::dispatch::{ExecEvent, Executor};
use super::prepare::PreparedRun;
use crate::device::Device;
use crate::store::{self, RunState, RunStatus, StoreError};
use crate::worker::WorkerEnv;

/// How to start local workers.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// The `orchestrate` binary to start workers from.
    pub exe: PathBuf,
    pub jobs: usize,
    pub threads: usize,
    /// Accelerator devices (`cuda:0` ...); empty = CPU, `cpu_device` for all runs.
    pub devices: Vec<Device>,
    pub jobs_per_device: usize,
    /// Device name passed when `devices` is empty.
    pub cpu_device: Device,
}

/// How often the dispatcher looks at local workers and run directories: short enough that
/// a freed slot is refilled well within the 50 ms start-up budget.
const POLL: Duration = Duration::from_millis(20);

struct Active {
    run: usize,
    child: Child,
    attempt: u32,
    device: Option<usize>,
}

/// Worker processes of `runs` on this machine.
pub struct LocalExecutor<'a> {
    runs: &'a [PreparedRun],
    opts: PoolOptions,
    active: Vec<Active>,
    on_device: Vec<usize>,
    /// The workers were asked to stop: an exit without a verdict is a cancellation.
    stopping: bool,
    parent: u32,
}

impl<'a> LocalExecutor<'a> {
    /// An executor for `runs` (indexes of the dispatcher's runs point into it).
    pub fn new(runs: &'a [PreparedRun], opts: PoolOptions) -> Self {
        LocalExecutor {
            runs,
            on_device: vec![0; opts.devices.len()],
            opts,
            active: Vec::new(),
            stopping: false,
            parent: std::process::id(),
        }
    }

    /// Sends `sig` to every worker's process group.
    fn signal_all(&self, sig: i32) {
        for a in &self.active {
            signal_group(&a.child, sig);
        }
    }

    fn spawn(&self, run: usize, device: Option<usize>) -> Result<(Active, ExecEvent), LaunchError> {
        let r = &self.runs[run];
        let opts = &self.opts;
        let prev = store::read_status(&r.dir)?;
        let attempt = RunStatus::next_attempt(prev.as_ref());
        // The epoch the worker will resume from, decided as the worker decides it.
        let resumed_from = store::checkpoints::newest_complete(&r.dir.checkpoints())?;
        let device_name = match device {
            Some(d) => opts.devices[d],
            None => opts.cpu_device,
        };
        let run_dir =
            std::path::absolute(r.dir.root()).map_err(|e| StoreError::io(r.dir.root(), e))?;
        let env = WorkerEnv {
            run_dir,
            run_id: Some(r.plan.id.clone()),
            threads: opts.threads,
            device: Some(device_name),
            attempt: Some(attempt),
            parent_pid: Some(self.parent),
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
        let ev = ExecEvent::Started {
            run,
            attempt,
            pid: Some(child.id()),
            job: None,
            device: device_name.to_string(),
            resumed_from,
        };
        Ok((
            Active {
                run,
                child,
                attempt,
                device,
            },
            ev,
        ))
    }
}

impl Executor for LocalExecutor<'_> {
    type Error = LaunchError;

    fn free_slots(&self) -> Option<usize> {
        let free = self.opts.jobs.max(1).saturating_sub(self.active.len());
        if self.on_device.is_empty() {
            return Some(free);
        }
        let per_device = self.opts.jobs_per_device.max(1);
        let on_cards: usize = self
            .on_device
            .iter()
            .map(|&n| per_device.saturating_sub(n))
            .sum();
        Some(free.min(on_cards))
    }

    fn start(&mut self, runs: &[usize], out: &mut Vec<ExecEvent>) -> Result<(), LaunchError> {
        for &run in runs {
            // `free_slots` counted a free card slot for this run; `None` is the CPU.
            let device = pick_device(&self.on_device, self.opts.jobs_per_device).flatten();
            let (a, ev) = self.spawn(run, device)?;
            if let Some(d) = device {
                self.on_device[d] += 1;
            }
            out.push(ev);
            self.active.push(a);
        }
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<ExecEvent>) -> Result<(), LaunchError> {
        let mut fatal = None;
        let mut i = 0;
        while i < self.active.len() {
            let exit = match self.active[i].child.try_wait() {
                Ok(Some(s)) => s,
                Ok(None) | Err(_) => {
                    i += 1;
                    continue;
                }
            };
            let a = self.active.swap_remove(i);
            if let Some(d) = a.device {
                self.on_device[d] -= 1;
            }
            let (state, message) = match verdict(&self.runs[a.run], &a, exit, self.stopping) {
                Ok(v) => v,
                Err(e) => {
                    fatal.get_or_insert(LaunchError::from(e));
                    (RunState::Failed, None)
                }
            };
            out.push(ExecEvent::Exited {
                run: a.run,
                attempt: a.attempt,
                state,
                message,
            });
        }
        fatal.map_or(Ok(()), Err)
    }

    fn stop(&mut self, run: usize) {
        if let Some(a) = self.active.iter().find(|a| a.run == run) {
            signal_group(&a.child, libc::SIGTERM);
        }
    }

    fn terminate(&mut self) {
        self.stopping = true;
        self.signal_all(libc::SIGTERM);
    }

    /// A local worker is never left behind: it is killed, and reaped as usual.
    fn give_up(&mut self, _kill: bool, _out: &mut Vec<ExecEvent>) {
        self.signal_all(libc::SIGKILL);
    }

    fn poll_interval(&self) -> Duration {
        POLL
    }
}

/// Sends `sig` to the process group of `child`.
fn signal_group(child: &Child, sig: i32) {
    if let Ok(pgid) = i32::try_from(child.id()) {
        // SAFETY: killpg takes plain integers; a group that has already exited is ESRCH.
        unsafe { libc::killpg(pgid, sig) };
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
        && s.state.is_verdict()
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
            pruned: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn executor(jobs: usize, cards: usize, per_device: usize) -> LocalExecutor<'static> {
        LocalExecutor::new(
            &[],
            PoolOptions {
                exe: "/nonexistent".into(),
                jobs,
                threads: 1,
                devices: (0..cards).map(|i| Device::Cuda(Some(i))).collect(),
                jobs_per_device: per_device,
                cpu_device: Device::Cpu,
            },
        )
    }

    #[test]
    fn free_slots_count_jobs_and_the_free_places_on_the_cards() {
        assert_eq!(executor(3, 0, 1).free_slots(), Some(3));
        assert_eq!(executor(0, 0, 1).free_slots(), Some(1), "at least one job");
        let mut e = executor(8, 2, 2);
        assert_eq!(e.free_slots(), Some(4), "two cards x two runs each");
        e.on_device = vec![2, 1];
        assert_eq!(e.free_slots(), Some(1));
        e.on_device = vec![2, 2];
        assert_eq!(e.free_slots(), Some(0));
    }
}
