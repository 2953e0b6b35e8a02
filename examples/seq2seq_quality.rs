//! Measures the homework's quality bar on real data: trains the translator with and without
//! attention (greedy dev decoding each epoch), then evaluates each trained model with beam
//! search as a decode-only run that reuses the checkpoint.
//!
//! `cargo run --release --example seq2seq_quality -- DATA_DIR EPOCHS OUT_DIR [TRAIN_LIMIT [none|general]]`

use orchestrate::events::{EventSink, RunEvent, SinkError};
use orchestrate::spec::{Attention, DataFormat, DecodeStrategy, ModelKind, Spec};
use orchestrate::store::RunDir;
use orchestrate::train::{Kernels, RunContext, run};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Prints per-epoch scalars on one line each.
struct Printer(String);

impl EventSink for Printer {
    fn emit(&mut self, e: &RunEvent) -> Result<(), SinkError> {
        if let RunEvent::Scalar {
            epoch, tag, value, ..
        } = e
            && !tag.starts_with("train/batch")
        {
            println!("{} epoch {epoch:>3} {tag:<26} {value:.4}", self.0);
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (dir, epochs, out) = (&args[1], args[2].parse::<usize>()?, &args[3]);
    let limit = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let only = args.get(5).map(String::as_str);
    for attention in [Attention::None, Attention::General] {
        if only.is_some_and(|o| o != format!("{attention:?}").to_lowercase()) {
            continue;
        }
        let mut spec = Spec::default();
        spec.data.format = DataFormat::TsvPairs;
        spec.data.dir = dir.clone();
        spec.data.train = "train-eng-spa.txt".into();
        spec.data.dev = "val-eng-spa.txt".into();
        spec.data.test = "test-eng-spa.txt".into();
        spec.data.train_limit = limit;
        spec.model.kind = ModelKind::Seq2seq;
        spec.model.attention = attention;
        spec.optimizer.lr = 0.003;
        spec.train.epochs = epochs;
        spec.train.batch_size = 64;
        spec.train.log_every = 0;
        spec.select.metric = "dev/error_rate".into();
        let name = format!("{attention:?}").to_lowercase();
        let trained = RunDir::at(format!("{out}/{name}-greedy"));
        let mut ctx = RunContext {
            run_dir: trained.clone(),
            config: spec.clone(),
            run_id: format!("{name}-greedy"),
            training_id: name.clone(),
            threads: 0,
            cancel: Arc::new(AtomicBool::new(false)),
            reuse_training_from: None,
            attempt: 1,
            kernels: Kernels::default(),
            pause_after: None,
        };
        let t = std::time::Instant::now();
        let outcome = run(&ctx, &mut Printer(format!("{name}-greedy")))?;
        println!(
            "{name}-greedy: {outcome:?} in {:.0}s",
            t.elapsed().as_secs_f64()
        );
        for alpha in [0.0, 1.0] {
            ctx.config.decode.strategy = DecodeStrategy::Beam;
            ctx.config.decode.length_penalty = alpha;
            ctx.run_id = format!("{name}-beam5-a{alpha}");
            ctx.run_dir = RunDir::at(format!("{out}/{}", ctx.run_id));
            ctx.reuse_training_from = Some(trained.clone());
            let t = std::time::Instant::now();
            run(&ctx, &mut Printer(ctx.run_id.clone()))?;
            println!("{}: {:.0}s", ctx.run_id, t.elapsed().as_secs_f64());
        }
    }
    Ok(())
}
