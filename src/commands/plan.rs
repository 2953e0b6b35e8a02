//! `orchestrate plan`: the runs a spec expands to, and what `runs/` already holds for each;
//! with `--backend slurm` also the `sbatch` submission `orchestrate run` would make. Writes
//! nothing.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::SpecArgs;
use crate::error::Error;
use crate::grid::RunPlan;
use crate::grid::identity::DataFingerprint;
use crate::launch::on_slurm::{SlurmSetup, plan_on_slurm};
use crate::launch::pruning::{RungPlan, halving_plan};
use crate::launch::slurm::{PlannedSubmission, RunToLaunch};
use crate::spec::schema::fmt_value;
use crate::spec::{Backend, ScheduleKind, Spec};
use crate::store::RunDir;

/// Arguments of `orchestrate plan`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Print the plan as JSON for machines.
    #[arg(long)]
    pub json: bool,
    /// Directory holding each experiment's run directories.
    #[arg(long, value_name = "DIR", default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Where `run` would execute the runs (default: launch.backend); `slurm` also prints the
    /// sbatch command, run list and batch script, without submitting.
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// CPU threads per run, as `run --threads` would pass them (Slurm).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Array throttle, as `run --jobs` would pass it (Slurm).
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
}

/// The Slurm submission as `plan --json` prints it.
#[derive(Debug, Serialize)]
struct SlurmPlan {
    command: String,
    run_list: Vec<String>,
    script: String,
}

/// One run as `plan --json` prints it.
#[derive(Debug, Serialize)]
struct PlannedRun<'a> {
    index: usize,
    id: &'a str,
    training_id: &'a str,
    name: &'a str,
    varied: &'a std::collections::BTreeMap<String, toml::Value>,
    /// Its configuration and replicate index, with `repeats > 1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    replicate: Option<&'a crate::grid::Replicate>,
    state: String,
}

/// The whole plan as `plan --json` prints it.
#[derive(Debug, Serialize)]
struct Plan<'a> {
    experiment: &'a str,
    description: &'a str,
    dir: String,
    runs: Vec<PlannedRun<'a>>,
    /// With `--backend slurm`: what would be submitted (`None` when every run is finished).
    #[serde(skip_serializing_if = "Option::is_none")]
    slurm: Option<SlurmPlan>,
    /// Run directories of the experiment whose results no longer match the current data or
    /// numerics: not part of this plan, left on disk.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stale: Vec<StaleDir>,
    /// The `[schedule]`, when it prunes.
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule: Option<SchedulePlan>,
}

/// The pruning schedule as `plan` shows it.
#[derive(Debug, Serialize)]
struct SchedulePlan {
    kind: ScheduleKind,
    min_epochs: usize,
    reduction_factor: usize,
    /// Resolved: rungs lie below it.
    max_epochs: usize,
    /// Trainings the schedule decides about: decode-only grid points follow the one they share.
    trainings: usize,
    /// Replicates per configuration (`repeats`): the schedule decides about configurations,
    /// and a configuration's trainings enter and leave each rung together.
    #[serde(skip_serializing_if = "crate::spec::types::is_one")]
    replicates: u32,
    /// Successive halving's rungs (ASHA promotes at the same epochs; median has none).
    rungs: Vec<RungPlan>,
    /// Epochs trained at most if every run records its metric (the full grid's for median,
    /// whose stops depend on the values; for asha, synchronous halving's figure, which early
    /// promotions may exceed).
    most_epochs: usize,
    full_epochs: usize,
}

/// What the spec's schedule does to `runs`, `None` without one.
fn schedule_plan(spec: &Spec, runs: &[RunPlan]) -> Option<SchedulePlan> {
    let sc = &spec.schedule;
    if sc.kind == ScheduleKind::None {
        return None;
    }
    let trainings: HashSet<&str> = runs.iter().map(|r| r.training_id.as_str()).collect();
    let epochs = spec.train.epochs;
    // Every configuration has `repeats` trainings: one per replicate.
    let replicates = spec.repeats.max(1);
    let per = replicates as usize;
    let mut p = halving_plan(sc, trainings.len() / per, per, epochs);
    if sc.kind == ScheduleKind::Median {
        p.rungs.clear();
        p.most_epochs = p.full_epochs;
    }
    Some(SchedulePlan {
        kind: sc.kind,
        min_epochs: sc.min_epochs,
        reduction_factor: sc.reduction_factor,
        max_epochs: sc.max_epochs_for(epochs),
        trainings: trainings.len(),
        replicates,
        rungs: p.rungs,
        most_epochs: p.most_epochs,
        full_epochs: p.full_epochs,
    })
}

/// The schedule's lines under the run table.
fn render_schedule(s: &SchedulePlan) -> String {
    let plural = if s.trainings == 1 { "" } else { "s" };
    let mut out = format!(
        "\nschedule: {} over {} training{plural}",
        s.kind.word(),
        s.trainings
    );
    if s.replicates > 1 {
        out.push_str(&format!(
            " ({} configurations of {} replicates, ranked by their mean and kept or pruned \
             together)",
            s.trainings / s.replicates as usize,
            s.replicates
        ));
    }
    if s.kind != ScheduleKind::Median {
        out.push_str(&format!(
            ", reduction_factor {}, min_epochs {}, rungs below epoch {}",
            s.reduction_factor, s.min_epochs, s.max_epochs
        ));
    }
    out.push('\n');
    match s.kind {
        ScheduleKind::Median => out.push_str(&format!(
            "  at each epoch from {} to {}, once every live training reported it, a run \
             worse than the median of the other live ones stops\n",
            s.min_epochs,
            s.max_epochs.saturating_sub(1)
        )),
        _ => {
            out.push_str("  rung  epoch  runs  keep\n");
            for (i, r) in s.rungs.iter().enumerate() {
                out.push_str(&format!(
                    "  {:<4}  {:<5}  {:<4}  {}\n",
                    i + 1,
                    r.epoch,
                    r.enter,
                    r.keep
                ));
            }
            if s.kind == ScheduleKind::Asha {
                out.push_str(
                    "  asha promotes as runs report: these are synchronous halving's counts; \
                     early arrivals may be promoted beyond them\n",
                );
            }
        }
    }
    let share = if s.full_epochs == 0 {
        0.0
    } else {
        100.0 * s.most_epochs as f64 / s.full_epochs as f64
    };
    if s.kind == ScheduleKind::Asha {
        out.push_str(&format!(
            "  epochs trained: {} of the full grid's {} ({share:.0}%) if asha keeps what \
             synchronous halving keeps; early promotions may train more\n",
            s.most_epochs, s.full_epochs
        ));
    } else {
        out.push_str(&format!(
            "  epochs trained: at most {} of the full grid's {} ({share:.0}%)\n",
            s.most_epochs, s.full_epochs
        ));
    }
    out
}

/// A stale run directory as `plan` lists it.
#[derive(Debug, Serialize)]
struct StaleDir {
    id: String,
    name: String,
    reason: String,
}

/// Runs the command; returns the exit code.
pub fn execute(args: &Args) -> Result<i32, Error> {
    let (spec, runs, mut fingerprints) = args.spec.load_fingerprinted(&args.runs_dir)?;
    // Only a cache: a plan that cannot write it is still a plan.
    let _ = fingerprints.save();
    // The same checks as `run`, except that data missing here is only a warning: a plan may
    // be made where the data is not.
    for w in crate::inspect::check_runs(
        &args.spec.file,
        &args.spec.sets,
        &runs,
        crate::inspect::MissingData::Warn,
    )? {
        eprintln!("{w}");
    }
    if runs.iter().any(|r| r.data == DataFingerprint::Unread) {
        eprintln!(
            "warning: data files unreadable: run ids are provisional (they leave out the data \
             fingerprint) and will change once the data is there"
        );
    }
    let planned: Vec<PlannedRun> = runs
        .iter()
        .map(|r| PlannedRun {
            index: r.index,
            id: &r.id,
            training_id: &r.training_id,
            name: &r.name,
            varied: &r.varied,
            replicate: r.replicate.as_ref(),
            state: state_of(&args.runs_dir, &spec.name, r),
        })
        .collect();
    let exp_dir = args.runs_dir.join(&spec.name);
    let submission = match args.backend.unwrap_or(spec.launch.backend) {
        Backend::Local => None,
        Backend::Slurm => {
            // The runs a `run` would submit: those not finished (done or diverged).
            let pending: Vec<RunToLaunch> = runs
                .iter()
                .filter(|r| !is_finished(&args.runs_dir, &spec.name, r))
                .map(|r| {
                    let dir = exp_dir.join(&r.id);
                    std::path::absolute(&dir)
                        .map(|run_dir| RunToLaunch {
                            run_id: r.id.clone(),
                            run_dir,
                        })
                        .map_err(|e| Error::io(dir, e))
                })
                .collect::<Result<_, _>>()?;
            let threads = args.threads.unwrap_or(spec.train.threads);
            let setup = SlurmSetup::new(&spec.launch.slurm, threads, args.jobs)?;
            Some((
                pending.is_empty(),
                plan_on_slurm(&spec.name, &exp_dir, &setup, &pending)?,
            ))
        }
    };
    // What `status` decides: the directories the table would show as stale.
    let stale = crate::launch::overview::collect(&exp_dir, &[])
        .unwrap_or_default()
        .into_iter()
        .filter(|r| !runs.iter().any(|p| p.id == r.id))
        .filter_map(|r| {
            Some(StaleDir {
                reason: r.stale?,
                id: r.id,
                name: r.name,
            })
        })
        .collect();
    let plan = Plan {
        experiment: &spec.name,
        description: &spec.description,
        dir: exp_dir.display().to_string(),
        runs: planned,
        slurm: submission
            .as_ref()
            .filter(|(empty, _)| !empty)
            .map(|(_, s)| slurm_plan(s)),
        stale,
        schedule: schedule_plan(&spec, &runs),
    };
    if args.json {
        let text = serde_json::to_string_pretty(&plan).map_err(|e| Error::Usage(e.to_string()))?;
        println!("{text}");
    } else {
        print!("{}", render(&plan));
        if let Some(s) = &plan.schedule {
            print!("{}", render_schedule(s));
        }
        if !plan.stale.is_empty() {
            println!("\nstale (not in this plan, never ranked with it, left on disk):");
            for s in &plan.stale {
                println!("  {}  {}  {}", s.id, s.name, s.reason);
            }
        }
        match &submission {
            Some((true, _)) => println!("\nslurm: nothing to submit, every run is finished"),
            Some((false, s)) => print!("\nslurm submission:\n{s}"),
            None => {}
        }
    }
    Ok(crate::error::exit::OK)
}

fn slurm_plan(s: &PlannedSubmission) -> SlurmPlan {
    SlurmPlan {
        command: s.command.clone(),
        run_list: s.run_list.iter().map(|p| p.display().to_string()).collect(),
        script: s.script.clone(),
    }
}

/// Whether the run is done or diverged, so `run` would not start it again.
fn is_finished(runs_dir: &Path, experiment: &str, run: &RunPlan) -> bool {
    let dir = RunDir::new(runs_dir, experiment, &run.id);
    crate::store::read_status(&dir)
        .ok()
        .flatten()
        .is_some_and(|s| s.state.is_final())
}

/// `new` when the run directory has no status yet, else its state (`damaged` for a finished
/// run whose records no longer match its final status).
fn state_of(runs_dir: &Path, experiment: &str, run: &RunPlan) -> String {
    let dir = RunDir::new(runs_dir, experiment, &run.id);
    match crate::store::read_status(&dir) {
        Ok(None) => "new".into(),
        Err(_) => "unreadable status.json".into(),
        Ok(Some(s)) => {
            let state = match crate::store::check_finished(&dir) {
                Ok(()) => s.state.to_string(),
                Err(_) => "damaged".into(),
            };
            if s.epoch > 0 {
                format!("{state} (epoch {})", s.epoch)
            } else {
                state
            }
        }
    }
}

fn render(plan: &Plan) -> String {
    let n = plan.runs.len();
    let mut out = format!(
        "{}: {n} run{} in {}\n",
        plan.experiment,
        if n == 1 { "" } else { "s" },
        plan.dir
    );
    // The training id column only matters when runs share a trained model.
    let mut per_training: HashMap<&str, usize> = HashMap::new();
    for r in &plan.runs {
        *per_training.entry(r.training_id).or_default() += 1;
    }
    let shared = per_training.len() < n;
    let mut rows: Vec<Vec<String>> = Vec::with_capacity(n + 1);
    let mut header = vec!["#", "id"];
    if shared {
        header.push("training");
    }
    header.extend(["name", "state", "varied"]);
    rows.push(header.into_iter().map(String::from).collect());
    for r in &plan.runs {
        let varied: Vec<String> = r
            .varied
            .iter()
            .map(|(k, v)| format!("{k}={}", fmt_value(v)))
            .collect();
        let mut row = vec![r.index.to_string(), r.id.to_string()];
        if shared {
            row.push(r.training_id.to_string());
        }
        row.extend([r.name.to_string(), r.state.clone(), varied.join(" ")]);
        rows.push(row);
    }
    let cols = rows[0].len();
    let widths: Vec<usize> = (0..cols)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
