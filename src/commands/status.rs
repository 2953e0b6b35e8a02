//! `orchestrate status`: the table of an experiment's runs, read-only (no lock), also while
//! a grid runs. For an experiment submitted to Slurm (`runs/<name>/.slurm/job.json`), Slurm's
//! view of each run's latest array task follows the table (and is each JSON row's `slurm`).
//! A run record that cannot be read shows as `unreadable` and makes the command exit 2.

use std::path::PathBuf;

use crate::error::Error;
use crate::launch::overview;
use crate::launch::slurm::{self, TaskPhase, TaskView};
use crate::{grid, spec};

/// Arguments of `orchestrate status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// An experiment name (a directory under the runs directory) or its spec file.
    pub experiment: String,
    /// Directory holding experiments.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// One JSON array of rows instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command; returns the exit code.
pub fn execute(args: &Args) -> Result<i32, Error> {
    let as_path = PathBuf::from(&args.experiment);
    let (name, planned) = if as_path.is_file() {
        // A spec: its planned runs show even before they have directories.
        let spec = spec::load(&as_path, &[])?;
        let mut fingerprints = crate::store::Fingerprints::open(&args.runs_dir);
        let plans = grid::expand_with(&spec, &mut |d| fingerprints.data(d))?;
        let _ = fingerprints.save();
        let planned = plans
            .iter()
            .map(|p| {
                (
                    p.index,
                    p.id.clone(),
                    p.name.clone(),
                    p.config.train.epochs,
                    p.config.select.metric.clone(),
                )
            })
            .collect::<Vec<_>>();
        (spec.name, planned)
    } else {
        (args.experiment.clone(), Vec::new())
    };
    let exp_dir = args.runs_dir.join(&name);
    if planned.is_empty() && !exp_dir.is_dir() {
        return Err(Error::Usage(format!(
            "no experiment {name} under {} (give an experiment name or its spec file)",
            args.runs_dir.display()
        )));
    }
    let mut rows = overview::collect(&exp_dir, &planned)?;
    let tasks = if slurm::jobs_file(&exp_dir).is_file() {
        slurm::slurm_status(&exp_dir)?
    } else {
        Vec::new()
    };
    // A worker on a compute node has a pid this machine cannot check: while its Slurm task
    // is alive, its `running` status is not an orphan's.
    for r in rows.iter_mut() {
        if tasks
            .iter()
            .any(|t| t.run_id == r.id && !t.phase.is_terminal())
        {
            r.orphaned = false;
        }
    }
    if args.json {
        let text = serde_json::to_string_pretty(&json_rows(&rows, &tasks)?)
            .map_err(|e| Error::Usage(e.to_string()))?;
        println!("{text}");
    } else {
        print!("{}", overview::render(&rows));
        if !tasks.is_empty() {
            print!("{}", render_tasks(&tasks));
        }
    }
    // After the table, so the readable runs still show; but not exit 0: what the table says
    // of these runs is a guess.
    let unreadable: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.unreadable.as_deref())
        .collect();
    if let Some(first) = unreadable.first() {
        let more = match unreadable.len() {
            1 => String::new(),
            n => format!(" (and {} more unreadable run(s), see the table)", n - 1),
        };
        return Err(Error::Usage(format!("{first}{more}")));
    }
    Ok(0)
}

/// The table's rows as JSON, each with a `slurm` object (`job`, `task`, `phase`, `terminal`)
/// when the run has an array task, so scripts see what the table's Slurm lines say.
fn json_rows(rows: &[overview::RunView], tasks: &[TaskView]) -> Result<serde_json::Value, Error> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let mut value = serde_json::to_value(row).map_err(|e| Error::Usage(e.to_string()))?;
        if let (Some(task), Some(obj)) = (
            tasks.iter().find(|t| t.run_id == row.id),
            value.as_object_mut(),
        ) {
            obj.insert(
                "slurm".into(),
                serde_json::json!({
                    "job": task.job_id,
                    "task": task.task,
                    "phase": task.phase_text(),
                    "terminal": task.phase.is_terminal(),
                }),
            );
        }
        out.push(value);
    }
    Ok(serde_json::Value::Array(out))
}

/// Slurm's lines: one per run's latest array task, and how to pick the tracking up.
fn render_tasks(tasks: &[TaskView]) -> String {
    let mut out = String::from("\nslurm (latest array task of each run):\n");
    for t in tasks {
        out.push_str(&format!("  {}\n", t.describe()));
    }
    let live = tasks.iter().filter(|t| !t.phase.is_terminal()).count();
    if live > 0 {
        out.push_str(&format!(
            "{live} task(s) pending or running; `orchestrate run` with the same spec follows \
             them to the end and writes the summary\n"
        ));
    }
    if tasks
        .iter()
        .any(|t| matches!(t.phase, TaskPhase::Unknown { .. }))
    {
        out.push_str("the Slurm controller did not answer for some tasks; ask again later\n");
    }
    out
}
