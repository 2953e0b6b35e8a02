//! The training loop of the image classifiers (`cnn`, `mlp`).
//!
//! Per epoch: shuffle the training split with the epoch's generator, take `batch_size`
//! steps (the last batch may be smaller), evaluate dev, decide early stopping, evaluate test
//! when this is the last epoch, write the checkpoint, then emit `EpochEnd`. Test results are
//! part of the last epoch's records, so a run killed after its last checkpoint resumes with
//! nothing to redo but the activation figures.

use super::activations::{encode_png, normalise, tile, write_atomically};
use super::checkpoint;
use super::epoch_end::{EpochEnd, selected};
use super::optim::{Optimizer, named_vars, scheduled_lr};
use super::seeding::{Stream, stream_rng};
use super::{Outcome, RunContext, TrainError, finish, scalar, select_device};
use crate::data::{ImageSet, load_image_splits, permutation};
use crate::events::{EventSink, RunEvent};
use crate::models::init::seeded_var_builder;
use crate::models::{ImageClassifier, build_image_classifier};
use crate::store::{RunDir, RunState, RunStatus};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Images per forward pass when evaluating (no gradients are kept, so larger is fine).
const EVAL_BATCH: usize = 1000;
/// Name of the generator scheme recorded in checkpoints (see [`super::seeding`]).
const RNG_SCHEME: &str = "chacha8-stream-per-epoch";
/// Metrics the selection and early stopping can follow for image runs (validation checks
/// `select.metric` against them).
pub const SELECTABLE: [&str; 3] = ["dev/accuracy", "dev/loss", "train/loss"];
/// Each activation-map pixel is drawn this many times larger.
const FIGURE_SCALE: usize = 4;
/// Activation maps per row of the figure.
const FIGURE_COLUMNS: usize = 4;

/// A split as device tensors: `x` `(N, 1, H, W)` f32, `y` `(N)` u32.
struct Split {
    x: Tensor,
    y: Tensor,
    n: usize,
}

impl Split {
    fn new(set: &ImageSet, device: &Device) -> candle_core::Result<Split> {
        let n = set.len();
        let x = Tensor::from_slice(&set.pixels, (n, 1, set.rows, set.cols), &Device::Cpu)?
            .to_device(device)?;
        let y = Tensor::from_slice(&set.labels, n, &Device::Cpu)?.to_device(device)?;
        Ok(Split { x, y, n })
    }
}

/// Mean loss and accuracy of a split.
struct Eval {
    loss: f64,
    accuracy: f64,
}

fn evaluate(model: &dyn ImageClassifier, split: &Split) -> candle_core::Result<Eval> {
    let (loss, accuracy) = evaluate_tensors(model, &split.x, &split.y)?;
    Ok(Eval { loss, accuracy })
}

/// Mean NLL loss and accuracy of `model` on images `x` (N x 1 x H x W) with labels `y` (N),
/// in batches of 1000 without dropout; the benchmark times exactly this.
pub fn evaluate_tensors(
    model: &dyn ImageClassifier,
    x: &Tensor,
    y: &Tensor,
) -> candle_core::Result<(f64, f64)> {
    let n_all = y.dim(0)?;
    let (mut loss_sum, mut correct) = (0f64, 0u64);
    for start in (0..n_all).step_by(EVAL_BATCH) {
        let len = EVAL_BATCH.min(n_all - start);
        let xb = x.narrow(0, start, len)?;
        let yb = y.narrow(0, start, len)?;
        let logp = model.forward(&xb, None)?;
        let loss = candle_nn::loss::nll(&logp, &yb)?.to_scalar::<f32>()?;
        loss_sum += f64::from(loss) * len as f64;
        correct += u64::from(
            logp.argmax(1)?
                .eq(&yb)?
                .to_dtype(DType::U32)?
                .sum_all()?
                .to_scalar::<u32>()?,
        );
    }
    let n = n_all.max(1) as f64;
    Ok((loss_sum / n, correct as f64 / n))
}

/// How one epoch of training ended.
enum EpochRun {
    Done { mean_loss: f64, seconds: f64 },
    Diverged(String),
    Cancelled,
}

/// Everything the epoch loop mutates.
struct Trainer<'a> {
    ctx: &'a RunContext,
    model: Box<dyn ImageClassifier>,
    opt: Optimizer,
    step: u64,
}

impl Trainer<'_> {
    fn train_epoch(
        &mut self,
        train: &Split,
        epoch: usize,
        sink: &mut dyn EventSink,
    ) -> Result<EpochRun, TrainError> {
        let cfg = &self.ctx.config;
        let started = Instant::now();
        let batch = cfg.train.batch_size;
        let order = permutation(
            train.n,
            &mut stream_rng(cfg.seed, Stream::Shuffle, epoch as u64),
        );
        let order = Tensor::from_vec(order, train.n, &Device::Cpu)?.to_device(train.x.device())?;
        // One gather per epoch; batches are then cheap views.
        let xs = train.x.index_select(&order, 0)?;
        let ys = train.y.index_select(&order, 0)?;
        let mut dropout_rng = stream_rng(cfg.seed, Stream::Dropout, epoch as u64);
        let steps = train.n.div_ceil(batch);
        let (mut sum, mut window, mut window_n) = (0f64, 0f64, 0u64);
        for b in 0..steps {
            if self.ctx.cancel.load(Ordering::SeqCst) {
                return Ok(EpochRun::Cancelled);
            }
            let start = b * batch;
            let len = batch.min(train.n - start);
            let logp = self
                .model
                .forward(&xs.narrow(0, start, len)?, Some(&mut dropout_rng))?;
            let loss = candle_nn::loss::nll(&logp, &ys.narrow(0, start, len)?)?;
            let value = f64::from(loss.to_scalar::<f32>()?);
            if !value.is_finite() {
                return Ok(EpochRun::Diverged(format!(
                    "training loss became {value} at step {} (epoch {epoch}, batch {})",
                    self.step + 1,
                    b + 1
                )));
            }
            self.opt.backward_step(&loss)?;
            self.step += 1;
            sum += value;
            window += value;
            window_n += 1;
            let every = cfg.train.log_every as u64;
            if every > 0 && self.step.is_multiple_of(every) {
                let mean = window / window_n as f64;
                scalar(sink, epoch, self.step, "train/running_loss", mean)?;
                (window, window_n) = (0.0, 0);
            }
        }
        Ok(EpochRun::Done {
            mean_loss: sum / steps.max(1) as f64,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// The attempt number the worker recorded in `status.json` (1 when there is none).
fn attempt_of(run_dir: &RunDir) -> u32 {
    std::fs::read(run_dir.status())
        .ok()
        .and_then(|b| serde_json::from_slice::<RunStatus>(&b).ok())
        .map_or(1, |s| RunStatus::current_attempt(Some(&s)))
}

fn check_config(ctx: &RunContext) -> Result<(), TrainError> {
    let cfg = &ctx.config;
    let bad = |key: &str, message: String| {
        Err(TrainError::Config {
            key: key.into(),
            message,
        })
    };
    if cfg.train.batch_size == 0 {
        return bad("train.batch_size", "must be at least 1".into());
    }
    if cfg.train.epochs == 0 {
        return bad("train.epochs", "must be at least 1".into());
    }
    if !SELECTABLE.contains(&cfg.select.metric.as_str()) {
        return bad(
            "select.metric",
            format!(
                "{:?} is not recorded by image classifiers; use one of {SELECTABLE:?}",
                cfg.select.metric
            ),
        );
    }
    Ok(())
}

/// Trains a `cnn` or `mlp` run; see the module documentation.
pub fn run(ctx: &RunContext, sink: &mut dyn EventSink) -> Result<Outcome, TrainError> {
    check_config(ctx)?;
    let cfg = &ctx.config;
    let device = select_device(&cfg.train.device)?;
    let splits = load_image_splits(&cfg.data, &mut stream_rng(cfg.seed, Stream::Split, 0))?;
    let (train, dev, test) = (
        Split::new(&splits.train, &device)?,
        Split::new(&splits.dev, &device)?,
        Split::new(&splits.test, &device)?,
    );
    let map = VarMap::new();
    let vb = seeded_var_builder(
        &map,
        stream_rng(cfg.seed, Stream::Init, 0),
        DType::F32,
        &device,
    );
    let model = build_image_classifier(
        &cfg.model,
        splits.train.rows,
        splits.train.cols,
        splits.train.classes,
        vb,
    )?;
    let opt = Optimizer::new(&cfg.optimizer, named_vars(&map))?;
    let mut trainer = Trainer {
        ctx,
        model,
        opt,
        step: 0,
    };
    let mut end = EpochEnd::new(ctx, RNG_SCHEME);
    let ck_dir = ctx.run_dir.checkpoints();
    let (mut last_epoch, mut finished) = (0, false);
    if let Some((path, state)) = checkpoint::resume_point(&ck_dir, &ctx.training_id)? {
        let epoch = state.epoch;
        checkpoint::restore_model(&path, &map)?;
        let opt_state = checkpoint::read_optimizer(&path, &device)?;
        trainer
            .opt
            .load_state(&opt_state, state.optimizer_steps)
            .map_err(|e| checkpoint::CheckpointError::Corrupt {
                path: path.join("optimizer.safetensors"),
                message: e.to_string(),
            })?;
        trainer.step = state.step;
        finished = end.resume(&state);
        last_epoch = epoch;
    }
    let epochs = cfg.train.epochs;
    sink.emit(&RunEvent::Started {
        attempt: attempt_of(&ctx.run_dir),
        resumed_from: last_epoch,
        epochs,
        steps_per_epoch: train.n.div_ceil(cfg.train.batch_size) as u64,
    })?;

    let first = last_epoch + 1;
    for epoch in first..=epochs {
        if finished {
            break;
        }
        trainer
            .opt
            .set_lr(scheduled_lr(&cfg.optimizer, epoch, epochs));
        let (train_loss, train_seconds) = match trainer.train_epoch(&train, epoch, sink)? {
            EpochRun::Done { mean_loss, seconds } => (mean_loss, seconds),
            EpochRun::Cancelled => {
                finish(sink, RunState::Cancelled, last_epoch, None)?;
                return Ok(Outcome::Cancelled { epoch: last_epoch });
            }
            EpochRun::Diverged(message) => {
                finish(sink, RunState::Diverged, epoch, Some(message.clone()))?;
                return Ok(Outcome::Diverged { epoch, message });
            }
        };
        let epoch_started = Instant::now();
        let dev_eval = evaluate(trainer.model.as_ref(), &dev)?;
        let epoch_seconds = train_seconds + epoch_started.elapsed().as_secs_f64();
        let metric = selected(
            &cfg.select.metric,
            &[
                ("dev/accuracy", dev_eval.accuracy),
                ("dev/loss", dev_eval.loss),
                ("train/loss", train_loss),
            ],
        );
        let verdict = end.decide(epoch, metric);
        let last = verdict.last;
        let step = trainer.step;
        scalar(sink, epoch, step, "train/loss", train_loss)?;
        scalar(sink, epoch, step, "dev/loss", dev_eval.loss)?;
        scalar(sink, epoch, step, "dev/accuracy", dev_eval.accuracy)?;
        scalar(sink, epoch, step, "lr", trainer.opt.lr())?;
        scalar(sink, epoch, step, "time/epoch_seconds", epoch_seconds)?;
        scalar(
            sink,
            epoch,
            step,
            "time/samples_per_second",
            train.n as f64 / train_seconds.max(1e-9),
        )?;
        if last {
            let test_eval = evaluate(trainer.model.as_ref(), &test)?;
            scalar(sink, epoch, step, "test/loss", test_eval.loss)?;
            scalar(sink, epoch, step, "test/accuracy", test_eval.accuracy)?;
        }
        end.commit(
            epoch,
            step,
            trainer.opt.steps(),
            metric,
            verdict,
            checkpoint::varmap_tensors(&map),
            trainer.opt.state_tensors(),
        )?;
        sink.emit(&RunEvent::EpochEnd { epoch, step })?;
        last_epoch = epoch;
        finished = last;
    }
    write_activation_figures(
        ctx,
        trainer.model.as_ref(),
        &splits.dev,
        &device,
        trainer.step,
        sink,
    )?;
    finish(sink, RunState::Done, last_epoch, None)?;
    Ok(Outcome::Done { epoch: last_epoch })
}

/// Saves the first convolution's post-activation feature maps (after ReLU/tanh, before
/// pooling) for dev image 0 as `artifacts/conv1_activations.png`, the image itself as
/// `artifacts/input.png`, and emits both as `Image` events. Models without convolutions
/// produce nothing.
fn write_activation_figures(
    ctx: &RunContext,
    model: &dyn ImageClassifier,
    dev: &ImageSet,
    device: &Device,
    step: u64,
    sink: &mut dyn EventSink,
) -> Result<(), TrainError> {
    let pixels = dev.pixels_of(0);
    let x =
        Tensor::from_slice(pixels, (1, 1, dev.rows, dev.cols), &Device::Cpu)?.to_device(device)?;
    let Some(maps) = model.first_conv_activations(&x) else {
        return Ok(());
    };
    let maps = maps?.squeeze(0)?.to_device(&Device::Cpu)?;
    let (_, h, w) = maps.dims3()?;
    let values: Vec<f32> = maps.flatten_all()?.to_vec1()?;
    let normalised: Vec<Vec<u8>> = values.chunks(h * w).map(normalise).collect();
    let grid = tile(&normalised, h, w, FIGURE_COLUMNS, FIGURE_SCALE, 2);
    let input_bytes: Vec<u8> = pixels
        .iter()
        .map(|&p| (p * 255.0).round().clamp(0.0, 255.0) as u8)
        .collect();
    let input = tile(&[input_bytes], dev.rows, dev.cols, 1, FIGURE_SCALE, 0);
    let dir = ctx.run_dir.artifacts();
    std::fs::create_dir_all(&dir).map_err(|source| TrainError::Io {
        path: dir.clone(),
        source,
    })?;
    for (name, tag, image) in [
        ("conv1_activations.png", "conv1/activations", &grid),
        ("input.png", "conv1/input", &input),
    ] {
        let path = dir.join(name);
        let bytes = encode_png(image).map_err(|e| TrainError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        write_atomically(&path, &bytes).map_err(|source| TrainError::Io {
            path: path.clone(),
            source,
        })?;
        sink.emit(&RunEvent::Image {
            step,
            tag: tag.into(),
            width: image.width,
            height: image.height,
            channels: 1,
            pixels: image.pixels.clone(),
        })?;
    }
    Ok(())
}
