//! The seq2seq training loop: teacher-forced Adam steps, dev evaluation with the run's
//! decoding settings every epoch, test at the end, checkpoints each epoch, and decode-only
//! evaluation of a model another run trained.

use super::checkpoint;
use super::epoch_end::{EpochEnd, selected};
use super::metrics::{error_rate, exact_match};
use super::optim::{Optimizer, scheduled_lr};
use super::seq2seq_step::StepRunner;
use super::translation_artifacts::write_artifacts;
use super::{Outcome, RunContext, TrainError, finish, scalar};
use crate::data::pairs::{Batch, ParallelData, Split, batch_indices};
use crate::events::{EventSink, RunEvent};
use crate::models::decode::{Hypothesis, decode_examples};
use crate::models::seeded::Dropout;
use crate::models::seq2seq::{BatchTensors, Seq2Seq, Seq2SeqConfig};
use crate::spec::DecodeSpec;
use crate::store::{RunDir, RunState};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Examples per evaluation batch: larger than training batches because evaluation keeps
/// no activations for backpropagation. Fixed, so results do not depend on the train batch.
const EVAL_BATCH: usize = 200;
/// Name of the generator scheme recorded in checkpoints (see [`rng`]).
const RNG_SCHEME: &str = "chacha8-stream-per-purpose-and-epoch";

/// Metrics every epoch of a translation run records, which `select.metric` may name
/// (validation checks it against them); see [`emit_eval`] and the epoch loop.
pub const SELECTABLE: [&str; 4] = ["dev/error_rate", "dev/accuracy", "dev/loss", "train/loss"];

/// What a generator is for; each purpose (and each epoch) gets its own ChaCha8 stream so
/// resuming at an epoch boundary replays exactly what an uninterrupted run would draw.
#[derive(Clone, Copy)]
enum Purpose {
    Init = 1,
    Shuffle = 2,
    Dropout = 3,
}

fn rng(seed: u64, purpose: Purpose, epoch: usize) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(((purpose as u64) << 32) | epoch as u64);
    r
}

/// A split's evaluation: teacher-forced loss and the decoded outputs' metrics.
pub struct Evaluation {
    pub loss: f64,
    pub error_rate: f64,
    pub accuracy: f64,
    pub hypotheses: Vec<Hypothesis>,
    pub predictions: Vec<String>,
}

/// Evaluates `model` on `split` (no dropout) with the decoding settings `decode`.
pub fn evaluate(
    model: &Seq2Seq,
    data: &ParallelData,
    split: &Split,
    decode: &DecodeSpec,
) -> Result<Evaluation, TrainError> {
    let (mut sum, mut count) = (0.0, 0.0);
    for chunk in split.examples.chunks(EVAL_BATCH) {
        let refs: Vec<_> = chunk.iter().collect();
        let bt = BatchTensors::new(&Batch::new(&refs), model.device())?;
        let (loss, n) = model.loss(&bt, None)?;
        sum += loss.to_scalar::<f32>()? as f64 * n;
        count += n;
    }
    let hypotheses = decode_examples(model, &split.examples, EVAL_BATCH, decode)?;
    let predictions: Vec<String> = hypotheses
        .iter()
        .map(|h| data.tgt_vocab.decode(&h.tokens))
        .collect();
    let pairs = || {
        predictions
            .iter()
            .zip(&split.pairs)
            .map(|(p, g)| (p.as_str(), g.target.as_str()))
    };
    Ok(Evaluation {
        loss: sum / count.max(1.0),
        error_rate: error_rate(pairs()),
        accuracy: exact_match(pairs()),
        hypotheses,
        predictions,
    })
}

fn emit_eval(
    sink: &mut dyn EventSink,
    epoch: usize,
    step: u64,
    prefix: &str,
    e: &Evaluation,
) -> Result<(), TrainError> {
    scalar(sink, epoch, step, &format!("{prefix}/loss"), e.loss)?;
    scalar(
        sink,
        epoch,
        step,
        &format!("{prefix}/error_rate"),
        e.error_rate,
    )?;
    scalar(sink, epoch, step, &format!("{prefix}/accuracy"), e.accuracy)
}

/// Test evaluation, sample table and attention figures: the end of every finished run.
fn conclude(
    ctx: &RunContext,
    sink: &mut dyn EventSink,
    model: &Seq2Seq,
    data: &ParallelData,
    epoch: usize,
    step: u64,
    dev: Option<Evaluation>,
) -> Result<Outcome, TrainError> {
    let decode = &ctx.config.decode;
    let test = evaluate(model, data, &data.test, decode)?;
    emit_eval(sink, epoch, step, "test", &test)?;
    let dev = match dev {
        Some(dev) => dev,
        None => evaluate(model, data, &data.dev, decode)?,
    };
    write_artifacts(&ctx.run_dir, sink, data, &dev, decode, step)?;
    finish(sink, RunState::Done, epoch, None)?;
    Ok(Outcome::Done { epoch })
}

/// Trains the translator of `ctx` (resuming from its last checkpoint), or, when
/// `ctx.reuse_training_from` names a finished run, only evaluates that run's model with this
/// run's decoding settings.
pub fn run_seq2seq(ctx: &RunContext, sink: &mut dyn EventSink) -> Result<Outcome, TrainError> {
    let cfg = &ctx.config;
    let device = super::select_device(&cfg.train.device)?;
    let data = ParallelData::load(&cfg.data)?;
    let mcfg = Seq2SeqConfig::from_spec(&cfg.model, data.src_vocab.len(), data.tgt_vocab.len())?;
    let model = Seq2Seq::new(mcfg, &mut rng(cfg.seed, Purpose::Init, 0), &device)?;
    if let Some(source) = &ctx.reuse_training_from {
        return evaluate_reused(ctx, sink, &model, &data, source);
    }

    let ckpt_dir = ctx.run_dir.checkpoints();
    let mut optim = Optimizer::new(&cfg.optimizer, model.params().named().to_vec())?;
    let mut end = EpochEnd::new(ctx, RNG_SCHEME);
    let (start, mut step, mut finished) =
        match checkpoint::resume_point(&ckpt_dir, &ctx.training_id)? {
            Some((path, state)) => {
                checkpoint::restore_vars(&path, model.params().named())?;
                let saved = checkpoint::read_optimizer(&path, &device)?;
                optim.load_state(&saved, state.optimizer_steps)?;
                (state.epoch, state.step, end.resume(&state))
            }
            None => (0, 0, false),
        };
    let epochs = cfg.train.epochs;
    let batch_size = cfg.train.batch_size.max(1);
    let n_train = data.train.examples.len();
    sink.emit(&RunEvent::Started {
        attempt: 1,
        resumed_from: start,
        epochs,
        steps_per_epoch: n_train.div_ceil(batch_size) as u64,
    })?;

    // On a GPU every op is issued from this thread: the batch shards and per-thread pools
    // only pay off on the CPU, and Candle gives each host thread its own CUDA stream.
    let runner = if device.is_cpu() {
        StepRunner::new()
    } else {
        StepRunner::with_threads(1)
    };
    let mut last_dev = None;
    let mut last_epoch = start;
    for epoch in start + 1..=epochs {
        if finished {
            break;
        }
        let began = Instant::now();
        let lr = scheduled_lr(&cfg.optimizer, epoch, epochs);
        optim.set_lr(lr);
        let mut dropout = Dropout::new(cfg.model.dropout, rng(cfg.seed, Purpose::Dropout, epoch));
        let mut shuffle = rng(cfg.seed, Purpose::Shuffle, epoch);
        let (mut sum, mut tokens) = (0.0, 0.0);
        let (mut window, mut window_n) = (0.0, 0usize);
        for idx in batch_indices(n_train, batch_size, Some(&mut shuffle)) {
            if ctx.cancel.load(Ordering::Relaxed) {
                // The last checkpoint is the previous epoch's: resume replays this one.
                finish(sink, RunState::Cancelled, epoch - 1, None)?;
                return Ok(Outcome::Cancelled { epoch: epoch - 1 });
            }
            let refs: Vec<_> = idx.iter().map(|&i| &data.train.examples[i]).collect();
            let out = runner.step(&model, &Batch::new(&refs), &mut dropout)?;
            let (value, n) = (out.loss, out.tokens);
            if !value.is_finite() {
                let message = format!("training loss is {value} at step {}", step + 1);
                finish(sink, RunState::Diverged, epoch, Some(message.clone()))?;
                return Ok(Outcome::Diverged { epoch, message });
            }
            runner.in_pool(|| optim.step(&out.grads))?;
            step += 1;
            sum += value * n;
            tokens += n;
            window += value;
            window_n += 1;
            let every = cfg.train.log_every;
            if every > 0 && step % every as u64 == 0 {
                let mean = window / window_n as f64;
                scalar(sink, epoch, step, "train/running_loss", mean)?;
                (window, window_n) = (0.0, 0);
            }
        }
        let train_seconds = began.elapsed().as_secs_f64();
        let train_loss = sum / tokens.max(1.0);
        scalar(sink, epoch, step, "train/loss", train_loss)?;
        scalar(sink, epoch, step, "lr", lr)?;
        let dev = evaluate(&model, &data, &data.dev, &cfg.decode)?;
        emit_eval(sink, epoch, step, "dev", &dev)?;
        scalar(
            sink,
            epoch,
            step,
            "time/epoch_seconds",
            began.elapsed().as_secs_f64(),
        )?;
        scalar(
            sink,
            epoch,
            step,
            "time/samples_per_second",
            n_train as f64 / train_seconds.max(1e-9),
        )?;
        let metric = selected(
            &cfg.select.metric,
            &[
                ("dev/error_rate", dev.error_rate),
                ("dev/accuracy", dev.accuracy),
                ("dev/loss", dev.loss),
                ("train/loss", train_loss),
            ],
        );
        let verdict = end.decide(epoch, metric);
        let tensors = model
            .params()
            .named()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        end.commit(
            epoch,
            step,
            optim.steps(),
            metric,
            verdict,
            tensors,
            optim.state_tensors(),
        )?;
        sink.emit(&RunEvent::EpochEnd { epoch, step })?;
        last_dev = Some(dev);
        last_epoch = epoch;
        finished = verdict.last;
    }
    conclude(ctx, sink, &model, &data, last_epoch, step, last_dev)
}

/// Decode-only run: load the source run's last checkpoint and evaluate it; no training step.
fn evaluate_reused(
    ctx: &RunContext,
    sink: &mut dyn EventSink,
    model: &Seq2Seq,
    data: &ParallelData,
    source: &RunDir,
) -> Result<Outcome, TrainError> {
    let dir = source.checkpoints();
    let (path, meta) = checkpoint::latest(&dir, &ctx.training_id)?.ok_or_else(|| {
        TrainError::Checkpoint(checkpoint::CheckpointError::Corrupt {
            path: dir.clone(),
            message: "no checkpoint to reuse: the training run has not finished an epoch".into(),
        })
    })?;
    checkpoint::restore_vars(&path, model.params().named())?;
    sink.emit(&RunEvent::Started {
        attempt: 1,
        resumed_from: meta.epoch,
        epochs: meta.epoch,
        steps_per_epoch: 0,
    })?;
    sink.emit(&RunEvent::Text {
        step: meta.step,
        tag: "reuse/training".into(),
        text: format!(
            "Decode-only run: evaluates the model trained by run `{}` (epoch {}, step {}) with \
             this run's `[decode]` settings; nothing was trained here.",
            source.root().display(),
            meta.epoch,
            meta.step
        ),
    })?;
    let dev = evaluate(model, data, &data.dev, &ctx.config.decode)?;
    emit_eval(sink, meta.epoch, meta.step, "dev", &dev)?;
    sink.emit(&RunEvent::EpochEnd {
        epoch: meta.epoch,
        step: meta.step,
    })?;
    conclude(ctx, sink, model, data, meta.epoch, meta.step, Some(dev))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::MemorySink;
    use crate::spec::{Attention, DataFormat, DecodeStrategy, ModelKind, SelectMode, Spec};
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    /// The fixture with a model small enough to train in seconds.
    fn spec(attention: Attention, epochs: usize) -> Spec {
        let mut s = Spec::default();
        s.data.format = DataFormat::TsvPairs;
        s.data.dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/spa-eng-mini").into();
        s.data.train = "train-eng-spa.txt".into();
        s.data.dev = "val-eng-spa.txt".into();
        s.data.test = "test-eng-spa.txt".into();
        s.data.max_len = 30;
        s.model.kind = ModelKind::Seq2seq;
        s.model.embedding_dim = 32;
        s.model.encoder_hidden = 16;
        s.model.decoder_hidden = 32;
        s.model.attention = attention;
        s.model.dropout = 0.1;
        s.optimizer.lr = 0.01;
        s.train.epochs = epochs;
        s.train.batch_size = 16;
        s.train.log_every = 5;
        s.decode.max_len = 30;
        s
    }

    fn ctx(dir: &std::path::Path, config: Spec) -> RunContext {
        RunContext {
            run_dir: RunDir::at(dir),
            config,
            run_id: "r".into(),
            training_id: "t".into(),
            threads: 1,
            cancel: Arc::new(AtomicBool::new(false)),
            reuse_training_from: None,
        }
    }

    fn scalars(events: &[RunEvent], tag: &str) -> Vec<(usize, f64)> {
        events
            .iter()
            .filter_map(|e| match e {
                RunEvent::Scalar {
                    epoch,
                    tag: t,
                    value,
                    ..
                } if t == tag => Some((*epoch, *value)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn tiny_fixture_trains_and_dev_error_falls() {
        let dir = tempfile::tempdir().unwrap();
        let c = ctx(dir.path(), spec(Attention::General, 8));
        let mut sink = MemorySink::default();
        assert_eq!(
            run_seq2seq(&c, &mut sink).unwrap(),
            Outcome::Done { epoch: 8 }
        );
        let dev = scalars(&sink.events, "dev/error_rate");
        assert_eq!(dev.len(), 8);
        let (first, last) = (dev[0].1, dev[7].1);
        assert!(last < 0.8 * first, "dev error did not fall: {dev:?}");
        let loss = scalars(&sink.events, "train/loss");
        assert!(loss[7].1 < loss[0].1, "{loss:?}");
        // The running loss has the image runs' tag (main wrote `train/batch_loss`).
        assert!(!scalars(&sink.events, "train/running_loss").is_empty());
        assert!(scalars(&sink.events, "train/batch_loss").is_empty());
        assert_eq!(scalars(&sink.events, "test/error_rate").len(), 1);
        assert_eq!(scalars(&sink.events, "test/accuracy").len(), 1);
        // What validation lets `select.metric` name is recorded every epoch.
        for tag in SELECTABLE {
            assert_eq!(scalars(&sink.events, tag).len(), 8, "{tag}");
        }
        let art = dir.path().join("artifacts");
        let md = std::fs::read_to_string(art.join("samples.md")).unwrap();
        assert!(
            md.contains("| # | source | gold | prediction | error |"),
            "{md}"
        );
        assert!(art.join("attention_0.png").is_file());
        assert!(sink.events.iter().any(
            |e| matches!(e, RunEvent::Image { tag, channels: 1, .. } if tag == "attention/0")
        ));
        assert!(matches!(
            sink.events.last(),
            Some(RunEvent::Finished {
                state: RunState::Done,
                epoch: 8,
                ..
            })
        ));
    }

    #[test]
    fn decode_only_variant_reuses_the_training() {
        let root = tempfile::tempdir().unwrap();
        let trained = ctx(&root.path().join("train"), spec(Attention::General, 2));
        let mut t_sink = MemorySink::default();
        run_seq2seq(&trained, &mut t_sink).unwrap();

        // Same decoding: same model, so exactly the training run's final dev figures.
        let mut again = ctx(&root.path().join("greedy"), trained.config.clone());
        again.reuse_training_from = Some(trained.run_dir.clone());
        let mut g_sink = MemorySink::default();
        assert_eq!(
            run_seq2seq(&again, &mut g_sink).unwrap(),
            Outcome::Done { epoch: 2 }
        );
        assert_eq!(
            scalars(&g_sink.events, "dev/error_rate"),
            scalars(&t_sink.events, "dev/error_rate")[1..].to_vec()
        );
        assert_eq!(
            scalars(&g_sink.events, "test/error_rate"),
            scalars(&t_sink.events, "test/error_rate")
        );

        let mut beam = again.clone();
        beam.run_dir = RunDir::at(root.path().join("beam"));
        beam.config.decode.strategy = DecodeStrategy::Beam;
        beam.config.decode.beam_width = 3;
        let mut b_sink = MemorySink::default();
        run_seq2seq(&beam, &mut b_sink).unwrap();
        for s in [&g_sink, &b_sink] {
            assert!(
                scalars(&s.events, "train/loss").is_empty(),
                "a decode-only run trained"
            );
            assert!(scalars(&s.events, "train/running_loss").is_empty());
            assert!(
                s.events
                    .iter()
                    .any(|e| matches!(e, RunEvent::Text { tag, .. } if tag == "reuse/training"))
            );
        }
        assert!(
            !root.path().join("beam/checkpoints").exists(),
            "no checkpoint of its own"
        );
        assert!(root.path().join("beam/artifacts/samples.md").is_file());
        assert_eq!(scalars(&b_sink.events, "dev/error_rate").len(), 1);

        let mut orphan = beam.clone();
        orphan.reuse_training_from = Some(RunDir::at(root.path().join("nowhere")));
        let e = run_seq2seq(&orphan, &mut MemorySink::default()).unwrap_err();
        assert!(e.to_string().contains("no checkpoint to reuse"), "{e}");
    }

    /// Stopping after epoch 2 and resuming gives exactly the metrics of one straight run.
    #[test]
    fn resume_at_an_epoch_boundary_is_bit_identical() {
        let root = tempfile::tempdir().unwrap();
        let straight = ctx(&root.path().join("a"), spec(Attention::None, 3));
        let mut s1 = MemorySink::default();
        run_seq2seq(&straight, &mut s1).unwrap();

        let mut first = ctx(&root.path().join("b"), spec(Attention::None, 2));
        run_seq2seq(&first, &mut MemorySink::default()).unwrap();
        first.config.train.epochs = 3;
        let mut s2 = MemorySink::default();
        run_seq2seq(&first, &mut s2).unwrap();
        assert!(matches!(
            s2.events[0],
            RunEvent::Started {
                resumed_from: 2,
                ..
            }
        ));
        for tag in [
            "train/loss",
            "dev/loss",
            "dev/error_rate",
            "test/error_rate",
        ] {
            let a = scalars(&s1.events, tag);
            assert_eq!(scalars(&s2.events, tag), a[a.len() - 1..].to_vec(), "{tag}");
        }
    }

    /// On main every epoch built a fresh, never-fed early-stopping policy: all epochs ran.
    #[test]
    fn early_stopping_patience_ends_training_and_resume_does_not_retrain() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(Attention::None, 6);
        s.train.early_stopping.patience = 1;
        // No epoch can beat the first by this much: patience runs out after epoch 2.
        s.train.early_stopping.min_delta = 10.0;
        let c = ctx(dir.path(), s);
        let mut sink = MemorySink::default();
        assert_eq!(
            run_seq2seq(&c, &mut sink).unwrap(),
            Outcome::Done { epoch: 2 }
        );
        assert_eq!(scalars(&sink.events, "dev/error_rate").len(), 2);
        let test = scalars(&sink.events, "test/error_rate");
        assert_eq!(test.len(), 1);
        assert_eq!(test[0].0, 2, "test belongs to the last trained epoch");
        let (_, state) = checkpoint::latest(&c.run_dir.checkpoints(), "t")
            .unwrap()
            .unwrap();
        assert!(state.stopped_early && state.epoch == 2, "{state:?}");

        let mut again = MemorySink::default();
        assert_eq!(
            run_seq2seq(&c, &mut again).unwrap(),
            Outcome::Done { epoch: 2 }
        );
        assert!(scalars(&again.events, "train/loss").is_empty(), "retrained");
    }

    /// On main the kept best checkpoint was always the lowest dev error rate.
    #[test]
    fn kept_best_checkpoint_follows_select_metric_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(Attention::None, 4);
        s.select.metric = "dev/loss".into();
        s.select.mode = SelectMode::Max;
        s.train.checkpoint.keep_last = 1;
        s.train.checkpoint.keep_best = true;
        let c = ctx(dir.path(), s);
        let mut sink = MemorySink::default();
        run_seq2seq(&c, &mut sink).unwrap();
        let dev_loss = scalars(&sink.events, "dev/loss");
        let (best_epoch, best) = dev_loss
            .iter()
            .copied()
            .fold(None, |acc: Option<(usize, f64)>, (e, v)| match acc {
                Some((_, b)) if b >= v => acc,
                _ => Some((e, v)),
            })
            .unwrap();
        let ck = c.run_dir.checkpoints();
        let mut kept = checkpoint::list(&ck).unwrap();
        kept.sort();
        let mut want = vec![best_epoch, 4];
        want.dedup();
        assert_eq!(kept, want, "dev/loss {dev_loss:?}");
        let state = checkpoint::read_state(&ck.join(checkpoint::dir_name(best_epoch))).unwrap();
        assert_eq!(state.metric, Some(best), "the checkpoint records dev/loss");
    }

    #[test]
    fn exploding_loss_is_reported_as_diverged() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(Attention::None, 2);
        s.optimizer.lr = 1e38;
        let mut sink = MemorySink::default();
        let out = run_seq2seq(&ctx(dir.path(), s), &mut sink).unwrap();
        assert!(matches!(out, Outcome::Diverged { epoch: 1, .. }), "{out:?}");
        assert!(matches!(
            sink.events.last(),
            Some(RunEvent::Finished {
                state: RunState::Diverged,
                ..
            })
        ));
    }

    #[test]
    fn bad_data_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("train.tsv"), "only one column\n").unwrap();
        let mut s = spec(Attention::None, 1);
        s.data.dir = dir.path().to_string_lossy().into_owned();
        s.data.train = "train.tsv".into();
        let e = run_seq2seq(&ctx(dir.path(), s), &mut MemorySink::default()).unwrap_err();
        assert!(matches!(e, TrainError::Pairs(_)), "{e}");
        assert!(e.to_string().contains("train.tsv:1:"), "{e}");
        assert_eq!(crate::Error::from(e).exit_code(), crate::error::exit::DATA);
    }
}
