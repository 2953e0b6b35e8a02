//! `orchestrate predict`: translate sentences or classify images with a trained run (or an
//! experiment's winner), printing one line (or one JSON object) per input.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use crate::error::{Error, exit};
use crate::predict;
use crate::spec::TestCheckpoint;

/// Which checkpoint to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckpointArg {
    /// The best epoch by `select.metric` (kept by `keep_best`).
    Best,
    /// The weights training ended with.
    Final,
}

/// Arguments of `orchestrate predict`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// An experiment (name under --runs-dir, directory or spec file): its winner; or
    /// EXPERIMENT/RUN, a run by id, id prefix or name.
    #[arg(value_name = "RUN|EXPERIMENT")]
    pub target: String,
    /// A sentence to translate (translation runs); without it, sentences are read from
    /// stdin, one per line.
    #[arg(long, conflicts_with = "images")]
    pub input: Option<String>,
    /// Images to classify (image runs): IDX (`.gz` too), `.npz` or an 8-bit grey `.png`.
    #[arg(long, value_name = "FILE")]
    pub images: Option<PathBuf>,
    /// The checkpoint to load; default: best when the run kept it, else final.
    #[arg(long, value_enum)]
    pub checkpoint: Option<CheckpointArg>,
    /// One JSON object per input line instead of plain text.
    #[arg(long)]
    pub json: bool,
    /// Where experiments live.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
}

/// Runs the command; returns the exit code.
pub fn execute(args: &Args) -> Result<i32, Error> {
    let target = predict::resolve(&args.target, &args.runs_dir)?;
    let pick = args.checkpoint.map(|c| match c {
        CheckpointArg::Best => TestCheckpoint::Best,
        CheckpointArg::Final => TestCheckpoint::Final,
    });
    predict::check_input(&target, args.images.is_some())?;
    let (path, state) = predict::checkpoint_of(&target, pick)?;
    let mut out = std::io::stdout().lock();
    let write_err = |e: std::io::Error| Error::io("stdout", e);
    // On stderr, so stdout holds predictions only (one per input line) for scripts.
    let announce = || {
        eprintln!(
            "predict: run {} ({}), weights of epoch {} ({})",
            target.id,
            target.name,
            state.epoch,
            path.display()
        )
    };
    if let Some(images) = &args.images {
        let predictions = predict::classify(&target, &path, images)?;
        announce();
        for (index, p) in predictions.iter().enumerate() {
            let line = if args.json {
                serde_json::json!({
                    "index": index,
                    "class": p.class,
                    "probabilities": p.probabilities,
                    "run": target.id,
                    "epoch": state.epoch,
                })
                .to_string()
            } else {
                format!("{index}\t{}", p.class)
            };
            writeln!(out, "{line}").map_err(write_err)?;
        }
        return Ok(exit::OK);
    }
    let sentences: Vec<String> = match &args.input {
        Some(text) => vec![text.clone()],
        None => std::io::stdin()
            .lock()
            .lines()
            .collect::<Result<_, _>>()
            .map_err(|e| Error::io("stdin", e))?,
    };
    let translations = predict::translate(&target, &path, &sentences, &args.runs_dir)?;
    announce();
    for (source, translation) in sentences.iter().zip(&translations) {
        let line = if args.json {
            serde_json::json!({
                "input": source,
                "translation": translation,
                "run": target.id,
                "epoch": state.epoch,
            })
            .to_string()
        } else {
            translation.clone()
        };
        writeln!(out, "{line}").map_err(write_err)?;
    }
    Ok(exit::OK)
}
