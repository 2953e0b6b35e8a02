//! Launch settings resolved once, from the command line and the spec, before anything is
//! written: which backend, how many runs at once, threads, devices, retries, fail-fast,
//! grace, output mode, detach, and the notes the user should see about them.
//!
//! A pure function of its inputs (the core count is one), so every precedence rule is
//! tested here and nowhere else decides it: a flag beats the spec, `--devices` beats
//! `launch.devices`, which beats `train.device` for the CPU device name.

use std::time::Duration;

use super::budget;
use super::dispatch::Policy;
use super::progress::OutputMode;
use crate::device::Device;
use crate::spec::{Backend, SlurmSpec, Spec};

/// The flags of `orchestrate run` that decide how the grid is launched.
#[derive(Debug, Clone, Default)]
pub struct LaunchFlags {
    pub backend: Option<Backend>,
    pub detach: bool,
    pub jobs: Option<usize>,
    pub threads: Option<usize>,
    pub retries: Option<usize>,
    pub fail_fast: bool,
    pub devices: Vec<Device>,
    /// Seconds local workers get to checkpoint after the first shutdown signal.
    pub grace: u64,
    pub quiet: bool,
    pub json: bool,
    pub plain: bool,
}

/// How one launch runs, on either backend.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchSettings {
    /// Local: workers running at once. Slurm: the array throttle as asked (0 = no throttle).
    pub jobs: usize,
    /// CPU threads per worker. Slurm: 0 = `SLURM_CPUS_PER_TASK`.
    pub threads: usize,
    /// Accelerator cards runs are spread over (local); empty = `cpu_device` for all runs.
    pub devices: Vec<Device>,
    pub jobs_per_device: usize,
    /// The device of every run when `devices` is empty.
    pub cpu_device: Device,
    /// Extra attempts per crashed run, in this launch.
    pub retries: usize,
    pub fail_fast: bool,
    /// How long stopped workers get to checkpoint before they are killed (on Slurm, how long
    /// the orchestrator waits for Slurm to confirm the end of cancelled tasks).
    pub grace: Duration,
    pub output: OutputMode,
    pub detach: bool,
    /// The Slurm backend's `launch.slurm`, settled with the thread count and the throttle;
    /// `None` on the local backend.
    pub slurm: Option<SlurmSpec>,
    /// What the user should know about the budget (a lowered job count, more threads than CPUs).
    pub note: Option<String>,
}

impl LaunchSettings {
    /// The rules the dispatcher decides by.
    pub fn policy(&self) -> Policy {
        Policy {
            retries: self.retries,
            fail_fast: self.fail_fast,
            grace: self.grace,
            // A Slurm array holds every run at once.
            training_groups_in_order: self.slurm.is_none(),
            detach: self.detach,
        }
    }
}

/// After the first shutdown signal on Slurm, how long to wait for cancelled tasks to end:
/// Slurm's KillWait gives workers their time to checkpoint, this bounds the wait for it.
pub const SLURM_CANCEL_GRACE: Duration = Duration::from_secs(90);

/// A combination of flags and backend that cannot work; nothing has been read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "--detach needs the Slurm backend (--backend slurm or launch.backend = \"slurm\"); \
         local workers stop with their orchestrator"
    )]
    DetachNeedsSlurm,
    #[error("--fail-fast is not supported with the Slurm backend")]
    FailFastOnSlurm,
    #[error(
        "--devices is for local workers; on Slurm ask for GPUs with launch.slurm.gres \
         (e.g. --set launch.slurm.gres=gpu:1)"
    )]
    DevicesOnSlurm,
}

/// Resolves the settings of a launch of `spec` on a machine with `cores` cores.
pub fn resolve(
    flags: &LaunchFlags,
    spec: &Spec,
    cores: usize,
) -> Result<LaunchSettings, SettingsError> {
    let launch = &spec.launch;
    let backend = flags.backend.unwrap_or(launch.backend);
    match backend {
        Backend::Local if flags.detach => return Err(SettingsError::DetachNeedsSlurm),
        Backend::Slurm if flags.fail_fast => return Err(SettingsError::FailFastOnSlurm),
        Backend::Slurm if !flags.devices.is_empty() => return Err(SettingsError::DevicesOnSlurm),
        _ => {}
    }
    let output = if flags.json {
        OutputMode::Json
    } else if flags.quiet {
        OutputMode::Quiet
    } else if flags.plain {
        OutputMode::Plain
    } else {
        OutputMode::Auto
    };
    let threads = flags.threads.unwrap_or(spec.train.threads);
    let retries = flags.retries.unwrap_or(launch.retries);
    let cpu_from_spec = spec_devices([&spec.train.device]).next();
    match backend {
        Backend::Local => {
            let devices: Vec<Device> = if flags.devices.is_empty() {
                spec_devices(&launch.devices).collect()
            } else {
                flags.devices.clone()
            };
            // `--devices cpu` (or `auto`) is the device of every run, not a hint that
            // train.device overrides.
            let cpu_device = devices
                .iter()
                .copied()
                .find(|d| !d.is_card())
                .or(cpu_from_spec)
                .unwrap_or(Device::Cpu);
            let accel: Vec<Device> = devices.into_iter().filter(|d| d.is_card()).collect();
            let b = budget::resolve(
                flags.jobs.unwrap_or(launch.jobs),
                threads,
                cores,
                accel.len(),
                launch.jobs_per_device,
            );
            Ok(LaunchSettings {
                jobs: b.jobs,
                threads: b.threads,
                devices: accel,
                jobs_per_device: launch.jobs_per_device,
                cpu_device,
                retries,
                fail_fast: flags.fail_fast,
                grace: Duration::from_secs(flags.grace),
                output,
                detach: false,
                slurm: None,
                note: b.note,
            })
        }
        Backend::Slurm => {
            let (slurm, note) = settle_slurm(&launch.slurm, threads, flags.jobs);
            Ok(LaunchSettings {
                jobs: slurm.max_parallel,
                threads,
                devices: Vec::new(),
                jobs_per_device: launch.jobs_per_device,
                cpu_device: cpu_from_spec.unwrap_or(Device::Cpu),
                retries,
                fail_fast: false,
                grace: SLURM_CANCEL_GRACE,
                output,
                detach: flags.detach,
                slurm: Some(slurm),
                note,
            })
        }
    }
}

/// Settles `launch.slurm` with a thread count (`--threads` or `train.threads`, 0 = none
/// given) and a throttle (`--jobs`, overriding `launch.slurm.max_parallel`): a thread count
/// becomes `--cpus-per-task` when the spec gives none.
pub fn settle_slurm(
    slurm: &SlurmSpec,
    threads: usize,
    jobs: Option<usize>,
) -> (SlurmSpec, Option<String>) {
    let mut slurm = slurm.clone();
    if let Some(j) = jobs {
        slurm.max_parallel = j;
    }
    let mut note = None;
    if threads > 0 && slurm.cpus_per_task == 0 {
        slurm.cpus_per_task = threads;
    } else if threads > slurm.cpus_per_task && slurm.cpus_per_task > 0 {
        note = Some(format!(
            "{threads} thread(s) per run on {} CPU(s) per task (launch.slurm.cpus_per_task): \
             the workers will compete for their CPUs",
            slurm.cpus_per_task
        ));
    }
    (slurm, note)
}

/// Devices named by a validated spec (validation refused any other name).
pub fn spec_devices<'a>(
    names: impl IntoIterator<Item = &'a String>,
) -> impl Iterator<Item = Device> {
    names.into_iter().filter_map(|d| d.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec::default()
    }

    fn local(flags: &LaunchFlags, spec: &Spec, cores: usize) -> LaunchSettings {
        resolve(flags, spec, cores).unwrap()
    }

    #[test]
    fn flags_beat_the_spec_and_the_budget_fits_the_cores() {
        let mut s = spec();
        s.launch.jobs = 2;
        s.launch.retries = 1;
        s.train.threads = 3;
        let from_spec = local(&LaunchFlags::default(), &s, 8);
        assert_eq!(
            (from_spec.jobs, from_spec.threads, from_spec.retries),
            (2, 3, 1)
        );
        assert_eq!(from_spec.note, None);
        let flags = LaunchFlags {
            jobs: Some(4),
            threads: Some(1),
            retries: Some(0),
            fail_fast: true,
            grace: 3,
            ..LaunchFlags::default()
        };
        let f = local(&flags, &s, 8);
        assert_eq!((f.jobs, f.threads, f.retries, f.fail_fast), (4, 1, 0, true));
        assert_eq!(f.grace, Duration::from_secs(3));
        // More jobs than the cores hold: lowered, with the budget's note.
        let f = local(
            &LaunchFlags {
                jobs: Some(4),
                ..LaunchFlags::default()
            },
            &spec(),
            2,
        );
        assert_eq!((f.jobs, f.threads), (2, 1));
        assert!(f.note.unwrap().contains("--jobs 4 lowered to 2"));
    }

    #[test]
    fn devices_flag_beats_the_spec_and_a_cpu_name_is_every_run_s_device() {
        let mut s = spec();
        s.launch.devices = vec!["cuda:0".into(), "cuda:1".into()];
        s.launch.jobs = 8;
        s.launch.jobs_per_device = 2;
        s.train.device = "auto".into();
        let from_spec = local(&LaunchFlags::default(), &s, 16);
        assert_eq!(
            from_spec.devices,
            vec![Device::Cuda(Some(0)), Device::Cuda(Some(1))]
        );
        assert_eq!(from_spec.jobs, 4, "two cards x two jobs each");
        assert_eq!(from_spec.cpu_device, Device::Auto, "train.device");
        let flags = LaunchFlags {
            devices: vec![Device::Cpu],
            ..LaunchFlags::default()
        };
        let f = local(&flags, &s, 16);
        assert_eq!((f.devices.clone(), f.cpu_device), (vec![], Device::Cpu));
    }

    #[test]
    fn output_mode_json_first_then_quiet_then_plain() {
        let mode = |json, quiet, plain| {
            let flags = LaunchFlags {
                json,
                quiet,
                plain,
                ..LaunchFlags::default()
            };
            local(&flags, &spec(), 1).output
        };
        assert_eq!(mode(false, false, false), OutputMode::Auto);
        assert_eq!(mode(false, false, true), OutputMode::Plain);
        assert_eq!(mode(false, true, true), OutputMode::Quiet);
        assert_eq!(mode(true, false, true), OutputMode::Json);
    }

    #[test]
    fn flags_that_do_not_fit_the_backend_are_refused() {
        let flags = LaunchFlags {
            detach: true,
            ..LaunchFlags::default()
        };
        assert_eq!(
            resolve(&flags, &spec(), 1),
            Err(SettingsError::DetachNeedsSlurm)
        );
        let slurm = |f: LaunchFlags| {
            resolve(
                &LaunchFlags {
                    backend: Some(Backend::Slurm),
                    ..f
                },
                &spec(),
                1,
            )
        };
        let fail_fast = LaunchFlags {
            fail_fast: true,
            ..LaunchFlags::default()
        };
        assert_eq!(slurm(fail_fast), Err(SettingsError::FailFastOnSlurm));
        let devices = LaunchFlags {
            devices: vec![Device::Cuda(Some(0))],
            ..LaunchFlags::default()
        };
        assert_eq!(slurm(devices), Err(SettingsError::DevicesOnSlurm));
        let detach = LaunchFlags {
            detach: true,
            ..LaunchFlags::default()
        };
        assert!(slurm(detach).unwrap().detach);
    }

    #[test]
    fn slurm_threads_become_cpus_per_task_and_jobs_the_throttle() {
        let mut s = spec();
        s.launch.backend = Backend::Slurm;
        s.launch.retries = 2;
        let flags = LaunchFlags {
            jobs: Some(3),
            threads: Some(2),
            ..LaunchFlags::default()
        };
        let r = local(&flags, &s, 1);
        let slurm = r.slurm.clone().unwrap();
        assert_eq!((slurm.cpus_per_task, slurm.max_parallel), (2, 3));
        assert_eq!((r.jobs, r.threads, r.retries), (3, 2, 2));
        assert_eq!(r.grace, SLURM_CANCEL_GRACE);
        // More threads than the spec's CPUs per task: kept, with a note.
        s.launch.slurm.cpus_per_task = 4;
        let r = local(
            &LaunchFlags {
                threads: Some(8),
                ..LaunchFlags::default()
            },
            &s,
            1,
        );
        assert_eq!(r.slurm.unwrap().cpus_per_task, 4);
        assert!(r.note.unwrap().contains("8 thread(s) per run on 4 CPU(s)"));
    }
}
