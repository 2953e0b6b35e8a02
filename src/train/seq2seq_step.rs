//! One seq2seq training step's forward and backward passes: by hand on the CPU
//! ([`crate::models::seq2seq_cpu`]), split into data-parallel shards when the run has more
//! than one thread, and through Candle's autograd on other devices.
//!
//! A step is a few hundred small products (one `[B, H] x [H, 4H]` per time step, about
//! 4 M multiply-adds at the homework's sizes). Split product by product across two threads
//! they ran slower than on one: the hand-over costs more than the work
//! (`bench/notes/seq2seq.md`). Splitting the *batch* instead gives each thread a whole
//! forward and backward pass over its rows. Each shard divides its summed token losses by
//! the whole batch's token count and makes its rows of the step's dropout masks (a mask
//! element depends on its batch row, not on the shard), so the shards' gradients add up to
//! the gradient of the unsharded step's loss; only the summation order differs (last bits).

use crate::data::pairs::Batch;
use crate::models::seeded::Dropout;
use crate::models::seq2seq::{BatchTensors, Seq2Seq};
use crate::models::seq2seq_cpu::{Grads, Workspace, train_step};
use crate::train::optim::Gradients;
use candle_core::backprop::GradStore;
use candle_core::{Error, Result, Tensor};
use std::sync::{Mutex, PoisonError};

/// Fewest sentences a shard gets: below this a shard's fixed per-step costs dominate and a
/// second thread gains nothing (batch 8 runs unsharded).
pub const MIN_SHARD_ROWS: usize = 16;

/// A training step's gradients: Candle's autograd store, or the CPU step's, by variable.
pub enum StepGrads {
    Autograd(GradStore),
    ByVar(Vec<(Tensor, Tensor)>),
}

impl Gradients for StepGrads {
    fn of(&self, var: &Tensor) -> Option<&Tensor> {
        match self {
            StepGrads::Autograd(g) => g.get(var),
            StepGrads::ByVar(gs) => gs.iter().find(|(v, _)| v.id() == var.id()).map(|(_, g)| g),
        }
    }
}

/// A training step's loss (mean per target token over the batch), its token count and
/// the gradients of every variable.
pub struct StepOutput {
    pub loss: f64,
    pub tokens: f64,
    pub grads: StepGrads,
}

/// Runs training steps on the run's threads, keeping each thread's buffers from step to
/// step.
pub struct StepRunner {
    /// One-thread pools for work that must not be split by rayon (the optimizer step).
    pools: Vec<rayon::ThreadPool>,
    /// One workspace per thread.
    workspaces: Vec<Mutex<Workspace>>,
}

impl Default for StepRunner {
    fn default() -> Self {
        StepRunner::new()
    }
}

impl StepRunner {
    /// A runner for the process's thread count (`RAYON_NUM_THREADS`, set from
    /// `train.threads` when the worker starts).
    pub fn new() -> Self {
        StepRunner::with_threads(candle_core::utils::get_num_threads())
    }

    /// A runner for `threads` threads.
    pub fn with_threads(threads: usize) -> Self {
        let pools = if threads <= 1 {
            Vec::new()
        } else {
            (0..threads)
                .filter_map(|_| rayon::ThreadPoolBuilder::new().num_threads(1).build().ok())
                .collect()
        };
        StepRunner {
            workspaces: (0..threads.max(1)).map(|_| Mutex::default()).collect(),
            pools,
        }
    }

    /// How many shards a batch of `rows` sentences is split into.
    pub fn shards(&self, rows: usize) -> usize {
        (rows / MIN_SHARD_ROWS).clamp(1, self.workspaces.len())
    }

    /// Runs `f` on one thread without rayon splitting its work (in the first pool when
    /// there are pools): for the optimizer step.
    pub fn in_pool<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match self.pools.first() {
            Some(p) => p.install(f),
            None => f(),
        }
    }

    /// The loss and gradients of one teacher-forced step over `batch`, with the next
    /// step's dropout masks of `dropout` (the same masks, sharded or not, on any device).
    pub fn step(
        &self,
        model: &Seq2Seq,
        batch: &Batch,
        dropout: &mut Dropout,
    ) -> Result<StepOutput> {
        let masks = dropout.next_step();
        let device = model.device();
        if !device.is_cpu() {
            let bt = BatchTensors::new(batch, device)?;
            let (loss, tokens) = model.loss(&bt, masks.as_ref())?;
            return Ok(StepOutput {
                loss: loss.to_scalar::<f32>()? as f64,
                tokens,
                grads: StepGrads::Autograd(loss.backward()?),
            });
        }
        let denom: f64 = batch.tgt_mask.iter().map(|&m| m as f64).sum();
        let shards = self.shards(batch.size);
        let rows = |k: usize| k * batch.size / shards..(k + 1) * batch.size / shards;
        let work = |k: usize| -> Result<(f64, f64, Grads)> {
            let mut ws = self.workspaces[k]
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let mut grads = Grads::zeros(model.config());
            let r = rows(k);
            let part;
            let shard = if shards == 1 {
                batch
            } else {
                part = batch.rows(r.clone());
                &part
            };
            let l = train_step(
                model,
                &mut ws,
                shard,
                r.start,
                masks.as_ref(),
                denom,
                &mut grads,
            )?;
            Ok((l.loss, l.tokens, grads))
        };
        let results = std::thread::scope(|s| {
            let handles: Vec<_> = (1..shards).map(|k| s.spawn(move || work(k))).collect();
            let mut out = vec![work(0)];
            for h in handles {
                out.push(h.join().unwrap_or_else(|_| {
                    Err(Error::Msg("seq2seq shard: its thread panicked".into()))
                }))
            }
            out
        });
        let mut results = results.into_iter();
        let Some(first) = results.next() else {
            candle_core::bail!("seq2seq shard: no shard ran")
        };
        let (mut loss, mut tokens, mut grads) = first?;
        // Fixed order (shard 0, 1, ...): the sum is the same bits every run.
        for r in results {
            let (l, n, mut g) = r?;
            loss += l;
            tokens += n;
            grads.add(&mut g);
        }
        Ok(StepOutput {
            loss,
            tokens,
            grads: StepGrads::ByVar(grads.into_tensors(model)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::pairs::Example;
    use crate::models::seq2seq::Seq2SeqConfig;
    use crate::spec::Attention;
    use candle_core::Device;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn model(attention: Attention, dropout: f64) -> Seq2Seq {
        let cfg = Seq2SeqConfig {
            src_vocab: 12,
            tgt_vocab: 10,
            embedding_dim: 8,
            encoder_hidden: 4,
            decoder_hidden: 8,
            attention,
            dropout,
            tie_embeddings: true,
        };
        Seq2Seq::new(cfg, &mut ChaCha8Rng::seed_from_u64(5), &Device::Cpu).unwrap()
    }

    /// 40 sentence pairs of varied lengths, so shards have different longest rows.
    fn batch() -> Batch {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let ex: Vec<Example> = (0..40)
            .map(|_| {
                use rand::Rng;
                let (ls, lt) = (rng.random_range(1..9), rng.random_range(1..7));
                Example {
                    src: (0..ls).map(|_| rng.random_range(4..12)).collect(),
                    tgt: (0..lt).map(|_| rng.random_range(4..10)).collect(),
                }
            })
            .collect();
        let refs: Vec<&Example> = ex.iter().collect();
        Batch::new(&refs)
    }

    fn grads(m: &Seq2Seq, out: &StepOutput) -> Vec<(String, Vec<f32>)> {
        m.params()
            .named()
            .iter()
            .map(|(name, var)| {
                let g = out
                    .grads
                    .of(var.as_tensor())
                    .unwrap_or_else(|| panic!("{name}"));
                (name.clone(), g.flatten_all().unwrap().to_vec1().unwrap())
            })
            .collect()
    }

    /// Two shards give the unsharded step's loss, token count and every gradient within
    /// float rounding (dropout included: each shard gets its rows of the same masks), and
    /// the same bits on every repetition.
    #[test]
    fn sharded_step_matches_the_whole_batch_and_repeats_bit_for_bit() {
        let b = batch();
        for (att, p) in [
            (Attention::General, 0.3),
            (Attention::None, 0.3),
            (Attention::General, 0.0),
        ] {
            let m = model(att, p);
            let run = |threads: usize| {
                let runner = StepRunner::with_threads(threads);
                let mut d = Dropout::new(p, ChaCha8Rng::seed_from_u64(11));
                let out = runner.step(&m, &b, &mut d).unwrap();
                // The generator must end where an unsharded step leaves it.
                let next = d.next_step();
                (out, next)
            };
            let (one, next1) = run(1);
            let (two, next2) = run(2);
            assert_eq!(StepRunner::with_threads(2).shards(b.size), 2);
            assert_eq!(next1, next2, "{att:?}: dropout stream moved differently");
            assert_eq!(one.tokens, two.tokens);
            assert!(
                (one.loss - two.loss).abs() < 1e-5,
                "{att:?}: {} vs {}",
                one.loss,
                two.loss
            );
            let (g1, g2) = (grads(&m, &one), grads(&m, &two));
            for ((name, a), (_, b)) in g1.iter().zip(&g2) {
                for (x, y) in a.iter().zip(b) {
                    assert!(
                        (x - y).abs() <= 1e-5 * (1.0 + x.abs()),
                        "{att:?} {name}: {x} vs {y}"
                    );
                }
            }
            let (again, _) = run(2);
            assert_eq!(again.loss.to_bits(), two.loss.to_bits());
            assert_eq!(
                grads(&m, &again),
                g2,
                "{att:?}: sharded step not repeatable"
            );
        }
    }

    #[test]
    fn small_batches_stay_whole() {
        let r = StepRunner::with_threads(2);
        assert_eq!(r.shards(8), 1);
        assert_eq!(r.shards(31), 1);
        assert_eq!(r.shards(64), 2);
        assert_eq!(StepRunner::with_threads(1).shards(64), 1);
    }
}
