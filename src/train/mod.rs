// TEMP: replaced at merge (the images engineer's training loop).
//! Stand-in training: fake epochs with sleeps and a deterministic fake loss, honouring
//! cancel and resuming from a fake checkpoint; diverges when `optimizer.lr > 1e3`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::events::{EventSink, RunEvent, SinkError};
use crate::spec::Spec;
use crate::store::{RunDir, RunState, write_atomic};

/// Everything a run needs.
pub struct RunContext {
    pub run_dir: RunDir,
    pub config: Spec,
    pub run_id: String,
    pub training_id: String,
    pub threads: usize,
    pub cancel: Arc<AtomicBool>,
    pub reuse_training_from: Option<RunDir>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done { epoch: usize },
    Diverged { epoch: usize, message: String },
    Cancelled { epoch: usize },
}

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Runs (or resumes) the fake training.
pub fn run(ctx: &RunContext, sink: &mut dyn EventSink) -> Result<Outcome, TrainError> {
    let c = &ctx.config;
    let epochs = c.train.epochs;
    let steps = (c.data.train_limit.max(100) / c.train.batch_size.max(1)).max(1) as u64;
    let ckpt = ctx.run_dir.checkpoints();
    std::fs::create_dir_all(&ckpt)?;
    let resumed = (1..=epochs)
        .rev()
        .find(|e| ckpt.join(format!("epoch-{e}.txt")).exists())
        .unwrap_or(0);
    sink.emit(&RunEvent::Started {
        attempt: 0,
        resumed_from: resumed,
        epochs,
        steps_per_epoch: steps,
    })?;
    let lr = c.optimizer.lr;
    let seed = c.seed as f64;
    for epoch in resumed + 1..=epochs {
        for s in 1..=steps {
            if ctx.cancel.load(Ordering::SeqCst) {
                return Ok(Outcome::Cancelled { epoch: epoch - 1 });
            }
            std::thread::sleep(Duration::from_millis(30));
            let step = (epoch as u64 - 1) * steps + s;
            if lr > 1e3 {
                sink.emit(&scalar(epoch, step, "train/loss", f64::NAN))?;
                let message = format!("train/loss is NaN at step {step}");
                sink.emit(&RunEvent::Finished {
                    state: RunState::Diverged,
                    epoch: epoch - 1,
                    message: Some(message.clone()),
                })?;
                return Ok(Outcome::Diverged {
                    epoch: epoch - 1,
                    message,
                });
            }
            if c.train.log_every > 0 && s % (c.train.log_every as u64) == 0 {
                sink.emit(&scalar(epoch, step, "train/loss", loss(lr, seed, step)))?;
            }
        }
        let step = epoch as u64 * steps;
        sink.emit(&scalar(epoch, step, "train/loss", loss(lr, seed, step)))?;
        sink.emit(&scalar(epoch, step, "dev/loss", loss(lr, seed, step) * 1.1))?;
        sink.emit(&scalar(
            epoch,
            step,
            "dev/accuracy",
            1.0 - loss(lr, seed, step) / 3.0,
        ))?;
        sink.emit(&scalar(
            epoch,
            step,
            "time/epoch_seconds",
            steps as f64 * 0.03,
        ))?;
        write_atomic(
            &ckpt.join(format!("epoch-{epoch}.txt")),
            format!("{epoch}").as_bytes(),
        )?;
        sink.emit(&RunEvent::EpochEnd { epoch, step })?;
    }
    let step = epochs as u64 * steps;
    sink.emit(&scalar(
        epochs,
        step,
        "test/accuracy",
        1.0 - loss(lr, seed, step) / 2.5,
    ))?;
    sink.emit(&RunEvent::Finished {
        state: RunState::Done,
        epoch: epochs,
        message: None,
    })?;
    Ok(Outcome::Done { epoch: epochs })
}

fn loss(lr: f64, seed: f64, step: u64) -> f64 {
    2.3 * (-(lr * 300.0).min(5.0) * step as f64 / 50.0).exp()
        + (seed * 0.001 + lr).sin().abs() * 0.01
}

fn scalar(epoch: usize, step: u64, tag: &str, value: f64) -> RunEvent {
    RunEvent::Scalar {
        epoch,
        step,
        tag: tag.into(),
        value,
    }
}
