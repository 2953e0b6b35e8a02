//! The one training loop every model kind runs: resume, the `Started` event, the epochs
//! (cancel, divergence, running loss, scalars, early stopping and checkpoints through
//! [`EpochEnd`]), the end of training and the [`Outcome`]. What differs between kinds is a
//! [`Task`].
//!
//! Per epoch: set the scheduled learning rate, let the task prepare the epoch (shuffle,
//! dropout generator), take its batch steps, evaluate, decide early stopping, emit the
//! epoch's scalars (with the test metrics when this is the last epoch), write the checkpoint,
//! then emit `EpochEnd`. Test results are part of the last epoch's records, so a run killed
//! after its last checkpoint resumes with nothing to redo but the artifacts.
//!
//! The test phase evaluates the checkpoint [`checkpoint::test_checkpoint`] names
//! (`select.test_checkpoint`): when that is an earlier epoch's, the task's model is set from
//! it for the test and stays so for the artifacts, while the last epoch's checkpoint still
//! saves the final weights, which resume needs.

use super::checkpoint::{self, CheckpointError};
use super::epoch_end::{EpochEnd, selected};
use super::optim::{Optimizer, scheduled_lr};
use super::{Outcome, RunContext, TrainError, finish, scalar};
use crate::events::{EventSink, RunEvent};
use crate::store::RunState;
use candle_core::{Device, Tensor};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Records of an epoch or an evaluation: `(tag, value)` in emission order.
pub type Records = Vec<(&'static str, f64)>;

/// One training batch's loss before the update, with the gradients that update would apply.
pub struct Forward<G> {
    /// The batch's mean loss; the driver stops the run as diverged when it is not finite.
    pub loss: f64,
    /// The batch's weight in the epoch's mean training loss (1 per batch, or its tokens).
    pub weight: f64,
    /// What [`Task::update`] applies when the loss is finite.
    pub gradients: G,
}

/// What one model kind trains: its data, model and optimizer, and the epoch-level work the
/// [`run`] loop cannot know.
///
/// The loop owns everything the kinds share (resume, events, cancel, divergence, the running
/// loss, the global step, scalar emission, `select.metric`, early stopping, checkpoints, the
/// finish), so a new model kind needs only its model, an implementation of this trait, its
/// spec section and one match arm in [`super::run`]; nothing in launch, store or summary
/// changes.
pub trait Task {
    /// What a batch step hands to [`Task::update`].
    type Gradients;

    /// Batch steps in every epoch (the last batch may be smaller).
    fn steps_per_epoch(&self) -> u64;
    /// Training examples in every epoch (for `time/samples_per_second`).
    fn samples_per_epoch(&self) -> usize;
    /// The device the model lives on (where checkpointed optimizer state is loaded).
    fn device(&self) -> &Device;
    /// The optimizer over the model's variables.
    fn optimizer(&mut self) -> &mut Optimizer;
    /// Sets the model's variables from the checkpoint directory `path`.
    fn restore_model(&mut self, path: &Path) -> Result<(), TrainError>;
    /// The model's variables, named as [`Task::restore_model`] reads them.
    fn model_tensors(&self) -> Vec<(String, Tensor)>;
    /// Prepares `epoch`'s batches and generators before its first step.
    fn begin_epoch(&mut self, epoch: usize) -> Result<(), TrainError>;
    /// The loss and gradients of batch `batch` (0-based) of the current epoch.
    fn forward(&mut self, batch: usize) -> Result<Forward<Self::Gradients>, TrainError>;
    /// Takes one optimizer step with `gradients`.
    fn update(&mut self, gradients: Self::Gradients) -> Result<(), TrainError>;
    /// The records of a trained epoch after `train/loss`, in this kind's emission order
    /// (`lr` among them, where this kind has always written it).
    fn evaluate(&mut self) -> Result<Records, TrainError>;
    /// The test records, written with the last epoch's, and each test item's result.
    fn test(&mut self) -> Result<Tested, TrainError>;
    /// Files and figures of a finished run (also when it resumed a finished checkpoint).
    fn artifacts(&mut self, step: u64, sink: &mut dyn EventSink) -> Result<(), TrainError>;
}

/// A test phase: its records and the per-item results behind those that are means over
/// the test items, which `diff --paired` resamples.
pub struct Tested {
    pub records: Records,
    /// The tested items' digest ([`crate::store::test_set_digest`] of the task's bytes).
    pub test_set: String,
    /// Per-item values by tag; each tag's mean is its record.
    pub items: Vec<(&'static str, Vec<f64>)>,
}

impl Tested {
    /// Emits the per-item results of the weights of `epoch`, then hands back the records
    /// (emitted after them, so a run whose test records are on disk has its items too).
    pub fn emit_items(self, sink: &mut dyn EventSink, epoch: usize) -> Result<Records, TrainError> {
        let count = self.items.first().map_or(0, |(_, v)| v.len());
        sink.emit(&RunEvent::TestItems(crate::store::TestItems {
            epoch,
            count,
            test_set: self.test_set,
            metrics: self
                .items
                .into_iter()
                .map(|(tag, values)| (tag.to_string(), values))
                .collect(),
        }))?;
        Ok(self.records)
    }
}

/// How one epoch's batch steps ended.
enum Steps {
    Done { mean_loss: f64, seconds: f64 },
    Diverged(String),
    Cancelled,
}

/// Trains `task` for the run `ctx` describes, resuming from its newest checkpoint.
pub fn run<T: Task>(
    ctx: &RunContext,
    task: &mut T,
    sink: &mut dyn EventSink,
) -> Result<Outcome, TrainError> {
    let cfg = &ctx.config;
    let mut end = EpochEnd::new(ctx);
    let (mut last_epoch, mut step, mut finished) = (0, 0, false);
    let mut tested_weights_loaded = false;
    if let Some((path, state)) =
        checkpoint::resume_point(&ctx.run_dir.checkpoints(), &ctx.training_id)?
    {
        task.restore_model(&path)?;
        let saved = checkpoint::read_optimizer(&path, task.device())?;
        task.optimizer()
            .load_state(&saved, state.optimizer_steps)
            .map_err(|e| CheckpointError::Corrupt {
                path: path.join("optimizer.safetensors"),
                message: e.to_string(),
            })?;
        step = state.step;
        finished = end.resume(&state);
        last_epoch = state.epoch;
    }
    let epochs = cfg.train.epochs;
    sink.emit(&RunEvent::Started {
        attempt: ctx.attempt,
        resumed_from: last_epoch,
        epochs,
        steps_per_epoch: task.steps_per_epoch(),
    })?;

    if !finished && ctx.pause_after.is_some_and(|e| e <= last_epoch) {
        // Already at (or past) the rung it was told to stop at: nothing to train.
        finish(sink, RunState::Paused, last_epoch, None)?;
        return Ok(Outcome::Paused { epoch: last_epoch });
    }
    for epoch in last_epoch + 1..=epochs {
        if finished {
            break;
        }
        let began = Instant::now();
        task.optimizer()
            .set_lr(scheduled_lr(&cfg.optimizer, epoch, epochs));
        let (train_loss, train_seconds) = match train_epoch(ctx, task, epoch, &mut step, sink)? {
            Steps::Done { mean_loss, seconds } => (mean_loss, seconds),
            Steps::Cancelled => {
                // The last checkpoint is the previous epoch's: resume replays this one.
                finish(sink, RunState::Cancelled, last_epoch, None)?;
                return Ok(Outcome::Cancelled { epoch: last_epoch });
            }
            Steps::Diverged(message) => {
                finish(sink, RunState::Diverged, epoch, Some(message.clone()))?;
                return Ok(Outcome::Diverged { epoch, message });
            }
        };
        let mut records = vec![("train/loss", train_loss)];
        records.extend(task.evaluate()?);
        let metric = selected(&cfg.select.metric, &records);
        let verdict = end.decide(epoch, metric);
        records.push(("time/epoch_seconds", began.elapsed().as_secs_f64()));
        records.push((
            "time/samples_per_second",
            task.samples_per_epoch() as f64 / train_seconds.max(1e-9),
        ));
        records.push(("time/train_seconds", train_seconds));
        let mut final_weights = None;
        if verdict.last {
            let current = checkpoint::Entry {
                epoch,
                metric: metric.is_finite().then_some(metric),
            };
            let chosen =
                checkpoint::test_checkpoint(&ctx.run_dir.checkpoints(), cfg, Some(current))?;
            if let Some(earlier) = chosen.filter(|&e| e != epoch) {
                // Restoring sets the variables in place: the final weights are copied out
                // first, for this epoch's checkpoint.
                final_weights = Some(detached(task.model_tensors())?);
                task.restore_model(
                    &ctx.run_dir
                        .checkpoints()
                        .join(checkpoint::dir_name(earlier)),
                )?;
            }
            tested_weights_loaded = true;
            let tested_epoch = chosen.unwrap_or(epoch);
            records.extend(task.test()?.emit_items(sink, tested_epoch)?);
        }
        emit(sink, epoch, step, records)?;
        let model = match final_weights {
            Some(weights) => weights,
            None => task.model_tensors(),
        };
        let optimizer = task.optimizer();
        let (optimizer_steps, optimizer_state) = (optimizer.steps(), optimizer.state_tensors());
        end.commit(
            epoch,
            step,
            optimizer_steps,
            metric,
            verdict,
            model,
            optimizer_state,
        )?;
        sink.emit(&RunEvent::EpochEnd { epoch, step })?;
        last_epoch = epoch;
        finished = verdict.last;
        // A rung: stop on this epoch's checkpoint, so resuming loses nothing. A last epoch
        // is not a rung: it finishes (and tests) as usual.
        if !finished && ctx.pause_after == Some(epoch) {
            finish(sink, RunState::Paused, epoch, None)?;
            return Ok(Outcome::Paused { epoch });
        }
    }
    if !tested_weights_loaded {
        // Resumed after its last checkpoint: the artifacts show the tested weights too.
        let dir = ctx.run_dir.checkpoints();
        if let Some(earlier) =
            checkpoint::test_checkpoint(&dir, cfg, None)?.filter(|&e| e != last_epoch)
        {
            task.restore_model(&dir.join(checkpoint::dir_name(earlier)))?;
        }
    }
    conclude(task, sink, last_epoch, step)
}

/// Copies of `tensors` that do not share storage with the variables they came from.
fn detached(tensors: Vec<(String, Tensor)>) -> Result<Vec<(String, Tensor)>, TrainError> {
    tensors
        .into_iter()
        .map(|(name, t)| Ok((name, t.copy()?)))
        .collect()
}

/// Emits `records` as scalars at `(epoch, step)`.
pub fn emit(
    sink: &mut dyn EventSink,
    epoch: usize,
    step: u64,
    records: Records,
) -> Result<(), TrainError> {
    for (tag, value) in records {
        scalar(sink, epoch, step, tag, value)?;
    }
    Ok(())
}

/// The end of a finished run: the task's artifacts, then the `Finished` event.
pub fn conclude<T: Task>(
    task: &mut T,
    sink: &mut dyn EventSink,
    epoch: usize,
    step: u64,
) -> Result<Outcome, TrainError> {
    task.artifacts(step, sink)?;
    finish(sink, RunState::Done, epoch, None)?;
    Ok(Outcome::Done { epoch })
}

/// The batch steps of `epoch`, counting the run's global `step`.
fn train_epoch<T: Task>(
    ctx: &RunContext,
    task: &mut T,
    epoch: usize,
    step: &mut u64,
    sink: &mut dyn EventSink,
) -> Result<Steps, TrainError> {
    let started = Instant::now();
    task.begin_epoch(epoch)?;
    let every = ctx.config.train.log_every as u64;
    let (mut sum, mut weight) = (0f64, 0f64);
    let (mut window, mut window_n) = (0f64, 0u64);
    for batch in 0..task.steps_per_epoch() as usize {
        if ctx.cancel.load(Ordering::SeqCst) {
            return Ok(Steps::Cancelled);
        }
        let out = task.forward(batch)?;
        if !out.loss.is_finite() {
            return Ok(Steps::Diverged(format!(
                "training loss became {} at step {} (epoch {epoch}, batch {})",
                out.loss,
                *step + 1,
                batch + 1
            )));
        }
        task.update(out.gradients)?;
        *step += 1;
        sum += out.loss * out.weight;
        weight += out.weight;
        window += out.loss;
        window_n += 1;
        if every > 0 && step.is_multiple_of(every) {
            scalar(
                sink,
                epoch,
                *step,
                "train/running_loss",
                window / window_n as f64,
            )?;
            (window, window_n) = (0.0, 0);
        }
    }
    Ok(Steps::Done {
        mean_loss: sum / weight.max(1.0),
        seconds: started.elapsed().as_secs_f64(),
    })
}
