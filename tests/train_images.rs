//! Integration tests of image-classifier training through the library's `train::run`, on
//! the shipped Fashion-MNIST subset (`data/fashion-mnist-mini`). Each trains a few hundred
//! to a thousand images for 1-3 epochs, so they stay quick on two shared cores.

use orchestrate::events::{EventSink, MemorySink, RunEvent, SinkError};
use orchestrate::spec::{OptimizerKind, Spec};
use orchestrate::store::{RunDir, RunState};
use orchestrate::train::{Kernels, Outcome, RunContext, TrainError, run};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A small spec on the shipped data: `train` images (10% of them dev), 500 test images.
fn spec(train: usize, epochs: usize) -> Spec {
    let mut s = Spec {
        name: "test".into(),
        ..Spec::default()
    };
    s.data.dir = format!("{}/data/fashion-mnist-mini", env!("CARGO_MANIFEST_DIR"));
    s.data.train_limit = train;
    s.data.test_limit = 500;
    s.train.epochs = epochs;
    s.train.log_every = 50;
    s
}

fn context(dir: &Path, config: Spec) -> RunContext {
    RunContext {
        run_dir: RunDir::at(dir),
        config,
        run_id: "run".into(),
        training_id: "training".into(),
        threads: 1,
        cancel: Arc::new(AtomicBool::new(false)),
        reuse_training_from: None,
        attempt: 1,
        kernels: Kernels::default(),
        pause_after: None,
    }
}

/// Scalars other than timings, as `(epoch, step, tag, value bits)`: what must repeat exactly.
fn metrics(events: &[RunEvent]) -> Vec<(usize, u64, String, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Scalar {
                epoch,
                step,
                tag,
                value,
            } if !tag.starts_with("time/") => Some((*epoch, *step, tag.clone(), value.to_bits())),
            _ => None,
        })
        .collect()
}

fn value(events: &[RunEvent], epoch: usize, tag: &str) -> f64 {
    events
        .iter()
        .find_map(|e| match e {
            RunEvent::Scalar {
                epoch: ep,
                tag: t,
                value,
                ..
            } if *ep == epoch && t == tag => Some(*value),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {tag} at epoch {epoch} in {events:#?}"))
}

#[test]
fn smoke_training_learns_and_writes_checkpoints_and_figures() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), spec(1000, 2));
    let mut sink = MemorySink::default();
    assert_eq!(run(&ctx, &mut sink).unwrap(), Outcome::Done { epoch: 2 });
    let ev = &sink.events;

    assert!(matches!(
        ev[0],
        RunEvent::Started {
            resumed_from: 0,
            epochs: 2,
            steps_per_epoch: 113, // 900 training images in batches of 8
            ..
        }
    ));
    let (l1, l2) = (value(ev, 1, "train/loss"), value(ev, 2, "train/loss"));
    assert!(l2 < l1, "train loss should fall: {l1} -> {l2}");
    // Ten classes: chance is 10%.
    let dev = value(ev, 2, "dev/accuracy");
    let test = value(ev, 2, "test/accuracy");
    assert!(dev > 0.5 && test > 0.5, "dev {dev} test {test}");
    assert!(value(ev, 2, "test/loss") < 2.0);
    // What validation lets `select.metric` name is recorded every epoch.
    for tag in orchestrate::train::classifier::SELECTABLE {
        for epoch in [1, 2] {
            value(ev, epoch, tag);
        }
    }
    assert_eq!(value(ev, 1, "lr"), ctx.config.optimizer.lr);
    assert!(value(ev, 1, "time/samples_per_second") > 0.0);
    // Running losses every 50 steps, at global steps.
    let running: Vec<u64> = ev
        .iter()
        .filter_map(|e| match e {
            RunEvent::Scalar { step, tag, .. } if tag == "train/running_loss" => Some(*step),
            _ => None,
        })
        .collect();
    assert_eq!(running, vec![50, 100, 150, 200]);
    // EpochEnd follows each epoch's checkpoint; the run ends with Finished(Done).
    let ends: Vec<(usize, u64)> = ev
        .iter()
        .filter_map(|e| match e {
            RunEvent::EpochEnd { epoch, step } => Some((*epoch, *step)),
            _ => None,
        })
        .collect();
    assert_eq!(ends, vec![(1, 113), (2, 226)]);
    assert!(matches!(
        ev.last(),
        Some(RunEvent::Finished {
            state: RunState::Done,
            epoch: 2,
            ..
        })
    ));
    // keep_last 1 + keep_best: epoch 2 (last) and the best epoch, which is 1 or 2.
    let ck = ctx.run_dir.checkpoints();
    assert!(ck.join("epoch-0002/model.safetensors").is_file());
    assert!(ck.join("epoch-0002/optimizer.safetensors").is_file());
    assert!(ck.join("epoch-0002/state.json").is_file());
    // Activation maps of the first convolution (8 maps of 28x28, 4 per row, 4x, 2px gaps).
    let art = ctx.run_dir.artifacts();
    let png = std::fs::read(art.join("conv1_activations.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    assert!(art.join("input.png").is_file());
    let images: Vec<(&str, u32, u32)> = ev
        .iter()
        .filter_map(|e| match e {
            RunEvent::Image {
                tag, width, height, ..
            } => Some((tag.as_str(), *width, *height)),
            _ => None,
        })
        .collect();
    assert_eq!(
        images,
        vec![
            ("conv1/activations", 4 * 112 + 5 * 2, 2 * 112 + 3 * 2),
            ("conv1/input", 112, 112)
        ]
    );
}

#[test]
fn same_seed_gives_bit_identical_metrics_and_weights() {
    let train_twice = |seed: u64| {
        let mut config = spec(400, 2);
        config.seed = seed;
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path(), config);
        let mut sink = MemorySink::default();
        run(&ctx, &mut sink).unwrap();
        let weights = std::fs::read(
            ctx.run_dir
                .checkpoints()
                .join("epoch-0002/model.safetensors"),
        )
        .unwrap();
        (metrics(&sink.events), weights)
    };
    let (a, wa) = train_twice(7);
    let (b, wb) = train_twice(7);
    assert!(a.len() > 8);
    assert_eq!(a, b);
    assert!(
        wa == wb,
        "checkpointed weights differ between identical runs"
    );
    let (c, _) = train_twice(8);
    assert_ne!(a, c, "another seed should give other metrics");
}

/// Sets the cancel flag once the checkpoint of `after` epochs is on disk.
struct CancelAfter {
    after: usize,
    cancel: Arc<AtomicBool>,
    inner: MemorySink,
}

impl EventSink for CancelAfter {
    fn emit(&mut self, event: &RunEvent) -> Result<(), SinkError> {
        if let RunEvent::EpochEnd { epoch, .. } = event
            && *epoch == self.after
        {
            self.cancel.store(true, Ordering::SeqCst);
        }
        self.inner.emit(event)
    }
}

#[test]
fn resumed_run_is_bit_identical_to_an_uninterrupted_one() {
    let config = spec(400, 3);
    let straight_dir = tempfile::tempdir().unwrap();
    let mut straight = MemorySink::default();
    run(&context(straight_dir.path(), config.clone()), &mut straight).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), config.clone());
    let mut first = CancelAfter {
        after: 2,
        cancel: ctx.cancel.clone(),
        inner: MemorySink::default(),
    };
    assert_eq!(
        run(&ctx, &mut first).unwrap(),
        Outcome::Cancelled { epoch: 2 }
    );
    assert!(matches!(
        first.inner.events.last(),
        Some(RunEvent::Finished {
            state: RunState::Cancelled,
            epoch: 2,
            ..
        })
    ));

    // Started again, as the worker would after an interruption.
    let ctx = context(dir.path(), config);
    let mut second = MemorySink::default();
    assert_eq!(run(&ctx, &mut second).unwrap(), Outcome::Done { epoch: 3 });
    assert!(matches!(
        second.events[0],
        RunEvent::Started {
            resumed_from: 2,
            ..
        }
    ));
    // What a metrics file would hold: the first attempt up to its checkpoint, then the rest.
    let mut resumed: Vec<_> = metrics(&first.inner.events)
        .into_iter()
        .filter(|m| m.0 <= 2)
        .collect();
    resumed.extend(metrics(&second.events));
    assert_eq!(resumed, metrics(&straight.events));
    let figure = |d: &Path| std::fs::read(d.join("artifacts/conv1_activations.png")).unwrap();
    assert!(figure(dir.path()) == figure(straight_dir.path()));

    // A finished run started again has nothing left to train.
    let mut third = MemorySink::default();
    assert_eq!(run(&ctx, &mut third).unwrap(), Outcome::Done { epoch: 3 });
    assert!(metrics(&third.events).is_empty());
}

#[test]
fn exploding_loss_is_reported_as_diverged() {
    let mut config = spec(200, 2);
    config.optimizer.kind = OptimizerKind::Sgd;
    config.optimizer.lr = 1e6;
    let dir = tempfile::tempdir().unwrap();
    let mut sink = MemorySink::default();
    let outcome = run(&context(dir.path(), config), &mut sink).unwrap();
    let Outcome::Diverged { epoch, message } = outcome else {
        panic!("expected divergence, got {outcome:?}");
    };
    assert_eq!(epoch, 1);
    assert!(message.contains("training loss became"), "{message}");
    assert!(matches!(
        sink.events.last(),
        Some(RunEvent::Finished {
            state: RunState::Diverged,
            ..
        })
    ));
}

#[test]
fn early_stopping_ends_training_and_still_tests() {
    let mut config = spec(200, 5);
    config.train.early_stopping.patience = 1;
    // No epoch can beat the first by a whole unit of accuracy.
    config.train.early_stopping.min_delta = 1.0;
    config.model.kind = orchestrate::spec::ModelKind::Mlp;
    config.model.hidden = vec![32];
    let dir = tempfile::tempdir().unwrap();
    let mut sink = MemorySink::default();
    assert_eq!(
        run(&context(dir.path(), config), &mut sink).unwrap(),
        Outcome::Done { epoch: 2 }
    );
    value(&sink.events, 2, "test/accuracy");
    // An MLP has no convolution: no activation figure.
    assert!(!dir.path().join("artifacts/conv1_activations.png").exists());
    assert!(
        !sink
            .events
            .iter()
            .any(|e| matches!(e, RunEvent::Image { .. }))
    );
}

#[test]
fn missing_data_is_a_data_error_naming_the_file() {
    let mut config = spec(200, 1);
    config.data.train = "kmnist-train-imgs.npz".into();
    let dir = tempfile::tempdir().unwrap();
    let err = run(&context(dir.path(), config), &mut MemorySink::default()).unwrap_err();
    assert!(matches!(err, TrainError::Data(_)), "{err:?}");
    assert!(err.to_string().contains("kmnist-train-imgs.npz"), "{err}");
    let top: orchestrate::Error = err.into();
    assert_eq!(top.exit_code(), orchestrate::error::exit::DATA);
}

#[test]
fn checkpoint_of_another_training_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = spec(200, 2);
    config.model.kind = orchestrate::spec::ModelKind::Mlp;
    config.model.hidden = vec![16];
    let ctx = context(dir.path(), config.clone());
    run(&ctx, &mut MemorySink::default()).unwrap();
    let mut other = context(dir.path(), config);
    other.training_id = "another".into();
    let err = run(&other, &mut MemorySink::default()).unwrap_err();
    assert!(matches!(err, TrainError::Checkpoint(_)), "{err:?}");
    assert!(err.to_string().contains("another"), "{err}");
}

/// `select.test_checkpoint`: with the highest training loss selected, epoch 1 is the best of
/// two. A `best` run tests and draws exactly what a one-epoch run of the same seed tests and
/// draws (epoch 1's weights), while its last checkpoint keeps the final weights; `final`
/// tests the second epoch's weights.
#[test]
fn test_metrics_and_figures_come_from_the_chosen_checkpoint() {
    use orchestrate::spec::{SelectMode, TestCheckpoint};
    let base = |epochs, choice| {
        let mut c = spec(200, epochs);
        c.select.metric = "train/loss".into();
        c.select.mode = SelectMode::Max;
        c.select.test_checkpoint = choice;
        c
    };
    let root = tempfile::tempdir().unwrap();
    let train = |name: &str, config: Spec| {
        let dir = root.path().join(name);
        let mut sink = MemorySink::default();
        run(&context(&dir, config), &mut sink).unwrap();
        let figure = std::fs::read(dir.join("artifacts/conv1_activations.png")).unwrap();
        (sink.events, figure)
    };
    let (one, one_png) = train("one", base(1, Some(TestCheckpoint::Final)));
    let (best, best_png) = train("best", base(2, None));
    let (last, last_png) = train("final", base(2, Some(TestCheckpoint::Final)));
    for tag in ["test/loss", "test/accuracy"] {
        assert_eq!(value(&best, 2, tag), value(&one, 1, tag), "{tag}");
    }
    assert_ne!(value(&last, 2, "test/loss"), value(&one, 1, "test/loss"));
    assert_eq!(best_png, one_png, "activation maps of the best checkpoint");
    assert_ne!(last_png, one_png);
    let weights = |run: &str, epoch: usize| {
        std::fs::read(
            root.path()
                .join(run)
                .join(format!("checkpoints/epoch-{epoch:04}/model.safetensors")),
        )
        .unwrap()
    };
    assert_eq!(
        weights("best", 2),
        weights("final", 2),
        "final weights saved"
    );
    assert_ne!(weights("best", 2), weights("best", 1));
}
