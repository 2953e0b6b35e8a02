//! The translator (`seq2seq`) as a task of the training [`driver`]: teacher-forced steps,
//! `lr` then dev (`dev/loss`, `dev/error_rate`, `dev/accuracy`, decoded with the run's
//! settings) after `train/loss` every epoch, test with the last epoch, the sample table and
//! attention figures at the end; and the decode-only evaluation of a model another run
//! trained.

use super::checkpoint;
use super::driver::{self, Forward, Records, Task, Tested};
use super::metrics::{error_rate, exact_match, example_error, example_match};
use super::optim::Optimizer;
use super::seeding::{Stream, stream_rng};
use super::seq2seq_step::{StepGrads, StepRunner};
use super::translation_artifacts::write_artifacts;
use super::{Outcome, RunContext, TrainError};
use crate::data::pairs::{Batch, ParallelData, Split, batch_indices};
use crate::data::vocab::Vocab;
use crate::events::{EventSink, RunEvent};
use crate::models::decode::{Hypothesis, decode_examples};
use crate::models::seeded::Dropout;
use crate::models::seq2seq::{BatchTensors, Seq2Seq, Seq2SeqConfig};
use crate::spec::DecodeSpec;
use crate::store::RunDir;
use candle_core::Tensor;
use std::path::Path;

/// Examples per evaluation batch: larger than training batches because evaluation keeps
/// no activations for backpropagation. Fixed, so results do not depend on the train batch.
const EVAL_BATCH: usize = 200;
/// Metrics every epoch of a translation run records, which `select.metric` may name
/// (validation checks it against them); see [`Translator`]'s evaluation.
pub const SELECTABLE: [&str; 4] = ["dev/error_rate", "dev/accuracy", "dev/loss", "train/loss"];

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

/// A trained translator with the vocabularies of its run's training data, its weights read
/// from the checkpoint directory `path`; `train` are the run's training pairs
/// ([`crate::data::pairs::load_train`]), from which training built the vocabularies.
pub fn load_trained(
    config: &crate::spec::Spec,
    train: &[crate::data::pairs::Pair],
    path: &Path,
    device: &candle_core::Device,
) -> Result<(Seq2Seq, Vocab, Vocab), TrainError> {
    let (src_vocab, tgt_vocab) = crate::data::pairs::vocabularies(train);
    let mcfg = Seq2SeqConfig::from_spec(&config.model, src_vocab.len(), tgt_vocab.len())?;
    let model = Seq2Seq::new(
        mcfg,
        &mut stream_rng(config.training_seed(), Stream::Init, 0),
        device,
    )?;
    checkpoint::restore_vars(path, model.params().named())?;
    Ok((model, src_vocab, tgt_vocab))
}

/// Translates `sentences` (normalised as training normalises its data; characters unseen in
/// training become UNK, as in dev and test) with `decode`, in evaluation's batches.
pub fn translate(
    model: &Seq2Seq,
    src_vocab: &Vocab,
    tgt_vocab: &Vocab,
    sentences: &[String],
    decode: &DecodeSpec,
) -> Result<Vec<String>, TrainError> {
    let examples: Vec<crate::data::pairs::Example> = sentences
        .iter()
        .map(|s| crate::data::pairs::Example {
            src: src_vocab.encode(&crate::data::pairs::normalize(s)),
            tgt: Vec::new(),
        })
        .collect();
    let hypotheses = decode_examples(model, &examples, EVAL_BATCH, decode)?;
    Ok(hypotheses
        .iter()
        .map(|h| tgt_vocab.decode(&h.tokens))
        .collect())
}

/// The tags of a dev evaluation's records, in emission order.
const DEV: [&str; 3] = ["dev/loss", "dev/error_rate", "dev/accuracy"];
/// The tags of a test evaluation's records, in emission order.
const TEST: [&str; 3] = ["test/loss", "test/error_rate", "test/accuracy"];

/// An evaluation's loss, error rate and accuracy under `tags` (one of [`DEV`], [`TEST`]).
fn records(tags: [&'static str; 3], e: &Evaluation) -> Records {
    let [loss, error_rate, accuracy] = tags;
    vec![
        (loss, e.loss),
        (error_rate, e.error_rate),
        (accuracy, e.accuracy),
    ]
}

/// A translation run as a [`Task`] of the training driver.
struct Translator<'a> {
    ctx: &'a RunContext,
    data: ParallelData,
    model: Seq2Seq,
    optim: Optimizer,
    runner: StepRunner,
    /// Set by [`Task::begin_epoch`].
    epoch: Option<Epoch>,
    /// The newest dev evaluation, which the artifacts show.
    last_dev: Option<Evaluation>,
}

/// The current epoch's batches (indices into the training split) and dropout masks.
struct Epoch {
    batches: Vec<Vec<usize>>,
    dropout: Dropout,
}

impl<'a> Translator<'a> {
    fn new(ctx: &'a RunContext, device: &candle_core::Device) -> Result<Self, TrainError> {
        let cfg = &ctx.config;
        let data = ParallelData::load(&cfg.data)?;
        let mcfg =
            Seq2SeqConfig::from_spec(&cfg.model, data.src_vocab.len(), data.tgt_vocab.len())?;
        let model = Seq2Seq::new(
            mcfg,
            &mut stream_rng(cfg.training_seed(), Stream::Init, 0),
            device,
        )?;
        let optim = Optimizer::new(
            &cfg.optimizer,
            model.params().named().to_vec(),
            ctx.kernels.optim,
        )?;
        // On a GPU every op is issued from this thread: the batch shards and their threads
        // only pay off on the CPU, and Candle gives each host thread its own CUDA stream.
        let runner = if device.is_cpu() {
            StepRunner::new()
        } else {
            StepRunner::with_threads(1)
        };
        Ok(Translator {
            ctx,
            data,
            model,
            optim,
            runner,
            epoch: None,
            last_dev: None,
        })
    }

    fn batch_size(&self) -> usize {
        self.ctx.config.train.batch_size.max(1)
    }

    /// Evaluates dev with the run's decoding settings and keeps it for the artifacts.
    fn dev_records(&mut self) -> Result<Records, TrainError> {
        let dev = evaluate(
            &self.model,
            &self.data,
            &self.data.dev,
            &self.ctx.config.decode,
        )?;
        let out = records(DEV, &dev);
        self.last_dev = Some(dev);
        Ok(out)
    }
}

impl Task for Translator<'_> {
    type Gradients = StepGrads;

    fn steps_per_epoch(&self) -> u64 {
        self.samples_per_epoch().div_ceil(self.batch_size()) as u64
    }

    fn samples_per_epoch(&self) -> usize {
        self.data.train.examples.len()
    }

    fn device(&self) -> &candle_core::Device {
        self.model.device()
    }

    fn optimizer(&mut self) -> &mut Optimizer {
        &mut self.optim
    }

    fn restore_model(&mut self, path: &Path) -> Result<(), TrainError> {
        // The kept dev evaluation was of other weights; the artifacts evaluate these anew.
        self.last_dev = None;
        Ok(checkpoint::restore_vars(path, self.model.params().named())?)
    }

    fn model_tensors(&self) -> Vec<(String, Tensor)> {
        self.model
            .params()
            .named()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect()
    }

    fn begin_epoch(&mut self, epoch: usize) -> Result<(), TrainError> {
        let cfg = &self.ctx.config;
        let dropout = Dropout::new(
            cfg.model.dropout,
            stream_rng(cfg.training_seed(), Stream::Dropout, epoch as u64),
        );
        let mut shuffle = stream_rng(cfg.training_seed(), Stream::Shuffle, epoch as u64);
        let batches = batch_indices(
            self.samples_per_epoch(),
            self.batch_size(),
            Some(&mut shuffle),
        );
        self.epoch = Some(Epoch { batches, dropout });
        Ok(())
    }

    fn forward(&mut self, batch: usize) -> Result<Forward<StepGrads>, TrainError> {
        let Epoch { batches, dropout } = self
            .epoch
            .as_mut()
            .expect("the driver begins each epoch before its steps");
        let refs: Vec<_> = batches[batch]
            .iter()
            .map(|&i| &self.data.train.examples[i])
            .collect();
        let out = self.runner.step(&self.model, &Batch::new(&refs), dropout)?;
        Ok(Forward {
            loss: out.loss,
            weight: out.tokens,
            gradients: out.grads,
        })
    }

    fn update(&mut self, grads: StepGrads) -> Result<(), TrainError> {
        let optim = &mut self.optim;
        Ok(self.runner.in_pool(|| optim.step(&grads))?)
    }

    fn evaluate(&mut self) -> Result<Records, TrainError> {
        let mut out = vec![("lr", self.optim.lr())];
        out.extend(self.dev_records()?);
        Ok(out)
    }

    fn test(&mut self) -> Result<Tested, TrainError> {
        let split = &self.data.test;
        let test = evaluate(&self.model, &self.data, split, &self.ctx.config.decode)?;
        let (errors, matches): (Vec<f64>, Vec<f64>) = test
            .predictions
            .iter()
            .zip(&split.pairs)
            .map(|(p, g)| (example_error(p, &g.target), example_match(p, &g.target)))
            .unzip();
        // The set is its pairs as evaluated: after `max_len`, `test_limit` and the columns.
        let mut bytes = Vec::new();
        for pair in &split.pairs {
            for field in [&pair.source, &pair.target] {
                bytes.extend_from_slice(field.as_bytes());
                bytes.push(b'\t');
            }
            bytes.push(b'\n');
        }
        Ok(Tested {
            records: records(TEST, &test),
            test_set: crate::store::test_set_digest(&bytes),
            items: vec![("test/error_rate", errors), ("test/accuracy", matches)],
        })
    }

    fn artifacts(&mut self, step: u64, sink: &mut dyn EventSink) -> Result<(), TrainError> {
        let decode = &self.ctx.config.decode;
        let dev = match self.last_dev.take() {
            Some(dev) => dev,
            None => evaluate(&self.model, &self.data, &self.data.dev, decode)?,
        };
        write_artifacts(&self.ctx.run_dir, sink, &self.data, &dev, decode, step)
    }
}

/// Trains the translator of `ctx` (resuming from its last checkpoint), or, when
/// `ctx.reuse_training_from` names a finished run, only evaluates that run's model with this
/// run's decoding settings.
pub fn run_seq2seq(ctx: &RunContext, sink: &mut dyn EventSink) -> Result<Outcome, TrainError> {
    let device = super::select_device(&ctx.config.train.device)?;
    let mut task = Translator::new(ctx, &device)?;
    match &ctx.reuse_training_from {
        Some(source) => evaluate_reused(ctx, sink, &mut task, source),
        None => driver::run(ctx, &mut task, sink),
    }
}

/// Decode-only run: load the source run's checkpoint that this run's test phase uses
/// ([`checkpoint::test_checkpoint`]) and evaluate it at that epoch; no training step.
fn evaluate_reused(
    ctx: &RunContext,
    sink: &mut dyn EventSink,
    task: &mut Translator,
    source: &RunDir,
) -> Result<Outcome, TrainError> {
    let dir = source.checkpoints();
    let epoch = checkpoint::test_checkpoint(&dir, &ctx.config, None)?.ok_or_else(|| {
        TrainError::Checkpoint(checkpoint::CheckpointError::Corrupt {
            path: dir.clone(),
            message: "no checkpoint to reuse: the training run has not finished an epoch".into(),
        })
    })?;
    let (path, meta) =
        checkpoint::read_of_training(&dir.join(checkpoint::dir_name(epoch)), &ctx.training_id)?;
    task.restore_model(&path)?;
    sink.emit(&RunEvent::Started {
        attempt: ctx.attempt,
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
    let dev = task.dev_records()?;
    driver::emit(sink, meta.epoch, meta.step, dev)?;
    sink.emit(&RunEvent::EpochEnd {
        epoch: meta.epoch,
        step: meta.step,
    })?;
    let test = task.test()?.emit_items(sink, meta.epoch)?;
    driver::emit(sink, meta.epoch, meta.step, test)?;
    driver::conclude(task, sink, meta.epoch, meta.step)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::MemorySink;
    use crate::spec::{Attention, DataFormat, DecodeStrategy, ModelKind, SelectMode, Spec};
    use crate::store::RunState;
    use crate::train::Kernels;
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
            attempt: 1,
            kernels: Kernels::default(),
            pause_after: None,
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
        // The final weights, as the variants decoded before `select.test_checkpoint`; the
        // best checkpoint's are `test_phase_evaluates_the_chosen_checkpoint`'s.
        let mut config = spec(Attention::General, 2);
        config.select.test_checkpoint = Some(crate::spec::TestCheckpoint::Final);
        let trained = ctx(&root.path().join("train"), config);
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

    /// The value of `tag` at `epoch`.
    fn at(events: &[RunEvent], tag: &str, epoch: usize) -> f64 {
        let v: Vec<f64> = scalars(events, tag)
            .into_iter()
            .filter(|&(e, _)| e == epoch)
            .map(|(_, v)| v)
            .collect();
        assert_eq!(v.len(), 1, "{tag} at epoch {epoch}");
        v[0]
    }

    /// Test metrics, attention figures and decode-only variants evaluate the checkpoint
    /// `select.test_checkpoint` names. Dev and test are the same file here, so a test
    /// evaluation of epoch e's weights equals epoch e's dev evaluation; selecting the highest
    /// training loss makes epoch 1 the best one, never the last.
    #[test]
    fn test_phase_evaluates_the_chosen_checkpoint() {
        use crate::spec::TestCheckpoint;
        let root = tempfile::tempdir().unwrap();
        let mut s = spec(Attention::General, 3);
        s.data.test = s.data.dev.clone();
        s.select.metric = "train/loss".into();
        s.select.mode = SelectMode::Max;
        let tags = [
            ("test/loss", "dev/loss"),
            ("test/error_rate", "dev/error_rate"),
            ("test/accuracy", "dev/accuracy"),
        ];
        let best = ctx(&root.path().join("best"), s.clone());
        let mut best_sink = MemorySink::default();
        run_seq2seq(&best, &mut best_sink).unwrap();
        let ev = &best_sink.events;
        assert_ne!(
            at(ev, "dev/loss", 1),
            at(ev, "dev/loss", 3),
            "epochs 1 and 3 differ"
        );
        for (test, dev) in tags {
            assert_eq!(at(ev, test, 3), at(ev, dev, 1), "{test} of the best epoch");
        }

        let mut f = s.clone();
        f.select.test_checkpoint = Some(TestCheckpoint::Final);
        let last = ctx(&root.path().join("final"), f);
        let mut final_sink = MemorySink::default();
        run_seq2seq(&last, &mut final_sink).unwrap();
        let ev = &final_sink.events;
        for (test, dev) in tags {
            assert_eq!(
                at(ev, test, 3),
                at(ev, dev, 3),
                "{test} of the final weights"
            );
            // Same training either way: only the tested weights differ.
            assert_eq!(at(ev, dev, 3), at(&best_sink.events, dev, 3), "{dev}");
        }
        let figure = |run: &str| {
            std::fs::read(root.path().join(run).join("artifacts/attention_0.png")).unwrap()
        };
        assert_ne!(figure("best"), figure("final"));

        // Decode-only variants of the best-run's training decode the checkpoint they choose,
        // at its epoch; the final weights are still the last checkpoint's.
        for (choice, epoch, source_sink, figure_of) in [
            (TestCheckpoint::Best, 1, &best_sink, "best"),
            (TestCheckpoint::Final, 3, &final_sink, "final"),
        ] {
            let mut c = best.clone();
            c.run_dir = RunDir::at(root.path().join(format!("reuse-{}", choice.word())));
            c.config.select.test_checkpoint = Some(choice);
            c.reuse_training_from = Some(best.run_dir.clone());
            let mut sink = MemorySink::default();
            assert_eq!(run_seq2seq(&c, &mut sink).unwrap(), Outcome::Done { epoch });
            for (test, dev) in tags {
                assert_eq!(
                    at(&sink.events, test, epoch),
                    at(&source_sink.events, test, 3)
                );
                assert_eq!(
                    at(&sink.events, dev, epoch),
                    at(&best_sink.events, dev, epoch)
                );
            }
            let own = c.run_dir.root().join("artifacts/attention_0.png");
            assert_eq!(std::fs::read(own).unwrap(), figure(figure_of), "{choice:?}");
        }

        // A worker killed after the last checkpoint, before its figures: the resumed run
        // draws them from the tested weights again.
        let before = figure("best");
        std::fs::remove_dir_all(root.path().join("best/artifacts")).unwrap();
        let mut again = MemorySink::default();
        run_seq2seq(&best, &mut again).unwrap();
        assert!(
            scalars(&again.events, "test/loss").is_empty(),
            "nothing redone"
        );
        assert_eq!(figure("best"), before);
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

    /// Training's `Started` event carries the attempt the worker decided; main said 1.
    #[test]
    fn started_reports_the_attempt_of_the_context() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = ctx(dir.path(), spec(Attention::None, 1));
        c.attempt = 3;
        let mut sink = MemorySink::default();
        run_seq2seq(&c, &mut sink).unwrap();
        assert!(
            matches!(sink.events[0], RunEvent::Started { attempt: 3, .. }),
            "{:?}",
            sink.events[0]
        );
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
