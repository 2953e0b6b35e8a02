//! `orchestrate run`: train every run of a spec's grid in worker processes, name the winner.
//!
//! Order matters for "lose nothing": the spec is loaded and expanded (and so validated, each
//! run against its data files' headers too) and the launch settings are resolved before
//! anything is written (and, for Slurm, the cluster is checked); then the experiment
//! directory, the lock, the run directories; then the dispatcher with the local or the Slurm
//! executor; then the summary, the same for both backends.

use std::path::{Path, PathBuf};

use crate::device::Device;
use crate::error::{Error, exit};
use crate::launch::LaunchError;
use crate::launch::budget;
use crate::launch::dispatch::{Scheduler, dispatch};
use crate::launch::events::LaunchEvent;
use crate::launch::local::{LocalExecutor, PoolOptions};
use crate::launch::on_slurm::{SlurmRunEnd, SlurmSetup, run_on_slurm};
use crate::launch::prepare::{PreparedRun, create_experiment_dir, prepare_runs};
use crate::launch::progress::{Reporter, reporter};
use crate::launch::schedule::{self, ScheduleError, ScheduleRecord};
use crate::launch::settings::{self, LaunchFlags, LaunchSettings, spec_devices};
use crate::launch::signals::ShutdownSignals;
use crate::spec::{Backend, SlurmSpec, Spec};
use crate::store::{ExperimentLock, RunState};
use crate::summary;

/// Arguments of `orchestrate run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub spec: super::SpecArgs,
    /// Where the runs execute (default: launch.backend).
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// Slurm: submit the array job and return; a later `run` or `status` follows it.
    #[arg(long)]
    pub detach: bool,
    /// Runs in parallel (default: launch.jobs; on Slurm: the array throttle,
    /// launch.slurm.max_parallel).
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// CPU threads per run (default: train.threads, or cores / jobs; on Slurm:
    /// launch.slurm.cpus_per_task).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Extra attempts for a crashed run (default: launch.retries).
    #[arg(long)]
    pub retries: Option<usize>,
    /// Stop the grid at the first failed or diverged run (local backend).
    #[arg(long)]
    pub fail_fast: bool,
    /// Train this run again from scratch (run id, id prefix or name); repeatable.
    #[arg(long, value_name = "RUN")]
    pub rerun: Vec<String>,
    /// Continue a pruned run to its last epoch (run id, id prefix or name; a replicate, or a
    /// configuration ID, continues its configuration's pruned replicates); repeatable.
    #[arg(long, value_name = "RUN")]
    pub promote: Vec<String>,
    /// Devices to spread runs over: `cpu` or `cuda:0,cuda:1` (default: launch.devices;
    /// local backend, Slurm hands out GPUs through launch.slurm.gres).
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<Device>,
    /// Directory holding experiments.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Seconds workers get to checkpoint after Ctrl-C before they are killed (local
    /// backend; on Slurm, Slurm's KillWait decides).
    #[arg(long, default_value_t = 10)]
    pub grace: u64,
    /// Print only errors and the winner.
    #[arg(long, short = 'q', conflicts_with = "json")]
    pub quiet: bool,
    /// One JSON object per event on stdout, for tools.
    #[arg(long)]
    pub json: bool,
    /// Plain lines even on a terminal.
    #[arg(long, hide = true)]
    pub plain: bool,
}

impl Args {
    /// The flags that decide how the grid is launched.
    fn launch_flags(&self) -> LaunchFlags {
        LaunchFlags {
            backend: self.backend,
            detach: self.detach,
            jobs: self.jobs,
            threads: self.threads,
            retries: self.retries,
            fail_fast: self.fail_fast,
            devices: self.devices.clone(),
            grace: self.grace,
            quiet: self.quiet,
            json: self.json,
            plain: self.plain,
        }
    }
}

/// A schedule with `--detach` on Slurm: nobody would be there to decide its rungs, and the
/// runs would wait at the first one for ever, so `run` refuses before anything is written.
fn refuse_schedule(file: &Path, spec: &Spec, detach: bool) -> Result<(), Error> {
    if spec.schedule.kind == crate::spec::ScheduleKind::None || !detach {
        return Ok(());
    }
    Err(Error::Spec(crate::spec::SpecError::one(
        file,
        "schedule.kind",
        Some(format!("\"{}\"", spec.schedule.kind.word())),
        "a schedule decides its rungs while `run` follows the grid; drop --detach, or set \
         schedule.kind = \"none\""
            .into(),
    )))
}

/// The experiment's schedule record, refused (exit 3, before anything is written) when it
/// was written under another schedule than the spec's.
fn schedule_record(args: &Args, spec: &Spec) -> Result<Option<ScheduleRecord>, Error> {
    if spec.schedule.kind == crate::spec::ScheduleKind::None {
        return Ok(None);
    }
    let exp_dir = args.runs_dir.join(&spec.name);
    match schedule::check_record(&exp_dir, &spec.schedule, spec.repeats) {
        Ok(r) => Ok(r),
        Err(ScheduleError::Store(e)) => Err(e.into()),
        Err(e @ ScheduleError::RepeatsChanged { repeats, .. }) => {
            Err(Error::Spec(crate::spec::SpecError::one(
                &args.spec.file,
                "repeats",
                Some(repeats.to_string()),
                e.to_string(),
            )))
        }
        Err(ScheduleError::Mismatch {
            path,
            recorded,
            spec: given,
        }) => Err(Error::Spec(crate::spec::SpecError::one(
            &args.spec.file,
            "schedule",
            Some(given),
            format!(
                "{} holds the decisions of schedule {recorded}; restore that schedule, or \
                 delete the file to decide every rung again",
                path.display()
            ),
        ))),
    }
}

/// Runs the command; returns the exit code.
pub fn execute(args: &Args) -> Result<i32, Error> {
    let (spec, plans, mut fingerprints) = args.spec.load_fingerprinted(&args.runs_dir)?;
    // Flags that do not fit the backend are usage errors, found before any data is read.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let settings = settings::resolve(&args.launch_flags(), &spec, cores)
        .map_err(|e| Error::Usage(e.to_string()))?;
    refuse_schedule(&args.spec.file, &spec, settings.detach)?;
    let record = schedule_record(args, &spec)?;
    let promotions = crate::launch::prepare::check_promotions(
        &args.runs_dir.join(&spec.name),
        &plans,
        &args.promote,
    )?;
    // Data headers, every run's model layout on them and its select metric: checked before
    // anything is written under runs/.
    crate::inspect::check_runs(
        &args.spec.file,
        &args.spec.sets,
        &plans,
        crate::inspect::MissingData::Refuse,
    )?;
    // A device this build cannot drive fails here, before anything is written under runs/.
    let mut wanted = args.devices.clone();
    if wanted.is_empty() {
        wanted.extend(spec_devices(&spec.launch.devices));
        wanted.extend(spec_devices(plans.iter().map(|p| &p.config.train.device)));
    }
    for device in wanted {
        crate::train::check_device_support(device).map_err(crate::train::TrainError::from)?;
    }
    let result = match &settings.slurm {
        None => run_local(args, &spec, &plans, &settings, record, &promotions),
        Some(slurm) => run_slurm(args, &spec, &plans, &settings, slurm, record, &promotions),
    };
    // Saved only where the launch created the runs directory (nothing is written where it
    // refused); the cache is only a cache, so failing to write it costs the next plan a
    // re-hash, not this run.
    let _ = fingerprints.save();
    result
}

/// The experiment directory, its lock and its prepared run directories, with the reporter
/// that shows the launch.
struct Prepared {
    exp: crate::store::RunDir,
    lock: ExperimentLock,
    runs: Vec<PreparedRun>,
    rep: Box<dyn Reporter>,
}

/// Creates the experiment directory, takes the lock and writes the run directories.
fn prepare(
    args: &Args,
    spec: &Spec,
    plans: &[crate::grid::RunPlan],
    settings: &LaunchSettings,
) -> Result<Prepared, Error> {
    let exp = create_experiment_dir(&args.runs_dir, &spec.name)?;
    let lock = ExperimentLock::acquire(exp.root())?;
    let mut rep = reporter(settings.output);
    if let Some(old) = &lock.took_over {
        rep.report(&LaunchEvent::Note {
            message: format!(
                "took over a stale lock of pid {} (that orchestrator is gone)",
                old.pid
            ),
        });
    }
    let runs = prepare_runs(exp.root(), plans, &args.rerun)?;
    write_tensorboard_experiment(exp.root(), spec, plans, &runs)?;
    if let Some(n) = &settings.note {
        rep.report(&LaunchEvent::Note { message: n.clone() });
    }
    Ok(Prepared {
        exp,
        lock,
        runs,
        rep,
    })
}

/// Reports the grid's first line and the runs that are already finished.
fn announce(
    rep: &mut dyn Reporter,
    spec: &Spec,
    runs: &[PreparedRun],
    jobs: usize,
    threads: usize,
) {
    let to_run = runs.iter().filter(|r| r.needs_running()).count();
    let epochs_to_train = runs
        .iter()
        .filter(|r| r.needs_running())
        .map(|r| {
            let done = crate::store::read_status(&r.dir)
                .ok()
                .flatten()
                .map_or(0, |s| s.epoch);
            r.epochs.saturating_sub(done)
        })
        .sum();
    rep.report(&LaunchEvent::GridStarted {
        experiment: spec.name.clone(),
        runs: runs.len(),
        to_run,
        jobs,
        threads_per_job: threads,
        epochs_to_train,
    });
    for r in runs.iter().filter(|r| !r.needs_running()) {
        rep.report(&LaunchEvent::RunSkipped {
            run_id: r.plan.id.clone(),
            name: r.plan.name.clone(),
            state: r.state,
        });
    }
}

/// The grid in local worker processes.
fn run_local(
    args: &Args,
    spec: &Spec,
    plans: &[crate::grid::RunPlan],
    settings: &LaunchSettings,
    record: Option<ScheduleRecord>,
    promotions: &[String],
) -> Result<i32, Error> {
    let mut p = prepare(args, spec, plans, settings)?;
    let promoted = crate::launch::prepare::promote(&mut p.runs, promotions)?;
    let sharing = settings.jobs.min(p.runs.len());
    let accel = settings.devices.len();
    if let Some(n) = budget::shared_gpu_note(sharing, accel, &budget::mps_pipe_dir()) {
        p.rep.report(&LaunchEvent::Note { message: n });
    }
    announce(
        p.rep.as_mut(),
        spec,
        &p.runs,
        settings.jobs,
        settings.threads,
    );

    let exe = std::env::current_exe().map_err(|e| Error::io("current executable", e))?;
    let opts = PoolOptions {
        exe,
        jobs: settings.jobs,
        threads: settings.threads,
        devices: settings.devices.clone(),
        jobs_per_device: settings.jobs_per_device,
        cpu_device: settings.cpu_device,
    };
    let signals = ShutdownSignals::install().map_err(LaunchError::Signals)?;
    let mut executor = LocalExecutor::new(&p.runs, opts);
    let mut scheduler = scheduler(&p, spec, record, promoted);
    let pool = dispatch(
        &p.runs,
        &settings.policy(),
        &mut executor,
        &signals,
        scheduler.as_mut(),
        p.rep.as_mut(),
    )?;
    if pool.interrupted {
        return Err(Error::Interrupted);
    }
    finish(args, spec, p)
}

/// The grid as a Slurm array job.
fn run_slurm(
    args: &Args,
    spec: &Spec,
    plans: &[crate::grid::RunPlan],
    settings: &LaunchSettings,
    slurm: &SlurmSpec,
    record: Option<ScheduleRecord>,
    promotions: &[String],
) -> Result<i32, Error> {
    let setup = SlurmSetup::settled(slurm.clone(), settings.threads, None)?;
    let launcher = setup.launcher(&spec.name, &args.runs_dir.join(&spec.name))?;
    // Missing tools or an unknown partition: refused before anything is written.
    launcher.preflight()?;

    let mut p = prepare(args, spec, plans, settings)?;
    let promoted = crate::launch::prepare::promote(&mut p.runs, promotions)?;
    let to_run = p.runs.iter().filter(|r| r.needs_running()).count();
    let throttle = match setup.slurm.max_parallel {
        0 => to_run,
        n => n.min(to_run),
    };
    announce(
        p.rep.as_mut(),
        spec,
        &p.runs,
        throttle.max(1),
        setup.threads_per_task(),
    );
    let signals = ShutdownSignals::install().map_err(LaunchError::Signals)?;
    let mut scheduler = scheduler(&p, spec, record, promoted);
    let mut policy = settings.policy();
    // A scheduled grid is submitted round by round (each round's startable runs one array):
    // a decode variant then waits for its training, and is pruned with it.
    policy.training_groups_in_order |= spec.schedule.kind != crate::spec::ScheduleKind::None;
    let end = if to_run == 0 {
        None
    } else {
        let end = run_on_slurm(
            launcher,
            &p.runs,
            &policy,
            &spec.train.device,
            &signals,
            scheduler.as_mut(),
            p.rep.as_mut(),
        )?;
        Some(end)
    };
    match end {
        Some(SlurmRunEnd::Detached) => Ok(exit::OK),
        Some(SlurmRunEnd::Finished(report)) if report.interrupted => Err(Error::Interrupted),
        _ => finish(args, spec, p),
    }
}

/// The spec's schedule over the prepared runs, taking over the decisions `record` holds.
fn scheduler(
    p: &Prepared,
    spec: &Spec,
    record: Option<ScheduleRecord>,
    promoted: Vec<usize>,
) -> Box<dyn Scheduler> {
    schedule::scheduler_for(
        &p.runs,
        p.exp.root(),
        &spec.schedule,
        &spec.select,
        record,
        promoted,
    )
}

/// The end of a launch, the same for every backend: the verdict over every run of the grid
/// (including those finished before), the summary, the winner line; or, when a finished run's
/// records are damaged, one line per such run and [`exit::DAMAGED`].
fn finish(args: &Args, spec: &Spec, p: Prepared) -> Result<i32, Error> {
    let Prepared {
        exp,
        lock,
        runs,
        mut rep,
    } = p;
    // Summarising what is left of a damaged run could crown another winner: report, keep
    // every summary as it is, and let `--rerun` decide.
    let damaged: Vec<_> = runs
        .iter()
        .filter_map(|r| r.damage().map(|d| (r, d)))
        .collect();
    if !damaged.is_empty() {
        for (r, d) in &damaged {
            eprintln!(
                "damaged: {} ({}): {d}; retrain with --rerun {}",
                r.plan.name, r.plan.id, r.plan.name
            );
        }
        drop(lock);
        return Ok(exit::DAMAGED);
    }
    let all_done = runs.iter().all(|r| {
        crate::store::read_status(&r.dir)
            .ok()
            .flatten()
            .is_some_and(|s| matches!(s.state, RunState::Done | RunState::Pruned))
    });
    let options = summary::SummaryOptions {
        spec_path: Some(args.spec.file.clone()),
    };
    let s = summary::summarize_experiment_with(exp.root(), &spec.select, &options)?;
    rep.report(&LaunchEvent::Winner {
        line: s.winner_line(),
        run_id: s.winner.clone(),
    });
    drop(lock);
    Ok(if all_done { exit::OK } else { exit::FAILURE })
}

/// Writes the experiment-level HParams record (the grid's hyper-parameter domains and the
/// metrics the dashboard lists, the select metric first) into the first run's log directory.
fn write_tensorboard_experiment(
    exp_dir: &Path,
    spec: &Spec,
    plans: &[crate::grid::RunPlan],
    runs: &[PreparedRun],
) -> Result<(), Error> {
    use crate::sinks::tensorboard::{domains_from_runs, run_hparams, write_experiment};
    let per_run: Vec<_> = plans
        .iter()
        .map(|p| run_hparams(&p.config, &p.varied))
        .collect();
    let select = spec.select.metric.clone();
    let test = select.replacen("dev/", "test/", 1);
    let mut metrics = vec![
        select,
        test,
        "dev/loss".to_string(),
        "train/loss".to_string(),
    ];
    metrics.dedup();
    let Some(first) = runs.first() else {
        return Ok(());
    };
    let log_dir = first.dir.tensorboard(&first.plan)?;
    let tree = crate::store::tensorboard::log_tree(exp_dir);
    write_experiment(
        &log_dir,
        &tree,
        exp_dir,
        &domains_from_runs(&per_run),
        &metrics,
    )?;
    Ok(())
}
