//! `orchestrate run`: train every run of a spec's grid in worker processes, name the winner.
//!
//! Order matters for "lose nothing": the spec is loaded and expanded (and so validated)
//! before anything is written; then the experiment directory, the lock, the run
//! directories; then the pool; then the summary.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, exit};
use crate::launch::LaunchError;
use crate::launch::budget::{self, is_cpu};
use crate::launch::events::LaunchEvent;
use crate::launch::local::{PoolOptions, run_pool};
use crate::launch::prepare::{create_experiment_dir, prepare_runs};
use crate::launch::progress::{OutputMode, reporter};
use crate::launch::signals::ShutdownSignals;
use crate::store::{ExperimentLock, RunState};
use crate::{spec, summary};

/// Arguments of `orchestrate run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub spec: spec::SpecArgs,
    /// Runs in parallel (default: launch.jobs).
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// CPU threads per run (default: train.threads, or cores / jobs).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Extra attempts for a crashed run (default: launch.retries).
    #[arg(long)]
    pub retries: Option<usize>,
    /// Stop the grid at the first failed or diverged run.
    #[arg(long)]
    pub fail_fast: bool,
    /// Train this run again from scratch (run id, id prefix or name); repeatable.
    #[arg(long, value_name = "RUN")]
    pub rerun: Vec<String>,
    /// Devices to spread runs over: `cpu` or `cuda:0,cuda:1` (default: launch.devices).
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<String>,
    /// Directory holding experiments.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Seconds workers get to checkpoint after Ctrl-C before they are killed.
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

/// Runs the command; returns the exit code.
pub fn execute(args: &Args) -> Result<i32, Error> {
    let (spec, plans) = args.spec.load_runs()?;

    let launch = &spec.launch;
    let devices: Vec<String> = if args.devices.is_empty() {
        launch.devices.clone()
    } else {
        args.devices.clone()
    };
    let accel: Vec<String> = devices.into_iter().filter(|d| !is_cpu(d)).collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.threads.unwrap_or(spec.train.threads);
    let budget = budget::resolve(
        args.jobs.unwrap_or(launch.jobs),
        threads,
        cores,
        accel.len(),
        launch.jobs_per_device,
    );

    let exp = create_experiment_dir(&args.runs_dir, &spec.name)?;
    let lock = ExperimentLock::acquire(exp.root())?;
    let mode = if args.json {
        OutputMode::Json
    } else if args.quiet {
        OutputMode::Quiet
    } else if args.plain {
        OutputMode::Plain
    } else {
        OutputMode::Auto
    };
    let mut rep = reporter(mode);
    if let Some(old) = &lock.took_over {
        rep.report(&LaunchEvent::Note {
            message: format!(
                "took over a stale lock of pid {} (that orchestrator is gone)",
                old.pid
            ),
        });
    }
    let runs = prepare_runs(exp.root(), &plans, &args.rerun)?;
    write_tensorboard_experiment(exp.root(), &spec, &plans)?;
    if let Some(n) = &budget.note {
        rep.report(&LaunchEvent::Note { message: n.clone() });
    }
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
        jobs: budget.jobs,
        threads_per_job: budget.threads,
        epochs_to_train,
    });
    for r in runs.iter().filter(|r| !r.needs_running()) {
        rep.report(&LaunchEvent::RunSkipped {
            run_id: r.plan.id.clone(),
            name: r.plan.name.clone(),
            state: r.state,
        });
    }

    let exe = std::env::current_exe().map_err(|e| Error::io("current executable", e))?;
    let opts = PoolOptions {
        exe,
        jobs: budget.jobs,
        threads: budget.threads,
        retries: args.retries.unwrap_or(launch.retries),
        fail_fast: args.fail_fast,
        grace: Duration::from_secs(args.grace),
        devices: accel,
        jobs_per_device: launch.jobs_per_device,
        cpu_device: spec.train.device.clone(),
    };
    let signals = ShutdownSignals::install().map_err(LaunchError::Signals)?;
    let pool = run_pool(&runs, &opts, &signals, rep.as_mut())?;
    if pool.interrupted {
        return Err(Error::Interrupted);
    }

    // The verdict covers every run of the grid, including those finished before.
    let all_done = runs.iter().all(|r| {
        crate::store::read_status(&r.dir)
            .ok()
            .flatten()
            .is_some_and(|s| s.state == RunState::Done)
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

/// Writes the experiment-level HParams record: the grid's hyper-parameter domains and the
/// metrics the dashboard lists (the select metric first).
fn write_tensorboard_experiment(
    exp_dir: &std::path::Path,
    spec: &crate::spec::Spec,
    plans: &[crate::grid::RunPlan],
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
    write_experiment(exp_dir, &domains_from_runs(&per_run), &metrics)?;
    Ok(())
}
