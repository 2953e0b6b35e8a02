//! Resource budgets as pure decisions: how many jobs, how many threads each, which device.
//!
//! On CPU, jobs x threads-per-job never exceeds the cores: asking for more jobs than that
//! lowers the job count (with a note) rather than oversubscribing, which would make every
//! run slower and timings meaningless.

/// The resolved budget of a local launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// Workers running at once.
    pub jobs: usize,
    /// CPU threads per worker.
    pub threads: usize,
    /// Why `jobs` is lower than asked, if it is.
    pub note: Option<String>,
}

/// Resolves jobs and threads for `cores` cores.
///
/// `threads` 0 = share the cores among the jobs. Devices that are not CPUs cap jobs at
/// `devices x jobs_per_device`.
pub fn resolve(
    jobs: usize,
    threads: usize,
    cores: usize,
    accel_devices: usize,
    jobs_per_device: usize,
) -> Budget {
    let cores = cores.max(1);
    let mut jobs = jobs.max(1);
    let mut note = None;
    if accel_devices > 0 {
        let cap = accel_devices * jobs_per_device.max(1);
        if jobs > cap {
            note = Some(format!(
                "--jobs {jobs} lowered to {cap}: {accel_devices} device(s) x {} job(s) per device",
                jobs_per_device.max(1)
            ));
            jobs = cap;
        }
    }
    let threads = if threads == 0 {
        (cores / jobs).max(1)
    } else {
        threads.min(cores)
    };
    let cap = (cores / threads).max(1);
    if jobs > cap {
        note = Some(format!(
            "--jobs {jobs} lowered to {cap}: {cap} x {threads} thread(s) fill the {cores} core(s)"
        ));
        jobs = cap;
    }
    Budget {
        jobs,
        threads,
        note,
    }
}

/// Picks the device for the next run: the listed device with the fewest runs on it, below
/// `jobs_per_device`; ties go to the first listed, so runs spread round-robin.
/// `active[i]` counts the runs now on `devices[i]`. `None` when every device is full.
/// An empty list (plain CPU) always answers `Some(None)`: no device to pass.
pub fn pick_device(active: &[usize], jobs_per_device: usize) -> Option<Option<usize>> {
    if active.is_empty() {
        return Some(None);
    }
    let (i, n) = active.iter().enumerate().min_by_key(|(i, n)| (**n, *i))?;
    (*n < jobs_per_device.max(1)).then_some(Some(i))
}

/// A note for when runs will share a GPU (`jobs` workers over `accel_devices` cards) without
/// an MPS daemon, whose control pipe is `<pipe_dir>/control`: the card then time-slices
/// between the workers' processes instead of running their kernels side by side.
pub fn shared_gpu_note(
    jobs: usize,
    accel_devices: usize,
    pipe_dir: &std::path::Path,
) -> Option<String> {
    if accel_devices == 0 || jobs <= accel_devices || pipe_dir.join("control").exists() {
        return None;
    }
    Some(format!(
        "{jobs} runs share {accel_devices} GPU(s) without an MPS daemon ({}/control not found), \
         so each card time-slices between their processes; `nvidia-cuda-mps-control -d` lets \
         them run side by side (3 Q2 runs on one H100: 1.6-1.75x the one-after-another \
         throughput without MPS, 2.3-3.0x with it; README, GPUs)",
        pipe_dir.display()
    ))
}

/// Where MPS clients look for the daemon: `CUDA_MPS_PIPE_DIRECTORY`, else `/tmp/nvidia-mps`.
pub fn mps_pipe_dir() -> std::path::PathBuf {
    std::env::var_os("CUDA_MPS_PIPE_DIRECTORY")
        .map_or_else(|| "/tmp/nvidia-mps".into(), std::path::PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_share_the_cores() {
        assert_eq!(resolve(2, 0, 2, 0, 1).threads, 1);
        assert_eq!(resolve(1, 0, 8, 0, 1).threads, 8);
        assert_eq!(resolve(3, 0, 8, 0, 1).threads, 2);
    }

    #[test]
    fn jobs_times_threads_never_exceeds_cores() {
        for jobs in 1..6 {
            for threads in 0..5 {
                for cores in 1..9 {
                    let b = resolve(jobs, threads, cores, 0, 1);
                    assert!(
                        b.jobs * b.threads <= cores,
                        "{jobs} {threads} {cores}: {b:?}"
                    );
                    assert!(b.jobs >= 1 && b.threads >= 1);
                }
            }
        }
        let b = resolve(4, 0, 2, 0, 1);
        assert_eq!((b.jobs, b.threads), (2, 1));
        assert!(b.note.unwrap().contains("lowered to 2"));
    }

    #[test]
    fn devices_cap_jobs_and_fill_round_robin() {
        assert_eq!(resolve(8, 1, 16, 2, 2).jobs, 4);
        let mut active = vec![0, 0];
        let mut order = Vec::new();
        while let Some(Some(d)) = pick_device(&active, 2) {
            active[d] += 1;
            order.push(d);
        }
        assert_eq!(order, vec![0, 1, 0, 1]);
        assert_eq!(pick_device(&[], 1), Some(None));
    }

    #[test]
    fn runs_sharing_a_gpu_without_mps_get_a_note() {
        let tmp = tempfile::tempdir().unwrap();
        let note = shared_gpu_note(3, 1, tmp.path()).unwrap();
        assert!(note.contains("nvidia-cuda-mps-control -d"), "{note}");
        // One run per card, or CPU runs: nothing to say.
        assert_eq!(shared_gpu_note(2, 2, tmp.path()), None);
        assert_eq!(shared_gpu_note(3, 0, tmp.path()), None);
        // The daemon's control pipe is there: the runs share the card through it.
        std::fs::write(tmp.path().join("control"), "").unwrap();
        assert_eq!(shared_gpu_note(3, 1, tmp.path()), None);
    }
}
