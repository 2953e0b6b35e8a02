//! Our side of one measurement, run in a fresh process (`train --child ...`) so that each
//! gets the thread count the driver put in `RAYON_NUM_THREADS`/`CANDLE_NUM_THREADS` (Candle
//! fixes its pools at first use). Prints one JSON object, like `bench/torch_ref.py`.
//!
//! The training step is the one `train::classifier` takes: batches narrowed from one
//! shuffled tensor, forward with seeded dropout, NLL, the loss read back to the host (for
//! divergence checks and logging), backward and our Adam step.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use orchestrate::data::images::read_image_set;
use orchestrate::data::permutation;
use orchestrate::models::build_image_classifier;
use orchestrate::models::cnn::GpuConv;
use orchestrate::models::init::seeded_var_builder;
use orchestrate::spec::{DataFormat, ModelSpec, OptimizerKind, OptimizerSpec};
use orchestrate::train::classifier::evaluate_tensors;
use orchestrate::train::optim::{GpuOptim, Optimizer, named_vars};
use orchestrate::train::seeding::{Stream, stream_rng};
use std::path::PathBuf;
use std::time::Instant;

const SEED: u64 = 7;
/// Side of the square matrices of the matmul measurement.
const MATMUL_N: usize = 2048;

/// Floating-point operations of the homework CNN per image.
pub struct Flops {
    /// One forward pass (2 per multiply-add; bias, activation and pooling left out).
    pub forward: f64,
    /// Forward + the two backward products per layer (weight and input gradient), the usual
    /// "3x forward" estimate.
    pub train: f64,
    /// As `train`, less the first layer's input gradient, which nobody needs (the image).
    pub train_needed: f64,
}

/// Counts the multiply-adds of the default (homework) CNN layer by layer.
pub fn cnn_train_flops() -> Flops {
    let spec = ModelSpec::default();
    let (mut c, mut h, mut w) = (1usize, 28usize, 28usize);
    let mut macs = Vec::new();
    for b in &spec.conv {
        let p = match b.padding {
            orchestrate::spec::Padding::Pixels(p) => p,
            orchestrate::spec::Padding::Named(_) => (b.kernel - 1) / 2,
        };
        let oh = (h + 2 * p - b.kernel) / b.stride + 1;
        let ow = (w + 2 * p - b.kernel) / b.stride + 1;
        macs.push(b.channels * oh * ow * c * b.kernel * b.kernel);
        (c, h, w) = (b.channels, oh, ow);
        if b.pool > 1 {
            (h, w) = (h / b.pool, w / b.pool);
        }
    }
    let mut features = c * h * w;
    for &size in spec.hidden.iter().chain([10usize].iter()) {
        macs.push(features * size);
        features = size;
    }
    let total: usize = macs.iter().sum();
    let forward = 2.0 * total as f64;
    Flops {
        forward,
        train: 3.0 * forward,
        train_needed: 3.0 * forward - 2.0 * macs[0] as f64,
    }
}

/// Runs the child command in `args`; returns the exit status.
pub fn main(args: &[String]) -> i32 {
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // As the worker does for the model this command trains.
    let kind = match args.first().map(String::as_str) {
        Some("seq2seq") => Some(orchestrate::spec::ModelKind::Seq2seq),
        _ => None,
    };
    // SAFETY: first thing in the process, before any other thread exists.
    let threads = unsafe { orchestrate::train::configure_threads_for(threads, kind) };
    let get = |name: &str, default: usize| -> usize {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("--{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let max_seconds = args
        .iter()
        .find_map(|a| a.strip_prefix("--max-seconds="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::INFINITY);
    let result = match args.first().map(String::as_str) {
        Some("train") => train(
            get("batch", 8),
            get("steps", 300),
            get("warmup", 20),
            max_seconds,
        ),
        Some("split") => split(get("batch", 8), get("steps", 100), get("warmup", 20)),
        Some("eval") => eval(get("passes", 5)),
        Some("matmul") => matmul(),
        Some("seq2seq") => {
            let text = |name: &str| {
                args.iter()
                    .find_map(|a| a.strip_prefix(&format!("--{name}=")))
            };
            let pairs_dir = text("pairs-dir").map_or_else(
                || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/spa-eng-mini"),
                PathBuf::from,
            );
            let workload = crate::seq2seq::Workload {
                pairs_dir: &pairs_dir,
                max_len: get("max-len", 20),
                dropout: text("dropout").and_then(|v| v.parse().ok()).unwrap_or(0.3),
                attention: text("attention") != Some("false"),
            };
            crate::seq2seq::train(
                get("batch", 64),
                get("steps", 40),
                get("warmup", 3),
                max_seconds,
                &workload,
            )
        }
        other => Err(format!("unknown child command {other:?}")),
    };
    match result {
        Ok(mut v) => {
            v["threads"] = threads.into();
            println!("{v}");
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn data_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data/fashion-mnist-mini")
        .join(name)
}

/// `split` ("train" or "t10k") as `(N, 1, 28, 28)` pixels and `(N)` labels.
fn load(split: &str) -> Result<(Tensor, Tensor, usize), String> {
    let set = read_image_set(
        DataFormat::Idx,
        &data_file(&format!("{split}-images-idx3-ubyte.gz")),
        &data_file(&format!("{split}-labels-idx1-ubyte.gz")),
        10,
        0,
    )
    .map_err(|e| e.to_string())?;
    let n = set.len();
    let x = Tensor::from_slice(&set.pixels, (n, 1, set.rows, set.cols), &Device::Cpu)
        .map_err(|e| e.to_string())?;
    let y = Tensor::from_slice(&set.labels, n, &Device::Cpu).map_err(|e| e.to_string())?;
    Ok((x, y, n))
}

type Model = (VarMap, Box<dyn orchestrate::models::ImageClassifier>);

fn model() -> Result<Model, String> {
    let map = VarMap::new();
    let vb = seeded_var_builder(
        &map,
        stream_rng(SEED, Stream::Init, 0),
        DType::F32,
        &Device::Cpu,
    );
    let m = build_image_classifier(&ModelSpec::default(), 28, 28, 10, GpuConv::default(), vb)
        .map_err(|e| e.to_string())?;
    Ok((map, m))
}

/// `steps` timed training steps after `warmup` untimed ones, stopping early once
/// `max_seconds` have passed.
fn train(
    batch: usize,
    steps: usize,
    warmup: usize,
    max_seconds: f64,
) -> Result<serde_json::Value, String> {
    let c = |e: candle_core::Error| e.to_string();
    let (x, y, n) = load("train")?;
    let order = permutation(n, &mut stream_rng(SEED, Stream::Shuffle, 1));
    let order = Tensor::from_vec(order, n, &Device::Cpu).map_err(c)?;
    let xs = x.index_select(&order, 0).map_err(c)?;
    let ys = y.index_select(&order, 0).map_err(c)?;
    let (map, model) = model()?;
    let spec = OptimizerSpec {
        kind: OptimizerKind::Adam,
        lr: 1e-3,
        ..OptimizerSpec::default()
    };
    let mut opt = Optimizer::new(&spec, named_vars(&map), GpuOptim::default()).map_err(c)?;
    let mut dropout_rng = stream_rng(SEED, Stream::Dropout, 1);
    let mut pos = 0;
    let mut step = |pos: &mut usize| -> candle_core::Result<f32> {
        if *pos + batch > n {
            *pos = 0;
        }
        let logp = model.forward(&xs.narrow(0, *pos, batch)?, Some(&mut dropout_rng))?;
        let loss = candle_nn::loss::nll(&logp, &ys.narrow(0, *pos, batch)?)?;
        let value = loss.to_scalar::<f32>()?;
        opt.backward_step(&loss)?;
        *pos += batch;
        Ok(value)
    };
    for _ in 0..warmup {
        step(&mut pos).map_err(c)?;
    }
    let t = Instant::now();
    let (mut loss, mut done) = (0.0, 0);
    while done < steps && t.elapsed().as_secs_f64() < max_seconds {
        loss = step(&mut pos).map_err(c)?;
        done += 1;
    }
    let seconds = t.elapsed().as_secs_f64();
    let images = done * batch;
    Ok(serde_json::json!({
        "images_per_s": images as f64 / seconds,
        "seconds": seconds,
        "images": images,
        "loss": loss,
    }))
}

/// Where a training step's time goes: forward + loss (read back), backward, optimizer
/// update, in seconds per step (not used by the table; `train --child split --batch=64`).
fn split(batch: usize, steps: usize, warmup: usize) -> Result<serde_json::Value, String> {
    let c = |e: candle_core::Error| e.to_string();
    let (xs, ys, n) = load("train")?;
    let (map, model) = model()?;
    let mut opt = Optimizer::new(
        &OptimizerSpec::default(),
        named_vars(&map),
        GpuOptim::default(),
    )
    .map_err(c)?;
    let mut dropout_rng = stream_rng(SEED, Stream::Dropout, 1);
    let mut t = [0f64; 3];
    for i in 0..warmup + steps {
        let pos = (i * batch) % (n - batch);
        let t0 = Instant::now();
        let logp = model
            .forward(
                &xs.narrow(0, pos, batch).map_err(c)?,
                Some(&mut dropout_rng),
            )
            .map_err(c)?;
        let loss = candle_nn::loss::nll(&logp, &ys.narrow(0, pos, batch).map_err(c)?).map_err(c)?;
        loss.to_scalar::<f32>().map_err(c)?;
        let t1 = Instant::now();
        let grads = loss.backward().map_err(c)?;
        let t2 = Instant::now();
        opt.step(&grads).map_err(c)?;
        let t3 = Instant::now();
        if i >= warmup {
            t[0] += (t1 - t0).as_secs_f64();
            t[1] += (t2 - t1).as_secs_f64();
            t[2] += (t3 - t2).as_secs_f64();
        }
    }
    let per = |x: f64| x / steps as f64;
    Ok(serde_json::json!({
        "batch": batch,
        "forward_s": per(t[0]),
        "backward_s": per(t[1]),
        "optimizer_s": per(t[2]),
    }))
}

fn eval(passes: usize) -> Result<serde_json::Value, String> {
    let c = |e: candle_core::Error| e.to_string();
    let (x, y, n) = load("t10k")?;
    let (_map, model) = model()?;
    // Exactly the evaluation every training run does at each epoch end.
    let pass = || evaluate_tensors(model.as_ref(), &x, &y);
    pass().map_err(c)?;
    let t = Instant::now();
    for _ in 0..passes {
        pass().map_err(c)?;
    }
    let seconds = t.elapsed().as_secs_f64();
    let images = passes * n;
    Ok(serde_json::json!({
        "images_per_s": images as f64 / seconds,
        "seconds": seconds,
        "images": images,
    }))
}

/// Best of 5 `MATMUL_N`-square fp32 products through Candle's CPU matmul (gemm crate).
fn matmul() -> Result<serde_json::Value, String> {
    let c = |e: candle_core::Error| e.to_string();
    let p = Tensor::rand(0f32, 1f32, (MATMUL_N, MATMUL_N), &Device::Cpu).map_err(c)?;
    let q = Tensor::rand(0f32, 1f32, (MATMUL_N, MATMUL_N), &Device::Cpu).map_err(c)?;
    p.matmul(&q).map_err(c)?;
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        p.matmul(&q).map_err(c)?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(serde_json::json!({
        "gflops": 2.0 * (MATMUL_N as f64).powi(3) / best / 1e9,
        "n": MATMUL_N,
        "library": "candle-core matmul (gemm crate)",
    }))
}
