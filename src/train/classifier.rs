//! The image classifiers (`cnn`, `mlp`) as a task of the training [`driver`].
//!
//! Per epoch: shuffle the training split with the epoch's generator and take `batch_size`
//! steps (the last batch may be smaller); records `dev/loss`, `dev/accuracy` and `lr` after
//! `train/loss`, `test/loss` and `test/accuracy` with the last epoch, and the first
//! convolution's activation figures at the end.

use super::activations::{encode_png, normalise, tile, write_atomically};
use super::checkpoint;
use super::driver::{self, Forward, Records, Task, Tested};
use super::optim::{Optimizer, named_vars};
use super::seeding::{Stream, stream_rng};
use super::{Outcome, RunContext, TrainError, select_device};
use crate::data::{ImageSet, ImageSplits, load_image_splits, permutation};
use crate::events::{EventSink, RunEvent};
use crate::models::init::seeded_var_builder;
use crate::models::{ImageClassifier, build_image_classifier};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use rand_chacha::ChaCha8Rng;
use std::path::Path;

/// Images per forward pass when evaluating (no gradients are kept, so larger is fine).
const EVAL_BATCH: usize = 1000;
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
    let (loss, accuracy, _) = evaluate_batches(model, x, y, false)?;
    Ok((loss, accuracy))
}

/// [`evaluate_tensors`], and with `per_image` each image's correctness (1 or 0) too.
fn evaluate_batches(
    model: &dyn ImageClassifier,
    x: &Tensor,
    y: &Tensor,
    per_image: bool,
) -> candle_core::Result<(f64, f64, Vec<f64>)> {
    let n_all = y.dim(0)?;
    let (mut loss_sum, mut correct) = (0f64, 0u64);
    let mut items = Vec::with_capacity(if per_image { n_all } else { 0 });
    for start in (0..n_all).step_by(EVAL_BATCH) {
        let len = EVAL_BATCH.min(n_all - start);
        let xb = x.narrow(0, start, len)?;
        let yb = y.narrow(0, start, len)?;
        let logp = model.forward(&xb, None)?;
        let loss = candle_nn::loss::nll(&logp, &yb)?.to_scalar::<f32>()?;
        loss_sum += f64::from(loss) * len as f64;
        let hits = logp.argmax(1)?.eq(&yb)?.to_dtype(DType::U32)?;
        correct += u64::from(hits.sum_all()?.to_scalar::<u32>()?);
        if per_image {
            items.extend(hits.to_vec1::<u32>()?.into_iter().map(f64::from));
        }
    }
    let n = n_all.max(1) as f64;
    Ok((loss_sum / n, correct as f64 / n, items))
}

/// A trained classifier for `rows x cols` images, its weights read from the checkpoint
/// directory `path` (the model is built as training builds it, then every variable is set).
pub fn load_trained(
    config: &crate::spec::Spec,
    rows: usize,
    cols: usize,
    path: &Path,
    device: &Device,
) -> Result<Box<dyn ImageClassifier>, TrainError> {
    let map = VarMap::new();
    let vb = seeded_var_builder(
        &map,
        stream_rng(config.training_seed(), Stream::Init, 0),
        DType::F32,
        device,
    );
    let model = build_image_classifier(
        &config.model,
        rows,
        cols,
        crate::data::images::MNIST_CLASSES,
        Default::default(),
        vb,
    )?;
    checkpoint::restore_model(path, &map)?;
    Ok(model)
}

/// Class probabilities of each image of `set` (one row of `classes` values per image), in
/// evaluation's batches and without dropout, so the argmax is the class evaluation counts.
pub fn class_probabilities(
    model: &dyn ImageClassifier,
    set: &ImageSet,
    device: &Device,
) -> candle_core::Result<Vec<Vec<f32>>> {
    let x = Tensor::from_slice(
        &set.pixels,
        (set.len(), 1, set.rows, set.cols),
        &Device::Cpu,
    )?
    .to_device(device)?;
    let mut out = Vec::with_capacity(set.len());
    for start in (0..set.len()).step_by(EVAL_BATCH) {
        let len = EVAL_BATCH.min(set.len() - start);
        let logp = model.forward(&x.narrow(0, start, len)?, None)?;
        out.extend(logp.exp()?.to_device(&Device::Cpu)?.to_vec2::<f32>()?);
    }
    Ok(out)
}

/// A `cnn` or `mlp` run as a [`Task`] of the training driver.
struct Classifier<'a> {
    ctx: &'a RunContext,
    device: Device,
    splits: ImageSplits,
    train: Split,
    dev: Split,
    test: Split,
    map: VarMap,
    model: Box<dyn ImageClassifier>,
    opt: Optimizer,
    /// Set by [`Task::begin_epoch`].
    epoch: Option<Epoch>,
}

/// The current epoch's shuffled training images and labels, and its dropout generator.
struct Epoch {
    xs: Tensor,
    ys: Tensor,
    dropout_rng: ChaCha8Rng,
}

impl Task for Classifier<'_> {
    /// The batch's loss, whose backward pass the update takes.
    type Gradients = Tensor;

    fn steps_per_epoch(&self) -> u64 {
        self.train.n.div_ceil(self.ctx.config.train.batch_size) as u64
    }

    fn samples_per_epoch(&self) -> usize {
        self.train.n
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn optimizer(&mut self) -> &mut Optimizer {
        &mut self.opt
    }

    fn restore_model(&mut self, path: &Path) -> Result<(), TrainError> {
        Ok(checkpoint::restore_model(path, &self.map)?)
    }

    fn model_tensors(&self) -> Vec<(String, Tensor)> {
        checkpoint::varmap_tensors(&self.map)
    }

    fn begin_epoch(&mut self, epoch: usize) -> Result<(), TrainError> {
        let seed = self.ctx.config.training_seed();
        let n = self.train.n;
        let order = permutation(n, &mut stream_rng(seed, Stream::Shuffle, epoch as u64));
        let order = Tensor::from_vec(order, n, &Device::Cpu)?.to_device(&self.device)?;
        // One gather per epoch; batches are then cheap views.
        self.epoch = Some(Epoch {
            xs: self.train.x.index_select(&order, 0)?,
            ys: self.train.y.index_select(&order, 0)?,
            dropout_rng: stream_rng(seed, Stream::Dropout, epoch as u64),
        });
        Ok(())
    }

    fn forward(&mut self, batch: usize) -> Result<Forward<Tensor>, TrainError> {
        let Epoch {
            xs,
            ys,
            dropout_rng,
        } = self
            .epoch
            .as_mut()
            .expect("the driver begins each epoch before its steps");
        let size = self.ctx.config.train.batch_size;
        let start = batch * size;
        let len = size.min(self.train.n - start);
        let logp = self
            .model
            .forward(&xs.narrow(0, start, len)?, Some(dropout_rng))?;
        let loss = candle_nn::loss::nll(&logp, &ys.narrow(0, start, len)?)?;
        Ok(Forward {
            loss: f64::from(loss.to_scalar::<f32>()?),
            weight: 1.0,
            gradients: loss,
        })
    }

    fn update(&mut self, loss: Tensor) -> Result<(), TrainError> {
        Ok(self.opt.backward_step(&loss)?)
    }

    fn evaluate(&mut self) -> Result<Records, TrainError> {
        let dev = evaluate(self.model.as_ref(), &self.dev)?;
        Ok(vec![
            ("dev/loss", dev.loss),
            ("dev/accuracy", dev.accuracy),
            ("lr", self.opt.lr()),
        ])
    }

    fn test(&mut self) -> Result<Tested, TrainError> {
        let (loss, accuracy, correct) =
            evaluate_batches(self.model.as_ref(), &self.test.x, &self.test.y, true)?;
        // The set is its labels and pixels as evaluated (after `data.test_limit`).
        let set = &self.splits.test;
        let mut bytes = Vec::with_capacity(4 * (set.labels.len() + set.pixels.len()));
        bytes.extend(set.labels.iter().flat_map(|l| l.to_le_bytes()));
        bytes.extend(set.pixels.iter().flat_map(|p| p.to_le_bytes()));
        Ok(Tested {
            records: vec![("test/loss", loss), ("test/accuracy", accuracy)],
            test_set: crate::store::test_set_digest(&bytes),
            items: vec![("test/accuracy", correct)],
        })
    }

    fn artifacts(&mut self, step: u64, sink: &mut dyn EventSink) -> Result<(), TrainError> {
        write_activation_figures(
            self.ctx,
            self.model.as_ref(),
            &self.splits.dev,
            &self.device,
            step,
            sink,
        )
    }
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
        stream_rng(cfg.training_seed(), Stream::Init, 0),
        DType::F32,
        &device,
    );
    let model = build_image_classifier(
        &cfg.model,
        splits.train.rows,
        splits.train.cols,
        splits.train.classes,
        ctx.kernels.conv,
        vb,
    )?;
    let opt = Optimizer::new(&cfg.optimizer, named_vars(&map), ctx.kernels.optim)?;
    let mut task = Classifier {
        ctx,
        device,
        splits,
        train,
        dev,
        test,
        map,
        model,
        opt,
        epoch: None,
    };
    driver::run(ctx, &mut task, sink)
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
