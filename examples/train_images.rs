//! Trains one image classifier in-process and prints its per-epoch metrics; used to measure
//! the quality bar (homework hyper-parameters on the shipped Fashion-MNIST subset).
//!
//! ```text
//! cargo run --release --example train_images -- [--threads N] [--dir RUN_DIR] [--set key=value ...]
//! e.g. --set optimizer.lr=0.0005 --set train.epochs=5 --set data.train_limit=2000
//! ```
//! Keys: seed, optimizer.lr, optimizer.kind (sgd|adam|adamw), train.epochs, train.batch_size,
//! model.kind (cnn|mlp), model.dropout, data.train_limit, data.test_limit, data.dir,
//! data.format (idx|npz), data.train, data.train_labels, data.test, data.test_labels.

use orchestrate::events::{EventSink, RunEvent, SinkError};
use orchestrate::spec::{DataFormat, ModelKind, OptimizerKind, Spec};
use orchestrate::store::RunDir;
use orchestrate::train::{Kernels, RunContext, configure_threads, run};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Prints epoch-level scalars as they come.
struct Printer;

impl EventSink for Printer {
    fn emit(&mut self, event: &RunEvent) -> Result<(), SinkError> {
        match event {
            RunEvent::Scalar {
                epoch, tag, value, ..
            } if !tag.ends_with("running_loss") => {
                println!("epoch {epoch:>2} {tag:<24} {value:.4}")
            }
            RunEvent::Finished { state, epoch, .. } => {
                println!("finished {state:?} at epoch {epoch}")
            }
            _ => {}
        }
        Ok(())
    }
}

fn apply(spec: &mut Spec, key: &str, value: &str) -> Result<(), String> {
    let num = || value.parse::<f64>().map_err(|e| format!("{key}: {e}"));
    let int = || value.parse::<usize>().map_err(|e| format!("{key}: {e}"));
    match key {
        "seed" => spec.seed = int()? as u64,
        "optimizer.lr" => spec.optimizer.lr = num()?,
        "optimizer.kind" => {
            spec.optimizer.kind = match value {
                "sgd" => OptimizerKind::Sgd,
                "adam" => OptimizerKind::Adam,
                "adamw" => OptimizerKind::Adamw,
                _ => return Err(format!("{key}: {value}")),
            }
        }
        "train.epochs" => spec.train.epochs = int()?,
        "train.batch_size" => spec.train.batch_size = int()?,
        "model.kind" => {
            spec.model.kind = match value {
                "cnn" => ModelKind::Cnn,
                "mlp" => ModelKind::Mlp,
                _ => return Err(format!("{key}: {value}")),
            }
        }
        "model.dropout" => spec.model.dropout = num()?,
        "data.train_limit" => spec.data.train_limit = int()?,
        "data.test_limit" => spec.data.test_limit = int()?,
        "data.dir" => spec.data.dir = value.into(),
        "data.format" => {
            spec.data.format = match value {
                "idx" => DataFormat::Idx,
                "npz" => DataFormat::Npz,
                _ => return Err(format!("{key}: {value}")),
            }
        }
        "data.train" => spec.data.train = value.into(),
        "data.train_labels" => spec.data.train_labels = value.into(),
        "data.test" => spec.data.test = value.into(),
        "data.test_labels" => spec.data.test_labels = value.into(),
        _ => return Err(format!("unknown key {key}")),
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut spec = Spec {
        name: "example".into(),
        ..Spec::default()
    };
    spec.optimizer.lr = 0.0005;
    spec.train.epochs = 5;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut threads = 0;
    let mut run_dir = None;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--set" if i + 1 < args.len() => {
                let (k, v) = args[i + 1].split_once('=').ok_or("--set key=value")?;
                apply(&mut spec, k, v)?;
                i += 2;
            }
            "--dir" if i + 1 < args.len() => {
                run_dir = Some(std::path::PathBuf::from(&args[i + 1]));
                i += 2;
            }
            "--threads" if i + 1 < args.len() => {
                threads = args[i + 1].parse()?;
                i += 2;
            }
            other => return Err(format!("unexpected argument {other}").into()),
        }
    }
    // SAFETY: first thing in main, no other thread exists yet.
    let threads = unsafe { configure_threads(threads) };
    // Without --dir, checkpoints and figures go to a temporary directory removed at exit.
    let tmp = tempfile::tempdir()?;
    let ctx = RunContext {
        run_dir: RunDir::at(run_dir.unwrap_or_else(|| tmp.path().to_path_buf())),
        config: spec,
        run_id: "example".into(),
        training_id: "example".into(),
        threads,
        cancel: Arc::new(AtomicBool::new(false)),
        reuse_training_from: None,
        attempt: 1,
        kernels: Kernels::default(),
        pause_after: None,
    };
    println!("threads {threads}");
    let outcome = run(&ctx, &mut Printer)?;
    println!("{outcome:?}");
    Ok(())
}
