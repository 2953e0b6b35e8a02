//! Our side of the seq2seq measurements (`train --child seq2seq ...`): the homework Q3
//! translator (experiments/q3_attention.toml sizes) trained on the pairs of `--pairs-dir`
//! (the homework's own with `../shared/data/spa-eng-ist`; data/spa-eng-mini by default) with
//! the homework's dropout, by the step `train::seq2seq` takes: a padded batch moved to the
//! device, teacher-forced loss read back to the host, backward and our Adam step. Prints one
//! JSON object like `bench/torch_ref.py train-seq2seq`.

use candle_core::Device;
use orchestrate::data::pairs::{Batch, ParallelData};
use orchestrate::data::permutation;
use orchestrate::models::seeded::Dropout;
use orchestrate::models::seq2seq::{Seq2Seq, Seq2SeqConfig};
use orchestrate::spec::{Attention, DataFormat, DataSpec, ModelSpec, OptimizerKind, OptimizerSpec};
use orchestrate::train::optim::{GpuOptim, Optimizer};
use orchestrate::train::seeding::{Stream, stream_rng};
use orchestrate::train::seq2seq_step::StepRunner;
use std::path::Path;
use std::time::Instant;

const SEED: u64 = 42;

/// What a seq2seq measurement trains on and with.
#[derive(Debug, Clone)]
pub struct Workload<'a> {
    pub pairs_dir: &'a Path,
    pub max_len: usize,
    pub dropout: f64,
    pub attention: bool,
}

/// The Q3 data and model: experiments/q3_attention.toml's sizes on `w`'s pairs.
pub fn setup(w: &Workload) -> Result<(ParallelData, Seq2Seq), String> {
    let data = ParallelData::load(&DataSpec {
        format: DataFormat::TsvPairs,
        dir: w.pairs_dir.to_string_lossy().into_owned(),
        train: "train-eng-spa.txt".into(),
        dev: "val-eng-spa.txt".into(),
        test: "test-eng-spa.txt".into(),
        max_len: w.max_len,
        ..DataSpec::default()
    })
    .map_err(|e| e.to_string())?;
    let spec = ModelSpec {
        embedding_dim: 128,
        encoder_hidden: 64,
        decoder_hidden: 128,
        dropout: w.dropout,
        tie_embeddings: true,
        attention: if w.attention {
            Attention::General
        } else {
            Attention::None
        },
        ..ModelSpec::default()
    };
    let cfg = Seq2SeqConfig::from_spec(&spec, data.src_vocab.len(), data.tgt_vocab.len())
        .map_err(|e| e.to_string())?;
    let model = Seq2Seq::new(cfg, &mut stream_rng(SEED, Stream::Init, 0), &Device::Cpu)
        .map_err(|e| e.to_string())?;
    Ok((data, model))
}

/// `steps` timed training steps at `batch` after `warmup` untimed ones, stopping early
/// once `max_seconds` have passed. Batches are consecutive slices of one shuffled order,
/// wrapping around so every batch is full, made up front (as the PyTorch side does).
pub fn train(
    batch: usize,
    steps: usize,
    warmup: usize,
    max_seconds: f64,
    w: &Workload,
) -> Result<serde_json::Value, String> {
    let c = |e: candle_core::Error| e.to_string();
    let (data, model) = setup(w)?;
    let n = data.train.examples.len();
    let order = permutation(n, &mut stream_rng(SEED, Stream::Shuffle, 1));
    let batches = (0..n)
        .step_by(batch)
        .map(|s| {
            let refs: Vec<_> = (0..batch)
                .map(|j| &data.train.examples[order[(s + j) % n] as usize])
                .collect();
            Batch::new(&refs)
        })
        .collect::<Vec<_>>();
    let spec = OptimizerSpec {
        kind: OptimizerKind::Adam,
        lr: 0.003,
        ..OptimizerSpec::default()
    };
    let mut opt =
        Optimizer::new(&spec, model.params().named().to_vec(), GpuOptim::default()).map_err(c)?;
    let mut dropout = Dropout::new(w.dropout, stream_rng(SEED, Stream::Dropout, 1));
    // As the product's training loop does (`train::seq2seq_step::StepRunner`).
    let runner = StepRunner::new();
    let mut step = |i: usize| -> candle_core::Result<f32> {
        let out = runner.step(&model, &batches[i % batches.len()], &mut dropout)?;
        runner.in_pool(|| opt.step(&out.grads))?;
        Ok(out.loss as f32)
    };
    for i in 0..warmup {
        step(i).map_err(c)?;
    }
    let t = Instant::now();
    let (mut loss, mut done) = (0.0, 0);
    while done < steps && t.elapsed().as_secs_f64() < max_seconds {
        loss = step(done).map_err(c)?;
        done += 1;
    }
    let seconds = t.elapsed().as_secs_f64();
    Ok(serde_json::json!({
        "steps_per_s": done as f64 / seconds,
        "sentences_per_s": (done * batch) as f64 / seconds,
        "seconds": seconds,
        "steps": done,
        "loss": loss,
    }))
}
